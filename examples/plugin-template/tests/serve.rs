//! Black-box: the real sockhost serving this crate's freshly built library over loopback.
//! Needs the `sockhost` binary: `cargo install --path host` in a sockhost checkout (or set
//! SOCKHOST_BIN to it).

use std::io::{Read, Write};

use plugin_api::testing::server::{built_plugin, Sockhost};

#[test]
fn greets_over_tcp_and_closes_on_bye() {
    let plugin = built_plugin(env!("CARGO_PKG_NAME")).unwrap();
    let server = Sockhost::start(&plugin, &["--plugin-opt", "greeting=hi"]).unwrap();
    let mut conn = server.connect().unwrap();
    conn.write_all(b"world\nbye\n").unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap(); // until sockhost closes after `bye`
    assert_eq!(reply, "hi, world!\ngoodbye\n");
    assert!(server.stop().unwrap().success());
}

#[test]
fn a_bad_option_stops_sockhost_with_one_error_line() {
    let plugin = built_plugin(env!("CARGO_PKG_NAME")).unwrap();
    let err = Sockhost::start(&plugin, &["--plugin-opt", "greting=hi"])
        .err()
        .expect("sockhost refuses an unknown option");
    assert!(
        err.contains(r#"error: plugin greeter: unknown option "greting" (accepted: greeting)"#),
        "{err}"
    );
}

//! Sans-IO tests through `plugin_api::testing`: the consumer driven as the host drives it.

use plugin_api::testing::{Connection, Harness};

use crate::{Redis, RedisConsumer};

/// Encode a command as a RESP multibulk frame.
fn frame(args: &[&str]) -> Vec<u8> {
    let mut f = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        f.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    f
}

/// Send one command and return the raw reply text.
fn cmd(conn: &mut Connection<RedisConsumer>, args: &[&str]) -> String {
    String::from_utf8_lossy(&conn.round_trip(&frame(args)).unwrap()).into_owned()
}

fn server() -> Harness<Redis> {
    Harness::<Redis>::new()
}

#[test]
fn ping_set_get() {
    let h = server();
    let mut c = h.connect().unwrap();
    assert_eq!(cmd(&mut c, &["PING"]), "+PONG\r\n");
    assert_eq!(cmd(&mut c, &["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(cmd(&mut c, &["GET", "k"]), "$1\r\nv\r\n");
}

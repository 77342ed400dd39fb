//! greeter: a sockhost plugin template. Each line a client sends, say `world`, is answered
//! `hello, world!`; `bye` closes the connection.
//!
//! Build it with `cargo build --release` and serve it with
//! `sockhost --plugin target/release/libgreeter.so`. See README.md for the walk-through.

use std::ops::ControlFlow;

use plugin_api::framing::Lines;
use plugin_api::{
    ConnInfo, Consumer, LostReason, OptionSpec, Options, Output, PluginInfo, Protocol,
};

/// The longest line accepted, in bytes. Anything longer closes the connection, so a client
/// cannot make the server buffer without bound.
const MAX_LINE: usize = 256;

/// Made once per worker process from the `--plugin-opt` options; makes one consumer per
/// connection.
pub struct Greeter {
    greeting: String,
}

impl Protocol for Greeter {
    type Consumer = GreeterConsumer;

    const INFO: PluginInfo = PluginInfo::new(
        "greeter",
        env!("CARGO_PKG_VERSION"),
        "answers each line NAME with `<greeting>, NAME!`",
    )
    .options(&[OptionSpec::new("greeting", "the word to greet with").default_value("hello")]);

    fn new(options: &Options) -> Result<Self, String> {
        // Declared defaults are filled in, so `greeting` is always there.
        let greeting = options.get("greeting").unwrap_or("hello");
        if greeting.contains('\n') {
            return Err("option greeting: must be one line".to_string());
        }
        log::info!("greeting with {greeting:?}");
        Ok(Greeter {
            greeting: greeting.to_string(),
        })
    }

    fn consumer(&self, _info: &ConnInfo) -> GreeterConsumer {
        GreeterConsumer {
            greeting: self.greeting.clone(),
            lines: Lines::new(MAX_LINE),
        }
    }
}

/// One connection's state: its line framing (which keeps the start of a line whose end has
/// not arrived yet, up to `MAX_LINE` bytes).
pub struct GreeterConsumer {
    greeting: String,
    lines: Lines,
}

impl GreeterConsumer {
    /// Answer one complete line; `Break` once the connection is closing.
    fn answer(greeting: &str, line: &[u8], out: &mut Output) -> ControlFlow<()> {
        let name = String::from_utf8_lossy(line);
        let name = name.trim();
        if name == "bye" {
            out.write(b"goodbye\n");
            out.close();
            return ControlFlow::Break(()); // nothing more is read from a closing connection
        }
        if !name.is_empty() {
            out.write(format!("{greeting}, {name}!\n").as_bytes());
        }
        ControlFlow::Continue(())
    }
}

impl Consumer for GreeterConsumer {
    // TCP keeps no message boundaries: one read may hold part of a line, or several lines.
    // `Lines` hands out complete lines (without `\n` / `\r\n`) and refuses one longer than
    // MAX_LINE as soon as it passes the limit.
    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        let greeting = &self.greeting;
        let fed = self
            .lines
            .feed(data, |line| GreeterConsumer::answer(greeting, line, out));
        if fed.is_err() {
            out.write(b"line too long\n");
            out.close();
        }
    }

    // eof_received: the default closes once everything written has been sent.

    fn connection_lost(&mut self, reason: LostReason) {
        log::debug!("connection ended: {reason:?}");
    }
}

plugin_api::export_plugin!(Greeter);

#[cfg(test)]
mod tests {
    use super::Greeter;
    use plugin_api::testing::Harness;
    use plugin_api::LostReason;

    #[test]
    fn greets_each_line() {
        let harness = Harness::<Greeter>::new();
        let mut conn = harness.connect().unwrap();
        assert_eq!(conn.round_trip_text("world\n").unwrap(), "hello, world!\n");
        // Half a line waits for the rest; two lines in one read get two answers.
        assert_eq!(conn.round_trip_text("Ad").unwrap(), "");
        assert_eq!(
            conn.round_trip_text("a\r\nBob\n").unwrap(),
            "hello, Ada!\nhello, Bob!\n"
        );
    }

    #[test]
    fn bye_closes() {
        let harness = Harness::<Greeter>::new();
        let mut conn = harness.connect().unwrap();
        assert_eq!(conn.round_trip_text("bye\nmore\n").unwrap(), "goodbye\n");
        assert_eq!(conn.lost_reason(), Some(LostReason::Closed));
    }

    #[test]
    fn a_long_line_closes() {
        let harness = Harness::<Greeter>::new();
        let mut conn = harness.connect().unwrap();
        let flood = vec![b'x'; 1000];
        assert_eq!(conn.round_trip(&flood).unwrap(), b"line too long\n");
        assert!(!conn.is_open());
    }

    #[test]
    fn greeting_option() {
        let harness = Harness::<Greeter>::with_options([("greeting", "hi")]).unwrap();
        let mut conn = harness.connect().unwrap();
        assert_eq!(conn.round_trip_text("there\n").unwrap(), "hi, there!\n");
        let refused = Harness::<Greeter>::with_options([("greting", "hi")]).err();
        assert_eq!(
            refused.as_deref(),
            Some(r#"plugin greeter: unknown option "greting" (accepted: greeting)"#)
        );
    }
}

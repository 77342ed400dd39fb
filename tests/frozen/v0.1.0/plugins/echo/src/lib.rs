//! The echo plugin: every byte received over TCP is sent back unchanged and in order; at the
//! client's end of stream the output is flushed and the connection closed. Over UDP every
//! datagram goes back to its sender unchanged.
//!
//! Built as `libecho.so`: `sockhost --plugin target/release/libecho.so`.

use plugin_api::{ConnInfo, Consumer, Options, Output, PluginInfo, Protocol, Transports};

/// The protocol: stateless, so one zero-sized consumer per connection (no allocation).
pub struct Echo;

/// One connection's (or UDP peer's) echo state: none.
pub struct EchoConsumer;

impl Protocol for Echo {
    type Consumer = EchoConsumer;

    const INFO: PluginInfo = PluginInfo::new(
        "echo",
        env!("CARGO_PKG_VERSION"),
        "sends every byte (or datagram) back to its sender",
    )
    .transports(Transports::TCP_AND_UDP);

    fn new(_options: &Options) -> Result<Self, String> {
        Ok(Echo)
    }

    fn consumer(&self, _info: &ConnInfo) -> EchoConsumer {
        EchoConsumer
    }
}

impl Consumer for EchoConsumer {
    #[inline]
    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        out.write(data);
    }
    // eof_received: the default closes once everything written has been sent.
}

plugin_api::export_plugin!(Echo);

#[cfg(test)]
mod tests {
    use super::Echo;
    use plugin_api::testing::{ConnSpec, Harness};
    use plugin_api::LostReason;

    #[test]
    fn echoes_every_read_in_order() {
        let harness = Harness::<Echo>::new();
        let mut conn = harness.connect().unwrap();
        assert_eq!(conn.take_output(), b"", "echo sends no greeting");
        assert_eq!(conn.round_trip(b"hello").unwrap(), b"hello");
        conn.send(b"one ").unwrap();
        conn.send(b"two").unwrap();
        assert_eq!(conn.take_output(), b"one two");
        let binary: Vec<u8> = (0..=255).collect();
        assert_eq!(conn.round_trip(&binary).unwrap(), binary);
    }

    #[test]
    fn end_of_stream_flushes_and_closes() {
        let harness = Harness::<Echo>::new();
        let mut conn = harness.connect().unwrap();
        conn.send(b"last words").unwrap();
        conn.eof().unwrap();
        assert!(conn.close_requested());
        assert_eq!(conn.lost_reason(), Some(LostReason::Closed));
        assert_eq!(conn.take_output(), b"last words");
    }

    #[test]
    fn udp_returns_each_datagram_as_is() {
        let harness = Harness::<Echo>::new();
        let mut peer = harness.open(ConnSpec::udp()).unwrap();
        peer.send(b"ping").unwrap();
        peer.send(b"").unwrap();
        peer.send(b"pong").unwrap();
        assert_eq!(
            peer.take_datagrams(),
            [b"ping".to_vec(), b"".to_vec(), b"pong".to_vec()]
        );
        peer.idle_timeout().unwrap();
        assert_eq!(peer.lost_reason(), Some(LostReason::IdleTimeout));
    }

    #[test]
    fn accepts_no_options() {
        let refused = Harness::<Echo>::with_options([("colour", "blue")]).err();
        assert_eq!(
            refused.as_deref(),
            Some(r#"plugin echo: unknown option "colour" (it accepts no options)"#)
        );
    }
}

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

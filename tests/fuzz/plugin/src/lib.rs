//! The plugin side of the `plugin_boundary` fuzz target: every `data_received` chunk is a
//! program of [`Op`]s run against the host's [`Output`], through the real ABI glue, with its
//! own copy of std (as every plugin has).

#[path = "../../shared/script.rs"]
mod script;

use plugin_api::{ConnInfo, Consumer, LostReason, Options, Output, PluginInfo, Protocol, Transports};
use script::{describe, parse, Op, PANIC_MESSAGE};

pub struct Boundary;

pub struct BoundaryConsumer {
    info: ConnInfo,
    panic_when_lost: bool,
}

impl Protocol for Boundary {
    type Consumer = BoundaryConsumer;
    // With services: consumers are made, and timer and wake callbacks delivered, through
    // the services tables too.
    const INFO: PluginInfo = PluginInfo::new("fuzz-boundary", "0.0.0", "runs Output scripts")
        .transports(Transports::TCP_AND_UDP)
        .services();

    fn new(_options: &Options) -> Result<Self, String> {
        Ok(Boundary)
    }

    fn consumer(&self, info: &ConnInfo) -> BoundaryConsumer {
        BoundaryConsumer {
            info: info.clone(),
            panic_when_lost: false,
        }
    }
}

impl Consumer for BoundaryConsumer {
    fn connection_made(&mut self, out: &mut Output) {
        out.write(&describe(&self.info));
    }

    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        self.run(data, out);
    }

    fn eof_received(&mut self, out: &mut Output) {
        out.write(b"eof");
        out.close();
    }

    /// The token's bytes are the program.
    fn timer_fired(&mut self, token: u64, out: &mut Output) {
        self.run(&token.to_le_bytes(), out);
    }

    fn woken(&mut self, token: u64, out: &mut Output) {
        self.run(&token.to_be_bytes(), out);
    }

    fn connection_lost(&mut self, _reason: LostReason) {
        if self.panic_when_lost {
            panic!("fuzz plugin: panicked in connection_lost");
        }
    }
}

impl BoundaryConsumer {
    fn run(&mut self, program: &[u8], out: &mut Output) {
        let (start_len, start_closing) = (out.len(), out.is_closing());
        let (mut wrote, mut closed) = (0, false);
        for op in parse(program) {
            match op {
                Op::Write(bytes) => {
                    out.write(&bytes);
                    wrote += bytes.len();
                }
                Op::Big { kib, fill } => {
                    out.write(&vec![fill; kib * 1024]);
                    wrote += kib * 1024;
                }
                Op::Close => {
                    out.close();
                    closed = true;
                }
                Op::Shutdown => out.shutdown_write(),
                Op::Panic => panic!("{PANIC_MESSAGE}"),
                Op::Check => {
                    let len = out.len();
                    if len != start_len + wrote
                        || out.is_empty() != (len == 0)
                        || out.is_closing() != (start_closing || closed)
                    {
                        panic!(
                            "fuzz plugin: Output disagrees: len {len}, expected {} + {wrote}; is_empty {}; is_closing {}, expected {}",
                            start_len,
                            out.is_empty(),
                            out.is_closing(),
                            start_closing || closed
                        );
                    }
                }
                Op::Describe => {
                    let d = describe(&self.info);
                    out.write(&d);
                    wrote += d.len();
                }
                Op::PanicWhenLost => self.panic_when_lost = true,
            }
        }
    }
}

plugin_api::export_plugin!(Boundary);

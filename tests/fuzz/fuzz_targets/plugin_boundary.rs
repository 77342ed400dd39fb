//! The host side of the plugin boundary: a real plugin (`plugin/`, loaded with
//! `plugin_api::host::Library` as sockhost loads one, and declaring services) runs arbitrary
//! sequences of `Output` writes, closes, half-closes and panics — from data, end of stream,
//! timer and wake callbacks, over stream and datagram outputs, with arbitrary connection
//! details — driven through `plugin_api::session::Session`, the consumer contract the host's
//! TCP and UDP drivers use. What the host reads back must match a model of the same script
//! and of that contract.

#![no_main]

#[path = "../shared/script.rs"]
mod script;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use plugin_api::host::{Factory, Library, LogLevel, LogSink};
use plugin_api::session::{Delivered, Input as Call, Requests, Session};
use plugin_api::{ConnId, ConnInfo, LostReason, Output, Transport};
use script::{describe, parse, Op, PANIC_MESSAGE};

thread_local! {
    static FACTORY: Factory = load();
}

fn load() -> Factory {
    let path = std::env::var_os("SOCKHOST_FUZZ_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/libfuzz_boundary_plugin.so").into()
        });
    let library = Library::load(&path)
        .unwrap_or_else(|e| panic!("{e} (tests/fuzz/run.sh builds the plugin first)"));
    let quiet = LogSink {
        sink: |_, _, _| {},
        max_level: LogLevel::Off,
    };
    let factory = library.factory(&[], quiet).expect("the fuzz plugin's factory");
    assert!(factory.uses_services(), "the fuzz plugin declares services");
    factory
}

/// The fuzz input, read front to back; past its end every read is zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    /// A length byte, then that many bytes (fewer at the end).
    fn chunk(&mut self) -> Vec<u8> {
        let len = (self.byte() as usize).min(self.0.len());
        let (chunk, rest) = self.0.split_at(len);
        self.0 = rest;
        chunk.to_vec()
    }

    fn text(&mut self) -> Option<String> {
        (self.byte() % 2 == 1).then(|| String::from_utf8_lossy(&self.chunk()).into_owned())
    }

    fn addr(&mut self) -> SocketAddr {
        let port = u16::from_be_bytes([self.byte(), self.byte()]);
        if self.byte() % 2 == 0 {
            SocketAddr::from((Ipv4Addr::from(std::array::from_fn::<u8, 4, _>(|_| self.byte())), port))
        } else {
            let ip = Ipv6Addr::from(std::array::from_fn::<u8, 16, _>(|_| self.byte()));
            let flow = u32::from_be_bytes(std::array::from_fn(|_| self.byte()));
            let scope = u32::from_be_bytes(std::array::from_fn(|_| self.byte()));
            SocketAddrV6::new(ip, port, flow, scope).into()
        }
    }
}

/// The same scripts run against plain vectors, and the session contract around them.
#[derive(Default)]
struct Model {
    datagram: bool,
    /// This callback's output.
    bytes: Vec<u8>,
    datagrams: Vec<Vec<u8>>,
    requests: Requests,
    /// The session: closing, sending side shut, ended.
    closing: bool,
    write_shut: bool,
    lost: bool,
    panic_when_lost: bool,
}

impl Model {
    fn write(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.datagrams.push(data.to_vec());
    }

    /// One callback running `ops` (or, for end of stream, writing "eof" and closing), as
    /// the session delivers it.
    fn deliver(&mut self, ops: &[Op], eof: bool, info: &ConnInfo) -> Delivered {
        self.bytes.clear();
        self.datagrams.clear();
        self.requests = Requests::default();
        if self.lost || self.closing {
            return Delivered::Ignored;
        }
        if eof {
            self.write(b"eof");
            self.requests.close = true;
        }
        for op in ops {
            match op {
                Op::Write(b) => self.write(b),
                Op::Big { kib, fill } => self.write(&vec![*fill; kib * 1024]),
                Op::Close => self.requests.close = true,
                Op::Shutdown => self.requests.shutdown_write = !self.datagram,
                Op::Panic => {
                    // Its output is discarded, and the session ends (connection_lost runs).
                    self.bytes.clear();
                    self.datagrams.clear();
                    self.lost = true;
                    return Delivered::Panicked(PANIC_MESSAGE.to_string());
                }
                Op::Check => {}
                Op::Describe => self.write(&describe(info)),
                Op::PanicWhenLost => self.panic_when_lost = true,
            }
        }
        // Writes after the sending side was shut down (by an earlier callback) are dropped.
        if self.write_shut {
            self.bytes.clear();
            self.datagrams.clear();
        }
        self.closing |= self.requests.close;
        self.write_shut |= self.requests.shutdown_write;
        Delivered::Ran(self.requests)
    }

    /// The host's view of `out` matches.
    fn check(&self, out: &Output) {
        assert!(out.written() == self.bytes.as_slice(), "written bytes differ");
        if self.datagram {
            let got: Vec<&[u8]> = out.written_datagrams().collect();
            let want: Vec<&[u8]> = self.datagrams.iter().map(Vec::as_slice).collect();
            assert_eq!(got, want, "datagram boundaries differ");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let datagram = input.byte() % 2 == 1;
    let transport = if datagram { Transport::Udp } else { Transport::Tcp };
    let mut info = ConnInfo::new(transport, input.addr(), input.addr());
    info.sni = input.text();
    info.alpn = (input.byte() % 2 == 1).then(|| input.chunk());
    info.peer_cert_subject = input.text();
    let id = ConnId::from_raw(input.u64());
    // What the plugin is told: the id comes with the connection's details.
    let mut told = info.clone();
    told.id = id;

    let mut out = if datagram {
        Output::for_datagrams()
    } else {
        Output::for_stream()
    };
    let mut model = Model {
        datagram,
        ..Model::default()
    };
    FACTORY.with(|factory| {
        let consumer = factory.consumer(&info, id).expect("make_consumer does not panic");
        let mut session = Session::new(consumer);
        // The driver empties the output before every callback, as the host's drivers do.
        out.clear();
        let made = session.deliver(Call::Made, &mut out);
        model.bytes = describe(&told);
        model.datagrams = vec![model.bytes.clone()];
        assert_eq!(made, Delivered::Ran(Requests::default()), "connection_made");
        model.check(&out);

        for _ in 0..64 {
            if input.0.is_empty() {
                break;
            }
            out.clear();
            let (got, want) = match input.byte() % 8 {
                0 if !datagram => {
                    let got = session.deliver(Call::Eof, &mut out);
                    (got, model.deliver(&[], true, &told))
                }
                1 => {
                    let token = input.u64();
                    let got = session.deliver(Call::Timer(token), &mut out);
                    (got, model.deliver(&parse(&token.to_le_bytes()), false, &told))
                }
                2 => {
                    let token = input.u64();
                    let got = session.deliver(Call::Woken(token), &mut out);
                    (got, model.deliver(&parse(&token.to_be_bytes()), false, &told))
                }
                3 => {
                    session.close();
                    model.closing = true;
                    continue;
                }
                _ => {
                    let program = input.chunk();
                    let got = session.deliver(Call::Data(&program), &mut out);
                    (got, model.deliver(&parse(&program), false, &told))
                }
            };
            assert_eq!(got, want, "what the session delivered");
            model.check(&out);
            assert_eq!(session.is_closing(), model.closing, "closing");
            assert_eq!(session.is_write_shut(), model.write_shut, "sending side shut");
            assert_eq!(session.lost_reason().is_some(), model.lost, "ended");
        }
        // connection_lost runs exactly once: here, unless a panic already ended the session.
        let reason = LostReason::from_code(input.byte());
        let lost = session.lose(reason);
        assert_eq!(
            lost.is_err(),
            model.panic_when_lost && !model.lost,
            "connection_lost panics exactly when asked to: {lost:?}"
        );
        assert_eq!(session.lose(reason), Ok(()), "connection_lost runs once");
        drop(session);
    });
});

//! The host side of the plugin boundary: a real plugin (`plugin/`, loaded with
//! `plugin_api::host::Library` as sockhost loads one) runs arbitrary sequences of `Output`
//! writes, closes, half-closes and panics, over stream and datagram outputs, with arbitrary
//! connection details; everything the host then reads through plugin-api's host-side types
//! must match a model of the same script.

#![no_main]

#[path = "../shared/script.rs"]
mod script;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use plugin_api::host::{Factory, Library, LogLevel, LogSink};
use plugin_api::{ConnInfo, LostReason, Output, Transport};
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
    library.factory(&[], quiet).expect("the fuzz plugin's factory")
}

/// The fuzz input, read front to back; past its end every read is zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
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

/// What the host should read back: the same script run against plain vectors.
#[derive(Default)]
struct Model {
    bytes: Vec<u8>,
    datagrams: Vec<Vec<u8>>,
    close: bool,
    shutdown: bool,
    panic_when_lost: bool,
}

impl Model {
    fn write(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        self.datagrams.push(data.to_vec());
    }

    /// Run a program; `Err` with the panic message if it panics.
    fn run(&mut self, ops: &[Op], info: &ConnInfo) -> Result<(), String> {
        for op in ops {
            match op {
                Op::Write(b) => self.write(b),
                Op::Big { kib, fill } => self.write(&vec![*fill; kib * 1024]),
                Op::Close => self.close = true,
                Op::Shutdown => self.shutdown = true,
                Op::Panic => return Err(PANIC_MESSAGE.to_string()),
                Op::Check => {}
                Op::Describe => self.write(&describe(info)),
                Op::PanicWhenLost => self.panic_when_lost = true,
            }
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.bytes.clear();
        self.datagrams.clear();
        self.close = false;
        self.shutdown = false;
    }

    /// The host's view of `out` matches.
    fn check(&self, out: &Output, datagram: bool) {
        assert!(out.written() == self.bytes.as_slice(), "written bytes differ");
        if datagram {
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

    let mut out = if datagram {
        Output::for_datagrams()
    } else {
        Output::for_stream()
    };
    let mut model = Model::default();
    FACTORY.with(|factory| {
        let mut consumer = factory.consumer(&info).expect("make_consumer does not panic");
        consumer.connection_made(&mut out).expect("connection_made does not panic");
        model.write(&describe(&info));
        model.check(&out, datagram);

        let mut ended = false;
        for _ in 0..64 {
            if input.0.is_empty() || ended {
                break;
            }
            match input.byte() % 8 {
                // The host resets the output after taking what a callback wrote.
                0 => {
                    out.reset();
                    model.reset();
                }
                1 => {
                    assert_eq!(out.take_close_request(), model.close, "close request");
                    assert_eq!(out.take_shutdown_request(), model.shutdown, "shutdown request");
                    assert!(!out.take_close_request() && !out.take_shutdown_request(), "requests are taken once");
                    model.close = false;
                    model.shutdown = false;
                }
                2 if !datagram => {
                    consumer.eof_received(&mut out).expect("eof_received does not panic");
                    model.write(b"eof");
                    model.close = true;
                    ended = true;
                }
                _ => {
                    let program = input.chunk();
                    let got = consumer.data_received(&program, &mut out);
                    let want = model.run(&parse(&program), &info);
                    assert_eq!(got, want, "data_received's result");
                    ended = got.is_err();
                }
            }
            model.check(&out, datagram);
        }
        let reason = LostReason::from_code(input.byte());
        let lost = consumer.connection_lost(reason);
        assert_eq!(
            lost.is_err(),
            model.panic_when_lost,
            "connection_lost panics exactly when asked to: {lost:?}"
        );
        drop(consumer);
    });
});

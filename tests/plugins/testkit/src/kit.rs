// The test plugin's behaviour, shared by the `testkit` and `testkit-b` builds (which differ
// only in `TAG`). Every chunk is echoed unless it starts with a command word:
//
//   panic   panic inside data_received (the host must close only this connection); the
//           message is "testkit was asked to panic" followed by the rest of the chunk
//   spin    loop forever (the worker's heartbeat stops; --timeout must replace it)
//   hang    block forever in a system call (sleep), as a plugin stuck on a lock or a
//           blocking read would
//   abort   abort the process (a crashing worker)
//   tag     reply "<TAG>\n" (which build is serving)
//   pid     reply "<process id>\n" (which worker is serving)
//   whoami  reply "peer=<addr> local=<addr> transport=<t> sni=<..> alpn=<..> subject=<..>\n"
//   count   reply "<n>\n", n = chunks received by this consumer (per connection / UDP peer)
//   log     log "testkit log line" at info and "testkit debug line" at debug, reply "logged\n"
//   close   reply "bye\n" and close
//
// Options: greeting=TEXT (sent on connect), limit=N (a number; refused otherwise),
// fail-if-exists=PATH (the factory fails while PATH exists: a replacement worker that cannot
// start).

use plugin_api::{ConnInfo, Consumer, LostReason, OptionSpec, Options, Output, PluginInfo, Protocol, Transports};

pub struct Kit {
    greeting: Option<String>,
}

pub struct KitConsumer {
    info: ConnInfo,
    greeting: Option<String>,
    chunks: u64,
}

impl Protocol for Kit {
    type Consumer = KitConsumer;

    const INFO: PluginInfo = PluginInfo::new("testkit", env!("CARGO_PKG_VERSION"), "test plugin")
        .transports(Transports::TCP_AND_UDP)
        .options(&[
            OptionSpec::new("greeting", "text sent when a connection opens"),
            OptionSpec::new("limit", "a number, to test value validation").default_value("10"),
            OptionSpec::new("fail-if-exists", "the factory fails while this file exists"),
        ]);

    fn new(options: &Options) -> Result<Self, String> {
        let _limit: Option<u32> = options.parse("limit")?;
        if let Some(marker) = options.get("fail-if-exists") {
            if std::path::Path::new(marker).exists() {
                return Err(format!("{marker} exists (fail-if-exists)"));
            }
        }
        log::info!("testkit factory ready (tag {TAG})");
        Ok(Kit { greeting: options.get("greeting").map(str::to_string) })
    }

    fn consumer(&self, info: &ConnInfo) -> KitConsumer {
        KitConsumer { info: info.clone(), greeting: self.greeting.clone(), chunks: 0 }
    }
}

impl Consumer for KitConsumer {
    fn connection_made(&mut self, out: &mut Output) {
        if let Some(g) = &self.greeting {
            out.write(g.as_bytes());
        }
    }

    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        self.chunks += 1;
        if let Some(rest) = data.strip_prefix(b"panic") {
            panic!("testkit was asked to panic{}", String::from_utf8_lossy(rest));
        } else if data.starts_with(b"spin") {
            #[allow(clippy::empty_loop)]
            loop {
                std::hint::spin_loop();
            }
        } else if data.starts_with(b"hang") {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        } else if data.starts_with(b"abort") {
            std::process::abort();
        } else if data.starts_with(b"tag") {
            out.write(format!("{TAG}\n").as_bytes());
        } else if data.starts_with(b"pid") {
            out.write(format!("{}\n", std::process::id()).as_bytes());
        } else if data.starts_with(b"whoami") {
            let i = &self.info;
            let line = format!(
                "peer={} local={} transport={} sni={} alpn={} subject={}\n",
                i.peer,
                i.local,
                i.transport,
                i.sni.as_deref().unwrap_or("-"),
                i.alpn.as_deref().map(String::from_utf8_lossy).as_deref().unwrap_or("-"),
                i.peer_cert_subject.as_deref().unwrap_or("-"),
            );
            out.write(line.as_bytes());
        } else if data.starts_with(b"count") {
            out.write(format!("{}\n", self.chunks).as_bytes());
        } else if data.starts_with(b"log") {
            log::info!("testkit log line");
            log::debug!("testkit debug line");
            out.write(b"logged\n");
        } else if data.starts_with(b"close") {
            out.write(b"bye\n");
            out.close();
        } else {
            out.write(data);
        }
    }

    fn connection_lost(&mut self, reason: LostReason) {
        log::debug!("connection from {} lost: {reason:?}", self.info.peer);
    }
}

plugin_api::export_plugin!(Kit);

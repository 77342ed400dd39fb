//! Test-only plugin for the host services. Line commands (`\n`-terminated):
//!
//!   id                  reply "<conn id>\n"
//!   timer MS TOKEN      set a timer; when it fires: "timer TOKEN\n"
//!   cancel              cancel the last timer: "cancelled true|false\n"
//!   wake MS             a new thread sleeps MS then wakes this connection: "woken 7\n"
//!   post ID TEXT        post "TEXT\n" to connection ID: "post <status>\n"
//!   close ID            services::close(ID): "closing\n"
//!   flood BYTES         write BYTES in 64 KiB chunks, one chunk per wake (never waits for
//!                       the peer): "flooded\n" at the end if the connection survives
//!   connect ADDR MS     open an outbound connection; its events are posted back here as
//!                       "outbound connected", "outbound data <text>", "outbound lost <reason>"
//!   send TEXT           send "TEXT" on the last outbound connection
//!   shut                half-close the last outbound connection (services::shutdown_write)
//!   idle MS             this connection's idle timeout (0: never)
//!   pause / resume      pause or resume reading the last outbound connection
//!   ticks               reply "<ticks so far>\n"
//!   timerbench N        N timer set+cancel pairs, then N timers armed at once (cancelled
//!                       after): "setcancel_ns <ns per pair> timer_bytes <RSS bytes per armed timer>\n"
//!   wakebench N         a thread wakes this connection N times, one at a time, timing each
//!                       wake until the callback runs: "wake_p50_us <p50> wake_p99_us <p99>\n"
//!   anything else       echoed
//!
//! Options: tick-ms=N (protocol tick period; 0: none).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use plugin_api::services::{self, ConnId, TimerId};
use plugin_api::{
    ConnInfo, Consumer, LostReason, OptionSpec, Options, Output, PluginInfo, Protocol, Transports,
};

pub struct Kit {
    tick: Option<Duration>,
    ticks: Rc<Cell<u64>>,
}

pub struct KitConsumer {
    id: ConnId,
    line: Vec<u8>,
    ticks: Rc<Cell<u64>>,
    last_timer: Option<TimerId>,
    flood_left: usize,
    outbound: Rc<RefCell<Option<ConnId>>>,
    wake_bench: Option<std::sync::Arc<WakeBench>>,
}

impl Protocol for Kit {
    type Consumer = KitConsumer;

    const INFO: PluginInfo = PluginInfo::new(
        "servicekit",
        env!("CARGO_PKG_VERSION"),
        "host services test plugin",
    )
    .transports(Transports::TCP_AND_UDP)
    .options(&[
        OptionSpec::new("tick-ms", "protocol tick period in ms; 0 = none").default_value("0"),
    ])
    .services();

    fn new(options: &Options) -> Result<Self, String> {
        let ms: u64 = options.parse("tick-ms")?.unwrap_or(0);
        Ok(Kit {
            tick: (ms > 0).then(|| Duration::from_millis(ms)),
            ticks: Rc::new(Cell::new(0)),
        })
    }

    fn consumer(&self, info: &ConnInfo) -> KitConsumer {
        KitConsumer {
            id: info.id,
            line: Vec::new(),
            ticks: self.ticks.clone(),
            last_timer: None,
            flood_left: 0,
            outbound: Rc::new(RefCell::new(None)),
            wake_bench: None,
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.tick
    }

    fn tick(&self) {
        self.ticks.set(self.ticks.get() + 1);
    }
}

const CHUNK: usize = 64 * 1024;
const FLOOD: u64 = 1;
const THREAD: u64 = 7;
const BENCH: u64 = 99;

/// Resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Time set+cancel pairs, then measure the memory of `n` armed timers.
fn timer_bench(id: ConnId, n: u64) -> String {
    let far = Duration::from_secs(3600);
    let start = std::time::Instant::now();
    for i in 0..n {
        let t = services::set_timer(id, far, i).expect("live");
        services::cancel_timer(t);
    }
    let per_pair = start.elapsed().as_nanos() as f64 / n as f64;
    let before = rss_bytes();
    let armed: Vec<TimerId> = (0..n)
        .map(|i| services::set_timer(id, far, i).expect("live"))
        .collect();
    let after = rss_bytes();
    for t in armed {
        services::cancel_timer(t);
    }
    let per_timer = after.saturating_sub(before) as f64 / n as f64;
    format!("setcancel_ns {per_pair:.1} timer_bytes {per_timer:.1}\n")
}

/// A thread that wakes one connection `n` times, one wake in flight at a time, and the
/// latency of each (from `wake()` to the `woken` callback).
#[derive(Default)]
pub struct WakeBench {
    state: std::sync::Mutex<(Option<std::time::Instant>, Vec<u64>)>,
    done: std::sync::Condvar,
}

impl WakeBench {
    fn run(&self, waker: services::Waker, n: usize) {
        for _ in 0..n {
            let mut s = self.state.lock().unwrap();
            s.0 = Some(std::time::Instant::now());
            drop(s);
            waker.wake();
            let mut s = self.state.lock().unwrap();
            while s.0.is_some() {
                s = self.done.wait(s).unwrap();
            }
        }
        waker.wake(); // the report
    }

    /// A wake arrived: record it; the report once the run is over.
    fn arrived(&self) -> Option<String> {
        let mut s = self.state.lock().unwrap();
        match s.0.take() {
            Some(sent) => {
                let us = sent.elapsed().as_nanos() as u64;
                s.1.push(us);
                self.done.notify_one();
                None
            }
            None => {
                let mut v = std::mem::take(&mut s.1);
                v.sort_unstable();
                let at = |q: f64| {
                    v.get(((v.len() as f64 - 1.0) * q) as usize)
                        .copied()
                        .unwrap_or(0) as f64
                        / 1000.0
                };
                Some(format!(
                    "wake_p50_us {:.1} wake_p99_us {:.1}\n",
                    at(0.5),
                    at(0.99)
                ))
            }
        }
    }
}

impl Consumer for KitConsumer {
    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        self.line.extend_from_slice(data);
        while let Some(end) = self.line.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.line.drain(..=end).collect();
            self.command(&line, out);
        }
    }

    fn timer_fired(&mut self, token: u64, out: &mut Output) {
        out.write(format!("timer {token}\n").as_bytes());
    }

    fn woken(&mut self, token: u64, out: &mut Output) {
        if token == BENCH {
            if let Some(bench) = &self.wake_bench {
                if let Some(report) = bench.arrived() {
                    out.write(report.as_bytes());
                    self.wake_bench = None;
                }
            }
            return;
        }
        if token != FLOOD {
            out.write(format!("woken {token}\n").as_bytes());
            return;
        }
        let n = self.flood_left.min(CHUNK);
        out.write(&vec![b'x'; n]);
        self.flood_left -= n;
        if self.flood_left > 0 {
            services::waker(self.id, FLOOD).expect("live").wake();
        } else {
            out.write(b"flooded\n");
        }
    }
}

impl KitConsumer {
    fn command(&mut self, data: &[u8], out: &mut Output) {
        let text = String::from_utf8_lossy(data);
        let line = text.trim_end();
        let mut words = line.split(' ');
        let num = |w: Option<&str>| w.and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
        match words.next().unwrap_or("") {
            "id" => out.write(format!("{}\n", self.id.to_raw()).as_bytes()),
            "timer" => {
                let ms = num(words.next());
                let token = num(words.next());
                self.last_timer = services::set_timer(self.id, Duration::from_millis(ms), token);
            }
            "cancel" => {
                let done = self.last_timer.take().is_some_and(services::cancel_timer);
                out.write(format!("cancelled {done}\n").as_bytes());
            }
            "wake" => {
                let ms = num(words.next());
                let waker =
                    services::waker(self.id, THREAD).expect("a live connection has a waker");
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    waker.wake();
                });
            }
            "post" => {
                let to = ConnId::from_raw(num(words.next()));
                let rest: Vec<&str> = words.collect();
                let status = services::post(to, format!("{}\n", rest.join(" ")).as_bytes());
                out.write(format!("post {status:?}\n").as_bytes());
            }
            "close" => {
                services::close(ConnId::from_raw(num(words.next())));
                out.write(b"closing\n");
            }
            "flood" => {
                self.flood_left = num(words.next()) as usize;
                services::waker(self.id, FLOOD).expect("live").wake();
            }
            "connect" => {
                let addr = words.next().unwrap_or("").to_string();
                let ms = num(words.next());
                let upstream = Upstream { origin: self.id };
                match services::connect(&addr, Duration::from_millis(ms), upstream) {
                    Ok(id) => *self.outbound.borrow_mut() = Some(id),
                    Err(e) => out.write(format!("connect refused: {e}\n").as_bytes()),
                }
            }
            "send" => {
                let rest: Vec<&str> = words.collect();
                if let Some(id) = *self.outbound.borrow() {
                    services::post(id, rest.join(" ").as_bytes());
                }
            }
            "shut" => {
                if let Some(id) = *self.outbound.borrow() {
                    services::shutdown_write(id);
                }
            }
            "idle" => {
                let ms = num(words.next());
                services::set_idle_timeout(self.id, (ms > 0).then(|| Duration::from_millis(ms)));
                out.write(b"idle set\n");
            }
            "pause" | "resume" => {
                if let Some(id) = *self.outbound.borrow() {
                    if line == "pause" {
                        services::pause_reading(id)
                    } else {
                        services::resume_reading(id)
                    }
                }
                out.write(format!("{line}d\n").as_bytes());
            }
            "ticks" => out.write(format!("{}\n", self.ticks.get()).as_bytes()),
            "timerbench" => {
                let n = num(words.next()).max(1);
                out.write(timer_bench(self.id, n).as_bytes());
            }
            "wakebench" => {
                let n = num(words.next()).max(1) as usize;
                let bench = std::sync::Arc::new(WakeBench::default());
                self.wake_bench = Some(bench.clone());
                let waker = services::waker(self.id, BENCH).expect("live");
                let origin = self.id;
                let _ = origin;
                std::thread::spawn(move || bench.run(waker, n));
            }
            _ => out.write(data),
        }
    }
}

/// The consumer of an outbound connection: reports everything to the connection that
/// opened it.
struct Upstream {
    origin: ConnId,
}

impl Consumer for Upstream {
    fn connection_made(&mut self, _out: &mut Output) {
        services::post(self.origin, b"outbound connected\n");
    }

    fn data_received(&mut self, data: &[u8], _out: &mut Output) {
        let text = String::from_utf8_lossy(data);
        services::post(
            self.origin,
            format!("outbound data {}\n", text.trim_end()).as_bytes(),
        );
    }

    fn connection_lost(&mut self, reason: LostReason) {
        services::post(
            self.origin,
            format!("outbound lost {reason:?}\n").as_bytes(),
        );
    }
}

plugin_api::export_plugin!(Kit);

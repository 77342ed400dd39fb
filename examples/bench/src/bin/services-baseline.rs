//! The baselines for the host-services rows of `bench/run.sh`, measured the way the
//! `servicekit` plugin measures sockhost's services (its `timerbench` and `wakebench`
//! commands), in a plain current-thread tokio program:
//!
//! - timers: a `tokio::time::sleep` registered in tokio's timer wheel (polled once) and
//!   dropped, per set+cancel pair; the resident memory of N registered sleeps, per sleep;
//! - wake: a plain thread sends on a tokio unbounded channel, one message in flight at a
//!   time; latency from the send to the receiving task running.
//!
//! Prints `setcancel_ns X timer_bytes Y` and `wake_p50_us X wake_p99_us Y`.
//! Usage: services-baseline [N_TIMERS] [N_WAKES]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::Context;
use std::time::{Duration, Instant};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Poll a future once (registers a sleep in the timer wheel).
fn poll_once<F: Future>(f: Pin<&mut F>) {
    let waker = std::task::Waker::noop();
    let _ = f.poll(&mut Context::from_waker(waker));
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n_timers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let n_wakes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let far = Duration::from_secs(3600);
        let start = Instant::now();
        for _ in 0..n_timers {
            let mut s = Box::pin(tokio::time::sleep(far));
            poll_once(s.as_mut());
        }
        let per_pair = start.elapsed().as_nanos() as f64 / n_timers as f64;
        let before = rss_bytes();
        let armed: Vec<Pin<Box<tokio::time::Sleep>>> = (0..n_timers)
            .map(|_| {
                let mut s = Box::pin(tokio::time::sleep(far));
                poll_once(s.as_mut());
                s
            })
            .collect();
        let after = rss_bytes();
        drop(armed);
        let per_timer = after.saturating_sub(before) as f64 / n_timers as f64;
        println!("setcancel_ns {per_pair:.1} timer_bytes {per_timer:.1}");

        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let d = done.clone();
        let sender = std::thread::spawn(move || {
            for _ in 0..n_wakes {
                *d.0.lock().unwrap() = false;
                tx.send(Instant::now()).unwrap();
                let mut arrived = d.0.lock().unwrap();
                while !*arrived {
                    arrived = d.1.wait(arrived).unwrap();
                }
            }
        });
        let mut lat = Vec::with_capacity(n_wakes);
        while let Some(sent) = rx.recv().await {
            lat.push(sent.elapsed().as_nanos() as u64);
            *done.0.lock().unwrap() = true;
            done.1.notify_one();
        }
        sender.join().unwrap();
        lat.sort_unstable();
        let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
        println!("wake_p50_us {:.1} wake_p99_us {:.1}", at(0.5), at(0.99));
    });
}

//! `udp-baseline`: a plain, idiomatic tokio UDP echo server with no plugin boundary.
//!
//! The anchor for sockhost's UDP figures, as `echo-baseline` is for TCP: one socket, one
//! **current_thread** runtime (like sockhost's `--concurrency thread`), and the loop most
//! tokio programs would write — `recv_from`, then `send_to` the same bytes back. It keeps
//! no per-peer state, which sockhost must (one consumer per peer), so the comparison shows
//! what sessions and the plugin ABI cost per datagram.
//!
//! Usage: `udp-baseline [--bind udp://ADDR | --bind ADDR]` (default `127.0.0.1:0`). Once
//! bound it prints `listening on udp://ADDR` (flushed), exactly like sockhost, and it exits
//! on SIGTERM or SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: udp-baseline [--bind [udp://]ADDR]
  --bind ADDR   address to listen on (default 127.0.0.1:0); a udp:// prefix is allowed";

/// Largest UDP payload over IPv4.
const MAX_DATAGRAM: usize = 65_507;

fn parse_args() -> Result<SocketAddr, String> {
    let mut bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--bind" => {
                let v = it.next().ok_or("--bind needs a value")?;
                let text = v.strip_prefix("udp://").unwrap_or(&v);
                bind = text.parse().map_err(|e| format!("--bind {v}: {e}"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(bind)
}

fn main() -> ExitCode {
    let bind = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("udp-baseline: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(serve(bind)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Bind, announce, and echo until SIGTERM/SIGINT.
async fn serve(bind: SocketAddr) -> std::io::Result<()> {
    let socket = UdpSocket::bind(bind).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on udp://{}", socket.local_addr()?)?;
        out.flush()?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // The echo loop is its own task, so a datagram costs no signal-future polling.
    let echo = tokio::spawn(echo(socket));
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    echo.abort();
    Ok(())
}

/// Send every datagram back to its sender.
async fn echo(socket: UdpSocket) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        if let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            // A full send buffer drops the reply, as the network may; an error such as ICMP
            // port-unreachable for an earlier reply concerns one peer only.
            let _ = socket.send_to(&buf[..n], peer).await;
        }
    }
}

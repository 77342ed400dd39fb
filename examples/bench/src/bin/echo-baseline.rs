//! `echo-baseline`: a plain, idiomatic tokio TCP echo server with no plugin boundary.
//!
//! It exists as the anchor for sockhost benchmarks: the same echo protocol that
//! `libecho.so` implements, written the way most tokio programs would, on a
//! **current_thread** runtime because sockhost's `--concurrency thread` mode serves
//! everything on one event loop too. Comparing the two shows what the host and its
//! plugin ABI cost over "just tokio".
//!
//! Usage: `echo-baseline [--bind ADDR] [--buffer BYTES]`
//! (defaults `127.0.0.1:0` and 8192). Once bound it prints `listening on tcp://ADDR`
//! (flushed), exactly like sockhost, and it exits on SIGTERM or SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: echo-baseline [--bind ADDR] [--buffer BYTES]
  --bind ADDR      address to listen on (default 127.0.0.1:0)
  --buffer BYTES   per-connection read buffer (default 8192)";

/// Parsed command line.
struct Args {
    bind: SocketAddr,
    buffer: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        buffer: 8192,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => {
                let v = value()?;
                args.bind = v.parse().map_err(|e| format!("--bind {v}: {e}"))?;
            }
            "--buffer" => {
                let v = value()?;
                args.buffer = v.parse().map_err(|e| format!("--buffer {v}: {e}"))?;
                if args.buffer == 0 {
                    return Err("--buffer must be at least 1".into());
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("echo-baseline: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo-baseline: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Bind, announce, and accept until SIGTERM/SIGINT.
async fn serve(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind(args.bind).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on tcp://{}", listener.local_addr()?)?;
        out.flush()?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(echo(stream, args.buffer));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on the ready listener.
                    eprintln!("echo-baseline: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Echo one connection until EOF or an error.
async fn echo(mut stream: TcpStream, buffer: usize) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; buffer];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

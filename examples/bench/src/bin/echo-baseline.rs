//! `echo-baseline`: a plain, idiomatic tokio TCP echo server with no plugin boundary.
//!
//! It exists as the anchor for sockhost benchmarks: the same echo protocol that
//! `libecho.so` implements, written the way most tokio programs would, on a
//! **current_thread** runtime because sockhost's `--concurrency thread` mode serves
//! everything on one event loop too. Comparing the two shows what the host and its
//! plugin ABI cost over "just tokio".
//!
//! With `--cert-file F --key-file F` it serves TLS with tokio-rustls (aws-lc-rs, TLS 1.3
//! and 1.2, session tickets off: the anchor for sockhost's TLS figures): the same echo over
//! the same TLS library, so a comparison shows the host's overhead, not rustls'.
//!
//! Usage: `echo-baseline [--bind ADDR] [--buffer BYTES] [--cert-file F --key-file F]`
//! (defaults `127.0.0.1:0` and 8192). Once bound it prints `listening on tcp://ADDR`
//! (flushed), exactly like sockhost, and it exits on SIGTERM or SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_rustls::TlsAcceptor;

const USAGE: &str =
    "usage: echo-baseline [--bind ADDR] [--buffer BYTES] [--cert-file F --key-file F]
  --bind ADDR      address to listen on (default 127.0.0.1:0)
  --buffer BYTES   per-connection read buffer (default 8192)
  --cert-file F    PEM certificate chain: serve TLS (with --key-file)
  --key-file F     PEM private key";

/// Parsed command line.
struct Args {
    bind: SocketAddr,
    buffer: usize,
    cert: Option<String>,
    key: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        buffer: 8192,
        cert: None,
        key: None,
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
            "--cert-file" => args.cert = Some(value()?),
            "--key-file" => args.key = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.cert.is_some() != args.key.is_some() {
        return Err("--cert-file and --key-file go together".into());
    }
    Ok(args)
}

/// The TLS acceptor for `--cert-file`/`--key-file`: aws-lc-rs, TLS 1.3 and 1.2, the same
/// cipher suite preference as sockhost's (TLS13_AES_128_GCM_SHA256 first, the server's
/// order), so that the TLS echo comparison moves the same cipher over the same bytes.
fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--cert-file {cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--cert-file {cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--key-file {key}: {e}"))?;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--cert-file/--key-file: {e}"))?;
    config.ignore_client_order = true;
    Ok(TlsAcceptor::from(Arc::new(config)))
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
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => Some(acceptor(cert, key).map_err(std::io::Error::other)?),
        _ => None,
    };
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
                    let _ = stream.set_nodelay(true);
                    match &tls {
                        None => {
                            let buffer = args.buffer;
                            tokio::spawn(async move { echo(&mut { stream }, buffer).await });
                        }
                        Some(tls) => {
                            let accepting = tls.accept(stream);
                            let buffer = args.buffer;
                            tokio::spawn(async move {
                                if let Ok(mut stream) = accepting.await {
                                    if echo(&mut stream, buffer).await {
                                        // The client's EOF: answer with our close_notify.
                                        let _ = stream.shutdown().await;
                                    }
                                }
                            });
                        }
                    }
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

/// Echo one connection until EOF (`true`) or an error (`false`).
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, buffer: usize) -> bool {
    let mut buf = vec![0u8; buffer];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return true,
            Err(_) => return false,
            Ok(n) => {
                // flush: TLS may hold the last record; for TCP it is a no-op.
                if stream.write_all(&buf[..n]).await.is_err() || stream.flush().await.is_err() {
                    return false;
                }
            }
        }
    }
}

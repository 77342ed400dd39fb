//! The stream against a rustls client over an in-memory pipe of a few bytes: every record
//! arrives in pieces (the unfinished-record path), every write is partial (`outgoing`),
//! and the reader's buffer is smaller than a record (`plaintext`).

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ClientConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use super::TlsStream;

fn configs(
    version: &'static rustls::SupportedProtocolVersion,
) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    crate::tls::note_server_names(&mut server);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// The client's side: what it has received, and whether the server's close_notify came.
#[derive(Default)]
struct Received {
    plaintext: Vec<u8>,
    closed: bool,
}

/// Move TLS bytes both ways, reading and writing at once (the pipe holds a few bytes),
/// until `done`.
async fn pump(
    conn: &mut ClientConnection,
    rd: &mut ReadHalf<DuplexStream>,
    wr: &mut WriteHalf<DuplexStream>,
    got: &mut Received,
    done: impl Fn(&ClientConnection, &Received) -> bool,
) -> io::Result<()> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        while conn.wants_write() {
            conn.write_tls(&mut out)?;
        }
        loop {
            match conn.reader().read(&mut buf) {
                Ok(0) => {
                    got.closed = true;
                    break;
                }
                Ok(n) => got.plaintext.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() && done(conn, got) {
            return Ok(());
        }
        tokio::select! {
            n = wr.write(&out), if !out.is_empty() => {
                out.drain(..n?);
            }
            n = rd.read(&mut buf) => {
                let n = n?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                conn.read_tls(&mut &buf[..n])?;
                conn.process_new_packets().map_err(io::Error::other)?;
            }
        }
    }
}

/// A rustls client over `io`, its handshake done.
struct Client {
    conn: ClientConnection,
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    got: Received,
}

impl Client {
    async fn handshake(config: Arc<rustls::ClientConfig>, io: DuplexStream) -> Client {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(config, name).unwrap();
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut got = Received::default();
        pump(&mut conn, &mut rd, &mut wr, &mut got, |c, _| {
            !c.is_handshaking()
        })
        .await
        .unwrap();
        Client { conn, rd, wr, got }
    }
}

async fn echo_through_a_narrow_pipe(version: &'static rustls::SupportedProtocolVersion) {
    let (server_config, client_config) = configs(version);
    let (server_io, client_io) = tokio::io::duplex(7);
    let server = tokio::spawn(async move {
        let (mut tls, sni) = TlsStream::accept(server_io, server_config).await.unwrap();
        assert_eq!(sni.as_deref(), Some("localhost"));
        // Echo through a reader buffer smaller than a record, until close_notify.
        let mut buf = [0u8; 5];
        loop {
            let n = tls.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            tls.write_all(&buf[..n]).await.unwrap();
        }
        tls.shutdown().await.unwrap();
    });
    let Client {
        mut conn,
        mut rd,
        mut wr,
        mut got,
    } = Client::handshake(client_config, client_io).await;
    assert_eq!(conn.protocol_version(), Some(version.version));
    let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    for (i, chunk) in data.chunks(10_000).enumerate() {
        if i == 2 && version.version == rustls::ProtocolVersion::TLSv1_3 {
            conn.refresh_traffic_keys().unwrap();
        }
        conn.writer().write_all(chunk).unwrap();
        let want = (i + 1) * 10_000;
        pump(&mut conn, &mut rd, &mut wr, &mut got, |_, g| {
            g.plaintext.len() >= want
        })
        .await
        .unwrap();
    }
    assert!(got.plaintext == data, "the echo came back different");
    conn.send_close_notify();
    pump(&mut conn, &mut rd, &mut wr, &mut got, |_, g| g.closed)
        .await
        .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn tls13_echo_key_update_and_close_notify_through_a_narrow_pipe() {
    echo_through_a_narrow_pipe(&rustls::version::TLS13).await;
}

#[tokio::test]
async fn tls12_echo_and_close_notify_through_a_narrow_pipe() {
    echo_through_a_narrow_pipe(&rustls::version::TLS12).await;
}

/// An IO that counts the writes that took bytes.
struct CountingWrites<S> {
    io: S,
    writes: Arc<std::sync::atomic::AtomicUsize>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountingWrites<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountingWrites<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(r, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The session tickets that end a TLS 1.3 handshake wait for the server's first write and
/// go out with it: one socket write, not two (and the client still gets them first).
#[tokio::test]
async fn the_tickets_go_out_with_the_first_write() {
    let (server_config, client_config) = configs(&rustls::version::TLS13);
    let (server_io, client_io) = tokio::io::duplex(64 * 1024);
    let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = CountingWrites {
        io: server_io,
        writes: writes.clone(),
    };
    let server_writes = writes.clone();
    let server = tokio::spawn(async move {
        let (mut tls, _) = TlsStream::accept(counted, server_config).await.unwrap();
        let before = server_writes.load(std::sync::atomic::Ordering::SeqCst);
        tls.write_all(b"hello").await.unwrap();
        let after = server_writes.load(std::sync::atomic::Ordering::SeqCst);
        tls.shutdown().await.unwrap();
        after - before
    });
    let Client {
        mut conn,
        mut rd,
        mut wr,
        mut got,
    } = Client::handshake(client_config, client_io).await;
    pump(&mut conn, &mut rd, &mut wr, &mut got, |_, g| {
        g.plaintext == b"hello" && g.closed
    })
    .await
    .unwrap();
    assert_eq!(
        server.await.unwrap(),
        1,
        "the tickets and the first data in one write"
    );
}

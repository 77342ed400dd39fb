//! The client end of a TCP connection, plain or TLS, so that `echo`, `connect` and `idle`
//! run over TLS with `--tls` and drive a TLS server exactly as they drive a plain one.
//!
//! TLS is rustls with the aws-lc-rs provider (sockhost's own), with three settings chosen
//! so that a run measures the *server's* cost of TLS, identically for every server:
//! - **no resumption**: every connection is a full handshake — unless `--resume` is given:
//!   then the client keeps the session tickets servers send (rustls's in-memory client
//!   cache, up to 8 TLS 1.3 tickets per server, every ticket used once) and offers one on
//!   each new connection, so that after the first connection of a loop every handshake is
//!   a resumed one (TLS 1.3 PSK with an X25519 exchange, no certificate and no signature);
//!   `connect` counts how many were. Each `connect` loop has its own cache
//!   ([`Tls::for_one_loop`]): with one cache shared by 16 loops, a burst of more than 8
//!   connects (the loops fall into step against a fast server) found it empty, and 20–30%
//!   of the handshakes were full ones although every server ticket arrived;
//! - **X25519 only** for the key exchange: rustls would otherwise offer the post-quantum
//!   hybrid X25519MLKEM768 first, which a rustls server picks and OpenSSL 3.0 (nginx) cannot,
//!   so two servers would do different work;
//! - **the server's signature is not verified** unless `--tls-ca FILE` is given: verifying a
//!   P-256 signature costs the client about twice what making it costs the server, and a
//!   one-core load generator would then measure itself. The server still signs every
//!   handshake; `--tls-ca` proves that it signs correctly.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::args::Flags;
use crate::describe;

/// A connected client stream.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// How to open TLS connections (`--tls`, `--tls-ca FILE`, `--server-name NAME`,
/// `--resume`).
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
    /// The settings, for [`Tls::for_one_loop`].
    config: Arc<ClientConfig>,
    /// `--resume`.
    resume: bool,
}

impl Tls {
    /// Take the TLS flags; `None` when neither `--tls` nor `--tls-ca` was given.
    pub fn from_flags(f: &mut Flags) -> Result<Option<Tls>, String> {
        let switch = f.switch("tls");
        let ca: String = f.take("tls-ca", String::new())?;
        let name: String = f.take("server-name", "localhost".to_string())?;
        let resume = f.switch("resume");
        if !switch && ca.is_empty() {
            if resume {
                return Err("--resume needs --tls or --tls-ca".into());
            }
            return Ok(None);
        }
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
        let provider = Arc::new(provider);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?;
        let mut config = if ca.is_empty() {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(&ca)
                .map_err(|e| format!("--tls-ca {ca}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--tls-ca {ca}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("--tls-ca {ca}: no certificate in the file"));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| format!("--tls-ca {ca}: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.resumption = if resume {
            // Tickets (TLS 1.3) and session IDs or tickets (TLS 1.2), cached in memory.
            rustls::client::Resumption::default()
        } else {
            rustls::client::Resumption::disabled()
        };
        let name =
            ServerName::try_from(name.clone()).map_err(|e| format!("--server-name {name}: {e}"))?;
        let config = Arc::new(config);
        Ok(Some(Tls {
            connector: TlsConnector::from(config.clone()),
            name,
            config,
            resume,
        }))
    }

    /// The same settings with a session cache of its own (with `--resume`), for one loop
    /// whose connections follow each other: each resumes from a ticket its predecessor got.
    pub fn for_one_loop(&self) -> Tls {
        if !self.resume {
            return self.clone();
        }
        let mut config = (*self.config).clone();
        config.resumption = rustls::client::Resumption::store(Arc::new(
            rustls::client::ClientSessionMemoryCache::new(1),
        ));
        let config = Arc::new(config);
        Tls {
            connector: TlsConnector::from(config.clone()),
            name: self.name.clone(),
            config,
            resume: true,
        }
    }
}

/// Connect (TCP_NODELAY on) and, with `tls`, do a full handshake.
pub async fn open(addr: SocketAddr, tls: Option<&Tls>) -> Result<Stream, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| describe("connect", &e))?;
    tcp.set_nodelay(true).map_err(|e| describe("nodelay", &e))?;
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some(tls) => tls
            .connector
            .connect(tls.name.clone(), tcp)
            .await
            .map(|s| Stream::Tls(Box::new(s)))
            .map_err(|e| describe("TLS handshake", &e)),
    }
}

impl Stream {
    /// Whether the TLS handshake resumed an earlier session (`false` for plain TCP).
    pub fn resumed(&self) -> bool {
        let Stream::Tls(s) = self else { return false };
        s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// The negotiated TLS version, cipher suite and key exchange (`None` for plain TCP).
    pub fn tls_summary(&self) -> Option<String> {
        let Stream::Tls(s) = self else { return None };
        let conn = s.get_ref().1;
        let version = conn.protocol_version().map(|v| format!("{v:?}"));
        let suite = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()));
        let kx = conn
            .negotiated_key_exchange_group()
            .map(|g| format!("{:?}", g.name()));
        Some(format!(
            "{}/{}/{}",
            version.unwrap_or_default(),
            suite.unwrap_or_default(),
            kx.unwrap_or_default()
        ))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Accepts any certificate and signature (see the module doc: the load generator measures
/// the server, which still signs every handshake).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

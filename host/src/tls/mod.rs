//! TLS termination: the rustls server configuration built from `--cert-file`,
//! `--key-file`, `--ca-file` and `--alpn`, and the details a consumer sees of a finished
//! handshake.
//!
//! Crypto provider: aws-lc-rs, for its fast P-256/P-384 signatures and AES-GCM (the
//! handshake rate is what a TLS front end is judged by); it builds here without cmake.
//! TLS 1.3 and 1.2 only.
//!
//! Cipher suite: the server's preference, TLS 1.3's AES-128-GCM-SHA256 first (then the
//! provider's order: AES-256-GCM-SHA384, ChaCha20-Poly1305), whatever the client lists
//! first. rustls and OpenSSL clients list AES-256-GCM-SHA384 first, and its SHA-384 key
//! schedule (a dozen HMACs per handshake on SHA-512's 128-byte blocks, without the SHA
//! instructions SHA-256 has) cost 20 of ~128 µs of server CPU per full handshake here
//! (docs/performance.md, TLS); AES-128 matches the 128-bit strength of the P-256 and X25519
//! it is keyed by, as Go's crypto/tls also prefers it.
//!
//! In process mode the arbiter builds this configuration once per generation, before it
//! forks the workers: a bad certificate on reload aborts the reload before any worker
//! starts. Every worker derives the same session-ticket keys ([`tickets`]), so a client
//! resumes its session whichever worker its next connection lands on, before and after a
//! reload that keeps the service's certificates and client CAs.

pub mod tickets;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use crate::error::{HostError, TlsError};

/// The TLS flags, as given.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by these CAs.
    pub ca: Option<PathBuf>,
    pub alpn: Vec<String>,
}

/// What a worker needs to terminate TLS.
#[derive(Clone, Debug)]
pub struct Tls {
    pub config: Arc<ServerConfig>,
}

impl TlsFiles {
    /// Read and check the files and build the server configuration of `service` (its
    /// session tickets are its own: [`tickets`]).
    pub fn load(&self, service: &str) -> Result<Tls, HostError> {
        let chain = read_certs(&self.cert, "--cert-file")?;
        warn_if_not_valid_now(&self.cert, &chain[0]);
        let key = read_key(&self.key)?;
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        // A stable sort: only TLS13_AES_128_GCM_SHA256 moves (to the front).
        provider
            .cipher_suites
            .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let provider = Arc::new(provider);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Versions)?;
        let mut client_cas = Vec::new();
        let builder = match &self.ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                let ca_error = |source: Box<dyn std::error::Error + Send + Sync>| TlsError::Ca {
                    path: ca.clone(),
                    source,
                };
                for cert in read_certs(ca, "--ca-file")? {
                    client_cas.push(cert.to_vec());
                    roots.add(cert).map_err(|e| ca_error(e.into()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| ca_error(e.into()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let (cert, key_file) = (self.cert.clone(), self.key.clone());
        let binding = tickets::fingerprint(
            service,
            chain.iter().map(|c| c.as_ref()),
            client_cas.iter().map(Vec::as_slice),
        );
        let mut config = builder.with_single_cert(chain, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                cert,
                key: key_file,
            },
            source => TlsError::CertKey {
                cert,
                key: key_file,
                source,
            },
        })?;
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        note_server_names(&mut config);
        config.ignore_client_order = true;
        // Stateless resumption, with keys every worker of this process derives alike, across
        // reloads that keep the service's certificates and client CAs ([`tickets`]). TLS
        // 1.3 tickets: rustls's default, 2 after every handshake (as OpenSSL sends).
        config.ticketer = tickets::Tickets::new(binding).ok_or(TlsError::SessionTickets)?;
        Ok(Tls {
            config: Arc::new(config),
        })
    }
}

fn read_file(path: &Path, flag: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path, flag: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, flag)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            flag,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            flag,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, "--key-file")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pki_types::pem::Error::NoItemsFound => TlsError::NoKey(path.to_path_buf()),
        source => TlsError::BadPem {
            flag: "--key-file",
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Log a warning for a certificate that is expired or not yet valid: it still serves
/// (clients decide), but the operator should know.
fn warn_if_not_valid_now(path: &Path, leaf: &CertificateDer<'_>) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        tracing::warn!(
            "--cert-file {}: the certificate could not be parsed to check its dates",
            path.display()
        );
        return;
    };
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        tracing::warn!(
            "--cert-file {}: the certificate expired on {}",
            path.display(),
            validity.not_after
        );
    } else if validity.not_before > now {
        tracing::warn!(
            "--cert-file {}: the certificate is not valid before {}",
            path.display(),
            validity.not_before
        );
    }
}

thread_local! {
    /// The server name (SNI) of the last ClientHello this thread's rustls processed.
    static SERVER_NAME: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The server name of the ClientHello processed since the last call, if any. The TLS stream
/// ([`crate::tcp::tls_stream`]) calls it around each step of a handshake: rustls 0.23's
/// unbuffered server connection, unlike its buffered one, has no `server_name()`, but rustls
/// calls the certificate resolver with every ClientHello, synchronously, on the thread that
/// processes it.
pub fn take_server_name() -> Option<String> {
    SERVER_NAME.take()
}

/// Make `config` note each ClientHello's server name for [`take_server_name`] (every
/// configuration the TLS stream serves with needs this for `ConnInfo::sni`).
pub fn note_server_names(config: &mut ServerConfig) {
    config.cert_resolver = Arc::new(NoteServerName(config.cert_resolver.clone()));
}

/// The configured certificate resolver, noting each ClientHello's server name on the way
/// (see [`take_server_name`]).
#[derive(Debug)]
struct NoteServerName(Arc<dyn ResolvesServerCert>);

impl ResolvesServerCert for NoteServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        SERVER_NAME.set(hello.server_name().map(str::to_string));
        self.0.resolve(hello)
    }

    fn only_raw_public_keys(&self) -> bool {
        self.0.only_raw_public_keys()
    }
}

/// What the consumer learns of a finished handshake: SNI, ALPN, client certificate subject
/// (and the access log, the protocol version).
pub struct Details {
    pub version: Option<&'static str>,
    pub sni: Option<String>,
    pub alpn: Option<Vec<u8>>,
    pub peer_cert_subject: Option<String>,
}

impl Details {
    pub fn of(conn: &rustls::CommonState, sni: Option<String>) -> Details {
        let peer_cert_subject = conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| {
                x509_parser::parse_x509_certificate(leaf)
                    .ok()
                    .map(|(_, c)| c.subject().to_string())
            });
        Details {
            version: conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                _ => "other",
            }),
            sni,
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            peer_cert_subject,
        }
    }
}

//! `crypto-floor`: the public-key work a TLS 1.3 server cannot avoid per handshake, timed
//! on this machine through the same code sockhost runs, so that a handshake benchmark can
//! say how close the server gets to it.
//!
//! A full TLS 1.3 handshake with an ECDSA P-256 certificate and X25519 costs the server
//! one ECDSA P-256 SHA-256 signature (CertificateVerify) and one X25519 exchange (an
//! ephemeral key pair, then the shared secret from the client's share). A resumed one
//! (PSK with (EC)DHE, the only mode rustls clients offer) costs the exchange alone. Both
//! are timed here through rustls's aws-lc-rs provider (`key_provider.load_private_key` →
//! `Signer::sign`, `SupportedKxGroup::start` → `complete`), i.e. the calls rustls makes in a
//! handshake; everything else a handshake costs (key schedule, AES-GCM, tickets, the TCP
//! connection, the event loop) is above this floor.
//!
//! The same two operations are also timed with ring (the other provider rustls ships), so
//! that the provider choice is a measurement: `ring_*` in the output.
//!
//! Usage: `crypto-floor --key-file KEY.pem [--seconds S] [--json]`. One thread: pin it
//! (`taskset`) to the core the server runs on.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustls::crypto::aws_lc_rs::{default_provider, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::SignatureScheme;

const USAGE: &str = "usage: crypto-floor --key-file KEY.pem [--seconds S (1)] [--json]";

/// What TLS 1.3 signs in a server's CertificateVerify: 64 spaces, the context string, a
/// zero byte and a SHA-256 transcript hash (130 bytes).
fn certificate_verify_message() -> Vec<u8> {
    let mut m = vec![b' '; 64];
    m.extend_from_slice(b"TLS 1.3, server CertificateVerify\0");
    m.extend_from_slice(&[0x5a; 32]);
    m
}

/// Run `op` repeatedly for about `span` (after a tenth of it as warm-up); microseconds per
/// call.
fn time_per_op(span: Duration, mut op: impl FnMut()) -> f64 {
    let warm = Instant::now() + span / 10;
    while Instant::now() < warm {
        op();
    }
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..16 {
            op();
        }
        n += 16;
        let elapsed = start.elapsed();
        if elapsed >= span {
            return elapsed.as_secs_f64() * 1e6 / n as f64;
        }
    }
}

fn run(key_file: &str, span: Duration, json: bool) -> Result<(), String> {
    let provider = default_provider();
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("{key_file}: {e}"))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{key_file}: {e}"))?;
    let signer = key
        .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
        .ok_or_else(|| format!("{key_file}: not an ECDSA P-256 key"))?;
    let message = certificate_verify_message();
    let sign_us = time_per_op(span, || {
        let signature = signer.sign(&message).expect("signing");
        std::hint::black_box(signature);
    });

    let x25519 = kx_group::X25519;
    // The client's share, as a server receives it.
    let peer = x25519.start().map_err(|e| format!("X25519: {e}"))?;
    let peer_share = peer.pub_key().to_vec();
    let x25519_us = time_per_op(span, || {
        let ours = x25519.start().expect("X25519 key pair");
        let secret = ours.complete(&peer_share).expect("X25519 shared secret");
        std::hint::black_box(secret);
    });

    let (ring_sign_us, ring_x25519_us) = ring_figures(key_file, &message, span)?;

    let full = sign_us + x25519_us;
    if json {
        println!(
            "{{\"sign_p256_us\":{sign_us:.2},\"x25519_us\":{x25519_us:.2},\
\"full_floor_us\":{full:.2},\"resumed_floor_us\":{x25519_us:.2},\
\"ring_sign_p256_us\":{ring_sign_us:.2},\"ring_x25519_us\":{ring_x25519_us:.2}}}"
        );
    } else {
        println!(
            "aws-lc-rs: ECDSA P-256 sign {sign_us:.2} us, X25519 key pair + shared secret \
{x25519_us:.2} us; floor per full handshake {full:.2} us, per resumed handshake \
{x25519_us:.2} us\nring: ECDSA P-256 sign {ring_sign_us:.2} us, X25519 {ring_x25519_us:.2} us"
        );
    }
    Ok(())
}

/// The same signature and exchange with ring: (sign µs, X25519 µs).
fn ring_figures(key_file: &str, message: &[u8], span: Duration) -> Result<(f64, f64), String> {
    use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    let rng = SystemRandom::new();
    let pkcs8 =
        match PrivateKeyDer::from_pem_file(key_file).map_err(|e| format!("{key_file}: {e}"))? {
            PrivateKeyDer::Pkcs8(der) => der,
            _ => return Err(format!("{key_file}: ring needs a PKCS#8 key")),
        };
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.secret_pkcs8_der(),
        &rng,
    )
    .map_err(|e| format!("{key_file}: ring: {e}"))?;
    let sign_us = time_per_op(span, || {
        std::hint::black_box(key.sign(&rng, message).expect("ring signing"));
    });
    let peer =
        EphemeralPrivateKey::generate(&X25519, &rng).map_err(|e| format!("ring X25519: {e}"))?;
    let peer_share = peer
        .compute_public_key()
        .map_err(|e| format!("ring X25519: {e}"))?;
    let x25519_us = time_per_op(span, || {
        let ours = EphemeralPrivateKey::generate(&X25519, &rng).expect("ring X25519 key");
        // The server computes its share to send, then the secret.
        std::hint::black_box(ours.compute_public_key().expect("ring X25519 share"));
        agreement::agree_ephemeral(
            ours,
            &UnparsedPublicKey::new(&X25519, peer_share.as_ref()),
            |s| {
                std::hint::black_box(s.len());
            },
        )
        .expect("ring X25519 agreement");
    });
    Ok((sign_us, x25519_us))
}

fn main() -> ExitCode {
    let mut key_file = None;
    let mut seconds = 1.0f64;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--key-file" => key_file = args.next(),
            "--seconds" => match args.next().and_then(|s| s.parse().ok()) {
                Some(s) if s > 0.0 && s <= 60.0 => seconds = s,
                _ => {
                    eprintln!("crypto-floor: --seconds needs a number of seconds (0..60]");
                    return ExitCode::from(2);
                }
            },
            "--json" => json = true,
            "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("crypto-floor: unexpected argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(key_file) = key_file else {
        eprintln!("crypto-floor: --key-file is required\n{USAGE}");
        return ExitCode::from(2);
    };
    match run(&key_file, Duration::from_secs_f64(seconds), json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

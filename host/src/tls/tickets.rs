//! Session tickets every worker can read, across reloads, with keys that rotate and are
//! forgotten.
//!
//! rustls's own ticketer draws a random key and replaces it with another random one every
//! 6 hours. In process mode the workers are forked after the configuration is built, so
//! they start with the same key, but each draws its successor on its own: 6 hours in, a
//! ticket resumes only on the worker that issued it (1 resumption in N behind
//! SO_REUSEPORT). A reload builds a new configuration, which made every ticket issued
//! before it useless; and rustls's ticketer refuses any ticket longer than those it has
//! issued itself, so a fresh worker refused its siblings' tickets until it had issued one.
//!
//! Here the keys are derived, not drawn, from one chain per process: a random secret for
//! the current rotation period (6 hours since the Unix epoch), made when the first TLS
//! configuration is built (before any fork), and advanced one period at a time, each link
//! the HKDF-SHA256 of the previous one. The link of the period before is kept and every
//! older one overwritten, so a process's memory can no more open a ticket older than two
//! periods than rustls's could. Every worker advances its copy to the same links with no
//! coordination (the arbiter advances its own on each supervision pass, so that a worker
//! forked later inherits no older link). Each TLS service derives its own ticket key from
//! a link and its name, so a ticket does not resume on another service.
//!
//! A ticket is `period (8 bytes, big-endian) ‖ nonce (12 random bytes) ‖ AES-256-GCM
//! ciphertext and tag`, with the period as associated data; it is accepted in the period it
//! was issued and the next (6 to 12 hours). A thread-mode reload starts a new process,
//! with a new chain: tickets issued before it cost one full handshake.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

/// How long one key issues tickets.
const ROTATION_SECS: u64 = 6 * 60 * 60;
const PERIOD_LEN: usize = 8;

/// The current rotation period.
fn period_now() -> u64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    secs / ROTATION_SECS
}

/// One link of the chain.
type Link = [u8; 32];

/// This process's chain: the links of `period` and of the one before it.
#[derive(Debug)]
pub struct Chain {
    period: u64,
    current: Link,
    previous: Option<Link>,
}

impl Chain {
    /// A chain starting at `period` from a random link.
    fn start(period: u64) -> Option<Chain> {
        let mut current = [0u8; 32];
        SystemRandom::new().fill(&mut current).ok()?;
        Some(Chain {
            period,
            current,
            previous: None,
        })
    }

    /// Move on to `period` (never back), overwriting the links left behind.
    fn advance_to(&mut self, period: u64) {
        while self.period < period {
            let next = hkdf(&self.current, &[b"sockhost ticket chain"]);
            self.previous = Some(std::mem::replace(&mut self.current, next));
            self.period += 1;
        }
    }

    /// The link of `period`, if this chain still (or already) has it.
    fn link(&self, period: u64) -> Option<&Link> {
        if period == self.period {
            Some(&self.current)
        } else if period + 1 == self.period {
            self.previous.as_ref()
        } else {
            None
        }
    }
}

fn hkdf(secret: &[u8], info: &[&[u8]]) -> Link {
    let mut out = [0u8; 32];
    Salt::new(HKDF_SHA256, &[])
        .extract(secret)
        .expand(info, HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA256 gives 32 bytes");
    out
}

/// The process's chain, made by the first TLS configuration.
static CHAIN: OnceLock<Arc<Mutex<Chain>>> = OnceLock::new();

fn process_chain() -> Option<Arc<Mutex<Chain>>> {
    if let Some(chain) = CHAIN.get() {
        return Some(chain.clone());
    }
    let chain = Arc::new(Mutex::new(Chain::start(period_now())?));
    Some(CHAIN.get_or_init(|| chain).clone())
}

/// Move this process's chain to the current period, forgetting older links (the
/// arbiter's supervision pass calls it; workers advance as they issue tickets).
pub fn advance() {
    if let Some(chain) = CHAIN.get() {
        lock(chain).advance_to(period_now());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One service's ticketer.
#[derive(Debug)]
pub struct Tickets {
    /// The service's name, in every key's derivation.
    service: String,
    chain: Arc<Mutex<Chain>>,
    /// The keys of the current period and the one before, derived once per period.
    keys: Mutex<Keys>,
}

#[derive(Debug)]
struct Keys {
    period: u64,
    current: Option<TicketKey>,
    previous: Option<TicketKey>,
}

struct TicketKey(LessSafeKey);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(..)")
    }
}

impl Tickets {
    /// `service`'s ticketer on this process's chain; `None` if the system's random source
    /// fails.
    pub fn new(service: &str) -> Option<Arc<Tickets>> {
        Some(Arc::new(Tickets::on(service, process_chain()?)))
    }

    fn on(service: &str, chain: Arc<Mutex<Chain>>) -> Tickets {
        Tickets {
            service: service.to_string(),
            chain,
            keys: Mutex::new(Keys {
                period: u64::MAX,
                current: None,
                previous: None,
            }),
        }
    }

    /// The service's key for `period`, if it is the current one (`now`) or the one before.
    fn with_key<R>(&self, period: u64, now: u64, f: impl FnOnce(&LessSafeKey) -> R) -> Option<R> {
        let mut keys = lock(&self.keys);
        if keys.period != now {
            let mut chain = lock(&self.chain);
            chain.advance_to(now);
            let derive = |p: u64| {
                let link = chain.link(p)?;
                let bytes = hkdf(link, &[b"sockhost ticket key ", self.service.as_bytes()]);
                let key = UnboundKey::new(&AES_256_GCM, &bytes).ok()?;
                Some(TicketKey(LessSafeKey::new(key)))
            };
            *keys = Keys {
                period: now,
                current: derive(now),
                previous: now.checked_sub(1).and_then(derive),
            };
        }
        let key = if period == now {
            keys.current.as_ref()
        } else if period.checked_add(1) == Some(now) {
            keys.previous.as_ref()
        } else {
            None
        };
        key.map(|k| f(&k.0))
    }

    fn encrypt_at(&self, plain: &[u8], now: u64) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + 16);
        ticket.extend_from_slice(&now.to_be_bytes());
        ticket.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        self.with_key(now, now, |key| {
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(now.to_be_bytes()),
                &mut sealed,
            )
        })?
        .ok()?;
        ticket.extend_from_slice(&sealed);
        Some(ticket)
    }

    fn decrypt_at(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        let (period, rest) = ticket.split_first_chunk::<PERIOD_LEN>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let period_bytes = *period;
        let period = u64::from_be_bytes(period_bytes);
        let mut sealed = sealed.to_vec();
        let len = self
            .with_key(period, now, |key| {
                key.open_in_place(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(period_bytes),
                    &mut sealed,
                )
                .map(|plain| plain.len())
            })?
            .ok()?;
        sealed.truncate(len);
        Some(sealed)
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    /// The hint to clients: a ticket is accepted for at least one rotation period.
    fn lifetime(&self) -> u32 {
        ROTATION_SECS as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.encrypt_at(plain, period_now())
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.decrypt_at(ticket, period_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain_at(period: u64) -> Arc<Mutex<Chain>> {
        Arc::new(Mutex::new(Chain::start(period).unwrap()))
    }

    /// A copy of `chain` as a forked worker inherits it.
    fn fork(chain: &Arc<Mutex<Chain>>) -> Arc<Mutex<Chain>> {
        let c = lock(chain);
        Arc::new(Mutex::new(Chain {
            period: c.period,
            current: c.current,
            previous: c.previous,
        }))
    }

    #[test]
    fn a_ticket_opens_in_its_period_and_the_next_only() {
        let t = Tickets::on("web", chain_at(100));
        let ticket = t.encrypt_at(b"session state", 100).unwrap();
        assert_eq!(t.decrypt_at(&ticket, 100).unwrap(), b"session state");
        assert_eq!(t.decrypt_at(&ticket, 101).unwrap(), b"session state");
        assert_eq!(t.decrypt_at(&ticket, 102), None, "two periods on: expired");
        // Once the chain has moved on, going back does not bring the key back.
        assert_eq!(t.decrypt_at(&ticket, 100), None);
    }

    #[test]
    fn workers_forked_from_one_chain_read_each_others_tickets_across_periods() {
        let arbiter = chain_at(7);
        let (a, b) = (fork(&arbiter), fork(&arbiter));
        let (a, b) = (Tickets::on("web", a), Tickets::on("web", b));
        // Each advances on its own (b only when it first sees a ticket, later).
        let ticket = a.encrypt_at(b"s", 9).unwrap();
        assert_eq!(b.decrypt_at(&ticket, 9).unwrap(), b"s");
        assert_eq!(b.decrypt_at(&ticket, 10).unwrap(), b"s");
        let later = b.encrypt_at(b"t", 10).unwrap();
        assert_eq!(a.decrypt_at(&later, 10).unwrap(), b"t");
        // A worker forked after the arbiter advanced derives the same keys.
        lock(&arbiter).advance_to(10);
        let c = Tickets::on("web", fork(&arbiter));
        assert_eq!(c.decrypt_at(&later, 10).unwrap(), b"t");
        assert_eq!(c.decrypt_at(&ticket, 10).unwrap(), b"s");
    }

    #[test]
    fn another_service_another_chain_or_a_changed_byte_opens_nothing() {
        let chain = chain_at(1);
        let web = Tickets::on("web", chain.clone());
        let ticket = web.encrypt_at(b"state", 1).unwrap();
        assert_eq!(Tickets::on("mail", chain).decrypt_at(&ticket, 1), None);
        assert_eq!(Tickets::on("web", chain_at(1)).decrypt_at(&ticket, 1), None);
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x40;
            assert_eq!(web.decrypt_at(&bad, 1), None, "byte {i} changed");
        }
        for short in [
            &[][..],
            &ticket[..8],
            &ticket[..20],
            &ticket[..ticket.len() - 1],
        ] {
            assert_eq!(web.decrypt_at(short, 1), None);
        }
    }

    #[test]
    fn the_chain_keeps_two_links_and_overwrites_older_ones() {
        let chain = chain_at(5);
        let mut c = lock(&chain);
        let first = c.current;
        c.advance_to(6);
        assert_eq!(c.previous, Some(first));
        c.advance_to(8);
        assert!(c.link(5).is_none() && c.link(6).is_none());
        assert!(c.link(7).is_some() && c.link(8).is_some());
        assert_ne!(c.previous, Some(first));
    }
}

//! Session tickets every worker can read, across reloads, with keys that rotate.
//!
//! rustls's own ticketer draws a random key and replaces it with another random one every
//! 6 hours. In process mode the workers are forked after the configuration is built, so
//! they started with the same key, but each drew its successor on its own: 6 hours in, a
//! ticket resumed only on the worker that issued it (1 resumption in N behind
//! SO_REUSEPORT). A reload built a new configuration, which made every ticket issued before
//! it useless; and that ticketer refuses any ticket longer than those it has issued itself,
//! so a fresh worker refused its siblings' tickets until it had issued one.
//!
//! Here one writer draws the secrets — the arbiter in process mode, the process itself in
//! thread mode: a random secret when the first TLS configuration is built (before any
//! fork), then a new random one every 6 hours by the monotonic clock — into memory shared
//! with every worker ([`secrets`]). A secret serves its epoch and the next: the one before
//! the previous is overwritten, so a copy of the memory opens tickets of the last 12 hours
//! at most, and none issued after the next rotation, as with rustls's ticketer. Each TLS
//! service derives its key from the epoch's secret with HKDF-SHA256, over its name and a
//! digest of its certificates and client-certificate CAs: a ticket resumes only on the
//! service that issued it, and not after a reload that changed who the server is or which
//! clients it accepts (rustls does not check a client certificate again on resumption).
//!
//! A ticket is `epoch (8 bytes, big-endian) ‖ nonce (12 random bytes) ‖ AES-256-GCM
//! ciphertext and tag`, with the epoch as associated data; it opens in its epoch and the
//! next (6 to 12 hours). A thread-mode reload starts a new process, with new secrets:
//! tickets issued before it cost one full handshake.

#[cfg_attr(target_os = "linux", path = "region_linux.rs")]
#[cfg_attr(not(target_os = "linux"), path = "region_other.rs")]
mod region;
mod secrets;

use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::digest::{Context, SHA256};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use self::secrets::{Secret, Secrets};

/// How long one secret issues tickets.
const ROTATION: Duration = Duration::from_secs(6 * 60 * 60);
const EPOCH_LEN: usize = 8;
const TAG_LEN: usize = 16;
/// Longer tickets are refused unread (ours hold a session's state and, with client
/// certificates, the client's chain).
const MAX_TICKET: usize = 16 * 1024;

/// This process's record, and when the writer last rotated it.
struct Shared {
    secrets: &'static Secrets,
    rotated: Mutex<Instant>,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// Every ticketer of this process, so that an idle one forgets its keys
/// ([`forget_stale_keys`]).
static TICKETERS: Mutex<Vec<Weak<Tickets>>> = Mutex::new(Vec::new());

/// The record, made (with its first secret) by the first TLS configuration; `None` if the
/// memory cannot be mapped or the system's random source fails.
fn shared() -> Option<&'static Shared> {
    if let Some(shared) = SHARED.get() {
        return Some(shared);
    }
    let secrets = region::map().ok()?;
    secrets.rotate(&fresh_secret()?);
    Some(SHARED.get_or_init(|| Shared {
        secrets,
        rotated: Mutex::new(Instant::now()),
    }))
}

fn fresh_secret() -> Option<Secret> {
    let mut secret = [0u8; 32];
    SystemRandom::new().fill(&mut secret).ok()?;
    Some(secret)
}

/// The writer's duty: a new secret once the current one is 6 hours old. Process mode's
/// arbiter calls it on every supervision pass, thread mode on every heartbeat; process
/// mode's workers never do (they read what the arbiter writes).
pub fn rotate_if_due() {
    let Some(shared) = SHARED.get() else {
        return;
    };
    let mut rotated = lock(&shared.rotated);
    if rotated.elapsed() < ROTATION {
        return;
    }
    if let Some(secret) = fresh_secret() {
        shared.secrets.rotate(&secret);
        *rotated = Instant::now();
    }
}

/// Drop the derived keys of every ticketer whose epoch has passed: a worker that issued
/// no ticket since a rotation would otherwise keep keys the record no longer holds (each
/// worker's heartbeat calls it).
pub fn forget_stale_keys() {
    let Some(epoch) = SHARED.get().and_then(|s| s.secrets.read()).map(|s| s.epoch) else {
        return;
    };
    for tickets in lock(&TICKETERS).iter().filter_map(Weak::upgrade) {
        let mut keys = lock(&tickets.keys);
        if keys.epoch != epoch {
            *keys = Keys::default();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a service's ticket key is bound to: its name, its certificate chain and the CAs
/// its clients' certificates must chain to (empty: no client certificates).
pub fn fingerprint<'a>(
    service: &str,
    chain: impl IntoIterator<Item = &'a [u8]>,
    client_cas: impl IntoIterator<Item = &'a [u8]>,
) -> [u8; 32] {
    let mut digest = Context::new(&SHA256);
    let mut part = |tag: &[u8], bytes: &[u8]| {
        digest.update(tag);
        digest.update(&(bytes.len() as u64).to_be_bytes());
        digest.update(bytes);
    };
    part(b"service", service.as_bytes());
    for cert in chain {
        part(b"cert", cert);
    }
    for ca in client_cas {
        part(b"client ca", ca);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.finish().as_ref());
    out
}

/// One service's ticketer.
#[derive(Debug)]
pub struct Tickets {
    secrets: &'static Secrets,
    /// [`fingerprint`], in every key's derivation.
    binding: [u8; 32],
    /// The keys of the current epoch and the one before, derived once per epoch.
    keys: Mutex<Keys>,
}

#[derive(Debug, Default)]
struct Keys {
    epoch: u64,
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
    /// The ticketer of a service bound to `binding` ([`fingerprint`]); `None` if the
    /// shared record cannot be made.
    pub fn new(binding: [u8; 32]) -> Option<Arc<Tickets>> {
        let tickets = Arc::new(Tickets::on(shared()?.secrets, binding));
        let mut all = lock(&TICKETERS);
        all.retain(|t| t.strong_count() > 0);
        all.push(Arc::downgrade(&tickets));
        Some(tickets)
    }

    fn on(secrets: &'static Secrets, binding: [u8; 32]) -> Tickets {
        Tickets {
            secrets,
            binding,
            keys: Mutex::new(Keys::default()),
        }
    }

    fn derive(&self, secret: &Secret) -> Option<TicketKey> {
        let mut bytes = [0u8; 32];
        Salt::new(HKDF_SHA256, &[])
            .extract(secret)
            .expand(&[b"sockhost ticket key", &self.binding], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut bytes))
            .ok()?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes).ok()?;
        bytes.fill(0);
        Some(TicketKey(LessSafeKey::new(key)))
    }

    /// Run `f` with the key of `epoch` (`None`: the current one) and that epoch, if the
    /// epoch is the current one or the one before.
    fn with_key<R>(&self, epoch: Option<u64>, f: impl FnOnce(&LessSafeKey, u64) -> R) -> Option<R> {
        let now = self.secrets.read()?;
        let mut keys = lock(&self.keys);
        if keys.epoch != now.epoch {
            *keys = Keys {
                epoch: now.epoch,
                current: self.derive(&now.current),
                previous: now.previous.and_then(|s| self.derive(&s)),
            };
        }
        let epoch = epoch.unwrap_or(now.epoch);
        let key = if epoch == now.epoch {
            keys.current.as_ref()
        } else if epoch.checked_add(1) == Some(now.epoch) {
            keys.previous.as_ref()
        } else {
            None
        };
        key.map(|k| f(&k.0, epoch))
    }
}

impl ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    /// The hint to clients: a ticket opens for at least one rotation period.
    fn lifetime(&self) -> u32 {
        ROTATION.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(EPOCH_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        self.with_key(None, |key, epoch| {
            ticket.extend_from_slice(&epoch.to_be_bytes());
            ticket.extend_from_slice(&nonce);
            ticket.extend_from_slice(plain);
            // Sealed where it lies, the tag after it.
            key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(epoch.to_be_bytes()),
                &mut ticket[EPOCH_LEN + NONCE_LEN..],
            )
            .map(|tag| ticket.extend_from_slice(tag.as_ref()))
        })?
        .ok()?;
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > MAX_TICKET {
            return None;
        }
        let (epoch, rest) = ticket.split_first_chunk::<EPOCH_LEN>()?;
        let (nonce, sealed) = rest.split_first_chunk::<NONCE_LEN>()?;
        let mut sealed = sealed.to_vec();
        let len = self
            .with_key(Some(u64::from_be_bytes(*epoch)), |key, _| {
                key.open_in_place(
                    Nonce::assume_unique_for_key(*nonce),
                    Aad::from(*epoch),
                    &mut sealed,
                )
                .map(|plain| plain.len())
            })?
            .ok()?;
        sealed.truncate(len);
        Some(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> &'static Secrets {
        let s: &'static Secrets = Box::leak(Box::default());
        s.rotate(&fresh_secret().unwrap());
        s
    }

    fn binding(service: &str) -> [u8; 32] {
        fingerprint(service, [&b"cert"[..]], [])
    }

    #[test]
    fn a_ticket_opens_in_its_epoch_and_the_next_only() {
        let secrets = record();
        let t = Tickets::on(secrets, binding("web"));
        let ticket = t.encrypt(b"session state").unwrap();
        assert_eq!(t.decrypt(&ticket).unwrap(), b"session state");
        secrets.rotate(&fresh_secret().unwrap());
        assert_eq!(t.decrypt(&ticket).unwrap(), b"session state", "next epoch");
        let newer = t.encrypt(b"newer").unwrap();
        secrets.rotate(&fresh_secret().unwrap());
        assert_eq!(
            t.decrypt(&ticket),
            None,
            "two epochs on: its secret is gone"
        );
        assert_eq!(t.decrypt(&newer).unwrap(), b"newer");
    }

    #[test]
    fn every_reader_of_the_record_opens_every_ticket_and_sees_rotations() {
        // Two workers' ticketers over one shared record, as forked processes have.
        let secrets = record();
        let (a, b) = (
            Tickets::on(secrets, binding("web")),
            Tickets::on(secrets, binding("web")),
        );
        let ticket = a.encrypt(b"s").unwrap();
        assert_eq!(b.decrypt(&ticket).unwrap(), b"s");
        secrets.rotate(&fresh_secret().unwrap());
        let later = b.encrypt(b"t").unwrap();
        assert_eq!(a.decrypt(&later).unwrap(), b"t");
        assert_eq!(a.decrypt(&ticket).unwrap(), b"s");
        assert_ne!(
            ticket[..EPOCH_LEN],
            later[..EPOCH_LEN],
            "new epoch, new key"
        );
    }

    #[test]
    fn another_binding_another_record_or_a_changed_byte_opens_nothing() {
        let secrets = record();
        let web = Tickets::on(secrets, binding("web"));
        let ticket = web.encrypt(b"state").unwrap();
        let other_service = Tickets::on(secrets, binding("mail"));
        assert_eq!(other_service.decrypt(&ticket), None);
        let new_cas = Tickets::on(secrets, fingerprint("web", [&b"cert"[..]], [&b"ca"[..]]));
        assert_eq!(new_cas.decrypt(&ticket), None, "client CAs changed");
        assert_eq!(
            Tickets::on(record(), binding("web")).decrypt(&ticket),
            None,
            "another process's secrets"
        );
        for i in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[i] ^= 0x40;
            assert_eq!(web.decrypt(&bad), None, "byte {i} changed");
        }
        for short in [
            &[][..],
            &ticket[..8],
            &ticket[..20],
            &ticket[..ticket.len() - 1],
        ] {
            assert_eq!(web.decrypt(short), None);
        }
        assert_eq!(web.decrypt(&vec![0u8; MAX_TICKET + 1]), None);
    }

    #[test]
    fn an_idle_ticketer_forgets_its_keys_once_its_epoch_has_passed() {
        // The process's own record (the only test that uses it).
        let t = Tickets::new(binding("web")).unwrap();
        let ticket = t.encrypt(b"s").unwrap();
        let epoch = lock(&t.keys).epoch;
        forget_stale_keys();
        assert_eq!(lock(&t.keys).epoch, epoch, "the current keys are kept");
        shared().unwrap().secrets.rotate(&fresh_secret().unwrap());
        forget_stale_keys();
        assert!(
            lock(&t.keys).current.is_none(),
            "the keys of a past epoch are dropped"
        );
        assert_eq!(
            t.decrypt(&ticket).unwrap(),
            b"s",
            "and derived again when needed"
        );
    }

    #[test]
    fn fingerprints_tell_their_parts_apart() {
        assert_ne!(
            fingerprint("a", [&b"bc"[..]], []),
            fingerprint("ab", [&b"c"[..]], [])
        );
        assert_ne!(
            fingerprint("a", [&b"x"[..]], []),
            fingerprint("a", [], [&b"x"[..]])
        );
    }
}

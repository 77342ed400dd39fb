//! The broker: chat across workers and instances through a Redis server's pub/sub
//! (`--plugin-opt broker=redis://HOST:PORT[/channel-prefix]`).
//!
//! Each worker keeps two outbound connections to Redis ([`services::connect`]), both owned
//! by the protocol's state, not by any client's consumer:
//!
//! * the **subscriber link** sends `PSUBSCRIBE PREFIX:*` once connected and from then on
//!   only receives: every `pmessage` on `PREFIX:channel` is fanned out to this worker's
//!   subscribers of `channel`, as a local `PUBLISH` would be;
//! * the **publisher link** sends `PING` once connected, then one
//!   `PUBLISH PREFIX:channel text` per client `PUBLISH`, and reads Redis's answers (a
//!   subscribed Redis connection cannot publish, hence two).
//!
//! While the broker is **up** — both links connected and answered by Redis (the
//! subscription confirmed, the `PING` answered), not merely accepted by *something* — a
//! client's line goes to Redis only, and reaches this worker's subscribers (the publisher
//! too, if it subscribes) when Redis delivers it back: every subscriber on every worker of
//! every instance sees it once, all in the broker's order.
//!
//! While it is **away** (either link down), a `PUBLISH` is fanned out to this worker's
//! subscribers directly, as without a broker, and counted: that is what is lost — those
//! lines never reach other workers, and are not replayed later; likewise lines published
//! on other workers do not reach this one's subscribers until its links are back. One line
//! is logged when the broker goes away, and one when it is back, with the number of lines
//! that stayed local meanwhile. Lines handed to Redis but not yet confirmed when the
//! publisher link breaks may be lost for everyone; their number is in the "away" line.
//!
//! Links are retried every [`TICK`] once due, with exponential back-off and jitter
//! ([`link::Backoff`], at most [`MAX_BACKOFF`]); a link that was up is retried at the next
//! tick. Every [`HEARTBEAT`] each connected link is sent a `PING`; one from which nothing
//! was heard for a whole period is dropped, so a broker that hangs or a network that
//! silently stops delivering is noticed within two periods, not after TCP's minutes. Memory is bounded: a reply from Redis larger than twice `max-line` plus 1 KiB drops
//! the link (logged) — see [`resp`]; PUBLISHes awaiting Redis's answer are counted, and past
//! [`MAX_UNCONFIRMED`] a line is published locally only (counted) until Redis catches up;
//! the bytes queued for Redis are bounded by the host's `--max-pending` (past it the host
//! drops the link, which is then an outage like any other).
//!
//! The host has no metrics API for plugins: the counts ([`Counts`]) are in the log lines,
//! and in one line when the worker stops.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use plugin_api::services;
use plugin_api::{ConnId, Consumer, LostReason, Output};

use crate::hub::Hub;

pub mod address;
pub mod link;
pub mod resp;

pub use address::BrokerAddress;
use link::{Backoff, Heartbeat, Link};
use resp::{Replies, Reply};

/// The period of the broker's clock (the plugin's tick): when due links are retried.
pub const TICK: Duration = Duration::from_millis(100);

/// The longest wait between two attempts of one link.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often each link is pinged; a link heard from in no whole period is dropped.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// The most PUBLISHes Redis may owe an answer for; past it lines stay local (counted).
pub const MAX_UNCONFIRMED: u64 = 10_000;

/// Which link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `PSUBSCRIBE PREFIX:*`, then relays what arrives.
    Subscriber,
    /// Sends the PUBLISHes.
    Publisher,
}

/// Where a client's `PUBLISH` goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Handed to Redis: this worker's subscribers get it when Redis delivers it back.
    Broker,
    /// Not handed to Redis (away, congested or stopping): fan it out locally now.
    LocalOnly,
}

/// What the worker has relayed so far (logged when it stops).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Lines handed to Redis.
    pub published: u64,
    /// Lines Redis delivered to this worker.
    pub delivered: u64,
    /// Lines published here that reached only this worker's subscribers.
    pub local_only: u64,
    /// Times the broker went away after being up.
    pub outages: u64,
    /// Lines Redis delivered that chat cannot pass on (holding a line break).
    pub refused: u64,
}

/// Whether the broker is usable, and what is being counted while it is not.
#[derive(Debug)]
enum Availability {
    /// Both links ready: PUBLISHes go through Redis.
    Up,
    /// Not (or no longer) usable: PUBLISHes stay local.
    Away {
        since: Instant,
        /// Lines that stayed local during this outage.
        local_only: u64,
        /// It has never been up (the worker is starting).
        first: bool,
        /// Its unavailability has been logged once already.
        reported: bool,
    },
    /// The worker stops.
    Stopped,
}

#[derive(Debug)]
struct State {
    /// Ticks so far.
    now: u64,
    subscriber: Link,
    publisher: Link,
    backoff: Backoff,
    availability: Availability,
    /// PUBLISHes sent on the current publisher link and not yet answered.
    unconfirmed: u64,
    /// Lines kept local because [`MAX_UNCONFIRMED`] was reached, in the current episode.
    congested: Option<u64>,
    counts: Counts,
}

impl State {
    fn link(&mut self, role: Role) -> &mut Link {
        match role {
            Role::Subscriber => &mut self.subscriber,
            Role::Publisher => &mut self.publisher,
        }
    }

    fn both_ready(&self) -> bool {
        self.subscriber.is_ready() && self.publisher.is_ready()
    }

    fn count_local_only(&mut self) {
        self.counts.local_only += 1;
        if let Availability::Away { local_only, .. } = &mut self.availability {
            *local_only += 1;
        }
    }
}

/// One worker's broker: its two links, shared by the protocol (publish, tick, stop) and
/// the links' consumers. Cloning is cheap.
#[derive(Clone)]
pub struct Broker(Rc<Inner>);

struct Inner {
    address: BrokerAddress,
    target: String,
    hub: Rc<RefCell<Hub>>,
    /// The largest reply read from Redis.
    max_reply: usize,
    state: RefCell<State>,
}

impl Broker {
    /// A broker at `address` relaying into `hub`, for lines of at most `max_line` bytes;
    /// not connected until [`start`](Broker::start).
    pub fn new(address: BrokerAddress, hub: Rc<RefCell<Hub>>, max_line: usize) -> Broker {
        let max_backoff = MAX_BACKOFF.as_millis().div_ceil(TICK.as_millis()) as u64;
        Broker(Rc::new(Inner {
            target: address.target(),
            max_reply: 2 * max_line + 1024,
            address,
            hub,
            state: RefCell::new(State {
                now: 0,
                subscriber: Link::new(),
                publisher: Link::new(),
                backoff: Backoff::seeded(max_backoff),
                availability: Availability::Away {
                    since: Instant::now(),
                    local_only: 0,
                    first: true,
                    reported: false,
                },
                unconfirmed: 0,
                congested: None,
                counts: Counts::default(),
            }),
        }))
    }

    /// The worker serves: connect both links.
    pub fn start(&self) {
        self.connect_due();
    }

    /// One [`TICK`]: retry the links that are due; every [`HEARTBEAT`], ping the
    /// connected ones and drop those that did not answer the last ping.
    pub fn tick(&self) {
        let now = {
            let mut s = self.0.state.borrow_mut();
            s.now += 1;
            s.now
        };
        if now % (HEARTBEAT.as_millis() / TICK.as_millis()) as u64 == 0 {
            self.heartbeat();
        }
        self.connect_due();
    }

    fn heartbeat(&self) {
        for role in [Role::Subscriber, Role::Publisher] {
            let (beat, attempt) = {
                let mut s = self.0.state.borrow_mut();
                let link = s.link(role);
                (link.heartbeat(), link.attempt())
            };
            match beat {
                Heartbeat::Idle => {}
                Heartbeat::Ping(id) => {
                    services::post(id, &resp::command(&[b"PING"]));
                }
                Heartbeat::Silent(id) => {
                    let why = format!("no answer to PING within {}s", HEARTBEAT.as_secs());
                    log::warn!(
                        "broker {}: dropping the {role:?} link: {why}",
                        self.0.address
                    );
                    self.lost(role, attempt, &why);
                    services::close(id);
                }
            }
        }
    }

    /// The worker stops: close both links (so the host need not wait for them), and log
    /// the counts.
    pub fn stop(&self) {
        let mut s = self.0.state.borrow_mut();
        if matches!(s.availability, Availability::Stopped) {
            return;
        }
        s.availability = Availability::Stopped;
        for id in [s.subscriber.stop(), s.publisher.stop()]
            .into_iter()
            .flatten()
        {
            services::close(id);
        }
        let c = s.counts;
        log::info!(
            "broker {}: stopping; {} lines published through it, {} delivered from it, {} reached only this worker's subscribers, {} outages",
            self.0.address,
            c.published,
            c.delivered,
            c.local_only,
            c.outages
        );
    }

    /// The counts so far.
    #[cfg(test)]
    pub fn counts(&self) -> Counts {
        self.0.state.borrow().counts
    }

    /// Whether PUBLISHes go through Redis now.
    #[cfg(test)]
    pub fn is_up(&self) -> bool {
        matches!(self.0.state.borrow().availability, Availability::Up)
    }

    /// A client's `PUBLISH`: hand it to Redis if the broker is up and not congested.
    pub fn publish(&self, channel: &[u8], text: &[u8]) -> Route {
        let (id, attempt) = {
            let mut s = self.0.state.borrow_mut();
            if !matches!(s.availability, Availability::Up) {
                s.count_local_only();
                return Route::LocalOnly;
            }
            if s.unconfirmed >= MAX_UNCONFIRMED {
                s.counts.local_only += 1;
                let kept = s.congested.get_or_insert(0);
                *kept += 1;
                if *kept == 1 {
                    log::warn!(
                        "broker {}: {MAX_UNCONFIRMED} PUBLISHes await its answer; publishing to this worker's subscribers only until it catches up",
                        self.0.address
                    );
                }
                return Route::LocalOnly;
            }
            match s.publisher.id() {
                Some(id) => (id, s.publisher.attempt()),
                None => {
                    s.count_local_only();
                    return Route::LocalOnly;
                }
            }
        };
        let command = resp::command(&[b"PUBLISH", &self.0.address.redis_channel(channel), text]);
        let status = services::post(id, &command);
        if status.is_queued() {
            let mut s = self.0.state.borrow_mut();
            s.unconfirmed += 1;
            s.counts.published += 1;
            return Route::Broker;
        }
        // Overflow (the host's --max-pending bound: it is dropping the link) or Gone.
        self.lost(
            Role::Publisher,
            attempt,
            &format!("the host could not queue a PUBLISH for it ({status:?})"),
        );
        self.0.state.borrow_mut().count_local_only();
        Route::LocalOnly
    }

    fn connect_due(&self) {
        for role in [Role::Subscriber, Role::Publisher] {
            let due = {
                let mut s = self.0.state.borrow_mut();
                let now = s.now;
                s.link(role).is_due(now)
            };
            if due {
                self.connect(role);
            }
        }
    }

    fn connect(&self, role: Role) {
        let attempt = self.0.state.borrow_mut().link(role).start();
        let consumer = LinkConsumer {
            broker: self.clone(),
            role,
            attempt,
            replies: Replies::new(self.0.max_reply),
        };
        match services::connect(&self.0.target, CONNECT_TIMEOUT, consumer) {
            Ok(id) => self.0.state.borrow_mut().link(role).started(attempt, id),
            Err(e) => self.failed(role, attempt, &format!("cannot connect: {e}")),
        }
    }

    /// An attempt failed.
    fn failed(&self, role: Role, attempt: u64, why: &str) {
        let mut s = self.0.state.borrow_mut();
        let now = s.now;
        let State {
            subscriber,
            publisher,
            backoff,
            ..
        } = &mut *s;
        let link = match role {
            Role::Subscriber => subscriber,
            Role::Publisher => publisher,
        };
        let Some(wait) = link.failed(attempt, now, backoff) else {
            return;
        };
        let retry = TICK * wait as u32;
        match &mut s.availability {
            Availability::Away { reported, .. } if !*reported => {
                *reported = true;
                log::warn!(
                    "broker {}: {why}; publishing to this worker's subscribers only until it is reached (retrying with back-off, at most every {}s)",
                    self.0.address,
                    MAX_BACKOFF.as_secs()
                );
            }
            _ => log::debug!(
                "broker {}: {role:?} link: {why}; next attempt in {retry:?}",
                self.0.address
            ),
        }
    }

    /// A link connected; `false` if it is stale (close it). It is ready once Redis
    /// answers its opening command.
    fn opened(&self, role: Role, attempt: u64) -> bool {
        let mut s = self.0.state.borrow_mut();
        if role == Role::Publisher {
            s.unconfirmed = 0;
        }
        s.link(role).opened(attempt)
    }

    /// Redis answered a link's opening command: it is usable.
    fn ready(&self, role: Role, attempt: u64) {
        if self.0.state.borrow_mut().link(role).ready(attempt) {
            self.changed("");
        }
    }

    /// A link that had connected ended (or is being dropped): retry at the next tick.
    fn lost(&self, role: Role, attempt: u64, why: &str) {
        let mut s = self.0.state.borrow_mut();
        let now = s.now;
        if s.link(role).lost(attempt, now).is_none() {
            return;
        }
        let unconfirmed = if role == Role::Publisher {
            s.congested = None;
            std::mem::take(&mut s.unconfirmed)
        } else {
            0
        };
        drop(s);
        let why = match unconfirmed {
            0 => why.to_string(),
            n => format!("{why} ({n} PUBLISHes it had not answered may be lost)"),
        };
        log::debug!("broker {}: {role:?} link lost: {why}", self.0.address);
        self.changed(&why);
    }

    /// Log the broker going away or coming back.
    fn changed(&self, why: &str) {
        let mut s = self.0.state.borrow_mut();
        let up = s.both_ready();
        let a = &self.0.address;
        match s.availability {
            Availability::Away {
                since,
                local_only,
                first,
                ..
            } if up => {
                if first {
                    log::info!(
                        "broker {a}: connected; publishing through it (subscribed to {})",
                        String::from_utf8_lossy(&a.pattern())
                    );
                    if local_only > 0 {
                        log::warn!("broker {a}: {local_only} lines published before it was reached went only to this worker's subscribers");
                    }
                } else {
                    log::info!(
                        "broker {a}: back after {:.1}s; {local_only} lines published here while it was away reached only this worker's subscribers",
                        since.elapsed().as_secs_f64()
                    );
                }
                s.availability = Availability::Up;
            }
            Availability::Up if !up => {
                s.counts.outages += 1;
                s.availability = Availability::Away {
                    since: Instant::now(),
                    local_only: 0,
                    first: false,
                    reported: true,
                };
                log::warn!(
                    "broker {a}: went away ({why}); publishing to this worker's subscribers only until it is back"
                );
            }
            _ => {}
        }
    }

    /// A reply on a link; `Err` drops the link.
    fn reply(&self, role: Role, attempt: u64, reply: Reply) -> Result<(), String> {
        if self
            .0
            .state
            .borrow_mut()
            .link(role)
            .connected(attempt)
            .is_none()
        {
            // A link already given up (dropped, replaced, stopping): what it still says
            // must not count, nor be delivered twice.
            return Ok(());
        }
        if let Reply::Error(message) = &reply {
            return Err(format!(
                "it answered {:?}",
                String::from_utf8_lossy(message).into_owned()
            ));
        }
        // Only what Redis answers counts as hearing from it: a peer that is not Redis (or
        // a socket connected to itself, reading back its own commands) stays unready and
        // is dropped by the heartbeat.
        let heard = match role {
            Role::Publisher => match reply {
                // The answer to the opening PING (or to a heartbeat's).
                Reply::Simple(ref pong) if pong == b"PONG" => {
                    self.ready(role, attempt);
                    true
                }
                Reply::Integer(_) => {
                    self.answered_publish();
                    true
                }
                _ => false,
            },
            Role::Subscriber => {
                let Reply::Array(Some(items)) = reply else {
                    return Ok(());
                };
                match items.first().and_then(Reply::bytes) {
                    Some(b"psubscribe") => {
                        self.ready(role, attempt);
                        true
                    }
                    Some(b"pong") => true,
                    Some(b"pmessage") => {
                        match (
                            items.get(2).and_then(Reply::bytes),
                            items.get(3).and_then(Reply::bytes),
                        ) {
                            (Some(channel), Some(text)) => self.deliver(channel, text),
                            _ => return Err("a pmessage without channel and text".to_string()),
                        }
                        true
                    }
                    _ => false,
                }
            }
        };
        if heard {
            self.0.state.borrow_mut().link(role).heard(attempt);
        }
        Ok(())
    }

    /// Redis answered a PUBLISH.
    fn answered_publish(&self) {
        let mut s = self.0.state.borrow_mut();
        s.unconfirmed = s.unconfirmed.saturating_sub(1);
        if s.congested.is_some() && s.unconfirmed < MAX_UNCONFIRMED / 2 {
            let kept = s.congested.take().unwrap_or(0);
            log::warn!(
                "broker {}: caught up; {kept} lines published meanwhile reached only this worker's subscribers",
                self.0.address
            );
        }
    }

    /// Fan a line Redis delivered out to this worker's subscribers.
    fn deliver(&self, redis_channel: &[u8], text: &[u8]) {
        let Some(channel) = self.0.address.chat_channel(redis_channel) else {
            return;
        };
        let mut s = self.0.state.borrow_mut();
        if text.contains(&b'\n') || text.contains(&b'\r') || channel.contains(&b'\n') {
            s.counts.refused += 1;
            log::debug!(
                "broker {}: a line on {:?} holds a line break; not passed on ({} so far)",
                self.0.address,
                String::from_utf8_lossy(redis_channel),
                s.counts.refused
            );
            return;
        }
        s.counts.delivered += 1;
        drop(s);
        // Every worker hears every channel: most lines have no subscriber here.
        if self.0.hub.borrow().subscribers(channel) == 0 {
            return;
        }
        let message = crate::message_line(channel, text);
        let published =
            self.0
                .hub
                .borrow_mut()
                .publish(ConnId::NONE, channel, &message, services::post);
        for cut in published.cut_off {
            crate::cut_off(cut);
        }
    }
}

/// Say why a link ended, for the log.
fn lost_reason(reason: LostReason) -> String {
    match reason {
        // A link ends `Closed` when Redis ends its stream (the default `eof_received`).
        LostReason::Closed => "it closed the connection".to_string(),
        LostReason::PeerClosed => "the connection was reset".to_string(),
        LostReason::Error => "a socket error".to_string(),
        other => format!("the connection ended ({other:?})"),
    }
}

/// The consumer of one link's connection.
pub struct LinkConsumer {
    broker: Broker,
    role: Role,
    attempt: u64,
    replies: Replies,
}

impl Consumer for LinkConsumer {
    fn connection_made(&mut self, out: &mut Output) {
        if !self.broker.opened(self.role, self.attempt) {
            out.close();
            return;
        }
        // The opening command: the link is ready once Redis answers it.
        match self.role {
            Role::Subscriber => out.write(&resp::command(&[
                b"PSUBSCRIBE",
                &self.broker.0.address.pattern(),
            ])),
            Role::Publisher => out.write(&resp::command(&[b"PING"])),
        }
    }

    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        let mut refused = None;
        let (broker, role, attempt) = (&self.broker, self.role, self.attempt);
        let framed = self.replies.feed(data, |reply| {
            if refused.is_none() {
                refused = broker.reply(role, attempt, reply).err();
            }
        });
        if let Err(e) = framed {
            refused.get_or_insert(e.to_string());
        }
        if let Some(why) = refused {
            log::warn!(
                "broker {}: dropping the {role:?} link: {why}",
                broker.0.address
            );
            broker.lost(role, attempt, &why);
            out.close();
        }
    }

    fn connection_lost(&mut self, reason: LostReason) {
        if reason == LostReason::ConnectFailed {
            self.broker.failed(
                self.role,
                self.attempt,
                "cannot connect (refused, unreachable or timed out)",
            );
        } else {
            self.broker
                .lost(self.role, self.attempt, &lost_reason(reason));
        }
    }
}

#[cfg(test)]
mod tests;

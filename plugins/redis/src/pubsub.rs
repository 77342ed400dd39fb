//! Pub/sub: which connections listen to which channels and patterns, and delivery of a
//! published message to each of them.
//!
//! The registry maps each channel (and each pattern) to the set of subscriber ids, and each
//! subscriber to its channels and patterns (so a closing connection unsubscribes in
//! O(its subscriptions)). `PUBLISH` looks the channel up and matches every pattern, as
//! Redis does, and hands each subscriber its frame through [`PubSub::deliver`] — the one
//! place that knows how bytes reach another connection.
//!
//! Delivery goes through a per-subscriber outbox that the subscriber's own connection
//! drains into its output whenever the host calls it. An outbox is bounded
//! (`pubsub-limit`, Redis's `client-output-buffer-limit pubsub`): a subscriber that lets
//! more pile up is disconnected, as Redis disconnects it.

use foldhash::fast::RandomState;
use hashbrown::HashMap;
use indexmap::IndexSet;

use crate::glob;
use crate::reply::Reply;

/// A connection's id within its worker (`CLIENT ID`).
pub type ClientId = u64;

/// One subscriber's subscriptions and undelivered messages.
#[derive(Debug, Default)]
struct Subscriber {
    channels: IndexSet<Vec<u8>, RandomState>,
    patterns: IndexSet<Vec<u8>, RandomState>,
    outbox: Vec<u8>,
    /// The outbox passed the limit: the connection is to be closed.
    overflowed: bool,
}

/// The registry of one store.
#[derive(Debug, Default)]
pub struct PubSub {
    channels: HashMap<Vec<u8>, IndexSet<ClientId, RandomState>, RandomState>,
    patterns: HashMap<Vec<u8>, IndexSet<ClientId, RandomState>, RandomState>,
    subscribers: HashMap<ClientId, Subscriber, RandomState>,
}

/// Whether a subscription is to a channel or a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `SUBSCRIBE`.
    Channel,
    /// `PSUBSCRIBE`.
    Pattern,
}

impl Kind {
    fn verbs(self) -> (&'static [u8], &'static [u8]) {
        match self {
            Kind::Channel => (b"subscribe", b"unsubscribe"),
            Kind::Pattern => (b"psubscribe", b"punsubscribe"),
        }
    }
}

impl PubSub {
    /// Channels with at least one subscriber.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Patterns with at least one subscriber.
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    /// Connections with at least one subscription.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.len()
    }

    /// How many channels and patterns `id` is subscribed to.
    pub fn subscriptions(&self, id: ClientId) -> usize {
        self.subscribers
            .get(&id)
            .map_or(0, |s| s.channels.len() + s.patterns.len())
    }

    fn map(&mut self, kind: Kind) -> &mut HashMap<Vec<u8>, IndexSet<ClientId, RandomState>, RandomState> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        }
    }

    /// Subscribe `id` to each name, replying `[subscribe, name, count]` for each.
    pub fn subscribe<'a>(
        &mut self,
        id: ClientId,
        kind: Kind,
        names: impl Iterator<Item = &'a [u8]>,
        out: &mut Reply,
    ) {
        for name in names {
            let sub = self.subscribers.entry(id).or_default();
            let mine = match kind {
                Kind::Channel => &mut sub.channels,
                Kind::Pattern => &mut sub.patterns,
            };
            if mine.insert(name.to_vec()) {
                self.map(kind)
                    .entry(name.to_vec())
                    .or_default()
                    .insert(id);
            }
            let count = self.subscriptions(id);
            confirm(out, kind.verbs().0, Some(name), count);
        }
    }

    /// Unsubscribe `id` from each name (all of its channels or patterns when `names` is
    /// empty), replying `[unsubscribe, name, count]` for each.
    pub fn unsubscribe(&mut self, id: ClientId, kind: Kind, names: &[&[u8]], out: &mut Reply) {
        let names: Vec<Vec<u8>> = if names.is_empty() {
            match self.subscribers.get(&id) {
                Some(sub) => match kind {
                    Kind::Channel => sub.channels.iter().cloned().collect(),
                    Kind::Pattern => sub.patterns.iter().cloned().collect(),
                },
                None => Vec::new(),
            }
        } else {
            names.iter().map(|n| n.to_vec()).collect()
        };
        if names.is_empty() {
            // Nothing to leave: one reply with a null name, as Redis.
            confirm(out, kind.verbs().1, None, self.subscriptions(id));
            return;
        }
        for name in &names {
            self.leave(id, kind, name);
            confirm(out, kind.verbs().1, Some(name), self.subscriptions(id));
        }
        self.drop_if_idle(id);
    }

    fn leave(&mut self, id: ClientId, kind: Kind, name: &[u8]) {
        let Some(sub) = self.subscribers.get_mut(&id) else {
            return;
        };
        let mine = match kind {
            Kind::Channel => &mut sub.channels,
            Kind::Pattern => &mut sub.patterns,
        };
        if !mine.swap_remove(name) {
            return;
        }
        let map = self.map(kind);
        if let Some(ids) = map.get_mut(name) {
            ids.swap_remove(&id);
            if ids.is_empty() {
                map.remove(name);
            }
        }
    }

    fn drop_if_idle(&mut self, id: ClientId) {
        if self
            .subscribers
            .get(&id)
            .is_some_and(|s| s.channels.is_empty() && s.patterns.is_empty() && s.outbox.is_empty())
        {
            self.subscribers.remove(&id);
        }
    }

    /// A connection is gone: drop every subscription and anything undelivered.
    pub fn forget(&mut self, id: ClientId) {
        let Some(sub) = self.subscribers.remove(&id) else {
            return;
        };
        for (kind, names) in [(Kind::Channel, sub.channels), (Kind::Pattern, sub.patterns)] {
            let map = self.map(kind);
            for name in names {
                if let Some(ids) = map.get_mut(&name) {
                    ids.swap_remove(&id);
                    if ids.is_empty() {
                        map.remove(&name);
                    }
                }
            }
        }
    }

    /// Publish `message` on `channel`; returns how many subscribers it was handed to.
    pub fn publish(&mut self, channel: &[u8], message: &[u8], limit: usize) -> usize {
        let mut receivers = 0;
        if let Some(ids) = self.channels.get(channel) {
            let mut frame = Reply::default();
            frame.array(3);
            frame.bulk(b"message");
            frame.bulk(channel);
            frame.bulk(message);
            let ids: Vec<ClientId> = ids.iter().copied().collect();
            for id in ids {
                if self.deliver(id, frame.bytes(), limit) {
                    receivers += 1;
                }
            }
        }
        let matching: Vec<(Vec<u8>, Vec<ClientId>)> = self
            .patterns
            .iter()
            .filter(|(pattern, _)| glob::matches(pattern, channel))
            .map(|(pattern, ids)| (pattern.clone(), ids.iter().copied().collect()))
            .collect();
        for (pattern, ids) in matching {
            let mut frame = Reply::default();
            frame.array(4);
            frame.bulk(b"pmessage");
            frame.bulk(&pattern);
            frame.bulk(channel);
            frame.bulk(message);
            for id in ids {
                if self.deliver(id, frame.bytes(), limit) {
                    receivers += 1;
                }
            }
        }
        receivers
    }

    /// Hand one frame to subscriber `to`: the step that moves bytes to another connection.
    /// Returns whether it was accepted.
    fn deliver(&mut self, to: ClientId, frame: &[u8], limit: usize) -> bool {
        let Some(sub) = self.subscribers.get_mut(&to) else {
            return false;
        };
        if sub.overflowed {
            return false;
        }
        if sub.outbox.len() + frame.len() > limit {
            sub.overflowed = true;
            sub.outbox = Vec::new();
            return false;
        }
        sub.outbox.extend_from_slice(frame);
        true
    }

    /// Move `id`'s undelivered messages into its output. `Err` if it overflowed its limit
    /// (the connection is then closed).
    pub fn drain(&mut self, id: ClientId, out: &mut Reply) -> Result<(), ()> {
        let Some(sub) = self.subscribers.get_mut(&id) else {
            return Ok(());
        };
        if sub.overflowed {
            return Err(());
        }
        if !sub.outbox.is_empty() {
            out.raw(&sub.outbox);
            sub.outbox = Vec::new();
        }
        Ok(())
    }

    /// Whether `id` has messages waiting.
    pub fn has_pending(&self, id: ClientId) -> bool {
        self.subscribers
            .get(&id)
            .is_some_and(|s| !s.outbox.is_empty() || s.overflowed)
    }
}

/// `[verb, name, count]` (a null name when there was nothing to unsubscribe from).
fn confirm(out: &mut Reply, verb: &[u8], name: Option<&[u8]>, count: usize) {
    out.array(3);
    out.bulk(verb);
    match name {
        Some(name) => out.bulk(name),
        None => out.null(),
    }
    out.int(count as i64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_publish_unsubscribe() {
        let mut ps = PubSub::default();
        let mut out = Reply::default();
        ps.subscribe(1, Kind::Channel, [&b"news"[..], b"sport"].into_iter(), &mut out);
        ps.subscribe(2, Kind::Pattern, [&b"n*"[..]].into_iter(), &mut out);
        assert_eq!(ps.subscriptions(1), 2);
        assert_eq!(ps.publish(b"news", b"hi", 1 << 20), 2);
        assert_eq!(ps.publish(b"weather", b"hi", 1 << 20), 0);
        let mut got = Reply::default();
        ps.drain(1, &mut got).unwrap();
        assert_eq!(got.bytes(), b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
        let mut got = Reply::default();
        ps.drain(2, &mut got).unwrap();
        assert_eq!(
            got.bytes(),
            b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
        );
        let mut out = Reply::default();
        ps.unsubscribe(1, Kind::Channel, &[], &mut out);
        assert_eq!(ps.subscriptions(1), 0);
        assert_eq!(ps.channel_count(), 0);
        ps.forget(2);
        assert_eq!((ps.pattern_count(), ps.subscriber_count()), (0, 0));
    }

    #[test]
    fn a_subscriber_that_does_not_read_is_cut_off() {
        let mut ps = PubSub::default();
        ps.subscribe(1, Kind::Channel, [&b"c"[..]].into_iter(), &mut Reply::default());
        let mut delivered = 0;
        for _ in 0..100 {
            delivered += ps.publish(b"c", &[b'x'; 100], 1000);
        }
        assert!(delivered < 10);
        assert!(ps.drain(1, &mut Reply::default()).is_err());
    }
}

//! Pub/sub: which connections listen to which channels and patterns, and delivery of a
//! published message to each of them.
//!
//! The registry maps each channel (and each pattern) to the set of subscriber ids, and each
//! subscriber to its channels and patterns (so a closing connection unsubscribes in
//! O(its subscriptions)). `PUBLISH` looks the channel up and matches every pattern, as
//! Redis does, and hands each subscriber its frame through [`PubSub::deliver`] — the one
//! place that knows how bytes reach another connection.
//!
//! Delivery uses the host's post service (`plugin_api::services::post`): the frame is
//! queued on the subscriber's connection, which sends it in the same pass of the event loop.
//! A subscriber that stops reading is bounded by the host, as Redis bounds it with
//! `client-output-buffer-limit pubsub`: past `--max-pending` unsent bytes (default 4 MiB)
//! the host closes it, and the post reports it was not delivered.

use foldhash::fast::RandomState;
use hashbrown::HashMap;
use indexmap::IndexSet;

use crate::glob;
use crate::reply::Reply;

/// A connection's id within its worker (`CLIENT ID`).
pub type ClientId = u64;

/// One subscriber's subscriptions.
#[derive(Debug, Default)]
struct Subscriber {
    channels: IndexSet<Vec<u8>, RandomState>,
    patterns: IndexSet<Vec<u8>, RandomState>,
    /// Bytes of names held (bounded by the limit given to `subscribe`).
    bytes: usize,
}

/// Per-name overhead counted against the subscription limit.
const NAME_OVERHEAD: usize = 64;

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

    fn map(
        &mut self,
        kind: Kind,
    ) -> &mut HashMap<Vec<u8>, IndexSet<ClientId, RandomState>, RandomState> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        }
    }

    /// Subscribe `id` to each name, replying `[subscribe, name, count]` for each. A
    /// connection's subscriptions are bounded by `limit` bytes of names: past it the rest
    /// is refused with an error.
    pub fn subscribe<'a>(
        &mut self,
        id: ClientId,
        kind: Kind,
        names: impl Iterator<Item = &'a [u8]>,
        limit: usize,
        out: &mut Reply,
    ) {
        for name in names {
            let sub = self.subscribers.entry(id).or_default();
            if sub.bytes + name.len() + NAME_OVERHEAD > limit {
                out.error(&format!(
                    "ERR the subscriptions of this connection passed max-query ({limit} bytes)"
                ));
                return;
            }
            let mine = match kind {
                Kind::Channel => &mut sub.channels,
                Kind::Pattern => &mut sub.patterns,
            };
            if mine.insert(name.to_vec()) {
                sub.bytes += name.len() + NAME_OVERHEAD;
                self.map(kind).entry(name.to_vec()).or_default().insert(id);
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
        sub.bytes -= name.len() + NAME_OVERHEAD;
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
            .is_some_and(|s| s.channels.is_empty() && s.patterns.is_empty())
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

    /// Publish `message` on `channel`: `deliver(subscriber, frame)` moves each frame to a
    /// subscriber's connection and says whether it was accepted. Returns how many accepted.
    pub fn publish(
        &self,
        channel: &[u8],
        message: &[u8],
        mut deliver: impl FnMut(ClientId, &[u8]) -> bool,
    ) -> usize {
        let mut receivers = 0;
        if let Some(ids) = self.channels.get(channel) {
            let mut frame = Reply::default();
            frame.array(3);
            frame.bulk(b"message");
            frame.bulk(channel);
            frame.bulk(message);
            for &id in ids {
                if deliver(id, frame.bytes()) {
                    receivers += 1;
                }
            }
        }
        for (pattern, ids) in &self.patterns {
            if !glob::matches(pattern, channel) {
                continue;
            }
            let mut frame = Reply::default();
            frame.array(4);
            frame.bulk(b"pmessage");
            frame.bulk(pattern);
            frame.bulk(channel);
            frame.bulk(message);
            for &id in ids {
                if deliver(id, frame.bytes()) {
                    receivers += 1;
                }
            }
        }
        receivers
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
        ps.subscribe(
            1,
            Kind::Channel,
            [&b"news"[..], b"sport"].into_iter(),
            1 << 20,
            &mut out,
        );
        ps.subscribe(
            2,
            Kind::Pattern,
            [&b"n*"[..]].into_iter(),
            1 << 20,
            &mut out,
        );
        assert_eq!(ps.subscriptions(1), 2);
        let mut got: Vec<(ClientId, Vec<u8>)> = Vec::new();
        let n = ps.publish(b"news", b"hi", |id, frame| {
            got.push((id, frame.to_vec()));
            true
        });
        assert_eq!(n, 2);
        assert_eq!(
            got,
            [
                (
                    1,
                    b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n".to_vec()
                ),
                (
                    2,
                    b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$4\r\nnews\r\n$2\r\nhi\r\n".to_vec()
                )
            ]
        );
        assert_eq!(ps.publish(b"weather", b"hi", |_, _| true), 0);
        assert_eq!(
            ps.publish(b"news", b"hi", |id, _| id == 2),
            1,
            "refused deliveries are not counted"
        );
        let mut out = Reply::default();
        ps.unsubscribe(1, Kind::Channel, &[], &mut out);
        assert_eq!(ps.subscriptions(1), 0);
        assert_eq!(ps.channel_count(), 0);
        ps.forget(2);
        assert_eq!((ps.pattern_count(), ps.subscriber_count()), (0, 0));
    }

    #[test]
    fn unsubscribe_replies_as_redis() {
        let mut ps = PubSub::default();
        let mut out = Reply::default();
        ps.unsubscribe(7, Kind::Channel, &[], &mut out);
        assert_eq!(out.bytes(), b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
        let mut out = Reply::default();
        ps.subscribe(
            7,
            Kind::Pattern,
            [&b"a*"[..], b"a*"].into_iter(),
            1 << 20,
            &mut out,
        );
        let mut small = Reply::default();
        ps.subscribe(
            8,
            Kind::Channel,
            [&[b'c'; 100][..], &[b'd'; 100]].into_iter(),
            200,
            &mut small,
        );
        assert!(small.bytes().ends_with(
            b"-ERR the subscriptions of this connection passed max-query (200 bytes)\r\n"
        ));
        assert_eq!(ps.subscriptions(8), 1);
        assert_eq!(
            out.bytes(),
            &b"*3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:1\r\n*3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:1\r\n"[..]
        );
    }
}

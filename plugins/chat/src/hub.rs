//! One worker's channels: who subscribes to what, and the fan-out of a published line.
//!
//! The hub is shared by every connection of a worker (`Rc<RefCell<Hub>>`): callbacks run one
//! at a time on the worker's thread, and a post never calls back into a consumer, so the hub
//! can stay borrowed for a whole fan-out.
//!
//! A subscriber that does not keep up is **cut off**: when a post to it answers
//! [`PostStatus::Backlogged`] (more than the host's high-water mark is waiting to be sent to
//! it) or [`PostStatus::Overflow`] (the host refused the bytes and is closing it), the hub
//! forgets it at once — no channel posts to it again — and hands it back to the caller to
//! close and log. So a reader that stalls costs at most the host's bound, and every other
//! subscriber keeps receiving.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;

use plugin_api::services::PostStatus;
use plugin_api::ConnId;

/// A channel name (shared by the channel table and its subscribers' lists).
type Name = Rc<[u8]>;

/// The subscriptions of one worker.
#[derive(Debug)]
pub struct Hub {
    /// Each channel's subscribers, in connection order (a `BTreeSet`: deliveries go out in
    /// a stable order, and unsubscribing is O(log n)). A channel with no subscribers is
    /// removed, so the table holds only live subscriptions.
    channels: HashMap<Name, BTreeSet<ConnId>>,
    /// Every open connection of the worker.
    members: HashMap<ConnId, Member>,
    /// How many subscribers have been cut off so far.
    cut_off: u64,
    /// The most channels one connection may subscribe to.
    max_subscriptions: usize,
}

/// One connection, as the hub knows it.
#[derive(Debug)]
struct Member {
    peer: SocketAddr,
    channels: Vec<Name>,
    /// Cut off for reading too slowly: it gets nothing more and its commands are ignored
    /// while the host closes it.
    cut: bool,
}

/// A connection subscribed to too many channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManySubscriptions(pub usize);

/// A subscriber cut off during a fan-out: the caller closes it and logs this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutOff {
    /// The connection.
    pub id: ConnId,
    /// Its peer, for the log line.
    pub peer: SocketAddr,
    /// What the post answered.
    pub status: PostStatus,
    /// Subscribers cut off so far in this worker, this one included.
    pub total: u64,
}

/// What one [`Hub::publish`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Subscribers the line was queued for (the publisher included, when it subscribes).
    pub reached: usize,
    /// Whether the publisher subscribes to the channel itself (it then writes the line to
    /// its own output, after its reply).
    pub to_self: bool,
    /// Subscribers cut off by this fan-out.
    pub cut_off: Vec<CutOff>,
}

impl Hub {
    /// An empty hub allowing `max_subscriptions` channels per connection.
    pub fn new(max_subscriptions: usize) -> Hub {
        Hub {
            channels: HashMap::new(),
            members: HashMap::new(),
            cut_off: 0,
            max_subscriptions,
        }
    }

    /// A new connection.
    pub fn join(&mut self, id: ConnId, peer: SocketAddr) {
        self.members.insert(
            id,
            Member {
                peer,
                channels: Vec::new(),
                cut: false,
            },
        );
    }

    /// A connection ended: drop its subscriptions.
    pub fn leave(&mut self, id: ConnId) {
        if let Some(member) = self.members.remove(&id) {
            for name in member.channels {
                self.drop_subscriber(&name, id);
            }
        }
    }

    /// Whether `id` was cut off (its input is ignored from then on).
    pub fn is_cut(&self, id: ConnId) -> bool {
        self.members.get(&id).is_some_and(|m| m.cut)
    }

    /// Subscribe `id` to `channel` (again, or once it is cut off: no change).
    pub fn subscribe(&mut self, id: ConnId, channel: &[u8]) -> Result<(), TooManySubscriptions> {
        let Some(member) = self.members.get_mut(&id).filter(|m| !m.cut) else {
            return Ok(());
        };
        if member.channels.iter().any(|c| **c == *channel) {
            return Ok(());
        }
        if member.channels.len() >= self.max_subscriptions {
            return Err(TooManySubscriptions(self.max_subscriptions));
        }
        // One allocation per channel name, shared by the table and the member's list.
        let name = match self.channels.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => Name::from(channel),
        };
        member.channels.push(name.clone());
        self.channels.entry(name).or_default().insert(id);
        Ok(())
    }

    /// Unsubscribe `id` from `channel` (not subscribed: no change).
    pub fn unsubscribe(&mut self, id: ConnId, channel: &[u8]) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if let Some(i) = member.channels.iter().position(|c| **c == *channel) {
            let name = member.channels.swap_remove(i);
            self.drop_subscriber(&name, id);
        }
    }

    /// Hand `message` to every subscriber of `channel` but `from` through `post`, and cut
    /// off those above their bound (see the module docs). A line from the broker comes
    /// `from` [`ConnId::NONE`]: every subscriber gets it through `post`.
    pub fn publish(
        &mut self,
        from: ConnId,
        channel: &[u8],
        message: &[u8],
        mut post: impl FnMut(ConnId, &[u8]) -> PostStatus,
    ) -> Published {
        let mut published = Published::default();
        let Some(subscribers) = self.channels.get(channel) else {
            return published;
        };
        let mut slow = Vec::new();
        for &id in subscribers {
            if id == from {
                published.to_self = true;
                published.reached += 1;
                continue;
            }
            let status = post(id, message);
            if status.is_queued() {
                published.reached += 1;
            }
            match status {
                PostStatus::Queued => {}
                PostStatus::Backlogged | PostStatus::Overflow => slow.push((id, status)),
                // Gone: it ended, and `leave` is about to run (or ran during this pass);
                // there is nothing to cut off.
                _ => {}
            }
        }
        for (id, status) in slow {
            if let Some(cut) = self.cut(id, status) {
                published.cut_off.push(cut);
            }
        }
        published
    }

    /// How many connections subscribe to `channel`.
    pub fn subscribers(&self, channel: &[u8]) -> usize {
        self.channels.get(channel).map_or(0, |s| s.len())
    }

    /// Subscribers cut off so far.
    pub fn cut_off_total(&self) -> u64 {
        self.cut_off
    }

    /// Channels with at least one subscriber.
    #[cfg(test)]
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Forget `id`'s subscriptions and mark it cut off; `None` if it already was.
    fn cut(&mut self, id: ConnId, status: PostStatus) -> Option<CutOff> {
        let member = self.members.get_mut(&id)?;
        if member.cut {
            return None;
        }
        member.cut = true;
        let peer = member.peer;
        for name in std::mem::take(&mut member.channels) {
            self.drop_subscriber(&name, id);
        }
        self.cut_off += 1;
        Some(CutOff {
            id,
            peer,
            status,
            total: self.cut_off,
        })
    }

    fn drop_subscriber(&mut self, name: &[u8], id: ConnId) {
        if let Some(subscribers) = self.channels.get_mut(name) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                self.channels.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ConnId {
        ConnId::from_raw(n)
    }

    fn hub_with(members: u64) -> Hub {
        let mut hub = Hub::new(4);
        for n in 1..=members {
            hub.join(id(n), SocketAddr::from(([127, 0, 0, 1], 1000 + n as u16)));
        }
        hub
    }

    #[test]
    fn publish_reaches_subscribers_in_order_and_reports_self() {
        let mut hub = hub_with(4);
        for n in [3, 1, 2] {
            hub.subscribe(id(n), b"news").unwrap();
        }
        hub.subscribe(id(4), b"other").unwrap();
        let mut posted = Vec::new();
        let p = hub.publish(id(2), b"news", b"MESSAGE news hi\n", |to, m| {
            posted.push((to, m.to_vec()));
            PostStatus::Queued
        });
        assert_eq!(
            posted,
            [
                (id(1), b"MESSAGE news hi\n".to_vec()),
                (id(3), b"MESSAGE news hi\n".to_vec())
            ]
        );
        assert_eq!(
            p,
            Published {
                reached: 3,
                to_self: true,
                cut_off: vec![]
            }
        );
        let p = hub.publish(id(1), b"nobody", b"x", |_, _| unreachable!());
        assert_eq!(p, Published::default());
    }

    #[test]
    fn slow_subscribers_are_cut_off_once_and_get_nothing_more() {
        let mut hub = hub_with(3);
        for n in 1..=3 {
            hub.subscribe(id(n), b"a").unwrap();
            hub.subscribe(id(n), b"b").unwrap();
        }
        let p = hub.publish(id(3), b"a", b"m", |to, _| {
            if to == id(1) {
                PostStatus::Backlogged
            } else {
                PostStatus::Queued
            }
        });
        assert_eq!(p.reached, 3, "a backlogged post was still queued");
        assert_eq!(p.cut_off.len(), 1);
        assert_eq!(p.cut_off[0].id, id(1));
        assert_eq!(p.cut_off[0].total, 1);
        assert!(hub.is_cut(id(1)));
        // Gone from every channel: no post reaches it again, from either channel.
        for channel in [&b"a"[..], b"b"] {
            let p = hub.publish(id(3), channel, b"m", |to, _| {
                assert_ne!(to, id(1));
                PostStatus::Overflow
            });
            assert_eq!(p.reached, 1, "only the publisher itself");
            assert_eq!(p.cut_off.len(), usize::from(channel == b"a"));
        }
        assert_eq!(hub.cut_off_total(), 2);
        // Once cut off, subscribing again changes nothing.
        hub.subscribe(id(1), b"a").unwrap();
        let p = hub.publish(id(3), b"a", b"m", |to, _| {
            assert_ne!(to, id(1));
            PostStatus::Queued
        });
        assert_eq!(p.reached, 1);
        hub.leave(id(1));
        hub.leave(id(2));
        hub.leave(id(3));
        assert_eq!(hub.channel_count(), 0);
    }

    #[test]
    fn subscriptions_are_idempotent_bounded_and_cleaned_up() {
        let mut hub = hub_with(2);
        for c in [&b"a"[..], b"b", b"c", b"d", b"a"] {
            hub.subscribe(id(1), c).unwrap();
        }
        assert_eq!(hub.subscribe(id(1), b"e"), Err(TooManySubscriptions(4)));
        hub.unsubscribe(id(1), b"a");
        hub.unsubscribe(id(1), b"a");
        hub.subscribe(id(1), b"e").unwrap();
        hub.subscribe(id(2), b"e").unwrap();
        assert_eq!(hub.channel_count(), 4);
        hub.leave(id(1));
        assert_eq!(hub.channel_count(), 1, "only e, held by 2");
        let p = hub.publish(id(9), b"e", b"m", |to, _| {
            assert_eq!(to, id(2));
            PostStatus::Gone
        });
        assert_eq!(p.reached, 0);
        assert!(p.cut_off.is_empty());
    }
}

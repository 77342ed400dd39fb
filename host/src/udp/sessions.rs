//! The session table of one UDP socket: a session is opened on a peer's first datagram,
//! kept in least-recently-used order, and ended (its consumer told why) when it closes, idles
//! out, is evicted or the server stops.

use std::net::SocketAddr;

use plugin_api::host::Factory;
use plugin_api::session::{Input, Session};
use plugin_api::{ConnId, ConnInfo, LostReason, Transport};
use tokio::time::Instant;

use super::{Peer, UdpServer};
use crate::access_log;
use crate::connections::Endpoint;
use crate::connections::Registration;
use crate::logging;
use crate::metrics::Counter;

impl UdpServer {
    /// Make the consumer for a new peer, evicting the least recently used session at the
    /// limit. `false` if the plugin panicked.
    pub(super) fn open_session(
        &mut self,
        peer: SocketAddr,
        factory: &Factory,
        now: Instant,
    ) -> bool {
        if self.sessions.len() >= self.max_sessions {
            if let Some((old_peer, session)) = self.sessions.pop_lru() {
                self.evicted += 1;
                self.shared.metrics.bump(Counter::UdpEvicted, 1);
                self.end(old_peer, session, LostReason::Shutdown);
            }
        }
        let info = ConnInfo::new(Transport::Udp, peer, self.local);
        let registration = factory.uses_services().then(|| {
            self.shared
                .connections
                .register_with(Some(Endpoint::datagram(self.inbox.clone(), peer)), false)
        });
        let id = registration.as_ref().map_or(ConnId::NONE, Registration::id);
        let consumer = match factory.consumer(&info, id) {
            Ok(c) => c,
            Err(message) => {
                let panics = self.shared.metrics.cell(Counter::PluginPanics);
                logging::plugin_panic(
                    panics,
                    &self.shared.name,
                    peer,
                    "plugin panicked making a consumer",
                    &message,
                    "datagram dropped",
                );
                return false;
            }
        };
        self.shared.metrics.bump(Counter::UdpSessions, 1);
        self.shared.metrics.bump(Counter::UdpSessionsOpen, 1);
        let mut session = Session::new(consumer);
        let made = session.deliver(Input::Made, &mut self.out);
        let tally = access_log::enabled().then(|| {
            let mut tally = access_log::Tally::new("udp", peer, self.local);
            tally.set_service(self.shared.name.clone());
            Box::new(tally)
        });
        self.sessions.push(
            peer,
            Peer {
                session,
                last_active: now,
                registration,
                tally,
            },
        );
        self.flush(peer, made);
        self.sessions.contains(&peer)
    }

    /// End the sessions idle for the keep-alive period (the LRU's stale end).
    pub(super) fn expire_idle(&mut self) {
        let Some(keep_alive) = self.keep_alive else {
            return;
        };
        let now = Instant::now();
        while let Some((_, oldest)) = self.sessions.peek_lru() {
            if now.duration_since(oldest.last_active) < keep_alive {
                break;
            }
            let (peer, session) = self.sessions.pop_lru().expect("peeked");
            self.end(peer, session, LostReason::IdleTimeout);
        }
    }
    /// Count bytes sent to `peer` in its access log tally.
    pub(super) fn count_sent(&mut self, peer: SocketAddr, bytes: usize) {
        if bytes > 0 && access_log::enabled() {
            if let Some(Peer { tally: Some(t), .. }) = self.sessions.peek_mut(&peer) {
                t.count(0, bytes as u64);
            }
        }
    }

    /// End a session (already removed from the table) and tell its consumer why.
    pub(super) fn end(&self, peer: SocketAddr, mut session: Peer, reason: LostReason) {
        crate::connections::enter(self.shared.service);
        tracing::debug!(%peer, reason = %access_log::reason(reason), service = %self.shared.name, "udp session ended");
        if let Some(mut tally) = session.tally.take() {
            tally.set_reason(access_log::reason(reason));
            access_log::write(&tally);
        }
        if let Some(r) = &session.registration {
            r.with_endpoint(|ep| ep.closing = true);
        }
        let metrics = &self.shared.metrics;
        metrics.lower(Counter::UdpSessionsOpen);
        if let Err(message) = session.session.lose(reason) {
            logging::plugin_panic(
                metrics.cell(Counter::PluginPanics),
                &self.shared.name,
                peer,
                "plugin panicked in connection_lost",
                &message,
                "ended",
            );
        }
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        while let Some((peer, session)) = self.sessions.pop_lru() {
            self.end(peer, session, LostReason::Shutdown);
        }
    }
}

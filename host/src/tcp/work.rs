//! What host services queued for a connection (posts, timers, wakes, closes), taken by its
//! driver on each poll.

use std::task::Context;

use plugin_api::session::Input;
use plugin_api::LostReason;
use tokio::io::{AsyncRead, AsyncWrite};

use super::connection::{Connection, WriteSide, LOW_WATER};
use crate::connections::endpoint::{Event, Work};

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Take what was queued for the connection by host services: posted bytes go after what
    /// is pending, timer and wake callbacks run now. Returns whether reading is paused.
    pub(super) fn poll_services(&mut self, cx: &mut Context<'_>) -> Result<bool, LostReason> {
        let Some((work, paused)) = self
            .slot
            .registration
            .with_endpoint(|ep| (ep.poll_work(cx.waker()), ep.paused))
        else {
            return Ok(false);
        };
        if !work.is_empty() {
            self.take_work(work)?;
        }
        Ok(paused)
    }

    pub(super) fn take_work(&mut self, work: Work) -> Result<(), LostReason> {
        if !work.posted.is_empty() {
            if self.write != WriteSide::Open {
                tracing::debug!(peer = %self.peer, "bytes posted after the sending side shut down; dropped");
            } else if self.pending.is_empty() {
                self.pending = work.posted;
            } else {
                self.queue(&work.posted)?;
            }
            // Publish what is now unsent, so that the next post compares with it.
            self.slot
                .registration
                .pending(self.pending.len(), LOW_WATER);
        }
        for event in work.events {
            match event {
                Event::Timer(token) => self.call(Input::Timer(token))?,
                Event::Woken(token) => self.call(Input::Woken(token))?,
                // As if the consumer had called `Output::close`.
                Event::Close => self.session.close(),
                Event::ShutdownWrite => self.take_requests(true),
                Event::Overflow => return Err(self.over_limit("posts")),
                Event::IdleTimeout => return Err(LostReason::IdleTimeout),
            }
        }
        Ok(())
    }
}

//! The chat plugin: a line-based publish/subscribe server, and a worked example of the host
//! services a push protocol needs — [`services::post`] to other connections, the slow-reader
//! signal it returns, [`services::close`], and a per-connection timer.
//!
//! Built as `libchat.so`:
//!
//! ```text
//! sockhost --plugin target/release/libchat.so --concurrency thread --bind 127.0.0.1:7071
//! # terminal 1                          # terminal 2
//! nc 127.0.0.1 7071                     nc 127.0.0.1 7071
//! SUBSCRIBE news
//! +OK
//!                                       PUBLISH news hello, world
//!                                       +OK 1
//! MESSAGE news hello, world
//! ```
//!
//! # Protocol
//!
//! One command per line (`\n` or `\r\n`); each command but `PONG` gets one reply line, in
//! order. Lines may be pipelined and may arrive in pieces.
//!
//! | command | reply |
//! |---|---|
//! | `SUBSCRIBE channel` | `+OK` (also when already subscribed), or `-ERR too many subscriptions (max N)` past `max-subscriptions` |
//! | `UNSUBSCRIBE channel` | `+OK` (also when not subscribed) |
//! | `PUBLISH channel text` | `+OK N`: the line was queued for N subscribers |
//! | `PING` | `+PONG` |
//! | `PONG` | nothing: the answer to the server's `PING` (see `ping`) |
//! | `QUIT` | `+OK bye`, then the connection is closed (later lines are ignored) |
//! | anything else | `-ERR unknown command ...` or `-ERR usage: ...`; the connection stays open |
//!
//! Pushed to a subscriber, between replies, whenever they happen:
//!
//! * `MESSAGE channel text` — a line published on a channel it subscribes to;
//! * `PING` — with the `ping` option, when the client has been quiet (see below).
//!
//! So a client tells pushes from replies by the first character: replies start with `+` or
//! `-`. Command words are case-insensitive; a channel is one word of bytes, compared
//! exactly; the text is the rest of the line after the channel and one blank. A publisher
//! subscribed to the channel gets its own line too, right after its `+OK N`. Blank lines
//! are ignored. A line longer than `max-line` is answered `-ERR line too long (max N
//! bytes)` and the connection is closed, as soon as the limit is passed. At end of stream
//! an unfinished last line is run as a command, then the connection closes.
//!
//! # Delivery
//!
//! A `PUBLISH` is fanned out within the callback that reads it: one
//! [`services::post`] per subscriber, which queues the line on that connection; the host
//! sends it in the same pass of its event loop. Lines published by one connection reach
//! each subscriber in the order they were published. Subscriptions are per worker: a
//! subscriber hears the publishers served by its own worker, so run chat with
//! `--concurrency thread` or `--workers 1` for one chat room per server — or give it a
//! broker.
//!
//! # Broker
//!
//! With `broker=redis://HOST:PORT[/channel-prefix]` every worker of every sockhost running
//! with the same broker shares one set of channels through a Redis server's pub/sub: each
//! worker keeps two outbound connections to it (one publishes, one is subscribed to
//! `PREFIX:*`), hands its clients' lines to Redis, and fans out what Redis delivers to its
//! own subscribers — the publisher's own worker included, so every subscriber hears each
//! line once, all in Redis's order. `+OK N` then counts the subscribers on the
//! publisher's worker. While the broker is away (either connection down), lines are fanned
//! out locally as without a broker, counted and logged: they reach only that worker's
//! subscribers and are never replayed. The connections are retried with back-off; see the
//! `broker` module for the details and bounds, and `docs/deploy.md` ("Brokered chat") for
//! the deployment and exactly what an outage loses.
//!
//! # Slow subscribers
//!
//! A subscriber that reads more slowly than lines are published for it is **cut off**: when
//! a post answers [`PostStatus::Backlogged`] (more than the host's high-water mark of unsent
//! bytes waits for it) or [`PostStatus::Overflow`] (the host refused the bytes at its
//! `--max-pending` bound and closes it), chat unsubscribes it from every channel, asks the
//! host to close it ([`services::close`]: what is queued is still sent, then the connection
//! ends — or, if it never reads again, the host's `--send-timeout` ends it), ignores its
//! further commands, and logs one warning naming its address and the number cut off so far
//! in the worker. So a subscriber that never reads holds about the high-water mark of
//! memory (256 KiB) plus one line, not the flood, and the other subscribers are not held
//! back. The host has no
//! metrics API for plugins yet: the count is kept by the plugin and appears in those log
//! lines (and in one line when the worker stops).
//!
//! # Options
//!
//! * `max-line` (default 4096): the longest command line in bytes, without its line ending
//!   (1 to 1048576). It bounds what a connection buffers and the size of a message.
//! * `max-subscriptions` (default 100): channels one connection may subscribe to. With
//!   `max-line` and `--max-connections` it bounds the memory of the subscription table.
//! * `ping` (seconds; default 0 = off): send `PING` to a connection whose client has sent
//!   nothing for that long, and again every period while it stays quiet. A per-connection
//!   timer ([`services::set_timer`]) fires every period and is re-armed each time; a period
//!   in which the client sent anything skips the ping. The timer is not reset on every read
//!   (one timer operation per period, not per read), so the first `PING` comes between one
//!   and two periods after the client's last bytes. Writing the ping detects a dead peer;
//!   a client that answers `PONG` (any line does) also stays clear of the idle timeout.
//! * `idle-timeout` (seconds): the protocol's own idle timeout, replacing the host's
//!   `--keep-alive` for chat connections ([`services::set_idle_timeout`]): a connection is
//!   closed after that long without a byte *from its client*; `0` never closes one for
//!   idleness. Not given: `--keep-alive` applies. A subscriber that only listens is idle in
//!   this sense, so either answer the pings or raise the timeout.
//! * `broker` (none by default): `redis://HOST:PORT[/channel-prefix]`, the Redis server
//!   whose pub/sub joins the workers and instances (above); the prefix (default `chat`)
//!   names the Redis channels: chat channel `room` is `chat:room`. A value that is not of
//!   that form is refused at start.
//!
//! [`PostStatus::Backlogged`]: plugin_api::services::PostStatus::Backlogged
//! [`PostStatus::Overflow`]: plugin_api::services::PostStatus::Overflow

use std::cell::RefCell;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::time::Duration;

use plugin_api::services::{self, PostStatus};
use plugin_api::{
    ConnId, ConnInfo, Consumer, LostReason, OptionSpec, Options, Output, PluginInfo, Protocol,
};

mod broker;
mod command;
mod hub;

use broker::{Broker, BrokerAddress, Route};
use command::Command;
use hub::{CutOff, Hub};
// Bounded line framing from the plugin API (as kv).
use plugin_api::framing::Lines;

/// The largest `max-line` accepted.
const MAX_LINE_LIMIT: usize = 1 << 20;

/// The token of the ping timer (the only timer a connection has).
const PING_TIMER: u64 = 1;

/// What the options say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Config {
    max_line: usize,
    ping: Option<Duration>,
    /// `None`: the host's `--keep-alive`; `Some(None)`: never; `Some(Some(d))`: after `d`.
    idle_timeout: Option<Option<Duration>>,
}

/// One worker's chat server: its subscriptions, its limits, and its broker links.
pub struct Chat {
    hub: Rc<RefCell<Hub>>,
    config: Config,
    broker: Option<Broker>,
}

impl Protocol for Chat {
    type Consumer = ChatConsumer;

    const INFO: PluginInfo = PluginInfo::new(
        "chat",
        env!("CARGO_PKG_VERSION"),
        "line-based publish/subscribe (SUBSCRIBE/PUBLISH); one set of channels per worker, or shared through a Redis broker",
    )
    .services()
    .options(&[
        OptionSpec::new(
            "max-line",
            "longest command line in bytes; a longer one is refused and its connection closed",
        )
        .default_value("4096"),
        OptionSpec::new(
            "max-subscriptions",
            "channels one connection may subscribe to",
        )
        .default_value("100"),
        OptionSpec::new(
            "ping",
            "seconds: send PING to a connection whose client has been quiet that long (0: off)",
        )
        .default_value("0"),
        OptionSpec::new(
            "idle-timeout",
            "seconds without a byte from the client before closing, replacing --keep-alive (0: never)",
        ),
        OptionSpec::new(
            "broker",
            "redis://HOST:PORT[/channel-prefix]: publish through this Redis server, so subscribers on every worker and instance hear every line",
        ),
    ]);

    fn new(options: &Options) -> Result<Self, String> {
        let max_line: usize = options.parse("max-line")?.unwrap_or(4096);
        if !(1..=MAX_LINE_LIMIT).contains(&max_line) {
            return Err(format!(
                "option max-line: must be between 1 and {MAX_LINE_LIMIT}, got {max_line}"
            ));
        }
        let max_subscriptions: usize = options.parse("max-subscriptions")?.unwrap_or(100);
        if max_subscriptions == 0 {
            return Err("option max-subscriptions: must be at least 1".to_string());
        }
        let seconds = |key| -> Result<Option<Option<Duration>>, String> {
            Ok(options
                .parse::<u64>(key)?
                .map(|s| (s > 0).then(|| Duration::from_secs(s))))
        };
        let config = Config {
            max_line,
            ping: seconds("ping")?.flatten(),
            idle_timeout: seconds("idle-timeout")?,
        };
        let address = options
            .get("broker")
            .map(BrokerAddress::parse)
            .transpose()?;
        log::info!(
            "chat ready (max-line {max_line} bytes, max-subscriptions {max_subscriptions}, ping {}; {})",
            config.ping.map_or("off".to_string(), |p| format!("every {}s", p.as_secs())),
            address.as_ref().map_or("one set of channels per worker".to_string(), |a| format!("channels shared through the broker {a}"))
        );
        let hub = Rc::new(RefCell::new(Hub::new(max_subscriptions)));
        Ok(Chat {
            broker: address.map(|a| Broker::new(a, hub.clone(), max_line)),
            hub,
            config,
        })
    }

    fn consumer(&self, info: &ConnInfo) -> ChatConsumer {
        ChatConsumer {
            lines: Lines::new(self.config.max_line),
            session: Session {
                id: info.id,
                peer: info.peer,
                hub: self.hub.clone(),
                config: self.config,
                broker: self.broker.clone(),
                heard: false,
            },
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.broker.as_ref().map(|_| broker::TICK)
    }

    fn tick(&self) {
        if let Some(broker) = &self.broker {
            broker.tick();
        }
    }

    fn serving(&self) {
        if let Some(broker) = &self.broker {
            broker.start();
        }
    }

    fn stopping(&self) {
        if let Some(broker) = &self.broker {
            broker.stop();
        }
        let cut = self.hub.borrow().cut_off_total();
        if cut > 0 {
            log::info!("{cut} slow subscribers were cut off in this worker");
        }
    }
}

/// One connection: its framing state and its session.
pub struct ChatConsumer {
    lines: Lines,
    session: Session,
}

/// What a connection's commands run against (apart from [`Lines`], so both can be borrowed
/// while a read is split into lines).
struct Session {
    id: ConnId,
    peer: SocketAddr,
    hub: Rc<RefCell<Hub>>,
    config: Config,
    broker: Option<Broker>,
    /// The client sent something since the ping timer last fired.
    heard: bool,
}

impl Session {
    /// Run one line and write its reply; `Break` once the connection is closing.
    fn execute(&mut self, line: &[u8], out: &mut Output) -> ControlFlow<()> {
        let command = match command::parse(line) {
            Ok(Some(command)) => command,
            Ok(None) => return ControlFlow::Continue(()),
            Err(refusal) => {
                reply(out, refusal.as_bytes());
                return ControlFlow::Continue(());
            }
        };
        match command {
            Command::Subscribe(channel) => {
                match self.hub.borrow_mut().subscribe(self.id, channel) {
                    Ok(()) => reply(out, b"+OK"),
                    Err(hub::TooManySubscriptions(max)) => reply(
                        out,
                        format!("-ERR too many subscriptions (max {max})").as_bytes(),
                    ),
                }
            }
            Command::Unsubscribe(channel) => {
                self.hub.borrow_mut().unsubscribe(self.id, channel);
                reply(out, b"+OK");
            }
            Command::Publish { channel, text } => self.publish(channel, text, out),
            Command::Ping => reply(out, b"+PONG"),
            Command::Pong => {}
            Command::Quit => {
                reply(out, b"+OK bye");
                out.close();
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Hand `text` to the broker if it is up (this worker's subscribers get it when the
    /// broker delivers it back: see [`broker`]); otherwise fan it out to `channel`'s
    /// subscribers here and now, then close the ones that fell behind.
    fn publish(&mut self, channel: &[u8], text: &[u8], out: &mut Output) {
        if let Some(broker) = &self.broker {
            if broker.publish(channel, text) == Route::Broker {
                let here = self.hub.borrow().subscribers(channel);
                reply(out, format!("+OK {here}").as_bytes());
                return;
            }
        }
        let message = message_line(channel, text);
        let published = self
            .hub
            .borrow_mut()
            .publish(self.id, channel, &message, services::post);
        reply(out, format!("+OK {}", published.reached).as_bytes());
        if published.to_self {
            out.write(&message);
        }
        for cut in published.cut_off {
            cut_off(cut);
        }
    }

    /// Refuse an overlong line and close: the rest of the stream cannot be framed reliably.
    fn too_long(&self, out: &mut Output) {
        log::debug!(
            "{}: line longer than {} bytes; closing",
            self.peer,
            self.config.max_line
        );
        reply(
            out,
            format!("-ERR line too long (max {} bytes)", self.config.max_line).as_bytes(),
        );
        out.close();
    }
}

/// The line a subscriber receives: `MESSAGE channel text\n`.
fn message_line(channel: &[u8], text: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(channel.len() + text.len() + 10);
    for part in [&b"MESSAGE "[..], channel, b" ", text, b"\n"] {
        message.extend_from_slice(part);
    }
    message
}

/// Close a subscriber that fell behind, and say so once.
fn cut_off(cut: CutOff) {
    services::close(cut.id);
    let why = match cut.status {
        PostStatus::Overflow => "the host's --max-pending bound was reached",
        _ => "more than the host's high-water mark is waiting to be sent to it",
    };
    log::warn!(
        "{}: slow subscriber cut off ({why}); {} cut off so far in this worker",
        cut.peer,
        cut.total
    );
}

/// Write one reply line.
fn reply(out: &mut Output, line: &[u8]) {
    out.write(line);
    out.write(b"\n");
}

impl Consumer for ChatConsumer {
    fn connection_made(&mut self, _out: &mut Output) {
        let s = &self.session;
        s.hub.borrow_mut().join(s.id, s.peer);
        if let Some(timeout) = s.config.idle_timeout {
            services::set_idle_timeout(s.id, timeout);
        }
        if let Some(every) = s.config.ping {
            services::set_timer(s.id, every, PING_TIMER);
        }
    }

    fn data_received(&mut self, data: &[u8], out: &mut Output) {
        let session = &mut self.session;
        if session.hub.borrow().is_cut(session.id) {
            return;
        }
        session.heard = true;
        if self
            .lines
            .feed(data, |line| session.execute(line, out))
            .is_err()
        {
            session.too_long(out);
        }
    }

    fn eof_received(&mut self, out: &mut Output) {
        if let Some(line) = self.lines.take_partial() {
            if !self.session.hub.borrow().is_cut(self.session.id) {
                let _ = self.session.execute(&line, out);
            }
        }
        out.close();
    }

    fn timer_fired(&mut self, token: u64, out: &mut Output) {
        let s = &mut self.session;
        let Some(every) = s.config.ping.filter(|_| token == PING_TIMER) else {
            return;
        };
        if s.hub.borrow().is_cut(s.id) {
            return;
        }
        if !std::mem::take(&mut s.heard) {
            out.write(b"PING\n");
        }
        services::set_timer(s.id, every, PING_TIMER);
    }

    fn connection_lost(&mut self, reason: LostReason) {
        let s = &self.session;
        s.hub.borrow_mut().leave(s.id);
        log::debug!("{}: connection ended ({reason:?})", s.peer);
    }
}

plugin_api::export_plugin!(Chat);

#[cfg(test)]
mod tests;

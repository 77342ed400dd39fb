//! The `broker` option's value: `redis://HOST:PORT[/channel-prefix]`, parsed strictly, and
//! the Redis channel names it implies.

use std::fmt;

/// The prefix of the Redis channels when the address names none.
pub const DEFAULT_PREFIX: &str = "chat";

/// The longest channel prefix accepted.
const MAX_PREFIX: usize = 64;

/// Where the broker is, and the namespace of chat's channels in it: chat channel `news`
/// is Redis channel `PREFIX:news`, and each worker subscribes to the pattern `PREFIX:*`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerAddress {
    /// A name, an IPv4 address, or an IPv6 address without its brackets.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The channel prefix (without its `:`).
    pub prefix: String,
}

impl BrokerAddress {
    /// Parse `redis://HOST:PORT[/channel-prefix]`. The error is the whole message for the
    /// option, naming what is wrong.
    pub fn parse(value: &str) -> Result<BrokerAddress, String> {
        let refuse = |why: &str| {
            Err(format!(
                "option broker: {value:?} is not redis://HOST:PORT[/channel-prefix] \
                 (e.g. redis://127.0.0.1:6379/chat): {why}"
            ))
        };
        let Some(rest) = value.strip_prefix("redis://") else {
            return refuse("it must start with redis://");
        };
        let (authority, prefix) = match rest.split_once('/') {
            Some((authority, prefix)) => (authority, Some(prefix)),
            None => (rest, None),
        };
        if authority.contains('@') {
            return refuse("a user or password is not supported");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            match v6.split_once("]:") {
                Some((host, port)) if host.parse::<std::net::Ipv6Addr>().is_ok() => (host, port),
                _ => return refuse("an IPv6 host is written [ADDRESS]:PORT"),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, port),
                None => return refuse("the port is missing"),
            }
        };
        let name_char = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-';
        if !authority.starts_with('[') && (host.is_empty() || !host.chars().all(name_char)) {
            return refuse("the host must be a name or an IP address");
        }
        let port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return refuse("the port must be a number from 1 to 65535"),
        };
        let prefix = match prefix {
            None => DEFAULT_PREFIX,
            Some("") => return refuse("the channel prefix after / is empty"),
            Some(p) if p.len() > MAX_PREFIX => {
                return refuse(&format!(
                    "the channel prefix is longer than {MAX_PREFIX} bytes"
                ))
            }
            // No glob characters (`*?[]\`): the prefix goes into a PSUBSCRIBE pattern as is.
            Some(p)
                if !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c)) =>
            {
                return refuse(
                    "the channel prefix may hold only ASCII letters, digits, '_', '.', ':' and '-'",
                )
            }
            Some(p) => p,
        };
        Ok(BrokerAddress {
            host: host.to_string(),
            port,
            prefix: prefix.to_string(),
        })
    }

    /// `HOST:PORT` for [`services::connect`](plugin_api::services::connect).
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The pattern every worker subscribes to: `PREFIX:*`.
    pub fn pattern(&self) -> Vec<u8> {
        format!("{}:*", self.prefix).into_bytes()
    }

    /// The Redis channel of chat channel `channel`.
    pub fn redis_channel(&self, channel: &[u8]) -> Vec<u8> {
        let mut name = Vec::with_capacity(self.prefix.len() + 1 + channel.len());
        name.extend_from_slice(self.prefix.as_bytes());
        name.push(b':');
        name.extend_from_slice(channel);
        name
    }

    /// The chat channel of Redis channel `name`; `None` outside the prefix.
    pub fn chat_channel<'a>(&self, name: &'a [u8]) -> Option<&'a [u8]> {
        name.strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b":")
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis://{}/{}", self.target(), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = BrokerAddress::parse("redis://127.0.0.1:6379/room").unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.prefix.as_str()),
            ("127.0.0.1", 6379, "room")
        );
        assert_eq!(a.target(), "127.0.0.1:6379");
        assert_eq!(a.pattern(), b"room:*");
        assert_eq!(a.redis_channel(b"news"), b"room:news");
        assert_eq!(a.chat_channel(b"room:news"), Some(&b"news"[..]));
        assert_eq!(a.chat_channel(b"roomy:news"), None);
        assert_eq!(a.to_string(), "redis://127.0.0.1:6379/room");
        let b = BrokerAddress::parse("redis://redis.internal:6380").unwrap();
        assert_eq!(b.prefix, DEFAULT_PREFIX);
        assert_eq!(b.target(), "redis.internal:6380");
        let c = BrokerAddress::parse("redis://[::1]:6379/a:b-c_d.e").unwrap();
        assert_eq!(
            (c.host.as_str(), c.target().as_str()),
            ("::1", "[::1]:6379")
        );
        assert_eq!(c.pattern(), b"a:b-c_d.e:*");
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let why = |v: &str| {
            let e = BrokerAddress::parse(v).unwrap_err();
            assert!(
                e.starts_with(&format!("option broker: {v:?} is not redis://HOST:PORT[/channel-prefix] (e.g. redis://127.0.0.1:6379/chat): ")),
                "{e}"
            );
            e.rsplit(": ").next().unwrap().to_string()
        };
        assert_eq!(why("127.0.0.1:6379"), "it must start with redis://");
        assert_eq!(why("rediss://h:1"), "it must start with redis://");
        assert_eq!(why("redis://h"), "the port is missing");
        assert_eq!(
            why("redis://:6379"),
            "the host must be a name or an IP address"
        );
        assert_eq!(
            why("redis://h h:1"),
            "the host must be a name or an IP address"
        );
        assert_eq!(
            why("redis://h:0"),
            "the port must be a number from 1 to 65535"
        );
        assert_eq!(
            why("redis://h:65536"),
            "the port must be a number from 1 to 65535"
        );
        assert_eq!(
            why("redis://h:x"),
            "the port must be a number from 1 to 65535"
        );
        assert_eq!(
            why("redis://[::1:6379"),
            "an IPv6 host is written [ADDRESS]:PORT"
        );
        assert_eq!(
            why("redis://::1:6379"),
            "the host must be a name or an IP address"
        );
        assert_eq!(
            why("redis://u:p@h:1"),
            "a user or password is not supported"
        );
        assert_eq!(why("redis://h:1/"), "the channel prefix after / is empty");
        assert_eq!(
            why("redis://h:1/a*"),
            "the channel prefix may hold only ASCII letters, digits, '_', '.', ':' and '-'"
        );
        assert_eq!(
            why("redis://h:1/a/b"),
            "the channel prefix may hold only ASCII letters, digits, '_', '.', ':' and '-'"
        );
        assert!(why(&format!("redis://h:1/{}", "p".repeat(65))).contains("longer than 64"));
    }
}

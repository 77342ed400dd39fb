//! The client's commands: one line in, one [`Command`] (or the `-ERR` line that refuses it).
//!
//! ```text
//! SUBSCRIBE channel        +OK
//! UNSUBSCRIBE channel      +OK
//! PUBLISH channel text     +OK <subscribers reached>
//! PING                     +PONG
//! PONG                     (no reply: the answer to the server's PING)
//! QUIT                     +OK bye, then the server closes
//! ```
//!
//! Command words are case-insensitive. A channel is one word of bytes (no blanks), compared
//! exactly; the text is the rest of the line after the channel and one blank, blanks
//! included, and may be empty.

/// One parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `SUBSCRIBE channel`.
    Subscribe(&'a [u8]),
    /// `UNSUBSCRIBE channel`.
    Unsubscribe(&'a [u8]),
    /// `PUBLISH channel text`.
    Publish {
        /// Where to.
        channel: &'a [u8],
        /// What (the rest of the line).
        text: &'a [u8],
    },
    /// `PING`: the client checks that the server is there.
    Ping,
    /// `PONG`: the client answers the server's `PING`.
    Pong,
    /// `QUIT`.
    Quit,
}

/// The commands, as the `-ERR unknown command` reply lists them.
const COMMANDS: &str = "SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PING, PONG, QUIT";

/// Parse one line (without its line ending). `Ok(None)` for a blank line; `Err` is the
/// refusal to send back, without its newline.
pub fn parse(line: &[u8]) -> Result<Option<Command<'_>>, String> {
    let line = line.trim_ascii_start();
    if line.is_empty() {
        return Ok(None);
    }
    let (word, args) = first_word(line);
    let command = match word.to_ascii_uppercase().as_slice() {
        b"SUBSCRIBE" => match channel_only(args) {
            Some(channel) => Command::Subscribe(channel),
            None => return usage("SUBSCRIBE channel"),
        },
        b"UNSUBSCRIBE" => match channel_only(args) {
            Some(channel) => Command::Unsubscribe(channel),
            None => return usage("UNSUBSCRIBE channel"),
        },
        b"PUBLISH" => match args.map(first_word) {
            Some((channel, Some(text))) if !channel.is_empty() => {
                Command::Publish { channel, text }
            }
            _ => return usage("PUBLISH channel text"),
        },
        b"PING" => bare(args, Command::Ping, "PING")?,
        b"PONG" => bare(args, Command::Pong, "PONG")?,
        b"QUIT" => bare(args, Command::Quit, "QUIT")?,
        _ => {
            return Err(format!(
                "-ERR unknown command {:?} (commands: {COMMANDS})",
                String::from_utf8_lossy(word)
            ))
        }
    };
    Ok(Some(command))
}

/// The refusal of a command with the wrong arguments.
fn usage<T>(text: &str) -> Result<T, String> {
    Err(format!("-ERR usage: {text}"))
}

/// A command that takes no arguments.
fn bare<'a>(args: Option<&[u8]>, command: Command<'a>, name: &str) -> Result<Command<'a>, String> {
    match args {
        Some(a) if !a.trim_ascii().is_empty() => usage(name),
        _ => Ok(command),
    }
}

/// `word` up to the first blank, and what follows that one blank (`None`: the word ends the
/// line).
fn first_word(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match s.iter().position(|b| matches!(b, b' ' | b'\t')) {
        Some(blank) => (&s[..blank], Some(&s[blank + 1..])),
        None => (s, None),
    }
}

/// The arguments hold exactly one word (trailing blanks allowed).
fn channel_only(args: Option<&[u8]>) -> Option<&[u8]> {
    let (channel, rest) = first_word(args?.trim_ascii_start());
    let rest_blank = rest.is_none_or(|r| r.trim_ascii().is_empty());
    (!channel.is_empty() && rest_blank).then_some(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            parse(b"SUBSCRIBE news"),
            Ok(Some(Command::Subscribe(b"news")))
        );
        assert_eq!(
            parse(b"subscribe  news "),
            Ok(Some(Command::Subscribe(b"news")))
        );
        assert_eq!(
            parse(b"Unsubscribe news"),
            Ok(Some(Command::Unsubscribe(b"news")))
        );
        assert_eq!(
            parse(b"PUBLISH news hello  world "),
            Ok(Some(Command::Publish {
                channel: b"news",
                text: b"hello  world "
            }))
        );
        assert_eq!(
            parse(b"publish news "),
            Ok(Some(Command::Publish {
                channel: b"news",
                text: b""
            }))
        );
        assert_eq!(parse(b"ping"), Ok(Some(Command::Ping)));
        assert_eq!(parse(b"PONG "), Ok(Some(Command::Pong)));
        assert_eq!(parse(b"QUIT"), Ok(Some(Command::Quit)));
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b" \t "), Ok(None));
    }

    #[test]
    fn refusals() {
        let err = |line: &[u8]| parse(line).unwrap_err();
        assert_eq!(err(b"SUBSCRIBE"), "-ERR usage: SUBSCRIBE channel");
        assert_eq!(err(b"SUBSCRIBE a b"), "-ERR usage: SUBSCRIBE channel");
        assert_eq!(err(b"UNSUBSCRIBE"), "-ERR usage: UNSUBSCRIBE channel");
        assert_eq!(err(b"PUBLISH news"), "-ERR usage: PUBLISH channel text");
        assert_eq!(err(b"PUBLISH"), "-ERR usage: PUBLISH channel text");
        assert_eq!(err(b"PUBLISH  text"), "-ERR usage: PUBLISH channel text");
        assert_eq!(err(b"quit now"), "-ERR usage: QUIT");
        assert_eq!(err(b"ping me"), "-ERR usage: PING");
        assert_eq!(
            err(b"FLY away"),
            "-ERR unknown command \"FLY\" (commands: SUBSCRIBE, UNSUBSCRIBE, PUBLISH, PING, PONG, QUIT)"
        );
    }
}

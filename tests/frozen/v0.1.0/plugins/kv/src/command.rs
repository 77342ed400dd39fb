//! The protocol's commands: one line in, one [`Command`] (or a reason to refuse it).
//!
//! ```text
//! SET key value   store value (the rest of the line after one space; may hold spaces)
//! GET key         VALUE <value> | NOT_FOUND
//! DEL key         DELETED | NOT_FOUND
//! COUNT           COUNT <keys in this worker's store>
//! PING            PONG
//! QUIT            BYE, then the server closes
//! ```
//!
//! Command words are case-insensitive; keys and values are bytes, compared exactly.

/// One parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `SET key value`.
    Set {
        /// The key.
        key: &'a [u8],
        /// Everything after the key and one space.
        value: &'a [u8],
    },
    /// `GET key`.
    Get(&'a [u8]),
    /// `DEL key`.
    Del(&'a [u8]),
    /// `COUNT`.
    Count,
    /// `PING`.
    Ping,
    /// `QUIT`.
    Quit,
}

/// Why a line is not a command; [`Refusal::reply`] is what the client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal<'a> {
    /// The first word is no command.
    Unknown(&'a [u8]),
    /// A command with the wrong arguments; the text is its usage.
    Usage(&'static str),
}

impl Refusal<'_> {
    /// The `ERR ...` reply line, without its newline.
    pub fn reply(&self) -> String {
        match self {
            Refusal::Unknown(word) => format!(
                "ERR unknown command {:?} (commands: SET, GET, DEL, COUNT, PING, QUIT)",
                String::from_utf8_lossy(word)
            ),
            Refusal::Usage(usage) => format!("ERR usage: {usage}"),
        }
    }
}

/// Parse one line (without its line ending); `Ok(None)` for a blank line.
pub fn parse(line: &[u8]) -> Result<Option<Command<'_>>, Refusal<'_>> {
    let (word, rest) = split_word(line);
    let rest = rest.unwrap_or_default();
    if word.is_empty() {
        return Ok(None);
    }
    let command = if word.eq_ignore_ascii_case(b"SET") {
        // `SET k` has no value; `SET k ` stores the empty value.
        match split_word(rest) {
            (key, Some(value)) if !key.is_empty() => Command::Set { key, value },
            _ => return Err(Refusal::Usage("SET key value")),
        }
    } else if word.eq_ignore_ascii_case(b"GET") {
        Command::Get(only_key(rest, "GET key")?)
    } else if word.eq_ignore_ascii_case(b"DEL") {
        Command::Del(only_key(rest, "DEL key")?)
    } else if word.eq_ignore_ascii_case(b"COUNT") {
        no_arguments(rest, "COUNT")?;
        Command::Count
    } else if word.eq_ignore_ascii_case(b"PING") {
        no_arguments(rest, "PING")?;
        Command::Ping
    } else if word.eq_ignore_ascii_case(b"QUIT") {
        no_arguments(rest, "QUIT")?;
        Command::Quit
    } else {
        return Err(Refusal::Unknown(word));
    };
    Ok(Some(command))
}

/// The first word (after leading blanks) and what follows the one blank ending it (`None`
/// when the word ends the line).
fn split_word(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    let s = s.trim_ascii_start();
    match s.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(end) => (&s[..end], Some(&s[end + 1..])),
        None => (s, None),
    }
}

fn only_key<'a>(rest: &'a [u8], usage: &'static str) -> Result<&'a [u8], Refusal<'a>> {
    let (key, more) = split_word(rest);
    if key.is_empty() || !more.unwrap_or_default().trim_ascii().is_empty() {
        return Err(Refusal::Usage(usage));
    }
    Ok(key)
}

fn no_arguments<'a>(rest: &'a [u8], usage: &'static str) -> Result<(), Refusal<'a>> {
    if rest.trim_ascii().is_empty() {
        Ok(())
    } else {
        Err(Refusal::Usage(usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            parse(b"SET k hello world"),
            Ok(Some(Command::Set {
                key: b"k",
                value: b"hello world"
            }))
        );
        assert_eq!(
            parse(b"set k "),
            Ok(Some(Command::Set {
                key: b"k",
                value: b""
            }))
        );
        assert_eq!(parse(b"  get k"), Ok(Some(Command::Get(b"k"))));
        assert_eq!(parse(b"Del k "), Ok(Some(Command::Del(b"k"))));
        assert_eq!(parse(b"COUNT"), Ok(Some(Command::Count)));
        assert_eq!(parse(b"ping"), Ok(Some(Command::Ping)));
        assert_eq!(parse(b"QUIT"), Ok(Some(Command::Quit)));
        assert_eq!(parse(b""), Ok(None));
        assert_eq!(parse(b"   "), Ok(None));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(b"SET k"), Err(Refusal::Usage("SET key value")));
        assert_eq!(parse(b"SET"), Err(Refusal::Usage("SET key value")));
        assert_eq!(parse(b"GET"), Err(Refusal::Usage("GET key")));
        assert_eq!(parse(b"GET a b"), Err(Refusal::Usage("GET key")));
        assert_eq!(parse(b"PING me"), Err(Refusal::Usage("PING")));
        assert_eq!(parse(b"FLY away"), Err(Refusal::Unknown(b"FLY")));
        assert_eq!(
            Refusal::Unknown(b"FLY").reply(),
            "ERR unknown command \"FLY\" (commands: SET, GET, DEL, COUNT, PING, QUIT)"
        );
    }
}

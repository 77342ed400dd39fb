//! Just enough RESP2 (the Redis protocol) for a pub/sub client: commands out, replies in.
//!
//! Replies are read by [`Replies`], an incremental parser with a bound: a reply (or the
//! unparsed part of one) larger than its limit is an error and the caller drops the
//! connection, so a broken or hostile broker cannot make a worker buffer without end.
//! Arrays may nest one level (pub/sub never sends more) and hold at most
//! [`MAX_ARRAY`] items.

/// The most items an array may hold (a `pmessage` has four).
pub const MAX_ARRAY: usize = 16;

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+text`
    Simple(Vec<u8>),
    /// `-message`
    Error(Vec<u8>),
    /// `:n`
    Integer(i64),
    /// `$len` then bytes; `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*n` then n replies; `None` for `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bytes of a simple or bulk string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(b) | Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// Why a stream of replies cannot be read further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespError {
    /// A reply is larger than the limit.
    TooLarge(usize),
    /// Bytes that are not RESP2.
    Malformed(&'static str),
}

impl std::fmt::Display for RespError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RespError::TooLarge(max) => write!(f, "a reply larger than {max} bytes"),
            RespError::Malformed(what) => write!(f, "not RESP2: {what}"),
        }
    }
}

/// A command as RESP2: an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The replies arriving on one connection.
#[derive(Debug)]
pub struct Replies {
    /// Bytes of an unfinished reply (at most `max`).
    partial: Vec<u8>,
    max: usize,
}

impl Replies {
    /// A parser refusing replies larger than `max` bytes.
    pub fn new(max: usize) -> Replies {
        Replies {
            partial: Vec::new(),
            max,
        }
    }

    /// Parse what `data` completes, handing each whole reply to `each`, in order. After an
    /// error the stream cannot be framed again: drop the connection.
    pub fn feed(&mut self, data: &[u8], mut each: impl FnMut(Reply)) -> Result<(), RespError> {
        // Parse straight from `data` when nothing is pending (the common case: no copy).
        let owned;
        let input: &[u8] = if self.partial.is_empty() {
            data
        } else {
            self.partial.extend_from_slice(data);
            owned = std::mem::take(&mut self.partial);
            &owned
        };
        let mut at = 0;
        while at < input.len() {
            match parse(&input[at..], 0, self.max)? {
                Some((reply, used)) => {
                    at += used;
                    each(reply);
                }
                None => break,
            }
        }
        let rest = &input[at..];
        if rest.len() > self.max {
            return Err(RespError::TooLarge(self.max));
        }
        self.partial = rest.to_vec();
        Ok(())
    }
}

/// One reply from the start of `buf`: `None` if it is not all there yet.
fn parse(buf: &[u8], depth: usize, max: usize) -> Result<Option<(Reply, usize)>, RespError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > max {
            return Err(RespError::TooLarge(max));
        }
        return Ok(None);
    };
    let (kind, line) = (buf[0], &buf[1..end]);
    let after = end + 2;
    let reply = match kind {
        b'+' => Reply::Simple(line.to_vec()),
        b'-' => Reply::Error(line.to_vec()),
        b':' => Reply::Integer(number(line)?),
        b'$' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let len = len as usize;
            if len > max {
                return Err(RespError::TooLarge(max));
            }
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            if &buf[after + len..after + len + 2] != b"\r\n" {
                return Err(RespError::Malformed("a bulk string not ended by CRLF"));
            }
            return Ok(Some((
                Reply::Bulk(Some(buf[after..after + len].to_vec())),
                after + len + 2,
            )));
        }
        b'*' => {
            let len = number(line)?;
            if len < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            if depth > 0 {
                return Err(RespError::Malformed("nested arrays"));
            }
            if len as usize > MAX_ARRAY {
                return Err(RespError::Malformed("an array of more than 16 items"));
            }
            let mut items = Vec::with_capacity(len as usize);
            let mut at = after;
            for _ in 0..len {
                match parse(&buf[at..], depth + 1, max)? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            return Ok(Some((Reply::Array(Some(items)), at)));
        }
        _ => return Err(RespError::Malformed("an unknown reply type")),
    };
    Ok(Some((reply, after)))
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::Malformed("a bad number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Reply {
        Reply::Bulk(Some(b.to_vec()))
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            command(&[b"PUBLISH", b"chat:news", b"hi there"]),
            b"*3\r\n$7\r\nPUBLISH\r\n$9\r\nchat:news\r\n$8\r\nhi there\r\n"
        );
    }

    #[test]
    fn replies_in_any_pieces() {
        let stream: &[u8] = b"*3\r\n$10\r\npsubscribe\r\n$6\r\nchat:*\r\n:1\r\n\
            *4\r\n$8\r\npmessage\r\n$6\r\nchat:*\r\n$9\r\nchat:news\r\n$0\r\n\r\n\
            :3\r\n+OK\r\n-ERR no\r\n$-1\r\n*-1\r\n";
        let want = vec![
            Reply::Array(Some(vec![
                bulk(b"psubscribe"),
                bulk(b"chat:*"),
                Reply::Integer(1),
            ])),
            Reply::Array(Some(vec![
                bulk(b"pmessage"),
                bulk(b"chat:*"),
                bulk(b"chat:news"),
                bulk(b""),
            ])),
            Reply::Integer(3),
            Reply::Simple(b"OK".to_vec()),
            Reply::Error(b"ERR no".to_vec()),
            Reply::Bulk(None),
            Reply::Array(None),
        ];
        for cut in 1..stream.len() {
            let mut r = Replies::new(64);
            let mut got = Vec::new();
            for piece in stream.chunks(cut) {
                r.feed(piece, |reply| got.push(reply)).unwrap();
            }
            assert_eq!(got, want, "pieces of {cut}");
            assert!(r.partial.is_empty());
        }
    }

    #[test]
    fn limits_and_garbage_are_errors() {
        let mut r = Replies::new(16);
        assert_eq!(
            r.feed(b"$17\r\n", |_| {}),
            Err(RespError::TooLarge(16)),
            "announced too large"
        );
        let mut r = Replies::new(16);
        assert_eq!(
            r.feed(&[b'+'; 20], |_| {}),
            Err(RespError::TooLarge(16)),
            "a line with no end"
        );
        let mut r = Replies::new(16);
        let mut n = 0;
        // Many small replies in one read are fine: the bound is per reply.
        r.feed(&b":1\r\n".repeat(100), |_| n += 1).unwrap();
        assert_eq!(n, 100);
        for (bad, what) in [
            (&b"?x\r\n"[..], "an unknown reply type"),
            (b":x\r\n", "a bad number"),
            (b"$2\r\nabcd", "a bulk string not ended by CRLF"),
            (b"*1\r\n*0\r\n", "nested arrays"),
            (b"*17\r\n", "an array of more than 16 items"),
        ] {
            let mut r = Replies::new(16);
            assert_eq!(r.feed(bad, |_| {}), Err(RespError::Malformed(what)));
        }
    }
}

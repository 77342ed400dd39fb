//! Requests: RESP2 multibulk frames (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) and inline commands
//! (`GET k\r\n`), parsed incrementally and within bounds.
//!
//! TCP keeps no message boundaries, so a read may hold half a frame, one, or many (a
//! pipeline). Complete frames are parsed in place, straight from the read; only the
//! unfinished tail of a read is copied, into a buffer that holds exactly the bytes that
//! have arrived — a client announcing a 512 MB bulk makes the server commit memory as the
//! bytes come, not when the length is read. The parse position inside that unfinished frame
//! is kept, so a large value arriving over thousands of reads is scanned once, not once per
//! read.
//!
//! Bad framing is answered with Redis's own wording (`-ERR Protocol error: ...`, from
//! `networking.c`) and the connection is closed, as Redis does: after a framing error the
//! rest of the stream cannot be trusted.

use std::ops::{ControlFlow, Range};

/// The longest inline command, and the longest `*`/`$` header line, as Redis's
/// `PROTO_INLINE_MAX_SIZE`.
pub const MAX_INLINE: usize = 64 * 1024;

/// The bounds on what one connection may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string (Redis's `proto-max-bulk-len`).
    pub max_bulk: usize,
    /// The most arguments in one command.
    pub max_multibulk: usize,
    /// The most bytes of one unfinished command held (Redis's `client-query-buffer-limit`).
    pub max_query: usize,
}

/// A framing error: the connection gets [`ProtocolError::reply`] and is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// An inline command with no newline within [`MAX_INLINE`] bytes.
    TooBigInline,
    /// An inline command with a quote that is not closed (or not followed by a space).
    UnbalancedQuotes,
    /// A `*count` line with no end within [`MAX_INLINE`] bytes.
    TooBigMbulkCount,
    /// A `*count` that is not a number, or above `max-multibulk`.
    InvalidMultibulkLength,
    /// A `$length` line with no end within [`MAX_INLINE`] bytes.
    TooBigBulkCount,
    /// Something other than `$` where a bulk string must start.
    ExpectedDollar(u8),
    /// A `$length` that is not a number, negative, or above `max-bulk`.
    InvalidBulkLength,
    /// An unfinished command holds more than `max-query` bytes. Redis closes such a client
    /// without a reply; so do we.
    QueryBufferLimit,
}

impl ProtocolError {
    /// The error reply (without `-` and CRLF), worded as Redis words it; `None` when Redis
    /// closes without a reply.
    pub fn reply(&self) -> Option<String> {
        Some(match self {
            ProtocolError::TooBigInline => "ERR Protocol error: too big inline request".into(),
            ProtocolError::UnbalancedQuotes => {
                "ERR Protocol error: unbalanced quotes in request".into()
            }
            ProtocolError::TooBigMbulkCount => {
                "ERR Protocol error: too big mbulk count string".into()
            }
            ProtocolError::InvalidMultibulkLength => {
                "ERR Protocol error: invalid multibulk length".into()
            }
            ProtocolError::TooBigBulkCount => {
                "ERR Protocol error: too big bulk count string".into()
            }
            ProtocolError::ExpectedDollar(got) => {
                format!("ERR Protocol error: expected '$', got '{}'", *got as char)
            }
            ProtocolError::InvalidBulkLength => "ERR Protocol error: invalid bulk length".into(),
            ProtocolError::QueryBufferLimit => return None,
        })
    }
}

/// The arguments of one command: slices of the read (or of the parser's buffer).
#[derive(Clone, Copy, Debug)]
pub struct Args<'a> {
    src: &'a [u8],
    ranges: &'a [Range<usize>],
}

impl<'a> Args<'a> {
    /// Arguments at `ranges` of `src`.
    pub fn new(src: &'a [u8], ranges: &'a [Range<usize>]) -> Args<'a> {
        Args { src, ranges }
    }

    /// How many arguments, the command name included.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there are none (never for a command handed out by the parser).
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i` (0 is the command name).
    pub fn get(&self, i: usize) -> &'a [u8] {
        &self.src[self.ranges[i].clone()]
    }

    /// Arguments `from..` in order.
    pub fn iter_from(&self, from: usize) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let src = self.src;
        self.ranges[from.min(self.ranges.len())..]
            .iter()
            .map(move |r| &src[r.clone()])
    }
}

/// Where the parser is inside the frame that starts at the front of its buffer.
#[derive(Debug, Default)]
struct Progress {
    /// Arguments still to read; 0 before the `*count` line has been read.
    remaining: usize,
    /// Offset (from the frame's start) of the next element's header.
    pos: usize,
    /// The length of the bulk whose header has been read, waiting for its data.
    bulk: Option<usize>,
    /// The arguments read so far, as offsets from the frame's start.
    ranges: Vec<Range<usize>>,
}

/// What parsing one frame from the front of the input gave.
enum Frame {
    /// A complete command, `len` bytes long (its arguments are in `Progress::ranges`).
    Command(usize),
    /// A complete frame with no arguments (`*0`, `*-1`, a blank inline line): skipped.
    Empty(usize),
    /// The frame is not complete yet.
    Partial,
}

/// The incremental request parser of one connection.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    /// The start of an unfinished frame (empty, and unallocated, between frames).
    buf: Vec<u8>,
    progress: Progress,
    /// Inline commands: the arguments with their quoting resolved.
    inline: Vec<u8>,
}

impl RequestParser {
    /// A parser with these bounds.
    pub fn new(limits: Limits) -> RequestParser {
        RequestParser {
            limits,
            buf: Vec::new(),
            progress: Progress::default(),
            inline: Vec::new(),
        }
    }

    /// Bytes of an unfinished command held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feed one read: `on_command` gets each complete command in order until it returns
    /// `Break` (the rest of the input is then dropped). A framing error stops parsing; the
    /// commands before it have been run.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut on_command: impl FnMut(Args<'_>) -> ControlFlow<()>,
    ) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            // The steady state: whole frames parsed in place, no copy.
            let used = match self.run(data, &mut on_command) {
                Ok(ControlFlow::Continue(used)) => used,
                Ok(ControlFlow::Break(())) => return Ok(()),
                Err(e) => return Err(self.fail(e)),
            };
            return self.keep_tail(&data[used..]);
        }
        // A frame started in an earlier read: finish it from the buffer. One read is
        // bounded by the host's read size, so the buffer stays within `max-query` plus one
        // read.
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(data);
        match self.run(&buf, &mut on_command) {
            Ok(ControlFlow::Continue(used)) => {
                buf.drain(..used);
                self.buf = buf;
                self.check_bound()
            }
            Ok(ControlFlow::Break(())) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Keep an unfinished frame's bytes for the next read, within the bound.
    fn keep_tail(&mut self, tail: &[u8]) -> Result<(), ProtocolError> {
        if tail.is_empty() {
            self.release();
            return Ok(());
        }
        self.buf.extend_from_slice(tail);
        self.check_bound()
    }

    fn check_bound(&mut self) -> Result<(), ProtocolError> {
        if self.buf.len() > self.limits.max_query {
            return Err(self.fail(ProtocolError::QueryBufferLimit));
        }
        if self.buf.is_empty() {
            self.release();
        }
        Ok(())
    }

    /// Free the buffers once nothing is pending (an idle connection holds none).
    fn release(&mut self) {
        if self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
        if self.inline.capacity() > MAX_INLINE {
            self.inline = Vec::new();
        }
        if self.progress.ranges.capacity() > 1024 {
            self.progress.ranges = Vec::new();
        }
    }

    fn fail(&mut self, e: ProtocolError) -> ProtocolError {
        self.buf = Vec::new();
        self.progress = Progress::default();
        e
    }

    /// Parse and run every complete frame at the front of `input`; returns how many bytes
    /// they took (the rest is an unfinished frame, whose progress is kept).
    fn run(
        &mut self,
        input: &[u8],
        on_command: &mut impl FnMut(Args<'_>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<(), usize>, ProtocolError> {
        let mut start = 0;
        while start < input.len() {
            let frame = &input[start..];
            let parsed = if frame[0] == b'*' || self.progress.pos > 0 {
                self.multibulk(frame)?
            } else {
                self.inline(frame)?
            };
            match parsed {
                Frame::Command(len) => {
                    let args = if frame[0] == b'*' {
                        Args {
                            src: frame,
                            ranges: &self.progress.ranges,
                        }
                    } else {
                        Args {
                            src: &self.inline,
                            ranges: &self.progress.ranges,
                        }
                    };
                    let flow = on_command(args);
                    self.progress.ranges.clear();
                    start += len;
                    if flow.is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                }
                Frame::Empty(len) => start += len,
                Frame::Partial => break,
            }
        }
        Ok(ControlFlow::Continue(start))
    }

    /// One multibulk frame, resumed from `self.progress`.
    fn multibulk(&mut self, frame: &[u8]) -> Result<Frame, ProtocolError> {
        let p = &mut self.progress;
        if p.pos == 0 {
            let Some((line, next)) = header_line(frame, 0) else {
                if frame.len() > MAX_INLINE {
                    return Err(ProtocolError::TooBigMbulkCount);
                }
                return Ok(Frame::Partial);
            };
            let count = parse_int(&frame[1..line]).ok_or(ProtocolError::InvalidMultibulkLength)?;
            if count > i32::MAX as i64 || count > self.limits.max_multibulk as i64 {
                return Err(ProtocolError::InvalidMultibulkLength);
            }
            if count <= 0 {
                return Ok(Frame::Empty(next));
            }
            p.remaining = count as usize;
            p.pos = next;
            p.ranges.clear();
        }
        while p.remaining > 0 {
            let len = match p.bulk {
                Some(len) => len,
                None => {
                    let Some((line, next)) = header_line(frame, p.pos) else {
                        if frame.len() - p.pos > MAX_INLINE {
                            return Err(ProtocolError::TooBigBulkCount);
                        }
                        return Ok(Frame::Partial);
                    };
                    if frame[p.pos] != b'$' {
                        return Err(ProtocolError::ExpectedDollar(frame[p.pos]));
                    }
                    let len = parse_int(&frame[p.pos + 1..line])
                        .filter(|&n| n >= 0 && n as u64 <= self.limits.max_bulk as u64)
                        .ok_or(ProtocolError::InvalidBulkLength)?
                        as usize;
                    p.pos = next;
                    p.bulk = Some(len);
                    len
                }
            };
            if frame.len() < p.pos + len + 2 {
                return Ok(Frame::Partial);
            }
            p.ranges.push(p.pos..p.pos + len);
            p.pos += len + 2;
            p.bulk = None;
            p.remaining -= 1;
        }
        let len = p.pos;
        p.pos = 0;
        Ok(Frame::Command(len))
    }

    /// One inline command line.
    fn inline(&mut self, frame: &[u8]) -> Result<Frame, ProtocolError> {
        let Some(newline) = frame.iter().position(|&b| b == b'\n') else {
            if frame.len() > MAX_INLINE {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(Frame::Partial);
        };
        let line = &frame[..newline];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.inline.clear();
        self.progress.ranges.clear();
        split_args(line, &mut self.inline, &mut self.progress.ranges)
            .map_err(|UnbalancedQuotes| ProtocolError::UnbalancedQuotes)?;
        if self.progress.ranges.is_empty() {
            Ok(Frame::Empty(newline + 1))
        } else {
            Ok(Frame::Command(newline + 1))
        }
    }
}

/// A header line (`*3` or `$5`) starting at `at`: the offset of its `\r` and of the byte
/// after its line ending. Like Redis, only the `\r` is searched for and the byte after it
/// is taken to be the `\n`.
fn header_line(frame: &[u8], at: usize) -> Option<(usize, usize)> {
    let cr = at + frame[at..].iter().position(|&b| b == b'\r')?;
    (cr + 2 <= frame.len()).then_some((cr, cr + 2))
}

/// Redis's `string2ll`: an optional `-`, then digits without leading zeros, no spaces, in
/// range for `i64`.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 || (digits[0] == b'0' && s.len() > 1) {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        if value > i64::MAX as u64 + 1 {
            None
        } else {
            Some((value as i64).wrapping_neg())
        }
    } else {
        i64::try_from(value).ok()
    }
}

/// An inline command's quote is not closed, or not followed by a space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnbalancedQuotes;

/// Redis's `sdssplitargs`: split an inline command into arguments, with `"..."` (escapes
/// `\n \r \t \b \a \\ \" \xHH`) and `'...'` (escape `\'`) quoting. A closing quote must be
/// followed by a space or the end. The arguments are written one after another into `out`,
/// their ranges into `ranges`. `Err` for unbalanced quotes.
pub fn split_args(
    line: &[u8],
    out: &mut Vec<u8>,
    ranges: &mut Vec<Range<usize>>,
) -> Result<(), UnbalancedQuotes> {
    let is_space = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c);
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(());
        }
        let start = out.len();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            let c = line.get(i).copied();
            if in_dq {
                match c {
                    None => return Err(UnbalancedQuotes),
                    Some(b'\\')
                        if line.get(i + 1) == Some(&b'x')
                            && line.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
                            && line.get(i + 3).is_some_and(u8::is_ascii_hexdigit) =>
                    {
                        out.push(hex(line[i + 2]) * 16 + hex(line[i + 3]));
                        i += 3;
                    }
                    Some(b'\\') if i + 1 < line.len() => {
                        i += 1;
                        out.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 8,
                            b'a' => 7,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        // The closing quote must be followed by a space or nothing.
                        if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                            return Err(UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => out.push(b),
                }
            } else if in_sq {
                match c {
                    None => return Err(UnbalancedQuotes),
                    Some(b'\\') if line.get(i + 1) == Some(&b'\'') => {
                        i += 1;
                        out.push(b'\'');
                    }
                    Some(b'\'') => {
                        if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                            return Err(UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    Some(b) => out.push(b),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if is_space(b) => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(b) => out.push(b),
                }
            }
            i += 1;
        }
        ranges.push(start..out.len());
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk: 1024,
        max_multibulk: 16,
        max_query: 4096,
    };

    /// Feed the reads in order; the commands (as strings) and the final result.
    fn parse(reads: &[&[u8]]) -> (Vec<Vec<String>>, Result<(), ProtocolError>) {
        let mut parser = RequestParser::new(LIMITS);
        let mut commands = Vec::new();
        for read in reads {
            let result = parser.feed(read, |args| {
                commands.push(
                    args.iter_from(0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect(),
                );
                ControlFlow::Continue(())
            });
            if result.is_err() {
                return (commands, result);
            }
        }
        (commands, Ok(()))
    }

    #[test]
    fn pipelined_and_split_frames() {
        let frames = b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        let (all, r) = parse(&[frames]);
        assert_eq!(r, Ok(()));
        assert_eq!(all, [vec!["PING"], vec!["SET", "k", "hello"]]);
        // The same bytes one at a time.
        let reads: Vec<&[u8]> = frames.chunks(1).collect();
        assert_eq!(parse(&reads).0, all);
        // And split at every position into two reads.
        for at in 0..frames.len() {
            let (a, b) = frames.split_at(at);
            assert_eq!(parse(&[a, b]).0, all, "split at {at}");
        }
    }

    #[test]
    fn binary_values_and_empty_frames() {
        let (all, _) = parse(&[b"*0\r\n*-1\r\n*2\r\n$3\r\nGET\r\n$4\r\na\r\nb\r\n"]);
        assert_eq!(all, [vec!["GET", "a\r\nb"]]);
    }

    #[test]
    fn inline_commands_with_quotes() {
        let (all, r) = parse(&[b"PING\r\n\r\nset k \"a b\\x41\\n\" 'it\\'s'\nGE", b"T k\n"]);
        assert_eq!(r, Ok(()));
        assert_eq!(
            all,
            [
                vec!["PING"],
                vec!["set", "k", "a bA\n", "it's"],
                vec!["GET", "k"]
            ]
        );
        assert_eq!(
            parse(&[b"SET k \"open\n"]).1,
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            parse(&[b"SET k \"a\"b\n"]).1,
            Err(ProtocolError::UnbalancedQuotes)
        );
    }

    #[test]
    fn protocol_errors_worded_as_redis() {
        let cases: [(&[u8], &str); 6] = [
            (b"*x\r\n", "ERR Protocol error: invalid multibulk length"),
            (b"*17\r\n", "ERR Protocol error: invalid multibulk length"),
            (
                b"*1\r\n+PING\r\n",
                "ERR Protocol error: expected '$', got '+'",
            ),
            (b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length"),
            (
                b"*1\r\n$1025\r\n",
                "ERR Protocol error: invalid bulk length",
            ),
            (
                b"*1\r\n$01\r\nx\r\n",
                "ERR Protocol error: invalid bulk length",
            ),
        ];
        for (input, want) in cases {
            let (_, r) = parse(&[input]);
            assert_eq!(r.unwrap_err().reply().unwrap(), want, "{input:?}");
        }
        let long = vec![b'a'; MAX_INLINE + 1];
        assert_eq!(parse(&[&long]).1, Err(ProtocolError::TooBigInline));
        let mut count = b"*".to_vec();
        count.extend(vec![b'1'; MAX_INLINE + 1]);
        assert_eq!(parse(&[&count]).1, Err(ProtocolError::TooBigMbulkCount));
    }

    #[test]
    fn commands_before_an_error_run() {
        let (all, r) = parse(&[b"*1\r\n$4\r\nPING\r\n*1\r\n!\r\n"]);
        assert_eq!(all, [vec!["PING"]]);
        assert_eq!(r, Err(ProtocolError::ExpectedDollar(b'!')));
    }

    #[test]
    fn unfinished_command_is_bounded() {
        let mut parser = RequestParser::new(LIMITS);
        let mut ok = |_: Args<'_>| ControlFlow::Continue(());
        // Nine 1000-byte bulks announced: memory follows the bytes that arrive.
        parser.feed(b"*9\r\n$1000\r\n", &mut ok).unwrap();
        assert!(parser.buffered() < 16);
        let mut chunk = vec![b'x'; 1000];
        chunk.extend_from_slice(b"\r\n$1000\r\n");
        for _ in 0..8 {
            let r = parser.feed(&chunk, &mut ok);
            if r.is_err() {
                assert_eq!(r, Err(ProtocolError::QueryBufferLimit));
                assert_eq!(parser.buffered(), 0);
                return;
            }
        }
        panic!("4 KB unfinished command accepted");
    }

    #[test]
    fn int_parsing_is_strict() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-12"), Some(-12));
        assert_eq!(parse_int(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"-0",
        ] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }
}

//! Framing for stream protocols, with bounds: TCP keeps no message boundaries, so a read may
//! hold half a message, one, or several, and a message may arrive over many reads.
//!
//! * [`Lines`] — lines ending in `\n` (a `\r` before it is dropped), at most `max` bytes.
//! * [`Frames`] — length-prefixed frames (a 1-, 2- or 4-byte length, then that many bytes),
//!   payloads of at most `max` bytes.
//!
//! Both hand complete messages out straight from the read (no copy); only an unfinished
//! tail is kept, in a buffer that is empty — and unallocated — between messages, so an idle
//! connection holds nothing. The buffer never grows past one message: a peer that announces
//! or starts a message longer than the bound gets [`TooLong`] as soon as that is known
//! (before the rest arrives), and the consumer answers and closes.
//!
//! ```
//! use std::ops::ControlFlow;
//! use plugin_api::framing::Lines;
//! use plugin_api::{Consumer, Output};
//!
//! struct Upper {
//!     lines: Lines,
//! }
//!
//! impl Consumer for Upper {
//!     fn data_received(&mut self, data: &[u8], out: &mut Output) {
//!         let fed = self.lines.feed(data, |line| {
//!             out.write(&line.to_ascii_uppercase());
//!             out.write(b"\n");
//!             ControlFlow::Continue(())
//!         });
//!         if fed.is_err() {
//!             out.write(b"line too long\n");
//!             out.close();
//!         }
//!     }
//! }
//! ```
//!
//! These are plain Rust on the plugin's side of the boundary: nothing here crosses the ABI.

use std::ops::ControlFlow;

use crate::Output;

/// A message was longer than the bound (or, for [`Frames::write`], does not fit the prefix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

impl std::fmt::Display for TooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("message too long")
    }
}

impl std::error::Error for TooLong {}

/// Splits a byte stream into lines of at most `max` bytes, not counting the line ending
/// (`\n` or `\r\n`).
#[derive(Debug)]
pub struct Lines {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    max: usize,
}

impl Lines {
    /// A splitter for lines of at most `max` bytes.
    pub fn new(max: usize) -> Lines {
        Lines {
            partial: Vec::new(),
            max,
        }
    }

    /// Feed one read: `on_line` gets each complete line (without its ending) in order, until
    /// it returns `Break` (the rest of `data` is then dropped, as is any unfinished line).
    /// `Err` as soon as a line is known to be too long, even before its end arrives; the
    /// splitter is then empty.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut on_line: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), TooLong> {
        let mut rest = data;
        if !self.partial.is_empty() {
            let Some(end) = newline(rest) else {
                return self.keep(rest);
            };
            if self.partial.len() + end > self.max + 1 {
                self.partial = Vec::new();
                return Err(TooLong);
            }
            self.partial.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.partial);
            rest = &rest[end + 1..];
            if self.emit(&line, &mut on_line)?.is_break() {
                return Ok(());
            }
        }
        while let Some(end) = newline(rest) {
            let line = &rest[..end];
            rest = &rest[end + 1..];
            if self.emit(line, &mut on_line)?.is_break() {
                return Ok(());
            }
        }
        self.keep(rest)
    }

    /// The unfinished line, if any, taken out (at end of stream: a protocol may run it).
    pub fn take_partial(&mut self) -> Option<Vec<u8>> {
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (!line.is_empty()).then_some(line)
    }

    /// Bytes held for an unfinished line.
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    fn emit(
        &self,
        line: &[u8],
        on_line: &mut impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, TooLong> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max {
            return Err(TooLong);
        }
        Ok(on_line(line))
    }

    /// Keep the start of an unfinished line, unless it is already too long: at most `max`
    /// bytes plus a `\r` that may turn out to be part of the line ending.
    fn keep(&mut self, tail: &[u8]) -> Result<(), TooLong> {
        let len = self.partial.len() + tail.len();
        let fits = len <= self.max || (len == self.max + 1 && tail.last() == Some(&b'\r'));
        if !fits {
            self.partial = Vec::new();
            return Err(TooLong);
        }
        self.partial.extend_from_slice(tail);
        Ok(())
    }
}

fn newline(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
}

/// How a frame's length is written before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    /// One byte (frames of up to 255 bytes).
    U8,
    /// Two bytes, big-endian (network order).
    U16Be,
    /// Four bytes, big-endian (network order).
    U32Be,
    /// Four bytes, little-endian.
    U32Le,
}

impl Prefix {
    /// The prefix's size in bytes.
    pub fn size(self) -> usize {
        match self {
            Prefix::U8 => 1,
            Prefix::U16Be => 2,
            Prefix::U32Be | Prefix::U32Le => 4,
        }
    }

    fn decode(self, header: &[u8]) -> usize {
        match self {
            Prefix::U8 => usize::from(header[0]),
            Prefix::U16Be => usize::from(u16::from_be_bytes([header[0], header[1]])),
            Prefix::U32Be => {
                u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize
            }
            Prefix::U32Le => {
                u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize
            }
        }
    }

    /// The header for a payload of `len` bytes, if the prefix can say it.
    fn encode(self, len: usize) -> Option<([u8; 4], usize)> {
        let mut h = [0u8; 4];
        match self {
            Prefix::U8 => h[0] = u8::try_from(len).ok()?,
            Prefix::U16Be => h[..2].copy_from_slice(&u16::try_from(len).ok()?.to_be_bytes()),
            Prefix::U32Be => h.copy_from_slice(&u32::try_from(len).ok()?.to_be_bytes()),
            Prefix::U32Le => h.copy_from_slice(&u32::try_from(len).ok()?.to_le_bytes()),
        }
        Some((h, self.size()))
    }
}

/// Splits a byte stream into length-prefixed frames with payloads of at most `max` bytes.
#[derive(Debug)]
pub struct Frames {
    /// An unfinished frame, its header included.
    partial: Vec<u8>,
    prefix: Prefix,
    max: usize,
}

impl Frames {
    /// A splitter for frames whose length is written as `prefix`, of at most `max` bytes.
    pub fn new(prefix: Prefix, max: usize) -> Frames {
        Frames {
            partial: Vec::new(),
            prefix,
            max,
        }
    }

    /// Feed one read: `on_frame` gets each complete frame's payload in order, until it
    /// returns `Break` (the rest of `data` is then dropped, as is any unfinished frame).
    /// `Err` as soon as a header announces more than `max` bytes; the splitter is then
    /// empty.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), TooLong> {
        let header = self.prefix.size();
        let mut rest = data;
        if !self.partial.is_empty() {
            if self.partial.len() < header {
                let take = (header - self.partial.len()).min(rest.len());
                self.partial.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.partial.len() < header {
                    return Ok(());
                }
            }
            let total = header + self.announced(None)?;
            let take = (total - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() < total {
                return Ok(());
            }
            let frame = std::mem::take(&mut self.partial);
            if on_frame(&frame[header..]).is_break() {
                return Ok(());
            }
        }
        while rest.len() >= header {
            let total = header + self.announced(Some(&rest[..header]))?;
            if rest.len() < total {
                break;
            }
            let (frame, tail) = rest.split_at(total);
            rest = tail;
            if on_frame(&frame[header..]).is_break() {
                return Ok(());
            }
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// Write one frame (its length, then `payload`) to `out`; `Err` if `payload` is longer
    /// than `max` or than the prefix can say.
    pub fn write(&self, payload: &[u8], out: &mut Output) -> Result<(), TooLong> {
        if payload.len() > self.max {
            return Err(TooLong);
        }
        let (header, len) = self.prefix.encode(payload.len()).ok_or(TooLong)?;
        out.write(&header[..len]);
        out.write(payload);
        Ok(())
    }

    /// Bytes held for an unfinished frame (header included).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// The payload length `header` (`None`: the unfinished frame's) announces, within the
    /// bound (else the splitter is emptied).
    fn announced(&mut self, header: Option<&[u8]>) -> Result<usize, TooLong> {
        let len = self.prefix.decode(header.unwrap_or(&self.partial));
        if len > self.max {
            self.partial = Vec::new();
            return Err(TooLong);
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds each chunk, collecting lines as text; `None` marks a `TooLong`.
    fn split(max: usize, chunks: &[&[u8]]) -> Vec<Option<String>> {
        let mut lines = Lines::new(max);
        let mut got = Vec::new();
        for chunk in chunks {
            let r = lines.feed(chunk, |l| {
                got.push(Some(String::from_utf8_lossy(l).into_owned()));
                ControlFlow::Continue(())
            });
            if r.is_err() {
                got.push(None);
                break;
            }
        }
        got
    }

    fn some(lines: &[&str]) -> Vec<Option<String>> {
        lines.iter().map(|l| Some(l.to_string())).collect()
    }

    #[test]
    fn lines_across_and_within_reads() {
        assert_eq!(
            split(16, &[b"a\nbb\r\n", b"cc", b"c", b"\nd", b"\r", b"\n"]),
            some(&["a", "bb", "ccc", "d"])
        );
        assert_eq!(split(16, &[b"\n\n"]), some(&["", ""]));
    }

    #[test]
    fn exactly_max_fits_with_either_ending() {
        assert_eq!(split(3, &[b"abc\n"]), some(&["abc"]));
        assert_eq!(split(3, &[b"abc\r\n"]), some(&["abc"]));
        assert_eq!(split(3, &[b"ab", b"c\r", b"\n"]), some(&["abc"]));
        assert_eq!(split(3, &[b"abc\r", b"\n"]), some(&["abc"]));
    }

    #[test]
    fn a_long_line_is_caught_before_its_end_arrives() {
        assert_eq!(split(3, &[b"abcd\n"]), [None]);
        assert_eq!(split(3, &[b"ok\nabcd"]), [Some("ok".into()), None]);
        assert_eq!(split(3, &[b"ab", b"cd"]), [None]);
        assert_eq!(split(3, &[b"abc\rd"]), [None]);
        assert_eq!(split(3, &[b"ab", b"cd\n"]), [None]);
    }

    #[test]
    fn the_line_buffer_stays_bounded_and_is_freed_between_lines() {
        let mut lines = Lines::new(8);
        for _ in 0..8 {
            lines.feed(b"x", |_| ControlFlow::Continue(())).unwrap();
            assert!(lines.buffered() <= 9);
        }
        assert_eq!(
            lines.feed(b"x", |_| ControlFlow::Continue(())),
            Err(TooLong)
        );
        assert_eq!(lines.buffered(), 0);
        let mut lines = Lines::new(8);
        lines.feed(b"abc", |_| ControlFlow::Continue(())).unwrap();
        lines.feed(b"\n", |_| ControlFlow::Continue(())).unwrap();
        assert_eq!(lines.buffered(), 0);
        assert_eq!(lines.partial.capacity(), 0);
    }

    #[test]
    fn break_drops_the_rest_of_the_read() {
        let mut lines = Lines::new(8);
        let mut seen = Vec::new();
        lines
            .feed(b"a\nstop\nb\npartial", |l| {
                seen.push(l.to_vec());
                if l == b"stop" {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .unwrap();
        assert_eq!(seen, [b"a".to_vec(), b"stop".to_vec()]);
        assert_eq!(lines.take_partial(), None);
    }

    #[test]
    fn the_unfinished_line_is_there_at_end_of_stream() {
        let mut lines = Lines::new(8);
        lines
            .feed(b"GET a\r", |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(lines.take_partial(), Some(b"GET a".to_vec()));
        assert_eq!(lines.take_partial(), None);
    }

    /// Feeds each chunk, collecting payloads; `None` marks a `TooLong`.
    fn frames(prefix: Prefix, max: usize, chunks: &[&[u8]]) -> Vec<Option<Vec<u8>>> {
        let mut f = Frames::new(prefix, max);
        let mut got = Vec::new();
        for chunk in chunks {
            if f.feed(chunk, |p| {
                got.push(Some(p.to_vec()));
                ControlFlow::Continue(())
            })
            .is_err()
            {
                got.push(None);
                break;
            }
        }
        got
    }

    #[test]
    fn frames_across_and_within_reads() {
        let all = b"\x00\x03abc\x00\x00\x00\x02hi";
        let want = vec![
            Some(b"abc".to_vec()),
            Some(Vec::new()),
            Some(b"hi".to_vec()),
        ];
        assert_eq!(frames(Prefix::U16Be, 8, &[all]), want);
        // Every split point, header bytes included.
        for cut in 0..all.len() {
            let (a, b) = all.split_at(cut);
            assert_eq!(frames(Prefix::U16Be, 8, &[a, b]), want, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(frames(Prefix::U16Be, 8, &bytewise), want);
        assert_eq!(
            frames(Prefix::U32Le, 8, &[b"\x01\x00\x00\x00x"]),
            [Some(b"x".to_vec())]
        );
        assert_eq!(
            frames(Prefix::U8, 8, &[b"\x01y\x02", b"zz"]),
            [Some(b"y".to_vec()), Some(b"zz".to_vec())]
        );
    }

    #[test]
    fn an_oversized_frame_is_refused_from_its_header() {
        // 4 GiB announced: refused from the header, nothing buffered.
        assert_eq!(frames(Prefix::U32Be, 1024, &[b"\xff\xff\xff\xff"]), [None]);
        assert_eq!(
            frames(Prefix::U32Be, 1024, &[b"\x00\x00", b"\x04\x01"]),
            [None]
        );
        let mut f = Frames::new(Prefix::U16Be, 4);
        assert_eq!(f.feed(b"\x00\x04ab", |_| ControlFlow::Continue(())), Ok(()));
        assert_eq!(f.buffered(), 4);
        assert_eq!(
            f.feed(b"cd\x00\x05", |_| ControlFlow::Continue(())),
            Err(TooLong)
        );
        assert_eq!(f.buffered(), 0);
    }

    #[cfg(any(feature = "host", feature = "testing"))]
    #[test]
    fn frames_round_trip_through_write() {
        let f = Frames::new(Prefix::U16Be, 300);
        let mut out = Output::for_stream();
        f.write(b"hello", &mut out).unwrap();
        f.write(&[7; 300], &mut out).unwrap();
        assert_eq!(f.write(&[0; 301], &mut out), Err(TooLong));
        assert_eq!(
            Frames::new(Prefix::U8, 1000).write(&[0; 256], &mut out),
            Err(TooLong)
        );
        let written = out.written().to_vec();
        assert_eq!(&written[..7], b"\x00\x05hello");
        assert_eq!(
            frames(Prefix::U16Be, 300, &[&written]),
            [Some(b"hello".to_vec()), Some(vec![7; 300])]
        );
    }
}

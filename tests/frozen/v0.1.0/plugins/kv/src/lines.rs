//! Framing: turn TCP reads, which preserve no message boundaries, into lines — with a bound.
//!
//! A read may hold half a line, one line, or many; a line may arrive over many reads. Only
//! the unfinished tail of a read is copied (into `partial`); complete lines are handed out
//! straight from the read. The tail is never allowed to grow past the longest line allowed,
//! so a client that never sends a newline cannot make the server buffer without bound.

use std::ops::ControlFlow;

/// A line (without its `\n` or `\r\n`) was longer than the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

/// Splits a byte stream into lines of at most `max` bytes, not counting the line ending.
#[derive(Debug)]
pub struct Lines {
    /// The start of a line whose end has not arrived yet. Empty (and unallocated) between
    /// lines, so an idle connection holds no buffer.
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

    /// Feed one read: `on_line` gets each complete line in order, until it returns
    /// `Break` (the rest of `data` is then dropped, as is any unfinished line). `Err` as
    /// soon as a line is known to be too long, even before its end arrives.
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

    /// The unfinished line, if any, taken out (at end of stream).
    pub fn take_partial(&mut self) -> Option<Vec<u8>> {
        let mut line = std::mem::take(&mut self.partial);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        (!line.is_empty()).then_some(line)
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

    /// Keep the start of an unfinished line, unless it is already too long: at most
    /// `max` bytes plus a `\r` that may turn out to be part of the line ending.
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

    /// Bytes held for an unfinished line.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }
}

fn newline(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
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
    fn too_long_is_caught_before_its_end_arrives() {
        assert_eq!(split(3, &[b"abcd\n"]), [None]);
        assert_eq!(split(3, &[b"ok\nabcd"]), [Some("ok".into()), None]);
        assert_eq!(split(3, &[b"ab", b"cd"]), [None]);
        assert_eq!(split(3, &[b"abc\rd"]), [None]);
        assert_eq!(split(3, &[b"ab", b"cd\n"]), [None]);
    }

    #[test]
    fn buffer_stays_bounded_and_is_freed_between_lines() {
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
    fn break_drops_the_rest() {
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
    fn unfinished_line_is_available_at_end_of_stream() {
        let mut lines = Lines::new(8);
        lines
            .feed(b"GET a\r", |_| ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(lines.take_partial(), Some(b"GET a".to_vec()));
        assert_eq!(lines.take_partial(), None);
    }
}

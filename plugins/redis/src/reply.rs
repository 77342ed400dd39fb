//! Replies: RESP2 encoding into one buffer per read, written to the host once.
//!
//! A pipeline of a hundred commands produces a hundred replies; encoding them into one
//! reused `Vec` and handing it to the host in one [`plugin_api::Output::write`] keeps the
//! cost per reply to a few bytes copied.

/// The reply buffer of one connection.
#[derive(Debug, Default)]
pub struct Reply {
    buf: Vec<u8>,
}

impl Reply {
    /// The encoded replies so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes encoded so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing is encoded.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Forget what was encoded (after it was written), keeping a modest allocation.
    pub fn clear(&mut self) {
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Drop everything after `len` (a reply started and then abandoned).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Pre-encoded bytes.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// `+OK`.
    pub fn ok(&mut self) {
        self.raw(b"+OK\r\n");
    }

    /// A status reply: `+text`.
    pub fn simple(&mut self, text: &str) {
        self.buf.push(b'+');
        self.buf.extend_from_slice(text.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error reply: `-text` (the text starts with its code, `ERR ...`). Newlines in it
    /// would break the framing and are replaced by spaces, as Redis does.
    pub fn error(&mut self, text: &str) {
        self.error_bytes(text.as_bytes());
    }

    /// An error reply from bytes (a client's argument may be part of it).
    pub fn error_bytes(&mut self, text: &[u8]) {
        self.buf.push(b'-');
        self.buf.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An integer reply.
    pub fn int(&mut self, n: i64) {
        self.buf.push(b':');
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk string.
    pub fn bulk(&mut self, data: &[u8]) {
        self.header(b'$', data.len());
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An integer as a bulk string (`INCRBYFLOAT`, scores).
    pub fn bulk_int(&mut self, n: i64) {
        self.bulk(itoa::Buffer::new().format(n).as_bytes());
    }

    /// A double as a bulk string, in the shortest form that reads back the same.
    pub fn bulk_double(&mut self, d: f64) {
        self.bulk(format_double(d).as_bytes());
    }

    /// The null bulk string (`$-1`).
    pub fn null(&mut self) {
        self.raw(b"$-1\r\n");
    }

    /// The null array (`*-1`).
    pub fn null_array(&mut self) {
        self.raw(b"*-1\r\n");
    }

    /// An array header; the elements follow.
    pub fn array(&mut self, len: usize) {
        self.header(b'*', len);
    }

    /// An array of bulk strings.
    pub fn bulk_array<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a [u8]>) {
        self.array(items.len());
        for item in items {
            self.bulk(item);
        }
    }

    fn header(&mut self, kind: u8, len: usize) {
        self.buf.push(kind);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }
}

/// A double as Redis 7.2+ prints it: the shortest decimal that reads back the same value,
/// integers without a fraction, and `inf` / `-inf`.
pub fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == d.trunc() && d.abs() < 1e17 {
        return format!("{}", d as i64);
    }
    let s = format!("{d}");
    if s.len() > 24 {
        // Very large or very small magnitudes: exponent form, as `%.17g` would.
        return format!("{d:e}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let mut r = Reply::default();
        r.ok();
        r.int(-5);
        r.bulk(b"hi");
        r.null();
        r.array(2);
        r.bulk(b"");
        r.bulk_double(1.5);
        r.error("ERR bad\r\nthing");
        assert_eq!(
            r.bytes(),
            b"+OK\r\n:-5\r\n$2\r\nhi\r\n$-1\r\n*2\r\n$0\r\n\r\n$3\r\n1.5\r\n-ERR bad  thing\r\n"
        );
    }

    #[test]
    fn doubles() {
        assert_eq!(format_double(3.0), "3");
        assert_eq!(format_double(-0.5), "-0.5");
        assert_eq!(format_double(10.5 + 0.1), "10.6");
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_double(1e300), "1e300");
        assert_eq!(format_double(5e-300), "5e-300");
    }
}

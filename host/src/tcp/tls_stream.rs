//! TLS over an accepted stream through rustls's *unbuffered* API
//! ([`UnbufferedServerConnection`]), so that an idle TLS connection holds no record buffer.
//!
//! Why not tokio-rustls: it drives rustls's buffered `ServerConnection`, which grows a 4 KiB
//! receive buffer before every read and never gives it back — half of what an idle TLS
//! connection cost (docs/performance.md, Idle memory). Here the host owns the buffers, the
//! way [`super::connection`] does for plain connections: records are read into a buffer
//! shared by the worker thread and processed there, and a connection keeps bytes of its own
//! only while there is something to keep — the start of a record a read left unfinished,
//! decrypted bytes its reader had no room for, encrypted bytes its socket would not take.
//! Each of those is freed as soon as it is empty. rustls still holds the connection's state
//! and keys.
//!
//! The protocol is rustls's: this file only does what rustls's state machine asks, in its
//! order — records out as soon as they are encoded (handshake flights, session tickets, a
//! key update, an alert), records in until the handshake ends or the reader has data. TLS
//! 1.2 and 1.3; a peer's key-update request is answered with the next write (as rustls's
//! buffered API does); the peer's close_notify is the end of the stream; ours is sent by
//! `poll_shutdown`. A TCP end of stream without close_notify is an error
//! (`UnexpectedEof`), as tokio-rustls reports it. Early data is never enabled.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The shared receive buffer's size: rustls reassembles a handshake message of up to 64 KiB
/// in place, and a whole record (16 KiB and its overhead) may follow it.
const INPUT_MAX: usize = 96 * 1024;
/// Bytes read from the socket at once: records whose plaintext fits the connection
/// driver's 64 KiB read buffer, so that one read is decrypted straight into it.
const READ_MAX: usize = 64 * 1024;
/// The largest TLS record on the wire: 16 KiB of payload, TLS 1.3's 256 bytes of expansion
/// and the 5-byte header.
const RECORD_MAX: usize = 16 * 1024 + 256 + 5;
/// Plaintext encrypted per `poll_write`: four full records.
const WRITE_MAX: usize = 64 * 1024;

/// A byte buffer kept at its full length (zeroed once) with marks for the filled part
/// (`start..len`), so that reading, decrypting or encrypting into it costs no zeroing, and
/// taking bytes from its front no copy.
#[derive(Default)]
struct Bytes {
    data: Vec<u8>,
    start: usize,
    len: usize,
}

impl Bytes {
    fn filled(&self) -> &[u8] {
        &self.data[self.start..self.len]
    }

    fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.len]
    }

    fn is_empty(&self) -> bool {
        self.start == self.len
    }

    fn clear(&mut self) {
        self.start = 0;
        self.len = 0;
    }

    /// The unfilled part, at least `n` bytes long; the filled part moves to the front
    /// first if that makes room.
    fn spare(&mut self, n: usize) -> &mut [u8] {
        if self.data.len() - self.len < n.max(1) && self.start > 0 {
            self.data.copy_within(self.start..self.len, 0);
            self.len -= self.start;
            self.start = 0;
        }
        if self.data.len() < self.len + n {
            self.data.resize(self.len + n, 0);
        }
        &mut self.data[self.len..]
    }

    fn append(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Take the first `n` filled bytes away.
    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.len {
            self.clear();
        }
    }
}

/// The worker thread's TLS buffers, borrowed only inside one poll.
struct Scratch {
    /// Received records: the connection's unfinished bytes, then what the socket gave.
    input: Bytes,
    /// Records encoded or encrypted by this poll, to be written.
    output: Bytes,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        input: Bytes { data: vec![0; INPUT_MAX], start: 0, len: 0 },
        output: Bytes::default(),
    });
}

/// A server-side TLS stream over `S` (an accepted socket, or one behind a PROXY header).
pub struct TlsStream<S> {
    io: S,
    conn: UnbufferedServerConnection,
    /// Received bytes not processed yet: the start of a record a read left unfinished, or
    /// records left for the next read when the reader's buffer filled. Unallocated when empty.
    incoming: Vec<u8>,
    /// Decrypted bytes the reader had no room for yet. Unallocated when empty.
    plaintext: Vec<u8>,
    /// Encrypted bytes the socket did not take yet, sent before anything else. Unallocated
    /// when empty.
    outgoing: Vec<u8>,
    /// The peer's close_notify came: after `plaintext`, the stream is at its end.
    peer_closed: bool,
    /// Ours went (into `outgoing` at least).
    close_notify_sent: bool,
}

/// What one call of [`TlsStream::process`] is for.
enum Want<'a, 'b> {
    /// Handshake records only: stop when the handshake is over or needs the peer.
    Handshake,
    /// Application data into this buffer.
    Read(&'a mut ReadBuf<'b>),
    /// Encrypt this application data.
    Write(&'a [u8]),
    /// Encrypt a close_notify alert.
    CloseNotify,
}

/// Where processing stopped.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Every complete record is processed; rustls needs more from the peer.
    NeedData,
    /// Application data is ready (delivered to the reader, or, during the handshake, left
    /// in rustls for the first read).
    Data,
    /// The peer sent close_notify.
    PeerClosed,
    /// Both sides sent close_notify: nothing more can be sent or received.
    Closed,
    /// `Want::Write`'s bytes (this many) or `Want::CloseNotify`'s alert are encrypted.
    Written(usize),
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream<S> {
    /// Complete a TLS handshake on `io`. Also returns the name the client asked for (SNI):
    /// rustls 0.23's unbuffered connection does not keep it for us (see
    /// [`crate::tls::take_server_name`]).
    pub async fn accept(
        io: S,
        config: Arc<ServerConfig>,
    ) -> io::Result<(TlsStream<S>, Option<String>)> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = TlsStream {
            io,
            conn,
            incoming: Vec::new(),
            plaintext: Vec::new(),
            outgoing: Vec::new(),
            peer_closed: false,
            close_notify_sent: false,
        };
        let mut sni = None;
        std::future::poll_fn(|cx| stream.poll_handshake(cx, &mut sni)).await?;
        Ok((stream, sni))
    }

    /// The negotiated session: version, ALPN, the client's certificates.
    pub fn session(&self) -> &rustls::CommonState {
        &self.conn
    }

    fn poll_handshake(
        &mut self,
        cx: &mut Context<'_>,
        sni: &mut Option<String>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send_outgoing(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            crate::tls::take_server_name();
            let step = self.poll_records(cx, &mut Want::Handshake);
            if let Some(name) = crate::tls::take_server_name() {
                *sni = Some(name);
            }
            // Anything but "done" while rustls still handshakes is the peer's doing.
            let step = ready!(step)?;
            if step != Step::NeedData && self.conn.is_handshaking() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("TLS handshake ended early ({step:?})"),
                )));
            }
        }
    }

    /// Process buffered and newly read records until `want` is met (see [`Step`]), reading
    /// from the socket while rustls needs more; what processing produced is sent (or kept
    /// in `outgoing`).
    fn poll_records(
        &mut self,
        cx: &mut Context<'_>,
        want: &mut Want<'_, '_>,
    ) -> Poll<io::Result<Step>> {
        SCRATCH.with_borrow_mut(|s| {
            let Scratch { input, output } = s;
            input.clear();
            input.append(&self.incoming);
            self.incoming = Vec::new();
            output.clear();
            // Some application data is in the reader's buffer already.
            let mut delivered = false;
            let result = loop {
                let (used, step) = self.process(input.filled_mut(), output, want);
                input.consume(used);
                match step {
                    Err(e) => {
                        self.encode_alert(output);
                        break Poll::Ready(Err(tls_error(e)));
                    }
                    Ok(Step::NeedData) => {}
                    // Room for more: read on, so that a record the last read cut in two is
                    // completed now rather than copied out and back.
                    Ok(Step::Data) if self.has_room(want) => delivered = true,
                    Ok(step) => break Poll::Ready(Ok(step)),
                }
                if matches!(want, Want::Handshake) && !self.conn.is_handshaking() {
                    break Poll::Ready(Ok(Step::NeedData));
                }
                // A flight goes out before we wait for its answer.
                if let Err(e) = self.send(output.filled(), cx) {
                    break Poll::Ready(Err(e));
                }
                output.clear();
                if input.filled().len() == INPUT_MAX {
                    break Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS: a handshake message larger than 64 KiB",
                    )));
                }
                // What room there is, if a whole record fits (the front is freed only then).
                let n = READ_MAX.min(INPUT_MAX - input.filled().len());
                let spare = input.spare(n.min(RECORD_MAX));
                let n = n.min(spare.len());
                let mut buf = ReadBuf::new(&mut spare[..n]);
                match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                    // (The end of the stream, read again, will be seen by the next read.)
                    Poll::Pending | Poll::Ready(Ok(())) if delivered && buf.filled().is_empty() => {
                        break Poll::Ready(Ok(Step::Data));
                    }
                    Poll::Pending => break Poll::Pending,
                    Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) if buf.filled().is_empty() => {
                        break Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the peer closed the connection without sending TLS close_notify",
                        )));
                    }
                    Poll::Ready(Ok(())) => input.len += buf.filled().len(),
                }
            };
            let sent = self.send(output.filled(), cx);
            if !input.is_empty() {
                self.incoming = input.filled().to_vec();
            }
            match (result, sent) {
                (Poll::Ready(Ok(_)) | Poll::Pending, Err(e)) => Poll::Ready(Err(e)),
                (result, _) => result,
            }
        })
    }

    /// Whether a read has room for more application data.
    fn has_room(&self, want: &Want<'_, '_>) -> bool {
        matches!(want, Want::Read(dst) if dst.remaining() > 0) && !self.peer_closed
    }

    /// Encrypt application data or a close_notify (`want`) into `output`, first taking in
    /// whatever rustls still has to process (records left in `incoming` go to `plaintext`).
    fn encrypt(&mut self, want: &mut Want<'_, '_>, output: &mut Bytes) -> io::Result<Step> {
        let mut incoming = std::mem::take(&mut self.incoming);
        let (used, step) = self.process(&mut incoming, output, want);
        incoming.drain(..used);
        if !incoming.is_empty() {
            self.incoming = incoming;
        }
        match step {
            Ok(Step::NeedData) => Err(io::Error::other(
                "TLS: nothing can be sent before the handshake ends",
            )),
            Ok(step) => Ok(step),
            Err(e) => {
                self.encode_alert(output);
                Err(tls_error(e))
            }
        }
    }

    /// Drive rustls over `input` until `want` is met or it needs more bytes; the number of
    /// bytes of `input` it is done with, and where it stopped.
    fn process(
        &mut self,
        input: &mut [u8],
        output: &mut Bytes,
        want: &mut Want<'_, '_>,
    ) -> (usize, Result<Step, rustls::Error>) {
        let mut used = 0;
        // Read: records go on into the reader's buffer while it has room.
        let mut delivered = false;
        loop {
            let status = self.conn.process_tls_records(&mut input[used..]);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => return (used + discard, Err(e)),
            };
            let step = match state {
                ConnectionState::ReadTraffic(mut records) => match want {
                    // Left in rustls for the first read.
                    Want::Handshake => Some(Step::Data),
                    Want::Read(dst) => {
                        while let Some(record) = records.next_record() {
                            let record = match record {
                                Ok(r) => r,
                                Err(e) => return (used + discard, Err(e)),
                            };
                            discard += record.discard;
                            let fits = record.payload.len().min(dst.remaining());
                            dst.put_slice(&record.payload[..fits]);
                            self.plaintext.extend_from_slice(&record.payload[fits..]);
                            delivered |= !record.payload.is_empty();
                        }
                        (delivered && dst.remaining() == 0).then_some(Step::Data)
                    }
                    Want::Write(_) | Want::CloseNotify => {
                        while let Some(record) = records.next_record() {
                            let record = match record {
                                Ok(r) => r,
                                Err(e) => return (used + discard, Err(e)),
                            };
                            discard += record.discard;
                            self.plaintext.extend_from_slice(record.payload);
                        }
                        None
                    }
                },
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    match want {
                        // The data first; the end of the stream on the next read.
                        Want::Read(_) if delivered => Some(Step::Data),
                        Want::Handshake | Want::Read(_) => Some(Step::PeerClosed),
                        Want::Write(_) | Want::CloseNotify => None,
                    }
                }
                ConnectionState::Closed => {
                    self.peer_closed = true;
                    match want {
                        Want::Write(_) => {
                            return (
                                used + discard,
                                Err(rustls::Error::General(
                                    "write after both sides sent close_notify".into(),
                                )),
                            )
                        }
                        Want::Read(_) if delivered => Some(Step::Data),
                        _ => Some(Step::Closed),
                    }
                }
                ConnectionState::EncodeTlsData(mut record) => {
                    if let Err(e) = encode(&mut record, output) {
                        return (used + discard, Err(rustls::Error::General(e.to_string())));
                    }
                    None
                }
                ConnectionState::TransmitTlsData(sent) => {
                    // Encoded records are sent as soon as this pass ends, in order.
                    sent.done();
                    None
                }
                ConnectionState::BlockedHandshake if delivered => Some(Step::Data),
                ConnectionState::BlockedHandshake => Some(Step::NeedData),
                ConnectionState::WriteTraffic(mut traffic) => match want {
                    Want::Read(_) if delivered => Some(Step::Data),
                    Want::Handshake | Want::Read(_) => Some(Step::NeedData),
                    Want::Write(data) => {
                        let data = *data;
                        match grow_until_fits(output, |out| traffic.encrypt(data, out)) {
                            Ok(()) => Some(Step::Written(data.len())),
                            Err(e) => return (used + discard, Err(e)),
                        }
                    }
                    Want::CloseNotify => {
                        match grow_until_fits(output, |out| traffic.queue_close_notify(out)) {
                            Ok(()) => Some(Step::Written(0)),
                            Err(e) => return (used + discard, Err(e)),
                        }
                    }
                },
                ConnectionState::ReadEarlyData(_) => {
                    return (
                        used + discard,
                        Err(rustls::Error::General("early data is not enabled".into())),
                    )
                }
                other => {
                    return (
                        used + discard,
                        Err(rustls::Error::General(format!(
                            "unexpected TLS state {other:?}"
                        ))),
                    )
                }
            };
            used += discard;
            if let Some(step) = step {
                return (used, Ok(step));
            }
        }
    }

    /// After an error, encode the alert rustls queued for the peer (best effort).
    fn encode_alert(&mut self, output: &mut Bytes) {
        for _ in 0..4 {
            if !self.conn.wants_write() {
                return;
            }
            match self.conn.process_tls_records(&mut []).state {
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    if encode(&mut record, output).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Write `bytes` after whatever is waiting; what the socket does not take now waits in
    /// `outgoing` (and its waker is registered).
    fn send(&mut self, bytes: &[u8], cx: &mut Context<'_>) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !self.outgoing.is_empty() {
            self.outgoing.extend_from_slice(bytes);
            return match self.poll_send_outgoing(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => Ok(()),
            };
        }
        let mut sent = 0;
        while sent < bytes.len() {
            match Pin::new(&mut self.io).poll_write(cx, &bytes[sent..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        self.outgoing.extend_from_slice(&bytes[sent..]);
        Ok(())
    }

    /// Write `outgoing` until it is empty (then freed) or the socket would block.
    fn poll_send_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut sent = 0;
        let result = loop {
            if sent == self.outgoing.len() {
                break Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.io).poll_write(cx, &self.outgoing[sent..]) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => sent += n,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if sent == self.outgoing.len() {
            self.outgoing = Vec::new();
        } else {
            self.outgoing.drain(..sent);
        }
        result
    }
}

/// Copy an encoded handshake record into `output`.
fn encode<Data>(
    record: &mut rustls::unbuffered::EncodeTlsData<'_, Data>,
    output: &mut Bytes,
) -> Result<(), EncodeError> {
    let mut need = 0;
    loop {
        match record.encode(output.spare(need)) {
            Ok(n) => {
                output.len += n;
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                need = required_size;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Run `op` on the spare part of `output`, larger as rustls asks; count what it wrote.
fn grow_until_fits(
    output: &mut Bytes,
    mut op: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> Result<(), rustls::Error> {
    let mut need = 0;
    loop {
        match op(output.spare(need)) {
            Ok(n) => {
                output.len += n;
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size }))
                if required_size > need =>
            {
                need = required_size;
            }
            Err(e) => return Err(rustls::Error::General(e.to_string())),
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Records still waiting to go out go first (a caller may read without flushing;
        // if the socket is full, its waker is registered and the read goes on).
        if let Poll::Ready(Err(e)) = this.poll_send_outgoing(cx) {
            return Poll::Ready(Err(e));
        }
        if !this.plaintext.is_empty() {
            let n = this.plaintext.len().min(buf.remaining());
            buf.put_slice(&this.plaintext[..n]);
            if n == this.plaintext.len() {
                this.plaintext = Vec::new();
            } else {
                this.plaintext.drain(..n);
            }
            return Poll::Ready(Ok(()));
        }
        if this.peer_closed || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        // `Data`, or the end of the stream (nothing filled).
        ready!(this.poll_records(cx, &mut Want::Read(buf)))?;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Earlier records first; while the socket does not take them, the caller keeps its
        // data (backpressure).
        ready!(this.poll_send_outgoing(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.close_notify_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after TLS close_notify",
            )));
        }
        let data = &data[..data.len().min(WRITE_MAX)];
        Poll::Ready(SCRATCH.with_borrow_mut(|s| {
            s.output.clear();
            this.encrypt(&mut Want::Write(data), &mut s.output)?;
            this.send(s.output.filled(), cx)?;
            Ok(data.len())
        }))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// close_notify, then the socket's half-close.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_notify_sent {
            this.close_notify_sent = true;
            let queued = SCRATCH.with_borrow_mut(|s| {
                s.output.clear();
                // A connection rustls has already failed has nothing to say.
                let _ = this.encrypt(&mut Want::CloseNotify, &mut s.output);
                this.send(s.output.filled(), cx)
            });
            queued?;
        }
        ready!(this.poll_send_outgoing(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    //! The stream against a rustls client over an in-memory pipe of a few bytes: every record
    //! arrives in pieces (the unfinished-record path), every write is partial (`outgoing`),
    //! and the reader's buffer is smaller than a record (`plaintext`).

    use std::io::{self, Read, Write};
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::ClientConnection;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

    use super::{Bytes, TlsStream};

    fn configs(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let der = CertificateDer::from(cert.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .unwrap();
        crate::tls::note_server_names(&mut server);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// The client's side: what it has received, and whether the server's close_notify came.
    #[derive(Default)]
    struct Received {
        plaintext: Vec<u8>,
        closed: bool,
    }

    /// Move TLS bytes both ways, reading and writing at once (the pipe holds a few bytes),
    /// until `done`.
    async fn pump(
        conn: &mut ClientConnection,
        rd: &mut ReadHalf<DuplexStream>,
        wr: &mut WriteHalf<DuplexStream>,
        got: &mut Received,
        done: impl Fn(&ClientConnection, &Received) -> bool,
    ) -> io::Result<()> {
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
            loop {
                match conn.reader().read(&mut buf) {
                    Ok(0) => {
                        got.closed = true;
                        break;
                    }
                    Ok(n) => got.plaintext.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if out.is_empty() && done(conn, got) {
                return Ok(());
            }
            tokio::select! {
                n = wr.write(&out), if !out.is_empty() => {
                    out.drain(..n?);
                }
                n = rd.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    conn.read_tls(&mut &buf[..n])?;
                    conn.process_new_packets().map_err(io::Error::other)?;
                }
            }
        }
    }

    async fn echo_through_a_narrow_pipe(version: &'static rustls::SupportedProtocolVersion) {
        let (server_config, client_config) = configs(version);
        let (server_io, client_io) = tokio::io::duplex(7);
        let server = tokio::spawn(async move {
            let (mut tls, sni) = TlsStream::accept(server_io, server_config).await.unwrap();
            assert_eq!(sni.as_deref(), Some("localhost"));
            // Echo through a reader buffer smaller than a record, until close_notify.
            let mut buf = [0u8; 5];
            loop {
                let n = tls.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                tls.write_all(&buf[..n]).await.unwrap();
            }
            tls.shutdown().await.unwrap();
        });
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(client_config, name).unwrap();
        let (mut rd, mut wr) = tokio::io::split(client_io);
        let mut got = Received::default();
        pump(&mut conn, &mut rd, &mut wr, &mut got, |c, _| {
            !c.is_handshaking()
        })
        .await
        .unwrap();
        assert_eq!(conn.protocol_version(), Some(version.version));
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for (i, chunk) in data.chunks(10_000).enumerate() {
            if i == 2 && version.version == rustls::ProtocolVersion::TLSv1_3 {
                conn.refresh_traffic_keys().unwrap();
            }
            conn.writer().write_all(chunk).unwrap();
            let want = (i + 1) * 10_000;
            pump(&mut conn, &mut rd, &mut wr, &mut got, |_, g| {
                g.plaintext.len() >= want
            })
            .await
            .unwrap();
        }
        assert!(got.plaintext == data, "the echo came back different");
        conn.send_close_notify();
        pump(&mut conn, &mut rd, &mut wr, &mut got, |_, g| g.closed)
            .await
            .unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn tls13_echo_key_update_and_close_notify_through_a_narrow_pipe() {
        echo_through_a_narrow_pipe(&rustls::version::TLS13).await;
    }

    #[tokio::test]
    async fn tls12_echo_and_close_notify_through_a_narrow_pipe() {
        echo_through_a_narrow_pipe(&rustls::version::TLS12).await;
    }

    #[test]
    fn bytes_take_from_the_front_and_compact_when_short_of_room() {
        let mut b = Bytes {
            data: vec![0; 8],
            start: 0,
            len: 0,
        };
        b.append(b"abcdef");
        b.consume(4);
        assert_eq!(b.filled(), b"ef");
        // 2 bytes free at the end, 4 wanted: "ef" moves to the front, nothing grows.
        assert_eq!(b.spare(4).len(), 6);
        assert_eq!(b.filled(), b"ef");
        assert_eq!(b.data.len(), 8);
        b.consume(2);
        assert!(b.is_empty());
        assert_eq!((b.start, b.len), (0, 0));
    }
}

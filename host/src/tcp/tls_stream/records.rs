//! Driving rustls's unbuffered state machine: records in (handshake messages, application
//! data, alerts) until what the caller wants is met, and records out (handshake flights,
//! session tickets, a key update, application data, close_notify) in the order rustls
//! produces them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, ReadTraffic, WriteTraffic,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::buffers::{Bytes, Scratch, INPUT_MAX, READ_MAX, RECORD_MAX, SCRATCH};
use super::TlsStream;

/// What one call of [`TlsStream::process`] is for.
pub(super) enum Want<'a, 'b> {
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
pub(super) enum Step {
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
    /// Process buffered and newly read records until `want` is met (see [`Step`]), reading
    /// from the socket while rustls needs more; what processing produced is sent (or kept
    /// in `outgoing`).
    pub(super) fn poll_records(
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
            // The records that end the handshake wait for the first write (`held`).
            let sent = if matches!(want, Want::Handshake) && !self.conn.is_handshaking() {
                self.outgoing.extend_from_slice(output.filled());
                self.held = !self.outgoing.is_empty();
                Ok(())
            } else {
                self.send(output.filled(), cx)
            };
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
    pub(super) fn has_room(&self, want: &Want<'_, '_>) -> bool {
        matches!(want, Want::Read(dst) if dst.remaining() > 0) && !self.peer_closed
    }

    /// Encrypt application data or a close_notify (`want`) into `output`, first taking in
    /// whatever rustls still has to process (records left in `incoming` go to `plaintext`).
    pub(super) fn encrypt(
        &mut self,
        want: &mut Want<'_, '_>,
        output: &mut Bytes,
    ) -> io::Result<Step> {
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
            let step = match status.state {
                Err(e) => Err(e),
                // During the handshake, application data is left in rustls for the first read.
                Ok(ConnectionState::ReadTraffic(_)) if matches!(want, Want::Handshake) => {
                    Ok(Some(Step::Data))
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let dst = match want {
                        Want::Read(dst) => Some(&mut **dst),
                        _ => None,
                    };
                    let (n, got) = take_records(&mut records, dst, &mut self.plaintext);
                    discard += n;
                    got.map(|got| match want {
                        Want::Read(dst) => {
                            delivered |= got;
                            (delivered && dst.remaining() == 0).then_some(Step::Data)
                        }
                        _ => None,
                    })
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(match want {
                        // The data first; the end of the stream on the next read.
                        Want::Read(_) if delivered => Some(Step::Data),
                        Want::Handshake | Want::Read(_) => Some(Step::PeerClosed),
                        Want::Write(_) | Want::CloseNotify => None,
                    })
                }
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    match want {
                        Want::Write(_) => Err(rustls::Error::General(
                            "write after both sides sent close_notify".into(),
                        )),
                        Want::Read(_) if delivered => Ok(Some(Step::Data)),
                        _ => Ok(Some(Step::Closed)),
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut record)) => encode(&mut record, output)
                    .map(|()| None)
                    .map_err(|e| rustls::Error::General(e.to_string())),
                Ok(ConnectionState::TransmitTlsData(sent)) => {
                    // Encoded records are sent as soon as this pass ends, in order.
                    sent.done();
                    Ok(None)
                }
                Ok(ConnectionState::BlockedHandshake) if delivered => Ok(Some(Step::Data)),
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Step::NeedData)),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    write_traffic(&mut traffic, want, output, delivered)
                }
                Ok(other) => Err(unexpected(&other)),
            };
            used += discard;
            match step {
                Ok(None) => {}
                Ok(Some(step)) => return (used, Ok(step)),
                Err(e) => return (used, Err(e)),
            }
        }
    }

    /// After an error, encode the alert rustls queued for the peer (best effort).
    pub(super) fn encode_alert(&mut self, output: &mut Bytes) {
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
}

/// Decrypt every record rustls has ready: into `dst` while it has room, the rest into
/// `plaintext`. The bytes of input done with, and whether any application data came.
fn take_records<Data>(
    records: &mut ReadTraffic<'_, '_, Data>,
    mut dst: Option<&mut ReadBuf<'_>>,
    plaintext: &mut Vec<u8>,
) -> (usize, Result<bool, rustls::Error>) {
    let mut discard = 0;
    let mut delivered = false;
    while let Some(record) = records.next_record() {
        let record = match record {
            Ok(r) => r,
            Err(e) => return (discard, Err(e)),
        };
        discard += record.discard;
        let fits = dst
            .as_ref()
            .map_or(0, |dst| record.payload.len().min(dst.remaining()));
        if let Some(dst) = dst.as_deref_mut() {
            dst.put_slice(&record.payload[..fits]);
        }
        plaintext.extend_from_slice(&record.payload[fits..]);
        delivered |= !record.payload.is_empty();
    }
    (discard, Ok(delivered))
}

/// Once the handshake is over: encrypt `want`'s data or close_notify into `output`; a read
/// stops here (`Data` if it got some, else rustls needs more from the peer).
fn write_traffic<Data>(
    traffic: &mut WriteTraffic<'_, Data>,
    want: &mut Want<'_, '_>,
    output: &mut Bytes,
    delivered: bool,
) -> Result<Option<Step>, rustls::Error> {
    Ok(Some(match want {
        Want::Read(_) if delivered => Step::Data,
        Want::Handshake | Want::Read(_) => Step::NeedData,
        Want::Write(data) => {
            let data = *data;
            grow_until_fits(output, |out| traffic.encrypt(data, out))?;
            Step::Written(data.len())
        }
        Want::CloseNotify => {
            grow_until_fits(output, |out| traffic.queue_close_notify(out))?;
            Step::Written(0)
        }
    }))
}

/// A state this stream never asks for.
fn unexpected<Data>(state: &ConnectionState<'_, '_, Data>) -> rustls::Error {
    match state {
        ConnectionState::ReadEarlyData(_) => {
            rustls::Error::General("early data is not enabled".into())
        }
        other => rustls::Error::General(format!("unexpected TLS state {other:?}")),
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

pub(super) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

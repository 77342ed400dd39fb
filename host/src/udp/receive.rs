//! Receiving one datagram without ever mistaking a cut one for a whole one.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::bind::canonical;

#[cfg_attr(unix, path = "truncation_unix.rs")]
#[cfg_attr(windows, path = "truncation_windows.rs")]
mod truncation;

/// The outcome of one non-blocking receive.
#[derive(Debug)]
pub(super) enum Received {
    /// A whole datagram of this length is in the buffer.
    Datagram(SocketAddr, usize),
    /// A datagram of this (real) length did not fit and was cut: drop it.
    Truncated(SocketAddr, usize),
    Error(io::Error),
    /// Nothing waiting.
    Nothing,
}

/// Receive one datagram, noticing when it did not fit (with `MSG_TRUNC` on Unix, which
/// makes the kernel report the datagram's real length).
pub(super) fn receive(socket: &UdpSocket, buf: &mut [MaybeUninit<u8>]) -> Received {
    let received = socket.try_io(Interest::READABLE, || {
        truncation::recv_from(socket2::SockRef::from(socket), buf)
    });
    match received {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Received::Nothing,
        Err(e) => Received::Error(e),
        Ok((len, from)) => match from.as_socket().map(canonical) {
            None => Received::Error(io::Error::other("datagram from a non-IP address")),
            Some(peer) if len > buf.len() => Received::Truncated(peer, len),
            Some(peer) => Received::Datagram(peer, len),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_datagram_larger_than_the_buffer_is_reported_truncated_with_its_real_length() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .send_to(&[7u8; 300], server.local_addr().unwrap())
            .unwrap();
        client
            .send_to(&[8u8; 50], server.local_addr().unwrap())
            .unwrap();
        let mut small = vec![MaybeUninit::uninit(); 100];
        server.readable().await.unwrap();
        match receive(&server, &mut small) {
            Received::Truncated(peer, 300) => assert_eq!(peer, client.local_addr().unwrap()),
            other => panic!("expected a truncated 300-byte datagram, got {other:?}"),
        }
        server.readable().await.unwrap();
        assert!(
            matches!(receive(&server, &mut small), Received::Datagram(_, 50)),
            "the next one is whole"
        );
    }
}

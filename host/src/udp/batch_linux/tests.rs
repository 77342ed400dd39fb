//! The batch calls against real loopback sockets: several datagrams per call, each in its
//! own slot, a cut one reported with its real length, sends in order to several peers.

use super::*;

async fn pair() -> (UdpSocket, std::net::UdpSocket, std::net::UdpSocket) {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (server, a, b)
}

#[tokio::test]
async fn one_call_receives_a_batch_and_a_cut_datagram_is_reported_in_its_own_slot() {
    let (server, a, b) = pair().await;
    let to = server.local_addr().unwrap();
    a.send_to(&[1u8; 50], to).unwrap();
    b.send_to(&[2u8; 300], to).unwrap(); // larger than a slot
    a.send_to(&[3u8; 100], to).unwrap(); // exactly a slot
    b.send_to(&[4u8; 7], to).unwrap();
    let mut receiver = Receiver::with_slots(8, 100).unwrap();
    server.readable().await.unwrap();
    // Loopback delivers synchronously: all four are queued by now.
    assert_eq!(receiver.receive(&server, 8).unwrap(), 4, "one batch");
    let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    assert!(matches!(receiver.datagram(0), Datagram::Whole(p, d) if p == pa && d == [1u8; 50]));
    assert!(
        matches!(receiver.datagram(1), Datagram::Truncated(p, 300) if p == pb),
        "the 300-byte datagram is cut, with its real length"
    );
    assert!(matches!(receiver.datagram(2), Datagram::Whole(p, d) if p == pa && d == [3u8; 100]));
    assert!(matches!(receiver.datagram(3), Datagram::Whole(p, d) if p == pb && d == [4u8; 7]));
    assert_eq!(receiver.receive(&server, 8).unwrap(), 0, "nothing left");
}

#[tokio::test]
async fn a_batch_is_at_most_what_was_asked_and_the_rest_waits() {
    let (server, a, _) = pair().await;
    let to = server.local_addr().unwrap();
    for i in 0..5u8 {
        a.send_to(&[i; 10], to).unwrap();
    }
    let mut receiver = Receiver::with_slots(4, 64).unwrap();
    server.readable().await.unwrap();
    assert_eq!(receiver.receive(&server, 3).unwrap(), 3);
    assert!(matches!(receiver.datagram(2), Datagram::Whole(_, d) if d == [2u8; 10]));
    assert_eq!(receiver.receive(&server, 8).unwrap(), 2, "one slot each");
    assert!(matches!(receiver.datagram(1), Datagram::Whole(_, d) if d == [4u8; 10]));
    receiver.release();
}

#[tokio::test]
async fn send_takes_many_datagrams_to_several_peers_in_order() {
    let (server, a, b) = pair().await;
    let (pa, pb) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let data: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 20 + i as usize]).collect();
    let queue: Vec<(SocketAddr, &[u8])> = data
        .iter()
        .enumerate()
        .map(|(i, d)| (if i % 2 == 0 { pa } else { pb }, d.as_slice()))
        .collect();
    let mut sender = Sender::default();
    server.writable().await.unwrap();
    assert_eq!(sender.send(&server, queue.iter().copied()).unwrap(), 6);
    let mut buf = [0u8; 64];
    for (i, d) in data.iter().enumerate() {
        let sock = if i % 2 == 0 { &a } else { &b };
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (d.as_slice(), server.local_addr().unwrap())
        );
    }
}

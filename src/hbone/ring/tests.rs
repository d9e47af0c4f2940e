//! Tests of `RingSocket` over real loopback sockets, on both drivers (each test runs once on
//! io_uring and once on epoll), then of the TLS handshakes that `hbone::tls` runs over it.

use std::cell::Cell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::{READ_AHEAD, RingSocket};
use crate::hbone::tls;
use crate::identity::{self, DevCa, Identity};

/// Runs the future `f` makes on an io_uring runtime, then on an epoll one.
fn on_both_drivers<F: Future<Output = ()>>(f: impl Fn() -> F) {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .enable_timer()
        .build()
        .expect("io_uring runtime")
        .block_on(f());
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("epoll runtime")
        .block_on(f());
}

/// A connected pair: our end wrapped, the peer's end plain.
async fn pair() -> (RingSocket, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let theirs = monoio::spawn(async move { listener.accept().await.unwrap().0 });
    let ours = TcpStream::connect(addr).await.unwrap();
    (RingSocket::new(ours), theirs.await)
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// One `poll_read` of up to `ask` bytes, waiting if it is pending.
async fn ask(io: &mut RingSocket, ask: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0; ask];
    let mut read = ReadBuf::new(&mut out);
    poll_fn(|cx| Pin::new(&mut *io).poll_read(cx, &mut read)).await?;
    let n = read.filled().len();
    out.truncate(n);
    Ok(out)
}

#[test]
fn one_read_serves_many_small_asks_and_then_lets_go_of_its_buffer() {
    on_both_drivers(|| async {
        let (mut io, mut peer) = pair().await;
        let sent = pattern(48 << 10);
        let (r, _) = peer.write_all(sent.clone()).await;
        r.unwrap();
        let mut got = ask(&mut io, 4096).await.unwrap();
        assert_eq!(got.len(), 4096);
        // The rest of what the socket had is buffered, not left in the kernel.
        assert!(io.buffered() > 0, "one read took more than the first ask");
        assert!(io.buffered() < READ_AHEAD);
        while got.len() < sent.len() {
            got.extend(ask(&mut io, 4096).await.unwrap());
        }
        assert_eq!(got, sent);
        assert!(!io.holds_buffer(), "a drained buffer is dropped");
    });
}

#[test]
fn end_of_stream_comes_after_every_byte_before_it() {
    on_both_drivers(|| async {
        let (mut io, mut peer) = pair().await;
        let (r, _) = peer.write_all(b"last words".to_vec()).await;
        r.unwrap();
        drop(peer);
        let mut got = Vec::new();
        loop {
            let part = ask(&mut io, 3).await.unwrap();
            if part.is_empty() {
                break;
            }
            got.extend(part);
        }
        assert_eq!(got, b"last words");
        assert!(!io.holds_buffer());
        // Asked again, the end is still the end.
        assert!(ask(&mut io, 3).await.unwrap().is_empty());
    });
}

#[test]
fn writes_arrive_whole_and_in_order_and_a_flush_waits_for_them() {
    on_both_drivers(|| async {
        let (mut io, mut peer) = pair().await;
        let sent = pattern(3 << 20);
        let reader = monoio::spawn(async move {
            let (r, got) = peer.read_exact(vec![0u8; 3 << 20]).await;
            r.unwrap();
            got
        });
        for chunk in sent.chunks(100_000) {
            io.write_all(chunk).await.unwrap();
        }
        io.flush().await.unwrap();
        assert!(
            !io.writing(),
            "a flush completes only once nothing is in flight"
        );
        assert!(!io.holds_buffer(), "a finished burst keeps no write buffer");
        assert_eq!(reader.await, sent);
    });
}

#[test]
fn a_peer_that_does_not_read_holds_the_writer_back() {
    on_both_drivers(|| async {
        let (mut io, mut peer) = pair().await;
        const TOTAL: usize = 64 << 20;
        let accepted = Rc::new(Cell::new(0));
        let counted = accepted.clone();
        let writer = monoio::spawn(async move {
            let chunk = vec![7u8; 256 << 10];
            while counted.get() < TOTAL {
                let n = io.write(&chunk).await.unwrap();
                counted.set(counted.get() + n);
            }
            io.flush().await.unwrap();
        });
        monoio::time::sleep(Duration::from_millis(200)).await;
        // Socket buffers hold a few MiB at most: the writer waits for the peer.
        assert!(accepted.get() < TOTAL / 2, "{} accepted", accepted.get());
        let mut read = 0;
        let mut buf = vec![0u8; 1 << 20];
        while read < TOTAL {
            let (r, b) = peer.read(buf).await;
            buf = b;
            read += r.unwrap();
        }
        writer.await;
        assert_eq!(accepted.get(), TOTAL);
    });
}

#[test]
fn dropping_it_with_operations_in_flight_is_safe() {
    on_both_drivers(|| async {
        // A read in flight (waiting for bytes that never come).
        let (mut io, mut peer) = pair().await;
        let mut out = [0u8; 16];
        let mut read = ReadBuf::new(&mut out);
        let pending =
            poll_fn(|cx| Poll::Ready(Pin::new(&mut io).poll_read(cx, &mut read).is_pending()))
                .await;
        assert!(pending);
        drop(io);
        // The peer sees the connection end, and the runtime goes on.
        let (r, _) = peer.read(vec![0u8; 16]).await;
        assert_eq!(r.unwrap(), 0);

        // A write in flight (far more than the socket buffers take).
        let (mut io, mut peer) = pair().await;
        let big = vec![1u8; 16 << 20];
        let started = poll_fn(|cx| Poll::Ready(Pin::new(&mut io).poll_write(cx, &big))).await;
        let Poll::Ready(accepted) = started else {
            panic!("an idle socket accepts a write at once")
        };
        assert_eq!(accepted.unwrap(), big.len());
        assert!(io.writing(), "16 MiB do not fit the socket buffers");
        drop(io);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let (r, b) = peer.read(buf).await;
            buf = b;
            match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    });
}

/// Client and server configs of one mesh: alice dials bob.
fn configs() -> (
    std::sync::Arc<rustls::ClientConfig>,
    std::sync::Arc<rustls::ServerConfig>,
    Identity,
) {
    let alice: Identity = "spiffe://cluster.local/ns/default/sa/alice"
        .parse()
        .unwrap();
    let bob: Identity = "spiffe://cluster.local/ns/shop/sa/bob".parse().unwrap();
    let ca = DevCa::generate().unwrap();
    let store = ca
        .empty_store()
        .unwrap()
        .with_certs([ca.issue(&alice).unwrap(), ca.issue(&bob).unwrap()]);
    let client = identity::client_config(&store, &alice, std::slice::from_ref(&bob)).unwrap();
    let server = identity::server_config(&store, &bob).unwrap();
    (client, server, alice)
}

#[test]
fn tls_carries_bytes_sent_right_behind_the_handshake_and_ends_with_close_notify() {
    let (client_config, server_config, alice) = configs();
    on_both_drivers(|| {
        let (client_config, server_config, alice) =
            (client_config.clone(), server_config.clone(), alice.clone());
        async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let sent = pattern(1 << 20);
            let expected = sent.clone();
            let server = monoio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                let (mut io, peer) = tls::server_handshake(tcp, server_config).await.unwrap();
                let mut got = Vec::new();
                io.read_to_end(&mut got).await.unwrap();
                io.shutdown().await.unwrap();
                (peer, got)
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut io = tls::client_handshake(tcp, client_config).await.unwrap();
            // Written at once, so the first records can travel with the client's Finished.
            io.write_all(&sent).await.unwrap();
            io.shutdown().await.unwrap();
            let mut rest = Vec::new();
            io.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
            let (peer, got) = server.await;
            assert_eq!(peer, alice, "the client's identity, from its certificate");
            assert_eq!(got.len(), expected.len());
            assert!(got == expected);
        }
    });
}

#[test]
fn a_handshake_across_meshes_fails_on_both_sides_with_the_reason() {
    let (client_config, _, _) = configs();
    // A server of another mesh: the client's certificate is not from its CA.
    let (_, other_server, _) = configs();
    on_both_drivers(|| {
        let (client_config, other_server) = (client_config.clone(), other_server.clone());
        async move {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = monoio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                tls::server_handshake(tcp, other_server).await.is_err()
            });
            let tcp = TcpStream::connect(addr).await.unwrap();
            let err = tls::client_handshake(tcp, client_config).await.unwrap_err();
            assert!(server.await, "the server refused");
            // The client refuses the server's certificate first (unknown issuer); either way
            // the error says it is about certificates, not a broken pipe.
            assert!(
                err.to_string().to_lowercase().contains("certificate")
                    || err.to_string().to_lowercase().contains("issuer"),
                "{err}"
            );
        }
    });
}

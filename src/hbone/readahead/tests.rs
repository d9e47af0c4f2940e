//! Tests of the read-ahead layer over a scripted socket: what each read of the socket returns is
//! fixed in advance, and the socket counts how often and how much it was asked. Then the same
//! with real rustls reading TLS records through the layer. Polled by hand with a no-op waker.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use rustls::{ClientConnection, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{READ_AHEAD, ReadAhead};
use crate::identity::{self, DevCa, Identity};

/// What one read of the scripted socket returns.
enum Step {
    Bytes(Vec<u8>),
    WouldBlock,
    Fail(io::ErrorKind),
}

/// A socket whose reads follow a script; end of stream once the script is done.
#[derive(Default)]
struct Script {
    steps: VecDeque<Step>,
    /// Reads that reached the socket.
    reads: usize,
    /// The largest read asked for.
    largest_ask: usize,
    written: Vec<u8>,
}

impl Script {
    fn new(steps: impl IntoIterator<Item = Step>) -> Script {
        Script {
            steps: steps.into_iter().collect(),
            ..Script::default()
        }
    }
}

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.reads += 1;
        self.largest_ask = self.largest_ask.max(buf.remaining());
        match self.steps.pop_front() {
            None => Poll::Ready(Ok(())),
            Some(Step::WouldBlock) => Poll::Pending,
            Some(Step::Fail(kind)) => Poll::Ready(Err(kind.into())),
            Some(Step::Bytes(mut bytes)) => {
                // A socket hands out what fits and keeps the rest for the next read.
                let n = buf.remaining().min(bytes.len());
                buf.put_slice(&bytes[..n]);
                if n < bytes.len() {
                    self.steps.push_front(Step::Bytes(bytes.split_off(n)));
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncWrite for Script {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One ask of `size` bytes: `Some(bytes)` (empty at end of stream), `None` when it would block.
fn ask(ra: &mut ReadAhead<Script>, size: usize) -> Option<io::Result<Vec<u8>>> {
    let mut space = vec![0u8; size];
    let mut buf = ReadBuf::new(&mut space);
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(ra).poll_read(&mut cx, &mut buf) {
        Poll::Pending => None,
        Poll::Ready(r) => Some(r.map(|()| buf.filled().to_vec())),
    }
}

fn bytes(ra: &mut ReadAhead<Script>, size: usize) -> Vec<u8> {
    ask(ra, size).expect("bytes, not would-block").unwrap()
}

/// `n` bytes that differ from position to position, so a misplaced byte shows.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn one_large_read_serves_many_small_asks() {
    let data = pattern(10_000);
    let mut ra = ReadAhead::new(Script::new([Step::Bytes(data.clone())]));
    let mut got = Vec::new();
    for expected in [4096, 4096, 1808] {
        let chunk = bytes(&mut ra, 4096);
        assert_eq!(chunk.len(), expected);
        got.extend(chunk);
    }
    assert_eq!(got, data);
    assert_eq!(ra.io.reads, 1, "one read of the socket for three asks");
    assert_eq!(ra.io.largest_ask, READ_AHEAD);
}

#[test]
fn a_record_split_across_socket_reads_comes_out_whole_and_in_order() {
    // 20 KiB arriving in two bursts with a wait between them.
    let data = pattern(20_480);
    let mut ra = ReadAhead::new(Script::new([
        Step::Bytes(data[..7000].to_vec()),
        Step::WouldBlock,
        Step::Bytes(data[7000..].to_vec()),
        Step::WouldBlock,
    ]));
    let mut got = Vec::new();
    let mut waits = 0;
    while got.len() < data.len() {
        match ask(&mut ra, 4096) {
            Some(r) => got.extend(r.unwrap()),
            None => waits += 1,
        }
    }
    assert_eq!(got, data);
    assert_eq!(waits, 1);
    assert_eq!(ra.io.reads, 3, "one read per burst, one that found nothing");
    assert!(
        ask(&mut ra, 4096).is_none(),
        "then the socket is asked again"
    );
}

#[test]
fn end_of_stream_comes_after_the_buffered_bytes() {
    let data = pattern(6000);
    let mut ra = ReadAhead::new(Script::new([Step::Bytes(data.clone())]));
    assert_eq!(bytes(&mut ra, 4096), data[..4096]);
    assert_eq!(ra.io.reads, 1);
    assert_eq!(bytes(&mut ra, 4096), data[4096..]);
    assert_eq!(ra.io.reads, 1, "buffered bytes first, the socket not asked");
    assert!(bytes(&mut ra, 4096).is_empty(), "then end of stream");
    assert!(bytes(&mut ra, 4096).is_empty(), "and it stays ended");
    assert!(!ra.holds_buffer());
}

#[test]
fn an_error_comes_after_the_buffered_bytes_and_frees_the_buffer() {
    let data = pattern(5000);
    let mut ra = ReadAhead::new(Script::new([
        Step::Bytes(data.clone()),
        Step::Fail(io::ErrorKind::ConnectionReset),
    ]));
    assert_eq!(bytes(&mut ra, 4096), data[..4096]);
    assert_eq!(bytes(&mut ra, 4096), data[4096..]);
    let e = ask(&mut ra, 4096).unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert!(!ra.holds_buffer());
}

#[test]
fn the_buffer_is_held_only_while_it_holds_bytes() {
    let data = pattern(3000);
    let mut ra = ReadAhead::new(Script::new([
        Step::WouldBlock,
        Step::Bytes(data.clone()),
        Step::WouldBlock,
    ]));
    assert!(!ra.holds_buffer(), "a new connection holds none");
    assert!(ask(&mut ra, 4096).is_none());
    assert!(!ra.holds_buffer(), "nor one that waits for bytes");
    assert_eq!(bytes(&mut ra, 1000), data[..1000]);
    assert!(ra.holds_buffer());
    assert_eq!(ra.buffered(), 2000);
    assert_eq!(bytes(&mut ra, 4096), data[1000..]);
    assert!(!ra.holds_buffer(), "drained: released");
    assert!(ask(&mut ra, 4096).is_none());
    assert!(!ra.holds_buffer());
}

#[test]
fn a_flood_is_read_at_most_one_buffer_ahead_and_only_when_asked() {
    // The peer has sent 1 MiB; the reader takes 4 KiB and stops (its plaintext is not consumed).
    let data = pattern(1 << 20);
    let mut ra = ReadAhead::new(Script::new([Step::Bytes(data.clone())]));
    assert_eq!(bytes(&mut ra, 4096), data[..4096]);
    assert_eq!(ra.buffered(), READ_AHEAD - 4096);
    assert!(ra.buf.capacity() <= READ_AHEAD);
    // Draining the buffer in small asks never reaches the socket, and never grows the buffer.
    let mut got = data[..4096].to_vec();
    while ra.buffered() > 0 {
        got.extend(bytes(&mut ra, 4096));
        assert!(ra.buf.capacity() <= READ_AHEAD);
    }
    assert_eq!(ra.io.reads, 1);
    assert_eq!(got, data[..READ_AHEAD]);
    // Only the next ask reads again, and again at most one buffer.
    assert_eq!(bytes(&mut ra, 4096), data[READ_AHEAD..READ_AHEAD + 4096]);
    assert_eq!(ra.io.reads, 2);
    assert_eq!(ra.buffered(), READ_AHEAD - 4096);
    assert_eq!(ra.io.largest_ask, READ_AHEAD);
}

#[test]
fn writes_pass_through_untouched() {
    let mut ra = ReadAhead::new(Script::default());
    let mut cx = Context::from_waker(Waker::noop());
    let r = Pin::new(&mut ra).poll_write(&mut cx, b"client hello");
    assert!(matches!(r, Poll::Ready(Ok(12))));
    assert_eq!(ra.into_inner().written, b"client hello");
}

/// rustls reads through `std::io::Read`; this turns a pending read into `WouldBlock`, as
/// tokio-rustls does.
struct Sync<'a>(&'a mut ReadAhead<Script>);

impl Read for Sync<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut buf = ReadBuf::new(buf);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut *self.0).poll_read(&mut cx, &mut buf) {
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            Poll::Ready(r) => r.map(|()| buf.filled().len()),
        }
    }
}

/// A finished TLS handshake between a client and a server of one mesh, in memory.
fn connected() -> (ClientConnection, ServerConnection) {
    let alice: Identity = "spiffe://cluster.local/ns/default/sa/alice"
        .parse()
        .unwrap();
    let bob: Identity = "spiffe://cluster.local/ns/shop/sa/bob".parse().unwrap();
    let ca = DevCa::generate().unwrap();
    let store = ca
        .empty_store()
        .unwrap()
        .with_certs([ca.issue(&alice).unwrap(), ca.issue(&bob).unwrap()]);
    let client_config =
        identity::client_config(&store, &alice, std::slice::from_ref(&bob)).unwrap();
    let server_config = identity::server_config(&store, &bob).unwrap();
    let mut client = ClientConnection::new(
        Arc::clone(&client_config),
        identity::placeholder_server_name(),
    )
    .unwrap();
    let mut server = ServerConnection::new(server_config).unwrap();
    while client.is_handshaking() || server.is_handshaking() {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        server.read_tls(&mut &wire[..]).unwrap();
        server.process_new_packets().unwrap();
        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        client.read_tls(&mut &wire[..]).unwrap();
        client.process_new_packets().unwrap();
    }
    (client, server)
}

#[test]
fn rustls_reads_full_records_through_the_layer_in_few_socket_reads() {
    let (mut client, mut server) = connected();
    // 100 KiB of application data: six full 16 KiB records and a short one, then close_notify.
    let sent = pattern(100 << 10);
    client.set_buffer_limit(None);
    std::io::Write::write_all(&mut client.writer(), &sent).unwrap();
    client.send_close_notify();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    // The bytes arrive in three bursts cut mid-record; what the peer sends after its
    // close_notify is never read.
    let cuts = [wire.len() / 3 + 1, 2 * wire.len() / 3 + 5];
    let mut ra = ReadAhead::new(Script::new([
        Step::Bytes(wire[..cuts[0]].to_vec()),
        Step::WouldBlock,
        Step::Bytes(wire[cuts[0]..cuts[1]].to_vec()),
        Step::WouldBlock,
        Step::Bytes(wire[cuts[1]..].to_vec()),
        Step::Bytes(b"after close_notify".to_vec()),
    ]));
    let mut received = Vec::new();
    let mut rustls_reads = 0;
    loop {
        match server.read_tls(&mut Sync(&mut ra)) {
            Ok(0) => break,
            Ok(_) => rustls_reads += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("{e}"),
        }
        let state = server.process_new_packets().unwrap();
        let mut plain = vec![0; state.plaintext_bytes_to_read()];
        server.reader().read_exact(&mut plain).unwrap();
        received.extend(plain);
        if state.peer_has_closed() {
            break;
        }
    }
    assert_eq!(received, sent);
    // rustls asks in steps of 4 KiB (more once its buffer has grown mid-record)…
    assert!(rustls_reads > 8, "{rustls_reads} reads by rustls");
    // …and the socket sees one read per burst (each is under `READ_AHEAD`), one per wait.
    assert_eq!(ra.io.reads, 5);
    assert_eq!(
        ra.io.steps.len(),
        1,
        "the bytes after close_notify stay unread"
    );
}

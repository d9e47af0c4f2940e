//! The byte pump between two established streams, one task per connection, on its core.
//!
//! Both directions run concurrently with owned, pooled buffers (see `net::buffers` for why
//! they come in two sizes). A clean EOF on one side is propagated as a FIN (`shutdown`) to the
//! other and the opposite direction keeps running (half-close); an error in either direction
//! ends both, dropping the sockets. Bytes are added to the caller's counters as each write
//! completes, so long-lived connections show progress.

use std::cell::{Cell, OnceCell};
use std::io;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use super::Side;
use super::buffers::{BufferPool, SMALL};
use crate::metrics::Meter;

/// Bytes moved so far in each direction of one connection.
#[derive(Debug, Default)]
pub struct Transferred {
    /// From the connection's initiator (downstream) toward the upstream.
    pub sent: ByteCounter,
    /// From the upstream back to the initiator.
    pub received: ByteCounter,
}

/// One direction's byte count: the connection's own total (for its access log line) and, once
/// the connection's label set is known, that series' counter on this core's metrics shard, so
/// long connections show progress on every scrape.
#[derive(Debug, Default)]
pub struct ByteCounter {
    total: Cell<u64>,
    meter: OnceCell<Meter>,
}

impl ByteCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.total.set(self.total.get() + n);
        if let Some(m) = self.meter.get() {
            m.add(n);
        }
    }

    pub fn get(&self) -> u64 {
        self.total.get()
    }

    /// From now on bytes also count into `meter`; the bytes counted so far are added to it at
    /// once. The first meter attached wins.
    pub fn attach(&self, meter: Meter) {
        if self.meter.get().is_none() {
            meter.add(self.total.get());
            let _ = self.meter.set(meter);
        }
    }
}

/// Why a pump stopped early; `side` is the end whose socket (or stream) failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("reading from {side:?}: {source}")]
    Read { side: Side, source: io::Error },
    #[error("writing to {side:?}: {source}")]
    Write { side: Side, source: io::Error },
}

impl CopyError {
    /// The end whose socket or stream failed.
    pub fn side(&self) -> Side {
        match self {
            CopyError::Read { side, .. } | CopyError::Write { side, .. } => *side,
        }
    }
}

/// Copies `down_r → up_w` and `up_r → down_w` until both directions have seen EOF, or either
/// fails.
pub async fn bidirectional<DR, DW, UR, UW>(
    (down_r, down_w): (DR, DW),
    (up_r, up_w): (UR, UW),
    pool: &BufferPool,
    counts: &Transferred,
) -> Result<(), CopyError>
where
    DR: AsyncReadRent,
    DW: AsyncWriteRent,
    UR: AsyncReadRent,
    UW: AsyncWriteRent,
{
    let to_up = one_way(
        down_r,
        up_w,
        (Side::Downstream, Side::Upstream),
        pool,
        &counts.sent,
    );
    let to_down = one_way(
        up_r,
        down_w,
        (Side::Upstream, Side::Downstream),
        pool,
        &counts.received,
    );
    let (mut to_up, mut to_down) = (std::pin::pin!(to_up), std::pin::pin!(to_down));
    monoio::select! {
        r = &mut to_up => { r?; to_down.await }
        r = &mut to_down => { r?; to_up.await }
    }
}

/// Copies until EOF on `r`, then shuts down `w`'s write side.
pub async fn one_way<R, W>(
    mut r: R,
    mut w: W,
    (from, to): (Side, Side),
    pool: &BufferPool,
    counter: &ByteCounter,
) -> Result<(), CopyError>
where
    R: AsyncReadRent,
    W: AsyncWriteRent,
{
    let mut buf = pool.small();
    let mut large = false;
    loop {
        let (res, b) = r.read(buf).await;
        buf = b;
        let n = match res {
            Ok(0) => {
                pool.put(buf);
                return w
                    .shutdown()
                    .await
                    .map_err(|source| CopyError::Write { side: to, source });
            }
            Ok(n) => n,
            Err(source) => {
                pool.put(buf);
                return Err(CopyError::Read { side: from, source });
            }
        };
        let (res, b) = w.write_all(buf).await;
        buf = b;
        if let Err(source) = res {
            pool.put(buf);
            return Err(CopyError::Write { side: to, source });
        }
        counter.add(n as u64);
        // A full small read means bulk data is flowing: switch to the large buffer. A short
        // read on the large one means the flow went quiet: give the large buffer back.
        if !large && n == buf.capacity() {
            pool.put(std::mem::replace(&mut buf, pool.large()));
            large = true;
        } else if large && n < SMALL {
            pool.put(std::mem::replace(&mut buf, pool.small()));
            large = false;
        } else {
            buf.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monoio::io::{AsyncReadRentExt, Splitable};
    use monoio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = monoio::join!(TcpStream::connect_addr(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    /// client ⇄ [a | pump | b] ⇄ server: checks bytes, counts and half-close.
    #[monoio::test_all(timer_enabled = true)]
    async fn copies_both_ways_and_propagates_half_close() {
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let pool = BufferPool::new(65536);
        let counts = Transferred::default();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let expect = payload.clone();
        let pump = bidirectional(a.into_split(), b.into_split(), &pool, &counts);
        let peers = async move {
            // Client sends everything then half-closes; server reads to EOF, then answers.
            let (r, _) = client.write_all(payload).await;
            r.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            loop {
                let (r, buf) = server.read(Vec::with_capacity(8192)).await;
                if r.unwrap() == 0 {
                    break;
                }
                got.extend_from_slice(&buf);
            }
            assert_eq!(got, expect);
            let (r, _) = server.write_all(b"pong".to_vec()).await;
            r.unwrap();
            server.shutdown().await.unwrap();
            let (r, buf) = client.read_exact(vec![0u8; 4]).await;
            r.unwrap();
            assert_eq!(&buf, b"pong");
            let (r, _) = client.read(Vec::with_capacity(4)).await;
            assert_eq!(r.unwrap(), 0, "FIN from the server reaches the client");
        };
        let (pumped, ()) = monoio::join!(pump, peers);
        pumped.unwrap();
        assert_eq!(counts.sent.get(), 300_000);
        assert_eq!(counts.received.get(), 4);
        let (small, large) = pool.free_counts();
        assert!(
            small >= 1 && large >= 1,
            "buffers return to the pool: {small} {large}"
        );
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn reset_on_one_side_ends_both() {
        let (client, a) = pair().await;
        let (b, mut server) = pair().await;
        let pool = BufferPool::new(65536);
        let counts = Transferred::default();
        // The client resets its connection: linger 0 then close.
        crate::sys::socket::set_reset_on_close(&client).unwrap();
        drop(client);
        let r = bidirectional(a.into_split(), b.into_split(), &pool, &counts).await;
        assert!(r.is_err(), "a reset must surface as an error: {r:?}");
        // The upstream side sees its connection end.
        let (r, _) = server.read(Vec::with_capacity(16)).await;
        assert!(matches!(r, Ok(0) | Err(_)));
    }
}

//! Deterministic, checksummed test traffic over plain `std::net` sockets, for the tests, the
//! demo and the benches. Runs on whatever thread calls it (usually one entered into a pod's
//! namespace by `Netns::spawn`).
//!
//! Protocol of one exchange, client → server: a 16-byte header (download length, download
//! seed, both big-endian u64), then the upload bytes, then FIN. Server → client: the download
//! bytes (generated from the seed), then — only after the client's FIN, which proves
//! half-close works through the proxies — a trailer: the upload's digest (u64), and the peer
//! address the server saw, as text. Both directions flow at once.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;

/// A repeatable byte stream: xorshift64* keyed by a seed.
#[derive(Debug, Clone)]
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            state: seed | 1,
            word: [0; 8],
            used: 8,
        }
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.word = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

/// FNV-1a, 64 bit: order-sensitive, cheap, and the same on both ends of a test.
#[derive(Debug, Clone, Copy)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn value(self) -> u64 {
        self.0
    }
}

/// What the client learned from one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The client address the server saw (the proxies must preserve the client's IP).
    pub peer_seen_by_server: SocketAddr,
    pub uploaded: u64,
    pub downloaded: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("upload digest mismatch: sent {sent:#x}, server computed {server:#x}")]
    UploadCorrupt { sent: u64, server: u64 },
    #[error("download corrupted at or before byte {0}")]
    DownloadCorrupt(u64),
    #[error("bad trailer: {0}")]
    Trailer(String),
}

/// Serves exchanges on `listener`, one thread per connection, until `max` connections have
/// been accepted (`None`: forever). Errors of single connections are ignored: the client
/// side reports them.
pub fn spawn_server(listener: TcpListener, max: Option<usize>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut n = 0;
        while max.is_none_or(|m| n < m) {
            let Ok((stream, peer)) = listener.accept() else {
                break;
            };
            n += 1;
            std::thread::spawn(move || {
                let _ = serve(stream, peer);
            });
        }
    })
}

/// Echoes every byte back on every connection `listener` accepts, one thread per connection,
/// until the client closes (for tests that hold connections open and probe them).
pub fn spawn_echo(listener: TcpListener) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// The server side of one exchange.
pub fn serve(stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let mut header = [0u8; 16];
    (&stream).read_exact(&mut header)?;
    let download = u64::from_be_bytes(header[..8].try_into().unwrap_or_default());
    let seed = u64::from_be_bytes(header[8..].try_into().unwrap_or_default());
    let writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || send_pattern(&writer, seed, download).map(|()| writer));
    let mut digest = Digest::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = (&stream).read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    let writer = sender
        .join()
        .map_err(|_| io::Error::other("sender panicked"))??;
    let peer = peer.to_string();
    let mut trailer = digest.value().to_be_bytes().to_vec();
    trailer.push(peer.len() as u8);
    trailer.extend_from_slice(peer.as_bytes());
    (&writer).write_all(&trailer)?;
    writer.shutdown(Shutdown::Write)
}

fn send_pattern(mut w: &TcpStream, seed: u64, mut len: u64) -> io::Result<()> {
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    while len > 0 {
        let n = len.min(buf.len() as u64) as usize;
        pattern.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// The client side: uploads `upload` bytes while downloading `download`, verifies both.
pub fn exchange(
    stream: TcpStream,
    upload: u64,
    download: u64,
    seed: u64,
) -> Result<Report, TrafficError> {
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&download.to_be_bytes());
    header[8..].copy_from_slice(&(seed ^ 0x5A5A).to_be_bytes());
    (&stream).write_all(&header)?;
    let writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> io::Result<u64> {
        let mut pattern = Pattern::new(seed);
        let mut digest = Digest::default();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = upload;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pattern.fill(&mut buf[..n]);
            digest.update(&buf[..n]);
            (&writer).write_all(&buf[..n])?;
            left -= n as u64;
        }
        writer.shutdown(Shutdown::Write)?;
        Ok(digest.value())
    });

    let mut expect = Pattern::new(seed ^ 0x5A5A);
    let mut want = vec![0u8; 64 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    while got < download {
        let n = (download - got).min(buf.len() as u64) as usize;
        let n = (&stream).read(&mut buf[..n])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("download ended at {got}"),
            )
            .into());
        }
        expect.fill(&mut want[..n]);
        if buf[..n] != want[..n] {
            return Err(TrafficError::DownloadCorrupt(got + n as u64));
        }
        got += n as u64;
    }
    let sent = sender
        .join()
        .map_err(|_| io::Error::other("sender panicked"))??;
    let mut trailer = Vec::new();
    (&stream).read_to_end(&mut trailer)?;
    if trailer.len() < 9 {
        return Err(TrafficError::Trailer(format!("{} bytes", trailer.len())));
    }
    let server = u64::from_be_bytes(trailer[..8].try_into().unwrap_or_default());
    if server != sent {
        return Err(TrafficError::UploadCorrupt { sent, server });
    }
    let len = usize::from(trailer[8]);
    let peer = std::str::from_utf8(trailer.get(9..9 + len).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            TrafficError::Trailer(String::from_utf8_lossy(&trailer[9..]).into_owned())
        })?;
    Ok(Report {
        peer_seen_by_server: peer,
        uploaded: upload,
        downloaded: got,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchange_over_loopback() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = spawn_server(l, Some(1));
        let s = TcpStream::connect(addr).unwrap();
        let local = s.local_addr().unwrap();
        let r = exchange(s, 1_000_003, 777_777, 42).unwrap();
        assert_eq!(r.peer_seen_by_server, local);
        assert_eq!((r.uploaded, r.downloaded), (1_000_003, 777_777));
        server.join().unwrap();
    }

    #[test]
    fn corrupted_download_is_detected() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // A fake server that sends the wrong pattern.
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut h = [0u8; 16];
            (&s).read_exact(&mut h).unwrap();
            send_pattern(&s, 999, 4096).unwrap();
        });
        let r = exchange(TcpStream::connect(addr).unwrap(), 0, 4096, 1);
        assert!(matches!(r, Err(TrafficError::DownloadCorrupt(_))), "{r:?}");
        t.join().unwrap();
    }

    #[test]
    fn digest_is_order_sensitive() {
        let mut a = Digest::default();
        a.update(b"ab");
        let mut b = Digest::default();
        b.update(b"ba");
        assert_ne!(a.value(), b.value());
    }
}

//! A minimal HTTP/1.1 client over `std::net`, for tests that talk to zring's admin, metrics and
//! readiness servers (from inside a lab namespace via `Netns::run`, or in-process).
//!
//! Runs on the caller's thread and blocks, with a timeout on every socket operation. One
//! request per connection (`Connection: close`), the whole answer read to EOF; only what the
//! tests need: status, headers, body (`Content-Length` or read-to-close; no chunked bodies).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long any connect, read or write may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Answer> {
    request(addr, "GET", path)
}

pub fn post(addr: SocketAddr, path: &str) -> std::io::Result<Answer> {
    request(addr, "POST", path)
}

/// Sends `method path` with no body and reads the answer.
pub fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not an HTTP answer: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(200)])
            ),
        )
    })
}

fn parse(raw: &[u8]) -> Option<Answer> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = &raw[split + 4..];
    if let Some(len) = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body = &body[..len.min(body.len())];
    }
    Some(Answer {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    })
}

//! A hand-written HTTP/2 client over blocking rustls, for sending what a well-behaved library
//! never would: malformed requests, CONTINUATION floods, reset floods, data before the answer.
//!
//! Frames are written byte by byte. Header blocks are HPACK literals without indexing (always
//! valid, no table state on our side). Responses are decoded only as far as zring's answers
//! need (`:status`); anything this decoder does not know fails the test loudly.
//!
//! Every read has a deadline (the socket's read timeout), so a server that stops answering
//! fails the test instead of hanging it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const PROTOCOL_ERROR: u32 = 0x1;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long any single read may wait.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Headers {
        stream: u32,
        end_stream: bool,
        /// Decoded `:status`, the only field zring's responses carry.
        status: u16,
    },
    Data {
        stream: u32,
        payload: Vec<u8>,
        end_stream: bool,
    },
    Reset {
        stream: u32,
        code: u32,
    },
    GoAway {
        last_stream: u32,
        code: u32,
        debug: Vec<u8>,
    },
    /// Anything else (SETTINGS, PING acks, WINDOW_UPDATE…), already handled where needed.
    Other {
        kind: u8,
        stream: u32,
    },
}

/// What the server did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Status(u16),
    Reset(u32),
    GoAway {
        code: u32,
        debug: String,
    },
    /// The connection ended without a word about this stream.
    Closed(String),
}

pub struct Conn {
    tls: StreamOwned<ClientConnection, TcpStream>,
    hpack: Decoder,
    /// Whether SETTINGS and PING are acknowledged. Off while waiting for the server to close:
    /// an acknowledgement written after the server closed fails, and rustls would then fail
    /// every later read trying to flush it, hiding the GOAWAY still queued for us (see
    /// `until_closed`).
    acknowledging: bool,
}

impl Conn {
    /// TLS over `tcp`, then the HTTP/2 preface and an empty SETTINGS frame. Reads nothing: a
    /// TLS 1.3 client finishes its handshake first, so a server's refusal of our certificate
    /// arrives on the first read.
    pub fn open(tcp: TcpStream, config: Arc<ClientConfig>) -> io::Result<Conn> {
        let mut conn = Conn::handshake(tcp, config)?;
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        conn.write(&hello)?;
        Ok(conn)
    }

    /// The TLS handshake alone (our side of it: the server's verdict on our certificate
    /// comes with the first read).
    pub fn handshake(tcp: TcpStream, config: Arc<ClientConfig>) -> io::Result<Conn> {
        tcp.set_read_timeout(Some(READ_TIMEOUT))?;
        tcp.set_write_timeout(Some(READ_TIMEOUT))?;
        let name = ServerName::try_from("hbone.invalid").expect("a valid DNS name");
        let tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = StreamOwned::new(tls, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Conn {
            tls,
            hpack: Decoder::default(),
            acknowledging: true,
        })
    }

    /// Writes raw bytes (one or many frames) and flushes them.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// Reads the next frame, answering SETTINGS and PING as a client must.
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let (head, payload) = self.read_raw()?;
        self.parse(head, payload)
    }

    fn read_raw(&mut self) -> io::Result<([u8; 9], Vec<u8>)> {
        let mut head = [0u8; 9];
        self.tls.read_exact(&mut head)?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        self.tls.read_exact(&mut payload)?;
        Ok((head, payload))
    }

    fn parse(&mut self, head: [u8; 9], payload: Vec<u8>) -> io::Result<Frame> {
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let word = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().unwrap());
        Ok(match kind {
            HEADERS => {
                let mut block = &payload[..];
                if flags & PADDED != 0 {
                    let pad = usize::from(block[0]);
                    block = &block[1..block.len() - pad];
                }
                if flags & PRIORITY_FLAG != 0 {
                    block = &block[5..];
                }
                assert!(
                    flags & END_HEADERS != 0,
                    "server split its response headers; this client cannot follow"
                );
                let fields = self.hpack.decode(block);
                let status = fields
                    .iter()
                    .find(|(n, _)| n == ":status")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or_else(|| panic!("response without :status: {fields:?}"));
                Frame::Headers {
                    stream,
                    end_stream: flags & END_STREAM != 0,
                    status,
                }
            }
            DATA => Frame::Data {
                stream,
                end_stream: flags & END_STREAM != 0,
                payload,
            },
            RST_STREAM => Frame::Reset {
                stream,
                code: word(0),
            },
            GOAWAY => Frame::GoAway {
                last_stream: word(0) & 0x7fff_ffff,
                code: word(4),
                debug: payload[8..].to_vec(),
            },
            SETTINGS => {
                if flags & ACK == 0 && self.acknowledging {
                    self.write(&frame(SETTINGS, ACK, 0, &[]))?;
                }
                Frame::Other { kind, stream }
            }
            PING => {
                if flags & ACK == 0 && self.acknowledging {
                    self.write(&frame(PING, ACK, 0, &payload))?;
                }
                Frame::Other { kind, stream }
            }
            _ => Frame::Other { kind, stream },
        })
    }

    /// Reads until the server says something about `stream` (or about the connection).
    pub fn answer(&mut self, stream: u32) -> Answer {
        loop {
            match self.read_frame() {
                Ok(Frame::Headers {
                    stream: s, status, ..
                }) if s == stream => {
                    return Answer::Status(status);
                }
                Ok(Frame::Reset { stream: s, code }) if s == stream => return Answer::Reset(code),
                Ok(Frame::GoAway { code, debug, .. }) => {
                    return Answer::GoAway {
                        code,
                        debug: String::from_utf8_lossy(&debug).into_owned(),
                    };
                }
                Ok(_) => {}
                Err(e) => return Answer::Closed(e.to_string()),
            }
        }
    }

    /// Reads until the connection ends; returns the GOAWAY seen on the way, if any.
    pub fn until_closed(&mut self) -> (Option<(u32, String)>, io::Error) {
        self.acknowledging = false;
        // What a failed write left queued (the tail of a flood the server stopped reading)
        // will never be read: drop it, or rustls tries to flush it before every read and each
        // read fails with the write's error instead of returning what the server sent.
        while self.tls.conn.wants_write() {
            if let Err(e) = self.tls.conn.write_tls(&mut io::sink()) {
                return (None, e);
            }
        }
        let mut goaway = None;
        loop {
            match self.read_frame() {
                Ok(Frame::GoAway { code, debug, .. }) => {
                    goaway = Some((code, String::from_utf8_lossy(&debug).into_owned()));
                }
                Ok(_) => {}
                Err(e) => return (goaway, e),
            }
        }
    }

    /// Sends a PING and reads until its ACK: every frame sent before it has been processed.
    /// Returns the frames read on the way.
    pub fn sync(&mut self) -> io::Result<Vec<Frame>> {
        const TOKEN: &[u8; 8] = b"zringsyn";
        self.write(&frame(PING, 0, 0, TOKEN))?;
        let mut seen = Vec::new();
        loop {
            let (head, payload) = self.read_raw()?;
            if head[3] == PING && head[4] & ACK != 0 && payload == TOKEN {
                return Ok(seen);
            }
            seen.push(self.parse(head, payload)?);
        }
    }
}

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    assert!(len < 1 << 24, "frame too long");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A HEADERS frame carrying `fields` (END_HEADERS set).
pub fn headers(stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame(HEADERS, flags, stream, &block(fields))
}

/// A CONNECT request for `authority` with no other field.
pub fn connect(stream: u32, authority: &str) -> Vec<u8> {
    headers(
        stream,
        &[(":method", "CONNECT"), (":authority", authority)],
        false,
    )
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn data(stream: u32, payload: &[u8], end_stream: bool) -> Vec<u8> {
    frame(
        DATA,
        if end_stream { END_STREAM } else { 0 },
        stream,
        payload,
    )
}

/// An HPACK header block of literals without indexing, new names.
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        string(&mut out, name.as_bytes());
        string(&mut out, value.as_bytes());
    }
    out
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, 0x00, 7, s.len());
    out.extend_from_slice(s);
}

/// RFC 7541 §5.1 integer with an `n`-bit prefix; `first` holds the bits above the prefix.
fn integer(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// HPACK decoding, enough for responses: the static table, a dynamic table, literals, and
/// Huffman strings made of the characters a status code or a short header uses.
#[derive(Default)]
struct Decoder {
    dynamic: Vec<(String, String)>,
}

impl Decoder {
    fn decode(&mut self, mut b: &[u8]) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        while let Some(&first) = b.first() {
            if first & 0x80 != 0 {
                let (i, rest) = read_int(b, 7);
                b = rest;
                fields.push(self.entry(i));
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update.
                let (size, rest) = read_int(b, 5);
                b = rest;
                if size == 0 {
                    self.dynamic.clear();
                }
            } else {
                let (index, prefix) = if first & 0x40 != 0 {
                    (true, 6)
                } else {
                    (false, 4)
                };
                let (i, rest) = read_int(b, prefix);
                b = rest;
                let name = if i == 0 {
                    let (n, rest) = read_string(b);
                    b = rest;
                    n
                } else {
                    self.entry(i).0
                };
                let (value, rest) = read_string(b);
                b = rest;
                if index {
                    self.dynamic.insert(0, (name.clone(), value.clone()));
                }
                fields.push((name, value));
            }
        }
        fields
    }

    fn entry(&self, i: usize) -> (String, String) {
        if let Some((n, v)) = i.checked_sub(1).and_then(|i| STATIC.get(i)) {
            return (n.to_string(), v.to_string());
        }
        self.dynamic
            .get(i - STATIC.len() - 1)
            .cloned()
            .unwrap_or_else(|| panic!("HPACK index {i} is in no table"))
    }
}

fn read_int(b: &[u8], n: u32) -> (usize, &[u8]) {
    let max = (1usize << n) - 1;
    let mut v = usize::from(b[0]) & max;
    let mut rest = &b[1..];
    if v < max {
        return (v, rest);
    }
    let mut shift = 0;
    loop {
        let c = rest[0];
        rest = &rest[1..];
        v += usize::from(c & 0x7f) << shift;
        shift += 7;
        if c & 0x80 == 0 {
            return (v, rest);
        }
    }
}

fn read_string(b: &[u8]) -> (String, &[u8]) {
    let huffman = b[0] & 0x80 != 0;
    let (len, rest) = read_int(b, 7);
    let (s, rest) = rest.split_at(len);
    let s = if huffman {
        huffman_decode(s)
    } else {
        String::from_utf8_lossy(s).into_owned()
    };
    (s, rest)
}

/// The RFC 7541 Huffman codes of digits (all a status code needs).
const HUFFMAN: &[(u32, u32, char)] = &[
    (0x0, 5, '0'),
    (0x1, 5, '1'),
    (0x2, 5, '2'),
    (0x19, 6, '3'),
    (0x1a, 6, '4'),
    (0x1b, 6, '5'),
    (0x1c, 6, '6'),
    (0x1d, 6, '7'),
    (0x1e, 6, '8'),
    (0x1f, 6, '9'),
];

fn huffman_decode(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut acc, mut bits) = (0u64, 0u32);
    let mut input = bytes.iter();
    loop {
        while bits < 32 {
            match input.next() {
                Some(&b) => {
                    acc = acc << 8 | u64::from(b);
                    bits += 8;
                }
                None => break,
            }
        }
        let found = HUFFMAN.iter().find(|(code, len, _)| {
            *len <= bits && (acc >> (bits - len)) & ((1 << len) - 1) == u64::from(*code)
        });
        match found {
            Some((_, len, c)) => {
                out.push(*c);
                bits -= len;
                acc &= (1 << bits) - 1;
            }
            None => {
                // What is left must be EOS padding: fewer than 8 one-bits.
                assert!(
                    bits < 8 && acc == (1 << bits) - 1,
                    "Huffman string outside this decoder's alphabet: {bytes:02x?}"
                );
                return out;
            }
        }
    }
}

const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_huffman_digits_round_trip() {
        for v in [0usize, 1, 126, 127, 128, 300, 16_384, 1 << 20] {
            let mut out = Vec::new();
            integer(&mut out, 0, 7, v);
            assert_eq!(read_int(&out, 7), (v, &[][..]));
        }
        // "503" and "431" as h2's encoder writes them (RFC 7541 Appendix B codes, EOS padded).
        assert_eq!(huffman_decode(&[0x6c, 0x0c, 0xff]), "503");
        assert_eq!(huffman_decode(&[0x69, 0x90, 0xff]), "431");
        assert_eq!(huffman_decode(&[0x10, 0x01]), "200");
        let mut d = Decoder::default();
        assert_eq!(d.decode(&[0x88]), [(":status".into(), "200".into())]);
        assert_eq!(
            d.decode(&[0x48, 0x83, 0x6c, 0x0c, 0xff]),
            [(":status".into(), "503".into())]
        );
        assert_eq!(d.decode(&[0xbe]), [(":status".into(), "503".into())]);
    }
}

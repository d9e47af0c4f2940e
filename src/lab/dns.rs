//! A minimal DNS client for lab tests: builds a query, asks a server over UDP or TCP from the
//! calling thread's namespace (run it inside a pod with `Pod::run`), and reads the answer's
//! header and A/AAAA records. Test code only: it trusts the answer's framing and panics on a
//! malformed one (zring's own parser, `dns::wire`, is what faces hostile input).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use super::Netns;

/// A record type: `A`.
pub const A: u16 = 1;
/// A record type: `AAAA`.
pub const AAAA: u16 = 28;

/// A recursion-desired query for `name` (dotted, no trailing dot) of type `qtype`, class IN.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        m.push(u8::try_from(label.len()).expect("a label under 64 bytes"));
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// What a test reads off an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub id: u16,
    pub rcode: u16,
    /// The answer section's record count (CNAMEs included).
    pub answers: u16,
    /// The A and AAAA addresses of the answer section, in order.
    pub addresses: Vec<IpAddr>,
}

/// The id, rcode and A/AAAA addresses of answer `m` (what most assertions compare).
pub fn addresses(m: &[u8]) -> (u16, u16, Vec<IpAddr>) {
    let a = answer(m);
    (a.id, a.rcode, a.addresses)
}

/// Reads `m`'s header and the A/AAAA records of its answer section.
pub fn answer(m: &[u8]) -> Answer {
    let word = |i: usize| u16::from_be_bytes([m[i], m[i + 1]]);
    let skip_name = |mut at: usize| loop {
        let len = usize::from(m[at]);
        if len & 0xc0 == 0xc0 {
            return at + 2;
        }
        if len == 0 {
            return at + 1;
        }
        at += 1 + len;
    };
    let mut at = 12;
    for _ in 0..word(4) {
        at = skip_name(at) + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..word(6) {
        let record = skip_name(at);
        let (rtype, rdlen) = (word(record), usize::from(word(record + 8)));
        let rdata = &m[record + 10..record + 10 + rdlen];
        if let Ok(v4) = <[u8; 4]>::try_from(rdata)
            && rtype == A
        {
            addresses.push(IpAddr::from(v4));
        }
        if let Ok(v6) = <[u8; 16]>::try_from(rdata)
            && rtype == AAAA
        {
            addresses.push(IpAddr::from(v6));
        }
        at = record + 10 + rdlen;
    }
    Answer {
        id: word(0),
        rcode: word(2) & 0xf,
        answers: word(6),
        addresses,
    }
}

/// Asks `server` over UDP; `None` when no answer came within 3 s. The answer must come from
/// the address asked (a redirected query answered from elsewhere would be dropped by a real
/// resolver).
pub fn udp_ask(server: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let s = UdpSocket::bind(any).expect("a UDP socket");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("a read timeout");
    s.send_to(msg, server).expect("sending the query");
    let mut buf = vec![0u8; 65536];
    let (n, from) = s.recv_from(&mut buf).ok()?;
    assert_eq!(from, server, "answered from the address asked");
    buf.truncate(n);
    Some(buf)
}

/// Asks `server` over TCP (length-prefixed); panics when it does not answer within 5 s.
pub fn tcp_ask(server: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(3)).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    let len = u16::try_from(msg.len()).expect("a query under 64 KiB");
    s.write_all(&len.to_be_bytes()).expect("sending the length");
    s.write_all(msg).expect("sending the query");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("the answer's length");
    let mut a = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut a).expect("the answer");
    a
}

/// [`udp_ask`] from inside `ns` (a pod derefs to its namespace).
pub fn udp_ask_in(ns: &Netns, server: SocketAddr, msg: Vec<u8>) -> Option<Vec<u8>> {
    ns.run(move || udp_ask(server, &msg))
}

/// [`tcp_ask`] from inside `ns`.
pub fn tcp_ask_in(ns: &Netns, server: SocketAddr, msg: Vec<u8>) -> Vec<u8> {
    ns.run(move || tcp_ask(server, &msg))
}

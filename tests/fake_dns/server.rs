//! A small DNS server and client of the tests' own, independent of zring's codec: the server
//! answers A and AAAA from a table over UDP and TCP inside a lab namespace and counts what it
//! was asked; the client builds queries and reads answers. Shared by `tests/hostname_workload.rs`
//! and `tests/dns_flood.rs` (`#[path]`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};

use zring::lab::Netns;

/// What the server says about a name.
#[derive(Debug, Clone)]
pub enum Reply {
    /// These addresses (those of the asked family), with this TTL.
    Addrs(Vec<IpAddr>, u32),
    NxDomain,
    /// No answer at all: the asker times out.
    Silent,
}

/// Names asked, with how often (lowercase, by "name/qtype").
#[derive(Debug, Default)]
pub struct Asked(Mutex<HashMap<String, u64>>);

impl Asked {
    pub fn count(&self, name: &str, qtype: u16) -> u64 {
        let m = self.0.lock().unwrap();
        m.get(&format!("{name}/{qtype}")).copied().unwrap_or(0)
    }

    fn note(&self, name: &str, qtype: u16) {
        let mut m = self.0.lock().unwrap();
        *m.entry(format!("{name}/{qtype}")).or_default() += 1;
    }
}

pub fn encode_name(name: &str, out: &mut Vec<u8>) {
    for l in name.trim_end_matches('.').split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    encode_name(name, &mut m);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    m
}

/// Reads an uncompressed or compressed name; returns it dotted and the offset after it.
pub fn read_name(m: &[u8], mut at: usize) -> (String, usize) {
    let mut labels = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = m[at] as usize;
        if len & 0xc0 == 0xc0 {
            end.get_or_insert(at + 2);
            at = ((len & 0x3f) << 8) | m[at + 1] as usize;
            continue;
        }
        if len == 0 {
            return (labels.join("."), end.unwrap_or(at + 1));
        }
        labels.push(String::from_utf8_lossy(&m[at + 1..at + 1 + len]).into_owned());
        at += 1 + len;
    }
    panic!("name loops");
}

/// (id, rcode, the A/AAAA addresses) of an answer.
pub fn read_answer(m: &[u8]) -> (u16, u16, Vec<IpAddr>) {
    let w = |i: usize| u16::from_be_bytes([m[i], m[i + 1]]);
    let mut at = 12;
    for _ in 0..w(4) {
        at = read_name(m, at).1 + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..w(6) {
        let (_, next) = read_name(m, at);
        let rdlen = w(next + 8) as usize;
        let rdata = &m[next + 10..next + 10 + rdlen];
        match rdlen {
            4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(rdata).unwrap())),
            16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(rdata).unwrap())),
            _ => {}
        }
        at = next + 10 + rdlen;
    }
    (w(0), w(2) & 0xf, ips)
}

/// The answer to query `q` from `table`; `None`: stay silent.
fn answer(q: &[u8], table: &dyn Fn(&str, u16) -> Reply, asked: &Asked) -> Option<Vec<u8>> {
    let (name, end) = read_name(q, 12);
    let name = name.to_ascii_lowercase();
    let qtype = u16::from_be_bytes([q[end], q[end + 1]]);
    asked.note(&name, qtype);
    let mut out = q[..end + 4].to_vec();
    out[2] = 0x81;
    out[3] = 0x80;
    out[6..12].copy_from_slice(&[0; 6]);
    match table(&name, qtype) {
        Reply::Silent => return None,
        Reply::NxDomain => out[3] |= 3,
        Reply::Addrs(ips, ttl) => {
            let ips: Vec<IpAddr> = ips
                .into_iter()
                .filter(|ip| ip.is_ipv6() == (qtype == 28))
                .collect();
            out[6..8].copy_from_slice(&(ips.len() as u16).to_be_bytes());
            for ip in ips {
                let (t, data) = match ip {
                    IpAddr::V4(v4) => (1u16, v4.octets().to_vec()),
                    IpAddr::V6(v6) => (28, v6.octets().to_vec()),
                };
                out.extend_from_slice(&[0xc0, 12]);
                out.extend_from_slice(&t.to_be_bytes());
                out.extend_from_slice(&[0, 1]);
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(&data);
            }
        }
    }
    Some(out)
}

/// Serves `table` on UDP and TCP port 53 of `addr` inside `ns`, on threads of its own, for
/// the rest of the test process.
pub fn serve(
    ns: &Netns,
    addr: IpAddr,
    table: impl Fn(&str, u16) -> Reply + Send + Sync + 'static,
) -> Arc<Asked> {
    let at = SocketAddr::new(addr, 53);
    let (udp, tcp) = ns.run(move || (UdpSocket::bind(at).unwrap(), TcpListener::bind(at).unwrap()));
    let asked = Arc::new(Asked::default());
    let table = Arc::new(table);
    let (asked2, table2) = (asked.clone(), table.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            if let Some(a) = answer(&buf[..n], &*table2, &asked2) {
                let _ = udp.send_to(&a, from);
            }
        }
    });
    let asked2 = asked.clone();
    std::thread::spawn(move || {
        for mut s in tcp.incoming().flatten() {
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut q).is_err() {
                continue;
            }
            if let Some(a) = answer(&q, &*table, &asked2) {
                let _ = s.write_all(&[(a.len() >> 8) as u8, a.len() as u8]);
                let _ = s.write_all(&a);
            }
        }
    });
    asked
}

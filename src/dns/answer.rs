//! The client side of the codec, for zring's own lookups (`ondemand`): building a query for one
//! name and reading the addresses out of an upstream's answer. Pure; runs on whichever core
//! resolves.
//!
//! An answer is read defensively, like a query (`wire`): names through `wire::Name::parse`
//! (bounded, pointers only backwards), counts believed only as far as the bytes go, and the
//! addresses taken only from records owned by the question's name or by a name the CNAME chain
//! from it reaches (at most [`MAX_CHAIN`] links), so records about other names a server adds
//! cannot steer a connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::wire::{
    CLASS_IN, FLAG_RD, FLAG_TC, HEADER_LEN, Header, Name, TYPE_A, TYPE_AAAA, TYPE_CNAME, WireError,
};

/// CNAME links followed from the question's name.
pub const MAX_CHAIN: usize = 8;
/// Answer records read, at most (a larger answer is read up to here).
pub const MAX_RECORDS: usize = 256;

/// A standard recursive query for `name`, type `qtype`, class IN, under `id`.
pub fn query(id: u16, name: &Name, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + name.wire().len() + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&FLAG_RD.to_be_bytes());
    // One question, no other section.
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(name.wire());
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// What an answer says about the question's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// The response code (the low four bits; extended rcodes are not read).
    pub rcode: u8,
    /// TC: the server had more to say than fits over UDP.
    pub truncated: bool,
    /// Addresses of the asked type, in the order sent.
    pub addrs: Vec<IpAddr>,
    /// The smallest TTL of the records used (the chain's and the addresses'); `None` when no
    /// record was used.
    pub ttl: Option<u32>,
}

/// One answer-section record: its owner, type, TTL and where its data lies in the message.
struct Rr {
    owner: Name,
    rtype: u16,
    class: u16,
    ttl: u32,
    data: std::ops::Range<usize>,
}

/// Reads the addresses of type `qtype` (A or AAAA) for `name` from `msg`, an answer already
/// checked to answer the question (`wire::answers`).
pub fn addresses(msg: &[u8], name: &Name, qtype: u16) -> Result<Addresses, WireError> {
    let h = Header::parse(msg)?;
    let mut at = HEADER_LEN;
    // Past the questions (one, in any answer that passed `wire::answers`).
    for _ in 0..h.qdcount.min(1) {
        let (_, end) = Name::parse(msg, at)?;
        at = end + 4;
        if at > msg.len() {
            return Err(WireError::Truncated("a question"));
        }
    }
    let mut records = Vec::new();
    for _ in 0..usize::from(h.ancount).min(MAX_RECORDS) {
        let (owner, end) = Name::parse(msg, at)?;
        let fixed = msg
            .get(end..end + 10)
            .ok_or(WireError::Truncated("a record"))?;
        let w = |i: usize| u16::from_be_bytes([fixed[i], fixed[i + 1]]);
        let len = usize::from(w(8));
        let data = end + 10..end + 10 + len;
        if data.end > msg.len() {
            return Err(WireError::Truncated("record data"));
        }
        at = data.end;
        records.push(Rr {
            owner,
            rtype: w(0),
            class: w(2),
            ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            data,
        });
    }
    // The names that stand for the question: itself and its CNAME chain, whatever the order
    // the server sent the records in.
    let mut chain = vec![name.clone()];
    let mut ttl: Option<u32> = None;
    while chain.len() <= MAX_CHAIN {
        let last = chain.last().expect("never empty");
        let next = records
            .iter()
            .find(|r| r.rtype == TYPE_CNAME && r.class == CLASS_IN && same_name(&r.owner, last));
        let Some(r) = next else { break };
        let (target, end) = Name::parse(msg, r.data.start)?;
        if end > r.data.end || chain.iter().any(|n| same_name(n, &target)) {
            break;
        }
        ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
        chain.push(target);
    }
    let mut addrs = Vec::new();
    let mut addr_ttl: Option<u32> = None;
    for r in &records {
        if r.rtype != qtype || r.class != CLASS_IN || !chain.iter().any(|n| same_name(n, &r.owner))
        {
            continue;
        }
        let data = &msg[r.data.clone()];
        let ip = match (qtype, data.len()) {
            (TYPE_A, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (TYPE_AAAA, 16) => {
                let octets: [u8; 16] = data.try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            _ => continue,
        };
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
        addr_ttl = Some(addr_ttl.map_or(r.ttl, |t| t.min(r.ttl)));
    }
    let ttl = match (addr_ttl, ttl) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    };
    Ok(Addresses {
        rcode: h.rcode(),
        truncated: h.flags & FLAG_TC != 0,
        addrs,
        ttl,
    })
}

fn same_name(a: &Name, b: &Name) -> bool {
    a.wire().eq_ignore_ascii_case(b.wire())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{self, Query, Rcode, Record};

    fn name(s: &str) -> Name {
        Name::from_dotted(s).unwrap()
    }

    #[test]
    fn a_query_parses_back_as_the_question() {
        let q = query(0x4242, &name("db.example.com"), TYPE_AAAA);
        let parsed = Query::parse(&q).unwrap();
        assert_eq!(parsed.header.id, 0x4242);
        assert_eq!(parsed.header.flags, FLAG_RD);
        assert_eq!(parsed.question.name, name("db.example.com"));
        assert_eq!(parsed.question.qtype, TYPE_AAAA);
        assert_eq!(parsed.question.qclass, CLASS_IN);
    }

    /// An answer built by the proxy's own writer (compression included) reads back: the
    /// CNAME chain is followed, records for other names are ignored, the TTL is the smallest.
    #[test]
    fn reads_addresses_through_the_cname_chain() {
        let q = Query::parse(&query(7, &name("db.example.com"), TYPE_A)).unwrap();
        let records = [
            Record::Cname {
                owner: name("db.example.com"),
                target: name("real.example.net"),
            },
            Record::Addr {
                owner: name("REAL.example.net"),
                ip: "192.0.2.7".parse().unwrap(),
            },
            Record::Addr {
                owner: name("other.example.org"),
                ip: "192.0.2.66".parse().unwrap(),
            },
            Record::Addr {
                owner: name("real.example.net"),
                ip: "fd00::1".parse().unwrap(),
            },
        ];
        let msg = wire::response(&q, Rcode::NoError, false, &records, wire::MAX_TCP_SIZE);
        let a = addresses(&msg, &name("db.example.com"), TYPE_A).unwrap();
        assert_eq!(a.rcode, 0);
        assert!(!a.truncated);
        assert_eq!(a.addrs, vec!["192.0.2.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.ttl, Some(wire::TTL));
        let aaaa = addresses(&msg, &name("db.example.com"), TYPE_AAAA).unwrap();
        assert_eq!(aaaa.addrs, vec!["fd00::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn nxdomain_and_nodata_carry_no_address() {
        let q = Query::parse(&query(7, &name("nope.example.com"), TYPE_A)).unwrap();
        let msg = wire::response(&q, Rcode::NxDomain, false, &[], 512);
        let a = addresses(&msg, &name("nope.example.com"), TYPE_A).unwrap();
        assert_eq!((a.rcode, a.addrs.len(), a.ttl), (3, 0, None));
    }

    #[test]
    fn a_cname_loop_ends() {
        // a → b → a: both links are read once, then the chain stops.
        let q = Query::parse(&query(7, &name("a.test"), TYPE_A)).unwrap();
        let records = [
            Record::Cname {
                owner: name("a.test"),
                target: name("b.test"),
            },
            Record::Cname {
                owner: name("b.test"),
                target: name("a.test"),
            },
        ];
        let msg = wire::response(&q, Rcode::NoError, false, &records, 512);
        let a = addresses(&msg, &name("a.test"), TYPE_A).unwrap();
        assert!(a.addrs.is_empty());
        assert_eq!(a.ttl, Some(wire::TTL));
    }

    #[test]
    fn short_or_lying_answers_are_errors_not_panics() {
        let q = Query::parse(&query(7, &name("db.example.com"), TYPE_A)).unwrap();
        let records = [Record::Addr {
            owner: name("db.example.com"),
            ip: "192.0.2.7".parse().unwrap(),
        }];
        let msg = wire::response(&q, Rcode::NoError, false, &records, 512);
        for cut in 0..msg.len() {
            let _ = addresses(&msg[..cut], &name("db.example.com"), TYPE_A);
        }
        // An answer count far beyond the bytes.
        let mut lying = msg.clone();
        lying[6..8].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(addresses(&lying, &name("db.example.com"), TYPE_A).is_err());
    }
}

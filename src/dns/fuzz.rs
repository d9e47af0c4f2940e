//! The DNS parser's fuzz entry (`fuzz/fuzz_targets/dns_message.rs`, and the seed corpus test
//! through `fuzzing::dns_message`): any bytes, as a client's query, as an upstream's answer to a
//! forwarded query and to zring's own lookups (`answer`).
//! Panics only on a broken property. Pure; runs on the caller's thread.

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use super::answer;
use super::resolve::{self, Lookup, Settings};
use super::wire::{self, Header, Name, Query, Rcode, Record};
use crate::state::{NetworkAddress, PortMap, Service, Snapshot, SnapshotBuilder, Workload};

/// A small mesh the parsed names are resolved against.
fn snapshot() -> &'static (Snapshot, Workload) {
    static MESH: OnceLock<(Snapshot, Workload)> = OnceLock::new();
    MESH.get_or_init(|| {
        let client = Workload {
            uid: "Kubernetes//Pod/default/client".into(),
            name: "client".into(),
            namespace: "default".into(),
            workload_ips: vec![Ipv4Addr::new(10, 244, 1, 8).into()],
            ..Workload::default()
        };
        let mut b = SnapshotBuilder::new();
        b.add_workload(client.clone(), Vec::new());
        for (name, host, vip) in [
            ("appb", "appb.default.svc.cluster.local", "/10.96.0.9"),
            ("wild", "*.example.com", "/240.240.0.1"),
            ("many", "many.default.svc.cluster.local", "/fd00::1"),
        ] {
            b.add_service(Service {
                name: name.into(),
                namespace: "default".into(),
                hostname: host.into(),
                vips: vec![NetworkAddress::parse(vip).expect("a valid VIP")],
                ports: PortMap::from([(80, 80)]),
                ..Service::default()
            });
        }
        (b.build().expect("a valid snapshot"), client)
    })
}

/// Checks `data` as a query and as an answer (see the module doc).
pub fn message(data: &[u8]) {
    // Any name at any offset: an error or a bounded name, never a panic or a long loop.
    for at in 0..data.len().min(64) {
        if let Ok((name, end)) = Name::parse(data, at) {
            assert!(name.wire().len() <= wire::MAX_NAME);
            assert!(end <= data.len() && end > at);
        }
    }
    // As an upstream's answer to zring's own lookups (`ondemand`), for a fixed name and for
    // the name the message asks about.
    let asked = Name::from_dotted("db.example.com").expect("a valid name");
    for qtype in [wire::TYPE_A, wire::TYPE_AAAA] {
        if let Ok(a) = answer::addresses(data, &asked, qtype) {
            assert!(a.addrs.len() <= answer::MAX_RECORDS);
        }
    }
    let Ok(query) = Query::parse(data) else {
        let _ = wire::bare_error(data, Rcode::FormErr);
        return;
    };
    for qtype in [wire::TYPE_A, wire::TYPE_AAAA] {
        if let Ok(a) = answer::addresses(data, &query.question.name, qtype) {
            assert!(
                a.addrs
                    .iter()
                    .all(|ip| ip.is_ipv6() == (qtype == wire::TYPE_AAAA))
            );
        }
    }
    assert!(query.question_end <= data.len());
    let (snapshot, client) = snapshot();
    let lookup = resolve::lookup(
        snapshot,
        client,
        &query.question.name,
        query.question.qtype,
        &Settings::default(),
        data.len() as u64,
    );
    let records = match lookup {
        Lookup::Answer(records) => records,
        Lookup::Forward => vec![Record::Addr {
            owner: query.question.name.clone(),
            ip: Ipv4Addr::new(192, 0, 2, 1).into(),
        }],
    };
    for limit in [wire::PLAIN_UDP_SIZE, query.udp_limit(), wire::MAX_TCP_SIZE] {
        let out = wire::response(&query, Rcode::NoError, true, &records, limit);
        assert!(
            out.len() <= limit,
            "{} bytes over a limit of {limit}",
            out.len()
        );
        // What the proxy sends parses back as an answer to the query, same question.
        assert!(wire::answers(&query, &out), "not an answer to its query");
        let back = Query::parse(&out).expect("our answer parses");
        assert!(
            back.question
                .name
                .wire()
                .eq_ignore_ascii_case(query.question.name.wire())
        );
        let h = Header::parse(&out).expect("a header");
        assert!(h.is_response());
    }
    // A query never passes for an answer (to itself or anything else).
    if !query.header.is_response() {
        assert!(!wire::answers(&query, data), "a query taken for an answer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A cheap stand-in for the fuzzer in every `cargo test`: valid queries mutated at random
    /// (bytes flipped, cut, spliced, pointers planted) through the same checks.
    #[test]
    fn mutated_queries_keep_the_properties() {
        let seeds: Vec<Vec<u8>> = [
            ("appb", 1u16, None),
            ("appb.default.default.svc.cluster.local", 28, Some(1232u16)),
            ("a.b.example.com", 1, Some(4096)),
            ("many.default.svc.cluster.local", 28, None),
        ]
        .iter()
        .map(|(name, qtype, edns)| {
            let mut m = vec![
                0x12,
                0x34,
                0x01,
                0x00,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                u8::from(edns.is_some()),
            ];
            m.extend_from_slice(Name::from_dotted(name).unwrap().wire());
            m.extend_from_slice(&qtype.to_be_bytes());
            m.extend_from_slice(&[0, 1]);
            if let Some(size) = edns {
                m.extend_from_slice(&[0, 0, 41]);
                m.extend_from_slice(&size.to_be_bytes());
                m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            }
            m
        })
        .collect();
        let mut rng = Rng::new(0x5eed_d115);
        for i in 0..20_000u64 {
            let mut m = seeds[(i % seeds.len() as u64) as usize].clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(m.len() as u64) as usize;
                match rng.below(5) {
                    0 => m[at] = rng.next_u64() as u8,
                    1 => m.truncate(at),
                    2 => {
                        let p = rng.below(at.max(1) as u64) as u8;
                        m.splice(at..at, [0xc0, p]);
                    }
                    3 => m[at] ^= 0xc0,
                    _ => {
                        let tail = m[at..].to_vec();
                        m.extend_from_slice(&tail);
                    }
                }
                if m.is_empty() {
                    break;
                }
            }
            message(&m);
        }
    }
}

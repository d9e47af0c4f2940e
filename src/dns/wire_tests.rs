//! Tests of `dns::wire`: parsing and building DNS messages, hostile input included (pure).

use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A query for `name`/`qtype` with `id`, RD set, optionally with an OPT record of `edns` size.
pub(crate) fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    Header {
        id,
        flags: FLAG_RD,
        qdcount: 1,
        arcount: u16::from(edns.is_some()),
        ..Header::default()
    }
    .write(&mut out);
    out.extend_from_slice(Name::from_dotted(name).unwrap().wire());
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(size) = edns {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&size.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0x80, 0, 0, 0]);
    }
    out
}

#[test]
fn parses_a_query_with_edns() {
    let msg = query(0x1234, "AppB.default.svc.cluster.local", TYPE_A, Some(1232));
    let q = Query::parse(&msg).unwrap();
    assert_eq!(q.header.id, 0x1234);
    assert!(!q.header.is_response());
    assert_eq!(q.question.qtype, TYPE_A);
    assert_eq!(
        q.question.name.lookup_key().as_deref(),
        Some("appb.default.svc.cluster.local")
    );
    assert_eq!(q.question.name.display(), "AppB.default.svc.cluster.local.");
    assert_eq!(
        q.edns,
        Some(Edns {
            udp_size: 1232,
            version: 0,
            dnssec_ok: true
        })
    );
    assert_eq!(q.udp_limit(), 1232);
    let plain = Query::parse(&query(1, "a", TYPE_AAAA, None)).unwrap();
    assert_eq!(plain.udp_limit(), PLAIN_UDP_SIZE);
    let tiny = Query::parse(&query(1, "a", TYPE_A, Some(100))).unwrap();
    assert_eq!(
        tiny.udp_limit(),
        PLAIN_UDP_SIZE,
        "EDNS below 512 counts as 512"
    );
    let huge = Query::parse(&query(1, "a", TYPE_A, Some(65000))).unwrap();
    assert_eq!(huge.udp_limit(), MAX_UDP_SIZE);
}

#[test]
fn hostile_messages_are_errors_not_panics() {
    let good = query(7, "a.b.c", TYPE_A, Some(4096));
    // Every truncation of a valid message.
    for n in 0..good.len() {
        assert!(Query::parse(&good[..n]).is_err(), "accepted {n} bytes");
    }
    // A pointer to itself, and a pointer forwards.
    let mut looped = query(7, "a", TYPE_A, None);
    looped.truncate(HEADER_LEN);
    looped.extend_from_slice(&[0xc0, HEADER_LEN as u8, 0, 1, 0, 1]);
    assert_eq!(Query::parse(&looped), Err(WireError::PointerLoop));
    let mut forward = looped.clone();
    forward[HEADER_LEN + 1] = 40;
    assert_eq!(Query::parse(&forward), Err(WireError::PointerLoop));
    // Two names pointing at each other: the second's pointer goes forwards.
    let mut mutual = query(7, "a", TYPE_A, None);
    mutual.truncate(HEADER_LEN);
    mutual.extend_from_slice(&[1, b'x', 0xc0, 15, 0xc0, 12]);
    assert!(Query::parse(&mutual).is_err());
    // A name of 300 bytes.
    let mut long = query(7, "a", TYPE_A, None);
    long.truncate(HEADER_LEN);
    for _ in 0..5 {
        long.push(60);
        long.extend_from_slice(&[b'x'; 60]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(Query::parse(&long), Err(WireError::NameTooLong));
    // Extended label type.
    let mut ext = query(7, "a", TYPE_A, None);
    ext[HEADER_LEN] = 0x41;
    assert_eq!(Query::parse(&ext), Err(WireError::LabelType));
    // Huge counts with nothing behind them.
    let mut counts = query(7, "a", TYPE_A, None);
    counts[6..12].copy_from_slice(&[0xff; 6]);
    assert!(matches!(
        Query::parse(&counts),
        Err(WireError::Truncated(_))
    ));
    let mut questions = query(7, "a", TYPE_A, None);
    questions[4..6].copy_from_slice(&[0, 2]);
    assert_eq!(Query::parse(&questions), Err(WireError::QuestionCount(2)));
    questions[4..6].copy_from_slice(&[0, 0]);
    assert_eq!(Query::parse(&questions), Err(WireError::QuestionCount(0)));
    // Two OPT records.
    let mut two = query(7, "a", TYPE_A, Some(512));
    let opt = two[two.len() - 11..].to_vec();
    two.extend_from_slice(&opt);
    two[10..12].copy_from_slice(&[0, 2]);
    assert_eq!(Query::parse(&two), Err(WireError::DuplicateOpt));
    // Unknown type and class are carried.
    let mut odd = query(7, "a", 0xfffe, None);
    let n = odd.len();
    odd[n - 2..].copy_from_slice(&[0xab, 0xcd]);
    let q = Query::parse(&odd).unwrap();
    assert_eq!((q.question.qtype, q.question.qclass), (0xfffe, 0xabcd));
}

#[test]
fn compressed_names_are_followed() {
    // Question "x.a.b", then an additional record "y" + pointer to "a.b" (offset 14).
    let mut msg = query(1, "x.a.b", TYPE_A, None);
    msg[10..12].copy_from_slice(&[0, 1]);
    msg.extend_from_slice(&[1, b'y', 0xc0, 14]);
    msg.extend_from_slice(&[0, 16, 0, 1, 0, 0, 0, 0, 0, 1, b'z']);
    assert!(Query::parse(&msg).is_ok());
    let (name, end) = Name::parse(&msg, msg.len() - 15).unwrap();
    assert_eq!(name.lookup_key().as_deref(), Some("y.a.b"));
    assert_eq!(end, msg.len() - 11);
}

fn records(msg: &[u8]) -> Vec<(String, u16, Vec<u8>)> {
    let h = Header::parse(msg).unwrap();
    let (_, mut at) = Name::parse(msg, HEADER_LEN).unwrap();
    at += 4;
    let mut out = Vec::new();
    for _ in 0..h.ancount {
        let (owner, next) = Name::parse(msg, at).unwrap();
        let rtype = u16::from_be_bytes([msg[next], msg[next + 1]]);
        let rdlen = usize::from(u16::from_be_bytes([msg[next + 8], msg[next + 9]]));
        let rdata = msg[next + 10..next + 10 + rdlen].to_vec();
        let rdata = if rtype == TYPE_CNAME {
            let (target, _) = Name::parse(msg, next + 10).unwrap();
            target.display().into_bytes()
        } else {
            rdata
        };
        out.push((owner.display(), rtype, rdata));
        at = next + 10 + rdlen;
    }
    out
}

#[test]
fn builds_compressed_answers_with_cname_and_opt() {
    let msg = query(9, "AppB.ns1.ns1.svc.cluster.local", TYPE_A, Some(1232));
    let q = Query::parse(&msg).unwrap();
    let target = Name::from_dotted("AppB.ns1").unwrap();
    let recs = vec![
        Record::Cname {
            owner: q.question.name.clone(),
            target: target.clone(),
        },
        Record::Addr {
            owner: target.clone(),
            ip: Ipv4Addr::new(10, 0, 0, 1).into(),
        },
        Record::Addr {
            owner: target,
            ip: Ipv6Addr::LOCALHOST.into(),
        },
    ];
    let out = response(&q, Rcode::NoError, true, &recs, q.udp_limit());
    let h = Header::parse(&out).unwrap();
    assert_eq!(h.id, 9);
    assert!(h.is_response());
    assert_ne!(h.flags & FLAG_AA, 0);
    assert_ne!(h.flags & FLAG_RD, 0, "RD echoed");
    assert_eq!(h.flags & FLAG_TC, 0);
    assert_eq!((h.qdcount, h.ancount, h.arcount), (1, 3, 1));
    assert!(answers(&q, &out), "answers its own query");
    let got = records(&out);
    assert_eq!(got[0].0, "AppB.ns1.ns1.svc.cluster.local.");
    assert_eq!(got[0].1, TYPE_CNAME);
    assert_eq!(got[0].2, b"AppB.ns1.".to_vec());
    assert_eq!(got[1], ("AppB.ns1.".into(), TYPE_A, vec![10, 0, 0, 1]));
    assert_eq!(got[2].1, TYPE_AAAA);
    // Owner of the CNAME is a pointer to the question (2 bytes), so is the second A's owner.
    let uncompressed = 12 + 36 + 4 + (36 + 10 + 11) + (11 + 10 + 4) + (11 + 10 + 16) + 11;
    assert!(out.len() < uncompressed - 40, "{} bytes", out.len());
    // The OPT record: ours, at the end, DO echoed.
    let opt = &out[out.len() - 11..];
    assert_eq!(opt[..3], [0, 0, 41]);
    assert_eq!(u16::from_be_bytes([opt[3], opt[4]]), MAX_UDP_SIZE as u16);
    assert_eq!(opt[7], 0x80);
}

#[test]
fn oversized_udp_answers_set_tc_without_records() {
    let msg = query(3, "big.example", TYPE_A, None);
    let q = Query::parse(&msg).unwrap();
    let owner = q.question.name.clone();
    let recs: Vec<Record> = (0..100u8)
        .map(|i| Record::Addr {
            owner: owner.clone(),
            ip: Ipv4Addr::new(10, 0, 0, i).into(),
        })
        .collect();
    let udp = response(&q, Rcode::NoError, true, &recs, q.udp_limit());
    let h = Header::parse(&udp).unwrap();
    assert_ne!(h.flags & FLAG_TC, 0);
    assert_eq!(h.ancount, 0);
    assert!(udp.len() <= PLAIN_UDP_SIZE);
    let tcp = response(&q, Rcode::NoError, true, &recs, MAX_TCP_SIZE);
    let h = Header::parse(&tcp).unwrap();
    assert_eq!((h.flags & FLAG_TC, h.ancount), (0, 100));
    assert_eq!(records(&tcp).len(), 100);
}

#[test]
fn answers_checks_id_question_and_qr() {
    let q = Query::parse(&query(5, "x.example", TYPE_A, None)).unwrap();
    let ok = response(&q, Rcode::NxDomain, false, &[], 512);
    assert!(answers(&q, &ok));
    let mut other_id = ok.clone();
    set_id(&mut other_id, 6);
    assert!(!answers(&q, &other_id));
    let other_q = Query::parse(&query(5, "y.example", TYPE_A, None)).unwrap();
    assert!(!answers(&other_q, &ok));
    let not_response = query(5, "x.example", TYPE_A, None);
    assert!(!answers(&q, &not_response));
    // Case differences are fine (0x20 randomization, servers that lowercase).
    let upper = Query::parse(&query(5, "X.EXAMPLE", TYPE_A, None)).unwrap();
    assert!(answers(&upper, &ok));
    assert!(!answers(&q, &ok[..5]));
    let bare = bare_error(&not_response, Rcode::FormErr).unwrap();
    assert_eq!(bare.len(), HEADER_LEN);
    assert!(answers(&q, &bare), "an error without the question");
    assert_eq!(bare_error(&[1, 2, 3], Rcode::FormErr), None);
}

#[test]
fn name_text_forms() {
    assert_eq!(Name::root().lookup_key().as_deref(), Some(""));
    assert_eq!(Name::root().display(), ".");
    assert!(Name::from_dotted("a..b").is_none());
    assert!(Name::from_dotted(&"x".repeat(64)).is_none());
    let dotted = Name::parse(&[3, b'a', b'.', b'b', 0], 0).unwrap().0;
    assert_eq!(dotted.lookup_key(), None, "a dot inside a label");
    assert_eq!(dotted.display(), "a\\046b.");
}

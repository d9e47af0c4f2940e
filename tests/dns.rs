//! The DNS proxy on 15053 through real interfaces: zring in-pod on both lab nodes, appa's DNS
//! captured by istio-cni's in-pod rules (DNS capture on, ambient's default), a fake upstream
//! resolver in a pod outside the mesh (appc, node b; `ZRING_DNS_UPSTREAMS`).
//!
//! Checked: libc's resolver (`getent ahostsv4` with a pod resolv.conf: nameserver the cluster
//! DNS VIP, Kubernetes search list, ndots:5) resolves the service in every form a pod writes
//! and forwards the rest to the upstream; raw UDP and TCP queries (our own bytes, parsed
//! independently here) get the id echoed, AA, the CNAME form, EDNS, TC over UDP for a large
//! answer and the full answer over TCP; hostile queries (truncated, compression loops, huge
//! counts, responses, TC set, a flood of garbage) get FORMERR or nothing, are counted, and the
//! proxy answers normally afterwards; the `istio_dns_*` series name the client.
//!
//! Runs as root under `cargo test`. Waits are conditions with deadlines, never sleeps.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use zring::lab::cni::{self, InpodRules};
use zring::lab::{Lab, Mesh, Netns};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
/// On node b, outside the mesh: the upstream resolver.
const APPC: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 9);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
/// What pods have as their nameserver: never reached, the rules take it to 15053.
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// What the fake upstream answers for `external.test`.
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

fn config() -> String {
    let many: Vec<String> = (1..=40).map(|i| format!("\"/240.240.3.{i}\"")).collect();
    format!(
        r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  canonicalName: appa
  canonicalRevision: v1
  workloadIps: ["{APPA}"]
  protocol: HBONE
  node: a
  services: {{}}
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadIps: ["{APPB}"]
  protocol: HBONE
  node: b
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/{VIP}"]
  ports:
    8000: 80
- name: egress
  namespace: default
  hostname: "*.wild.example"
  vips: ["/240.240.0.1"]
  ports:
    443: 443
- name: many
  namespace: default
  hostname: many.example
  vips: [{}]
  ports:
    80: 80
policies: []
"#,
        many.join(", ")
    )
}

// ---- a tiny DNS client and server of the test's own (independent of zring's codec) ----

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for l in name.trim_end_matches('.').split('.') {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
}

fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    encode_name(name, &mut m);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&[0, 1]);
    if let Some(size) = edns {
        m.extend_from_slice(&[0, 0, 41]);
        m.extend_from_slice(&size.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    m
}

/// Reads a (possibly compressed) name; returns it dotted and the offset after it.
fn read_name(m: &[u8], mut at: usize) -> (String, usize) {
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

#[derive(Debug)]
struct Answer {
    id: u16,
    flags: u16,
    /// (owner, type, data: an IP or a CNAME target)
    records: Vec<(String, u16, String)>,
    additional: u16,
}

impl Answer {
    fn rcode(&self) -> u16 {
        self.flags & 0xf
    }
    fn aa(&self) -> bool {
        self.flags & 0x0400 != 0
    }
    fn tc(&self) -> bool {
        self.flags & 0x0200 != 0
    }
    fn ips(&self) -> Vec<String> {
        self.records
            .iter()
            .filter(|r| r.1 == 1 || r.1 == 28)
            .map(|r| r.2.clone())
            .collect()
    }
}

fn parse(m: &[u8]) -> Answer {
    let w = |i: usize| u16::from_be_bytes([m[i], m[i + 1]]);
    let (qd, an) = (w(4), w(6));
    let mut at = 12;
    for _ in 0..qd {
        at = read_name(m, at).1 + 4;
    }
    let mut records = Vec::new();
    for _ in 0..an {
        let (owner, next) = read_name(m, at);
        let rtype = w(next);
        let rdlen = w(next + 8) as usize;
        let rdata = &m[next + 10..next + 10 + rdlen];
        let data = match rtype {
            1 => Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]).to_string(),
            5 => read_name(m, next + 10).0,
            _ => format!("{rdata:?}"),
        };
        records.push((owner, rtype, data));
        at = next + 10 + rdlen;
    }
    Answer {
        id: w(0),
        flags: w(2),
        records,
        additional: w(10),
    }
}

/// The fake upstream: `external.test` → [`EXTERNAL`], `big.test` → 60 addresses (TC over UDP),
/// NXDOMAIN for the rest. Counts the queries it got.
fn upstream(ns: &Netns, seen: Arc<AtomicU64>) {
    let (udp, tcp) = ns.run(|| {
        (
            UdpSocket::bind("0.0.0.0:53").unwrap(),
            TcpListener::bind("0.0.0.0:53").unwrap(),
        )
    });
    let answer = |q: &[u8], udp: bool| -> Vec<u8> {
        let (name, end) = read_name(q, 12);
        let mut out = q[..end + 4].to_vec();
        out[2] = 0x81;
        out[3] = 0x80;
        out[6..12].copy_from_slice(&[0; 6]);
        let ips: Vec<Ipv4Addr> = match name.to_ascii_lowercase().as_str() {
            "external.test" => vec![EXTERNAL],
            "big.test" => (0..60).map(|i| Ipv4Addr::new(192, 0, 2, i)).collect(),
            _ => {
                out[3] |= 3;
                vec![]
            }
        };
        if udp && ips.len() > 20 {
            out[2] |= 0x02;
            return out;
        }
        out[6..8].copy_from_slice(&(ips.len() as u16).to_be_bytes());
        for ip in ips {
            out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            out.extend_from_slice(&ip.octets());
        }
        out
    };
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            seen2.fetch_add(1, Ordering::Relaxed);
            let _ = udp.send_to(&answer(&buf[..n], true), from);
        }
    });
    std::thread::spawn(move || {
        for mut s in tcp.incoming().flatten() {
            seen.fetch_add(1, Ordering::Relaxed);
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            if s.read_exact(&mut q).is_err() {
                continue;
            }
            let a = answer(&q, false);
            let _ = s.write_all(&[(a.len() >> 8) as u8, a.len() as u8]);
            let _ = s.write_all(&a);
        }
    });
}

/// One UDP exchange from `ns` to the cluster DNS address (captured to 15053).
fn udp_ask(ns: &Netns, msg: Vec<u8>) -> Option<Vec<u8>> {
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(&msg, (CLUSTER_DNS, 53)).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.recv(&mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    })
}

/// One TCP exchange from `ns` to the cluster DNS address.
fn tcp_ask(ns: &Netns, msg: Vec<u8>) -> Vec<u8> {
    try_tcp_ask(ns, msg).unwrap()
}

/// One TCP exchange from `ns` to the cluster DNS address, or why it got no answer.
fn try_tcp_ask(ns: &Netns, msg: Vec<u8>) -> std::io::Result<Vec<u8>> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::from((CLUSTER_DNS, 53)),
            Duration::from_secs(3),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(&(msg.len() as u16).to_be_bytes())?;
        s.write_all(&msg)?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut a = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut a)?;
        Ok(a)
    })
}

/// `getent ahostsv4 NAME` in `ns` with a pod's resolv.conf (libc's resolver, as a pod has it).
fn getent(ns: &Netns, resolv: &Path, name: &str) -> Result<Vec<String>, String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && exec getent ahostsv4 {name}",
            resolv.display()
        ))
        .output()
        .map_err(|e| format!("ip netns exec: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "getent {name}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut ips: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

fn mesh() -> (Mesh, Arc<AtomicU64>) {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("b", "appc", APPC).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    upstream(lab.pod("appc").netns(), seen.clone());
    let m = Mesh::start_inpod(
        lab,
        Path::new(ZRING),
        &config(),
        &["a", "b"],
        &[("ZRING_DNS_UPSTREAMS", &format!("{APPC}:53"))],
    )
    .unwrap();
    // istio-cni's rules with DNS capture on, as ambient installs them by default.
    cni::install_rules(m.lab.pod("appa").netns(), InpodRules { dns: true }).unwrap();
    (m, seen)
}

#[test]
fn libc_resolves_services_in_every_form_and_forwards_the_rest() {
    let (m, seen) = mesh();
    let appa = m.lab.pod("appa").netns().clone();
    let resolv = m.lab.dir().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!(
            "nameserver {CLUSTER_DNS}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n\
             options ndots:5 timeout:2 attempts:2\n"
        ),
    )
    .unwrap();
    for name in [
        "appb",
        "appb.default",
        "appb.default.svc",
        "appb.default.svc.cluster.local",
        "appb.default.svc.cluster.local.",
    ] {
        assert_eq!(
            getent(&appa, &resolv, name),
            Ok(vec![VIP.to_string()]),
            "{name}"
        );
    }
    assert_eq!(
        getent(&appa, &resolv, "api.wild.example"),
        Ok(vec!["240.240.0.1".to_string()]),
        "a ServiceEntry wildcard host"
    );
    let before = seen.load(Ordering::Relaxed);
    assert_eq!(
        getent(&appa, &resolv, "external.test"),
        Ok(vec![EXTERNAL.to_string()]),
        "forwarded to the upstream"
    );
    assert!(
        seen.load(Ordering::Relaxed) > before,
        "the upstream was asked"
    );
    assert!(
        getent(&appa, &resolv, "nowhere.test").is_err(),
        "NXDOMAIN relayed"
    );

    // The DNS rules of the pod took the queries (not another resolver).
    let counters = cni::rule_counters(&appa).unwrap();
    let udp = counters.iter().find(|(n, _)| n == "dns-udp").unwrap().1;
    assert!(udp > 0, "{counters:?}");

    m.eventually("the istio_dns_* series", || {
        let s = m.scrape("a");
        let src = [
            ("source_canonical_service", "appa"),
            ("request_protocol", "udp"),
        ];
        s.sum("istio_dns_requests_total", &src) >= 8.0
            && s.sum("istio_dns_upstream_requests_total", &src) >= 1.0
            && s.sum("istio_dns_upstream_request_duration_seconds_count", &src) >= 1.0
    })
    .unwrap();
}

#[test]
fn raw_queries_udp_tcp_edns_cname_and_truncation() {
    let (m, _) = mesh();
    let appa = m.lab.pod("appa").netns().clone();

    let a = parse(
        &udp_ask(
            &appa,
            query(0xbeef, "appb.default.svc.cluster.local", 1, None),
        )
        .unwrap(),
    );
    assert_eq!((a.id, a.rcode()), (0xbeef, 0));
    assert!(a.aa(), "authoritative for the mesh's names");
    assert_eq!(a.ips(), [VIP.to_string()]);

    // The search-domain form: CNAME to the stripped name, then its address.
    let a = parse(
        &udp_ask(
            &appa,
            query(7, "appb.default.default.svc.cluster.local", 1, Some(1232)),
        )
        .unwrap(),
    );
    assert_eq!(a.records[0].1, 5, "{a:?}");
    assert_eq!(a.records[0].2, "appb.default");
    assert_eq!(a.records[1], ("appb.default".into(), 1, VIP.to_string()));
    assert_eq!(a.additional, 1, "an OPT record for an EDNS query");

    // An IPv4-only service asked for AAAA: the name exists, no records.
    let a = parse(&udp_ask(&appa, query(8, "appb", 28, None)).unwrap());
    assert_eq!((a.rcode(), a.records.len()), (0, 0));

    // 40 VIPs do not fit in 512 bytes: TC over UDP, all of them over TCP.
    let a = parse(&udp_ask(&appa, query(9, "many.example", 1, None)).unwrap());
    assert!(a.tc() && a.records.is_empty(), "{a:?}");
    let a = parse(&tcp_ask(&appa, query(10, "many.example", 1, None)));
    assert_eq!((a.id, a.ips().len()), (10, 40));
    assert!(!a.tc());

    // Forwarded: over UDP, then TC from upstream relayed, then over TCP.
    let a = parse(&udp_ask(&appa, query(11, "external.test", 1, None)).unwrap());
    assert_eq!((a.id, a.ips()), (11, vec![EXTERNAL.to_string()]));
    assert!(!a.aa());
    let a = parse(&udp_ask(&appa, query(12, "big.test", 1, None)).unwrap());
    assert!(a.tc(), "upstream's TC relayed: {a:?}");
    let a = parse(&tcp_ask(&appa, query(13, "big.test", 1, None)));
    assert_eq!((a.id, a.ips().len()), (13, 60));
    let a = parse(&tcp_ask(&appa, query(14, "nowhere.test", 1, None)));
    assert_eq!((a.id, a.rcode()), (14, 3));
}

#[test]
fn hostile_queries_are_refused_counted_and_survived() {
    let (m, _) = mesh();
    let appa = m.lab.pod("appa").netns().clone();
    let good = query(1, "appb", 1, None);
    // Truncated in the question: FORMERR with the id.
    let a = parse(&udp_ask(&appa, good[..good.len() - 2].to_vec()).unwrap());
    assert_eq!((a.id, a.rcode()), (1, 1));
    // A compression pointer to itself.
    let mut looped = good[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(parse(&udp_ask(&appa, looped).unwrap()).rcode(), 1);
    // Huge counts with nothing behind them.
    let mut counts = good.clone();
    counts[6..12].copy_from_slice(&[0xff; 6]);
    assert_eq!(parse(&udp_ask(&appa, counts).unwrap()).rcode(), 1);
    // TC set in a query.
    let mut tc = good.clone();
    tc[2] |= 0x02;
    assert_eq!(parse(&udp_ask(&appa, tc).unwrap()).rcode(), 1);
    // Unknown type and class: forwarded, the upstream says NXDOMAIN; an unknown opcode: NOTIMP.
    let mut status = good.clone();
    status[2] = 0x10;
    assert_eq!(parse(&udp_ask(&appa, status).unwrap()).rcode(), 4);
    let mut odd = query(2, "appb", 0xfffe, None);
    let n = odd.len();
    odd[n - 2..].copy_from_slice(&[0, 3]);
    assert_eq!(parse(&udp_ask(&appa, odd).unwrap()).rcode(), 3);
    // A response sent as a query, and a runt: no answer at all.
    let mut response = good.clone();
    response[2] |= 0x80;
    assert_eq!(udp_ask(&appa, response), None);
    assert_eq!(udp_ask(&appa, vec![1, 2, 3]), None);
    // A flood of garbage from one socket, then a good query still gets its answer.
    appa.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..5000u32 {
            let mut junk = i.to_be_bytes().repeat(8);
            junk[2] = 0;
            let _ = s.send_to(&junk, (CLUSTER_DNS, 53));
        }
    });
    // A TCP client that sends half a message and stalls does not block others.
    let stalled = appa.run(|| {
        let mut s = TcpStream::connect((CLUSTER_DNS, 53)).unwrap();
        s.write_all(&[0, 200, 1, 2]).unwrap();
        s
    });
    // The flood may have filled the socket's receive buffer, where the kernel drops what
    // does not fit: like a resolver, ask again until answered.
    let mut answer = None;
    m.eventually("an answer after the flood", || {
        answer = udp_ask(&appa, good.clone());
        answer.is_some()
    })
    .unwrap();
    let a = parse(&answer.unwrap());
    assert_eq!((a.id, a.ips()), (1, vec![VIP.to_string()]));
    // The flood also spent this client's query allowance (`ZRING_DNS_CLIENT_QPS`), which
    // refills within milliseconds; a query over it is dropped, which over TCP closes the
    // connection: like a resolver, ask again.
    let mut answer = None;
    m.eventually("an answer over TCP beside the stalled client", || {
        answer = try_tcp_ask(&appa, good.clone()).ok();
        answer.is_some()
    })
    .unwrap();
    let a = parse(&answer.unwrap());
    assert_eq!(a.ips(), [VIP.to_string()]);
    drop(stalled);
    m.eventually("the rejections counted", || {
        let s = m.scrape("a");
        let r = |reason: &str| s.sum("zring_dns_rejected_total", &[("reason", reason)]);
        r("truncated") >= 2.0
            && r("compression_loop") >= 1.0
            && r("tc_query") >= 1.0
            && r("opcode") >= 1.0
            && r("response") >= 1.0
            && r("runt") >= 1.0
            && s.sum("zring_dns_error_answers_total", &[("rcode", "formerr")]) >= 4.0
    })
    .unwrap();
    assert!(!m.log("a").contains("panicked"), "{}", m.log("a"));
}

/// Node mode: the node's capture sends enrolled pods' DNS to the node's DNS proxy (UDP by
/// REDIRECT, TCP by TPROXY); the client is known by its source IP.
#[test]
fn node_mode_serves_enrolled_pods_dns() {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    lab.add_pod("b", "appc", APPC).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    upstream(lab.pod("appc").netns(), seen.clone());
    // DNS capture as `zring redirect` installs it with ISTIO_META_DNS_CAPTURE=true, in place
    // before zring starts (its capture watch takes the table it finds as its baseline).
    lab.capture_dns();
    let m = Mesh::start(
        lab,
        Path::new(ZRING),
        &config(),
        &["a", "b"],
        &[("ZRING_DNS_UPSTREAMS", &format!("{APPC}:53"))],
    )
    .unwrap();
    let appa = m.lab.pod("appa").netns().clone();
    let a = m
        .eventually("appa's DNS answered by the node's proxy", || {
            udp_ask(&appa, query(21, "appb", 1, None)).is_some()
        })
        .map(|()| parse(&udp_ask(&appa, query(21, "appb", 1, None)).unwrap()))
        .unwrap();
    assert_eq!((a.id, a.ips()), (21, vec![VIP.to_string()]));
    assert!(a.aa());
    let a = parse(&tcp_ask(&appa, query(22, "appb.default", 1, None)));
    assert_eq!((a.id, a.ips()), (22, vec![VIP.to_string()]));
    let a = parse(&udp_ask(&appa, query(23, "external.test", 1, None)).unwrap());
    assert_eq!(a.ips(), [EXTERNAL.to_string()]);
    let a = parse(&tcp_ask(&appa, query(24, "big.test", 1, None)));
    assert_eq!(a.ips().len(), 60);
    assert!(seen.load(Ordering::Relaxed) >= 2);
    m.eventually("the node's istio_dns_* series name appa", || {
        m.scrape("a").sum(
            "istio_dns_requests_total",
            &[("source_canonical_service", "appa")],
        ) >= 4.0
    })
    .unwrap();
}

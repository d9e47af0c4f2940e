//! `OnDemand` against a UDP DNS server on loopback (a thread of the test's), in a monoio
//! runtime: answers, the other family, NXDOMAIN and timeouts, caching and one lookup for many
//! askers.

use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use super::*;
use crate::dns::wire::{Rcode, Record};
use crate::metrics::dns::DnsMetrics;

type Asked = Arc<Mutex<HashMap<(String, u16), u32>>>;

/// Serves on 127.0.0.1: `db.test` A, `six.test` AAAA only, `gone.test` NXDOMAIN, `slow.test`
/// never answered, `many.test` A. Counts the questions.
fn server() -> (SocketAddr, Asked) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let asked: Asked = Arc::default();
    let seen = asked.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let Ok(q) = Query::parse(&buf[..n]) else {
                continue;
            };
            let name = q.question.name.lookup_key().unwrap_or_default();
            let qtype = q.question.qtype;
            *seen
                .lock()
                .unwrap()
                .entry((name.clone(), qtype))
                .or_default() += 1;
            let ip: Option<IpAddr> = match (name.as_str(), qtype) {
                ("db.test" | "many.test", TYPE_A) => Some("192.0.2.1".parse().unwrap()),
                ("six.test", TYPE_AAAA) => Some("fd00::1".parse().unwrap()),
                _ => None,
            };
            let (rcode, records) = match (name.as_str(), ip) {
                ("slow.test", _) => continue,
                ("gone.test", _) => (Rcode::NxDomain, vec![]),
                (_, Some(ip)) => (
                    Rcode::NoError,
                    vec![Record::Addr {
                        owner: q.question.name.clone(),
                        ip,
                    }],
                ),
                (_, None) => (Rcode::NoError, vec![]),
            };
            let out = wire::response(&q, rcode, false, &records, 512);
            let _ = socket.send_to(&out, from);
        }
    });
    (addr, asked)
}

fn count(asked: &Asked, name: &str, qtype: u16) -> u32 {
    let m = asked.lock().unwrap();
    m.get(&(name.to_owned(), qtype)).copied().unwrap_or(0)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap()
        .block_on(f)
}

fn resolver(upstreams: Vec<SocketAddr>) -> Rc<OnDemand> {
    Rc::new(OnDemand::new(
        upstreams,
        Duration::from_millis(300),
        0,
        DnsMetrics::default().attach(),
    ))
}

fn ips(list: &[&str]) -> Outcome {
    Ok(list.iter().map(|s| s.parse().unwrap()).collect())
}

#[test]
fn resolves_caches_and_falls_back_to_the_other_family() {
    let (addr, asked) = server();
    let od = resolver(vec![addr]);
    block_on(async {
        assert_eq!(od.cached("db.test", false, 0), None);
        assert_eq!(od.resolve("db.test", false, 1).await, ips(&["192.0.2.1"]));
        // Cached, in any case and with the trailing dot; the server is not asked again.
        assert_eq!(
            od.cached("DB.test.", false, 7),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(od.resolve("db.test.", false, 2).await, ips(&["192.0.2.1"]));
        assert_eq!(count(&asked, "db.test", TYPE_A), 1);
        // An IPv6-only name for an IPv4 connection: AAAA after an empty A.
        assert_eq!(od.resolve("six.test", false, 3).await, ips(&["fd00::1"]));
        assert_eq!(
            (
                count(&asked, "six.test", TYPE_A),
                count(&asked, "six.test", TYPE_AAAA)
            ),
            (1, 1)
        );
    });
}

#[test]
fn failures_are_refusals_remembered_briefly() {
    let (addr, asked) = server();
    let od = resolver(vec![addr]);
    block_on(async {
        assert_eq!(
            od.resolve("gone.test", false, 1).await,
            Err(Failure::NxDomain)
        );
        assert_eq!(
            od.resolve("gone.test", false, 2).await,
            Err(Failure::NxDomain)
        );
        assert_eq!(
            count(&asked, "gone.test", TYPE_A),
            1,
            "the failure was cached"
        );
        assert_eq!(od.cached("gone.test", false, 0), None);
        // A server that never answers: a timeout, not a hang.
        assert_eq!(
            od.resolve("slow.test", false, 3).await,
            Err(Failure::Timeout)
        );
        // No upstream at all.
        let none = resolver(Vec::new());
        assert_eq!(
            none.resolve("db.test", false, 4).await,
            Err(Failure::NoUpstream)
        );
        // Nothing listens at the first upstream: the next one answers.
        let dead = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let two = resolver(vec![dead, addr]);
        assert_eq!(two.resolve("db.test", false, 5).await, ips(&["192.0.2.1"]));
    });
}

#[test]
fn many_connections_asking_at_once_share_one_lookup() {
    let (addr, asked) = server();
    let od = resolver(vec![addr]);
    block_on(async {
        let tasks: Vec<_> = (0..20u64)
            .map(|i| {
                let od = od.clone();
                monoio::spawn(async move { od.resolve("many.test", false, i).await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await, ips(&["192.0.2.1"]));
        }
        assert_eq!(count(&asked, "many.test", TYPE_A), 1);
        assert_eq!(od.cache_len(), 1);
    });
}

/// A hostname that is not fully qualified goes through the resolv.conf's search domains, as
/// ztunnel's hickory resolver takes them: `db` is found as `db.test`; a failed name moves on
/// to the next (`gone.test` NXDOMAIN, then `gone`, which exists without addresses: NODATA is
/// reported); a timeout ends the lookup (`slow` is never asked); a fully qualified name is
/// asked alone.
#[test]
fn search_domains_of_the_resolv_conf_expand_short_names() {
    let (addr, asked) = server();
    let search = SearchList::parse("search test example.invalid\noptions ndots:2\n");
    let od = Rc::new(
        OnDemand::new(
            vec![addr],
            Duration::from_millis(300),
            0,
            DnsMetrics::default().attach(),
        )
        .with_search(search),
    );
    block_on(async {
        assert_eq!(od.resolve("db", false, 1).await, ips(&["192.0.2.1"]));
        assert_eq!(count(&asked, "db.test", TYPE_A), 1);
        assert_eq!(
            count(&asked, "db", TYPE_A),
            0,
            "found before the name as it is"
        );
        assert_eq!(od.resolve("gone", false, 2).await, Err(Failure::NoData));
        assert_eq!(count(&asked, "gone.test", TYPE_A), 1);
        assert_eq!(count(&asked, "gone.example.invalid", TYPE_A), 1);
        assert_eq!(count(&asked, "gone", TYPE_A), 1);
        assert_eq!(od.resolve("slow", false, 3).await, Err(Failure::Timeout));
        assert_eq!(
            count(&asked, "slow", TYPE_A),
            0,
            "a timeout ends the lookup"
        );
        assert_eq!(
            od.resolve("many.test.", false, 4).await,
            ips(&["192.0.2.1"])
        );
        assert_eq!(count(&asked, "many.test.test", TYPE_A), 0);
    });
}

/// `IPV6_ENABLED=false`: only A is asked, even for a v6 destination; a name with AAAA records
/// only has no address then.
#[test]
fn ipv6_disabled_asks_for_a_only() {
    let (addr, asked) = server();
    let od = Rc::new(
        OnDemand::new(
            vec![addr],
            Duration::from_millis(300),
            0,
            DnsMetrics::default().attach(),
        )
        .with_ipv6(false),
    );
    block_on(async {
        assert_eq!(od.resolve("six.test", true, 1).await, Err(Failure::NoData));
        assert_eq!(od.resolve("db.test", true, 2).await, ips(&["192.0.2.1"]));
        assert_eq!(count(&asked, "six.test", TYPE_AAAA), 0);
        assert_eq!(count(&asked, "db.test", TYPE_AAAA), 0);
    });
}

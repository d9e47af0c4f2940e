//! End to end, in network namespaces: a flood of metrics scrapes cannot delay configuration,
//! and cannot keep readiness probes or scrapes out.
//!
//! The admin, metrics and readiness servers run on their own thread with bounded connections
//! (`admin::server`), so while `/metrics` on node b is hammered by many concurrent scrapers and
//! held by half-sent requests (slowloris) beyond its connection cap, a policy change written to
//! node b's `LOCAL_XDS_PATH` (read by the control thread) still applies, and is seen applied
//! while the flood is still running.
//!
//! A full cap does not lock probes out (`admin::slots`): with both 15020 and 15021 filled with
//! slowloris connections from node b's own address (in node mode the kubelet probes from the
//! node, so the attacker can share its source address) and completed scrapes and probes
//! flooding them, every readiness probe and every scrape from that same address is answered,
//! and a policy change applies meanwhile.
//!
//! No wall-clock assertion: the change is waited for with the lab's generous deadline, and each
//! probe's socket timeouts (`lab::http::TIMEOUT`) only detect a failure; what is asserted is that
//! it applied while the flood went on (scrapes kept completing before and after it), that every
//! probe got its answer, and that the flood really exceeded the servers' caps.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use zring::lab::mesh::{READINESS_PORT, STATS_PORT, eventually};
use zring::lab::{Lab, Mesh, http};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
/// Concurrent scrapers, each scraping in a loop on a fresh connection.
const SCRAPERS: usize = 24;
/// Half-sent requests held open: alone, beyond a server's connection cap (so they also evict
/// each other). Scrapes still go on, taking the slots of the oldest ones.
const SLOWLORIS: usize = zring::admin::MAX_CONNECTIONS + 4;

const WORKLOADS: &str = r#"
workloads:
- { uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: ["10.244.1.8"], protocol: HBONE, node: a, services: {} }
- { uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: ["10.244.2.4"], protocol: HBONE, node: b, services: {} }
"#;

/// appa may no longer reach appb.
const DENY_APPA: &str = r#"
policies:
- name: deny-appa
  namespace: default
  scope: Namespace
  action: Deny
  dryRun: false
  rules:
  - - - principals:
        - !Exact cluster.local/ns/default/sa/appa
"#;

/// The flood: scrapers and held half-requests, from one node's namespace.
struct Flood {
    stop: Arc<AtomicBool>,
    /// Scrapes (or probes) that were answered 200.
    scrapes: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// `scrapers` threads GETting `/metrics` on `target` in a loop and [`SLOWLORIS`]
    /// half-requests held on it, from node a.
    fn start(m: &Mesh, target: SocketAddr) -> Flood {
        let mut f = Flood::new();
        for _ in 0..SCRAPERS {
            f.requests(m, "a", target, "/metrics");
        }
        f.slowloris(m, "a", target, SLOWLORIS);
        f
    }

    fn new() -> Flood {
        Flood {
            stop: Arc::new(AtomicBool::new(false)),
            scrapes: Arc::new(AtomicU64::new(0)),
            threads: Vec::new(),
        }
    }

    /// One thread requesting `path` from `target` in a loop, each on a fresh connection, from
    /// `node`'s namespace.
    fn requests(&mut self, m: &Mesh, node: &str, target: SocketAddr, path: &'static str) {
        let (stop, scrapes) = (self.stop.clone(), self.scrapes.clone());
        self.threads.push(m.lab.node(node).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Refused (the server is full) or answered: both are the flood.
                if let Ok(a) = http::get(target, path)
                    && a.status == 200
                {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    /// `n` half-sent requests held on `target` from `node`'s namespace.
    fn slowloris(&mut self, m: &Mesh, node: &str, target: SocketAddr, n: usize) {
        let held = self.stop.clone();
        self.threads.push(m.lab.node(node).spawn(move || {
            // Headers started, never finished; re-opened as the server closes them (its head
            // deadline, or a newcomer taking the slot), for as long as the flood runs.
            let mut open: Vec<TcpStream> = Vec::new();
            while !held.load(Ordering::Relaxed) {
                // Keep those the server has not closed (a read would block).
                open.retain_mut(|s| {
                    let mut b = [0u8; 1];
                    matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while open.len() < n {
                    let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(5))
                    else {
                        break;
                    };
                    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n");
                    let _ = s.set_nonblocking(true);
                    open.push(s);
                }
                #[expect(clippy::disallowed_methods, reason = "a test thread, not a core")]
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }

    fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }

    fn is_running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed) && self.threads.iter().all(|t| !t.is_finished())
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("flood thread");
        }
    }
}

#[test]
fn a_policy_change_applies_during_a_scrape_flood() {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    let m = Mesh::start(lab, Path::new(ZRING), WORKLOADS, &["a", "b"], &[]).unwrap();
    m.serve("appb", 80, 100).unwrap();
    m.must_exchange("appa", (APPB, 80).into(), 100, 100);

    // The servers have a thread of their own, beside the control thread.
    let pid = m.zring("b").pid();
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect();
    assert!(
        threads.iter().any(|t| t == "zring-admin") && threads.iter().any(|t| t == "zring"),
        "{threads:?}"
    );
    let b_metrics = SocketAddr::from((m.lab.node("b").underlay_ip(), STATS_PORT));
    let flood = Flood::start(&m, b_metrics);
    // The flood is on: scrapes are being answered, and the cap is being hit.
    eventually("scrapes answered under the flood", || {
        let n = flood.scrapes();
        (n >= 50).then_some(()).ok_or(format!("{n} scrapes"))
    });
    let before = flood.scrapes();

    std::fs::write(&m.config, format!("{WORKLOADS}{DENY_APPA}")).unwrap();
    m.eventually_logged("b", "policies=1", 1).unwrap();
    eventually("node b denies appa", || {
        match m.exchange("appa", (APPB, 80).into(), 100, 100) {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("still allowed: {r:?}")),
        }
    });
    // Applied while the flood still ran: its threads are all at work, and scrapes went on
    // being answered across the change.
    assert!(
        flood.is_running(),
        "the flood ended before the change applied"
    );
    let during = flood.scrapes() - before;
    assert!(during > 0, "no scrape answered while the change applied");
    eventually("scrapes still answered after the change", || {
        let n = flood.scrapes() - before;
        (n > during).then_some(()).ok_or(format!("{n}"))
    });
    assert!(flood.is_running());
    flood.stop();

    let log = m.log("b");
    assert!(
        log.contains("unauthorized: deny: policy default/deny-appa"),
        "the denial names the policy:\n{log}"
    );
    // The flood went beyond the metrics server's cap (newcomers there take the slots of
    // half-sent requests), and the server still serves after it.
    let s = m.scrape("b");
    let evicted = s.sum(
        "zring_admin_connections_evicted_total",
        &[("server", "metrics")],
    );
    let refused = s.sum(
        "zring_admin_connections_refused_total",
        &[("server", "metrics")],
    );
    assert!(evicted > 0.0, "the flood never reached the cap");
    eprintln!(
        "scrapes answered during the change: {during}; connections evicted at the cap: \
         {evicted}; refused: {refused}"
    );
}

/// Both of node b's caps full of slowloris connections from node b's own address, completed
/// scrapes and probes flooding both servers from there too: every readiness probe and every
/// scrape from that same address still gets its answer, and a policy change still applies.
#[test]
fn probes_and_scrapes_are_answered_with_the_caps_full() {
    const PROBES: usize = 30;
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    let m = Mesh::start(lab, Path::new(ZRING), WORKLOADS, &["a", "b"], &[]).unwrap();
    m.serve("appb", 80, 100).unwrap();
    m.must_exchange("appa", (APPB, 80).into(), 100, 100);
    let ip = m.lab.node("b").underlay_ip();
    let (metrics, ready) = (
        SocketAddr::from((ip, STATS_PORT)),
        SocketAddr::from((ip, READINESS_PORT)),
    );
    // The kubelet's view before the attack.
    let probe = move || http::get(ready, "/healthz/ready");
    let a = m.lab.node("b").run(probe).unwrap();
    assert_eq!((a.status, a.body.as_str()), (200, "ready\n"));

    let mut flood = Flood::new();
    flood.slowloris(&m, "b", metrics, SLOWLORIS);
    flood.slowloris(&m, "b", ready, SLOWLORIS);
    for _ in 0..SCRAPERS {
        flood.requests(&m, "b", metrics, "/metrics");
    }
    for _ in 0..4 {
        flood.requests(&m, "b", ready, "/healthz/ready");
    }
    // Both caps reached: newcomers have taken slots on each server.
    let evicted = |s: &zring::lab::prom::Scrape, server| {
        s.sum(
            "zring_admin_connections_evicted_total",
            &[("server", server)],
        )
    };
    eventually("both servers full", || {
        let s = m.scrape("b");
        let (e_m, e_r) = (evicted(&s, "metrics"), evicted(&s, "readiness"));
        (e_m > 0.0 && e_r > 0.0)
            .then_some(())
            .ok_or(format!("evicted: metrics {e_m}, readiness {e_r}"))
    });
    let before = flood.scrapes();

    // The kubelet and Prometheus, from the attackers' own address: every request answered.
    let (probes, scrapes) = m.lab.node("b").run(move || {
        let (mut probes, mut scrapes) = (0, 0);
        for i in 0..PROBES {
            let a = http::get(ready, "/healthz/ready").unwrap_or_else(|e| panic!("probe {i}: {e}"));
            assert_eq!((a.status, a.body.as_str()), (200, "ready\n"), "probe {i}");
            probes += 1;
            let a = http::get(metrics, "/metrics").unwrap_or_else(|e| panic!("scrape {i}: {e}"));
            assert_eq!(a.status, 200, "scrape {i}");
            assert!(
                a.body.contains("zring_admin_connections_evicted_total"),
                "scrape {i}"
            );
            scrapes += 1;
        }
        (probes, scrapes)
    });

    // And configuration still applies.
    std::fs::write(&m.config, format!("{WORKLOADS}{DENY_APPA}")).unwrap();
    m.eventually_logged("b", "policies=1", 1).unwrap();
    eventually("node b denies appa", || {
        match m.exchange("appa", (APPB, 80).into(), 100, 100) {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("still allowed: {r:?}")),
        }
    });
    assert!(flood.is_running(), "the flood ended early");
    let during = flood.scrapes() - before;
    assert!(
        during > 0,
        "the flood's own requests stopped being answered"
    );
    flood.stop();

    let s = m.scrape("b");
    let count = |name: &str, server: &str| s.sum(name, &[("server", server)]);
    let (e_m, e_r) = (evicted(&s, "metrics"), evicted(&s, "readiness"));
    assert!(e_m > 0.0 && e_r > 0.0);
    eprintln!(
        "answered under the flood: {probes}/{PROBES} probes, {scrapes}/{PROBES} scrapes; flood \
         requests answered meanwhile: {during}; evicted: metrics {e_m}, readiness {e_r}; \
         refused: metrics {}, readiness {}; head timeouts: metrics {}, readiness {}; scrapes: \
         fresh {}, reused {}",
        count("zring_admin_connections_refused_total", "metrics"),
        count("zring_admin_connections_refused_total", "readiness"),
        s.sum(
            "zring_admin_connections_timed_out_total",
            &[("server", "metrics"), ("reason", "head")]
        ),
        s.sum(
            "zring_admin_connections_timed_out_total",
            &[("server", "readiness"), ("reason", "head")]
        ),
        s.sum("zring_admin_scrapes_total", &[("rendering", "fresh")]),
        s.sum("zring_admin_scrapes_total", &[("rendering", "reused")]),
    );
}

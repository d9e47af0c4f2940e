//! End to end, in network namespaces: a flood of metrics scrapes cannot delay configuration.
//! The admin, metrics and readiness servers run on their own thread with bounded connections
//! (`admin::server`), so while `/metrics` on node b is hammered by many concurrent scrapers and
//! held by half-sent requests (slowloris) beyond its connection cap, a policy change written to
//! node b's `LOCAL_XDS_PATH` (read by the control thread) still applies, and is seen applied
//! while the flood is still running.
//!
//! No wall-clock assertion: the change is waited for with the lab's generous deadline; what is
//! asserted is that it applied while the flood went on (scrapes kept completing before and
//! after it), and that the flood really exceeded the metrics server's cap.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT): without it `Lab::seed` fails the test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use zring::lab::mesh::{STATS_PORT, eventually};
use zring::lab::{Lab, Mesh, http};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
/// Concurrent scrapers, each scraping in a loop on a fresh connection.
const SCRAPERS: usize = 24;
/// Half-sent requests held open: with the scrapers, beyond the metrics server's connection
/// cap, while leaving the scrapers some slots (so "scrapes went on" is something to watch).
const SLOWLORIS: usize = zring::admin::MAX_CONNECTIONS - 8;

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

/// The flood: scrapers and held half-requests against `target`, from node a's namespace.
struct Flood {
    stop: Arc<AtomicBool>,
    /// Scrapes that were answered 200.
    scrapes: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    fn start(m: &Mesh, target: SocketAddr) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for _ in 0..SCRAPERS {
            let (stop, scrapes) = (stop.clone(), scrapes.clone());
            threads.push(m.lab.node("a").spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Refused (the server is full) or answered: both are the flood.
                    if let Ok(a) = http::get(target, "/metrics")
                        && a.status == 200
                    {
                        scrapes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let held = stop.clone();
        threads.push(m.lab.node("a").spawn(move || {
            // Headers started, never finished; re-opened as the server's header timeout
            // closes them, for as long as the flood runs.
            let mut open: Vec<TcpStream> = Vec::new();
            while !held.load(Ordering::Relaxed) {
                // Keep those the server has not closed (a read would block).
                open.retain_mut(|s| {
                    let mut b = [0u8; 1];
                    matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while open.len() < SLOWLORIS {
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
        Flood {
            stop,
            scrapes,
            threads,
        }
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
    // The flood went beyond the metrics server's cap, and the server still serves after it.
    let s = m.scrape("b");
    let refused = s.sum(
        "zring_admin_connections_refused_total",
        &[("server", "metrics")],
    );
    assert!(refused > 0.0, "the flood never reached the cap");
    eprintln!(
        "scrapes answered during the change: {during}; connections refused at the cap: {refused}"
    );
}

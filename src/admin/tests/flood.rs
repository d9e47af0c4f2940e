//! The servers' bounds in-process, over real loopback sockets: the connection cap, eviction of
//! connections without a complete request head under a flood of completed scrapes and probes,
//! and the shared rendering of a crowded metrics server (with its cost at 10,000 series).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::lab::mesh::eventually;
use crate::metrics::labels::{self, LabelsRef, Value};

/// `n` samples of ~100 bytes each: a rendering larger than a socket's buffers.
#[derive(Debug)]
struct Bulk(usize);

impl Collect for Bulk {
    fn collect(&self, e: &mut Encoder) {
        e.family("test_bulk", Type::Gauge, "Filler");
        for i in 0..self.0 {
            let i = i.to_string();
            e.sample(
                "test_bulk",
                [("index", i.as_str()), ("pad", &"x".repeat(60))],
                1,
            );
        }
    }
}

/// Evictions from `server`, read from its metrics.
fn evicted_from(s: &Servers, server: Server) -> u64 {
    let body = s.get(Server::Stats, "/metrics").body;
    let name = server.name();
    body.lines()
        .filter(|l| {
            l.starts_with("zring_admin_connections_evicted_total{")
                && l.contains(&format!("server=\"{name}\""))
        })
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

/// Each server holds at most `MAX_CONNECTIONS` at once: when every one is being answered (here:
/// clients that never read a large answer, within a long stall grace), one more is closed
/// unanswered and counted, and the server answers again once the others go.
#[test]
fn a_server_holds_a_bounded_number_of_connections() {
    let s = Servers::start_limited(false, None, false, |l| {
        l.limits(
            Server::Stats,
            Limits {
                stall_grace: Duration::from_secs(3600),
                ..Limits::of(Server::Stats)
            },
        )
    });
    // ~8 MB per answer: more than a socket's send buffer (at most 4 MB) and the reader's
    // small receive buffer take.
    s.state.shared.metrics.watch(Arc::new(Bulk(80_000)));
    let addr = s.addrs[&Server::Stats];
    // Complete requests whose answers are never read.
    let held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| {
            let c =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            c.set_recv_buffer_size(4096).unwrap();
            c.connect(&addr.into()).unwrap();
            let mut c = TcpStream::from(c);
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            c
        })
        .collect();
    // Every one is being answered.
    for mut c in &held {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).unwrap(), 1, "answer started");
    }
    eventually("a connection beyond the cap refused", || {
        let mut extra = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        // Shorter than the head deadline, which would also close it.
        extra
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 1];
        match extra.read(&mut buf) {
            Ok(0) => Ok(()),
            other => {
                let m = &s.state.admin_metrics;
                Err(format!(
                    "{other:?} evicted {:?}",
                    Reclaim::ALL.map(|r| m.evicted(r))
                ))
            }
        }
    });
    let m = &s.state.admin_metrics;
    assert!(m.refused_connections() >= 1);
    assert_eq!(m.evicted(Reclaim::Stalled), 0, "within the grace");
    // The crowd shared renderings.
    assert!(
        m.scrapes(Rendering::Reused) > 0,
        "{}",
        m.scrapes(Rendering::Fresh)
    );
    // The readiness server has its own slots.
    assert_eq!(s.get(Server::Readiness, "/healthz/ready").status, 503);
    drop(held);
    eventually("metrics answer again", || {
        let a = http::get(addr, "/metrics").map_err(|e| e.to_string())?;
        (a.status == 200).then_some(()).ok_or(format!("{a:?}"))
    });
}

/// Half-sent requests, kept at `n` open against `addr` (beyond a server's cap, they also
/// evict each other), re-opened as the server closes them, until `stop`.
fn slowloris(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut open: Vec<TcpStream> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            open.retain_mut(|s| {
                let mut b = [0u8; 1];
                matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            });
            while open.len() < n {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    break;
                };
                let _ = s.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\n");
                let _ = s.set_nonblocking(true);
                open.push(s);
            }
            #[expect(clippy::disallowed_methods, reason = "a test thread, not a core")]
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// Completed requests for `path`, back to back on fresh connections, until `stop`; counts the
/// answered ones.
fn flood(
    addr: SocketAddr,
    path: &'static str,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if http::get(addr, path).is_ok_and(|a| a.status == 200) {
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// With both the metrics and the readiness servers' caps full of half-sent requests (from the
/// probes' own source address) and completed scrapes and probes flooding them, every probe and
/// every scrape still gets its answer: newcomers take the slots of the connections that have
/// not delivered a head. Each request's socket timeouts (10 s) only detect a failure.
#[test]
fn slowloris_and_a_request_flood_keep_no_probe_or_scrape_out() {
    let s = Servers::start(false, None);
    s.state.readiness.cores_started();
    let health = &s.state.shared.health;
    health.beat(0);
    health.beat(1);
    health.beat_control();
    // A realistic rendering (~1,000 samples), so scrapes cost something.
    s.state.shared.metrics.watch(Arc::new(Bulk(1_000)));
    let (stats, ready) = (s.addrs[&Server::Stats], s.addrs[&Server::Readiness]);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut threads = vec![
        slowloris(stats, MAX_CONNECTIONS + 4, stop.clone()),
        slowloris(ready, MAX_CONNECTIONS + 4, stop.clone()),
    ];
    for _ in 0..6 {
        threads.push(flood(stats, "/metrics", stop.clone(), answered.clone()));
    }
    for _ in 0..2 {
        threads.push(flood(
            ready,
            "/healthz/ready",
            stop.clone(),
            answered.clone(),
        ));
    }
    // Both caps reached: evictions happen only there.
    eventually("both servers full", || {
        let (m, r) = (
            evicted_from(&s, Server::Stats),
            evicted_from(&s, Server::Readiness),
        );
        (m > 0 && r > 0)
            .then_some(())
            .ok_or(format!("metrics {m}, readiness {r}"))
    });
    let before = answered.load(Ordering::Relaxed);
    const PROBES: usize = 50;
    for i in 0..PROBES {
        let a = http::get(ready, "/healthz/ready").unwrap_or_else(|e| panic!("probe {i}: {e}"));
        assert_eq!((a.status, a.body.as_str()), (200, "ready\n"), "probe {i}");
        let a = http::get(stats, "/metrics").unwrap_or_else(|e| panic!("scrape {i}: {e}"));
        assert_eq!(a.status, 200, "scrape {i}");
        assert!(
            a.body
                .contains("# TYPE zring_admin_connections_evicted_total counter")
        );
    }
    // The flood went on meanwhile.
    let during = answered.load(Ordering::Relaxed) - before;
    assert!(during > 0, "the flood stalled");
    assert!(threads.iter().all(|t| !t.is_finished()));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let m = &s.state.admin_metrics;
    eprintln!(
        "{PROBES} probes and {PROBES} scrapes answered; flood requests answered meanwhile: \
         {during}; evicted: incomplete {}, idle {}, stalled {}; refused {}; timed out: head {}, \
         idle {}, lifetime {}; scrapes: fresh {}, reused {}",
        m.evicted(Reclaim::Incomplete),
        m.evicted(Reclaim::Idle),
        m.evicted(Reclaim::Stalled),
        m.refused_connections(),
        m.timed_out(Expiry::Head),
        m.timed_out(Expiry::Idle),
        m.timed_out(Expiry::Lifetime),
        m.scrapes(Rendering::Fresh),
        m.scrapes(Rendering::Reused),
    );
    assert!(m.evicted(Reclaim::Incomplete) > 0);
}

/// Rendering cost at 10,000 series (2,000 label sets of the five `istio_tcp_*` counters, 27
/// labels each), and a crowd of scrapers sharing one rendering. Prints the cost; asserts no
/// time.
#[test]
fn rendering_10k_series_once_for_a_crowd() {
    // The crowd sends nothing: a head deadline longer than this test.
    let s = Servers::start_limited(false, None, false, |l| {
        l.limits(
            Server::Stats,
            Limits {
                head_timeout: Duration::from_secs(3600),
                ..Limits::of(Server::Stats)
            },
        )
    });
    let registry = &s.state.shared.metrics;
    let shard = registry.attach_core(0, "test");
    for i in 0..2_000 {
        let name: &'static str = Box::leak(format!("workload-{i}").into_boxed_str());
        let mut values = [Value::Str("unknown"); labels::LEN];
        values[0] = Value::Str("destination");
        values[1] = Value::Str(name);
        values[3] = Value::Spiffe("cluster.local", "default", name);
        values[20] = Value::Str("tcp");
        values[21] = Value::Str("-");
        shard.series(&LabelsRef { values }).open();
    }
    let started = Instant::now();
    let text = registry.scrape();
    let cost = started.elapsed();
    let series = text.lines().filter(|l| l.starts_with("istio_tcp_")).count();
    assert_eq!(series, 10_000);
    eprintln!(
        "one rendering of {series} istio_tcp series: {cost:?}, {} bytes",
        text.len()
    );
    // A crowd: CROWDED connections held open on the metrics server, then scrapes.
    let addr = s.addrs[&Server::Stats];
    let crowd: Vec<TcpStream> = (0..CROWDED)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    let m = &s.state.admin_metrics;
    let fresh = m.scrapes(Rendering::Fresh);
    eventually("a shared rendering", || {
        let a = http::get(addr, "/metrics").map_err(|e| e.to_string())?;
        assert_eq!(a.status, 200);
        (m.scrapes(Rendering::Reused) > 0)
            .then_some(())
            .ok_or("none yet".to_owned())
    });
    eprintln!(
        "crowded: fresh {}, reused {}",
        m.scrapes(Rendering::Fresh) - fresh,
        m.scrapes(Rendering::Reused)
    );
    drop(crowd);
}

/// A request head beyond `MAX_HEAD` is not served (hyper answers 431 and closes; the close
/// may overtake the answer, since the rest of the head is left unread).
#[test]
fn an_oversized_head_is_not_served() {
    let s = Servers::start(false, None);
    s.state.readiness.cores_started();
    let addr = s.addrs[&Server::Readiness];
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let big = "x".repeat(20_000);
    let _ = write!(
        c,
        "GET /healthz/ready HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
    );
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    // The same request with a small head is.
    assert_eq!(http::get(addr, "/healthz/ready").unwrap().status, 200);
}

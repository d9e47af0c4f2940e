//! `cargo bench`: the data path measured in network namespaces, each zring scenario as a ratio
//! to direct TCP between the same pods in the same run.
//!
//! Scenarios: `direct` (no capture: the kernel forwards between the pods), `plaintext` (zring
//! on both nodes, TCP workloads: 15001 on the client's node, 15006 on the server's), `hbone`
//! (zring on both nodes, HBONE workloads: 15001 → mTLS HTTP/2 CONNECT → 15008). Each
//! measures single-stream throughput, new connections per second, and 1 KiB request/response
//! rate with p50/p99 latency. Needs root. Environment: `ZRING_BENCH_SECS` (per measurement,
//! default 3), `ZRING_BENCH_DRIVER` (`uring`/`legacy`, default `uring`), `ZRING_BENCH_CORES`
//! (runtimes per zring, default 1: two nodes share this machine's CPUs with the pods).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use zring::lab::{Lab, Process};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const SINK: u16 = 5001;
const ECHO: u16 = 5002;
const CPS: u16 = 5003;

#[derive(Debug, Clone, Copy)]
struct Figures {
    gbps: f64,
    conns_per_sec: f64,
    rr_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

fn main() {
    // `cargo bench -- <filter>` passes arguments; `cargo test --benches` passes `--bench`-less
    // flags: run only when invoked by `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: u64 = std::env::var("ZRING_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let driver = std::env::var("ZRING_BENCH_DRIVER").unwrap_or_else(|_| "uring".into());
    let dur = Duration::from_secs(secs);
    let lab = Lab::seed().expect("the bench builds network namespaces: run it as root");
    lab.pod("appb").run(servers);

    let mut rows = vec![("direct", measure(&lab, dur))];

    let config = lab.dir().join("bench.yaml");
    std::fs::write(&config, workloads("TCP")).unwrap();
    let nodes = start_zring(&lab, &config, &driver);
    rows.push(("plaintext", measure(&lab, dur)));
    drop(nodes);

    std::fs::write(&config, workloads("HBONE")).unwrap();
    let nodes = start_zring(&lab, &config, &driver);
    rows.push(("hbone", measure(&lab, dur)));
    drop(nodes);

    report(&rows, &driver, secs);
}

fn workloads(protocol: &str) -> String {
    format!(
        "workloads:\n\
         - {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: [\"{APPA}\"], protocol: {protocol}, node: a }}\n\
         - {{ uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: [\"{APPB}\"], protocol: {protocol}, node: b }}\n"
    )
}

fn start_zring(lab: &Lab, config: &std::path::Path, driver: &str) -> Vec<Process> {
    ["a", "b"]
        .iter()
        .map(|node| {
            lab.redirect(lab.node(node)).unwrap();
            let mut cmd = Command::new(ZRING);
            cmd.env("NODE_NAME", node)
                .env("LOCAL_XDS_PATH", config)
                .env("ZRING_DRIVER", driver)
                .env(
                    "ZRING_CORES",
                    std::env::var("ZRING_BENCH_CORES").unwrap_or_else(|_| "1".into()),
                )
                .env("ZRING_DEV_CA_DIR", lab.dir().join("ca"))
                .env("RUST_LOG", "warn,zring::app=info");
            let p = lab.spawn_process(lab.node(node), cmd).unwrap();
            p.wait_for_log("zring ready", Duration::from_secs(30))
                .unwrap();
            p
        })
        .collect()
}

/// Sink (counts bytes, answers the count after FIN), echo (1 KiB request/response), and a
/// one-byte-and-close server for the connection rate; all in appb, all forever.
fn servers() {
    let sink = TcpListener::bind(("0.0.0.0", SINK)).unwrap();
    let echo = TcpListener::bind(("0.0.0.0", ECHO)).unwrap();
    let cps = TcpListener::bind(("0.0.0.0", CPS)).unwrap();
    std::thread::spawn(move || {
        for s in sink.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0u64;
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                let _ = s.write_all(&n.to_be_bytes());
            });
        }
    });
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; 1024];
                while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
            });
        }
    });
    std::thread::spawn(move || {
        for mut s in cps.incoming().flatten() {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        }
    });
}

fn measure(lab: &Lab, dur: Duration) -> Figures {
    let gbps = lab.pod("appa").run(move || throughput(dur));
    let conns_per_sec = lab.pod("appa").run(move || conn_rate(dur));
    let (rr_per_sec, p50_us, p99_us) = lab.pod("appa").run(move || request_response(dur));
    Figures {
        gbps,
        conns_per_sec,
        rr_per_sec,
        p50_us,
        p99_us,
    }
}

/// One stream, 1 MiB writes for `dur`, counted by the server.
fn throughput(dur: Duration) -> f64 {
    let mut s = TcpStream::connect((APPB, SINK)).unwrap();
    let buf = vec![0x5Au8; 1 << 20];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        s.write_all(&buf).unwrap();
        sent += buf.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(
        u64::from_be_bytes(n),
        sent,
        "the sink counted a different byte total"
    );
    sent as f64 * 8.0 / secs / 1e9
}

/// Sequential connections: connect, one byte each way, close.
fn conn_rate(dur: Duration) -> f64 {
    let addr = SocketAddr::from((APPB, CPS));
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// 1 KiB request, 1 KiB response, on one connection, back to back.
fn request_response(dur: Duration) -> (f64, f64, f64) {
    let mut s = TcpStream::connect((APPB, ECHO)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let req = [7u8; 1024];
    let mut resp = [0u8; 1024];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        let t = Instant::now();
        s.write_all(&req).unwrap();
        s.read_exact(&mut resp).unwrap();
        h.record(t.elapsed().as_nanos() as u64 / 1000)
            .unwrap_or_default();
        n += 1;
    }
    (
        n as f64 / start.elapsed().as_secs_f64(),
        h.value_at_quantile(0.5) as f64,
        h.value_at_quantile(0.99) as f64,
    )
}

fn report(rows: &[(&str, Figures)], driver: &str, secs: u64) {
    let base = rows[0].1;
    println!(
        "\nzring data path, {secs} s per measurement, driver {driver} (ratios are to direct, same run)\n"
    );
    println!(
        "{:<10} {:>16} {:>20} {:>20} {:>16} {:>16}",
        "scenario", "stream Gb/s", "new conns/s", "1KiB req/resp/s", "p50 µs", "p99 µs"
    );
    for (name, f) in rows {
        println!(
            "{:<10} {:>8.2} ({:>4.2}×) {:>10.0} ({:>4.2}×) {:>10.0} ({:>4.2}×) {:>7.0} ({:>4.2}×) {:>7.0} ({:>4.2}×)",
            name,
            f.gbps,
            f.gbps / base.gbps,
            f.conns_per_sec,
            f.conns_per_sec / base.conns_per_sec,
            f.rr_per_sec,
            f.rr_per_sec / base.rr_per_sec,
            f.p50_us,
            f.p50_us / base.p50_us,
            f.p99_us,
            f.p99_us / base.p99_us,
        );
    }
}

//! `cargo bench --bench dns`: DNS queries per second and latency through zring's DNS proxy
//! (one core, `ZRING_CORES=1`, in-pod mode, the pod's DNS captured by istio-cni's rules) against
//! the same queries sent straight to the upstream resolver, in the same run.
//!
//! The lab: appa (node a, enrolled, DNS capture on) is the client; a fake upstream resolver in
//! appc (node b, outside the mesh) answers every question with one A record on port 5353 (not
//! 53, so the pod's rules leave the direct queries alone). Three loads, one after the other,
//! each `ZRING_BENCH_SECONDS` (5) long, from `ZRING_BENCH_CLIENTS` (2) client threads in
//! appa, each keeping `ZRING_BENCH_WINDOW` (16) queries in flight on its own UDP socket:
//! - `direct`: to the upstream itself (appc:5353), the baseline;
//! - `zring-local`: a service name zring answers from the mesh (cluster DNS VIP:53 → 15053);
//! - `zring-forwarded`: a name zring forwards to the same upstream.
//!
//! Figures per load: answered queries per second (zring runs on one core, so this is per
//! core), p50/p99/max latency, and queries lost (no answer within 500 ms); and the ratios
//! zring/direct. Output on stdout and in `target/zring-bench/dns.txt` (JSON in `dns.json`).
//! The machine is shared: compare the ratios of one run, not absolute numbers across runs.
//! Needs root (namespaces).
#![allow(
    clippy::disallowed_methods,
    reason = "a bench on plain threads: blocking sockets are the method"
)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;
use zring::lab::cni::{self, InpodRules};
use zring::lab::{Lab, Mesh, Netns};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPC: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 9);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);
const CLUSTER_DNS: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const UPSTREAM_PORT: u16 = 5353;
const LOST_AFTER: Duration = Duration::from_millis(500);

fn config() -> String {
    format!(
        r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  canonicalName: appa
  workloadIps: ["{APPA}"]
  protocol: HBONE
  node: a
  services: {{}}
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/{VIP}"]
  ports:
    8000: 80
policies: []
"#
    )
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// The upstream: one A record for every question, as fast as one thread goes.
fn upstream(ns: &Netns) {
    let socket = ns.run(|| UdpSocket::bind(("0.0.0.0", UPSTREAM_PORT)).unwrap());
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            let mut out = buf[..n].to_vec();
            out[2] = 0x81;
            out[3] = 0x80;
            out[6..8].copy_from_slice(&[0, 1]);
            out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 7]);
            let _ = socket.send_to(&out, from);
        }
    });
}

#[derive(Debug, Default)]
struct Load {
    answered: u64,
    lost: u64,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Load {
    fn qps(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i]
    }
}

/// `clients` threads in `ns`, each with `window` queries for `name` in flight to `to`.
fn run_load(
    ns: &Netns,
    to: SocketAddr,
    name: &str,
    clients: usize,
    window: usize,
    secs: u64,
) -> Load {
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let name = name.to_owned();
            ns.spawn(move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                let mut load = Load::default();
                let mut sent: HashMap<u16, Instant> = HashMap::new();
                let mut next: u16 = (c as u16) << 12;
                let started = Instant::now();
                let end = started + Duration::from_secs(secs);
                let mut buf = [0u8; 2048];
                while Instant::now() < end {
                    while sent.len() < window {
                        next = next.wrapping_add(1);
                        if s.send_to(&query(next, &name), to).is_ok() {
                            sent.insert(next, Instant::now());
                        }
                    }
                    match s.recv(&mut buf) {
                        Ok(n) if n >= 12 => {
                            let id = u16::from_be_bytes([buf[0], buf[1]]);
                            if let Some(t) = sent.remove(&id) {
                                load.latencies.push(t.elapsed());
                                load.answered += 1;
                            }
                        }
                        _ => {
                            let now = Instant::now();
                            let before = sent.len();
                            sent.retain(|_, t| now.duration_since(*t) < LOST_AFTER);
                            load.lost += (before - sent.len()) as u64;
                        }
                    }
                }
                load.elapsed = started.elapsed();
                load
            })
        })
        .collect();
    let mut total = Load::default();
    for h in handles {
        let l = h.join().expect("a client thread");
        total.answered += l.answered;
        total.lost += l.lost;
        total.latencies.extend(l.latencies);
        total.elapsed = total.elapsed.max(l.elapsed);
    }
    total.latencies.sort();
    total
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let secs = env_or("ZRING_BENCH_SECONDS", 5u64);
    let clients = env_or("ZRING_BENCH_CLIENTS", 2usize);
    let window = env_or("ZRING_BENCH_WINDOW", 16usize);
    let mut lab = Lab::seed().context("lab (needs root, ip, nft)")?;
    lab.add_pod("b", "appc", APPC)?;
    upstream(lab.pod("appc").netns());
    let m = Mesh::start_inpod(
        lab,
        Path::new(ZRING),
        &config(),
        &["a"],
        &[
            ("ZRING_CORES", "1"),
            // One client sends tens of thousands of queries a second here: measure the proxy,
            // not its per-client rate limit.
            ("ZRING_DNS_CLIENT_QPS", "0"),
            ("ZRING_DNS_UPSTREAMS", &format!("{APPC}:{UPSTREAM_PORT}")),
        ],
    )?;
    cni::install_rules(m.lab.pod("appa").netns(), InpodRules { dns: true })?;
    let appa = m.lab.pod("appa").netns().clone();
    // Warm up: both paths answer before anything is measured.
    run_load(
        &appa,
        (CLUSTER_DNS, 53).into(),
        "appb.default.svc.cluster.local",
        1,
        1,
        1,
    );
    run_load(&appa, (CLUSTER_DNS, 53).into(), "external.test", 1, 1, 1);

    let loads = [
        (
            "direct",
            SocketAddr::from((APPC, UPSTREAM_PORT)),
            "external.test",
        ),
        (
            "zring-local",
            (CLUSTER_DNS, 53).into(),
            "appb.default.svc.cluster.local",
        ),
        ("zring-forwarded", (CLUSTER_DNS, 53).into(), "external.test"),
    ];
    let mut results = Vec::new();
    for (label, to, name) in loads {
        let l = run_load(&appa, to, name, clients, window, secs);
        results.push((label, l));
    }
    let direct = &results[0].1;
    let mut text = format!(
        "DNS proxy bench: {clients} clients x {window} in flight, {secs} s per load, zring on 1 core\n\
         {:<16} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9}\n",
        "load", "q/s", "p50 us", "p99 us", "max us", "lost", "q/s ratio", "p99 ratio"
    );
    let mut json_loads = Vec::new();
    for (label, l) in &results {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let qps_ratio = l.qps() / direct.qps().max(1e-9);
        let p99_ratio = us(l.pct(0.99)) / us(direct.pct(0.99)).max(1e-9);
        text.push_str(&format!(
            "{:<16} {:>10.0} {:>9.0} {:>9.0} {:>9.0} {:>8} {:>9.2} {:>9.2}\n",
            label,
            l.qps(),
            us(l.pct(0.5)),
            us(l.pct(0.99)),
            us(l.pct(1.0)),
            l.lost,
            qps_ratio,
            p99_ratio
        ));
        json_loads.push(json!({
            "load": label, "qps": l.qps(), "p50_us": us(l.pct(0.5)), "p99_us": us(l.pct(0.99)),
            "max_us": us(l.pct(1.0)), "lost": l.lost, "answered": l.answered,
            "qps_ratio_to_direct": qps_ratio, "p99_ratio_to_direct": p99_ratio,
        }));
    }
    print!("{text}");
    let out = std::env::var("ZRING_BENCH_OUT").map_or_else(
        |_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target")
                .join("zring-bench")
        },
        PathBuf::from,
    );
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("dns.txt"), &text)?;
    std::fs::write(
        out.join("dns.json"),
        serde_json::to_string_pretty(&json!({
            "clients": clients, "window": window, "seconds": secs, "loads": json_loads
        }))?,
    )?;
    drop(m);
    Ok(())
}

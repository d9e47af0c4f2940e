//! `zring demo`: the embedded-default main job. Builds the seed's two-node cluster in network
//! namespaces, runs zring on each node with the development CA and the seed's local config,
//! sends real traffic from `appa` to `appb` (directly and through the service VIP), prints
//! what happened and what zring logged, and tears everything down; once per capture mode:
//! node-level (`PROXY_MODE=node`, the node's TPROXY rules), then in-pod (`PROXY_MODE=shared`:
//! the lab's fake istio-cni agent installs istio-cni's rules in each pod and hands the pod to
//! its node's zring).
//!
//! Runs on the main thread; the zring nodes are child processes (this same binary), the pods'
//! clients and servers are threads entered into the pods' namespaces.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::inpod::WorkloadInfo;
use crate::lab::cni::{self, FakeAgent, InpodRules};
use crate::lab::prom::Scrape;
use crate::lab::{Lab, LabError, Process, http, traffic};
use crate::state::Snapshot;

/// The seed's cluster (ztunnel's local-config format); the demo's nodes carry its node names.
pub const SEED_CONFIG: &str = include_str!("../tests/data/seed-two-nodes.yaml");
const NODES: [(&str, &str); 2] = [("a", "ambient-worker"), ("b", "ambient-worker2")];
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const VIP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 96, 101, 203)), 8000);
const PAYLOAD: u64 = 16 << 20;

/// The two capture modes the demo shows, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Node,
    InPod,
}

/// Runs the demo in both capture modes, printing as it goes. Without root it fails with one
/// line saying so.
pub fn run() -> anyhow::Result<()> {
    run_mode(Mode::Node)?;
    println!();
    run_mode(Mode::InPod)
}

fn run_mode(mode: Mode) -> anyhow::Result<()> {
    let lab = match Lab::seed() {
        Ok(lab) => lab,
        Err(LabError::NotRoot) => bail!(
            "zring demo needs root: it builds network namespaces and nftables rules (try: sudo zring demo)"
        ),
        Err(e) => return Err(e).context("building the demo cluster"),
    };
    match mode {
        Mode::Node => println!(
            "zring demo, node-level capture (PROXY_MODE=node): the seed cluster in network namespaces"
        ),
        Mode::InPod => println!(
            "zring demo, in-pod capture (PROXY_MODE=shared, the default): the seed cluster in network namespaces, pods handed over by a fake istio-cni agent"
        ),
    }
    println!("  node ambient-worker   pod appa 10.244.1.8");
    println!(
        "  node ambient-worker2  pod appb 10.244.2.4, service appb.default.svc 10.96.101.203:8000 → 80"
    );
    let config = lab.dir().join("seed-two-nodes.yaml");
    std::fs::write(&config, SEED_CONFIG).context("writing the demo config")?;
    let exe = std::env::current_exe().context("locating the zring binary")?;
    let ca_dir = lab.dir().join("dev-ca");

    let seed = crate::xds::local::parse(SEED_CONFIG).context("parsing the seed config")?;
    let mut nodes: Vec<(&str, Process)> = Vec::new();
    let mut agents = Vec::new();
    for ((lab_node, node_name), pod) in NODES.into_iter().zip(["appa", "appb"]) {
        let node = lab.node(lab_node);
        let mut cmd = Command::new(&exe);
        match mode {
            Mode::Node => {
                lab.redirect(node)?;
                cmd.env("PROXY_MODE", "node");
            }
            Mode::InPod => {
                let uds = lab.dir().join(format!("cni-{lab_node}.sock"));
                agents.push((FakeAgent::listen(&uds)?, pod));
                cmd.env("PROXY_MODE", "shared").env("INPOD_UDS", &uds);
            }
        }
        cmd.arg("run")
            .env("NODE_NAME", node_name)
            .env("LOCAL_XDS_PATH", &config)
            .env("ZRING_DEV_CA_DIR", &ca_dir)
            .env("CA_ADDRESS", "")
            .env("XDS_ADDRESS", "")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let p = lab.spawn_process(node, cmd)?;
        p.wait_for_log("zring ready", Duration::from_secs(30))?;
        println!(
            "  zring on {node_name}: ready ({})",
            ready_summary(&p.log())
        );
        if let Some((agent, pod)) = agents.last_mut() {
            enroll(&lab, &seed, agent, pod)?;
            println!("  istio-cni (fake) on {node_name}: {pod} enrolled, its rules installed");
        }
        nodes.push((node_name, p));
    }

    lab.pod("appb").run(|| -> std::io::Result<()> {
        traffic::spawn_server(TcpListener::bind("0.0.0.0:80")?, Some(2));
        Ok(())
    })?;
    println!();
    for (what, dst) in [
        ("appa → appb 10.244.2.4:80", SocketAddr::from((APPB, 80))),
        ("appa → appb.default.svc 10.96.101.203:8000", VIP),
    ] {
        let start = Instant::now();
        let report = lab
            .pod("appa")
            .run(move || -> Result<traffic::Report, String> {
                let s = TcpStream::connect_timeout(&dst, Duration::from_secs(10))
                    .map_err(|e| e.to_string())?;
                traffic::exchange(s, PAYLOAD, PAYLOAD, 7).map_err(|e| e.to_string())
            });
        let secs = start.elapsed().as_secs_f64();
        match report {
            Ok(r) => println!(
                "{what}: {} MiB each way, checksums match, appb saw {} ({:.2} Gb/s both ways)",
                PAYLOAD >> 20,
                r.peer_seen_by_server.ip(),
                (r.uploaded + r.downloaded) as f64 * 8.0 / secs / 1e9
            ),
            Err(e) => println!("{what}: FAILED: {e}"),
        }
    }

    // Access-log lines appear when connections end; give the last ones a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while nodes
        .iter()
        .map(|(_, p)| p.log().matches("complete dur=").count())
        .sum::<usize>()
        < 4
        && Instant::now() < deadline
    {
        #[expect(
            clippy::disallowed_methods,
            reason = "the demo's main thread, not a core"
        )]
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut failures = 0;
    for ((name, p), (lab_node, _)) in nodes.iter().zip(NODES) {
        println!("\naccess log of zring on {name}:");
        for line in p.log().lines().filter(|l| is_access_line(l)) {
            println!("  {}", strip_prefix(line));
            failures += usize::from(line.contains(" WARN ") || line.contains(" ERROR "));
        }
        match scrape(&lab, lab_node) {
            Ok(m) => {
                println!("  traffic counters (its :15020/metrics, all label sets summed):");
                for name in [
                    "istio_tcp_connections_opened_total",
                    "istio_tcp_connections_closed_total",
                    "istio_tcp_received_bytes_total",
                    "istio_tcp_sent_bytes_total",
                ] {
                    println!("    {name} {}", m.sum(name, &[]));
                }
            }
            Err(e) => println!("  traffic counters: cannot scrape :15020/metrics: {e}"),
        }
    }
    println!("\ncleaning up the namespaces");
    drop(nodes);
    drop(agents);
    drop(lab);
    if failures > 0 {
        bail!("{failures} connection(s) failed; see the access logs above");
    }
    Ok(())
}

/// In-pod mode: the fake agent takes its zring's connection, installs istio-cni's rules in
/// `pod`, hands the pod over (uid and names of the seed's workload at its IP) and sends
/// `snapshot_sent`.
fn enroll(lab: &Lab, seed: &Snapshot, agent: &mut FakeAgent, pod: &str) -> anyhow::Result<()> {
    let ns = lab.pod(pod).netns();
    let w = seed
        .workload_by_ip(lab.pod(pod).ip().into())
        .with_context(|| format!("the seed has no workload for {pod}"))?;
    let info = WorkloadInfo {
        name: w.name.to_string(),
        namespace: w.namespace.to_string(),
        service_account: w.service_account.to_string(),
    };
    agent.accept()?;
    cni::install_rules(ns, InpodRules { dns: false })?;
    agent
        .add(&w.uid, &info, ns)?
        .map_err(|e| anyhow::anyhow!("zring refused {pod}: {e}"))?;
    agent
        .snapshot_sent()?
        .map_err(|e| anyhow::anyhow!("zring refused the snapshot: {e}"))
}

/// The metrics zring on `node` serves on :15020, fetched from inside the node's namespace.
fn scrape(lab: &Lab, node: &str) -> anyhow::Result<Scrape> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 15020));
    let answer = lab.node(node).run(move || http::get(addr, "/metrics"))?;
    if answer.status != 200 {
        bail!("status {}", answer.status);
    }
    Scrape::parse(answer.body).map_err(|e| anyhow::anyhow!(e))
}

fn ready_summary(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("zring ready"))
        .unwrap_or_default();
    let mut s = String::new();
    for key in ["driver=", "cores="] {
        if let Some(v) = line
            .split(key)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        {
            let _ = write!(
                s,
                "{}{key}{}",
                if s.is_empty() { "" } else { ", " },
                v.trim_matches('"')
            );
        }
    }
    s
}

fn is_access_line(l: &str) -> bool {
    l.contains("proxy to ") || l.contains("complete dur=") || l.contains("got CONNECT request")
}

/// Drops the timestamp and level so the demo's output reads like ztunnel's examples.
fn strip_prefix(l: &str) -> &str {
    l.split_once(": ").map_or(l, |(_, rest)| rest)
}

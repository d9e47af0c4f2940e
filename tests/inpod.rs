//! In-pod mode end to end: a real zring process (`PROXY_MODE=shared`, 2 cores) on a lab node,
//! the lab's fake istio-cni agent handing it pods that carry istio-cni's in-pod rules.
//!
//! Checked: the `Ack` of an add arrives only once 15001, 15006 and 15008 listen inside the pod
//! on every core (two SO_REUSEPORT sockets per port, seen in the pod's own /proc/net/tcp right
//! after the ack, no waiting); readiness is 503 until the agent's snapshot is acknowledged and
//! stays 200 through an agent restart; the `workload_manager_inpod_*` series count pods; a
//! delete closes the pod's listeners by its ack and zring's descriptors return to the baseline;
//! an agent restart re-sending the same pod keeps it served without re-binding; and the data
//! path: outbound TCP from an enrolled pod to an address outside the mesh goes through
//! zring's 15001 inside the pod and reaches the server from the pod's own IP (the upstream
//! socket was made inside the pod's netns, marked, so the pod's rules let it out), logged by
//! the same access-log record as node mode. `tests/inpod_mesh.rs` covers the rest of the data
//! path in-pod (HBONE, services, authorization, delete under load).
//!
//! Runs as root under `cargo test`; without root it fails with `Lab::new`'s error. Waits are
//! conditions with deadlines (`eventually`), never sleeps.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use zring::inpod::WorkloadInfo;
use zring::lab::cni::{self, FakeAgent, InpodRules};
use zring::lab::mesh::eventually;
use zring::lab::{Lab, Netns, Process, http};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 11);
/// Outside the mesh: no rules, never enrolled, unknown to the config.
const APPC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 12);

/// appa is a workload of node `a` (so outbound from it has a known source); appb and appc are
/// not in the config.
const CONFIG: &str = r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  trustDomain: cluster.local
  workloadName: appa
  workloadType: deployment
  canonicalName: appa
  canonicalRevision: v1
  clusterId: Kubernetes
  workloadIps: ["10.244.1.10"]
  protocol: HBONE
  node: a
  network: ""
  services: {}
"#;

fn info(name: &str) -> WorkloadInfo {
    WorkloadInfo {
        name: name.into(),
        namespace: "default".into(),
        service_account: name.into(),
    }
}

/// TCP ports listening in `ns`, one entry per socket (SO_REUSEPORT siblings counted apart).
fn listeners(ns: &Netns, port: u16) -> usize {
    let table = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/tcp"))
        .expect("the namespace's /proc/net/tcp");
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
        })
        .count()
}

fn served_ports(ns: &Netns) -> [usize; 3] {
    [15001, 15006, 15008].map(|p| listeners(ns, p))
}

fn open_fds(p: &Process) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn ready(node: &Netns, ip: Ipv4Addr) -> u16 {
    node.run(move || http::get(SocketAddr::from((ip, 15021)), "/healthz/ready"))
        .map_or(0, |a| a.status)
}

fn scrape(node: &Netns, ip: Ipv4Addr) -> String {
    node.run(move || http::get(SocketAddr::from((ip, 15020)), "/metrics"))
        .map(|a| a.body)
        .unwrap_or_default()
}

fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn start_zring(lab: &Lab, uds: &Path) -> Result<Process> {
    let config = lab.dir().join("config.yaml");
    std::fs::write(&config, CONFIG)?;
    let mut cmd = Command::new(ZRING);
    cmd.arg("run")
        .env("PROXY_MODE", "shared")
        .env("INPOD_UDS", uds)
        .env("NODE_NAME", "a")
        .env("ZRING_CORES", "2")
        .env("LOCAL_XDS_PATH", &config)
        .env("XDS_ADDRESS", "")
        .env("CA_ADDRESS", "")
        .env("ZRING_DEV_CA_DIR", lab.dir().join("dev-ca"))
        .env("ZRING_DRAIN_DEADLINE", "1s")
        .env("RUST_LOG", "info");
    let p = lab.spawn_process(lab.node("a"), cmd)?;
    p.wait_for_log("zring ready", Duration::from_secs(30))?;
    Ok(p)
}

#[test]
fn pods_are_served_on_every_core_from_ack_to_delete() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_node("a", Ipv4Addr::new(172, 31, 0, 11), "10.244.1.0/24".parse()?)?;
    for (name, ip) in [("appa", APPA), ("appb", APPB), ("appc", APPC)] {
        lab.add_pod("a", name, ip)?;
    }
    for pod in ["appa", "appb"] {
        cni::install_rules(lab.pod(pod), InpodRules { dns: false })?;
    }
    let dir = tempfile::tempdir()?;
    let uds = dir.path().join("ztunnel.sock");
    let mut agent = FakeAgent::listen(&uds)?;
    let zring = start_zring(&lab, &uds)?;
    let node = lab.node("a").netns().clone();
    let node_ip = lab.node("a").underlay_ip();
    ensure!(
        zring.log().contains(r#"mode="shared""#) || zring.log().contains("mode=shared"),
        "{}",
        zring.log()
    );
    // No node-level listener in in-pod mode.
    ensure!(
        served_ports(&node) == [0, 0, 0],
        "node listeners in in-pod mode"
    );

    agent.accept()?;
    ensure!(
        ready(&node, node_ip) == 503,
        "ready before the agent's snapshot"
    );

    // The ack of an add means: listening on every core inside the pod, right now.
    let (appa, appb) = (
        lab.pod("appa").netns().clone(),
        lab.pod("appb").netns().clone(),
    );
    agent
        .add("uid-appa", &info("appa"), &appa)?
        .map_err(anyhow::Error::msg)?;
    ensure!(
        served_ports(&appa) == [2, 2, 2],
        "{:?}",
        served_ports(&appa)
    );
    ensure!(ready(&node, node_ip) == 503, "ready before snapshot_sent");
    agent.snapshot_sent()?.map_err(anyhow::Error::msg)?;
    eventually("readiness after the snapshot", || {
        match ready(&node, node_ip) {
            200 => Ok(()),
            s => Err(format!("status {s}")),
        }
    });
    let text = scrape(&node, node_ip);
    ensure!(
        sample(&text, "workload_manager_inpod_active_proxy_count") == Some(1)
            && sample(&text, "workload_manager_inpod_proxies_started_total") == Some(1)
            && text.contains("# TYPE workload_manager_inpod_pending_proxy_count gauge"),
        "{text}"
    );

    // The seam: outbound from appa leaves through zring inside appa, from appa's own IP.
    let server = lab.pod("appc").run(|| TcpListener::bind("0.0.0.0:8080"))?;
    let (echo_tx, echo_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, peer)) = server.accept() {
            let _ = echo_tx.send(peer);
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(&buf);
            }
        }
    });
    let echoed = appa.run(|| -> std::io::Result<Vec<u8>> {
        let mut c = TcpStream::connect_timeout(&SocketAddr::from((APPC, 8080)), http::TIMEOUT)?;
        c.set_read_timeout(Some(http::TIMEOUT))?;
        c.write_all(b"hello")?;
        let mut buf = vec![0u8; 5];
        c.read_exact(&mut buf)?;
        Ok(buf)
    })?;
    ensure!(echoed == b"hello", "{echoed:?}");
    let peer = echo_rx.recv_timeout(http::TIMEOUT)?;
    ensure!(peer.ip() == std::net::IpAddr::from(APPA), "source {peer}");
    let counters = cni::rule_counters(&appa)?;
    ensure!(
        counters.iter().any(|(c, n)| c == "outbound" && *n > 0),
        "the connection went through the pod's redirect: {counters:?}"
    );
    // The node data path served it: one access-log record, as in node mode.
    eventually("the passthrough logged", || {
        zring
            .log()
            .lines()
            .any(|l| {
                l.contains("complete dur=")
                    && l.contains(r#"src.workload="appa""#)
                    && l.contains("dst.addr=10.244.1.12:8080")
                    && l.contains(r#"response_flags="-""#)
            })
            .then_some(())
            .ok_or_else(|| zring.log_tail())
    });

    // A second pod, then its delete: its listeners are gone by the ack, descriptors return.
    let baseline = open_fds(&zring);
    agent
        .add("uid-appb", &info("appb"), &appb)?
        .map_err(anyhow::Error::msg)?;
    ensure!(
        served_ports(&appb) == [2, 2, 2],
        "{:?}",
        served_ports(&appb)
    );
    ensure!(
        open_fds(&zring) >= baseline + 6,
        "six listeners (and the netns) held for appb"
    );
    agent.del("uid-appb")?.map_err(anyhow::Error::msg)?;
    ensure!(
        served_ports(&appb) == [0, 0, 0],
        "{:?}",
        served_ports(&appb)
    );
    eventually("descriptors back to the baseline", || {
        let now = open_fds(&zring);
        (now <= baseline)
            .then_some(())
            .ok_or(format!("{now} open, baseline {baseline}"))
    });
    ensure!(served_ports(&appa) == [2, 2, 2], "appa untouched");

    // The agent restarts: appa stays served throughout, and readiness stays 200.
    agent.restart()?;
    ensure!(
        served_ports(&appa) == [2, 2, 2],
        "appa served while the agent is away"
    );
    ensure!(
        ready(&node, node_ip) == 200,
        "readiness kept through the restart"
    );
    agent.accept()?;
    agent
        .add("uid-appa", &info("appa"), &appa)?
        .map_err(anyhow::Error::msg)?;
    agent.snapshot_sent()?.map_err(anyhow::Error::msg)?;
    ensure!(
        served_ports(&appa) == [2, 2, 2],
        "{:?}",
        served_ports(&appa)
    );
    // Descriptors first: the metrics server may still hold the scrape's own connection for a
    // moment after answering it.
    let fds = open_fds(&zring);
    let text = scrape(&node, node_ip);
    ensure!(
        sample(&text, "workload_manager_inpod_active_proxy_count") == Some(1)
            && sample(&text, "workload_manager_inpod_proxies_started_total") == Some(2)
            && sample(&text, "workload_manager_inpod_proxies_stopped_total") == Some(1)
            && sample(&text, "zring_inpod_agent_connections_total") == Some(2),
        "{text}"
    );
    ensure!(
        fds <= baseline,
        "re-sent pod not re-bound: {fds} vs {baseline}"
    );
    Ok(())
}

/// The seam by itself, in-process: a socket the factory makes for a pod really lives in the
/// pod's netns, and a connect through it reaches an address only that netns can reach.
#[test]
fn factory_sockets_live_in_the_pod_netns() -> Result<()> {
    use std::os::fd::AsFd;
    use std::rc::Rc;
    use std::sync::Arc;
    use zring::inpod::PodNetns;
    use zring::inpod::factory::SocketFactory;
    use zring::inpod::handoff;
    use zring::inpod::pod::{CorePod, PodCtx, Upstreams};
    use zring::sys::{netns, uds};

    let mut lab = Lab::new()?;
    lab.add_node("a", Ipv4Addr::new(172, 31, 0, 11), "10.244.1.0/24".parse()?)?;
    lab.add_pod("a", "appa", APPA)?;
    let pod = lab.pod("appa").netns().clone();
    // Reachable only inside the pod: its own loopback.
    let local = pod.run(|| TcpListener::bind("127.0.0.1:7070"))?;
    let file = std::fs::File::open(netns::path(pod.name()))?;
    let id = uds::file_id(file.as_fd())?;
    let ctx = Arc::new(PodCtx::new(
        "uid-appa".into(),
        info("appa"),
        PodNetns::new(file.into(), id),
        0x539,
        SocketFactory::spawn()?,
    ));
    let (_mailbox, inbox) = handoff::pair(0)?;
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(async move {
        let mut inbox = inbox.into_core()?;
        let upstreams = Rc::new(Upstreams::new(inbox.own().clone()));
        let core_pod = CorePod::new(ctx, upstreams.clone());
        // The core's pod task, reduced to delivering the factory's answers.
        let deliver = {
            let upstreams = upstreams.clone();
            async move {
                loop {
                    for mail in inbox.recv().await.expect("mail") {
                        if let handoff::CoreMail::Upstream { id, socket } = mail {
                            upstreams.deliver(id, socket);
                        }
                    }
                }
            }
        };
        let work = async {
            let fd = core_pod.socket(false).await?;
            let ns = netns::of_socket(fd.as_fd())?;
            ensure!(
                uds::file_id(ns.as_fd())? == id,
                "socket outside the pod's netns"
            );
            let s = socket2::Socket::from(fd);
            ensure!(s.mark()? == 0x539, "upstream socket not marked");
            drop(s);
            let stream = core_pod
                .connect(
                    SocketAddr::from(([127, 0, 0, 1], 7070)),
                    None,
                    http::TIMEOUT,
                )
                .await?;
            ensure!(upstreams.pending() == 0, "no request left behind");
            Ok::<_, anyhow::Error>(stream.local_addr()?)
        };
        let local_addr = monoio::select! {
            r = work => r?,
            () = deliver => unreachable!(),
        };
        let (_, peer) = local.accept().context("the pod-local listener")?;
        ensure!(peer == local_addr, "{peer} vs {local_addr}");
        Ok(())
    })
}

//! One setup: a fresh two-node lab (the seed topology: pod `appa` on node a, pod `appb` on node
//! b), the node proxies started on both nodes for a proxied mode, the servers in `appb`, and a
//! probe request that must get through before anything is measured. Every setup gets its own
//! lab, so no state (TIME_WAIT sockets, conntrack entries, pooled tunnels) leaks between setups.
//!
//! Also here: what the bench reads about the proxy processes while they run (CPU time from
//! `/proc/<pid>/stat`, resident memory and open descriptors), and the optional `perf record`
//! around a measurement.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zring::lab::{Lab, Mesh, NodeProxy, Process};

use crate::load;
use crate::options::{Mode, OtherProxy, Perf};

pub const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
pub const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
/// How long the probe request may keep failing while the proxies settle.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which node proxy serves the nodes.
#[derive(Debug, Clone)]
pub enum Proxy {
    /// This build's zring, on one driver.
    Zring { driver: String },
    /// `ZRING_BENCH_PROXY`.
    Other(OtherProxy),
}

/// A row label's ingredients: what carries the traffic.
#[derive(Debug, Clone)]
pub struct Setup {
    pub mode: Mode,
    /// `None` only for [`Mode::Direct`].
    pub proxy: Option<Proxy>,
    /// Runtimes per zring (`ZRING_CORES`), worker threads per other proxy
    /// (`ZTUNNEL_WORKER_THREADS`); unused by direct.
    pub cores: usize,
}

impl Setup {
    pub fn direct() -> Setup {
        Setup {
            mode: Mode::Direct,
            proxy: None,
            cores: 1,
        }
    }

    /// The proxy's name: `zring`, the other binary's name, or `-` for direct.
    pub fn proxy_name(&self) -> &str {
        match &self.proxy {
            None => "-",
            Some(Proxy::Zring { .. }) => "zring",
            Some(Proxy::Other(o)) => &o.name,
        }
    }

    pub fn driver(&self) -> Option<&str> {
        match &self.proxy {
            Some(Proxy::Zring { driver }) => Some(driver),
            _ => None,
        }
    }

    /// `direct`, `zring hbone uring 1c`, `ztunnel plaintext 2c`, …: the last word is the
    /// runtimes (zring) or worker threads (ztunnel) per proxy.
    pub fn label(&self) -> String {
        match &self.proxy {
            None => "direct".into(),
            Some(_) => {
                let mut s = format!("{} {}", self.proxy_name(), self.mode.name());
                if let Some(d) = self.driver() {
                    s.push(' ');
                    s.push_str(d);
                }
                format!("{s} {}c", self.cores)
            }
        }
    }

    /// The proxied setups' cores, `None` for direct.
    pub fn proxy_cores(&self) -> Option<usize> {
        self.proxy.as_ref().map(|_| self.cores)
    }

    /// A file-name stem that sorts the proxies of one scenario next to each other:
    /// `hbone-bulk-8-1c` + `-outbound-zring-uring`, `-outbound-ztunnel`, ….
    pub fn profile_name(&self, workload: &str, conns: usize, role: &str) -> String {
        let mut s = format!(
            "{}-{workload}-{conns}-{}c-{role}-{}",
            self.mode.name(),
            self.cores,
            self.proxy_name()
        );
        if let Some(d) = self.driver() {
            s.push('-');
            s.push_str(d);
        }
        s.replace([' ', '/'], "-")
    }
}

/// The traffic between the pods runs through this; it lives as long as the setup.
pub enum Running {
    Direct(Lab),
    Meshed(Mesh),
}

/// The local config both nodes read: appa on node a, appb on node b, both speaking `protocol`.
fn workloads(protocol: &str) -> String {
    format!(
        "workloads:\n\
         - {{ uid: appa, name: appa, namespace: default, serviceAccount: appa, workloadIps: [\"{APPA}\"], protocol: {protocol}, node: a, services: {{}} }}\n\
         - {{ uid: appb, name: appb, namespace: default, serviceAccount: appb, workloadIps: [\"{APPB}\"], protocol: {protocol}, node: b, services: {{}} }}\n"
    )
}

impl Running {
    /// Builds the lab, starts the proxies (with `extra_env` over the defaults) and the servers,
    /// and waits until one request gets through.
    pub fn start(setup: &Setup, zring: &Path, extra_env: &[(&str, &str)]) -> Running {
        let mut lab = Lab::seed().expect("the bench builds network namespaces: run it as root");
        // Only zring keeps the enrolled-pod set, and only HBONE pods are enrolled: plaintext
        // setups and other node proxies capture every pod address instead.
        if setup.mode != Mode::Hbone || matches!(setup.proxy, Some(Proxy::Other(_))) {
            lab.capture_every_pod_address();
        }
        tune(&lab);
        let running = match (&setup.proxy, setup.mode) {
            (None, _) => Running::Direct(lab),
            (Some(proxy), mode) => {
                let protocol = if mode == Mode::Hbone { "HBONE" } else { "TCP" };
                let cores = setup.cores.to_string();
                let mut env: Vec<(String, String)> = [
                    ("ZRING_CORES", cores.as_str()),
                    // Two nodes and the load share this machine: let the scheduler place them.
                    ("ZRING_PIN_CORES", "false"),
                    // ztunnel's name for its worker thread count.
                    ("ZTUNNEL_WORKER_THREADS", cores.as_str()),
                    ("XDS_ADDRESS", ""),
                    ("CA_ADDRESS", ""),
                    ("CLUSTER_ID", "Kubernetes"),
                    ("TRUST_DOMAIN", "cluster.local"),
                    // Per-connection access logs would cost more than the proxying at crr rates.
                    ("RUST_LOG", "warn,zring::app=info"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
                let node_proxy = match proxy {
                    Proxy::Zring { driver } => {
                        env.push(("ZRING_DRIVER".into(), driver.clone()));
                        env.push(("PROXY_MODE".into(), "node".into()));
                        NodeProxy::zring(zring)
                    }
                    Proxy::Other(other) => {
                        env.extend(other.env.iter().cloned());
                        let mut p = NodeProxy::other(&other.binary);
                        p.args = other.args.clone();
                        p
                    }
                };
                env.extend(
                    extra_env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string())),
                );
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let mesh =
                    Mesh::start_proxy(lab, node_proxy, &workloads(protocol), &["a", "b"], &env)
                        .unwrap_or_else(|e| panic!("starting {}: {e}", setup.label()));
                Running::Meshed(mesh)
            }
        };
        running
            .lab()
            .pod("appb")
            .run(load::start_servers)
            .expect("servers in appb");
        running.probe(setup);
        running
    }

    pub fn lab(&self) -> &Lab {
        match self {
            Running::Direct(lab) => lab,
            Running::Meshed(mesh) => &mesh.lab,
        }
    }

    /// The proxy processes, by role: `outbound` (node a, the client's), `inbound` (node b).
    pub fn proxies(&self) -> Vec<(&'static str, &Process)> {
        match self {
            Running::Direct(_) => Vec::new(),
            Running::Meshed(mesh) => {
                vec![("outbound", mesh.zring("a")), ("inbound", mesh.zring("b"))]
            }
        }
    }

    fn probe(&self, setup: &Setup) {
        let deadline = Instant::now() + PROBE_TIMEOUT;
        loop {
            match self.lab().pod("appa").run(|| load::one_request(APPB)) {
                Ok(()) => return,
                Err(e) if Instant::now() >= deadline => {
                    let logs: String = self
                        .proxies()
                        .iter()
                        .map(|(role, p)| format!("--- {role} proxy log:\n{}\n", p.log_tail()))
                        .collect();
                    panic!(
                        "{}: no request got through in {PROBE_TIMEOUT:?}: {e}\n{logs}",
                        setup.label()
                    );
                }
                Err(_) => pause(Duration::from_millis(100)),
            }
        }
    }

    /// Proves the traffic took the setup's path: the capture rules that lead to it counted
    /// packets (any proxy could otherwise pass a bench by forwarding in the clear).
    pub fn check_path(&self, setup: &Setup) {
        let Running::Meshed(mesh) = self else { return };
        let counted = |node: &str, rule: &str| {
            mesh.lab
                .rule_counters(mesh.lab.node(node))
                .expect("reading nft counters")
                .iter()
                .find(|c| c.rule == rule)
                .map_or(0, |c| c.packets)
        };
        let inbound = match setup.mode {
            Mode::Hbone => "inbound-hbone",
            _ => "inbound-plaintext",
        };
        for (node, rule) in [("a", "outbound"), ("b", inbound)] {
            assert!(
                counted(node, rule) > 0,
                "{}: the `{rule}` capture rule on node {node} saw no traffic: the proxy did not carry it",
                setup.label()
            );
        }
    }
}

/// The clients open and close thousands of connections a second (crr): let TIME_WAIT ports be
/// reused and widen the port range, in the lab's namespaces only.
fn tune(lab: &Lab) {
    let settings = [
        ("net.ipv4.tcp_tw_reuse", "1"),
        ("net.ipv4.ip_local_port_range", "1024 65000"),
    ];
    for ns in lab
        .nodes()
        .iter()
        .map(|n| n.netns())
        .chain(lab.pods().iter().map(|p| p.netns()))
    {
        ns.sysctls(&settings).expect("lab sysctls");
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "the bench's own thread, not a core"
)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// CPU time of `pid` (all threads), or zero once it is gone.
pub fn cpu(pid: u32) -> Duration {
    zring::sys::process_cpu_time(pid).unwrap_or_default()
}

/// CPU time of the kernel's softirq threads (`ksoftirqd/N`, every CPU). Network receive work
/// runs in the context of whichever process raised it, up to a budget; the rest goes to these
/// threads, so a proxy that raises its softirqs in bursts hands work to them that no process's
/// own CPU shows. Nothing else on the bench machine raises much of it during a measurement.
pub fn softirq_threads_cpu() -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        })
        .map(cpu)
        .sum()
}

/// Resident set size of `pid` in KiB (`VmRSS`), 0 if unreadable.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of `pid`.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// `perf record` attached to the proxies for one measurement.
pub struct Recording {
    children: Vec<(Child, PathBuf)>,
}

impl Recording {
    /// Starts one `perf record` per proxy process, writing `<dir>/<stem>.perf.data` for each
    /// (stem, process).
    pub fn start(perf: &Perf, proxies: &[(String, &Process)]) -> Recording {
        std::fs::create_dir_all(&perf.dir).expect("creating the perf output directory");
        let children = proxies
            .iter()
            .map(|(stem, p)| {
                let out = perf.dir.join(format!("{stem}.perf.data"));
                let call_graph = match perf.call_graph.as_str() {
                    "fp" => "fp".to_owned(),
                    _ => "dwarf,16384".to_owned(),
                };
                let child = Command::new("perf")
                    .args(["record", "-q", "-e", &perf.event, "-F", &perf.freq.to_string()])
                    .args(["--call-graph", &call_graph, "-p", &p.pid().to_string(), "-o"])
                    .arg(&out)
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("starting perf record (is linux-perf installed? perf/flamegraph.sh installs it)");
                (child, out)
            })
            .collect();
        // perf needs a moment to attach; without it the first samples of the run are lost.
        pause(Duration::from_millis(300));
        Recording { children }
    }

    /// Stops every recording (SIGINT, as perf expects) and waits for the files to be written.
    pub fn stop(self) -> Vec<PathBuf> {
        self.children
            .into_iter()
            .map(|(mut child, out)| {
                let _ = zring::sys::netns::signal(child.id(), libc::SIGINT);
                let status = child.wait().expect("waiting for perf record");
                // perf writes its file on SIGINT and then re-raises the signal to exit by it.
                let by_sigint =
                    std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGINT);
                let written = std::fs::metadata(&out).is_ok_and(|m| m.len() > 0);
                assert!(
                    (status.success() || by_sigint) && written,
                    "perf record for {} failed: {status}",
                    out.display()
                );
                out
            })
            .collect()
    }
}

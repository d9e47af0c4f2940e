//! A lab with zring running on some of its nodes: the harness the end-to-end tests, the demo
//! and the benches share.
//!
//! Runs on the caller's thread (a test's, the demo's); zring runs as child processes of this
//! binary's sibling `zring` executable, one per node, each with the node's capture rules
//! installed, a shared local config file and a shared development CA directory (so every node
//! trusts every other). Traffic helpers enter pod namespaces on their own threads.
//!
//! The node proxy need not be zring: a [`NodeProxy`] names any binary that takes ztunnel's
//! environment (`NODE_NAME`, `LOCAL_XDS_PATH`, …) and listens on the capture ports, which is how
//! the benches compare implementations side by side.
//!
//! Two capture modes, as in zring: [`Mesh::start`] installs node-level TPROXY capture and runs
//! zring with `PROXY_MODE=node`; [`Mesh::start_inpod`] runs it in-pod (`PROXY_MODE=shared`)
//! with a fake istio-cni agent per node (`cni::FakeAgent`, `INPOD_UDS`) that, once zring is
//! ready, installs istio-cni's rules in each of the node's pods the config knows and enrolls
//! them (uid and names from the config's workload at the pod's IP).

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::cni::{self, CniError, FakeAgent, InpodRules};
use super::prom::Scrape;
use super::traffic::{self, Report};
use super::{Lab, LabError, Netns, Process, http};
use crate::inpod::WorkloadInfo;

/// How long a zring process may take to report `zring ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Mesh::eventually_logged`] and [`eventually`] wait.
const LOG_TIMEOUT: Duration = Duration::from_secs(20);
/// zring's metrics port, as every node serves it.
pub const STATS_PORT: u16 = 15020;
/// zring's admin port (loopback only).
pub const ADMIN_PORT: u16 = 15000;
/// zring's readiness port.
pub const READINESS_PORT: u16 = 15021;

/// Polls `check` until it returns `Ok`, for up to 20 s; panics with the last `Err` after that.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + LOG_TIMEOUT;
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {LOG_TIMEOUT:?} waiting for {what}: {e}")
            }
            Err(_) => {
                #[expect(clippy::disallowed_methods, reason = "a test thread, not a core")]
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The program a [`Mesh`] runs on each node, and how to tell it is ready.
#[derive(Debug, Clone)]
pub struct NodeProxy {
    pub binary: PathBuf,
    pub args: Vec<String>,
    /// Environment this proxy always gets, under the mesh's and the node's.
    pub env: Vec<(String, String)>,
    pub ready: Ready,
}

/// When a node proxy counts as started.
#[derive(Debug, Clone)]
pub enum Ready {
    /// Its log contains this text (zring: `zring ready`).
    Logged(String),
    /// It listens on every one of these TCP ports in the node's namespace: what any node proxy
    /// does once it can take captured traffic, whatever it logs.
    Listening(Vec<u16>),
}

impl NodeProxy {
    /// zring itself: `zring run`, ready once it logs `zring ready`.
    pub fn zring(binary: &Path) -> NodeProxy {
        NodeProxy {
            binary: binary.to_owned(),
            args: vec!["run".into()],
            // Node-level capture (the rules the mesh installs on each node), whatever zring's
            // default mode; in-pod tests start zring themselves.
            env: vec![("PROXY_MODE".into(), "node".into())],
            ready: Ready::Logged("zring ready".into()),
        }
    }

    /// Any other node proxy (another zring build, ztunnel in its shared node mode): run without
    /// arguments, ready once it listens on 15001, 15006 and 15008.
    pub fn other(binary: &Path) -> NodeProxy {
        use super::{INBOUND_HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT};
        NodeProxy {
            binary: binary.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            ready: Ready::Listening(vec![
                OUTBOUND_PORT,
                INBOUND_PLAINTEXT_PORT,
                INBOUND_HBONE_PORT,
            ]),
        }
    }
}

/// A lab plus the node proxy processes serving its nodes.
#[derive(Debug)]
pub struct Mesh {
    pub lab: Lab,
    /// The `LOCAL_XDS_PATH` every node reads (tests rewrite it to change the mesh live).
    pub config: PathBuf,
    /// The development CA directory every node shares.
    pub ca_dir: PathBuf,
    /// Boxed: `Mesh` is moved around by value, and this keeps it small.
    proxy: Box<NodeProxy>,
    /// Nodes whose proxy is not `proxy` ([`Mesh::start_node_with`]).
    node_proxies: Vec<(String, NodeProxy)>,
    base_env: Vec<(String, String)>,
    zring: Vec<(String, Process)>,
    /// In-pod mode: each node's fake istio-cni agent (`None`: node-level capture).
    agents: Option<Vec<(String, FakeAgent)>>,
}

impl Mesh {
    /// Writes `config` (ztunnel's local-config YAML) into the lab's directory, installs capture
    /// on each of `nodes` and starts zring (`binary`) there with `NODE_NAME` set to the node's
    /// name, `LOCAL_XDS_PATH` pointing at the config (unless `env` sets `XDS_ADDRESS`: then the
    /// config comes from xDS and the file is unused; else `XDS_ADDRESS` empty), `CA_ADDRESS`
    /// empty (the shared development CA; unset would mean istiod) and `env` on top of the
    /// defaults (2 cores, poll the config every 50 ms) and the proxy's own (zring: `PROXY_MODE=node`).
    pub fn start(
        lab: Lab,
        binary: &Path,
        config: &str,
        nodes: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Mesh, LabError> {
        Mesh::start_proxy(lab, NodeProxy::zring(binary), config, nodes, env)
    }

    /// Like [`start`](Self::start), in in-pod mode: no node-level capture; zring runs with
    /// `PROXY_MODE=shared` and `INPOD_UDS` pointing at a fake istio-cni agent of its node, which
    /// then enrolls the node's pods that have a workload in `config` (their rules installed
    /// first, as istio-cni does), and sends `snapshot_sent`.
    pub fn start_inpod(
        lab: Lab,
        binary: &Path,
        config: &str,
        nodes: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Mesh, LabError> {
        let mut all = vec![("PROXY_MODE", "shared")];
        all.extend_from_slice(env);
        let mut mesh = Mesh::build(lab, NodeProxy::zring(binary), config, &all)?;
        mesh.agents = Some(Vec::new());
        for node in nodes {
            mesh.start_node(node, &[])?;
        }
        Ok(mesh)
    }

    /// [`start`](Self::start) with any node proxy.
    pub fn start_proxy(
        lab: Lab,
        proxy: NodeProxy,
        config: &str,
        nodes: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Mesh, LabError> {
        let mut mesh = Mesh::build(lab, proxy, config, env)?;
        for node in nodes {
            mesh.lab.redirect(mesh.lab.node(node))?;
            mesh.start_node(node, &[])?;
        }
        Ok(mesh)
    }

    fn build(
        lab: Lab,
        proxy: NodeProxy,
        config: &str,
        env: &[(&str, &str)],
    ) -> Result<Mesh, LabError> {
        let path = lab.dir().join("config.yaml");
        std::fs::write(&path, config).map_err(|source| LabError::Io {
            context: format!("writing {}", path.display()),
            source,
        })?;
        let ca_dir = lab.dir().join("dev-ca");
        let mut base_env: Vec<(String, String)> = [
            ("ZRING_CORES", "2"),
            ("ZRING_LOCAL_XDS_POLL_MS", "50"),
            ("RUST_LOG", "info"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in env {
            base_env.retain(|(name, _)| name != k);
            base_env.push((k.to_string(), v.to_string()));
        }
        Ok(Mesh {
            lab,
            config: path,
            ca_dir,
            proxy: Box::new(proxy),
            node_proxies: Vec::new(),
            base_env,
            zring: Vec::new(),
            agents: None,
        })
    }

    /// In-pod mode: the fake istio-cni agent of `node` (to add or delete pods by hand).
    /// Panics in node mode or for a node never started.
    pub fn agent(&mut self, node: &str) -> &mut FakeAgent {
        self.agents
            .as_mut()
            .and_then(|a| a.iter_mut().find(|(n, _)| n == node))
            .map(|(_, a)| a)
            .unwrap_or_else(|| panic!("no in-pod agent on node {node:?}"))
    }

    /// The agent uid and `WorkloadInfo` the in-pod agent enrolls lab pod `pod` with: those of
    /// the config's workload at the pod's IP (IPv4, else one of its IPv6 addresses), `None` when the config has none there.
    pub fn enrollment(&self, pod: &str) -> Option<(String, WorkloadInfo)> {
        let text = std::fs::read_to_string(&self.config).ok()?;
        let snapshot = crate::xds::local::parse(&text).ok()?;
        let ip = self.lab.pod(pod).ip();
        // A v6-only pod (`Lab::remove_pod_ipv4`) is found by its IPv6 addresses.
        let v6 = self.lab.pod_ipv6(pod).unwrap_or_default();
        let w = std::iter::once(ip.into())
            .chain(v6.into_iter().map(Into::into))
            .find_map(|a| snapshot.workload_by_ip(a))?;
        Some((
            w.uid.to_string(),
            WorkloadInfo {
                name: w.name.to_string(),
                namespace: w.namespace.to_string(),
                service_account: w.service_account.to_string(),
            },
        ))
    }

    /// The agent socket path of `node` (in-pod mode), its agent listening there: created on
    /// first use, kept across restarts of the node's zring.
    fn agent_path(&mut self, node: &str) -> Result<Option<PathBuf>, LabError> {
        let path = self.lab.dir().join(format!("cni-{node}.sock"));
        let Some(agents) = self.agents.as_mut() else {
            return Ok(None);
        };
        if !agents.iter().any(|(n, _)| n == node) {
            let agent = FakeAgent::listen(&path).map_err(cni_error("agent"))?;
            agents.push((node.to_owned(), agent));
        }
        Ok(Some(path))
    }

    /// In-pod mode, once `node`'s zring is up: accepts its connection to the agent, installs
    /// istio-cni's rules in each of the node's pods the config knows, enrolls them and sends
    /// `snapshot_sent`; every ack must be a success.
    fn enroll_pods(&mut self, node: &str) -> Result<(), LabError> {
        let pods: Vec<(String, Netns)> = self
            .lab
            .pods()
            .iter()
            .filter(|p| p.node() == node)
            .map(|p| (p.name().to_owned(), p.netns().clone()))
            .collect();
        let enrolled: Vec<_> = pods
            .into_iter()
            .filter_map(|(name, ns)| self.enrollment(&name).map(|e| (e, ns)))
            .collect();
        let agent = self.agent(node);
        agent.accept().map_err(cni_error("accept"))?;
        for ((uid, info), ns) in &enrolled {
            cni::install_rules(ns, InpodRules { dns: false })?;
            let ack = agent.add(uid, info, ns).map_err(cni_error("add"))?;
            ack.map_err(|e| LabError::Topology(format!("add {uid} refused: {e}")))?;
        }
        let ack = agent.snapshot_sent().map_err(cni_error("snapshot_sent"))?;
        ack.map_err(|e| LabError::Topology(format!("snapshot_sent refused: {e}")))
    }

    /// Starts (or starts again) the node proxy on `node`, with `env` over the mesh's, and waits
    /// until it is ready. A previous process on that node must have exited or been killed.
    pub fn start_node(&mut self, node: &str, env: &[(&str, &str)]) -> Result<&Process, LabError> {
        self.launch(node, env, false)
    }

    /// Like [`start_node`](Self::start_node), with `proxy` instead of the mesh's on this node
    /// from now on (restarts too): a mesh of mixed node proxies.
    pub fn start_node_with(
        &mut self,
        node: &str,
        proxy: NodeProxy,
        env: &[(&str, &str)],
    ) -> Result<&Process, LabError> {
        self.node_proxies.retain(|(n, _)| n != node);
        self.node_proxies.push((node.to_owned(), proxy));
        self.launch(node, env, false)
    }

    /// The node proxy that runs on `node`.
    fn proxy_of(&self, node: &str) -> &NodeProxy {
        self.node_proxies
            .iter()
            .find(|(n, _)| n == node)
            .map_or(&*self.proxy, |(_, p)| p)
    }

    /// Like [`start_node`](Self::start_node), with the io_uring system calls refused to the
    /// process (a seccomp filter, as container runtimes often install).
    pub fn start_node_without_io_uring(
        &mut self,
        node: &str,
        env: &[(&str, &str)],
    ) -> Result<&Process, LabError> {
        self.launch(node, env, true)
    }

    fn launch(
        &mut self,
        node: &str,
        env: &[(&str, &str)],
        deny_io_uring: bool,
    ) -> Result<&Process, LabError> {
        let proxy = self.proxy_of(node).clone();
        let agent = self.agent_path(node)?;
        let mut cmd = Command::new(&proxy.binary);
        cmd.args(&proxy.args)
            .env("NODE_NAME", node)
            .env("ZRING_DEV_CA_DIR", &self.ca_dir)
            .env("ZRING_ADMIN_SOCKET", self.admin_socket(node));
        let from_xds = self
            .base_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(env.iter().copied())
            .any(|(k, v)| k == "XDS_ADDRESS" && !v.is_empty());
        if !from_xds {
            cmd.env("LOCAL_XDS_PATH", &self.config);
            cmd.env("XDS_ADDRESS", "");
        }
        // The development CA unless the test names a CA (unset would mean istiod).
        cmd.env("CA_ADDRESS", "");
        for (k, v) in &proxy.env {
            cmd.env(k, v);
        }
        for (k, v) in &self.base_env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(path) = &agent {
            cmd.env("INPOD_UDS", path);
        }
        let ns = self.lab.node(node);
        let p = if deny_io_uring {
            self.lab.spawn_process_without_io_uring(ns, cmd)?
        } else {
            self.lab.spawn_process(ns, cmd)?
        };
        match &proxy.ready {
            Ready::Logged(needle) => p.wait_for_log(needle, READY_TIMEOUT)?,
            Ready::Listening(ports) => {
                let what = format!("listeners on {ports:?}");
                p.wait_for(&what, READY_TIMEOUT, || {
                    let open = listening_ports(p.pid());
                    ports.iter().all(|port| open.contains(port))
                })?
            }
        }
        self.zring.retain(|(n, _)| n != node);
        self.zring.push((node.to_owned(), p));
        if agent.is_some() {
            self.enroll_pods(node)?;
        }
        Ok(&self.zring.last().expect("just pushed").1)
    }

    /// The admin Unix socket of zring on `node` (each node its own, in the lab's directory).
    pub fn admin_socket(&self, node: &str) -> PathBuf {
        self.lab.dir().join("admin").join(format!("{node}.sock"))
    }

    /// The node proxy process on `node`. Panics if none was started there.
    pub fn zring(&self, node: &str) -> &Process {
        self.zring
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("no zring on node {node:?}"))
    }

    /// Everything zring on `node` has logged.
    pub fn log(&self, node: &str) -> String {
        self.zring(node).log()
    }

    /// Every zring's log, labelled, for failure messages.
    pub fn logs(&self) -> String {
        self.zring
            .iter()
            .map(|(n, p)| {
                let program = self.proxy_of(n).binary.file_name().unwrap_or_default();
                let program = program.to_string_lossy();
                format!("--- {program} on node {n}:\n{}\n", p.log())
            })
            .collect()
    }

    /// Waits until zring on `node` has logged `needle` at least `n` times.
    pub fn eventually_logged(&self, node: &str, needle: &str, n: usize) -> Result<(), LabError> {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            let log = self.log(node);
            if log.matches(needle).count() >= n {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("{needle:?} ×{n} in the log of zring on {node}"),
                    timeout: LOG_TIMEOUT,
                    tail: log,
                });
            }
            #[expect(clippy::disallowed_methods, reason = "a test thread, not a core")]
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `condition` holds; on timeout the error names `what` and carries every
    /// zring's log.
    pub fn eventually(
        &self,
        what: &str,
        mut condition: impl FnMut() -> bool,
    ) -> Result<(), LabError> {
        let deadline = Instant::now() + LOG_TIMEOUT;
        while !condition() {
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: what.to_owned(),
                    timeout: LOG_TIMEOUT,
                    tail: self.logs(),
                });
            }
            #[expect(clippy::disallowed_methods, reason = "a test thread, not a core")]
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// GETs `path` from zring's metrics port on `node` (from inside the node's namespace) and
    /// parses the answer. Panics unless it is a 200 in the text format.
    pub fn scrape_path(&self, node: &str, path: &str) -> Scrape {
        let addr = SocketAddr::from(([127, 0, 0, 1], STATS_PORT));
        let path = path.to_owned();
        let a = self
            .lab
            .node(node)
            .run(move || http::get(addr, &path))
            .unwrap_or_else(|e| panic!("scraping node {node}: {e}\n{}", self.logs()));
        assert_eq!(a.status, 200, "scraping node {node}: {a:?}");
        Scrape::parse(a.body).unwrap_or_else(|e| panic!("node {node}: {e}"))
    }

    /// `/metrics` of zring on `node`.
    pub fn scrape(&self, node: &str) -> Scrape {
        self.scrape_path(node, "/metrics")
    }

    /// Starts an exchange server (see [`traffic`]) in `pod` on `port` for `conns` connections.
    pub fn serve(&self, pod: &str, port: u16, conns: usize) -> Result<(), LabError> {
        let listener = self
            .lab
            .pod(pod)
            .run(move || TcpListener::bind(("0.0.0.0", port)))
            .map_err(|source| LabError::Io {
                context: format!("listening on {pod}:{port}"),
                source,
            })?;
        traffic::spawn_server(listener, Some(conns));
        Ok(())
    }

    /// Starts an echo server (see [`traffic::spawn_echo`]) in `pod` on `port`.
    pub fn echo(&self, pod: &str, port: u16) -> Result<(), LabError> {
        let listener = self
            .lab
            .pod(pod)
            .run(move || TcpListener::bind(("0.0.0.0", port)))
            .map_err(|source| LabError::Io {
                context: format!("listening on {pod}:{port}"),
                source,
            })?;
        traffic::spawn_echo(listener);
        Ok(())
    }

    /// One checksummed exchange from `pod` to `to`: `up` bytes up, `down` bytes down.
    pub fn exchange(
        &self,
        pod: &str,
        to: SocketAddr,
        up: u64,
        down: u64,
    ) -> Result<Report, String> {
        self.lab.pod(pod).run(move || {
            let s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
                .map_err(|e| format!("connect {to}: {e}"))?;
            traffic::exchange(s, up, down, up ^ down ^ 0xfeed).map_err(|e| e.to_string())
        })
    }

    /// An exchange that must succeed; the panic message carries every zring's log.
    pub fn must_exchange(&self, pod: &str, to: SocketAddr, up: u64, down: u64) -> Report {
        self.exchange(pod, to, up, down)
            .unwrap_or_else(|e| panic!("{pod} → {to}: {e}\n{}", self.logs()))
    }
}

fn cni_error(what: &'static str) -> impl FnOnce(CniError) -> LabError {
    move |e| LabError::Io {
        context: format!("fake istio-cni agent: {what}"),
        source: std::io::Error::other(e.to_string()),
    }
}

/// TCP ports with a listening socket in the network namespace of process `pid` (IPv4 and IPv6
/// tables of `/proc/<pid>/net`, which show that process's namespace). Empty if unreadable.
pub fn listening_ports(pid: u32) -> BTreeSet<u16> {
    const LISTEN: &str = "0A";
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| {
                    let mut fields = line.split_whitespace();
                    let local = fields.nth(1)?;
                    let state = fields.nth(1)?;
                    let port = local.rsplit_once(':')?.1;
                    (state == LISTEN)
                        .then(|| u16::from_str_radix(port, 16).ok())
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listeners_are_found() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(listening_ports(std::process::id()).contains(&port));
        drop(l);
        assert!(!listening_ports(std::process::id()).contains(&port));
    }
}

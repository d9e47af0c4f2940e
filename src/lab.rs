//! Throw-away Kubernetes-like topologies built from network namespaces, for `zring demo`, the
//! integration tests and the benches: nodes joined by an underlay bridge, pods behind them, the
//! node-level capture rules zring expects ([`Lab::redirect`]), and threads or processes running
//! inside any of them. A [`Lab`] always cleans up after itself, on panic too.
//!
//! Runs on the thread that owns the `Lab` (a test thread, `zring demo`'s main thread). Building
//! and dropping block on `ip`/`nft` invocations; nothing here is data-plane code.
//!
//! ```text
//!  underlay ns: bridge br0 ── zu-a ┄┄ eth0 172.31.0.11/24 (node a) ── zp-appa ┄┄ eth0 10.244.1.8/32 (pod appa)
//!                         └── zu-b ┄┄ eth0 172.31.0.12/24 (node b) ── zp-appb ┄┄ eth0 10.244.2.4/32 (pod appb)
//! ```
//!
//! - A pod's `eth0` holds its IP as /32, a link route to its gateway (the first address of the
//!   node's pod CIDR) and `default via` the gateway. The node side of the pair, `zp-<pod>` (or
//!   `zp<hash>` for long names), holds the gateway as /32, and the node routes the pod's /32
//!   through it. Nodes route each other's pod CIDRs via the other node's underlay IP.
//! - Every namespace has `lo` up and reverse-path filtering off; nodes forward.
//!
//! Invariants (the workplace's safety rule: test traffic never leaves namespaces we made):
//! - nothing is ever created or configured in the root namespace: namespaces start empty, veth
//!   pairs are created from inside one lab namespace straight into another
//!   (`ip -n NS link add eth0 type veth peer name X netns OTHER`), and no namespace gets a link to
//!   the root namespace;
//! - every namespace name is `zr<pid>-<lab seq>-<role>` (module `ns`), unique per process and
//!   lab, so labs on parallel test threads never collide, and leftovers of dead processes are
//!   swept by the next [`Lab::new`];
//! - `Drop` kills the lab's processes (and anything else still inside its namespaces), deletes
//!   every namespace it made (with them every veth, bridge, route, rule and nft table) and
//!   removes its temp dir unless `ZRING_LAB_KEEP=1`. A run killed outright (SIGKILL, or SIGINT
//!   without a handler that drops the lab) cannot unwind: its namespaces and processes stay
//!   until the next [`Lab::new`] sweeps them.
//!
//! [`traffic`] beside it makes checksummed test traffic over plain `std::net` sockets.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    reason = "test tooling on plain threads: std locks and sleeps are fine outside the data plane"
)]

pub mod cni;
pub mod dns;
mod dual;
pub mod http;
pub mod kubeproxy;
pub mod mesh;
mod ns;
pub mod peers;
mod process;
pub mod prom;
pub mod scale;
pub mod soak;
pub mod tools;
pub mod traffic;
pub mod waypoint;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use crate::capture::{
    CAPTURE_MARK, CAPTURE_TABLE, Capture, Cidr, INBOUND_HBONE_PORT, INBOUND_PLAINTEXT_PORT,
    OUTBOUND_PORT, POD_SET, RuleCounter, Scope, ZRING_MARK, ruleset,
};
pub use dual::{SEED_APPA6, SEED_APPB6};
pub use mesh::{Mesh, NodeProxy, Ready};
pub use ns::Netns;
pub use process::Process;

use crate::capture::{self, cmd};

/// Declares, for each named test function taking the driver name (`"uring"` or `"legacy"`), a
/// module with one `#[test]` per driver, so every end-to-end test runs under both.
#[macro_export]
macro_rules! on_both_drivers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn uring() {
                super::$name("uring")
            }
            #[test]
            fn legacy() {
                super::$name("legacy")
            }
        }
    )*};
}

/// Prefix length of the underlay network all nodes share.
pub const UNDERLAY_PREFIX: u8 = 24;
/// Environment variable that keeps a lab's temp dir (logs) after it drops.
pub const KEEP_ENV: &str = "ZRING_LAB_KEEP";

/// Everything that can go wrong building, running or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (effective uid 0) to create network namespaces; run as root")]
    NotRoot,
    /// `ip` or `nft` missing and not installable; the message names the package.
    #[error(transparent)]
    Tools(#[from] tools::ToolError),
    /// Running `ip` or `nft`, a CIDR, or the capture rules (see `capture`).
    #[error(transparent)]
    Capture(#[from] crate::capture::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("bad lab topology: {0}")]
    Topology(String),
    #[error("timed out after {timeout:?} waiting for {what}; log tail:\n{tail}")]
    Timeout {
        what: String,
        timeout: Duration,
        tail: String,
    },
    #[error("gave up waiting for {what}: the process exited ({status}); log tail:\n{tail}")]
    Exited {
        what: String,
        status: String,
        tail: String,
    },
}

/// A node: a namespace with an underlay `eth0` and a pod CIDR. Derefs to its [`Netns`], so
/// `node.spawn(..)`, `node.run(..)` and `node.ip(..)` run inside it.
#[derive(Debug)]
pub struct Node {
    name: String,
    netns: Netns,
    underlay_ip: Ipv4Addr,
    pod_cidr: Cidr,
}

impl Node {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn underlay_ip(&self) -> Ipv4Addr {
        self.underlay_ip
    }

    pub fn pod_cidr(&self) -> Cidr {
        self.pod_cidr
    }

    /// The gateway address every pod of this node routes through.
    pub fn gateway(&self) -> Ipv4Addr {
        self.pod_cidr.gateway()
    }
}

impl std::ops::Deref for Node {
    type Target = Netns;

    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// A pod: a namespace with `eth0` = its IP/32 behind its node. Derefs to its [`Netns`].
#[derive(Debug)]
pub struct Pod {
    name: String,
    netns: Netns,
    ip: Ipv4Addr,
    node: String,
    gateway: Ipv4Addr,
    host_if: String,
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Name of the node the pod runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The node-side end of the pod's veth (`zp…`), which the capture rules match on.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }
}

impl std::ops::Deref for Pod {
    type Target = Netns;

    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// Hands out lab numbers, unique within the process.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A topology of namespaces that exists as long as this value does.
#[derive(Debug)]
pub struct Lab {
    /// `zr<pid>-<seq>-`: every namespace name of this lab starts with it.
    prefix: String,
    /// Per-lab temp dir: process logs.
    dir: PathBuf,
    /// `ZRING_LAB_KEEP=1`: keep `dir` on drop and say where it is.
    keep: bool,
    /// Holds the bridge every node's `eth0` is plugged into.
    underlay: Netns,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    /// Every namespace created so far, in order, including half-configured ones, so a failure
    /// mid-build still cleans up everything.
    created: Vec<String>,
    /// Every process started, killed on drop if still running.
    processes: Mutex<Vec<Process>>,
    /// Which pods [`redirect`](Self::redirect) captures: enrolled ones (the default, as on a
    /// real node), or every pod address.
    scope: Scope,
    /// Whether [`Lab::redirect`] also captures pods' DNS (the rules `zring redirect` adds with
    /// `ISTIO_META_DNS_CAPTURE=true`).
    dns: bool,
}

impl Lab {
    /// An empty lab: the underlay namespace with its bridge, no nodes yet.
    ///
    /// Fails, never skips, if not root. Installs `ip` and `nft` if missing ([`tools::ensure`])
    /// and fails if it cannot. Sweeps namespaces left behind by lab processes that no longer
    /// exist.
    pub fn new() -> Result<Lab, LabError> {
        if !crate::sys::is_root() {
            return Err(LabError::NotRoot);
        }
        tools::ensure(&[tools::Tool::Ip, tools::Tool::Nft])?;
        for name in ns::sweep_stale()? {
            tracing::info!(namespace = %name, "removed a namespace left by a dead lab process");
        }
        let seq = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = ns::lab_prefix(seq);
        let dir = std::env::temp_dir().join(format!("zring-lab-{}-{seq}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            context: format!("cannot create {}", dir.display()),
            source,
        })?;
        let mut lab = Lab {
            underlay: Netns::named(&format!("{prefix}u")),
            prefix,
            dir,
            keep: std::env::var(KEEP_ENV).is_ok_and(|v| v == "1"),
            nodes: Vec::new(),
            pods: Vec::new(),
            created: Vec::new(),
            processes: Mutex::new(Vec::new()),
            scope: Scope::Enrolled,
            dns: false,
        };
        let underlay = lab.make_ns("u")?;
        underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
        underlay.ip(&["link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// The seed's two-node topology: node `a` (underlay 172.31.0.11, pods 10.244.1.0/24) with pod
    /// `appa` 10.244.1.8, and node `b` (172.31.0.12, 10.244.2.0/24) with pod `appb` 10.244.2.4.
    /// No capture rules yet: call [`redirect`](Self::redirect) per node.
    pub fn seed() -> Result<Lab, LabError> {
        let mut lab = Lab::new()?;
        lab.add_node("a", Ipv4Addr::new(172, 31, 0, 11), "10.244.1.0/24".parse()?)?;
        lab.add_node("b", Ipv4Addr::new(172, 31, 0, 12), "10.244.2.0/24".parse()?)?;
        lab.add_pod("a", "appa", Ipv4Addr::new(10, 244, 1, 8))?;
        lab.add_pod("b", "appb", Ipv4Addr::new(10, 244, 2, 4))?;
        Ok(lab)
    }

    /// Adds a node with `eth0` = `underlay_ip`/[`UNDERLAY_PREFIX`] on the underlay bridge,
    /// forwarding on, and routes between its pod CIDR and every other node's.
    pub fn add_node(
        &mut self,
        name: &str,
        underlay_ip: Ipv4Addr,
        pod_cidr: Cidr,
    ) -> Result<&Node, LabError> {
        check_name(&self.nodes, &self.pods, name)?;
        check_node_addrs(&self.nodes, underlay_ip, pod_cidr)?;
        let netns = self.make_ns(&format!("n-{name}"))?;
        netns.sysctls(&[("net.ipv4.ip_forward", "1")])?;
        let (uplink, underlay) = (if_name("zu", name), self.underlay.name());
        netns.ip_line(&format!(
            "link add eth0 type veth peer name {uplink} netns {underlay}"
        ))?;
        self.underlay
            .ip_line(&format!("link set {uplink} master br0 up"))?;
        netns.ip_line(&format!(
            "addr add {underlay_ip}/{UNDERLAY_PREFIX} dev eth0"
        ))?;
        netns.ip_line("link set eth0 up")?;
        netns.sysctls(&[("net.ipv4.conf.eth0.rp_filter", "0")])?;
        for other in &self.nodes {
            let (theirs, their_ip) = (other.pod_cidr, other.underlay_ip);
            netns.ip_line(&format!("route add {theirs} via {their_ip} dev eth0"))?;
            other.ip_line(&format!("route add {pod_cidr} via {underlay_ip} dev eth0"))?;
        }
        self.nodes.push(Node {
            name: name.to_owned(),
            netns,
            underlay_ip,
            pod_cidr,
        });
        Ok(self.nodes.last().expect("just pushed"))
    }

    /// Adds a pod with `eth0` = `ip`/32 behind node `node`.
    pub fn add_pod(&mut self, node: &str, name: &str, ip: Ipv4Addr) -> Result<&Pod, LabError> {
        check_name(&self.nodes, &self.pods, name)?;
        let host = self
            .get_node(node)
            .ok_or_else(|| LabError::Topology(format!("no node {node:?}")))?;
        let (cidr, gateway, host_ns) = (host.pod_cidr, host.gateway(), host.netns.clone());
        if !cidr.contains(ip) || ip == cidr.addr() || ip == gateway || ip == cidr.broadcast() {
            return Err(LabError::Topology(format!(
                "pod IP {ip} must be a host address of {cidr} other than the gateway {gateway}"
            )));
        }
        if self.pods.iter().any(|p| p.ip == ip) {
            return Err(LabError::Topology(format!("pod IP {ip} is taken")));
        }
        let host_if = if_name("zp", name);
        if self
            .pods
            .iter()
            .any(|p| p.node == node && p.host_if == host_if)
        {
            return Err(LabError::Topology(format!(
                "interface name {host_if} collides on node {node}"
            )));
        }
        let netns = self.make_ns(&format!("p-{name}"))?;
        let node_ns = host_ns.name();
        netns.ip_line(&format!(
            "link add eth0 type veth peer name {host_if} netns {node_ns}"
        ))?;
        netns.sysctls(&[("net.ipv4.conf.eth0.rp_filter", "0")])?;
        host_ns.sysctls(&[(format!("net.ipv4.conf.{host_if}.rp_filter"), "0")])?;
        // Both ends up before any route: a route through a down link is refused.
        host_ns.ip_line(&format!("link set {host_if} up"))?;
        netns.ip_line("link set eth0 up")?;
        host_ns.ip_line(&format!("addr add {gateway}/32 dev {host_if}"))?;
        host_ns.ip_line(&format!("route add {ip}/32 dev {host_if}"))?;
        netns.ip_line(&format!("addr add {ip}/32 dev eth0"))?;
        netns.ip_line(&format!("route add {gateway} dev eth0 scope link"))?;
        netns.ip_line(&format!("route add default via {gateway} dev eth0"))?;
        self.pods.push(Pod {
            name: name.to_owned(),
            netns,
            ip,
            node: node.to_owned(),
            gateway,
            host_if,
        });
        Ok(self.pods.last().expect("just pushed"))
    }

    /// Installs node-level capture in `node` (see the `capture` module doc for every rule):
    /// nft `table ip zring` and `table ip6 zring` (the node's IPv6 pod prefix, see `dual`) and
    /// policy routing `fwmark 0x111 → table 133 → local` of both families. Calling it again
    /// replaces the tables atomically.
    pub fn redirect(&self, node: &Node) -> Result<(), LabError> {
        self.check_own(node)?;
        let prefix6 = capture::Cidr6::new(self.pod_prefix6(&node.name)?, 64)?;
        capture::install(
            capture::Place::Netns(node.netns.name()),
            &Capture::lab(node.pod_cidr)
                .with_cidrs6(vec![prefix6])
                .with_scope(self.scope)
                .with_dns(self.dns),
        )?;
        Ok(())
    }

    /// From now on [`redirect`](Self::redirect) captures every address of a node's pod CIDR
    /// ([`Scope::EveryPodAddress`]) instead of the enrolled pods zring puts in the set: for
    /// tests whose workloads speak plain TCP behind zring nodes, and node proxies that keep no
    /// set.
    pub fn capture_every_pod_address(&mut self) {
        self.scope = Scope::EveryPodAddress;
    }

    /// From now on [`redirect`](Self::redirect) also sends enrolled pods' DNS to the node's
    /// DNS proxy on 15053. Call it before the mesh starts: zring's capture watch takes the
    /// table it finds as its baseline and undoes later edits.
    pub fn capture_dns(&mut self) {
        self.dns = true;
    }

    /// Installs kube-proxy's service rules in `node`, in `mode` (see [`kubeproxy`]), replacing
    /// the ones installed before.
    pub fn kube_proxy(
        &self,
        node: &Node,
        mode: kubeproxy::Mode,
        services: &[kubeproxy::Service],
    ) -> Result<(), LabError> {
        self.check_own(node)?;
        let pod_cidrs: Vec<Cidr> = self.nodes.iter().map(|n| n.pod_cidr).collect();
        cmd::nft_in(
            node.netns.name(),
            &["-f", "-"],
            Some(&kubeproxy::script(mode, services, &pod_cidrs)),
        )?;
        Ok(())
    }

    /// Makes `ips` the enrolled pods of `node`'s capture set, as zring would: for tests that
    /// stand in for zring with their own listeners.
    pub fn enroll(&self, node: &Node, ips: &[Ipv4Addr]) -> Result<(), LabError> {
        let ips: Vec<std::net::IpAddr> = ips.iter().map(|ip| (*ip).into()).collect();
        self.enroll_ips(node, &ips)
    }

    /// [`enroll`](Self::enroll) with addresses of either family: each goes to its family's set.
    pub fn enroll_ips(&self, node: &Node, ips: &[std::net::IpAddr]) -> Result<(), LabError> {
        self.check_own(node)?;
        let wanted = ips.iter().copied().collect();
        let script = capture::enrolled::update_script(None, &wanted, &capture::Family::ALL)
            .expect("a refill");
        cmd::nft_in(node.netns.name(), &["-f", "-"], Some(&script))?;
        Ok(())
    }

    /// Packets kube-proxy's DNAT rules (of `mode`) in `node` have rewritten so far.
    pub fn kube_proxy_dnat_packets(
        &self,
        node: &Node,
        mode: kubeproxy::Mode,
    ) -> Result<u64, LabError> {
        self.check_own(node)?;
        let table = match mode {
            kubeproxy::Mode::Iptables => "nat",
            kubeproxy::Mode::Nftables => "kube-proxy",
        };
        let listing = cmd::nft_in(node.netns.name(), &["list", "table", "ip", table], None)?;
        Ok(kubeproxy::dnat_packets(&listing))
    }

    /// Packet counters of every capture rule in `node` (empty names none: it was never
    /// redirected). Lets a test prove which rule carried its traffic.
    pub fn rule_counters(&self, node: &Node) -> Result<Vec<RuleCounter>, LabError> {
        self.check_own(node)?;
        Ok(capture::counters(capture::Place::Netns(node.netns.name()))?)
    }

    /// [`rule_counters`](Self::rule_counters) of `node`'s IPv6 table (`table ip6 zring`).
    pub fn rule_counters6(&self, node: &Node) -> Result<Vec<RuleCounter>, LabError> {
        self.check_own(node)?;
        Ok(capture::counters_of(
            capture::Place::Netns(node.netns.name()),
            capture::Family::V6,
        )?)
    }

    /// Starts `command` inside `ns` (a node, a pod, or any of this lab's namespaces) through
    /// `ip netns exec`; its stdout and stderr go to a log file in [`dir`](Self::dir). The lab
    /// kills it on drop if it still runs.
    pub fn spawn_process(&self, ns: &Netns, command: Command) -> Result<Process, LabError> {
        self.spawn(ns, command, false)
    }

    /// Like [`spawn_process`](Self::spawn_process), under a seccomp filter that refuses the
    /// io_uring system calls: the program runs where io_uring is unavailable.
    pub fn spawn_process_without_io_uring(
        &self,
        ns: &Netns,
        command: Command,
    ) -> Result<Process, LabError> {
        self.spawn(ns, command, true)
    }

    fn spawn(
        &self,
        ns: &Netns,
        command: Command,
        deny_io_uring: bool,
    ) -> Result<Process, LabError> {
        if !self.created.iter().any(|n| n == ns.name()) {
            return Err(LabError::Topology(format!(
                "namespace {} is not part of this lab",
                ns.name()
            )));
        }
        let mut processes = self
            .processes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let program = Path::new(command.get_program())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let role = ns.name().strip_prefix(&self.prefix).unwrap_or(ns.name());
        let log = self
            .dir
            .join(format!("{:02}-{role}-{program}.log", processes.len()));
        let process = process::spawn(ns, &command, log, deny_io_uring)?;
        processes.push(process.clone());
        Ok(process)
    }

    /// The node named `name`. Panics if there is none (a test's typo should fail loudly).
    pub fn node(&self, name: &str) -> &Node {
        self.get_node(name)
            .unwrap_or_else(|| panic!("lab has no node {name:?}"))
    }

    /// The pod named `name`. Panics if there is none.
    pub fn pod(&self, name: &str) -> &Pod {
        self.get_pod(name)
            .unwrap_or_else(|| panic!("lab has no pod {name:?}"))
    }

    pub fn get_node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn get_pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// The namespace holding the underlay bridge.
    pub fn underlay(&self) -> &Netns {
        &self.underlay
    }

    /// Names of every namespace this lab made (and will delete).
    pub fn namespaces(&self) -> Vec<String> {
        self.created.clone()
    }

    /// The lab's temp dir, where process logs go.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates namespace `<prefix><role>` and records it for cleanup before configuring it.
    fn make_ns(&mut self, role: &str) -> Result<Netns, LabError> {
        let netns = ns::add(&format!("{}{role}", self.prefix))?;
        self.created.push(netns.name().to_owned());
        ns::prepare(&netns)?;
        Ok(netns)
    }

    fn check_own(&self, node: &Node) -> Result<(), LabError> {
        if self.nodes.iter().any(|n| std::ptr::eq(n, node)) {
            Ok(())
        } else {
            Err(LabError::Topology(format!(
                "node {} is not part of this lab",
                node.name
            )))
        }
    }
}

impl Drop for Lab {
    /// Never panics (it runs during unwinding too): failures are reported on stderr.
    fn drop(&mut self) {
        let processes = std::mem::take(self.processes.get_mut().unwrap_or_else(|p| p.into_inner()));
        for process in processes {
            if let Err(e) = process.kill() {
                eprintln!("zring lab: {e}");
            }
        }
        // Pods first, underlay last: each deletion also takes the peer ends of its veths.
        for name in self.created.iter().rev() {
            if let Err(e) = ns::delete(name) {
                eprintln!("zring lab: cannot delete namespace {name}: {e}");
            }
        }
        if self.keep {
            eprintln!(
                "zring lab: {KEEP_ENV}=1, logs kept in {}",
                self.dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("zring lab: cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// Node and pod names share one space: lowercase letters, digits and inner dashes, at most 40.
fn check_name(nodes: &[Node], pods: &[Pod], name: &str) -> Result<(), LabError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty()
        || name.len() > 40
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(LabError::Topology(format!(
            "name {name:?}: use 1-40 of a-z, 0-9 and inner dashes"
        )));
    }
    if nodes.iter().any(|n| n.name == name) || pods.iter().any(|p| p.name == name) {
        return Err(LabError::Topology(format!("name {name:?} is taken")));
    }
    Ok(())
}

fn check_node_addrs(nodes: &[Node], underlay_ip: Ipv4Addr, pod_cidr: Cidr) -> Result<(), LabError> {
    let net = Cidr::new(
        Ipv4Addr::from(u32::from(underlay_ip) & (u32::MAX << (32 - UNDERLAY_PREFIX))),
        UNDERLAY_PREFIX,
    )?;
    if underlay_ip == net.addr() || underlay_ip == net.broadcast() {
        return Err(LabError::Topology(format!(
            "{underlay_ip} is not a host address of {net}"
        )));
    }
    if pod_cidr.prefix() > 30 || pod_cidr.overlaps(net) {
        return Err(LabError::Topology(format!(
            "pod CIDR {pod_cidr} must be /30 or wider and apart from the underlay {net}"
        )));
    }
    for other in nodes {
        if other.underlay_ip == underlay_ip || !net.contains(other.underlay_ip) {
            return Err(LabError::Topology(format!(
                "underlay IP {underlay_ip} must be new and share {net} with node {}",
                other.name
            )));
        }
        if other.pod_cidr.overlaps(pod_cidr) {
            return Err(LabError::Topology(format!(
                "pod CIDR {pod_cidr} overlaps node {}'s {}",
                other.name, other.pod_cidr
            )));
        }
    }
    Ok(())
}

/// An interface name `<prefix>-<name>` if it fits Linux's 15 bytes, else `<prefix>` and a hash
/// of `name` (13 hex digits), so long pod names still get a unique, stable interface.
fn if_name(prefix: &str, name: &str) -> String {
    const IFNAMSIZ_MAX: usize = 15;
    let plain = format!("{prefix}-{name}");
    if plain.len() <= IFNAMSIZ_MAX {
        return plain;
    }
    // FNV-1a: stable across runs and Rust versions, unlike std's hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let digits = IFNAMSIZ_MAX - prefix.len();
    format!("{prefix}{:0digits$x}", hash & ((1u64 << (4 * digits)) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, underlay: [u8; 4], cidr: &str) -> Node {
        Node {
            name: name.into(),
            netns: Netns::named("unused"),
            underlay_ip: underlay.into(),
            pod_cidr: cidr.parse().unwrap(),
        }
    }

    #[test]
    fn names_are_checked() {
        let nodes = [node("a", [172, 31, 0, 11], "10.244.1.0/24")];
        assert!(check_name(&nodes, &[], "appa").is_ok());
        assert!(check_name(&nodes, &[], "a-1").is_ok());
        for bad in ["a", "", "-x", "x-", "Appa", "a.b", "a b", &"x".repeat(41)] {
            assert!(check_name(&nodes, &[], bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_addresses_are_checked() {
        let nodes = [node("a", [172, 31, 0, 11], "10.244.1.0/24")];
        let ok =
            |ip: [u8; 4], cidr: &str| check_node_addrs(&nodes, ip.into(), cidr.parse().unwrap());
        assert!(ok([172, 31, 0, 12], "10.244.2.0/24").is_ok());
        assert!(
            ok([172, 31, 0, 11], "10.244.2.0/24").is_err(),
            "same underlay IP"
        );
        assert!(
            ok([172, 31, 1, 12], "10.244.2.0/24").is_err(),
            "other underlay /24"
        );
        assert!(ok([172, 31, 0, 255], "10.244.2.0/24").is_err(), "broadcast");
        assert!(
            ok([172, 31, 0, 12], "10.244.0.0/16").is_err(),
            "overlapping pod CIDR"
        );
        assert!(
            ok([172, 31, 0, 12], "172.31.0.0/25").is_err(),
            "pod CIDR in the underlay"
        );
        assert!(
            ok([172, 31, 0, 12], "10.244.2.0/31").is_err(),
            "no room for pods"
        );
    }

    #[test]
    fn interface_names_fit_and_stay_unique() {
        assert_eq!(if_name("zp", "appa"), "zp-appa");
        assert_eq!(if_name("zp", "twelve-chars"), "zp-twelve-chars");
        let long = if_name("zp", "a-rather-long-pod-name-1");
        assert_eq!(long.len(), 15);
        assert!(long.starts_with("zp") && !long.starts_with("zp-"));
        assert_ne!(long, if_name("zp", "a-rather-long-pod-name-2"));
        assert_eq!(long, if_name("zp", "a-rather-long-pod-name-1"));
    }
}

//! Configuration: environment variables (ztunnel's names where the meaning matches, `ZRING_*`
//! for our own knobs), validated once at start-up on the main thread.
//!
//! The result is an immutable [`Config`] shared by every thread through an `Arc`. A bad value is
//! a [`ConfigError`] naming the variable, which `main` prints on one line before exiting non-zero;
//! nothing downstream re-validates.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::grpc::{Target, TokenFile};

/// ztunnel's default locations (it runs from `/`) for the mesh root and the istiod token.
pub const DEFAULT_ROOT_CA: &str = "/var/run/secrets/istio/root-cert.pem";
pub const DEFAULT_AUTH_TOKEN: &str = "/var/run/secrets/tokens/istio-token";
/// ztunnel's control-plane address when `XDS_ADDRESS` / `CA_ADDRESS` are unset, in a
/// Kubernetes pod (`KUBERNETES_SERVICE_HOST` set) and elsewhere.
pub const ISTIOD_IN_CLUSTER: &str = "https://istiod.istio-system.svc:15012";
pub const ISTIOD_LOCAL: &str = "https://localhost:15012";
/// Environment variables with this prefix become xDS node metadata (prefix stripped), as in
/// ztunnel and the Istio agent.
pub const ISTIO_META_PREFIX: &str = "ISTIO_META_";
/// istio-cni's node agent socket when `INPOD_UDS` is unset (ztunnel's default).
pub const DEFAULT_INPOD_UDS: &str = "/var/run/ztunnel/ztunnel.sock";

/// Which monoio driver the cores run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverChoice {
    /// io_uring when the kernel offers it, epoll otherwise (seccomp often blocks io_uring).
    Auto,
    /// io_uring or fail at start-up.
    Uring,
    /// The epoll ("legacy") driver.
    Legacy,
}

/// How traffic reaches zring (`PROXY_MODE`, ztunnel's variable and values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// In-pod capture (`shared`, ztunnel's default): istio-cni hands each enrolled pod's netns
    /// over `INPOD_UDS` and zring listens on 15001/15006/15008 inside it, per core.
    Shared,
    /// Node-level TPROXY capture (`node`): zring listens in the node's netns with
    /// IP_TRANSPARENT, the node's nftables rules send enrolled pods' traffic there.
    Node,
}

/// The mode when `PROXY_MODE` is unset: in-pod, as in ztunnel (Istio >= 1.21 installs only
/// in-pod capture). Node-level capture is `PROXY_MODE=node`; every harness that means it sets
/// it explicitly.
pub const DEFAULT_PROXY_MODE: ProxyMode = ProxyMode::Shared;

impl ProxyMode {
    pub fn name(self) -> &'static str {
        match self {
            ProxyMode::Shared => "shared",
            ProxyMode::Node => "node",
        }
    }
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Plain,
    /// One JSON object per line, fields at the top level (`src.addr`, `dst.workload`, …).
    Json,
}

/// Ports zring listens on. A captured connection to one of them is refused: it would loop
/// back into zring or reach its control surface through the capture path.
pub const OWN_PORTS: [u16; 6] = [15000, 15001, 15006, 15008, 15020, 15021];

#[derive(Debug, Clone)]
pub struct Config {
    /// Kubernetes node this instance serves; workloads with the same `node` are local.
    pub node_name: String,
    /// In-pod (istio-cni hands pods over `inpod_uds`) or node-level capture.
    pub proxy_mode: ProxyMode,
    /// istio-cni's node agent socket, used in [`ProxyMode::Shared`] (`INPOD_UDS`).
    pub inpod_uds: PathBuf,
    pub cluster_id: String,
    pub trust_domain: String,
    pub pod_name: String,
    pub pod_namespace: String,
    /// zring's own service account (`SERVICE_ACCOUNT`, from the downward API in the chart).
    pub service_account: String,
    /// ztunnel-format local config; `None` runs with an empty snapshot (all passthrough).
    pub local_xds_path: Option<PathBuf>,
    /// How often the control thread checks `local_xds_path` for edits.
    pub local_xds_poll: Duration,
    /// SO_MARK on zring's own upstream sockets so capture rules skip them.
    pub packet_mark: u32,
    pub cores: usize,
    /// Pin core `i` to CPU `i % available CPUs`.
    pub pin_cores: bool,
    pub driver: DriverChoice,
    pub uring_entries: u32,
    /// Size of each copy buffer (two per proxied connection, pooled per core).
    pub buffer_size: usize,
    pub connect_timeout: Duration,
    pub listen_backlog: i32,
    pub outbound_addr: SocketAddr,
    pub inbound_plaintext_addr: SocketAddr,
    pub inbound_addr: SocketAddr,
    /// Admin API (`/config_dump`, `/logging`, `/quitquitquit`): loopback only.
    pub admin_addr: SocketAddr,
    /// Prometheus metrics (`/metrics`, `/stats/prometheus`).
    pub stats_addr: SocketAddr,
    /// Readiness probe (`/healthz/ready`).
    pub readiness_addr: SocketAddr,
    pub log_format: LogFormat,
    /// Most CONNECT streams one pooled HBONE connection carries at once.
    pub pool_max_streams: u32,
    /// An HBONE connection idle this long is closed.
    pub pool_idle_timeout: Duration,
    /// How long a drain (SIGTERM, `/quitquitquit`) lets open connections finish.
    pub drain_deadline: Duration,
    /// Where the built-in development CA keeps its root; zring processes sharing the
    /// directory share the root, so they trust each other.
    pub dev_ca_dir: PathBuf,
    /// istiod's Delta ADS endpoint; `None`: no xDS (the local file, or an empty snapshot).
    pub xds: Option<Target>,
    /// The Istio CA; `None`: the built-in development CA issues certificates.
    pub ca: Option<Target>,
    /// The mesh trust bundle workload certificates chain to when `ca` is set (`CA_ROOT_CA`).
    pub ca_root_ca: PathBuf,
    /// Requested workload certificate lifetime (the CA may shorten it).
    pub secret_ttl: Duration,
    /// This proxy's own IP, for the xDS node id (`INSTANCE_IP`).
    pub instance_ip: IpAddr,
    /// `ISTIO_META_*` variables, prefix stripped: extra xDS node metadata.
    pub proxy_metadata: BTreeMap<String, String>,
    /// How the control-plane addresses were chosen (default, set, disabled), one line each;
    /// `zring check` prints them, `zring run` logs them.
    pub notes: Vec<String>,
    /// ztunnel variables that are set but whose feature zring lacks, `NAME=value: what`;
    /// logged once at start-up (see [`NOT_IMPLEMENTED`]).
    pub not_implemented: Vec<String>,
}

/// One documented environment variable, for `--help` and the README.
#[derive(Debug)]
pub struct Var {
    pub name: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

pub const VARS: &[Var] = &[
    Var {
        name: "PROXY_MODE",
        default: "shared",
        help: "shared: in-pod capture, pods (and their netns) from istio-cni over INPOD_UDS, listeners inside each pod; node: node-level TPROXY capture in the node's netns",
    },
    Var {
        name: "INPOD_UDS",
        default: DEFAULT_INPOD_UDS,
        help: "istio-cni node agent's socket (ZDS), in shared mode",
    },
    Var {
        name: "LOCAL_XDS_PATH",
        default: "(none)",
        help: "ztunnel-format YAML with workloads, services, policies; re-read on change",
    },
    Var {
        name: "LOCAL_XDS",
        default: "(none)",
        help: "ztunnel's inline config; refused (write it to a file for LOCAL_XDS_PATH)",
    },
    Var {
        name: "NODE_NAME",
        default: "(hostname)",
        help: "node this instance serves; workloads on it are local",
    },
    Var {
        name: "CLUSTER_ID",
        default: "Kubernetes",
        help: "cluster name used in identities, metrics and baggage",
    },
    Var {
        name: "ISTIO_META_CLUSTER_ID",
        default: "(CLUSTER_ID)",
        help: "takes precedence over CLUSTER_ID, as in ztunnel (the chart sets this one)",
    },
    Var {
        name: "TRUST_DOMAIN",
        default: "cluster.local",
        help: "SPIFFE trust domain of this cluster",
    },
    Var {
        name: "POD_NAME",
        default: "(empty)",
        help: "zring's own pod name (xDS node metadata)",
    },
    Var {
        name: "POD_NAMESPACE",
        default: "(empty)",
        help: "zring's own pod namespace (xDS node metadata)",
    },
    Var {
        name: "SERVICE_ACCOUNT",
        default: "(empty)",
        help: "zring's own service account (the chart: ztunnel)",
    },
    Var {
        name: "PACKET_MARK",
        default: "1337",
        help: "SO_MARK on zring's upstream sockets (decimal or 0x hex)",
    },
    Var {
        name: "ZRING_CORES",
        default: "(CPU count)",
        help: "number of per-core runtimes, 1..=1024",
    },
    Var {
        name: "ZTUNNEL_WORKER_THREADS",
        default: "(none)",
        help: "ztunnel's thread count, used when ZRING_CORES is unset: N, or P% of the CPU count; 0: the CPU count",
    },
    Var {
        name: "ZTUNNEL_RESOURCE_CPU_LIMIT",
        default: "(none)",
        help: "the container's CPU limit (2, 1500m): the CPU count, rounded up",
    },
    Var {
        name: "ZTUNNEL_CPU_LIMIT",
        default: "(none)",
        help: "whole CPUs (downward API limits.cpu): the CPU count when no resource limit is given",
    },
    Var {
        name: "ZTUNNEL_RESOURCE_CPU_REQUEST",
        default: "(none)",
        help: "the container's CPU request; validated, no effect (zring runs one runtime per counted CPU)",
    },
    Var {
        name: "ZRING_PIN_CORES",
        default: "true",
        help: "pin each runtime to one CPU",
    },
    Var {
        name: "ZRING_DRIVER",
        default: "auto",
        help: "auto | uring | legacy (epoll)",
    },
    Var {
        name: "ZRING_URING_ENTRIES",
        default: "1024",
        help: "io_uring submission queue size, power of two 64..=32768",
    },
    Var {
        name: "ZRING_BUFFER_SIZE",
        default: "65536",
        help: "copy buffer bytes per direction, 4096..=16777216",
    },
    Var {
        name: "ZRING_CONNECT_TIMEOUT_MS",
        default: "10000",
        help: "upstream connect timeout",
    },
    Var {
        name: "ZRING_LOCAL_XDS_POLL_MS",
        default: "1000",
        help: "how often LOCAL_XDS_PATH is checked for edits",
    },
    Var {
        name: "ZRING_LISTEN_BACKLOG",
        default: "1024",
        help: "listen(2) backlog per core and port",
    },
    Var {
        name: "POOL_MAX_STREAMS_PER_CONNECTION",
        default: "100",
        help: "CONNECT streams per pooled HBONE connection, 1..=10000",
    },
    Var {
        name: "POOL_UNUSED_RELEASE_TIMEOUT",
        default: "5m",
        help: "close a pooled HBONE connection idle this long (e.g. 300s, 5m, 1500ms)",
    },
    Var {
        name: "TERMINATION_GRACE_PERIOD_SECONDS",
        default: "(none)",
        help: "the pod's grace period; the drain deadline is 5s less when above 10s, else 5s",
    },
    Var {
        name: "ZRING_DRAIN_DEADLINE",
        default: "(derived)",
        help: "overrides the drain deadline (e.g. 20s, 1500ms)",
    },
    Var {
        name: "CONNECTION_TERMINATION_DEADLINE",
        default: "(derived)",
        help: "ztunnel's name for the drain deadline; ZRING_DRAIN_DEADLINE wins when both are set",
    },
    Var {
        name: "XDS_ADDRESS",
        default: "(istiod)",
        help: "istiod Delta ADS address: host:port (TLS), https:// or http:// (tests); empty: no xDS; unset: ISTIOD, or none with LOCAL_XDS_PATH",
    },
    Var {
        name: "XDS_ROOT_CA",
        default: DEFAULT_ROOT_CA,
        help: "PEM roots trusted for XDS_ADDRESS (https)",
    },
    Var {
        name: "ALT_XDS_HOSTNAME",
        default: "(address host)",
        help: "TLS name to verify on XDS_ADDRESS instead of its host",
    },
    Var {
        name: "CA_ADDRESS",
        default: "(istiod)",
        help: "Istio CA address: host:port (TLS), https:// or http://; unset: ISTIOD; empty: the built-in development CA",
    },
    Var {
        name: "FAKE_CA",
        default: "false",
        help: "true: the built-in development CA whatever CA_ADDRESS says (ztunnel's test CA switch)",
    },
    Var {
        name: "KUBERNETES_SERVICE_HOST",
        default: "(set by Kubernetes)",
        help: "ISTIOD is https://istiod.istio-system.svc:15012 when set, https://localhost:15012 when not",
    },
    Var {
        name: "CA_ROOT_CA",
        default: DEFAULT_ROOT_CA,
        help: "PEM roots trusted for CA_ADDRESS, and the mesh trust bundle for HBONE",
    },
    Var {
        name: "ALT_CA_HOSTNAME",
        default: "(address host)",
        help: "TLS name to verify on CA_ADDRESS instead of its host",
    },
    Var {
        name: "AUTH_TOKEN",
        default: DEFAULT_AUTH_TOKEN,
        help: "bearer token file for istiod (xDS and CA), read per request; optional at the default path",
    },
    Var {
        name: "SECRET_TTL",
        default: "24h",
        help: "requested workload certificate lifetime: seconds, or with s, m, h, d; 10m..=365d",
    },
    Var {
        name: "INSTANCE_IP",
        default: "1.1.1.1",
        help: "this proxy's IP, in the xDS node id (ztunnel's default when unset)",
    },
    Var {
        name: "ISTIO_META_*",
        default: "(none)",
        help: "each becomes xDS node metadata, prefix stripped (e.g. ISTIO_META_CLUSTER_ID)",
    },
    Var {
        name: "ZRING_DEV_CA_DIR",
        default: "$TMPDIR/zring-dev-ca",
        help: "root of the built-in development CA (created if missing)",
    },
    Var {
        name: "RUST_LOG",
        default: "info",
        help: "log filter (tracing EnvFilter syntax); changed at run time by POST /logging?level=",
    },
    Var {
        name: "LOG_FORMAT",
        default: "plain",
        help: "plain | json (one JSON object per log line)",
    },
    Var {
        name: "RUST_BACKTRACE",
        default: "(unset)",
        help: "1: a panic prints a backtrace (Rust's standard library reads it)",
    },
    Var {
        name: "INPOD_ENABLED",
        default: "(none)",
        help: "set by the chart; no effect (ztunnel no longer reads it either)",
    },
];

/// A ztunnel variable zring accepts without implementing its feature yet. Set, it is logged once
/// at start-up (unless its value asks for what zring does anyway); never a start-up failure.
#[derive(Debug)]
pub struct Unimplemented {
    /// The variable, or a prefix ending in `*`.
    pub name: &'static str,
    /// The value (case-insensitive) that asks for zring's behaviour: not logged.
    pub same_as: Option<&'static str>,
    /// What ztunnel does with it.
    pub what: &'static str,
}

pub const NOT_IMPLEMENTED: &[Unimplemented] = &[
    Unimplemented {
        name: "ISTIO_META_DNS_CAPTURE",
        same_as: Some("false"),
        what: "ztunnel's DNS proxy on 15053; zring has none, pods resolve as without the mesh",
    },
    Unimplemented {
        name: "ISTIO_META_DNS_PROXY_ADDR",
        same_as: None,
        what: "the DNS proxy's address; zring has no DNS proxy",
    },
    Unimplemented {
        name: "NETWORK",
        same_as: None,
        what: "this cluster's network for multi-network meshes; zring treats every workload as reachable directly",
    },
    Unimplemented {
        name: "CRL_PATH",
        same_as: None,
        what: "certificate revocation list; peer certificates are NOT checked against it",
    },
    Unimplemented {
        name: "IPV6_ENABLED",
        same_as: Some("false"),
        what: "IPv6 listeners and dual-stack; zring listens on IPv4 only",
    },
    Unimplemented {
        name: "XDS_ON_DEMAND",
        same_as: Some("false"),
        what: "on-demand xDS; zring subscribes to everything",
    },
    Unimplemented {
        name: "PROXY_CONFIG",
        same_as: None,
        what: "ProxyConfig YAML (discoveryAddress, concurrency, proxyMetadata); use the variables",
    },
    Unimplemented {
        name: "XDS_HEADER_*",
        same_as: None,
        what: "extra gRPC headers on the xDS stream",
    },
    Unimplemented {
        name: "CA_HEADER_*",
        same_as: None,
        what: "extra gRPC headers on CA requests",
    },
    Unimplemented {
        name: "CLUSTER_DOMAIN",
        same_as: Some("cluster.local"),
        what: "the cluster's DNS domain; zring assumes cluster.local",
    },
    Unimplemented {
        name: "PREFERED_SERVICE_NAMESPACE",
        same_as: None,
        what: "the namespace preferred when a hostname names several services",
    },
    Unimplemented {
        name: "KEEPALIVE_*",
        same_as: None,
        what: "TCP keepalive settings of proxied sockets",
    },
    Unimplemented {
        name: "USER_TIMEOUT_ENABLED",
        same_as: None,
        what: "TCP_USER_TIMEOUT on proxied sockets",
    },
    Unimplemented {
        name: "HTTP2_*",
        same_as: None,
        what: "HBONE HTTP/2 window and frame sizes",
    },
    Unimplemented {
        name: "ENABLE_ORIG_SRC",
        same_as: Some("true"),
        what: "turning original-source spoofing off; zring always connects from the client's address",
    },
    Unimplemented {
        name: "LOCALHOST_APP_TUNNEL",
        same_as: None,
        what: "tunnelling a pod's traffic to its own IP",
    },
    Unimplemented {
        name: "ENABLE_RESPONSE_BAGGAGE",
        same_as: None,
        what: "baggage on HBONE responses",
    },
    Unimplemented {
        name: "ENABLE_PROXY",
        same_as: Some("true"),
        what: "running without the proxy (DNS only)",
    },
    Unimplemented {
        name: "UNSTABLE_ENABLE_SOCKS5",
        same_as: Some("false"),
        what: "a SOCKS5 listener on 127.0.0.1:15080",
    },
    Unimplemented {
        name: "AUTHZ_POLICY_INFO_LOGGING",
        same_as: Some("false"),
        what: "authorization decisions logged at info",
    },
    Unimplemented {
        name: "PROXY_WORKLOAD_INFO",
        same_as: None,
        what: "the workload of a dedicated proxy (ztunnel's PROXY_MODE=dedicated)",
    },
];

/// Every set variable of [`NOT_IMPLEMENTED`], as `NAME=value: what`.
fn unimplemented_in(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut out: Vec<String> = vars
        .into_iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .filter_map(|(k, v)| {
            let u = NOT_IMPLEMENTED
                .iter()
                .find(|u| match u.name.strip_suffix('*') {
                    Some(prefix) => k.starts_with(prefix),
                    None => k == u.name,
                })?;
            let asks_for_ours = u
                .same_as
                .is_some_and(|same| v.trim().eq_ignore_ascii_case(same));
            (!asks_for_ours).then(|| format!("{k}={v}: {}", u.what))
        })
        .collect();
    out.sort();
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {var}={value:?}: {expected}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: String,
}

impl Config {
    /// Reads the process environment, including every `ISTIO_META_*` variable.
    pub fn from_env() -> Result<Config, ConfigError> {
        let mut config = Config::from_lookup(|name| std::env::var(name).ok())?;
        config.not_implemented = unimplemented_in(std::env::vars());
        for (k, v) in std::env::vars() {
            if let Some(key) = k.strip_prefix(ISTIO_META_PREFIX).filter(|k| !k.is_empty()) {
                config.proxy_metadata.insert(key.to_owned(), v);
            }
        }
        Ok(config)
    }

    /// Builds a config from any name → value lookup; tests pass a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.is_empty());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

        // ztunnel's CPU count: the container's CPU limit when the chart passes one, else the
        // machine's; never more runtimes than CPUs this process may use.
        let cpu_count = match var("ZTUNNEL_RESOURCE_CPU_LIMIT") {
            Some(v) => parse_cpu_quantity("ZTUNNEL_RESOURCE_CPU_LIMIT", &v)?,
            None => match var("ZTUNNEL_CPU_LIMIT") {
                Some(v) => parse_range("ZTUNNEL_CPU_LIMIT", &v, 1, 1 << 20)? as usize,
                None => cpus,
            },
        }
        .min(cpus);
        if let Some(v) = var("ZTUNNEL_RESOURCE_CPU_REQUEST") {
            parse_cpu_quantity("ZTUNNEL_RESOURCE_CPU_REQUEST", &v)?;
        }
        let cores = match (var("ZRING_CORES"), var("ZTUNNEL_WORKER_THREADS")) {
            (Some(v), _) => parse_range("ZRING_CORES", &v, 1, 1024)? as usize,
            (None, Some(v)) => worker_threads(&v, cpu_count)
                .ok_or_else(|| {
                    err(
                        "ZTUNNEL_WORKER_THREADS",
                        &v,
                        "expected a whole number (0: the CPU count) or a percentage above 0 up to 100%",
                    )
                })?
                .min(1024),
            (None, None) => cpu_count.min(1024),
        };
        let proxy_mode = match var("PROXY_MODE").as_deref() {
            None => DEFAULT_PROXY_MODE,
            Some("shared") => ProxyMode::Shared,
            Some("node") => ProxyMode::Node,
            Some(v) => {
                return Err(err(
                    "PROXY_MODE",
                    v,
                    "expected shared (in-pod capture) or node (node-level capture); \
                     ztunnel's dedicated mode is not supported",
                ));
            }
        };
        let inpod_uds =
            var("INPOD_UDS").map_or_else(|| PathBuf::from(DEFAULT_INPOD_UDS), PathBuf::from);
        let driver = match var("ZRING_DRIVER").as_deref() {
            None | Some("auto") => DriverChoice::Auto,
            Some("uring") | Some("io_uring") => DriverChoice::Uring,
            Some("legacy") | Some("epoll") => DriverChoice::Legacy,
            Some(v) => return Err(err("ZRING_DRIVER", v, "expected auto, uring or legacy")),
        };
        let uring_entries = match var("ZRING_URING_ENTRIES") {
            None => 1024,
            Some(v) => {
                let n = parse_range("ZRING_URING_ENTRIES", &v, 64, 32768)?;
                if !n.is_power_of_two() {
                    return Err(err("ZRING_URING_ENTRIES", &v, "expected a power of two"));
                }
                n as u32
            }
        };
        let packet_mark = match var("PACKET_MARK") {
            None => 1337,
            Some(v) => parse_u32_any_radix(&v).ok_or_else(|| {
                err(
                    "PACKET_MARK",
                    &v,
                    "expected a 32-bit number (decimal or 0x hex)",
                )
            })?,
        };
        let ms = |name: &'static str,
                  default: u64,
                  min: u64,
                  max: u64|
         -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(match var(name) {
                None => default,
                Some(v) => parse_range(name, &v, min, max)?,
            }))
        };
        let node_name = var("NODE_NAME").unwrap_or_else(hostname);
        let local_xds_path = var("LOCAL_XDS_PATH").map(PathBuf::from);
        if let Some(p) = &local_xds_path
            && !p.is_file()
        {
            return Err(err(
                "LOCAL_XDS_PATH",
                &p.display().to_string(),
                "no such file",
            ));
        }
        let auth_token = match var("AUTH_TOKEN") {
            Some(p) => TokenFile {
                path: p.into(),
                required: true,
            },
            None => TokenFile {
                path: DEFAULT_AUTH_TOKEN.into(),
                required: false,
            },
        };
        // ztunnel's rule for both addresses: unset means istiod, empty means off, no scheme
        // means TLS. zring takes its config from one source, so a local file turns the xDS
        // default off (ztunnel would layer the file under xDS; naming both is refused below).
        let istiod = match var("KUBERNETES_SERVICE_HOST") {
            Some(_) => ISTIOD_IN_CLUSTER,
            None => ISTIOD_LOCAL,
        };
        let mut notes = Vec::new();
        let xds_address = match get("XDS_ADDRESS") {
            None if local_xds_path.is_some() => {
                notes.push(
                    "XDS_ADDRESS unset with LOCAL_XDS_PATH: no xDS, the file is the config".into(),
                );
                None
            }
            raw => resolve_address("XDS_ADDRESS", raw, istiod, &mut notes),
        };
        let ca_address = if parse_bool("FAKE_CA", var("FAKE_CA"), false)? {
            notes.push("FAKE_CA=true: the built-in development CA".into());
            None
        } else {
            resolve_address("CA_ADDRESS", get("CA_ADDRESS"), istiod, &mut notes)
        };
        let target =
            |address: &'static str, a: Option<String>, roots: &'static str, alt: &'static str| {
                let Some(a) = a else {
                    return Ok(None);
                };
                let roots = var(roots).unwrap_or_else(|| DEFAULT_ROOT_CA.into());
                if roots == "SYSTEM" {
                    return Err(err(
                        address,
                        &a,
                        "system roots (SYSTEM) are not supported; name a PEM file",
                    ));
                }
                Target::new(
                    &a,
                    Path::new(&roots),
                    var(alt).as_deref(),
                    Some(auth_token.clone()),
                )
                .map(Some)
                .map_err(|e| err(address, &a, &e.to_string()))
            };
        let xds = target(
            "XDS_ADDRESS",
            xds_address,
            "XDS_ROOT_CA",
            "ALT_XDS_HOSTNAME",
        )?;
        let ca = target("CA_ADDRESS", ca_address, "CA_ROOT_CA", "ALT_CA_HOSTNAME")?;
        if let (Some(x), Some(_)) = (&xds, &local_xds_path) {
            return Err(err(
                "XDS_ADDRESS",
                x.address(),
                "LOCAL_XDS_PATH is set too, and zring takes its config from one source \
                 (ztunnel would layer the file under xDS); set XDS_ADDRESS= (empty) to use the file",
            ));
        }
        if var("LOCAL_XDS").is_some() {
            return Err(err(
                "LOCAL_XDS",
                "(inline YAML)",
                "inline config is not supported; write it to a file and set LOCAL_XDS_PATH",
            ));
        }
        let secret_ttl = match var("SECRET_TTL") {
            None => Duration::from_secs(24 * 3600),
            Some(v) => parse_secret_ttl(&v)
                .filter(|d| (600..=365 * 24 * 3600).contains(&d.as_secs()))
                .ok_or_else(|| {
                    err(
                        "SECRET_TTL",
                        &v,
                        "expected a duration from 10m to 365d (e.g. 24h, 3600s)",
                    )
                })?,
        };
        let instance_ip = match var("INSTANCE_IP") {
            None => IpAddr::from([1, 1, 1, 1]),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| err("INSTANCE_IP", &v, "expected an IP address"))?,
        };
        let log_format = match var("LOG_FORMAT").as_deref() {
            None | Some("plain") | Some("text") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(v) => return Err(err("LOG_FORMAT", v, "expected plain or json")),
        };
        let trust_domain = var("TRUST_DOMAIN").unwrap_or_else(|| "cluster.local".into());
        if !trust_domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
        }) {
            return Err(err(
                "TRUST_DOMAIN",
                &trust_domain,
                "expected lowercase letters, digits, '.', '-', '_'",
            ));
        }

        Ok(Config {
            node_name,
            proxy_mode,
            inpod_uds,
            cluster_id: var("ISTIO_META_CLUSTER_ID")
                .or_else(|| var("CLUSTER_ID"))
                .unwrap_or_else(|| "Kubernetes".into()),
            trust_domain,
            pod_name: var("POD_NAME").unwrap_or_default(),
            pod_namespace: var("POD_NAMESPACE").unwrap_or_default(),
            service_account: var("SERVICE_ACCOUNT").unwrap_or_default(),
            local_xds_path,
            local_xds_poll: ms("ZRING_LOCAL_XDS_POLL_MS", 1000, 10, 3_600_000)?,
            packet_mark,
            cores,
            pin_cores: parse_bool("ZRING_PIN_CORES", var("ZRING_PIN_CORES"), true)?,
            driver,
            uring_entries,
            buffer_size: match var("ZRING_BUFFER_SIZE") {
                None => 64 * 1024,
                Some(v) => parse_range("ZRING_BUFFER_SIZE", &v, 4096, 16 << 20)? as usize,
            },
            connect_timeout: ms("ZRING_CONNECT_TIMEOUT_MS", 10_000, 1, 600_000)?,
            listen_backlog: match var("ZRING_LISTEN_BACKLOG") {
                None => 1024,
                Some(v) => parse_range("ZRING_LISTEN_BACKLOG", &v, 1, 65535)? as i32,
            },
            outbound_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 15001)),
            inbound_plaintext_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 15006)),
            inbound_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 15008)),
            admin_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 15000)),
            stats_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 15020)),
            readiness_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 15021)),
            log_format,
            pool_max_streams: match var("POOL_MAX_STREAMS_PER_CONNECTION") {
                None => 100,
                Some(v) => parse_range("POOL_MAX_STREAMS_PER_CONNECTION", &v, 1, 10_000)? as u32,
            },
            drain_deadline: crate::drain::deadline(
                match (
                    var("ZRING_DRAIN_DEADLINE"),
                    var("CONNECTION_TERMINATION_DEADLINE"),
                ) {
                    (None, None) => None,
                    (Some(v), _) | (None, Some(v)) => {
                        Some(parse_duration(&v).ok_or_else(|| {
                            let name = if var("ZRING_DRAIN_DEADLINE").is_some() {
                                "ZRING_DRAIN_DEADLINE"
                            } else {
                                "CONNECTION_TERMINATION_DEADLINE"
                            };
                            err(
                                name,
                                &v,
                                "expected a duration such as 20s or 1500ms (at least 10ms)",
                            )
                        })?)
                    }
                },
                match var("TERMINATION_GRACE_PERIOD_SECONDS") {
                    None => None,
                    Some(v) => Some(parse_range(
                        "TERMINATION_GRACE_PERIOD_SECONDS",
                        &v,
                        0,
                        86_400,
                    )?),
                },
            ),
            pool_idle_timeout: match var("POOL_UNUSED_RELEASE_TIMEOUT") {
                None => Duration::from_secs(300),
                Some(v) => parse_duration(&v).ok_or_else(|| {
                    err(
                        "POOL_UNUSED_RELEASE_TIMEOUT",
                        &v,
                        "expected a duration such as 300s, 5m or 1500ms (at least 10ms)",
                    )
                })?,
            },
            dev_ca_dir: var("ZRING_DEV_CA_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("zring-dev-ca")),
            xds,
            ca,
            ca_root_ca: var("CA_ROOT_CA")
                .unwrap_or_else(|| DEFAULT_ROOT_CA.into())
                .into(),
            secret_ttl,
            instance_ip,
            proxy_metadata: BTreeMap::new(),
            notes,
            not_implemented: unimplemented_in(
                NOT_IMPLEMENTED
                    .iter()
                    .filter(|u| !u.name.ends_with('*'))
                    .filter_map(|u| Some((u.name.to_owned(), get(u.name)?))),
            ),
        })
    }
}

/// One control-plane address as ztunnel reads it: unset is `default`, empty (or blank) is
/// off, `host:port` without a scheme is TLS; each choice is noted for `zring check`.
fn resolve_address(
    name: &'static str,
    raw: Option<String>,
    default: &str,
    notes: &mut Vec<String>,
) -> Option<String> {
    let resolved = match raw.as_deref().map(str::trim) {
        None => {
            notes.push(format!("{name} unset: {default} (ztunnel's default)"));
            return Some(default.to_owned());
        }
        Some("") => {
            notes.push(format!("{name} empty: off"));
            return None;
        }
        Some(a) if a.contains("://") => a.to_owned(),
        Some(a) => format!("https://{a}"),
    };
    notes.push(format!("{name}: {resolved}"));
    Some(resolved)
}

/// A Kubernetes CPU quantity (`2`, `1.5`, `500m`) as whole CPUs, rounded up (ztunnel's reading).
fn parse_cpu_quantity(var: &'static str, v: &str) -> Result<usize, ConfigError> {
    let t = v.trim();
    let cores = match t.strip_suffix('m') {
        Some(millis) => millis.parse::<f64>().map(|m| m / 1000.0),
        None => t.parse::<f64>(),
    };
    match cores {
        Ok(c) if c.is_finite() && c > 0.0 && c <= (1u64 << 20) as f64 => Ok(c.ceil() as usize),
        _ => Err(err(
            var,
            v,
            "expected a positive CPU quantity such as 2, 1.5 or 500m",
        )),
    }
}

/// `ZTUNNEL_WORKER_THREADS`: `N` threads (0: the CPU count) or `P%` of the CPU count, rounded
/// up, at least one.
fn worker_threads(v: &str, cpu_count: usize) -> Option<usize> {
    let v = v.trim();
    match v.strip_suffix('%') {
        Some(p) => {
            let p: f64 = p.trim().parse().ok()?;
            (p > 0.0 && p <= 100.0).then(|| ((cpu_count as f64 * p / 100.0).ceil() as usize).max(1))
        }
        None => match v.parse::<usize>().ok()? {
            0 => Some(cpu_count),
            n => Some(n),
        },
    }
}

fn err(var: &'static str, value: &str, expected: &str) -> ConfigError {
    ConfigError {
        var,
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

fn parse_range(var: &'static str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    match v.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(err(
            var,
            v,
            &format!("expected a whole number from {min} to {max}"),
        )),
    }
}

fn parse_bool(var: &'static str, v: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("1" | "true" | "yes" | "on") => Ok(true),
        Some("0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(err(
            var,
            v.as_deref().unwrap_or_default(),
            "expected true or false",
        )),
    }
}

/// A duration as ztunnel's environment spells them: a whole number with a unit (`ms`, `s`, `m`,
/// `h`), at least 10 ms and at most a day.
fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (Duration::from_millis(10)..=Duration::from_secs(86_400))
        .contains(&d)
        .then_some(d)
}

/// `SECRET_TTL`: `90` (seconds), `90s`, `15m`, `24h`, `7d`.
fn parse_secret_ttl(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(scale).map(Duration::from_secs)
}

fn parse_u32_any_radix(v: &str) -> Option<u32> {
    let v = v.trim();
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.packet_mark, 1337);
        assert_eq!(c.proxy_mode, DEFAULT_PROXY_MODE);
        assert_eq!(c.inpod_uds, PathBuf::from("/var/run/ztunnel/ztunnel.sock"));
        assert_eq!(c.driver, DriverChoice::Auto);
        assert_eq!(c.buffer_size, 65536);
        assert_eq!(c.cluster_id, "Kubernetes");
        assert_eq!(c.trust_domain, "cluster.local");
        assert!(c.cores >= 1);
        assert!(c.local_xds_path.is_none());
        assert_eq!(c.pool_max_streams, 100);
        assert_eq!(c.pool_idle_timeout, Duration::from_secs(300));
        assert_eq!(c.log_format, LogFormat::Plain);
        assert!(c.admin_addr.ip().is_loopback(), "admin is loopback only");
        assert_eq!(
            (
                c.admin_addr.port(),
                c.stats_addr.port(),
                c.readiness_addr.port()
            ),
            (15000, 15020, 15021)
        );
        assert_eq!(
            cfg(&[("LOG_FORMAT", "json")]).unwrap().log_format,
            LogFormat::Json
        );
    }

    #[test]
    fn proxy_modes() {
        let shared = cfg(&[("PROXY_MODE", "shared"), ("INPOD_UDS", "/tmp/z.sock")]).unwrap();
        assert_eq!(shared.proxy_mode, ProxyMode::Shared);
        assert_eq!(shared.inpod_uds, PathBuf::from("/tmp/z.sock"));
        assert_eq!(
            cfg(&[("PROXY_MODE", "node")]).unwrap().proxy_mode,
            ProxyMode::Node
        );
        let e = cfg(&[("PROXY_MODE", "dedicated")]).unwrap_err();
        assert!(
            e.to_string().contains("shared") && e.to_string().contains("node"),
            "the error names the accepted values: {e}"
        );
    }

    #[test]
    fn durations_take_units() {
        for (text, d) in [
            ("1500ms", Duration::from_millis(1500)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse_duration(text), Some(d), "{text}");
        }
        for bad in [
            "",
            "s",
            "10",
            "1.5s",
            "-1s",
            "9ms",
            "25h",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn parses_values() {
        let c = cfg(&[
            ("ZRING_CORES", "3"),
            ("ZRING_DRIVER", "legacy"),
            ("PACKET_MARK", "0x539"),
            ("NODE_NAME", "n1"),
            ("ZRING_PIN_CORES", "false"),
        ])
        .unwrap();
        assert_eq!(
            (c.cores, c.driver, c.packet_mark),
            (3, DriverChoice::Legacy, 1337)
        );
        assert_eq!(c.node_name, "n1");
        assert!(!c.pin_cores);
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("ZRING_CORES", "0"),
            ("ZRING_CORES", "many"),
            ("ZRING_DRIVER", "kqueue"),
            ("PACKET_MARK", "0xZZ"),
            ("PACKET_MARK", "99999999999"),
            ("ZRING_URING_ENTRIES", "1000"),
            ("ZRING_BUFFER_SIZE", "12"),
            ("ZRING_PIN_CORES", "maybe"),
            ("LOCAL_XDS_PATH", "/definitely/not/here.yaml"),
            ("TRUST_DOMAIN", "Cluster Local"),
            ("ZRING_CONNECT_TIMEOUT_MS", "-5"),
            ("XDS_ADDRESS", "istiod:15012/xds"),
            ("XDS_ADDRESS", "grpc://istiod:15012"),
            ("CA_ADDRESS", "istiod:port"),
            ("FAKE_CA", "maybe"),
            ("LOCAL_XDS", "workloads: []"),
            ("ZTUNNEL_WORKER_THREADS", "many"),
            ("ZTUNNEL_WORKER_THREADS", "0%"),
            ("ZTUNNEL_WORKER_THREADS", "101%"),
            ("ZTUNNEL_RESOURCE_CPU_LIMIT", "0"),
            ("ZTUNNEL_RESOURCE_CPU_LIMIT", "lots"),
            ("ZTUNNEL_RESOURCE_CPU_REQUEST", "-1"),
            ("ZTUNNEL_CPU_LIMIT", "1.5"),
            ("CONNECTION_TERMINATION_DEADLINE", "soon"),
            ("CA_ADDRESS", "https://"),
            ("SECRET_TTL", "5m"),
            ("SECRET_TTL", "1y"),
            ("SECRET_TTL", "h"),
            ("INSTANCE_IP", "10.0.0"),
            ("POOL_MAX_STREAMS_PER_CONNECTION", "0"),
            ("POOL_UNUSED_RELEASE_TIMEOUT", "5"),
            ("POOL_UNUSED_RELEASE_TIMEOUT", "1ms"),
            ("POOL_UNUSED_RELEASE_TIMEOUT", "3d"),
            ("ZRING_DRAIN_DEADLINE", "soon"),
            ("TERMINATION_GRACE_PERIOD_SECONDS", "-1"),
            ("LOG_FORMAT", "yaml"),
            ("PROXY_MODE", "dedicated"),
            ("PROXY_MODE", "Shared"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err();
            assert_eq!(e.var, k, "{e}");
            let line = e.to_string();
            assert!(line.starts_with(&format!("invalid {k}=")), "{line}");
            assert!(!line.contains('\n'));
        }
    }

    #[test]
    fn control_plane_settings() {
        let c = cfg(&[("XDS_ADDRESS", ""), ("CA_ADDRESS", "")]).unwrap();
        assert!(c.xds.is_none() && c.ca.is_none());
        assert_eq!(c.secret_ttl, Duration::from_secs(86400));
        assert_eq!(c.instance_ip, IpAddr::from([1, 1, 1, 1]));
        let c = cfg(&[
            ("XDS_ADDRESS", "https://istiod.istio-system.svc:15012"),
            ("CA_ADDRESS", "http://127.0.0.1:15010"),
            ("SECRET_TTL", "12h"),
            ("INSTANCE_IP", "10.1.2.3"),
        ])
        .unwrap();
        assert!(c.xds.as_ref().unwrap().is_tls());
        assert!(!c.ca.as_ref().unwrap().is_tls());
        assert_eq!(c.secret_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(parse_secret_ttl("3600"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_secret_ttl("2d"), Some(Duration::from_secs(172800)));
        let e = cfg(&[("XDS_ROOT_CA", "SYSTEM"), ("XDS_ADDRESS", "https://a:1")]).unwrap_err();
        assert_eq!(e.var, "XDS_ADDRESS");
        // One config source at a time.
        let file = tempfile::NamedTempFile::new().unwrap();
        let e = cfg(&[
            ("LOCAL_XDS_PATH", file.path().to_str().unwrap()),
            ("XDS_ADDRESS", "http://127.0.0.1:1"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "XDS_ADDRESS");
        assert!(e.expected.contains("XDS_ADDRESS= (empty)"), "{e}");
        // The file alone: no xDS default, but the CA still defaults to istiod (as ztunnel).
        let c = cfg(&[("LOCAL_XDS_PATH", file.path().to_str().unwrap())]).unwrap();
        assert!(c.xds.is_none());
        assert_eq!(c.ca.as_ref().unwrap().address(), ISTIOD_LOCAL);
    }

    fn addresses(pairs: &[(&str, &str)]) -> (Option<String>, Option<String>) {
        let c = cfg(pairs).unwrap();
        let a = |t: &Option<Target>| t.as_ref().map(|t| t.address().to_owned());
        (a(&c.xds), a(&c.ca))
    }

    #[test]
    fn addresses_read_as_ztunnel_reads_them() {
        let some = |s: &str| Some(s.to_owned());
        // Unset: istiod, in a pod by its service name, elsewhere on localhost.
        assert_eq!(addresses(&[]), (some(ISTIOD_LOCAL), some(ISTIOD_LOCAL)));
        assert_eq!(
            addresses(&[("KUBERNETES_SERVICE_HOST", "10.96.0.1")]),
            (some(ISTIOD_IN_CLUSTER), some(ISTIOD_IN_CLUSTER))
        );
        assert_eq!(ISTIOD_IN_CLUSTER, "https://istiod.istio-system.svc:15012");
        // Empty (or blank): off.
        assert_eq!(
            addresses(&[("XDS_ADDRESS", ""), ("CA_ADDRESS", " ")]),
            (None, None)
        );
        // Each on its own: the CA does not follow XDS_ADDRESS.
        assert_eq!(
            addresses(&[("XDS_ADDRESS", "")]),
            (None, some(ISTIOD_LOCAL))
        );
        assert_eq!(addresses(&[("CA_ADDRESS", "")]), (some(ISTIOD_LOCAL), None));
        // host:port without a scheme is TLS; schemes are kept.
        for (raw, address, tls) in [
            (
                "istiod.istio-system.svc:15012",
                "https://istiod.istio-system.svc:15012",
                true,
            ),
            (
                "istiod-1-24.istio-system.svc:15012",
                "https://istiod-1-24.istio-system.svc:15012",
                true,
            ),
            ("10.0.0.7:15012", "https://10.0.0.7:15012", true),
            ("[fd00::7]:15012", "https://[fd00::7]:15012", true),
            ("https://istiod:15012", "https://istiod:15012", true),
            ("http://127.0.0.1:15010", "http://127.0.0.1:15010", false),
        ] {
            for var in ["XDS_ADDRESS", "CA_ADDRESS"] {
                let c = cfg(&[(var, raw)]).unwrap();
                let t = if var == "XDS_ADDRESS" { c.xds } else { c.ca }.unwrap();
                assert_eq!((t.address(), t.is_tls()), (address, tls), "{var}={raw}");
            }
        }
        // FAKE_CA: ztunnel's switch to its test CA; ours is the development CA.
        let c = cfg(&[("FAKE_CA", "true"), ("CA_ADDRESS", "istiod:15012")]).unwrap();
        assert!(c.ca.is_none() && c.xds.is_some());
        // Every choice is explained for `zring check`.
        let c = cfg(&[("XDS_ADDRESS", "")]).unwrap();
        assert!(
            c.notes.contains(&"XDS_ADDRESS empty: off".to_owned()),
            "{:?}",
            c.notes
        );
        assert!(
            c.notes
                .iter()
                .any(|n| n.starts_with("CA_ADDRESS unset: https://localhost:15012")),
            "{:?}",
            c.notes
        );
    }

    #[test]
    fn cluster_id_and_cpu_count_as_ztunnel() {
        let c = cfg(&[("CLUSTER_ID", "c1"), ("ISTIO_META_CLUSTER_ID", "c2")]).unwrap();
        assert_eq!(c.cluster_id, "c2");
        assert_eq!(cfg(&[("CLUSTER_ID", "c1")]).unwrap().cluster_id, "c1");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = |pairs: &[(&str, &str)]| cfg(pairs).unwrap().cores;
        assert_eq!(cores(&[]), cpus);
        assert_eq!(cores(&[("ZTUNNEL_CPU_LIMIT", "1")]), 1);
        assert_eq!(cores(&[("ZTUNNEL_RESOURCE_CPU_LIMIT", "500m")]), 1);
        // A limit above this machine's CPUs counts what there is.
        assert_eq!(cores(&[("ZTUNNEL_CPU_LIMIT", "4096")]), cpus);
        assert_eq!(cores(&[("ZTUNNEL_WORKER_THREADS", "3")]), 3);
        assert_eq!(cores(&[("ZTUNNEL_WORKER_THREADS", "0")]), cpus);
        assert_eq!(cores(&[("ZTUNNEL_WORKER_THREADS", "1%")]), 1);
        assert_eq!(cores(&[("ZTUNNEL_WORKER_THREADS", "100%")]), cpus);
        assert_eq!(
            cores(&[("ZTUNNEL_WORKER_THREADS", "3"), ("ZRING_CORES", "2")]),
            2
        );
        assert_eq!(worker_threads("50%", 8), Some(4));
        assert_eq!(worker_threads("10%", 8), Some(1));
        assert_eq!(parse_cpu_quantity("X", "1.5"), Ok(2));
        assert_eq!(parse_cpu_quantity("X", "2500m"), Ok(3));
        // The request is checked, not used.
        assert_eq!(cores(&[("ZTUNNEL_RESOURCE_CPU_REQUEST", "200m")]), cpus);
        let c = cfg(&[("CONNECTION_TERMINATION_DEADLINE", "7s")]).unwrap();
        assert_eq!(c.drain_deadline, Duration::from_secs(7));
        let c = cfg(&[
            ("CONNECTION_TERMINATION_DEADLINE", "7s"),
            ("ZRING_DRAIN_DEADLINE", "3s"),
        ])
        .unwrap();
        assert_eq!(c.drain_deadline, Duration::from_secs(3));
    }

    #[test]
    fn unimplemented_variables_are_accepted_and_listed() {
        let c = cfg(&[
            ("ISTIO_META_DNS_CAPTURE", "true"),
            ("NETWORK", "net1"),
            ("IPV6_ENABLED", "false"),
            ("CRL_PATH", ""),
        ])
        .unwrap();
        assert_eq!(
            c.not_implemented
                .iter()
                .map(|l| l.split(':').next().unwrap())
                .collect::<Vec<_>>(),
            ["ISTIO_META_DNS_CAPTURE=true", "NETWORK=net1"]
        );
        let listed = unimplemented_in([
            ("XDS_HEADER_X_FOO".to_owned(), "bar".to_owned()),
            ("KEEPALIVE_TIME".to_owned(), "30s".to_owned()),
            ("ISTIO_META_DNS_CAPTURE".to_owned(), "False".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ]);
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed[0].starts_with("KEEPALIVE_TIME=30s: TCP keepalive"));
        assert!(listed[1].starts_with("XDS_HEADER_X_FOO=bar: extra gRPC headers"));
        // None of them is also a variable zring implements.
        for u in NOT_IMPLEMENTED {
            assert!(!VARS.iter().any(|v| v.name == u.name), "{}", u.name);
        }
    }

    #[test]
    fn every_variable_read_is_documented() {
        let src = include_str!("config.rs");
        for name in src
            .split("var(\"")
            .chain(src.split("get(\""))
            .filter(|s| !s.starts_with("//"))
            .skip(1)
            .filter_map(|s| s.split('"').next())
        {
            assert!(
                VARS.iter().any(|v| v.name == name),
                "{name} missing from VARS"
            );
        }
    }
}

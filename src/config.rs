//! Configuration: environment variables (ztunnel's names where the meaning matches, `ZRING_*`
//! for our own knobs), validated once at start-up on the main thread.
//!
//! The result is an immutable [`Config`] shared by every thread through an `Arc`. A bad value is
//! a [`ConfigError`] naming the variable, which `main` prints on one line before exiting non-zero;
//! nothing downstream re-validates.

mod address;
mod dns;
mod env;
mod hbone;
mod ops;
mod parse;
mod vars;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::grpc::Target;

pub use address::{DEFAULT_AUTH_TOKEN, DEFAULT_ROOT_CA, ISTIOD_IN_CLUSTER, ISTIOD_LOCAL};
pub use dns::{DNS_PORT, DnsConfig};
pub use hbone::HboneLimits;
pub use ops::{DEFAULT_ADMIN_SOCKET, Ops};
pub use vars::{NOT_IMPLEMENTED, Unimplemented, VARS, Var};

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

/// The io_uring setup flags each core's ring is built with (`ZRING_URING_SETUP`: `none`, or a
/// comma-separated list of `coop`, `single`, `defer`). What each bought was measured side by
/// side (`perf/side-by-side-2026-12-04-afternoon.md`); [`UringSetup::DEFAULT`] is what won.
///
/// - `coop` (`IORING_SETUP_COOP_TASKRUN`): a completion that needs the core's own context (a
///   socket read woken by its poll) waits for the core's next `io_uring_enter` instead of
///   interrupting the thread (an IPI and a trip through the signal path).
/// - `single` (`IORING_SETUP_SINGLE_ISSUER`): only the core's thread submits, which lets the
///   kernel skip the ring's submission lock. True by construction: each core builds and drives
///   its own ring.
/// - `defer` (`IORING_SETUP_DEFER_TASKRUN`, needs `single`): that work runs only when the core
///   asks for completions. monoio reads completions only when it parks, so nothing is reaped
///   later than before; what goes is the kernel running each socket read the moment its poll
///   fires, on the waker's signal, while the sender's softirq may still hold the socket lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringSetup {
    pub coop: bool,
    pub single: bool,
    pub defer: bool,
}

impl UringSetup {
    pub const NONE: UringSetup = UringSetup {
        coop: false,
        single: false,
        defer: false,
    };

    /// All three. Kernels older than 6.1 refuse `defer` (and before 6.0 `single`): the core
    /// then falls back to fewer flags (`runtime::uring`).
    pub const DEFAULT: UringSetup = UringSetup {
        coop: true,
        single: true,
        defer: true,
    };

    /// `none`, or a comma-separated list of `coop`, `single`, `defer` (`defer` implies
    /// `single`, which the kernel requires with it). `None` for anything else.
    pub fn parse(s: &str) -> Option<UringSetup> {
        let mut setup = UringSetup::NONE;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "none" => {}
                "coop" => setup.coop = true,
                "single" => setup.single = true,
                "defer" => (setup.defer, setup.single) = (true, true),
                _ => return None,
            }
        }
        Some(setup)
    }

    /// The same flags without `defer` and `single`: what a kernel from before 6.0 accepts.
    pub fn without_single_issuer(self) -> UringSetup {
        UringSetup {
            coop: self.coop,
            ..UringSetup::NONE
        }
    }
}

/// The form `ZRING_URING_SETUP` takes (`none`, or the flags joined by commas).
impl std::fmt::Display for UringSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let words: Vec<&str> = [
            (self.coop, "coop"),
            (self.single, "single"),
            (self.defer, "defer"),
        ]
        .into_iter()
        .filter_map(|(on, w)| on.then_some(w))
        .collect();
        if words.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&words.join(","))
        }
    }
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

/// The large copy buffer when `ZRING_BUFFER_SIZE` is unset: 256 KiB. An HBONE stream's reads of
/// the pod's socket are this large during bulk transfer, and so are the DATA frames they
/// become. Against 64 KiB, medians of eight same-run A/Bs on this machine: HBONE bulk cost
/// 0.90x the CPU per GiB outbound and 0.78x inbound at one connection, 0.96x and 0.88x at
/// eight (perf/notes-hbone.md §9). Only a direction that is moving bulk data holds one; quiet
/// ones read into 4 KiB.
pub const DEFAULT_BUFFER_SIZE: usize = 256 * 1024;

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
    /// Node mode: let passthrough reach link-local, loopback and node addresses
    /// (`ZRING_PASSTHROUGH_ALLOW_LOCAL`; `proxy::local_reach`).
    pub passthrough_allow_local: bool,
    pub cores: usize,
    /// Pin core `i` to CPU `i % available CPUs`.
    pub pin_cores: bool,
    pub driver: DriverChoice,
    pub uring_entries: u32,
    /// `ZRING_URING_SETUP`: the io_uring setup flags of each core's ring.
    pub uring_setup: UringSetup,
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
    /// What the HBONE server (15008) tolerates: deadlines, caps, receive budget.
    pub hbone_limits: HboneLimits,
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
    /// `IPV6_ENABLED` (default true), as in ztunnel: false means no IPv6 anywhere zring decides
    /// it: no `[::]` listeners (node mode, in-pod, DNS), no `table ip6 zring` or IPv6 policy
    /// route from `zring redirect` and the capture keeper, the DNS proxy answers no AAAA
    /// records for mesh names, and hostname endpoints are resolved for A records only.
    pub ipv6_enabled: bool,
    /// The DNS proxy on 15053 (`dns`).
    pub dns: DnsConfig,
    /// ztunnel variables that are set but whose feature zring lacks, `NAME=value: what`;
    /// logged once at start-up (see [`NOT_IMPLEMENTED`]).
    pub not_implemented: Vec<String>,
    /// The admin socket, who may mutate over TCP, and the test-only fault hook.
    pub ops: Ops,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid {var}={value:?}: {expected}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub expected: String,
}

#[cfg(test)]
mod tests {
    use super::parse::{parse_cpu_quantity, parse_secret_ttl, worker_threads};
    use super::vars::unimplemented_in;
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
        assert_eq!(c.uring_setup, UringSetup::DEFAULT);
        assert_eq!(c.buffer_size, DEFAULT_BUFFER_SIZE);
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
            ("ZRING_URING_SETUP", "coop,sqpoll"),
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
            ("XDS_ON_DEMAND", "true"),
            ("NETWORK", "net1"),
            ("IPV6_ENABLED", "true"),
            ("CRL_PATH", ""),
        ])
        .unwrap();
        assert_eq!(
            c.not_implemented
                .iter()
                .map(|l| l.split(':').next().unwrap())
                .collect::<Vec<_>>(),
            ["NETWORK=net1", "XDS_ON_DEMAND=true"]
        );
        let listed = unimplemented_in([
            ("XDS_HEADER_X_FOO".to_owned(), "bar".to_owned()),
            ("KEEPALIVE_TIME".to_owned(), "30s".to_owned()),
            ("XDS_ON_DEMAND".to_owned(), "False".to_owned()),
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
        // Every file of this module that reads variables.
        for src in [
            include_str!("config.rs"),
            include_str!("config/env.rs"),
            include_str!("config/address.rs"),
            include_str!("config/dns.rs"),
            include_str!("config/hbone.rs"),
        ] {
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
}

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

/// The mode when `PROXY_MODE` is unset. Node-level until the in-pod data path is wired
/// end to end (then this becomes `Shared`, as in ztunnel); every harness already sets
/// `PROXY_MODE` explicitly, so flipping it changes no test.
pub const DEFAULT_PROXY_MODE: ProxyMode = ProxyMode::Node;

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
        default: "node",
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
        name: "PACKET_MARK",
        default: "1337",
        help: "SO_MARK on zring's upstream sockets (decimal or 0x hex)",
    },
    Var {
        name: "ZRING_CORES",
        default: "(all CPUs)",
        help: "number of per-core runtimes, 1..=1024",
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
        name: "XDS_ADDRESS",
        default: "(none)",
        help: "istiod Delta ADS address, https://host:port (http:// for tests); excludes LOCAL_XDS_PATH",
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
        default: "(none)",
        help: "Istio CA address, https://host:port; unset: the built-in development CA",
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
];

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

        let cores = match var("ZRING_CORES") {
            None => cpus,
            Some(v) => parse_range("ZRING_CORES", &v, 1, 1024)? as usize,
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
        let target = |address: &'static str, roots: &'static str, alt: &'static str| {
            let Some(a) = var(address) else {
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
        let xds = target("XDS_ADDRESS", "XDS_ROOT_CA", "ALT_XDS_HOSTNAME")?;
        let ca = target("CA_ADDRESS", "CA_ROOT_CA", "ALT_CA_HOSTNAME")?;
        if let (Some(x), Some(_)) = (&xds, &local_xds_path) {
            return Err(err(
                "XDS_ADDRESS",
                x.address(),
                "LOCAL_XDS_PATH is set too; use one config source",
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
            cluster_id: var("CLUSTER_ID").unwrap_or_else(|| "Kubernetes".into()),
            trust_domain,
            pod_name: var("POD_NAME").unwrap_or_default(),
            pod_namespace: var("POD_NAMESPACE").unwrap_or_default(),
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
                match var("ZRING_DRAIN_DEADLINE") {
                    None => None,
                    Some(v) => Some(parse_duration(&v).ok_or_else(|| {
                        err(
                            "ZRING_DRAIN_DEADLINE",
                            &v,
                            "expected a duration such as 20s or 1500ms (at least 10ms)",
                        )
                    })?),
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
        })
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
            ("XDS_ADDRESS", "istiod:15012"),
            ("XDS_ADDRESS", "grpc://istiod:15012"),
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
        let c = cfg(&[]).unwrap();
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
    }

    #[test]
    fn every_variable_read_is_documented() {
        let src = include_str!("config.rs");
        for name in src
            .split("var(\"")
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

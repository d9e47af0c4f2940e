//! [`Config::from_env`] and [`Config::from_lookup`]: reads and validates every variable once,
//! at start-up on the main thread, into the immutable [`Config`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::address::{ControlPlane, DEFAULT_ROOT_CA, control_plane};
use super::parse::{
    err, parse_bool, parse_cpu_quantity, parse_duration, parse_range, parse_secret_ttl,
    parse_u32_any_radix, worker_threads,
};
use super::vars::{NOT_IMPLEMENTED, unimplemented_in};
use super::{
    Config, ConfigError, DEFAULT_BUFFER_SIZE, DEFAULT_INPOD_UDS, DEFAULT_PROXY_MODE, DriverChoice,
    ISTIO_META_PREFIX, LogFormat, ProxyMode, UringSetup,
};

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
        let uring_setup = match var("ZRING_URING_SETUP") {
            None => UringSetup::DEFAULT,
            Some(v) => UringSetup::parse(&v).ok_or_else(|| {
                err(
                    "ZRING_URING_SETUP",
                    &v,
                    "expected none, or a comma-separated list of coop, single, defer",
                )
            })?,
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
        let ControlPlane { xds, ca, notes } = control_plane(&get, local_xds_path.is_some())?;
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
            passthrough_allow_local: parse_bool(
                "ZRING_PASSTHROUGH_ALLOW_LOCAL",
                var("ZRING_PASSTHROUGH_ALLOW_LOCAL"),
                false,
            )?,
            cores,
            pin_cores: parse_bool("ZRING_PIN_CORES", var("ZRING_PIN_CORES"), true)?,
            driver,
            uring_entries,
            uring_setup,
            buffer_size: match var("ZRING_BUFFER_SIZE") {
                None => DEFAULT_BUFFER_SIZE,
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
            hbone_limits: super::hbone::hbone_limits(var)?,
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
            ipv6_enabled: parse_bool("IPV6_ENABLED", var("IPV6_ENABLED"), true)?,
            dns: super::dns::DnsConfig::from_lookup(&get)?,
            ops: super::ops::read(var, proxy_mode)?,
            not_implemented: unimplemented_in(
                NOT_IMPLEMENTED
                    .iter()
                    .filter(|u| !u.name.ends_with('*'))
                    .filter_map(|u| Some((u.name.to_owned(), get(u.name)?))),
            ),
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

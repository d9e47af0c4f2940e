//! The DNS proxy's settings, read as ztunnel reads them where ztunnel has the switch
//! (`ISTIO_META_DNS_CAPTURE`, `ISTIO_META_DNS_PROXY_ADDR`, `CLUSTER_DOMAIN`,
//! `PREFERED_SERVICE_NAMESPACE`), zring's own `ZRING_DNS_*` for the rest. Runs once at start-up
//! on the main thread, inside [`Config::from_lookup`](super::Config::from_lookup).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;
use super::parse::{err, parse_range};

/// ztunnel's DNS proxy port.
pub const DNS_PORT: u16 = 15053;
/// Where the upstream resolvers are read from unless `ZRING_DNS_UPSTREAMS` names them.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Whether the proxy listens at all (`ISTIO_META_DNS_CAPTURE`; ztunnel's default: on
    /// unless the value is something other than `true`).
    pub enabled: bool,
    /// `ISTIO_META_DNS_PROXY_ADDR`; `None`: the mode's default (in a pod, ztunnel's
    /// `localhost:15053`; node mode, `0.0.0.0:15053`, where the node's capture rule redirects
    /// pods' DNS).
    pub addr: Option<SocketAddr>,
    /// The cluster's DNS domain (`CLUSTER_DOMAIN`).
    pub domain: String,
    /// `PREFERED_SERVICE_NAMESPACE` (ztunnel's spelling).
    pub preferred_namespace: Option<String>,
    /// `ZRING_DNS_UPSTREAMS`: resolvers to forward to; `None`: the nameservers of
    /// `resolv_conf`.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// `ZRING_DNS_RESOLV_CONF`.
    pub resolv_conf: PathBuf,
    /// `ZRING_DNS_UPSTREAM_TIMEOUT_MS`: how long one upstream is waited for before the next is
    /// tried (each is tried once).
    pub upstream_timeout: Duration,
    /// `ZRING_DNS_MAX_INFLIGHT`: forwarded queries one core waits on at once; beyond, queries
    /// are dropped and counted (`zring_dns_rejected_total{reason="overload"}`).
    pub max_inflight: usize,
    /// `ZRING_DNS_CLIENT_QPS`: queries per second one client IP may send to one core
    /// (bursts of twice as many); beyond, dropped and counted
    /// (`zring_dns_rejected_total{reason="rate_limited"}`). 0: no rate limit.
    pub client_qps: u32,
}

impl Default for DnsConfig {
    fn default() -> DnsConfig {
        DnsConfig {
            enabled: true,
            addr: None,
            domain: "cluster.local".into(),
            preferred_namespace: None,
            upstreams: None,
            resolv_conf: DEFAULT_RESOLV_CONF.into(),
            upstream_timeout: Duration::from_millis(2500),
            max_inflight: 1024,
            client_qps: 500,
        }
    }
}

impl DnsConfig {
    /// The address to bind in a pod (`shared`) or in the node (`node`).
    pub fn bind_addr(&self, in_pod: bool) -> SocketAddr {
        self.addr.unwrap_or(if in_pod {
            SocketAddr::from((Ipv4Addr::LOCALHOST, DNS_PORT))
        } else {
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, DNS_PORT))
        })
    }

    pub(super) fn from_lookup(get: &impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());
        let d = DnsConfig::default();
        let enabled = var("ISTIO_META_DNS_CAPTURE").is_none_or(|v| v.eq_ignore_ascii_case("true"));
        let addr = match var("ISTIO_META_DNS_PROXY_ADDR") {
            None => None,
            Some(v) => Some(parse_addr(&v).ok_or_else(|| {
                err(
                    "ISTIO_META_DNS_PROXY_ADDR",
                    &v,
                    "expected IP:PORT or localhost:PORT",
                )
            })?),
        };
        let domain = match var("CLUSTER_DOMAIN") {
            None => d.domain,
            Some(v) => {
                let v = v.trim().trim_matches('.').to_ascii_lowercase();
                let ok = !v.is_empty()
                    && v.len() <= 200
                    && v.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !ok {
                    return Err(err("CLUSTER_DOMAIN", &v, "expected a DNS domain"));
                }
                v
            }
        };
        let upstreams = match var("ZRING_DNS_UPSTREAMS") {
            None => None,
            Some(v) => Some(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<SocketAddr>()
                            .or_else(|_| s.parse().map(|ip| SocketAddr::new(ip, 53)))
                            .map_err(|_| {
                                err(
                                    "ZRING_DNS_UPSTREAMS",
                                    &v,
                                    "expected comma-separated IP or IP:PORT",
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(DnsConfig {
            enabled,
            addr,
            domain,
            preferred_namespace: var("PREFERED_SERVICE_NAMESPACE"),
            upstreams,
            resolv_conf: var("ZRING_DNS_RESOLV_CONF").map_or(d.resolv_conf, PathBuf::from),
            upstream_timeout: match var("ZRING_DNS_UPSTREAM_TIMEOUT_MS") {
                None => d.upstream_timeout,
                Some(v) => Duration::from_millis(parse_range(
                    "ZRING_DNS_UPSTREAM_TIMEOUT_MS",
                    &v,
                    10,
                    60_000,
                )?),
            },
            max_inflight: match var("ZRING_DNS_MAX_INFLIGHT") {
                None => d.max_inflight,
                Some(v) => parse_range("ZRING_DNS_MAX_INFLIGHT", &v, 1, 60_000)? as usize,
            },
            client_qps: match var("ZRING_DNS_CLIENT_QPS") {
                None => d.client_qps,
                Some(v) => parse_range("ZRING_DNS_CLIENT_QPS", &v, 0, 10_000_000)? as u32,
            },
        })
    }
}

/// `IP:PORT`, `[v6]:PORT` or `localhost:PORT` (ztunnel's forms).
fn parse_addr(v: &str) -> Option<SocketAddr> {
    let v = v.trim();
    if let Some(port) = v.strip_prefix("localhost:") {
        return Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port.parse().ok()?)));
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<DnsConfig, ConfigError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DnsConfig::from_lookup(&|n: &str| m.get(n).cloned())
    }

    #[test]
    fn ztunnel_switches() {
        let d = cfg(&[]).unwrap();
        assert!(d.enabled, "on by default, as in ztunnel");
        assert_eq!(d.bind_addr(true), "127.0.0.1:15053".parse().unwrap());
        assert_eq!(d.bind_addr(false), "0.0.0.0:15053".parse().unwrap());
        assert!(cfg(&[("ISTIO_META_DNS_CAPTURE", "TRUE")]).unwrap().enabled);
        assert!(!cfg(&[("ISTIO_META_DNS_CAPTURE", "false")]).unwrap().enabled);
        assert!(!cfg(&[("ISTIO_META_DNS_CAPTURE", "yes")]).unwrap().enabled);
        let d = cfg(&[("ISTIO_META_DNS_PROXY_ADDR", "localhost:5353")]).unwrap();
        assert_eq!(d.bind_addr(true), "127.0.0.1:5353".parse().unwrap());
        assert!(cfg(&[("ISTIO_META_DNS_PROXY_ADDR", "nowhere")]).is_err());
        let d = cfg(&[
            ("CLUSTER_DOMAIN", "Corp.Example."),
            ("PREFERED_SERVICE_NAMESPACE", "istio-system"),
            ("ZRING_DNS_UPSTREAMS", "10.0.0.10, 10.0.0.11:5353"),
        ])
        .unwrap();
        assert_eq!(d.domain, "corp.example");
        assert_eq!(d.preferred_namespace.as_deref(), Some("istio-system"));
        assert_eq!(
            d.upstreams.unwrap(),
            vec![
                "10.0.0.10:53".parse::<SocketAddr>().unwrap(),
                "10.0.0.11:5353".parse().unwrap()
            ]
        );
        assert!(cfg(&[("CLUSTER_DOMAIN", "a..b")]).is_err());
        assert!(cfg(&[("ZRING_DNS_UPSTREAMS", "dns.google")]).is_err());
        assert!(cfg(&[("ZRING_DNS_MAX_INFLIGHT", "0")]).is_err());
        assert_eq!(cfg(&[("ZRING_DNS_CLIENT_QPS", "0")]).unwrap().client_qps, 0);
        assert!(cfg(&[("ZRING_DNS_CLIENT_QPS", "-1")]).is_err());
    }
}

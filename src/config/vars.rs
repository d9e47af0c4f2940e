//! The table of environment variables: [`VARS`], every one zring reads with its default and
//! help (for `--help` and the README), and [`NOT_IMPLEMENTED`], ztunnel's variables zring
//! accepts without their feature. Read at start-up on the main thread (and by `--help`).

use super::{DEFAULT_AUTH_TOKEN, DEFAULT_INPOD_UDS, DEFAULT_ROOT_CA};

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
        name: "ZRING_PASSTHROUGH_ALLOW_LOCAL",
        default: "false",
        help: "node mode: let passthrough (unknown destinations) reach link-local (169.254/16, fe80::/10), loopback and the node's own addresses; refused by default because zring re-originates it from the node",
    },
    Var {
        name: "ZRING_CAPTURE_RESTORE",
        default: "true",
        help: "node mode: put back table ip zring and its policy route when removed or altered (false: only report, unready meanwhile)",
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
        name: "ZRING_URING_SETUP",
        default: "coop,single,defer",
        help: "io_uring setup flags of each core's ring: none, or a comma-separated list of coop (COOP_TASKRUN), single (SINGLE_ISSUER), defer (DEFER_TASKRUN, implies single); an older kernel that refuses them gets fewer",
    },
    Var {
        name: "ZRING_MEMCPY_TUNING",
        default: "auto",
        help: "auto: on AMD CPUs, start again with GLIBC_TUNABLES steering glibc's large copies off `rep movsb` (slow there for rustls's records); off: never",
    },
    Var {
        name: "ZRING_BUFFER_SIZE",
        default: "262144",
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
        name: "ZRING_HBONE_TLS_TIMEOUT",
        default: "10s",
        help: "15008: TLS handshake deadline from accept",
    },
    Var {
        name: "ZRING_HBONE_PREFACE_TIMEOUT",
        default: "10s",
        help: "15008: deadline for the HTTP/2 preface and first SETTINGS after TLS",
    },
    Var {
        name: "ZRING_HBONE_IDLE_TIMEOUT",
        default: "120s",
        help: "15008: close a tunnel without streams for this long (GOAWAY)",
    },
    Var {
        name: "ZRING_HBONE_MAX_CONNECTIONS_PER_PEER",
        default: "512",
        help: "15008: connections from one peer IP, per core",
    },
    Var {
        name: "ZRING_HBONE_MAX_CONNECTIONS",
        default: "4096",
        help: "15008: connections in all, per process (split evenly between cores)",
    },
    Var {
        name: "ZRING_HBONE_MAX_STREAMS_PER_IDENTITY",
        default: "16384",
        help: "15008: concurrent streams of one client identity, per core",
    },
    Var {
        name: "ZRING_HBONE_RECEIVE_BUDGET_MB",
        default: "128",
        help: "15008: MiB of HTTP/2 receive window beyond 64 KiB per connection, per process",
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
        name: "IPV6_ENABLED",
        default: "true",
        help: "false: no IPv6 listeners (node, in-pod, DNS), no ip6 capture table or IPv6 policy route, no AAAA answers for mesh names, hostname endpoints resolved for A only",
    },
    Var {
        name: "ISTIO_META_DNS_CAPTURE",
        default: "true",
        help: "the DNS proxy on 15053 (ztunnel's switch): on unless set to something other than true",
    },
    Var {
        name: "ISTIO_META_DNS_PROXY_ADDR",
        default: "localhost:15053 in a pod, 0.0.0.0:15053 in node mode",
        help: "where the DNS proxy listens (UDP and TCP): IP:PORT or localhost:PORT",
    },
    Var {
        name: "CLUSTER_DOMAIN",
        default: "cluster.local",
        help: "the cluster's DNS domain, for the DNS proxy's Kubernetes names",
    },
    Var {
        name: "PREFERED_SERVICE_NAMESPACE",
        default: "(none)",
        help: "the namespace the DNS proxy prefers when a hostname names services in several",
    },
    Var {
        name: "ZRING_DNS_UPSTREAMS",
        default: "(the nameservers of ZRING_DNS_RESOLV_CONF)",
        help: "comma-separated IP or IP:PORT the DNS proxy forwards names it does not know to",
    },
    Var {
        name: "ZRING_DNS_RESOLV_CONF",
        default: "/etc/resolv.conf",
        help: "where the DNS proxy reads its upstream nameservers",
    },
    Var {
        name: "ZRING_DNS_UPSTREAM_TIMEOUT_MS",
        default: "2500",
        help: "how long the DNS proxy waits for one upstream before trying the next",
    },
    Var {
        name: "ZRING_DNS_MAX_INFLIGHT",
        default: "1024",
        help: "forwarded DNS queries one core waits on at once; beyond, queries are dropped and counted",
    },
    Var {
        name: "ZRING_DNS_CLIENT_QPS",
        default: "500",
        help: "DNS queries per second one client IP may send to one core (bursts of twice as many); beyond, dropped and counted; 0: no limit",
    },
    Var {
        name: "INPOD_ENABLED",
        default: "(none)",
        help: "set by the chart; no effect (ztunnel no longer reads it either)",
    },
    Var {
        name: "ZRING_ADMIN_SOCKET",
        default: "$TMPDIR/zring/admin.sock",
        help: "the admin API on a Unix socket (0600, directory 0700), mutating endpoints included; off: none",
    },
    Var {
        name: "ZRING_ADMIN_TCP_WRITES",
        default: "node: false, shared: true",
        help: "whether 127.0.0.1:15000 also takes POST /quitquitquit and /logging changes (else 403)",
    },
    Var {
        name: "ZRING_TEST_FAULTS",
        default: "(none)",
        help: "TESTS ONLY, refused in a Kubernetes pod: panic-port=P, stall-port=P, exit-port=P",
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
        name: "NETWORK",
        same_as: None,
        what: "this cluster's network for multi-network meshes; zring routes on each source workload's own network instead, and refuses endpoints behind another network's gateway (UNROUTABLE)",
    },
    Unimplemented {
        name: "CRL_PATH",
        same_as: None,
        what: "certificate revocation list; peer certificates are NOT checked against it",
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
pub(super) fn unimplemented_in(vars: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
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

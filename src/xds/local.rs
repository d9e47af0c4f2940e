//! ztunnel's local config (`LOCAL_XDS_PATH`): a YAML file with `workloads`, `services` and
//! `policies`, turned into a validated `state::Snapshot`. Runs on the control thread: `parse`
//! is pure, `load` and `LocalSource` read the file.
//!
//! Format: ztunnel's `LocalConfig` exactly (checked against its source and binary): camelCase
//! fields, `TCP`/`HBONE`, VIPs as `network/IP` strings (`/10.96.0.1` on the default network), a
//! workload's `services` as `"namespace/hostname": {servicePort: targetPort}`, string matches
//! as YAML tags (`- !Exact cluster.local/ns/default/sa/appa`, `!Prefix`, `!Suffix`,
//! `!Presence []`). Required where ztunnel requires: a workload's `namespace`, `workloadIps`
//! and `services`; a service's `name`, `namespace`, `hostname`, `vips`, `ports`; every field
//! of a policy, a gateway (`hboneMtlsPort` too), a locality and a load balancer. A workload's
//! string fields must be YAML strings (`canonicalRevision: 1` is refused, as ztunnel refuses
//! it); unknown fields are refused everywhere ztunnel refuses them. A service's `endpoints`
//! (keyed by workload UID, as ztunnel's config dump writes them) join the workload they name.
//! Differences, all deliberate:
//! - unknown fields in a policy's match groups are refused (ztunnel ignores them): a typo
//!   there would silently widen an ALLOW;
//! - duplicate map keys (a port mapped twice) are refused (ztunnel keeps the last);
//! - a service's `cidrVips`, `weightedWaypoints` and `visibility: Namespace` are refused by
//!   name: zring cannot honour them yet, and ignoring them would route unlike ztunnel;
//! - the snapshot's own rules apply on top (`SnapshotBuilder`): at least one IP per workload,
//!   no duplicate UIDs, IPs or services, valid names; ztunnel loads such files regardless;
//! - empty `serviceAccount`, `trustDomain`, `clusterId` take the workload API's defaults
//!   (`default`, `cluster.local`, `Kubernetes`).
//!
//! `parse` (documents written in Rust code, not files) also takes zring's older shorthand
//! (`shorthand`'s module doc); `parse_bytes`, `load` and `LocalSource` never do.
//!
//! Robustness: any input yields `Ok` or `Err`, never a panic, in time and memory linear in its
//! size. serde_yaml bounds nesting depth (128) and alias jumps; on top of that, flow nesting
//! is bounded before parsing (`check_flow_depth`: libyaml is quadratic in it), and every list,
//! map and string charges a per-parse budget proportional to the input size, so YAML aliases
//! cannot expand a small file into gigabytes (serde_yaml's jump limit alone allows quadratic
//! growth); YAML tags are read through the same charged strings. Error messages quote user
//! values cut short (`state::excerpt`), so a 10 MB scalar never becomes a 10 MB log line.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::state::{
    ApplicationTunnel, Authorization, Cidr, DEFAULT_CAPACITY, DEFAULT_CLUSTER_ID,
    DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, Destination, GatewayAddress, HealthStatus,
    IpFamily, LoadBalancer, LoadBalancerHealthPolicy, LoadBalancerMode, LoadBalancerScope,
    Locality, Match, NamespacedHostname, NetworkAddress, NetworkMode, PolicyAction, PolicyScope,
    PortMap, Protocol, Service, ServiceAccountMatch, Snapshot, SnapshotBuilder, SnapshotError,
    StringMatch, TunnelProtocol, Workload, excerpt,
};

/// Files larger than this are refused before parsing (a local config is kilobytes).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Why a local config cannot be used. Messages name the object and field at fault.
#[derive(Debug, thiserror::Error)]
pub enum LocalConfigError {
    /// The IO error is part of the message (not a `source`) because the control loop logs the
    /// error's `Display` alone.
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    #[error("{} is {size} bytes, more than the {limit}-byte limit", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// Not YAML, or not the local config's shape (unknown field, wrong type, bad enum value…).
    /// `message` includes serde_yaml's path (`workloads[0].services`) and position.
    #[error("invalid local config: {message}")]
    Yaml {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// A value that does not parse (an IP, a VIP, a CIDR, a `namespace/hostname` key…).
    #[error("{subject}: {field} {reason}")]
    Invalid {
        subject: String,
        field: &'static str,
        reason: String,
    },
    /// The objects parse but break a snapshot rule (duplicates, bad names, missing IPs…).
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// Parses and validates a local config document written in code (a test fixture, the lab):
/// ztunnel's format, or zring's older shorthand (`shorthand`'s module doc), which files never
/// get. Empty input (or only comments, or `null`) is the empty snapshot.
pub fn parse(yaml: &str) -> Result<Snapshot, LocalConfigError> {
    let strict = parse_bytes(yaml.as_bytes());
    if let Err(LocalConfigError::Yaml { .. }) = strict
        && let Some(desugared) = shorthand::desugar(yaml)
    {
        return parse_bytes(desugared.as_bytes());
    }
    strict
}

/// The document as JSON, as ztunnel's config dump shows its `staticConfig`: YAML tags (string
/// matches) become one-key maps (`!Exact x` → `{"Exact": "x"}`, `!Presence []` →
/// `{"Presence": []}`). `None` if it is not YAML. Not bounded like `parse`: call it only on a
/// file `parse_bytes` accepted.
pub fn to_json(yaml: &str) -> Option<serde_json::Value> {
    fn untag(v: serde_yaml::Value) -> serde_yaml::Value {
        use serde_yaml::Value as V;
        match v {
            V::Tagged(t) => {
                let kind = t.tag.to_string();
                let kind = kind.strip_prefix('!').unwrap_or(&kind).to_owned();
                let mut m = serde_yaml::Mapping::new();
                m.insert(V::String(kind), untag(t.value));
                V::Mapping(m)
            }
            V::Sequence(items) => V::Sequence(items.into_iter().map(untag).collect()),
            V::Mapping(m) => V::Mapping(m.into_iter().map(|(k, v)| (k, untag(v))).collect()),
            other => other,
        }
    }
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).ok()?;
    serde_json::to_value(untag(doc)).ok()
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Snapshot, LocalConfigError> {
    parse_bytes(&read_bounded(path).map_err(|e| e.with_path(path))?)
}

/// Watches one local config file for the control thread. Each `reload_if_changed` reads the
/// whole file (cheap at config sizes, and it sees configmap symlink swaps that mtime-based
/// checks miss) and compares a digest with what the previous call saw.
#[derive(Debug)]
pub struct LocalSource {
    path: PathBuf,
    /// What the previous call saw, valid or not: the same broken content (or the same read
    /// failure) is reported once, not on every poll.
    last: Option<Seen>,
    /// A change seen by exactly one read so far. A change is applied only when two consecutive
    /// reads agree: writers that truncate and then write (editors, `cp`, `fs::write`) are
    /// otherwise caught half way, and an empty or partial config would be published — an empty
    /// one turns every workload into an unknown source for a whole poll interval.
    settling: Option<Seen>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Content { len: usize, digest: u64 },
    Unreadable(io::ErrorKind),
    TooLarge(u64),
}

impl LocalSource {
    pub fn new(path: impl Into<PathBuf>) -> LocalSource {
        LocalSource {
            path: path.into(),
            last: None,
            settling: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(Some)` when the content differs from what was last applied, two consecutive calls
    /// read it identically, and it is valid (the first call applies at once); `Ok(None)` when
    /// nothing changed or a change has been read only once so far; `Err` once per new broken
    /// content or new read failure (after the same settling). The caller keeps its last good
    /// snapshot on `Err` and `Ok(None)`.
    pub fn reload_if_changed(&mut self) -> Result<Option<Snapshot>, LocalConfigError> {
        let read = read_bounded(&self.path);
        let seen = match &read {
            Ok(bytes) => Seen::Content {
                len: bytes.len(),
                digest: digest(bytes),
            },
            Err(ReadError::Io(e)) => Seen::Unreadable(e.kind()),
            Err(ReadError::TooLarge(size)) => Seen::TooLarge(*size),
        };
        if self.last == Some(seen) {
            self.settling = None;
            return Ok(None);
        }
        if self.last.is_some() && self.settling != Some(seen) {
            self.settling = Some(seen);
            return Ok(None);
        }
        self.settling = None;
        self.last = Some(seen);
        let bytes = read.map_err(|e| e.with_path(&self.path))?;
        parse_bytes(&bytes).map(Some)
    }
}

// SipHash with fixed keys: deterministic within the process, which is all a change check needs.
fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Why the file's bytes could not be had; kept apart from `LocalConfigError` so `LocalSource`
/// can tell a repeated failure from a new one without a catch-all arm.
enum ReadError {
    Io(io::Error),
    TooLarge(u64),
}

impl ReadError {
    fn with_path(self, path: &Path) -> LocalConfigError {
        match self {
            ReadError::Io(error) => LocalConfigError::Read {
                path: path.to_owned(),
                error,
            },
            ReadError::TooLarge(size) => LocalConfigError::TooLarge {
                path: path.to_owned(),
                size,
                limit: MAX_FILE_BYTES,
            },
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let size = file.metadata().map_err(ReadError::Io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(size));
    }
    let mut bytes = Vec::new();
    // `take` also bounds a file that grows (or a special file) between metadata and read.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

/// [`parse`] for the file's raw bytes (which need not be UTF-8: serde_yaml checks).
pub fn parse_bytes(bytes: &[u8]) -> Result<Snapshot, LocalConfigError> {
    check_flow_depth(bytes)?;
    // Not `Option`: like ztunnel, an empty document is an empty config but `~` is refused.
    let raw: RawConfig = {
        // A legitimate document cannot hold more list items, map entries and string bytes
        // than a few per input byte; only aliases can, and they are what the budget stops.
        let _budget = budget::enter(4 * bytes.len() as u64 + 4096);
        serde_yaml::from_slice(bytes).map_err(yaml_error)?
    };
    convert(raw)
}

/// serde_yaml's own recursion limit: nothing nested deeper can deserialize anyway.
const MAX_FLOW_DEPTH: usize = 128;

/// Refuses flow collections (`[`, `{`) nested deeper than `MAX_FLOW_DEPTH` before serde_yaml
/// sees them: libyaml's scanner takes time quadratic in that depth inside a mapping (24 s of
/// control-thread CPU for `workloads: ` followed by 100,000 `[`), although such a document
/// fails anyway. A linear scan that skips quoted scalars and comments; brackets inside plain
/// or block scalars are counted only where a collection could start (after whitespace, `,`,
/// `:`, `[`, `{`), so the count can only run high for text no config contains.
fn check_flow_depth(bytes: &[u8]) -> Result<(), LocalConfigError> {
    let (mut depth, mut line, mut i) = (0usize, 1usize, 0usize);
    // Whether the previous byte ends a token (whitespace, or a structural `[{,:]}`), so the
    // current one may start a collection, a quoted scalar or a comment.
    let (mut boundary, mut after_space) = (true, true);
    while let Some(&b) = bytes.get(i) {
        let was_boundary = boundary;
        boundary = false;
        match b {
            b'\n' => line += 1,
            b'#' if after_space => {
                // A comment runs to the end of the line; the newline is handled next turn.
                while bytes.get(i).is_some_and(|&c| c != b'\n') {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' if was_boundary => {
                i += 1;
                while let Some(&c) = bytes.get(i) {
                    match c {
                        b'\\' if b == b'"' => i += 1,
                        b'\'' if b == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 1,
                        b'\n' => line += 1,
                        c if c == b => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'[' | b'{' if was_boundary => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(LocalConfigError::Yaml {
                        message: format!(
                            "'[' and '{{' nested deeper than {MAX_FLOW_DEPTH} levels at line {line}"
                        ),
                        line: Some(line),
                        column: None,
                    });
                }
                boundary = true;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                boundary = true;
            }
            b',' | b':' => boundary = true,
            _ => {}
        }
        after_space = matches!(b, b'\n' | b'\r' | b' ' | b'\t');
        boundary |= after_space;
        i += 1;
    }
    Ok(())
}

fn yaml_error(e: serde_yaml::Error) -> LocalConfigError {
    const MAX: usize = 400;
    let (line, column) = e
        .location()
        .map_or((None, None), |l| (Some(l.line()), Some(l.column())));
    let mut message = e.to_string();
    // serde_yaml quotes offending values in full; keep the start and the position.
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("… (cut)");
        if let (Some(l), Some(c)) = (line, column) {
            message.push_str(&format!(" at line {l} column {c}"));
        }
    }
    LocalConfigError::Yaml {
        message,
        line,
        column,
    }
}

// ---- conversion: raw YAML shapes → state types ----

fn convert(raw: RawConfig) -> Result<Snapshot, LocalConfigError> {
    let mut workloads = raw
        .workloads
        .0
        .into_iter()
        .enumerate()
        .map(|(i, w)| workload(i, w))
        .collect::<Result<Vec<_>, _>>()?;
    let mut b = SnapshotBuilder::new();
    let mut by_uid: Option<HashMap<std::sync::Arc<str>, usize>> = None;
    for s in raw.services.0 {
        let (service, endpoints) = service(s)?;
        if !endpoints.is_empty() {
            let by_uid = by_uid.get_or_insert_with(|| {
                let pairs = workloads.iter().enumerate();
                pairs.map(|(i, (w, _))| (w.uid.clone(), i)).collect()
            });
            add_endpoints(&mut workloads, by_uid, service.key(), endpoints);
        }
        b.add_service(service);
    }
    for (w, memberships) in workloads {
        b.add_workload(w, memberships);
    }
    for p in raw.policies.0 {
        b.add_policy(policy(p)?);
    }
    Ok(b.build()?)
}

fn invalid(subject: &str, field: &'static str, reason: String) -> LocalConfigError {
    LocalConfigError::Invalid {
        subject: subject.to_owned(),
        field,
        reason,
    }
}

fn or_default(t: Str, default: &str) -> std::sync::Arc<str> {
    if t.0.is_empty() {
        default.into()
    } else {
        t.0.into()
    }
}

type Memberships = Vec<(NamespacedHostname, PortMap)>;

fn workload(index: usize, w: RawWorkload) -> Result<(Workload, Memberships), LocalConfigError> {
    let subject = &if w.uid.0.is_empty() {
        format!("workload #{index} (name {})", excerpt(&w.name.0))
    } else {
        format!("workload {}", excerpt(&w.uid.0))
    };
    let mut ips = Vec::with_capacity(w.workload_ips.0.len());
    for ip in &w.workload_ips.0 {
        match ip.0.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip.to_canonical()),
            Err(_) => {
                return Err(invalid(
                    subject,
                    "workloadIps",
                    format!("{} is not an IP address", excerpt(&ip.0)),
                ));
            }
        }
    }
    let mut memberships = Vec::with_capacity(w.services.0.len());
    for (key, ports) in w.services.0 {
        let Some(name) = NamespacedHostname::parse(&key.0) else {
            let why = format!("key {} is not \"namespace/hostname\"", excerpt(&key.0));
            return Err(invalid(subject, "services", why));
        };
        if memberships.iter().any(|(k, _)| *k == name) {
            return Err(invalid(
                subject,
                "services",
                format!("lists {} twice", excerpt(&key.0)),
            ));
        }
        let ports = port_map(subject, "services", ports)?;
        memberships.push((name, ports));
    }
    let locality = w.locality.map_or_else(Locality::default, |l| Locality {
        region: l.region.0.into(),
        zone: l.zone.0.into(),
        subzone: l.subzone.0.into(),
    });
    let workload = Workload {
        uid: w.uid.0.into(),
        name: w.name.0.into(),
        namespace: w.namespace.0.into(),
        service_account: or_default(w.service_account, DEFAULT_SERVICE_ACCOUNT),
        trust_domain: or_default(w.trust_domain, DEFAULT_TRUST_DOMAIN),
        workload_name: w.workload_name.0.into(),
        workload_type: w.workload_type.0.into(),
        canonical_name: w.canonical_name.0.into(),
        canonical_revision: w.canonical_revision.0.into(),
        cluster_id: or_default(w.cluster_id, DEFAULT_CLUSTER_ID),
        workload_ips: ips,
        protocol: w.protocol,
        network_mode: w.network_mode,
        network: w.network.0.into(),
        node: w.node.0.into(),
        hostname: w.hostname.0.into(),
        waypoint: w
            .waypoint
            .map(|g| gateway(subject, "waypoint", g))
            .transpose()?,
        network_gateway: w
            .network_gateway
            .map(|g| gateway(subject, "networkGateway", g))
            .transpose()?,
        native_tunnel: w.native_tunnel,
        application_tunnel: w.application_tunnel.map(|t| ApplicationTunnel {
            protocol: t.protocol,
            port: t.port,
        }),
        status: w.status,
        authorization_policies: w
            .authorization_policies
            .0
            .into_iter()
            .map(|t| t.0.into())
            .collect(),
        locality,
        capacity: w.capacity.unwrap_or(DEFAULT_CAPACITY),
        services: Vec::new(), // rebuilt from the memberships by the builder
    };
    Ok((workload, memberships))
}

fn port_map(
    subject: &str,
    field: &'static str,
    entries: Entries<u16, u16>,
) -> Result<PortMap, LocalConfigError> {
    let mut map = PortMap::new();
    for (port, target) in entries.0 {
        if map.insert(port, target).is_some() {
            return Err(invalid(
                subject,
                field,
                format!("maps service port {port} twice"),
            ));
        }
    }
    Ok(map)
}

fn gateway(
    subject: &str,
    field: &'static str,
    g: RawGateway,
) -> Result<GatewayAddress, LocalConfigError> {
    let Some(destination) = Destination::parse(&g.destination.0) else {
        let why = format!(
            "destination {} is neither \"network/IP\" nor \"namespace/hostname\"",
            excerpt(&g.destination.0)
        );
        return Err(invalid(subject, field, why));
    };
    Ok(GatewayAddress {
        destination,
        hbone_mtls_port: g.hbone_mtls_port,
    })
}

/// A service's own `endpoints` (as in ztunnel's config dump) join the workloads they name, as
/// if that workload listed the service. As in ztunnel, the workload's own `services` entry wins
/// over the service's, an endpoint naming no workload routes nowhere, and an endpoint's health
/// is its workload's `status`.
fn add_endpoints(
    workloads: &mut [(Workload, Memberships)],
    by_uid: &HashMap<std::sync::Arc<str>, usize>,
    key: NamespacedHostname,
    endpoints: Vec<(std::sync::Arc<str>, PortMap)>,
) {
    for (uid, ports) in endpoints {
        let Some(&i) = by_uid.get(&uid) else { continue };
        let memberships = &mut workloads[i].1;
        if !memberships.iter().any(|(k, _)| *k == key) {
            memberships.push((key.clone(), ports));
        }
    }
}

type Endpoints = Vec<(std::sync::Arc<str>, PortMap)>;

fn service(s: RawService) -> Result<(Service, Endpoints), LocalConfigError> {
    let subject = &format!(
        "service {}",
        excerpt(&format!("{}/{}", s.namespace.0, s.hostname.0))
    );
    // ztunnel reads these; zring cannot honour them yet, and ignoring them would route
    // differently from ztunnel, so they are refused by name.
    if !s.cidr_vips.0.is_empty() {
        let why = "are not supported by zring (list single VIPs in vips)".to_owned();
        return Err(invalid(subject, "cidrVips", why));
    }
    if !s.weighted_waypoints.0.is_empty() {
        let why = "are not supported by zring (name one waypoint)".to_owned();
        return Err(invalid(subject, "weightedWaypoints", why));
    }
    if s.visibility != RawVisibility::Public {
        let why = "Namespace is not supported by zring (only Public)".to_owned();
        return Err(invalid(subject, "visibility", why));
    }
    let mut endpoints = Vec::with_capacity(s.endpoints.0.len());
    for (key, ep) in s.endpoints.0 {
        if key.0 != ep.workload_uid.0 {
            let why = format!(
                "key {} differs from its workloadUid {}",
                excerpt(&key.0),
                excerpt(&ep.workload_uid.0)
            );
            return Err(invalid(subject, "endpoints", why));
        }
        endpoints.push((key.0.into(), port_map(subject, "endpoints", ep.port)?));
    }
    let mut vips = Vec::with_capacity(s.vips.0.len());
    for vip in &s.vips.0 {
        let Some(addr) = NetworkAddress::parse(&vip.0) else {
            let why = format!(
                "{} is not \"network/IP\" (the default network is empty: \"/10.96.0.1\")",
                excerpt(&vip.0)
            );
            return Err(invalid(subject, "vips", why));
        };
        vips.push(addr);
    }
    let service = Service {
        name: s.name.0.into(),
        namespace: s.namespace.0.into(),
        hostname: s.hostname.0.into(),
        vips,
        ports: port_map(subject, "ports", s.ports)?,
        subject_alt_names: s
            .subject_alt_names
            .0
            .into_iter()
            .map(|t| t.0.into())
            .collect(),
        waypoint: s
            .waypoint
            .map(|g| gateway(subject, "waypoint", g))
            .transpose()?,
        load_balancer: s.load_balancer.map(|lb| LoadBalancer {
            routing_preferences: lb.routing_preferences.0,
            mode: lb.mode,
            health_policy: lb.health_policy,
        }),
        ip_families: s.ip_families,
        canonical: s.canonical,
        endpoints: Vec::new(), // derived from the workloads by the builder
    };
    Ok((service, endpoints))
}

fn policy(p: RawPolicy) -> Result<Authorization, LocalConfigError> {
    let subject = &format!(
        "policy {}",
        excerpt(&format!("{}/{}", p.namespace.0, p.name.0))
    );
    let mut rules = Vec::with_capacity(p.rules.0.len());
    for rule in p.rules.0 {
        let mut clauses = Vec::with_capacity(rule.0.len());
        for clause in rule.0 {
            let matches = clause
                .0
                .into_iter()
                .map(|m| match_group(subject, m))
                .collect::<Result<_, _>>()?;
            clauses.push(matches);
        }
        rules.push(clauses);
    }
    Ok(Authorization {
        name: p.name.0.into(),
        namespace: p.namespace.0.into(),
        scope: p.scope,
        action: p.action,
        dry_run: p.dry_run,
        rules,
    })
}

fn match_group(subject: &str, m: RawMatch) -> Result<Match, LocalConfigError> {
    let cidrs = |field: &'static str, list: List<Text>| -> Result<Vec<Cidr>, LocalConfigError> {
        list.0
            .iter()
            .map(|t| {
                let cidr = Cidr::parse(&t.0).map_err(|e| {
                    invalid(subject, field, format!("{} is invalid: {e}", excerpt(&t.0)))
                })?;
                // ztunnel reads these as `IpNet`, which needs the prefix length.
                if !t.0.contains('/') {
                    let why = format!(
                        "{} has no prefix length: ztunnel requires one (/32 for one IPv4 \
                         address, /128 for IPv6)",
                        excerpt(&t.0)
                    );
                    return Err(invalid(subject, field, why));
                }
                Ok(cidr)
            })
            .collect()
    };
    let strings = |list: List<RawStringMatch>| list.0.into_iter().map(|s| s.0).collect();
    let accounts = |list: List<RawServiceAccountMatch>| {
        list.0
            .into_iter()
            .map(|a| ServiceAccountMatch {
                namespace: a.namespace.0.into(),
                service_account: a.service_account.0.into(),
            })
            .collect()
    };
    Ok(Match {
        namespaces: strings(m.namespaces),
        not_namespaces: strings(m.not_namespaces),
        service_accounts: accounts(m.service_accounts),
        not_service_accounts: accounts(m.not_service_accounts),
        principals: strings(m.principals),
        not_principals: strings(m.not_principals),
        source_ips: cidrs("sourceIps", m.source_ips)?,
        not_source_ips: cidrs("notSourceIps", m.not_source_ips)?,
        destination_ips: cidrs("destinationIps", m.destination_ips)?,
        not_destination_ips: cidrs("notDestinationIps", m.not_destination_ips)?,
        destination_ports: m.destination_ports.0,
        not_destination_ports: m.not_destination_ports.0,
    })
}

// ---- raw YAML shapes: ztunnel's spellings, required where ztunnel requires them ----

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    workloads: List<RawWorkload>,
    services: List<RawService>,
    policies: List<RawPolicy>,
}

/// ztunnel's `LocalWorkload`: its `Workload` flattened, plus `services`. Required as in
/// ztunnel: `namespace`, `workloadIps`, `services`. String fields are `Str` (see there).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawWorkload {
    #[serde(default)]
    uid: Str,
    #[serde(default)]
    name: Str,
    namespace: Str,
    #[serde(default)]
    service_account: Str,
    #[serde(default)]
    trust_domain: Str,
    #[serde(default)]
    workload_name: Str,
    #[serde(default)]
    workload_type: Str,
    #[serde(default)]
    canonical_name: Str,
    #[serde(default)]
    canonical_revision: Str,
    #[serde(default)]
    cluster_id: Str,
    workload_ips: List<Text>,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    network_mode: NetworkMode,
    #[serde(default)]
    network: Str,
    #[serde(default)]
    node: Str,
    #[serde(default)]
    hostname: Str,
    #[serde(default)]
    waypoint: Option<RawGateway>,
    #[serde(default)]
    network_gateway: Option<RawGateway>,
    #[serde(default)]
    native_tunnel: bool,
    #[serde(default)]
    application_tunnel: Option<RawApplicationTunnel>,
    #[serde(default)]
    status: HealthStatus,
    #[serde(default)]
    authorization_policies: List<Str>,
    #[serde(default)]
    locality: Option<RawLocality>,
    #[serde(default)]
    capacity: Option<u32>,
    /// `"namespace/hostname": {servicePort: targetPort}`; `{}` when none (ztunnel requires it).
    services: Entries<Text, Entries<u16, u16>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawGateway {
    destination: Text,
    hbone_mtls_port: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawApplicationTunnel {
    protocol: TunnelProtocol,
    #[serde(default)]
    port: Option<u16>,
}

/// All three required, unknown fields ignored: ztunnel's `Locality` exactly.
#[derive(Deserialize)]
struct RawLocality {
    region: Str,
    zone: Str,
    subzone: Str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawService {
    name: Text,
    namespace: Text,
    hostname: Text,
    vips: List<Text>,
    #[serde(default)]
    cidr_vips: List<RawNetworkCidr>,
    ports: Entries<u16, u16>,
    /// Keyed by workload UID, as ztunnel's config dump writes them.
    #[serde(default)]
    endpoints: Entries<Text, RawEndpoint>,
    #[serde(default)]
    subject_alt_names: List<Text>,
    #[serde(default)]
    waypoint: Option<RawGateway>,
    #[serde(default)]
    weighted_waypoints: List<RawWeightedWaypoint>,
    #[serde(default)]
    load_balancer: Option<RawLoadBalancer>,
    #[serde(default)]
    ip_families: Option<IpFamily>,
    #[serde(default)]
    canonical: bool,
    #[serde(default)]
    visibility: RawVisibility,
}

#[derive(Deserialize)]
struct RawNetworkCidr {
    #[allow(
        dead_code,
        reason = "read only to check the shape; CIDR VIPs are refused"
    )]
    network: Text,
    #[allow(
        dead_code,
        reason = "read only to check the shape; CIDR VIPs are refused"
    )]
    cidr: Text,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawEndpoint {
    workload_uid: Text,
    port: Entries<u16, u16>,
    #[allow(
        dead_code,
        reason = "zring takes an endpoint's health from its workload"
    )]
    status: HealthStatus,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeightedWaypoint {
    #[allow(
        dead_code,
        reason = "read only to check the shape; weighted waypoints are refused"
    )]
    destination: RawGateway,
    #[allow(
        dead_code,
        reason = "read only to check the shape; weighted waypoints are refused"
    )]
    weight: u32,
}

#[derive(Default, PartialEq, Deserialize)]
enum RawVisibility {
    #[default]
    Public,
    Namespace,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawLoadBalancer {
    routing_preferences: List<LoadBalancerScope>,
    mode: LoadBalancerMode,
    health_policy: LoadBalancerHealthPolicy,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawPolicy {
    name: Text,
    namespace: Text,
    scope: PolicyScope,
    action: PolicyAction,
    rules: List<List<List<RawMatch>>>,
    dry_run: bool,
}

/// ztunnel ignores unknown fields here; zring refuses them (see the module doc).
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct RawMatch {
    namespaces: List<RawStringMatch>,
    not_namespaces: List<RawStringMatch>,
    service_accounts: List<RawServiceAccountMatch>,
    not_service_accounts: List<RawServiceAccountMatch>,
    principals: List<RawStringMatch>,
    not_principals: List<RawStringMatch>,
    source_ips: List<Text>,
    not_source_ips: List<Text>,
    destination_ips: List<Text>,
    not_destination_ips: List<Text>,
    destination_ports: List<u16>,
    not_destination_ports: List<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawServiceAccountMatch {
    namespace: Text,
    service_account: Text,
}

/// A `StringMatch` written as ztunnel writes it, a YAML tag (`!Exact x`); read by hand in
/// `budget`.
struct RawStringMatch(StringMatch);

use budget::{Entries, List, Str, Text};

/// Deserialization wrappers that charge a per-parse budget (see `budget`'s module doc).
mod budget;
mod shorthand;

#[cfg(test)]
mod tests;

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
//!
//! Layout: this file holds the entry points, the error, the document's top level and what
//! workloads and services share (gateways, port maps); `workload`, `service` and `policy` each
//! own one object kind's YAML shape and its conversion; `yaml` bounds and words serde_yaml's
//! work; `budget` charges every deserialized item; `source` reads and watches the file;
//! `shorthand` desugars fixtures.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::state::{
    Destination, GatewayAddress, PortMap, Snapshot, SnapshotBuilder, SnapshotError, excerpt,
};

use budget::{Entries, List, Text};
use policy::{RawPolicy, policy};
use service::{RawService, add_endpoints, service};
use source::read_bounded;
use workload::{RawWorkload, workload};
use yaml::{check_flow_depth, yaml_error};

pub use source::LocalSource;

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

// ---- conversion: raw YAML shapes → state types (per object kind in its own module) ----

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

// ---- raw YAML shapes: ztunnel's spellings, required where ztunnel requires them ----

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    workloads: List<RawWorkload>,
    services: List<RawService>,
    policies: List<RawPolicy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawGateway {
    destination: Text,
    hbone_mtls_port: u16,
}

/// Deserialization wrappers that charge a per-parse budget (see `budget`'s module doc).
mod budget;
mod policy;
mod service;
mod shorthand;
mod source;
mod workload;
mod yaml;

#[cfg(test)]
mod tests;

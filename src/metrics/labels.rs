//! The label set of Istio's TCP metrics (`istio_tcp_*`), in ztunnel's order and spelling.
//!
//! Pure: no IO, no clock, no threads. A core builds a borrowed [`LabelsRef`] from what it knows
//! about one connection ([`Conn`]), looks it up in its shard without allocating, and only when
//! the set is new turns it into an owned [`LabelSet`] that crosses to the metrics server.
//!
//! Rules (ztunnel's, so dashboards and Kiali read zring unchanged):
//! - a missing or empty value is `unknown`;
//! - `source_app`/`destination_app` are the canonical service, `*_version` the canonical
//!   revision, `*_workload` the workload (controller) name, `*_cluster` the cluster id;
//! - `source_principal` is known only when the source proved it over mTLS (HBONE); the
//!   destination principal is the destination workload's identity (or the one it proved);
//! - `connection_security_policy` is `mutual_tls` when the connection crossed HBONE, else
//!   `unknown`; `request_protocol` is always `tcp`;
//! - the locality labels (`source_region`, `source_zone`, `destination_region`,
//!   `destination_zone`) come last, as ztunnel has written them since 1.25.
//!
//! Invariant: a [`LabelsRef`] and the [`LabelSet`] made from it hash ([`LabelsRef::hash_with`],
//! [`LabelSet::hash_with`]) and compare ([`LabelSet::matches`]) equal, whatever form a value
//! took (a SPIFFE identity kept in three parts hashes as its joined text).

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::state::{Service, Snapshot, Workload};

/// How many labels a traffic series has.
pub const LEN: usize = 27;

/// Label names, in exposition order (ztunnel's).
pub const NAMES: [&str; LEN] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
    "source_region",
    "source_zone",
    "destination_region",
    "destination_zone",
];

/// Index of `response_flags` in [`NAMES`]: the one label that differs between a connection's
/// opening series and its closing one.
pub const RESPONSE_FLAGS: usize = 21;

/// The value of a label nobody could fill.
pub const UNKNOWN: &str = "unknown";
/// `response_flags` of a connection that ended without error.
pub const NO_FLAGS: &str = "-";

/// Which proxy reports the connection: the one next to the client or next to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Source,
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// Whether the connection was protected by mutual TLS (it crossed HBONE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityPolicy {
    MutualTls,
    Unknown,
}

impl SecurityPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::MutualTls => "mutual_tls",
            SecurityPolicy::Unknown => UNKNOWN,
        }
    }
}

/// What a core knows about one connection, borrowed from its record.
#[derive(Debug, Clone, Copy)]
pub struct Conn<'a> {
    pub reporter: Reporter,
    pub source: Option<&'a Workload>,
    /// The identity the source proved with its certificate (HBONE only).
    pub source_principal: Option<&'a str>,
    pub destination: Option<&'a Workload>,
    /// The identity the destination proved (outbound HBONE) or presented for (inbound HBONE);
    /// without it the destination workload's identity is used.
    pub destination_principal: Option<&'a str>,
    pub service: Option<&'a Service>,
    pub security: SecurityPolicy,
    pub response_flags: &'static str,
}

/// One label value, borrowed. A workload's identity is kept in its three parts so that naming
/// it costs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Str(&'a str),
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    Spiffe(&'a str, &'a str, &'a str),
}

impl Value<'_> {
    fn pieces(&self) -> [&str; 6] {
        match *self {
            Value::Str(s) => [s, "", "", "", "", ""],
            Value::Spiffe(td, ns, sa) => ["spiffe://", td, "/ns/", ns, "/sa/", sa],
        }
    }

    /// Whether this value spells exactly `s`. Runs for every label of every new connection
    /// (`metrics::shard::Shard::series`), so a plain value is one comparison and an identity
    /// is checked by length before any of its parts is.
    pub fn equals(&self, s: &str) -> bool {
        match *self {
            Value::Str(v) => v == s,
            Value::Spiffe(td, ns, sa) => {
                let len = "spiffe://".len() + td.len() + "/ns/".len() + ns.len() + "/sa/".len();
                if s.len() != len + sa.len() {
                    return false;
                }
                let mut rest = s;
                for piece in self.pieces() {
                    match rest.strip_prefix(piece) {
                        Some(r) => rest = r,
                        None => return false,
                    }
                }
                rest.is_empty()
            }
        }
    }

    /// Feeds the value to `h` as the bytes it spells: the same hash whether it is borrowed in
    /// parts or owned whole (the hasher's `write` is a stream, so the split does not matter).
    fn write_hash(&self, h: &mut impl Hasher) {
        match *self {
            Value::Str(s) => h.write(s.as_bytes()),
            Value::Spiffe(..) => {
                for piece in self.pieces() {
                    h.write(piece.as_bytes());
                }
            }
        }
        // A separator no label value contains, so ("ab","c") and ("a","bc") differ.
        h.write_u8(0xff);
    }

    pub fn to_owned_string(&self) -> String {
        self.pieces().concat()
    }
}

/// A label set borrowed from a connection: what a core looks up in its shard.
#[derive(Debug, Clone, Copy)]
pub struct LabelsRef<'a> {
    pub values: [Value<'a>; LEN],
}

fn or_unknown(s: &str) -> Value<'_> {
    if s.is_empty() {
        Value::Str(UNKNOWN)
    } else {
        Value::Str(s)
    }
}

fn opt(s: Option<&str>) -> Value<'_> {
    s.map_or(Value::Str(UNKNOWN), or_unknown)
}

impl<'a> LabelsRef<'a> {
    /// The labels of `c`, with ztunnel's fallbacks.
    pub fn new(c: &Conn<'a>) -> LabelsRef<'a> {
        let src = c.source;
        let dst = c.destination;
        let name = |w: Option<&'a Workload>, f: fn(&'a Workload) -> &'a str| opt(w.map(f));
        let dst_principal = match (c.destination_principal, dst) {
            (Some(p), _) => or_unknown(p),
            (None, Some(w)) => {
                let (td, ns, sa) = w.identity_parts();
                Value::Spiffe(td, ns, sa)
            }
            (None, None) => Value::Str(UNKNOWN),
        };
        LabelsRef {
            values: [
                Value::Str(c.reporter.as_str()),
                name(src, |w| &*w.workload_name),
                name(src, |w| &*w.canonical_name),
                name(src, |w| &*w.canonical_revision),
                name(src, |w| &*w.namespace),
                opt(c.source_principal),
                name(src, |w| &*w.canonical_name),
                name(src, |w| &*w.canonical_revision),
                name(src, |w| &*w.cluster_id),
                opt(c.service.map(|s| &*s.hostname)),
                opt(c.service.map(|s| &*s.namespace)),
                opt(c.service.map(|s| &*s.name)),
                name(dst, |w| &*w.workload_name),
                name(dst, |w| &*w.canonical_name),
                name(dst, |w| &*w.canonical_revision),
                name(dst, |w| &*w.namespace),
                dst_principal,
                name(dst, |w| &*w.canonical_name),
                name(dst, |w| &*w.canonical_revision),
                name(dst, |w| &*w.cluster_id),
                Value::Str("tcp"),
                Value::Str(c.response_flags),
                Value::Str(c.security.as_str()),
                name(src, |w| &*w.locality.region),
                name(src, |w| &*w.locality.zone),
                name(dst, |w| &*w.locality.region),
                name(dst, |w| &*w.locality.zone),
            ],
        }
    }

    /// The same labels with another `response_flags`.
    pub fn with_flags(mut self, flags: &'static str) -> LabelsRef<'a> {
        self.values[RESPONSE_FLAGS] = Value::Str(flags);
        self
    }

    pub fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        for v in &self.values {
            v.write_hash(&mut h);
        }
        h.finish()
    }

    pub fn to_owned_set(&self) -> LabelSet {
        LabelSet {
            values: self
                .values
                .iter()
                .map(|v| v.to_owned_string().into())
                .collect(),
        }
    }
}

/// An owned label set: the key of one series, shared with the metrics server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSet {
    /// One value per entry of [`NAMES`], in that order.
    values: Box<[Box<str>]>,
}

impl LabelSet {
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|v| &**v)
    }

    /// The value of label `name`, if it is one of [`NAMES`].
    pub fn get(&self, name: &str) -> Option<&str> {
        NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| &*self.values[i])
    }

    pub fn response_flags(&self) -> &str {
        &self.values[RESPONSE_FLAGS]
    }

    pub fn matches(&self, r: &LabelsRef<'_>) -> bool {
        self.values
            .iter()
            .zip(r.values.iter())
            .all(|(mine, theirs)| theirs.equals(mine))
    }

    pub fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        for v in self.values.iter() {
            Value::Str(v).write_hash(&mut h);
        }
        h.finish()
    }

    /// (name, value) pairs in exposition order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'static str, &str)> {
        NAMES.iter().copied().zip(self.values())
    }
}

/// The service an inbound connection to `workload` on `port` most likely came through, for the
/// destination labels when the client did not say (ztunnel's guess): the first of the
/// workload's services whose target port, or whose endpoint mapping for this workload, is
/// `port`.
pub fn guess_inbound_service(
    snapshot: &Snapshot,
    workload: &Workload,
    port: u16,
) -> Option<Arc<Service>> {
    snapshot
        .services_of(workload)
        .find(|s| {
            s.ports.iter().any(|(service_port, target)| {
                *target == port
                    || s.endpoints.iter().any(|e| {
                        e.workload.uid == workload.uid && e.ports.get(service_port) == Some(&port)
                    })
            })
        })
        .cloned()
}

#[cfg(test)]
mod tests;

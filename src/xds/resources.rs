//! The resource map a Delta ADS stream maintains: every accepted `Address` and
//! `Authorization` resource by name, with its version, and the `Snapshot` built from them.
//! Pure: no IO, no clock, no logging; the xDS client (control thread) drives it.
//!
//! Applying a response is all-or-nothing per resource, never per response:
//! 1. each resource is decoded and converted on its own (`convert`); one that fails is
//!    rejected and the previous version of that name (if any) stays;
//! 2. removals and the surviving updates are applied to the map;
//! 3. the snapshot is built. Objects sharing an address are not a conflict (several workloads
//!    per IP, several services per VIP: istiod sends both, and the snapshot keeps them all,
//!    see `state::Snapshot`), keys are resource names, and every object was checked on its
//!    own in step 1, so the build cannot fail; should it ever, every update of the response is
//!    rolled back and rejected, and the removals stay.
//!
//! Invariant: the map always builds into a valid snapshot (it starts empty, and step 3 only
//! keeps changes that build), so a later response is never blamed for an earlier one.
//!
//! Names: istiod names a workload resource by its uid, a service by `namespace/hostname` and a
//! policy by `namespace/name`; a resource whose name differs from its object's key is rejected,
//! because removals arrive by name and would otherwise miss it.

use std::collections::{HashMap, HashSet};

use prost::Message;

use super::convert::{AddressEntry, ConvertError, MAX_TEXT_BYTES};
use super::proto::discovery::Resource;
use super::proto::{security, workload};
use crate::state::{Authorization, Snapshot, SnapshotBuilder, SnapshotError, excerpt};

pub use crate::xds_types::Kind;

/// Why one resource of a response was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("the resource carries no payload")]
    NoPayload,
    #[error("payload type {} is not the response's type", excerpt(.0))]
    WrongType(String),
    #[error("does not decode: {0}")]
    Decode(String),
    #[error("resource {what} is {len} bytes, more than the {MAX_TEXT_BYTES}-byte limit")]
    TooLong { what: &'static str, len: usize },
    #[error("listed more than once in one response")]
    Repeated,
    #[error("the resource name differs from the object's key {}", excerpt(.0))]
    NameMismatch(String),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The snapshot would not build with it. No rule between objects remains (objects
    /// sharing an address are all kept), so this is a bug guard, not an expected outcome.
    #[error("the snapshot does not build with it: {0}")]
    Unbuildable(SnapshotError),
}

/// One rejected resource, for the NACK's error detail and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub name: String,
    pub error: ResourceError,
}

/// What applying one response did.
#[derive(Debug)]
pub struct Applied {
    /// The new snapshot, when anything changed (`None`: nothing to publish).
    pub snapshot: Option<Snapshot>,
    pub rejected: Vec<Rejection>,
    /// Resources added or replaced, and removed.
    pub updated: usize,
    pub removed: usize,
}

#[derive(Debug, Clone)]
struct Held<T> {
    version: String,
    value: T,
}

/// Every accepted resource of both types, by name.
#[derive(Debug, Default)]
pub struct ResourceSet {
    addresses: HashMap<String, Held<AddressEntry>>,
    policies: HashMap<String, Held<Authorization>>,
}

/// The names a response updated, in response order.
#[derive(Default)]
struct Updated {
    order: Vec<String>,
    set: HashSet<String>,
}

impl Updated {
    fn insert(&mut self, name: String) {
        if self.set.insert(name.clone()) {
            self.order.push(name);
        }
    }

    fn remove(&mut self, name: &str) -> bool {
        let found = self.set.remove(name);
        if found {
            self.order.retain(|n| n != name);
        }
        found
    }

    fn len(&self) -> usize {
        self.set.len()
    }
}

/// A converted resource waiting to be applied.
enum Value {
    Address(AddressEntry),
    Policy(Authorization),
}

/// A map entry as it was before this response touched it, to roll back to.
enum Previous {
    Address(Option<Held<AddressEntry>>),
    Policy(Option<Held<Authorization>>),
}

impl ResourceSet {
    pub fn new() -> ResourceSet {
        ResourceSet::default()
    }

    pub fn len(&self, kind: Kind) -> usize {
        match kind {
            Kind::Address => self.addresses.len(),
            Kind::Authorization => self.policies.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.policies.is_empty()
    }

    /// Name → version of every held resource of `kind`: a reconnecting client's
    /// `initial_resource_versions`, so the server can skip what we already have.
    pub fn versions(&self, kind: Kind) -> HashMap<String, String> {
        match kind {
            Kind::Address => versions(&self.addresses),
            Kind::Authorization => versions(&self.policies),
        }
    }

    /// Applies one response's resources and removals (see the module doc).
    pub fn apply(&mut self, kind: Kind, resources: Vec<Resource>, removed: Vec<String>) -> Applied {
        let mut rejected = Vec::new();
        let mut seen = HashSet::with_capacity(resources.len());
        let mut staged = Vec::with_capacity(resources.len());
        for r in resources {
            let name = r.name.clone();
            if !seen.insert(name.clone()) {
                rejected.push(Rejection {
                    name,
                    error: ResourceError::Repeated,
                });
                continue;
            }
            match decode(kind, r) {
                Ok((version, value)) => staged.push((name, version, value)),
                Err(error) => rejected.push(Rejection { name, error }),
            }
        }

        // Removals first: a name both removed and updated in one response ends up updated.
        let mut removed_count = 0;
        let mut undo: Vec<(String, Previous)> = Vec::new();
        for name in removed {
            let previous = match kind {
                Kind::Address => Previous::Address(self.addresses.remove(&name)),
                Kind::Authorization => Previous::Policy(self.policies.remove(&name)),
            };
            if previous.is_some() {
                removed_count += 1;
                undo.push((name, previous));
            }
        }
        let removals = undo.len();
        let mut updated = Updated::default();
        for (name, version, value) in staged {
            let previous = match value {
                Value::Address(v) => Previous::Address(
                    self.addresses
                        .insert(name.clone(), Held { version, value: v }),
                ),
                Value::Policy(v) => Previous::Policy(
                    self.policies
                        .insert(name.clone(), Held { version, value: v }),
                ),
            };
            updated.insert(name.clone());
            undo.push((name, previous));
        }
        if undo.is_empty() {
            return Applied {
                snapshot: None,
                rejected,
                updated: 0,
                removed: 0,
            };
        }

        match self.build_with_last(&updated) {
            Ok(snapshot) => Applied {
                snapshot: Some(snapshot),
                rejected,
                updated: updated.len(),
                removed: removed_count,
            },
            Err(error) => {
                // Unreachable by construction (see the module doc); should a rule between
                // objects ever return, the response's updates are refused rather than the
                // snapshot left unbuildable. The removals stay: the server asked for them.
                for (name, previous) in undo.drain(removals..).rev() {
                    self.restore(&name, previous);
                    if updated.remove(&name) {
                        rejected.push(Rejection {
                            name,
                            error: ResourceError::Unbuildable(error.clone()),
                        });
                    }
                }
                let snapshot = self.build_with_last(&updated);
                Applied {
                    snapshot: (removed_count > 0).then_some(snapshot.ok()).flatten(),
                    rejected,
                    updated: 0,
                    removed: removed_count,
                }
            }
        }
    }

    /// Builds the snapshot of everything held.
    pub fn build(&self) -> Result<Snapshot, SnapshotError> {
        self.build_with_last(&Updated::default())
    }

    /// Builds with the names in `last` added after all others, in their order, so that in a
    /// conflict the builder's `second` object is the later of them.
    fn build_with_last(&self, last: &Updated) -> Result<Snapshot, SnapshotError> {
        let mut b = SnapshotBuilder::new();
        let early = self
            .addresses
            .iter()
            .filter(|(n, _)| !last.set.contains(*n))
            .map(|(_, h)| h);
        let late = last.order.iter().filter_map(|n| self.addresses.get(n));
        for held in early.chain(late) {
            match &held.value {
                AddressEntry::Workload(w) => {
                    b.add_prepared_workload(w.clone());
                }
                AddressEntry::Service(s) => {
                    b.add_service(s.clone());
                }
            }
        }
        for held in self.policies.values() {
            b.add_policy(held.value.clone());
        }
        b.build()
    }

    fn restore(&mut self, name: &str, previous: Previous) {
        match previous {
            Previous::Address(Some(held)) => {
                self.addresses.insert(name.to_owned(), held);
            }
            Previous::Address(None) => {
                self.addresses.remove(name);
            }
            Previous::Policy(Some(held)) => {
                self.policies.insert(name.to_owned(), held);
            }
            Previous::Policy(None) => {
                self.policies.remove(name);
            }
        }
    }
}

impl Previous {
    fn is_some(&self) -> bool {
        match self {
            Previous::Address(p) => p.is_some(),
            Previous::Policy(p) => p.is_some(),
        }
    }
}

fn versions<T>(m: &HashMap<String, Held<T>>) -> HashMap<String, String> {
    m.iter()
        .map(|(n, h)| (n.clone(), h.version.clone()))
        .collect()
}

fn decode(kind: Kind, r: Resource) -> Result<(String, Value), ResourceError> {
    for (what, len) in [("name", r.name.len()), ("version", r.version.len())] {
        if len > MAX_TEXT_BYTES {
            return Err(ResourceError::TooLong { what, len });
        }
    }
    let any = r.resource.ok_or(ResourceError::NoPayload)?;
    if any.type_url != kind.type_url() {
        return Err(ResourceError::WrongType(any.type_url));
    }
    let (key, value) = match kind {
        Kind::Address => {
            let msg = workload::Address::decode(&*any.value)
                .map_err(|e| ResourceError::Decode(e.to_string()))?;
            let entry = AddressEntry::try_from(msg)?;
            (entry.resource_name(), Value::Address(entry))
        }
        Kind::Authorization => {
            let msg = security::Authorization::decode(&*any.value)
                .map_err(|e| ResourceError::Decode(e.to_string()))?;
            let policy = Authorization::try_from(msg)?;
            (policy.key(), Value::Policy(policy))
        }
    };
    if key != r.name {
        return Err(ResourceError::NameMismatch(key));
    }
    Ok((r.version, value))
}

#[cfg(test)]
pub(crate) mod tests;

//! `Authorization`: the data of an Istio authorization policy as ztunnel receives it (Istio's
//! `istio.security.Authorization`). Pure data; evaluation lives in `rbac`.
//! Built on the control thread, read through `Arc` by every core.
//!
//! Shape: `rules` are ORed; each rule is a list of clauses that are ANDed; each clause is a
//! list of `Match`es that are ORed; within a `Match` every non-empty field must hold ("any
//! positive and no negative"). Principals are compared without their `spiffe://` prefix.
//!
//! Invariants once inside a `Snapshot`: `namespace/name` is unique, names split one way, and
//! no port in a match is 0.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::cidr::Cidr;
use super::ser;

/// Which workloads a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolicyScope {
    /// Every workload in the mesh (a policy in the root namespace).
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// Only workloads that list the policy in their `authorizationPolicies`.
    WorkloadSelector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PolicyAction {
    Allow,
    Deny,
}

/// How a string field is compared. YAML spells each as a one-key map (`- Exact: x`,
/// `- Presence: []`); JSON dumps use the same shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringMatch {
    Exact(Arc<str>),
    Prefix(Arc<str>),
    Suffix(Arc<str>),
    /// Any non-empty value.
    Presence,
}

impl Serialize for StringMatch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTupleVariant;
        const NAME: &str = "StringMatch";
        match self {
            StringMatch::Exact(v) => s.serialize_newtype_variant(NAME, 0, "Exact", &**v),
            StringMatch::Prefix(v) => s.serialize_newtype_variant(NAME, 1, "Prefix", &**v),
            StringMatch::Suffix(v) => s.serialize_newtype_variant(NAME, 2, "Suffix", &**v),
            // ztunnel's `Presence()` is an empty tuple variant: `{"Presence": []}`.
            StringMatch::Presence => s.serialize_tuple_variant(NAME, 3, "Presence", 0)?.end(),
        }
    }
}

/// A Kubernetes service account, matched on namespace and name (not trust domain).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountMatch {
    #[serde(serialize_with = "ser::str")]
    pub namespace: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub service_account: Arc<str>,
}

/// One match group: every non-empty field must hold (positive lists: any entry matches;
/// negative lists: no entry matches).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Match {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<StringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<StringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<ServiceAccountMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<StringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<StringMatch>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_source_ips: Vec<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_ips: Vec<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ips: Vec<Cidr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ports: Vec<u16>,
}

impl Match {
    /// A match with no conditions at all. ztunnel skips such groups (they match nothing);
    /// `rbac` treats them as matching in DENY policies and not in ALLOW ones (fail closed).
    pub fn is_empty(&self) -> bool {
        self == &Match::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    #[serde(serialize_with = "ser::str")]
    pub name: Arc<str>,
    #[serde(serialize_with = "ser::str")]
    pub namespace: Arc<str>,
    pub scope: PolicyScope,
    pub action: PolicyAction,
    /// Evaluate and log, but never enforce.
    pub dry_run: bool,
    /// rules (ORed) → clauses (ANDed) → matches (ORed).
    pub rules: Vec<Vec<Vec<Match>>>,
}

impl Authorization {
    /// The policy's key, `namespace/name`: how workloads reference it and how it is indexed.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Every match group of every rule, for validation and indexing.
    pub fn matches(&self) -> impl Iterator<Item = &Match> {
        self.rules.iter().flatten().flatten()
    }
}

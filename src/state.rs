//! The mesh as zring sees it: workloads, services and authorization policies, frozen into an
//! immutable, fully indexed `Snapshot`. Pure: no IO, no clock, no threads, no logging.
//!
//! Threads: the control thread builds a snapshot (`SnapshotBuilder::build`) from a config
//! source (`xds::local` today, Delta ADS later) and publishes it through `arc-swap`; each core
//! loads the current `Arc<Snapshot>` once per connection and only reads it. Nothing here is
//! ever mutated after `build` returns, so readers need no lock.
//!
//! Invariants of a built snapshot (see `builder` for each check):
//! - every index is precomputed, so lookups are hash probes (plus a walk of the few objects
//!   sharing one address) that never allocate;
//! - addresses are canonical (IPv4-mapped IPv6 is stored and looked up as IPv4) and keyed by
//!   (network, IP): several workloads may share an IP (on different networks, or a pod and a
//!   WorkloadEntry while istiod catches up) and several services a VIP; lookups return the best
//!   one deterministically (see `snapshot`), never fail the build;
//! - `namespace/hostname`, `namespace/name` and workload uids are unique;
//! - a service's endpoints are exactly the workloads whose memberships name it;
//! - identities (`spiffe://td/ns/NS/sa/SA`) are unambiguous (see `names`).
//!
//! Kept although zring cannot route all of it (routing refuses such connections one by one):
//! workloads with no IP (addressed by hostname, or reachable only through a network gateway),
//! headless services (no VIP), CIDR VIPs, `PASSTHROUGH` services.
//!
//! Serialization uses ztunnel's camelCase names (for a later `/config_dump`). Unit enums also
//! derive `Deserialize`, so each value's spelling lives in one place; structs are `Serialize`
//! only, because each config source owns its input format and validation.

mod builder;
mod cidr;
pub mod names;
mod policy;
mod service;
mod snapshot;
mod workload;

pub use builder::{PreparedWorkload, SnapshotBuilder, SnapshotError};
pub use cidr::{Cidr, CidrError};
pub use policy::{
    Authorization, Match, PolicyAction, PolicyScope, ServiceAccountMatch, StringMatch,
};
pub use service::{
    Endpoint, IpFamily, LoadBalancer, LoadBalancerHealthPolicy, LoadBalancerMode,
    LoadBalancerScope, NetworkCidr, PortMap, Service,
};
pub use snapshot::Snapshot;
pub use workload::{
    ApplicationTunnel, DEFAULT_CAPACITY, DEFAULT_CLUSTER_ID, DEFAULT_HBONE_MTLS_PORT,
    DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, Destination, GatewayAddress, HealthStatus,
    Locality, NamespacedHostname, NetworkAddress, NetworkMode, Protocol, TunnelProtocol, Workload,
};

/// A user-supplied value as error messages quote it: Debug-escaped (control characters stay
/// visible) and cut to 64 characters, so a 10 MB scalar cannot become a 10 MB log line.
pub(crate) fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// serde helpers: `Arc<str>` is not `Serialize` without serde's `rc` feature, which the crate
/// does not enable (it would also make `Arc<T>` deserialization silently duplicate data).
mod ser {
    use std::sync::Arc;

    pub fn str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn strs<S: serde::Serializer>(v: &[Arc<str>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| &**x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_bounded_and_escaped() {
        assert_eq!(excerpt("abc"), "\"abc\"");
        assert_eq!(excerpt("a\0b\n"), "\"a\\0b\\n\"");
        let long = "9".repeat(10_000_000);
        let e = excerpt(&long);
        assert!(e.len() < 100, "{e}");
        assert!(e.ends_with("(10000000 bytes)"));
        // Multi-byte characters are never split.
        let wide = "é".repeat(100);
        assert!(excerpt(&wide).starts_with("\"éé"));
    }

    #[test]
    fn snapshot_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Snapshot>();
    }
}

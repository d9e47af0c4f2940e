//! The certificate manager: keeps the published [`CertStore`] holding a valid certificate for
//! every identity a workload on this node has, and nothing else.
//!
//! Runs on the control thread (key generation and CA calls never run on a core). It is called
//! after each new snapshot and periodically; when nothing is missing, due or stale it publishes
//! nothing, so the cores keep their cached rustls configs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tracing::{info, warn};

use super::{CertStore, DevCa, Error, Identity};
use crate::state::Snapshot;

#[derive(Debug)]
pub struct CertManager {
    ca: DevCa,
}

impl CertManager {
    pub fn new(ca: DevCa) -> CertManager {
        CertManager { ca }
    }

    /// An empty store trusting this manager's roots: what cores see before the first sync.
    pub fn empty_store(&self) -> Result<CertStore, Error> {
        self.ca.empty_store()
    }

    /// Issues what is missing or due and forgets identities no workload on `node` has any more.
    /// Returns whether a new store was published.
    pub fn sync(
        &self,
        published: &ArcSwap<CertStore>,
        snapshot: &Snapshot,
        node: &str,
        now: SystemTime,
    ) -> Result<bool, Error> {
        let wanted = local_identities(snapshot, node);
        let current = published.load_full();
        let stale = current.identities().any(|id| !wanted.contains(id));
        let retained = stale.then(|| current.retain(|id| wanted.contains(id)));
        let base = retained.as_ref().unwrap_or(&current);
        let wanted: Vec<Identity> = wanted.into_iter().collect();
        let next = match (self.ca.refresh(base, &wanted, now)?, retained) {
            (Some(next), _) => next,
            (None, Some(retained)) => retained,
            (None, None) => return Ok(false),
        };
        info!(
            identities = next.len(),
            generation = next.generation(),
            "published workload certificates"
        );
        published.store(Arc::new(next));
        Ok(true)
    }
}

/// The SPIFFE identities of the workloads on `node` (the certificates this node must hold).
/// A workload whose names do not form a valid identity is skipped with a warning: it cannot
/// take part in HBONE, and it must not stop the others.
pub fn local_identities(snapshot: &Snapshot, node: &str) -> BTreeSet<Identity> {
    snapshot
        .workloads()
        .filter(|w| !w.node.is_empty() && *w.node == *node)
        .filter_map(|w| {
            let (td, ns, sa) = w.identity_parts();
            Identity::new(td, ns, sa)
                .inspect_err(|e| warn!(workload = %w.uid, "no certificate: {e}"))
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn snapshot(yaml_workloads: &str) -> Snapshot {
        crate::xds::local::parse(&format!("workloads:\n{yaml_workloads}")).unwrap()
    }

    const TWO: &str = r#"
- { uid: a, name: a, namespace: ns1, serviceAccount: sa1, workloadIps: ["10.0.0.1"], node: n }
- { uid: b, name: b, namespace: ns1, serviceAccount: sa1, workloadIps: ["10.0.0.2"], node: n }
- { uid: c, name: c, namespace: ns2, serviceAccount: sa2, workloadIps: ["10.0.0.3"], node: n }
- { uid: d, name: d, namespace: ns3, serviceAccount: sa3, workloadIps: ["10.0.0.4"], node: other }
"#;

    #[test]
    fn issues_for_local_workloads_renews_and_forgets() {
        let m = CertManager::new(DevCa::generate().unwrap());
        let published = ArcSwap::from_pointee(m.empty_store().unwrap());
        let now = SystemTime::now();
        let s = snapshot(TWO);
        assert!(m.sync(&published, &s, "n", now).unwrap());
        let mut ids: Vec<String> = published
            .load()
            .identities()
            .map(|i| i.to_string())
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                "spiffe://cluster.local/ns/ns1/sa/sa1",
                "spiffe://cluster.local/ns/ns2/sa/sa2"
            ]
        );
        // Nothing due: nothing published, the generation stays.
        let g = published.load().generation();
        assert!(!m.sync(&published, &s, "n", now).unwrap());
        assert_eq!(published.load().generation(), g);
        // Past half-life: renewed.
        assert!(
            m.sync(&published, &s, "n", now + Duration::from_secs(13 * 3600))
                .unwrap()
        );
        assert!(published.load().generation() > g);
        // ns2/sa2 leaves the node: forgotten.
        let fewer = snapshot(&TWO.replace("node: n }\n- { uid: d", "node: gone }\n- { uid: d"));
        assert!(m.sync(&published, &fewer, "n", now).unwrap());
        assert_eq!(published.load().len(), 1);
    }
}

//! The certificate manager: keeps the published [`CertStore`] holding a valid certificate for
//! every identity a workload on this node has, and nothing else, over either [`Issuer`]: the
//! built-in development CA or the Istio CA.
//!
//! Runs on the control thread (key generation and CA calls never run on a core). It is called
//! after each new snapshot and periodically; when nothing is missing, due or stale it publishes
//! nothing, so the cores keep their cached rustls configs.
//!
//! Rotation: a certificate is renewed at half its lifetime. When a request fails, the current
//! certificate (if any) keeps being served and that identity is retried after a jittered
//! backoff from 1 s doubling to [`MAX_RETRY`] (150 s); the other identities are unaffected.
//! Identities that left the node are dropped from the store and from the retry schedule.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use tracing::{info, warn};

use super::{CertStore, DevCa, Error, Identity, IstioCa, RootFile, WorkloadCert};
use crate::backoff::Backoff;
use crate::state::Snapshot;

/// First and longest delay before retrying a failed certificate request.
pub const MIN_RETRY: Duration = Duration::from_secs(1);
pub const MAX_RETRY: Duration = Duration::from_secs(150);

/// Who signs workload certificates.
#[derive(Debug)]
pub enum Issuer {
    /// The built-in development CA (no `CA_ADDRESS`).
    Dev(DevCa),
    /// Istio's certificate service.
    Istio(IstioCa),
}

impl From<DevCa> for Issuer {
    fn from(ca: DevCa) -> Issuer {
        Issuer::Dev(ca)
    }
}

impl From<IstioCa> for Issuer {
    fn from(ca: IstioCa) -> Issuer {
        Issuer::Istio(ca)
    }
}

impl Issuer {
    /// The trust bundle file to watch, and whether its absence is normal: the development
    /// CA's optional `trust-bundle.pem`, the Istio CA's `CA_ROOT_CA` (already read).
    fn bundle_file(&self) -> Option<RootFile> {
        match self {
            Issuer::Dev(ca) => ca.trust_bundle_path().map(|p| RootFile::new(p, true)),
            Issuer::Istio(ca) => ca.root_file().map(|p| RootFile::loaded(p, false)),
        }
    }

    /// A rotated bundle: the Istio CA checks issued chains against it from now on; the
    /// development CA signs with its root whatever peers trust.
    fn set_roots(&mut self, roots: &[CertificateDer<'static>]) -> Result<(), Error> {
        match self {
            Issuer::Dev(_) => Ok(()),
            Issuer::Istio(ca) => ca.set_roots(roots.to_vec()),
        }
    }

    /// The trust roots peers must chain to.
    pub fn roots(&self) -> Vec<CertificateDer<'static>> {
        match self {
            Issuer::Dev(ca) => vec![ca.root().clone()],
            Issuer::Istio(ca) => ca.roots().to_vec(),
        }
    }

    async fn issue(&self, identity: &Identity, now: SystemTime) -> Result<WorkloadCert, Error> {
        match self {
            Issuer::Dev(ca) => ca.issue_at(identity, now),
            Issuer::Istio(ca) => ca.issue(identity, now).await,
        }
    }
}

/// What one `sync` did.
#[derive(Debug, Default)]
pub struct Synced {
    /// A new store was published.
    pub published: bool,
    /// Identities whose request failed this time (each keeps its current certificate, if any,
    /// and is retried later).
    pub failed: Vec<(Identity, Error)>,
}

#[derive(Debug)]
struct Retry {
    at: SystemTime,
    backoff: Backoff,
}

#[derive(Debug)]
pub struct CertManager {
    issuer: Issuer,
    /// Identities whose last request failed: not asked again before `at`.
    retries: HashMap<Identity, Retry>,
    /// Identities of the pods enrolled in-pod, wanted whether or not the snapshot has their
    /// workloads yet.
    enrolled: Arc<Enrolled>,
    /// The trust bundle file, polled on each sync (`identity::roots`).
    bundle: Option<RootFile>,
    /// The roots trusted from the file (or the issuer's own), and those the Istio CA last
    /// sent: the published store trusts both.
    file_roots: Vec<CertificateDer<'static>>,
    ca_roots: Vec<CertificateDer<'static>>,
}

/// The identities of the pods istio-cni enrolled (in-pod mode), by the agent's uid: written by
/// the `zring-inpod` thread on add and remove, read by the certificate loop, which
/// [`Enrolled::changed`] wakes so an enrolled pod's certificate is requested at its add (as
/// ztunnel does) rather than when its workload reaches the snapshot.
#[derive(Debug, Default)]
pub struct Enrolled {
    ids: std::sync::Mutex<std::collections::BTreeMap<String, Identity>>,
    changed: tokio::sync::Notify,
}

impl Enrolled {
    /// Pod `uid` runs as `id`.
    pub fn insert(&self, uid: &str, id: Identity) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.insert(uid.to_owned(), id.clone()) != Some(id) {
            self.changed.notify_one();
        }
    }

    /// Pod `uid` is gone.
    pub fn remove(&self, uid: &str) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.remove(uid).is_some() {
            self.changed.notify_one();
        }
    }

    /// Every enrolled pod's identity.
    pub fn identities(&self) -> BTreeSet<Identity> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.values().cloned().collect()
    }

    /// Resolves once the set changed since the last call returned.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

impl CertManager {
    pub fn new(issuer: impl Into<Issuer>) -> CertManager {
        let issuer = issuer.into();
        CertManager {
            bundle: issuer.bundle_file(),
            file_roots: issuer.roots(),
            ca_roots: Vec::new(),
            issuer,
            retries: HashMap::new(),
            enrolled: Arc::default(),
        }
    }

    /// A successor of `current` trusting new roots, when the bundle file changed or the CA
    /// sent other roots than last time.
    fn rotate_roots(&mut self, current: &CertStore) -> Option<CertStore> {
        let mut changed = false;
        if let Some(mut roots) = self.bundle.as_mut().and_then(RootFile::poll) {
            if roots.is_empty() {
                // The optional bundle went away: the issuer's own roots again.
                roots = match &self.issuer {
                    Issuer::Dev(ca) => vec![ca.root().clone()],
                    Issuer::Istio(ca) => ca.roots().to_vec(),
                };
            }
            if let Err(e) = self.issuer.set_roots(&roots) {
                warn!("trust bundle not applied, the current roots stay: {e}");
                return None;
            }
            self.file_roots = roots;
            changed = true;
        }
        if let Issuer::Istio(ca) = &self.issuer
            && let Some(sent) = ca.take_roots()
            && sent != self.ca_roots
        {
            self.ca_roots = sent;
            changed = true;
        }
        let mut roots = self.file_roots.clone();
        roots.extend(
            self.ca_roots
                .iter()
                .filter(|r| !self.file_roots.contains(r))
                .cloned(),
        );
        if !changed || roots.as_slice() == current.root_certs() {
            return None;
        }
        let rotated = current.with_roots(roots);
        match rotated {
            Ok(store) => {
                info!(
                    roots = store.root_certs().len(),
                    generation = store.generation(),
                    "trust bundle rotated: new handshakes verify peers against it"
                );
                Some(store)
            }
            Err(e) => {
                warn!("trust bundle not applied, the current roots stay: {e}");
                None
            }
        }
    }

    /// The enrolled pods' identities this manager also keeps certificates for.
    pub fn enrolled(&self) -> Arc<Enrolled> {
        self.enrolled.clone()
    }

    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// An empty store trusting this manager's roots: what cores see before the first sync.
    pub fn empty_store(&self) -> Result<CertStore, Error> {
        CertStore::new(self.issuer.roots())
    }

    /// When a failed identity will be asked for again, if it failed.
    pub fn next_retry(&self, identity: &Identity) -> Option<SystemTime> {
        self.retries.get(identity).map(|r| r.at)
    }

    /// Issues what is missing or due and forgets identities no workload on `node` (and no
    /// enrolled pod) has any more.
    pub async fn sync(
        &mut self,
        published: &ArcSwap<CertStore>,
        snapshot: &Snapshot,
        node: &str,
        now: SystemTime,
    ) -> Synced {
        let mut wanted = local_identities(snapshot, node);
        wanted.extend(self.enrolled.identities());
        self.retries.retain(|id, _| wanted.contains(id));
        let loaded = published.load_full();
        let rotated = self.rotate_roots(&loaded);
        let current = rotated.as_ref().unwrap_or(&loaded);
        let stale = current.identities().any(|id| !wanted.contains(id));
        let retained = if stale {
            Some(current.retain(|id| wanted.contains(id)))
        } else {
            rotated
        };
        let base = retained.as_ref().unwrap_or(&loaded);
        let wanted: Vec<Identity> = wanted.into_iter().collect();
        let mut issued = Vec::new();
        let mut failed = Vec::new();
        for id in base.due(&wanted, now) {
            if self.retries.get(&id).is_some_and(|r| r.at > now) {
                continue;
            }
            match self.issuer.issue(&id, now).await {
                Ok(cert) => {
                    self.retries.remove(&id);
                    issued.push(cert);
                }
                Err(e) => {
                    let retry = self.retries.entry(id.clone()).or_insert_with(|| Retry {
                        at: now,
                        backoff: Backoff::new(MIN_RETRY, MAX_RETRY),
                    });
                    let delay = retry.backoff.next_delay();
                    retry.at = now + delay;
                    let serving = base.get(&id).is_some_and(|c| c.not_after() > now);
                    warn!(
                        identity = %id,
                        retry_in = ?delay,
                        still_serving_previous = serving,
                        "certificate request failed: {e}"
                    );
                    failed.push((id, e));
                }
            }
        }
        let next = if issued.is_empty() {
            retained
        } else {
            Some(base.with_certs(issued))
        };
        let Some(next) = next else {
            return Synced {
                published: false,
                failed,
            };
        };
        info!(
            identities = next.len(),
            generation = next.generation(),
            "published workload certificates"
        );
        published.store(Arc::new(next));
        Synced {
            published: true,
            failed,
        }
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
            Identity::of_workload(w)
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

    /// Runs one `sync` to completion (the dev CA never waits on anything).
    fn sync(m: &mut CertManager, p: &ArcSwap<CertStore>, s: &Snapshot, now: SystemTime) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let synced = rt.block_on(m.sync(p, s, "n", now));
        assert!(synced.failed.is_empty(), "{:?}", synced.failed);
        synced.published
    }

    #[test]
    fn issues_for_local_workloads_renews_and_forgets() {
        let mut m = CertManager::new(DevCa::generate().unwrap());
        let published = ArcSwap::from_pointee(m.empty_store().unwrap());
        let now = SystemTime::now();
        let s = snapshot(TWO);
        assert!(sync(&mut m, &published, &s, now));
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
        assert!(!sync(&mut m, &published, &s, now));
        assert_eq!(published.load().generation(), g);
        // Past half-life: renewed.
        assert!(sync(
            &mut m,
            &published,
            &s,
            now + Duration::from_secs(13 * 3600)
        ));
        assert!(published.load().generation() > g);
        // ns2/sa2 leaves the node: forgotten.
        let fewer = snapshot(&TWO.replace("node: n }\n- { uid: d", "node: gone }\n- { uid: d"));
        assert!(sync(&mut m, &published, &fewer, now));
        assert_eq!(published.load().len(), 1);
    }

    #[test]
    fn enrolled_pods_get_certificates_before_their_workloads_arrive() {
        let mut m = CertManager::new(DevCa::generate().unwrap());
        let published = ArcSwap::from_pointee(m.empty_store().unwrap());
        let now = SystemTime::now();
        let empty = crate::xds::local::parse("workloads: []").unwrap();
        let id = Identity::new("cluster.local", "ns9", "sa9").unwrap();
        m.enrolled().insert("pod-uid", id.clone());
        assert!(sync(&mut m, &published, &empty, now));
        assert!(published.load().get(&id).is_some());
        m.enrolled().remove("pod-uid");
        assert!(sync(&mut m, &published, &empty, now));
        assert!(published.load().get(&id).is_none());
    }
}

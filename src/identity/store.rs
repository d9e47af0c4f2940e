//! The certificate store: workload certificates by identity, plus the trust roots.
//!
//! Built on the control thread, published to the cores as `Arc<CertStore>` through `arc-swap`;
//! the cores only read it. A store never changes after construction: adding, replacing or
//! dropping certificates produces a new store with a new generation, which the cores use as the
//! key of their cached rustls configs (a config built from generation N is stale once N+1 is
//! published).
//!
//! Invariants: every [`WorkloadCert`] holds a non-empty chain whose leaf names its identity in a
//! URI SAN and whose private key matches the leaf's public key (checked when it is built), and
//! `generation` values are unique and increase over the life of the process.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Error, Identity, crypto_provider, tls};

/// Source of generations. Process-wide rather than per-lineage so that two stores built from the
/// same parent (or in different tests) can never share a generation and poison a core's cache.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// One workload's certified key: chain (leaf first) and private key, with the leaf's validity.
#[derive(Debug)]
pub struct WorkloadCert {
    identity: Identity,
    /// Chain and key already loaded into the crypto provider, ready for rustls's resolvers;
    /// shared by every config built from this certificate.
    key: Arc<CertifiedKey>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl WorkloadCert {
    /// Checks and loads a chain (leaf first) and its private key for `identity`.
    ///
    /// Refuses a chain whose leaf does not carry `identity` as a URI SAN, a key that does not
    /// match the leaf, and an unparsable leaf. It does not check the chain against any roots:
    /// trust is the business of the store's roots and of the peers' verifiers. Used by the dev CA and, later, by the Istio CA
    /// client for the chains it receives.
    pub fn new(
        identity: Identity,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, Error> {
        let leaf = chain.first().ok_or(Error::BadCertificate("empty chain"))?;
        let (rest, cert) = X509Certificate::from_der(leaf)
            .map_err(|_| Error::BadCertificate("unparsable leaf certificate"))?;
        if !rest.is_empty() {
            return Err(Error::BadCertificate("trailing bytes after the leaf"));
        }
        let not_before = system_time(cert.validity().not_before.timestamp());
        let not_after = system_time(cert.validity().not_after.timestamp());
        if not_after <= not_before {
            return Err(Error::BadCertificate("empty validity period"));
        }
        if !tls::spiffe_sans(leaf)?.contains(&identity.as_str()) {
            return Err(Error::BadCertificate("leaf does not name the identity"));
        }
        let key = CertifiedKey::from_der(chain, key, &crypto_provider())?;
        Ok(WorkloadCert {
            identity,
            key: Arc::new(key),
            not_before,
            not_after,
        })
    }

    /// A certificate that skipped [`WorkloadCert::new`]'s checks, so tests can present hostile
    /// certificates through the normal configs.
    #[cfg(test)]
    pub(super) fn unchecked(
        identity: Identity,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, Error> {
        let key = CertifiedKey::from_der(chain, key, &crypto_provider())?;
        Ok(WorkloadCert {
            identity,
            key: Arc::new(key),
            not_before: UNIX_EPOCH,
            not_after: UNIX_EPOCH,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The chain and signing key in the form rustls's certificate resolvers take.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }

    /// The chain, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When to replace this certificate: half-way through its validity, as Istio's agents do,
    /// which leaves half the lifetime to ride out CA outages.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + lifetime / 2
    }
}

/// Converts an X.509 time (seconds since the epoch, possibly negative) to `SystemTime`.
fn system_time(seconds: i64) -> SystemTime {
    // X.509 times are years 0000..=9999, well inside SystemTime's range; saturate anyway so
    // a hostile certificate can never make this panic.
    let offset = Duration::from_secs(seconds.unsigned_abs());
    let time = if seconds >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    };
    time.unwrap_or(UNIX_EPOCH)
}

/// An immutable set of workload certificates and the trust roots peers must chain to.
#[derive(Debug)]
pub struct CertStore {
    generation: u64,
    /// Parsed trust anchors, shared with every verifier built from this store.
    roots: Arc<RootCertStore>,
    /// The same roots as DER, for the admin dump and for building a successor store.
    root_certs: Arc<[CertificateDer<'static>]>,
    certs: HashMap<Identity, Arc<WorkloadCert>>,
}

impl CertStore {
    /// An empty store trusting `roots`. At least one root is required, and every root must parse.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> Result<Self, Error> {
        if roots.is_empty() {
            return Err(Error::NoRoots);
        }
        let mut store = RootCertStore::empty();
        for root in &roots {
            store.add(root.clone())?;
        }
        Ok(CertStore {
            generation: next_generation(),
            roots: Arc::new(store),
            root_certs: roots.into(),
            certs: HashMap::new(),
        })
    }

    /// The certificate to present as `identity`, if this node holds one.
    pub fn get(&self, identity: &Identity) -> Option<&WorkloadCert> {
        self.certs.get(identity).map(|cert| &**cert)
    }

    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    pub fn root_certs(&self) -> &[CertificateDer<'static>] {
        &self.root_certs
    }

    /// Unique per store and increasing in construction order: cores key cached configs by it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn identities(&self) -> impl Iterator<Item = &Identity> {
        self.certs.keys()
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The identities among `wanted` that need a certificate issued at `now`: missing, or past
    /// their renewal time. Sorted and deduplicated so the caller's requests are deterministic.
    pub fn due(&self, wanted: &[Identity], now: SystemTime) -> Vec<Identity> {
        let mut due: Vec<Identity> = wanted
            .iter()
            .filter(|id| self.get(id).is_none_or(|cert| cert.renew_at() <= now))
            .cloned()
            .collect();
        due.sort();
        due.dedup();
        due
    }

    /// A successor store holding these certificates too (replacing any for the same identity).
    pub fn with_certs(&self, certs: impl IntoIterator<Item = WorkloadCert>) -> CertStore {
        let mut next = self.successor();
        for cert in certs {
            next.certs.insert(cert.identity.clone(), Arc::new(cert));
        }
        next
    }

    /// A successor store holding only the identities `keep` accepts: workloads left the node.
    pub fn retain(&self, mut keep: impl FnMut(&Identity) -> bool) -> CertStore {
        let mut next = self.successor();
        next.certs.retain(|id, _| keep(id));
        next
    }

    /// A successor store trusting `roots` instead (a trust bundle rotation), with the same
    /// certificates. At least one root is required, and every root must parse.
    pub fn with_roots(&self, roots: Vec<CertificateDer<'static>>) -> Result<CertStore, Error> {
        let fresh = CertStore::new(roots)?;
        Ok(CertStore {
            certs: self.certs.clone(),
            ..fresh
        })
    }

    fn successor(&self) -> CertStore {
        CertStore {
            generation: next_generation(),
            roots: self.roots.clone(),
            root_certs: self.root_certs.clone(),
            certs: self.certs.clone(),
        }
    }
}

//! The mesh trust bundle from a file, re-read when it changes: how a root rotation reaches a
//! running zring. Istio rotates the mesh root by publishing the old and the new root together
//! (the `istio-ca-root-cert` ConfigMap that the kubelet swaps in under `CA_ROOT_CA`), moving the
//! signing to the new root, and finally publishing the new root alone; zring follows each step
//! without a restart, so during the overlap certificates from either root are accepted and,
//! once the old root is gone, peers still holding certificates from it are refused.
//!
//! The file: `CA_ROOT_CA` with the Istio CA; `<ZRING_DEV_CA_DIR>/trust-bundle.pem` (optional,
//! default: the development root alone) with the built-in development CA.
//!
//! Runs on the control thread: [`CertManager::sync`](super::CertManager::sync) calls
//! [`RootFile::poll`] once per certificate tick (1 s), a read of a few KiB; a change publishes
//! a successor `CertStore` with the new roots (same certificates, new generation), so each core
//! builds fresh rustls configs and every handshake from then on verifies against the new
//! bundle. Connections already established stay up (TLS authenticated them once).
//!
//! A file that cannot be read, or holds anything but PEM certificates (a half-written edit),
//! leaves the current roots in force; the failure is logged once per distinct error.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tracing::{info, warn};

use super::Error;

/// A trust bundle file and what was last read from it.
#[derive(Debug)]
pub struct RootFile {
    path: PathBuf,
    /// An absent file means "no bundle" (the development CA's optional file) rather than an
    /// error.
    optional: bool,
    /// The bytes last read (`None`: absent, or not read yet).
    last: Option<Vec<u8>>,
    /// The last error logged, so a lasting one is logged once.
    last_error: Option<String>,
}

impl RootFile {
    /// Watches `path`; `optional` when its absence is normal. The first [`poll`](Self::poll)
    /// reports the contents as new.
    pub fn new(path: impl Into<PathBuf>, optional: bool) -> RootFile {
        RootFile {
            path: path.into(),
            optional,
            last: None,
            last_error: None,
        }
    }

    /// Like [`new`](Self::new), taking `roots` as what the file held when they were loaded, so
    /// only a later change is reported.
    pub fn loaded(path: impl Into<PathBuf>, optional: bool) -> RootFile {
        let mut file = RootFile::new(path, optional);
        file.last = std::fs::read(&file.path).ok();
        file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The roots when the file's contents changed since the last call (`Some(empty)`: an
    /// optional file went away); `None` when unchanged or unusable.
    pub fn poll(&mut self) -> Option<Vec<CertificateDer<'static>>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.optional => None,
            Err(source) => {
                self.failed(&Error::Io {
                    path: self.path.clone(),
                    source,
                });
                return None;
            }
        };
        if bytes == self.last {
            return None;
        }
        let roots = match &bytes {
            None => Vec::new(),
            Some(b) => match parse(b) {
                Ok(r) => r,
                Err(reason) => {
                    self.failed(&Error::BadCertificate(reason));
                    return None;
                }
            },
        };
        info!(
            path = %self.path.display(),
            roots = roots.len(),
            "trust bundle changed"
        );
        self.last = bytes;
        self.last_error = None;
        Some(roots)
    }

    fn failed(&mut self, e: &Error) {
        let text = e.to_string();
        if self.last_error.as_deref() != Some(&text) {
            warn!(
                path = %self.path.display(),
                "trust bundle not reloaded, the current roots stay: {text}"
            );
            self.last_error = Some(text);
        }
    }
}

/// Every certificate of a PEM bundle; at least one, and nothing that is not one.
pub fn parse(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, &'static str> {
    let roots = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "the trust bundle is not PEM certificates")?;
    if roots.is_empty() {
        return Err("the trust bundle holds no certificate");
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{DevCa, pem_certificate};

    #[test]
    fn changes_are_reported_once_and_bad_edits_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        let (one, two) = (DevCa::generate().unwrap(), DevCa::generate().unwrap());
        let pem = |cas: &[&DevCa]| -> String {
            cas.iter().map(|ca| pem_certificate(ca.root())).collect()
        };
        // Optional and absent: nothing new at first.
        let mut file = RootFile::new(&path, true);
        assert_eq!(file.poll(), None);
        std::fs::write(&path, pem(&[&one])).unwrap();
        assert_eq!(file.poll(), Some(vec![one.root().clone()]));
        assert_eq!(file.poll(), None, "unchanged");
        std::fs::write(&path, pem(&[&one, &two])).unwrap();
        assert_eq!(
            file.poll(),
            Some(vec![one.root().clone(), two.root().clone()])
        );
        // A torn or empty write keeps the roots (nothing reported), and is retried.
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nAAAA").unwrap();
        assert_eq!(file.poll(), None);
        std::fs::write(&path, "").unwrap();
        assert_eq!(file.poll(), None);
        std::fs::write(&path, pem(&[&two])).unwrap();
        assert_eq!(file.poll(), Some(vec![two.root().clone()]));
        // The optional file removed: back to no bundle.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.poll(), Some(Vec::new()));
        // A required file that vanishes keeps the roots.
        std::fs::write(&path, pem(&[&one])).unwrap();
        let mut required = RootFile::loaded(&path, false);
        assert_eq!(
            required.poll(),
            None,
            "loaded: the same contents are not new"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(required.poll(), None);
    }
}

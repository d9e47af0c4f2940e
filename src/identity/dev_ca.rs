//! The built-in development CA, used when no `CA_ADDRESS` is configured.
//!
//! Runs on the control thread only: key generation, signing and file IO are all blocking.
//! The root is an ECDSA P-256 self-signed CA, generated in memory or kept in a directory as
//! `root-cert.pem` + `root-key.pem` so that several zring processes (and restarts) share one root.
//! Workload certificates look like Istio's: ECDSA P-256, empty subject, a single `spiffe://` URI
//! SAN (marked critical, as RFC 5280 requires with an empty subject), 24 h validity backdated a
//! few minutes for clock skew, digitalSignature + keyEncipherment, serverAuth + clientAuth, CA:false.
//!
//! Invariant of the directory: each file appears atomically and is never replaced. Both are
//! published with `link(2)` from a fully written temp file, which fails if the name exists, so two
//! processes racing on an empty directory agree: the key that won is the only key, the cert is made
//! from that key by whoever gets there first, and the loser of each race loads the winner's file.
//! A crash between the two leaves a key without a cert, which the next start completes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CertStore, Error, Identity, WorkloadCert, crypto_provider};

/// File name of the root certificate in the CA directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// Optional file in the CA directory: the PEM roots peers may chain to (the old and new roots
/// during a rotation), trusted instead of the root alone and re-read when it changes
/// (`identity::roots`).
pub const TRUST_BUNDLE_FILE: &str = "trust-bundle.pem";
/// File name of the root private key (PKCS#8 PEM, mode 0600) in the CA directory.
pub const ROOT_KEY_FILE: &str = "root-key.pem";

const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
const WORKLOAD_VALIDITY: Duration = Duration::from_secs(24 * 60 * 60);
/// Peers whose clocks run a little behind must still accept a certificate issued just now.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A development certificate authority: the root certificate and the key that signs with it.
#[derive(Debug)]
pub struct DevCa {
    /// Issuer name, key identifier and signing key of the root (its Debug hides the key).
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
    /// The directory it was loaded from (`None`: generated in memory).
    dir: Option<std::path::PathBuf>,
}

impl DevCa {
    /// A fresh root kept only in memory (tests, single-process demos).
    pub fn generate() -> Result<Self, Error> {
        let key = new_key()?;
        let root = root_params(&key, SystemTime::now())?.self_signed(&key)?;
        Self::from_parts(root.der().clone(), key, Path::new("(memory)"))
    }

    /// Loads the root from `dir`, creating the directory and whichever file is missing.
    /// Safe against other processes doing the same at the same time (see the module docs).
    pub fn load_or_create(dir: &Path) -> Result<Self, Error> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;

        let key_path = dir.join(ROOT_KEY_FILE);
        let cert_path = dir.join(ROOT_CERT_FILE);
        let key_pem = match read_if_exists(&key_path)? {
            Some(pem) => pem,
            // We publish the key before the cert, so a lone cert was put there by someone else:
            // a key made now could never match it.
            None if cert_path.exists() => {
                return Err(ca_error(dir, "root-cert.pem exists without root-key.pem"));
            }
            None => {
                publish(
                    dir,
                    ROOT_KEY_FILE,
                    new_key()?.serialize_pem().as_bytes(),
                    0o600,
                )?;
                read_if_exists(&key_path)?.ok_or_else(|| vanished(dir))?
            }
        };
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|_| ca_error(dir, "root-key.pem is not a PKCS#8 PEM private key"))?;

        let cert_pem = match read_if_exists(&cert_path)? {
            Some(pem) => pem,
            None => {
                let root = root_params(&key, SystemTime::now())?.self_signed(&key)?;
                publish(dir, ROOT_CERT_FILE, root.pem().as_bytes(), 0o644)?;
                read_if_exists(&cert_path)?.ok_or_else(|| vanished(dir))?
            }
        };
        let root = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| ca_error(dir, "root-cert.pem holds no PEM certificate"))?;
        Self::from_parts(root, key, dir).map(|ca| DevCa {
            dir: Some(dir.to_owned()),
            ..ca
        })
    }

    /// Checks that `root` is a currently valid CA certificate for `key`, then wraps them.
    fn from_parts(
        root: CertificateDer<'static>,
        key: KeyPair,
        origin: &Path,
    ) -> Result<Self, Error> {
        let (_, cert) = X509Certificate::from_der(&root)
            .map_err(|_| ca_error(origin, "root certificate does not parse"))?;
        if !cert.is_ca() {
            return Err(ca_error(origin, "root certificate is not a CA"));
        }
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(ca_error(
                origin,
                "root-cert.pem does not match root-key.pem",
            ));
        }
        if !cert.validity().is_valid() {
            return Err(ca_error(
                origin,
                "root certificate is expired or not yet valid",
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&root, key)?;
        Ok(DevCa {
            issuer,
            root,
            dir: None,
        })
    }

    /// Where an operator puts the mesh trust bundle for a rotation
    /// (`<dir>/`[`TRUST_BUNDLE_FILE`]), for a CA loaded from a directory.
    pub fn trust_bundle_path(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.join(TRUST_BUNDLE_FILE))
    }

    /// The root certificate: the trust anchor for everything this CA issues.
    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    /// An empty store trusting this CA's root.
    pub fn empty_store(&self) -> Result<CertStore, Error> {
        CertStore::new(vec![self.root.clone()])
    }

    /// Issues a workload certificate for `identity`, valid from now (minus the backdating).
    pub fn issue(&self, identity: &Identity) -> Result<WorkloadCert, Error> {
        self.issue_at(identity, SystemTime::now())
    }

    /// Issues as if the time were `now` (tests use it for expired certificates).
    pub fn issue_at(&self, identity: &Identity, now: SystemTime) -> Result<WorkloadCert, Error> {
        let key = new_key()?;
        let params = workload_params(identity, now)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        WorkloadCert::new(identity.clone(), vec![cert.der().clone()], key)
    }

    /// The successor of `store` with a fresh certificate for every identity in `wanted` that has
    /// none or is due for renewal at `now`, or `None` when nothing is due (keep publishing the
    /// current store, so the cores keep their cached configs).
    pub fn refresh(
        &self,
        store: &CertStore,
        wanted: &[Identity],
        now: SystemTime,
    ) -> Result<Option<CertStore>, Error> {
        let due = store.due(wanted, now);
        if due.is_empty() {
            return Ok(None);
        }
        let certs = due
            .iter()
            .map(|id| self.issue_at(id, now))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(store.with_certs(certs)))
    }

    /// Signs a CSR with the workload profile, as a fake Istio CA in tests does.
    #[cfg(test)]
    pub(crate) fn sign_csr(
        &self,
        csr_pem: &str,
        now: SystemTime,
    ) -> Result<CertificateDer<'static>, Error> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = workload_params(&Identity::new("td", "ns", "sa")?, now)?;
        params.subject_alt_names = csr.params.subject_alt_names;
        Ok(params
            .signed_by(&csr.public_key, &self.issuer)?
            .der()
            .clone())
    }

    /// Signs a certificate for a fresh key with arbitrary parameters, starting from the workload
    /// profile: tests use it to craft hostile certificates the public API refuses to build.
    #[cfg(test)]
    pub(super) fn sign_custom(
        &self,
        now: SystemTime,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), Error> {
        let key = new_key()?;
        let mut params = workload_params(&Identity::new("td", "ns", "sa")?, now)?;
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((cert.der().clone(), key))
    }
}

fn new_key() -> Result<KeyPair, Error> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

/// The root's profile. Its name carries a fingerprint of the key: distinct dev CAs get distinct
/// names (so a peer from another CA fails as "unknown issuer", not as a bad signature against a
/// same-named root), while a cert re-made from the same key keeps the name its leaves point at.
fn root_params(key: &KeyPair, now: SystemTime) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let fingerprint: String = params
        .key_identifier(key)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "zring");
    name.push(
        DnType::CommonName,
        format!("zring development CA {fingerprint}"),
    );
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = offset_time(now.checked_sub(BACKDATE).unwrap_or(now))?;
    params.not_after = offset_time(now.checked_add(ROOT_VALIDITY).unwrap_or(now))?;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn workload_params(identity: &Identity, now: SystemTime) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    // Istio's workload certificates have an empty subject; the identity is the SAN alone.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(identity.as_str())?)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = offset_time(now.checked_sub(BACKDATE).unwrap_or(now))?;
    params.not_after = offset_time(now.checked_add(WORKLOAD_VALIDITY).unwrap_or(now))?;
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// 128 random bits, positive (RFC 5280 serials are positive integers of at most 20 bytes).
/// rcgen's default serial is a hash of the public key, which would repeat if a key were reused.
fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = random_bytes::<16>()?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // never zero, never a leading zero byte
    Ok(SerialNumber::from(bytes.to_vec()))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut bytes = [0; N];
    crypto_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| rustls::Error::FailedToGetRandomBytes)?;
    Ok(bytes)
}

fn offset_time(time: SystemTime) -> Result<OffsetDateTime, Error> {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|since| i64::try_from(since.as_secs()).ok())
        .ok_or(Error::BadCertificate("validity time before 1970"))?;
    OffsetDateTime::from_unix_timestamp(seconds)
        .map_err(|_| Error::BadCertificate("validity time out of range"))
}

fn read_if_exists(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

/// Makes `dir/name` hold `contents` unless it already exists, atomically: readers see either no
/// file or the complete one. Losing the race (the name exists) is success: the caller reads back
/// whatever won.
fn publish(dir: &Path, name: &str, contents: &[u8], mode: u32) -> Result<(), Error> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    // Random as well as pid-based: containers sharing a host directory may all be pid 1.
    let nonce = u64::from_le_bytes(random_bytes()?);
    let temp = dir.join(format!(
        ".{name}.{}.{}.{nonce:016x}.tmp",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed),
    ));
    let linked = write_new(&temp, contents, mode).and_then(|()| {
        match fs::hard_link(&temp, dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    });
    // Best effort: a leftover temp file is harmless, and the link (if any) keeps the data.
    let _ = fs::remove_file(&temp);
    linked.map_err(io_error(&dir.join(name)))?;
    // Make the new name durable; not fatal if the filesystem cannot sync a directory.
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    Ok(())
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn ca_error(dir: &Path, reason: &'static str) -> Error {
    Error::DevCa {
        dir: dir.to_path_buf(),
        reason,
    }
}

/// A file we just linked (or saw linked) is gone: someone is deleting the directory under us.
fn vanished(dir: &Path) -> Error {
    ca_error(dir, "a CA file disappeared while it was being created")
}

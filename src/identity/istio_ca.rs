//! The Istio CA client (`CA_ADDRESS`): for one identity, a fresh ECDSA P-256 key and a CSR
//! naming it, `istio.v1.auth.IstioCertificateService/CreateCertificate`, and a strict check of
//! the chain that comes back. Runs on the control thread's tokio runtime (key generation too:
//! it is milliseconds, and never on a core).
//!
//! Authentication, as ztunnel does it for a node proxy: the bearer token of zring's own service
//! account (`AUTH_TOKEN`, see `grpc`) and `ImpersonatedIdentity` in the request metadata, which
//! istiod grants only to trusted node proxies and only for identities of pods on their node.
//! zring also sends the `clusterid` header the Istio agent sends, so a multi-cluster istiod
//! reviews the token against the right cluster. Not supported (documented gaps): extra
//! `CA_HEADER_*` headers, SPIRE / other CAs, and client-certificate authentication to the CA.
//!
//! Checks on the response, all before anything is published: at least one certificate, every
//! entry PEM, the leaf names the identity we asked for and carries the key we generated
//! (`WorkloadCert::new`), and the chain verifies against the mesh trust bundle (`CA_ROOT_CA`)
//! with webpki — a certificate peers would refuse is an error here, not an outage later.
//!
//! Roots from the CA: istiod appends its root bundle to every chain it returns (the old and the
//! new root while it rotates). The trailing self-signed CA certificates of a response are taken
//! as the CA's current roots: the chain may end in one of them, and the certificate manager
//! trusts them beside the `CA_ROOT_CA` file ([`IstioCa::take_roots`]), so a rotation reaches
//! zring with its next certificate even before the file changes, and a root the CA stops
//! sending is dropped once the file no longer lists it either. The CA is authenticated (TLS
//! against `CA_ROOT_CA`, and it already decides every identity), so trusting its roots adds no
//! new authority.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost_types::{Struct, Value, value::Kind as ValueKind};
use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

use super::{Error, Identity, WorkloadCert, crypto_provider};
use crate::grpc::Target;
use crate::xds::proto::ca::{
    IstioCertificateRequest, istio_certificate_service_client::IstioCertificateServiceClient,
};

/// How long one CreateCertificate call (connect included) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted (a chain is a few KiB).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A connection to the Istio CA and the trust bundle its certificates must chain to.
pub struct IstioCa {
    target: Target,
    /// Lazy: connects on first use and reconnects by itself.
    channel: Channel,
    roots: Vec<CertificateDer<'static>>,
    /// webpki chain verification against `roots` (client-auth profile: workload certificates
    /// are used as client certificates on every HBONE connection).
    verifier: Arc<dyn ClientCertVerifier>,
    ttl: Duration,
    cluster_id: AsciiMetadataValue,
    /// The file `roots` came from (`CA_ROOT_CA`), watched for a rotation.
    root_file: Option<std::path::PathBuf>,
    /// The roots the latest successful response ended with, until the manager takes them.
    sent_roots: std::sync::Mutex<Option<Vec<CertificateDer<'static>>>>,
}

impl std::fmt::Debug for IstioCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstioCa")
            .field("address", &self.target.address())
            .field("roots", &self.roots.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl IstioCa {
    /// `roots` is the mesh trust bundle: what HBONE peers verify against and what every
    /// issued chain must verify against. `ttl` is the lifetime asked for.
    pub fn new(
        target: Target,
        roots: Vec<CertificateDer<'static>>,
        ttl: Duration,
        cluster_id: &str,
    ) -> Result<IstioCa, Error> {
        let verifier = chain_verifier(&roots)?;
        let channel = target.connect_lazy()?;
        let cluster_id = AsciiMetadataValue::try_from(cluster_id)
            .map_err(|_| Error::CaResponse("CLUSTER_ID is not a valid header value"))?;
        Ok(IstioCa {
            target,
            channel,
            roots,
            verifier,
            ttl,
            cluster_id,
            root_file: None,
            sent_roots: std::sync::Mutex::new(None),
        })
    }

    /// Watches `path` (where the roots were read from) for a trust bundle rotation.
    pub fn with_root_file(self, path: impl Into<std::path::PathBuf>) -> IstioCa {
        IstioCa {
            root_file: Some(path.into()),
            ..self
        }
    }

    /// The roots the latest successful response carried, once (`None`: no response since the
    /// last call).
    pub fn take_roots(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.sent_roots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn root_file(&self) -> Option<&std::path::Path> {
        self.root_file.as_deref()
    }

    /// A rotated trust bundle: issued chains must verify against `roots` from now on.
    pub fn set_roots(&mut self, roots: Vec<CertificateDer<'static>>) -> Result<(), Error> {
        self.verifier = chain_verifier(&roots)?;
        self.roots = roots;
        Ok(())
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn address(&self) -> &str {
        self.target.address()
    }

    /// Requests a certificate for `identity`; `now` is the time its chain is verified at.
    pub async fn issue(&self, identity: &Identity, now: SystemTime) -> Result<WorkloadCert, Error> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(identity.as_str())?)];
        let csr = params.serialize_request(&key)?.pem()?;

        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: Some(Struct {
                fields: [(
                    "ImpersonatedIdentity".to_owned(),
                    Value {
                        kind: Some(ValueKind::StringValue(identity.to_string())),
                    },
                )]
                .into(),
            }),
        });
        self.target.authorize(&mut request)?;
        request
            .metadata_mut()
            .insert("clusterid", self.cluster_id.clone());
        let mut client = IstioCertificateServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let response = tokio::time::timeout(REQUEST_TIMEOUT, client.create_certificate(request))
            .await
            .map_err(|_| Error::CaTimeout(REQUEST_TIMEOUT))?
            .map_err(|s| Error::CaRequest(Box::new(s)))?
            .into_inner();

        let mut certs = Vec::new();
        for pem in &response.cert_chain {
            let before = certs.len();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                certs.push(cert.map_err(|_| Error::CaResponse("a chain entry is not PEM"))?);
            }
            if certs.len() == before {
                return Err(Error::CaResponse("a chain entry holds no certificate"));
            }
        }
        if certs.is_empty() {
            return Err(Error::CaResponse("the certificate chain is empty"));
        }
        // Present leaf and intermediates; the roots are already with every peer.
        let sent = trailing_roots(&mut certs);
        certs.retain(|c| !self.roots.contains(c));
        let Some((leaf, intermediates)) = certs.split_first() else {
            return Err(Error::CaResponse("the chain holds only trust roots"));
        };
        let at = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO),
        );
        let fresh = sent.iter().any(|r| !self.roots.contains(r));
        let verifier = if fresh {
            let mut all = self.roots.clone();
            all.extend(sent.iter().filter(|r| !self.roots.contains(r)).cloned());
            chain_verifier(&all)?
        } else {
            self.verifier.clone()
        };
        verifier
            .verify_client_cert(leaf, intermediates, at)
            .map_err(Error::Tls)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let cert = WorkloadCert::new(identity.clone(), certs, key)?;
        if !sent.is_empty() {
            *self.sent_roots.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
        }
        Ok(cert)
    }
}

/// Removes and returns the self-signed CA certificates at the end of `chain` (the CA's root
/// bundle). The leaf is never taken, whatever it is.
fn trailing_roots(chain: &mut Vec<CertificateDer<'static>>) -> Vec<CertificateDer<'static>> {
    let mut roots = Vec::new();
    while chain.len() > 1 && chain.last().is_some_and(|c| is_root(c)) {
        roots.extend(chain.pop());
    }
    roots.reverse();
    roots
}

/// A CA certificate that signed itself (issuer and subject the same, basicConstraints CA).
fn is_root(der: &CertificateDer<'_>) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    X509Certificate::from_der(der)
        .is_ok_and(|(rest, c)| rest.is_empty() && c.is_ca() && c.subject() == c.issuer())
}

/// webpki verification of a workload chain against `roots` (at least one).
fn chain_verifier(roots: &[CertificateDer<'static>]) -> Result<Arc<dyn ClientCertVerifier>, Error> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    if store.is_empty() {
        return Err(Error::NoRoots);
    }
    Ok(WebPkiClientVerifier::builder_with_provider(Arc::new(store), crypto_provider()).build()?)
}

#[cfg(test)]
mod tests;

//! rustls configurations for HBONE and the SPIFFE-aware certificate verifiers behind them.
//!
//! Configs are built from a [`CertStore`] by whichever thread needs them (a core, lazily, caching
//! them per store generation); building does no IO and never blocks. The verifiers run inside
//! rustls during handshakes on the cores.
//!
//! Invariants:
//! - TLS 1.3 only, ALPN `h2`, the AES-GCM suites of [`crypto_provider`], no SNI sent, client
//!   certificates required by the server, session resumption off in both directions (so every
//!   connection runs both verifiers against the current store: a rotated root or a removed
//!   identity takes effect on the next handshake, and no identity is ever restored from a ticket).
//! - Chain validation is rustls's webpki (signature, validity, EKU serverAuth/clientAuth);
//!   this file only adds the SPIFFE name checks, after the chain is proven.
//! - Host names are never checked: workload certificates carry only a `spiffe://` URI SAN, so the
//!   `ServerName` a client passes to rustls is a placeholder ([`placeholder_server_name`]).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    OtherError, RootCertStore, ServerConfig, SignatureScheme,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::{CertStore, Error, Identity, crypto_provider};

/// The only application protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

/// The server config presenting `local`'s certificate: the caller picks `local` from the
/// connection's original destination IP (the pod being reached), so no SNI is needed.
///
/// Clients must present a certificate that chains to the store's roots and whose first
/// `spiffe://` URI SAN is a valid identity in `local`'s trust domain.
pub fn server_config(store: &CertStore, local: &Identity) -> Result<Arc<ServerConfig>, Error> {
    let cert = store
        .get(local)
        .ok_or_else(|| Error::NoCertificate(local.clone()))?;
    let provider = crypto_provider();
    let chain =
        WebPkiClientVerifier::builder_with_provider(store.roots().clone(), provider.clone())
            .build()?;
    let verifier = Arc::new(InboundVerifier {
        chain,
        trust_domain: local.clone(),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(
            cert.certified_key().clone(),
        )));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The client config presenting `source`'s certificate and accepting only servers that chain to
/// the store's roots and carry one of `expected` as a URI SAN (the destination workload's
/// identity, plus its service's extra SANs). `expected` must not be empty.
pub fn client_config(
    store: &CertStore,
    source: &Identity,
    expected: &[Identity],
) -> Result<Arc<ClientConfig>, Error> {
    if expected.is_empty() {
        return Err(Error::NoExpectedIdentity);
    }
    let cert = store
        .get(source)
        .ok_or_else(|| Error::NoCertificate(source.clone()))?;
    let provider = crypto_provider();
    let verifier = Arc::new(OutboundVerifier {
        roots: store.roots().clone(),
        expected: expected.into(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            cert.certified_key().clone(),
        )));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The `ServerName` to hand rustls (or tokio-rustls) when connecting: it is neither sent (SNI
/// is off) nor checked (the verifier matches SPIFFE identities), so any value works; an IP avoids
/// building a DNS name per connection.
pub fn placeholder_server_name() -> ServerName<'static> {
    ServerName::from(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The identity of the peer on an established connection: the first `spiffe://` URI SAN of its
/// leaf certificate. Works for both sides (`ServerConnection` and `ClientConnection` deref to
/// `CommonState`). On the server this is the authenticated client, already checked by the
/// verifier against the roots and our trust domain.
pub fn peer_identity(conn: &CommonState) -> Result<Identity, Error> {
    let leaf = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or(Error::NoPeerCertificate)?;
    identity_from_cert(leaf)
}

/// The first `spiffe://` URI SAN of `cert`, parsed strictly.
///
/// The first SAN whose scheme reads `spiffe` in any case decides: if it is malformed, the
/// certificate has no identity (we never skip ahead to a later SAN that happens to parse).
pub fn identity_from_cert(cert: &CertificateDer<'_>) -> Result<Identity, Error> {
    let first = spiffe_sans(cert)?.into_iter().next();
    Identity::parse(first.ok_or(Error::NoSpiffeSan)?)
}

/// The URI SANs of `cert` whose scheme is `spiffe` (compared case-insensitively, so a
/// `SPIFFE://` SAN counts, and is later refused by the strict parser rather than skipped).
pub(super) fn spiffe_sans(cert: &[u8]) -> Result<Vec<&str>, Error> {
    let (rest, cert) = X509Certificate::from_der(cert)
        .map_err(|_| Error::BadCertificate("unparsable certificate"))?;
    if !rest.is_empty() {
        return Err(Error::BadCertificate(
            "trailing bytes after the certificate",
        ));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| Error::BadCertificate("malformed or duplicated subjectAltName"))?
        .ok_or(Error::NoSpiffeSan)?;
    let is_spiffe = |uri: &str| {
        uri.get(..SPIFFE_SCHEME.len())
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case(SPIFFE_SCHEME))
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if is_spiffe(uri) => Some(*uri),
            _ => None,
        })
        .collect())
}

const SPIFFE_SCHEME: &str = "spiffe://";

/// Turns our error into the rustls error that aborts the handshake (a `bad_certificate` alert),
/// keeping the reason for the log.
fn reject(error: Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

/// Server side: webpki's client verifier (chain, validity, clientAuth EKU), then the identity.
#[derive(Debug)]
struct InboundVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    /// Our own identity; only its trust domain is used.
    trust_domain: Identity,
}

impl ClientCertVerifier for InboundVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.chain
            .verify_client_cert(end_entity, intermediates, now)?;
        let peer = identity_from_cert(end_entity).map_err(reject)?;
        if peer.trust_domain() != self.trust_domain.trust_domain() {
            return Err(reject(Error::ForeignTrustDomain(peer)));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Client side: webpki chain validation (signature, validity, serverAuth EKU) without the host
/// name check of [`rustls::client::WebPkiServerVerifier`], then the expected-identity check.
#[derive(Debug)]
struct OutboundVerifier {
    roots: Arc<RootCertStore>,
    /// The destination's identity and its service's extra SANs; never empty.
    expected: Box<[Identity]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for OutboundVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let sans = spiffe_sans(end_entity).map_err(reject)?;
        // Expected identities are valid, so byte equality with one of them implies the SAN
        // itself is a valid identity: no need to parse the peer's SANs.
        let matched = sans
            .iter()
            .any(|san| self.expected.iter().any(|id| id.as_str() == *san));
        if !matched {
            let presented = sans.first().and_then(|san| Identity::parse(san).ok());
            return Err(reject(Error::UnexpectedPeer { presented }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

//! Workload identity: SPIFFE names, workload certificates, and the TLS configurations HBONE uses.
//!
//! What it owns:
//! - [`Identity`]: a strictly parsed `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//! - [`DevCa`]: the built-in development CA used when no `CA_ADDRESS` is configured.
//! - [`IstioCa`]: the client of Istio's certificate service (`CA_ADDRESS`).
//! - [`CertManager`]: keeps a certificate for every local identity, over either [`Issuer`].
//! - [`CertStore`]: the immutable set of workload certificates plus trust roots, published to the
//!   cores through `arc-swap`.
//! - [`server_config`] / [`client_config`]: rustls configurations for HBONE (TLS 1.3, ALPN `h2`,
//!   AES-GCM only, no SNI, mutual authentication by SPIFFE identity), and [`peer_identity`].
//!
//! Threads: the control thread issues certificates and builds stores (key generation and file IO
//! happen there, never on a core). Cores only read a published `Arc<CertStore>` and build or reuse
//! rustls configs from it, keyed by [`CertStore::generation`].
//!
//! Invariants:
//! - Every `Identity` value passed the strict parser; hostile bytes never become an identity.
//! - A `CertStore` never changes after construction; "adding" a certificate builds a new store
//!   with a new, strictly larger generation.
//! - Peer certificates are checked by rustls's webpki chain verification (never hand-rolled
//!   signature checks); this module only adds the SPIFFE name rules on top.
//! - Nothing here panics on malformed certificates or names: every failure is an [`Error`].

mod dev_ca;
mod istio_ca;
mod manager;
mod roots;
mod spiffe;
mod store;
mod tls;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

// Private: the submodules reach it as `super::crypto_provider`.
use crate::crypto::crypto_provider;

pub use dev_ca::{DevCa, ROOT_CERT_FILE, ROOT_KEY_FILE, TRUST_BUNDLE_FILE};
pub use istio_ca::IstioCa;
pub use manager::{CertManager, Enrolled, Issuer, Synced, local_identities};
pub use roots::RootFile;
pub use spiffe::{Identity, MAX_IDENTITY_LEN};
pub use store::{CertStore, WorkloadCert};
pub use tls::{
    ALPN_H2, client_config, identity_from_cert, peer_identity, placeholder_server_name,
    server_config,
};

/// Everything that can go wrong with identities, certificates and TLS configuration.
///
/// Variants carry `&'static str` reasons rather than formatted strings so that rejecting hostile
/// input (a peer's certificate, a malformed name) does not allocate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid SPIFFE identity: {0}")]
    InvalidIdentity(&'static str),
    #[error("invalid certificate: {0}")]
    BadCertificate(&'static str),
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("the certificate has no spiffe:// URI SAN")]
    NoSpiffeSan,
    #[error("peer {0} is not in our trust domain")]
    ForeignTrustDomain(Identity),
    #[error(
        "peer identity {} is not one of the expected identities",
        presented.as_ref().map_or("(none)", Identity::as_str)
    )]
    UnexpectedPeer { presented: Option<Identity> },
    #[error("no expected peer identity was given")]
    NoExpectedIdentity,
    #[error("no certificate for {0}")]
    NoCertificate(Identity),
    #[error("no trust roots")]
    NoRoots,
    #[error("development CA in {dir}: {reason}")]
    DevCa { dir: PathBuf, reason: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("Istio CA: {0}")]
    CaRequest(Box<tonic::Status>),
    #[error("Istio CA: no answer within {0:?}")]
    CaTimeout(std::time::Duration),
    #[error("Istio CA response: {0}")]
    CaResponse(&'static str),
    #[error(transparent)]
    Grpc(#[from] crate::grpc::GrpcError),
}

/// Standard base64 (RFC 4648, with padding) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    b64
}

/// PEM text of one DER certificate (what the Istio CA returns, and what root files hold).
pub fn pem_certificate(der: &[u8]) -> String {
    let b64 = base64(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

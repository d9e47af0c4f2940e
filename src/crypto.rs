//! The rustls crypto providers, built once per process: the one HBONE's TLS uses (TLS 1.3
//! AES-GCM suites only) and the one for connections to the control plane (the backend's
//! defaults). A leaf: both `identity` (HBONE configs, certificates) and `grpc` (istiod's xDS and
//! CA ports) take their provider from here, and it imports neither.
//!
//! The backend is chosen at build time: aws-lc-rs by default, ring with the `ring` feature.
//! Each provider is passed explicitly to every builder, so nothing depends on a process-wide
//! default.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!(
    "zring needs a TLS crypto provider: enable the `aws-lc-rs` (default) or `ring` feature"
);

/// The crypto provider every HBONE TLS config uses (see `identity`), built once per process.
///
/// It is the selected backend (aws-lc-rs, or ring with the `ring` feature) narrowed to the two
/// TLS 1.3 AES-GCM suites HBONE allows; key exchange groups stay the backend's defaults. The
/// provider is passed explicitly to every builder, so nothing depends on a process-wide default.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let mut provider = backend_provider();
            provider.cipher_suites.retain(|suite| {
                matches!(
                    suite.suite(),
                    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                        | rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
                )
            });
            Arc::new(provider)
        })
        .clone()
}

/// The provider for connections to the control plane (istiod's xDS and CA ports): the
/// backend's defaults, TLS 1.2 and 1.3, because those servers are not HBONE peers and owe us
/// no particular suite.
pub fn control_plane_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(backend_provider()))
        .clone()
}

#[cfg(feature = "ring")]
fn backend_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
fn backend_provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_offers_only_aes_gcm() {
        let provider = crypto_provider();
        let mut suites: Vec<_> = provider.cipher_suites.iter().map(|s| s.suite()).collect();
        suites.sort_by_key(|s| u16::from(*s));
        assert_eq!(
            suites,
            [
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
            ]
        );
    }
}

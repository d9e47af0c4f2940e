//! Seeds for `certificate_san`: self-signed certificates whose SANs are what a hostile peer
//! would present.

use rcgen::{CertificateParams, KeyPair, SanType, string::Ia5String};

use super::Seeds;

/// Self-signed certificates whose SANs are what a hostile peer would present.
pub fn hostile_sans() -> Seeds {
    let uri = |s: &str| SanType::URI(Ia5String::try_from(s).unwrap());
    let cases: Vec<(&str, Vec<SanType>)> = vec![
        (
            "good",
            vec![uri("spiffe://cluster.local/ns/default/sa/appa")],
        ),
        (
            "nul",
            vec![uri("spiffe://cluster.local/ns/default/sa/appa\0.evil")],
        ),
        (
            "extra-segments",
            vec![uri("spiffe://cluster.local/ns/default/sa/appa/extra/path")],
        ),
        (
            "upper-scheme",
            vec![uri("SPIFFE://cluster.local/ns/default/sa/appa")],
        ),
        (
            "bad-first-good-second",
            vec![
                uri("spiffe://cluster.local/ns/default/sa/a/b"),
                uri("spiffe://cluster.local/ns/default/sa/appa"),
            ],
        ),
        (
            "other-uri-first",
            vec![
                uri("https://example.com/"),
                uri("spiffe://cluster.local/ns/default/sa/appa"),
            ],
        ),
        (
            "dns-only",
            vec![SanType::DnsName(
                Ia5String::try_from("appa.default").unwrap(),
            )],
        ),
        ("no-san", vec![]),
    ];
    cases
        .into_iter()
        .map(|(name, sans)| {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::default();
            params.subject_alt_names = sans;
            let cert = params.self_signed(&key).unwrap();
            (format!("{name}.der"), cert.der().to_vec())
        })
        .collect()
}

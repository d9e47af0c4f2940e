//! Client certificates zring must not accept: from a CA it does not trust, or from the mesh's
//! CA with SANs that are not one clean SPIFFE identity. Each fails the TLS handshake.

use super::*;

/// Client certificates zring must not accept: from a CA it does not trust, and from the
/// mesh's own CA but with SANs that are not one clean SPIFFE identity (a NUL byte, extra path
/// segments, an upper-case scheme, no URI at all). Each fails the TLS handshake with an alert
/// and the reason in zring's log; no HTTP is ever spoken.
#[test]
fn untrusted_and_malformed_client_certificates_fail_the_handshake() {
    let mut h = hostile(&[]);
    let foreign = DevCa::generate().unwrap();
    let foreign_cert = foreign.issue(&Identity::parse(APPA_ID).unwrap()).unwrap();
    let r = attempt(
        &h,
        tls(|b| {
            b.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                foreign_cert.certified_key().clone(),
            )))
        }),
    );
    assert!(r.contains("UnknownCA"), "foreign CA: {r}");
    h.logged("b", "HBONE TLS handshake failed", 1);

    let cases: &[(&str, rcgen::SanType, &str)] = &[
        (
            "NUL byte",
            uri("spiffe://cluster.local/ns/default/sa/appa\0.evil"),
            "service account is not a DNS-1123 subdomain",
        ),
        (
            "extra path segments",
            uri("spiffe://cluster.local/ns/default/sa/appa/extra/segments"),
            "path is not /ns/<namespace>/sa/<service-account>",
        ),
        (
            "upper-case scheme",
            uri("SPIFFE://cluster.local/ns/default/sa/appa"),
            "scheme is not `spiffe://`",
        ),
        (
            "DNS name only",
            rcgen::SanType::DnsName("appa.default.svc".try_into().unwrap()),
            "no spiffe:// URI",
        ),
    ];
    for (i, (what, san, reason)) in cases.iter().enumerate() {
        let (chain, key) = mesh_signed(&h.m, san.clone());
        let r = attempt(&h, tls(|b| b.with_client_auth_cert(chain, key).unwrap()));
        assert!(r.contains("alert"), "{what}: {r}");
        h.logged("b", "HBONE TLS handshake failed", i + 2);
        h.logged("b", reason, 1);
    }
    assert_eq!(h.connects(), 1, "only the bystander's\n{}", h.m.logs());
    h.unharmed("after hostile certificates");
}

fn uri(s: &str) -> rcgen::SanType {
    rcgen::SanType::URI(s.try_into().unwrap())
}

/// Completes a TLS handshake with `config` and reads zring's verdict (its SETTINGS, or an
/// alert) before writing anything, so the verdict cannot be lost to a reset; returns how the
/// connection failed.
fn attempt(h: &Hostile, config: Arc<ClientConfig>) -> String {
    let tcp =
        h.m.lab
            .node("a")
            .run(|| TcpStream::connect_timeout(&(APPB, 15008).into(), Duration::from_secs(10)))
            .unwrap();
    let mut conn = Conn::handshake(tcp, config).unwrap();
    match conn.read_frame() {
        Ok(f) => panic!("zring accepted the certificate: {f:?}\n{}", h.m.logs()),
        Err(e) => e.to_string(),
    }
}

/// A client certificate with the workload profile and `san`, signed by the mesh's CA.
fn mesh_signed(
    m: &Mesh,
    san: rcgen::SanType,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_pem = std::fs::read_to_string(m.ca_dir.join(ROOT_CERT_FILE)).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(m.ca_dir.join(ROOT_KEY_FILE)).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![san];
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (vec![cert.der().clone()], key)
}

//! Identity module tests: real TLS handshakes in memory (rustls client and server connections
//! pumping bytes through `Vec`s), the dev CA's certificate profile and directory race, and the
//! store's generations. Runs on the test harness's threads; no sockets.

use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use rcgen::string::Ia5String;
use rcgen::{DnType, SanType};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, OtherError, ProtocolVersion, ServerConfig,
    ServerConnection, SignatureScheme,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::*;

fn id(text: &str) -> Identity {
    text.parse().unwrap()
}

fn alice() -> Identity {
    id("spiffe://cluster.local/ns/default/sa/alice")
}

fn bob() -> Identity {
    id("spiffe://cluster.local/ns/shop/sa/bob")
}

fn carol() -> Identity {
    id("spiffe://cluster.local/ns/shop/sa/carol")
}

/// A CA and a store holding certificates for `ids`.
fn mesh(ids: &[Identity]) -> (DevCa, CertStore) {
    let ca = DevCa::generate().unwrap();
    let certs: Vec<_> = ids.iter().map(|i| ca.issue(i).unwrap()).collect();
    let store = ca.empty_store().unwrap().with_certs(certs);
    (ca, store)
}

/// Which side aborted the handshake, and why.
#[derive(Debug)]
enum Failed {
    Client(rustls::Error),
    Server(rustls::Error),
}

impl Failed {
    fn server(self) -> rustls::Error {
        match self {
            Failed::Server(e) => e,
            Failed::Client(e) => panic!("expected the server to refuse, the client did: {e}"),
        }
    }

    fn client(self) -> rustls::Error {
        match self {
            Failed::Client(e) => e,
            Failed::Server(e) => panic!("expected the client to refuse, the server did: {e}"),
        }
    }
}

struct Handshake {
    client: ClientConnection,
    server: ServerConnection,
    result: Result<(), Failed>,
}

/// Runs a full handshake between the two configs over in-memory buffers.
fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Handshake {
    let mut client = ClientConnection::new(client, placeholder_server_name()).unwrap();
    let mut server = ServerConnection::new(server).unwrap();
    let result = pump(&mut client, &mut server);
    Handshake {
        client,
        server,
        result,
    }
}

fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), Failed> {
    for _ in 0..32 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut bytes = &wire[..];
        while !bytes.is_empty() {
            server.read_tls(&mut bytes).unwrap();
            server.process_new_packets().map_err(Failed::Server)?;
        }
        let sent_to_server = !wire.is_empty();

        let mut wire = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut wire).unwrap();
        }
        let mut bytes = &wire[..];
        while !bytes.is_empty() {
            client.read_tls(&mut bytes).unwrap();
            client.process_new_packets().map_err(Failed::Client)?;
        }
        if !sent_to_server && wire.is_empty() {
            assert!(!client.is_handshaking() && !server.is_handshaking());
            return Ok(());
        }
    }
    panic!("handshake did not settle");
}

/// Our error inside a rustls rejection, if the rejection came from our checks.
fn ours(error: &rustls::Error) -> Option<&Error> {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<Error>()
        }
        _ => None,
    }
}

#[test]
fn good_handshake_is_tls13_h2_aes_gcm_without_sni_and_names_both_peers() {
    let (_ca, store) = mesh(&[alice(), bob()]);
    let client = client_config(&store, &alice(), &[bob()]).unwrap();
    let server = server_config(&store, &bob()).unwrap();
    let hs = handshake(client, server);
    hs.result.unwrap();

    assert_eq!(hs.client.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(hs.client.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(hs.server.alpn_protocol(), Some(ALPN_H2));
    let suite = hs.client.negotiated_cipher_suite().unwrap().suite();
    assert!(matches!(
        suite,
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            | rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    ));
    assert_eq!(
        hs.server.server_name(),
        None,
        "the client must not send SNI"
    );
    assert_eq!(peer_identity(&hs.server).unwrap(), alice());
    assert_eq!(peer_identity(&hs.client).unwrap(), bob());
}

#[test]
fn outbound_accepts_any_expected_identity() {
    let (_ca, store) = mesh(&[alice(), bob()]);
    let client = client_config(&store, &alice(), &[carol(), bob()]).unwrap();
    let hs = handshake(client, server_config(&store, &bob()).unwrap());
    hs.result.unwrap();
}

#[test]
fn outbound_refuses_a_server_outside_the_expected_set() {
    let (_ca, store) = mesh(&[alice(), bob()]);
    let client = client_config(&store, &alice(), &[carol()]).unwrap();
    let error = handshake(client, server_config(&store, &bob()).unwrap())
        .result
        .unwrap_err()
        .client();
    match ours(&error) {
        Some(Error::UnexpectedPeer { presented }) => assert_eq!(presented, &Some(bob())),
        other => panic!("wrong rejection: {other:?} ({error})"),
    }
}

#[test]
fn outbound_refuses_a_server_from_another_ca() {
    let (_ca, client_store) = mesh(&[alice()]);
    let (_other, server_store) = mesh(&[bob()]);
    let client = client_config(&client_store, &alice(), &[bob()]).unwrap();
    let error = handshake(client, server_config(&server_store, &bob()).unwrap())
        .result
        .unwrap_err()
        .client();
    assert_eq!(
        error,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[test]
fn outbound_refuses_a_server_san_with_a_nul_byte() {
    let (ca, store) = mesh(&[alice()]);
    let hostile = format!("{}\0", bob());
    let server_store = store.with_certs([crafted(&ca, bob(), uri_sans(&[&hostile]))]);
    let client = client_config(&store, &alice(), &[bob()]).unwrap();
    let error = handshake(client, server_config(&server_store, &bob()).unwrap())
        .result
        .unwrap_err()
        .client();
    assert!(
        matches!(
            ours(&error),
            Some(Error::UnexpectedPeer { presented: None })
        ),
        "{error}"
    );
}

#[test]
fn inbound_refuses_a_client_from_another_ca() {
    let (server_ca, server_store) = mesh(&[bob()]);
    let other_ca = DevCa::generate().unwrap();
    // The client trusts both roots, so only the server's check can fail.
    let client_store = CertStore::new(vec![server_ca.root().clone(), other_ca.root().clone()])
        .unwrap()
        .with_certs([other_ca.issue(&alice()).unwrap()]);
    let client = client_config(&client_store, &alice(), &[bob()]).unwrap();
    let error = handshake(client, server_config(&server_store, &bob()).unwrap())
        .result
        .unwrap_err()
        .server();
    assert_eq!(
        error,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
}

#[test]
fn inbound_refuses_a_client_from_another_trust_domain() {
    let stranger = id("spiffe://other.domain/ns/x/sa/y");
    let (_ca, store) = mesh(&[stranger.clone(), bob()]);
    let client = client_config(&store, &stranger, &[bob()]).unwrap();
    let error = handshake(client, server_config(&store, &bob()).unwrap())
        .result
        .unwrap_err()
        .server();
    match ours(&error) {
        Some(Error::ForeignTrustDomain(peer)) => assert_eq!(peer, &stranger),
        other => panic!("wrong rejection: {other:?} ({error})"),
    }
}

#[test]
fn inbound_refuses_a_client_without_a_certificate() {
    #[derive(Debug)]
    struct NoCert;
    impl ResolvesClientCert for NoCert {
        fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
            None
        }
        fn has_certs(&self) -> bool {
            false
        }
    }
    let (_ca, store) = mesh(&[alice(), bob()]);
    let mut client = (*client_config(&store, &alice(), &[bob()]).unwrap()).clone();
    client.client_auth_cert_resolver = Arc::new(NoCert);
    let error = handshake(Arc::new(client), server_config(&store, &bob()).unwrap())
        .result
        .unwrap_err()
        .server();
    assert_eq!(error, rustls::Error::NoCertificatesPresented);
}

#[test]
fn inbound_refuses_an_expired_client_certificate() {
    let (ca, store) = mesh(&[bob()]);
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    let store = store.with_certs([ca.issue_at(&alice(), two_days_ago).unwrap()]);
    let client = client_config(&store, &alice(), &[bob()]).unwrap();
    let error = handshake(client, server_config(&store, &bob()).unwrap())
        .result
        .unwrap_err()
        .server();
    assert!(
        matches!(error, rustls::Error::InvalidCertificate(_)) && ours(&error).is_none(),
        "{error}"
    );
}

/// A certificate for `as_identity`'s slot in the store whose SANs are whatever the test wants.
fn crafted(ca: &DevCa, as_identity: Identity, sans: Vec<SanType>) -> WorkloadCert {
    let (cert, key) = ca
        .sign_custom(SystemTime::now(), |params| {
            params.subject_alt_names = sans;
            if params.subject_alt_names.is_empty() {
                // An empty subject needs a SAN (RFC 5280); give the SAN-less cert a name.
                params.distinguished_name.push(DnType::CommonName, "no-san");
            }
        })
        .unwrap();
    WorkloadCert::unchecked(as_identity, vec![cert], key).unwrap()
}

fn uri_sans(uris: &[&str]) -> Vec<SanType> {
    uris.iter()
        .map(|u| SanType::URI(Ia5String::try_from(*u).unwrap()))
        .collect()
}

/// Presents a client certificate with `sans` to a server for bob; returns the server's error.
fn inbound_rejection(sans: Vec<SanType>) -> rustls::Error {
    let (ca, store) = mesh(&[bob()]);
    let store = store.with_certs([crafted(&ca, alice(), sans)]);
    let client = client_config(&store, &alice(), &[bob()]).unwrap();
    handshake(client, server_config(&store, &bob()).unwrap())
        .result
        .unwrap_err()
        .server()
}

#[test]
fn inbound_refuses_malformed_spiffe_sans() {
    let table: &[&[&str]] = &[
        &["spiffe://cluster.local/ns/default/sa/alice\0"],
        &["spiffe://cluster.local/ns/default/sa/alice\0.evil"],
        &["spiffe://cluster.local/ns/default/sa/alice/extra"],
        &["spiffe://cluster.local/ns/default/extra/sa/alice"],
        &["spiffe://cluster.local/ns/default/sa/alice?x"],
        &["spiffe://cluster.local/ns/default/sa/al%69ce"],
        &["SPIFFE://cluster.local/ns/default/sa/alice"],
        // The first spiffe SAN decides; a valid one after it does not rescue the cert.
        &[
            "spiffe://cluster.local/ns/default/sa/alice/x",
            "spiffe://cluster.local/ns/default/sa/alice",
        ],
    ];
    for sans in table {
        let error = inbound_rejection(uri_sans(sans));
        assert!(
            matches!(ours(&error), Some(Error::InvalidIdentity(_))),
            "{sans:?}: {error}"
        );
    }
}

#[test]
fn inbound_refuses_certificates_without_a_spiffe_uri_san() {
    let dns_only = vec![SanType::DnsName("alice.default.svc".try_into().unwrap())];
    let other_uri = uri_sans(&["https://cluster.local/ns/default/sa/alice"]);
    for sans in [vec![], dns_only, other_uri] {
        let error = inbound_rejection(sans.clone());
        assert!(
            matches!(ours(&error), Some(Error::NoSpiffeSan)),
            "{sans:?}: {error}"
        );
    }
}

#[test]
fn inbound_takes_the_first_spiffe_san_after_other_uris() {
    let (ca, store) = mesh(&[bob()]);
    let sans = uri_sans(&["https://example.com/", alice().as_str(), carol().as_str()]);
    let store = store.with_certs([crafted(&ca, alice(), sans)]);
    let client = client_config(&store, &alice(), &[bob()]).unwrap();
    let hs = handshake(client, server_config(&store, &bob()).unwrap());
    hs.result.unwrap();
    assert_eq!(peer_identity(&hs.server).unwrap(), alice());
}

#[test]
fn configs_need_a_certificate_and_an_expected_peer() {
    let (_ca, store) = mesh(&[alice()]);
    assert!(matches!(server_config(&store, &bob()), Err(Error::NoCertificate(i)) if i == bob()));
    assert!(matches!(
        client_config(&store, &bob(), &[alice()]),
        Err(Error::NoCertificate(_))
    ));
    assert!(matches!(
        client_config(&store, &alice(), &[]),
        Err(Error::NoExpectedIdentity)
    ));
}

#[test]
fn issued_certificates_follow_the_workload_profile() {
    let ca = DevCa::generate().unwrap();
    let cert = ca.issue(&alice()).unwrap();
    assert_eq!(cert.identity(), &alice());
    assert_eq!(cert.chain().len(), 1);
    assert_eq!(
        cert.not_after().duration_since(cert.not_before()).unwrap(),
        Duration::from_secs(24 * 3600 + 5 * 60)
    );
    assert!(cert.not_before() < SystemTime::now() - Duration::from_secs(60));

    let (_, leaf) = X509Certificate::from_der(&cert.chain()[0]).unwrap();
    assert_eq!(leaf.subject().iter().count(), 0, "subject must be empty");
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "SAN must be critical with an empty subject");
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI(alice().as_str())]
    );
    let usage = leaf.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && usage.key_encipherment());
    assert!(!usage.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!leaf.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(
        leaf.signature_algorithm.algorithm,
        x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
    );
    let x509_parser::public_key::PublicKey::EC(point) = leaf.public_key().parsed().unwrap() else {
        panic!("workload key is not EC");
    };
    assert_eq!(point.key_size(), 256);

    let (_, root) = X509Certificate::from_der(ca.root()).unwrap();
    assert!(root.is_ca());
    assert!(root.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert_eq!(root.subject(), root.issuer());
    assert_eq!(leaf.issuer(), root.subject());
}

#[test]
fn workload_cert_refuses_a_chain_for_another_identity_or_key() {
    let ca = DevCa::generate().unwrap();
    let (cert, key) = ca
        .sign_custom(SystemTime::now(), |p| {
            p.subject_alt_names = uri_sans(&[alice().as_str()])
        })
        .unwrap();
    let (_, other_key) = ca.sign_custom(SystemTime::now(), |_| {}).unwrap();
    assert!(WorkloadCert::new(alice(), vec![cert.clone()], key.clone_key()).is_ok());
    assert!(matches!(
        WorkloadCert::new(bob(), vec![cert.clone()], key),
        Err(Error::BadCertificate(_))
    ));
    assert!(matches!(
        WorkloadCert::new(alice(), vec![cert], other_key),
        Err(Error::Tls(_))
    ));
    let (_, key) = ca.sign_custom(SystemTime::now(), |_| {}).unwrap();
    assert!(matches!(
        WorkloadCert::new(alice(), vec![], key),
        Err(Error::BadCertificate(_))
    ));
}

#[test]
fn mangled_certificates_never_panic() {
    let ca = DevCa::generate().unwrap();
    let der = ca.issue(&alice()).unwrap().chain()[0].to_vec();
    let check = |bytes: &[u8]| {
        let cert = CertificateDer::from(bytes);
        let _ = identity_from_cert(&cert);
        let _ = tls::spiffe_sans(bytes);
    };
    for len in 0..der.len() {
        check(&der[..len]);
    }
    for i in 0..der.len() {
        for bit in [0x01, 0x20, 0x80] {
            let mut bytes = der.clone();
            bytes[i] ^= bit;
            check(&bytes);
        }
    }
    assert!(matches!(
        identity_from_cert(&CertificateDer::from(&b"\x30\x03\x02\x01"[..])),
        Err(Error::BadCertificate(_))
    ));
}

#[test]
fn store_generations_increase_and_old_stores_stay_unchanged() {
    let ca = DevCa::generate().unwrap();
    let empty = ca.empty_store().unwrap();
    let one = empty.with_certs([ca.issue(&alice()).unwrap()]);
    let two = one.with_certs([ca.issue(&bob()).unwrap()]);
    let pruned = two.retain(|i| *i != alice());
    assert!(empty.generation() < one.generation());
    assert!(one.generation() < two.generation());
    assert!(two.generation() < pruned.generation());
    assert!(empty.is_empty() && empty.get(&alice()).is_none());
    assert_eq!(one.len(), 1);
    assert_eq!(two.len(), 2);
    assert!(pruned.get(&alice()).is_none() && pruned.get(&bob()).is_some());
    assert_eq!(pruned.roots().len(), 1);
    assert_eq!(pruned.root_certs(), &[ca.root().clone()]);
    assert!(matches!(CertStore::new(vec![]), Err(Error::NoRoots)));
    assert!(CertStore::new(vec![CertificateDer::from(vec![1, 2, 3])]).is_err());
}

#[test]
fn refresh_issues_missing_and_half_expired_certificates_only() {
    let ca = DevCa::generate().unwrap();
    let now = SystemTime::now();
    let store = ca.empty_store().unwrap();
    let wanted = [bob(), alice(), alice()];
    assert_eq!(store.due(&wanted, now), vec![alice(), bob()]);
    let store = ca.refresh(&store, &wanted, now).unwrap().unwrap();
    assert_eq!(store.len(), 2);
    assert!(ca.refresh(&store, &wanted, now).unwrap().is_none());
    let later = now + Duration::from_secs(13 * 3600);
    let renewed = ca.refresh(&store, &wanted, later).unwrap().unwrap();
    assert!(renewed.generation() > store.generation());
    assert!(renewed.get(&alice()).unwrap().not_after() > store.get(&alice()).unwrap().not_after());
}

#[test]
fn dev_ca_directory_race_ends_with_one_shared_root() {
    let base = tempfile::tempdir().unwrap();
    for round in 0..4 {
        // The directory does not exist yet: the threads also race to create it.
        let dir = base.path().join(format!("round-{round}/ca"));
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (dir, start) = (dir.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    DevCa::load_or_create(&dir).unwrap().root().clone()
                })
            })
            .collect();
        let roots: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(roots.iter().all(|r| *r == roots[0]), "round {round}");

        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [ROOT_CERT_FILE, ROOT_KEY_FILE],
            "temp files left behind"
        );
        let on_disk = std::fs::read(dir.join(ROOT_CERT_FILE)).unwrap();
        let on_disk = CertificateDer::from_pem_slice(&on_disk).unwrap();
        assert_eq!(on_disk, roots[0]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(ROOT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn dev_ca_directory_is_reused_across_loads() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevCa::load_or_create(dir.path()).unwrap();
    let second = DevCa::load_or_create(dir.path()).unwrap();
    assert_eq!(first.root(), second.root());

    // A certificate the second instance issues is trusted by a store built from the first.
    let server_store = first
        .empty_store()
        .unwrap()
        .with_certs([first.issue(&bob()).unwrap()]);
    let client_store = second
        .empty_store()
        .unwrap()
        .with_certs([second.issue(&alice()).unwrap()]);
    let client = client_config(&client_store, &alice(), &[bob()]).unwrap();
    handshake(client, server_config(&server_store, &bob()).unwrap())
        .result
        .unwrap();
}

#[test]
fn dev_ca_directory_recovers_a_key_without_cert_and_refuses_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevCa::load_or_create(dir.path()).unwrap();
    let key = std::fs::read(dir.path().join(ROOT_KEY_FILE)).unwrap();

    // A crash between the two files: the next start completes the pair from the same key.
    std::fs::remove_file(dir.path().join(ROOT_CERT_FILE)).unwrap();
    let recovered = DevCa::load_or_create(dir.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join(ROOT_KEY_FILE)).unwrap(), key);
    assert_ne!(recovered.root(), first.root());
    // Same key and name, so certificates issued before the crash still chain to the new root.
    let store = recovered
        .empty_store()
        .unwrap()
        .with_certs([first.issue(&alice()).unwrap(), first.issue(&bob()).unwrap()]);
    let client = client_config(&store, &alice(), &[bob()]).unwrap();
    handshake(client, server_config(&store, &bob()).unwrap())
        .result
        .unwrap();

    // A cert from another CA next to our key is refused, not silently used.
    let other = tempfile::tempdir().unwrap();
    DevCa::load_or_create(other.path()).unwrap();
    std::fs::copy(
        other.path().join(ROOT_CERT_FILE),
        dir.path().join(ROOT_CERT_FILE),
    )
    .unwrap();
    assert!(matches!(
        DevCa::load_or_create(dir.path()),
        Err(Error::DevCa { .. })
    ));

    // A lone cert (someone else's) is refused without writing a key next to it.
    let lone = tempfile::tempdir().unwrap();
    std::fs::copy(
        other.path().join(ROOT_CERT_FILE),
        lone.path().join(ROOT_CERT_FILE),
    )
    .unwrap();
    assert!(matches!(
        DevCa::load_or_create(lone.path()),
        Err(Error::DevCa { .. })
    ));
    assert!(!lone.path().join(ROOT_KEY_FILE).exists());

    // Garbage is an error, not a panic.
    std::fs::write(dir.path().join(ROOT_KEY_FILE), b"not a key").unwrap();
    assert!(matches!(
        DevCa::load_or_create(dir.path()),
        Err(Error::DevCa { .. })
    ));
}

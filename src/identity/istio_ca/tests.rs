//! The real `IstioCa` and `CertManager` against a fake Istio CA (a tonic server on loopback
//! that signs CSRs with a development CA, or misbehaves on request): what a request carries,
//! which responses are refused, and rotation through a CA outage.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prost_types::value::Kind as ValueKind;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::*;
use crate::grpc::TokenFile;
use crate::identity::{CertManager, CertStore, DevCa, pem_certificate};
use crate::state::Snapshot;
use crate::xds::proto::ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use crate::xds::proto::ca::{IstioCertificateRequest, IstioCertificateResponse};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sign,
    Unavailable,
    EmptyChain,
    NotPem,
    OtherIdentity,
    OtherCa,
    OtherKey,
    /// A root rotation at the CA: signed under `other`, both roots sent.
    Rotating,
    /// The rotation done: signed under `other`, only its root sent.
    Rotated,
}

/// What the fake CA saw in one request.
#[derive(Debug, Clone)]
struct Seen {
    impersonated: Option<String>,
    authorization: Option<String>,
    cluster_id: Option<String>,
    validity: i64,
}

struct FakeCa {
    ca: DevCa,
    other: DevCa,
    mode: Mutex<Mode>,
    seen: Mutex<Vec<Seen>>,
}

#[tonic::async_trait]
impl IstioCertificateService for Arc<FakeCa> {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let header = |k: &str| {
            request
                .metadata()
                .get(k)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (authorization, cluster_id) = (header("authorization"), header("clusterid"));
        let r = request.into_inner();
        let impersonated = r
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get("ImpersonatedIdentity"))
            .and_then(|v| match &v.kind {
                Some(ValueKind::StringValue(s)) => Some(s.clone()),
                _ => None,
            });
        self.seen.lock().unwrap().push(Seen {
            impersonated,
            authorization,
            cluster_id,
            validity: r.validity_duration,
        });
        let mode = *self.mode.lock().unwrap();
        let now = SystemTime::now();
        let sign = |ca: &DevCa, csr: &str| -> Result<String, Status> {
            let der = ca
                .sign_csr(csr, now)
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok(pem_certificate(&der))
        };
        let chain = match mode {
            Mode::Unavailable => return Err(Status::unavailable("CA is down")),
            Mode::EmptyChain => vec![],
            Mode::NotPem => vec!["hello".into()],
            Mode::Sign => vec![sign(&self.ca, &r.csr)?, pem_certificate(self.ca.root())],
            Mode::OtherCa => vec![sign(&self.other, &r.csr)?],
            Mode::Rotating => vec![
                sign(&self.other, &r.csr)?,
                pem_certificate(self.ca.root()),
                pem_certificate(self.other.root()),
            ],
            Mode::Rotated => vec![
                sign(&self.other, &r.csr)?,
                pem_certificate(self.other.root()),
            ],
            Mode::OtherIdentity | Mode::OtherKey => {
                // A well-formed certificate from the right CA, but for someone else's CSR.
                let id = match mode {
                    Mode::OtherIdentity => "spiffe://cluster.local/ns/evil/sa/mallory",
                    _ => "spiffe://cluster.local/ns/default/sa/alice",
                };
                let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                let mut params = rcgen::CertificateParams::default();
                params.subject_alt_names = vec![rcgen::SanType::URI(id.try_into().unwrap())];
                let csr = params.serialize_request(&key).unwrap().pem().unwrap();
                vec![sign(&self.ca, &csr)?]
            }
        };
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}

async fn start() -> (Arc<FakeCa>, SocketAddr) {
    let fake = Arc::new(FakeCa {
        ca: DevCa::generate().unwrap(),
        other: DevCa::generate().unwrap(),
        mode: Mutex::new(Mode::Sign),
        seen: Mutex::new(Vec::new()),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = IstioCertificateServiceServer::new(fake.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    (fake, addr)
}

fn client(fake: &FakeCa, addr: SocketAddr, token: Option<TokenFile>) -> IstioCa {
    let target = Target::new(&format!("http://{addr}"), Path::new("/none"), None, token).unwrap();
    IstioCa::new(
        target,
        vec![fake.ca.root().clone()],
        Duration::from_secs(86400),
        "cluster-1",
    )
    .unwrap()
}

fn alice() -> Identity {
    "spiffe://cluster.local/ns/default/sa/alice"
        .parse()
        .unwrap()
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn requests_carry_identity_token_and_cluster_and_chains_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("istio-token");
    std::fs::write(&token, "node-token").unwrap();
    let (fake, addr) = start().await;
    let ca = client(
        &fake,
        addr,
        Some(TokenFile {
            path: token,
            required: true,
        }),
    );
    let cert = ca.issue(&alice(), SystemTime::now()).await.unwrap();
    assert_eq!(cert.identity(), &alice());
    assert_eq!(cert.chain().len(), 1, "the root is not sent to peers");
    assert_eq!(
        uri_sans(&cert.chain()[0]),
        ["spiffe://cluster.local/ns/default/sa/alice"]
    );
    let seen = fake.seen.lock().unwrap()[0].clone();
    assert_eq!(
        seen.impersonated.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/alice")
    );
    assert_eq!(seen.authorization.as_deref(), Some("Bearer node-token"));
    assert_eq!(seen.cluster_id.as_deref(), Some("cluster-1"));
    assert_eq!(seen.validity, 86400);
}

#[tokio::test]
async fn hostile_or_broken_responses_are_refused() {
    let (fake, addr) = start().await;
    let ca = client(&fake, addr, None);
    for (mode, expect) in [
        (Mode::Unavailable, "Istio CA: "),
        (Mode::EmptyChain, "chain is empty"),
        (Mode::NotPem, "holds no certificate"),
        (Mode::OtherCa, "TLS"),
        (Mode::OtherIdentity, "does not name the identity"),
        (Mode::OtherKey, "TLS"),
    ] {
        *fake.mode.lock().unwrap() = mode;
        let e = ca.issue(&alice(), SystemTime::now()).await.unwrap_err();
        assert!(e.to_string().contains(expect), "{mode:?}: {e}");
    }
    // A chain that would be fine but is checked at a time it is not valid yet.
    *fake.mode.lock().unwrap() = Mode::Sign;
    let past = SystemTime::now() - Duration::from_secs(3600);
    assert!(ca.issue(&alice(), past).await.is_err());
}

fn snapshot() -> Snapshot {
    crate::xds::local::parse(
        r#"
workloads:
- { uid: a, name: a, namespace: default, serviceAccount: alice, workloadIps: ["10.0.0.1"], node: n }
- { uid: b, name: b, namespace: shop, serviceAccount: bob, workloadIps: ["10.0.0.2"], node: n }
"#,
    )
    .unwrap()
}

#[tokio::test]
async fn ca_outage_during_rotation_keeps_the_old_certificates() {
    let (fake, addr) = start().await;
    let mut m = CertManager::new(client(&fake, addr, None));
    let published = ArcSwap::from_pointee(m.empty_store().unwrap());
    let s = snapshot();
    let t0 = SystemTime::now();
    let synced = m.sync(&published, &s, "n", t0).await;
    assert!(synced.published && synced.failed.is_empty(), "{synced:?}");
    let first: Arc<CertStore> = published.load_full();
    assert_eq!(first.len(), 2);
    let requests = || fake.seen.lock().unwrap().len();
    assert_eq!(requests(), 2);

    // Past half-life the CA is down: nothing is published, both old certificates stay.
    *fake.mode.lock().unwrap() = Mode::Unavailable;
    let t1 = t0 + Duration::from_secs(13 * 3600);
    let synced = m.sync(&published, &s, "n", t1).await;
    assert!(!synced.published);
    assert_eq!(synced.failed.len(), 2);
    assert_eq!(published.load().generation(), first.generation());
    assert_eq!(requests(), 4);
    let retry = m.next_retry(&alice()).unwrap();
    assert!(
        retry > t1 && retry <= t1 + Duration::from_secs(1),
        "{retry:?}"
    );

    // Before the retry time nothing is asked.
    m.sync(&published, &s, "n", t1 + Duration::from_millis(100))
        .await;
    assert_eq!(requests(), 4);

    // Failures keep backing off, never beyond 150 s.
    let mut now = t1;
    for _ in 0..12 {
        now = m.next_retry(&alice()).unwrap();
        m.sync(&published, &s, "n", now).await;
        let wait = m.next_retry(&alice()).unwrap().duration_since(now).unwrap();
        assert!(wait <= Duration::from_secs(150), "{wait:?}");
    }
    assert!(
        m.next_retry(&alice()).unwrap().duration_since(now).unwrap() >= Duration::from_secs(75)
    );
    assert_eq!(
        published.load().generation(),
        first.generation(),
        "the old certificates still serve"
    );
    let old = first.get(&alice()).unwrap().chain()[0].clone();

    // The CA comes back: both are renewed at their next retry.
    *fake.mode.lock().unwrap() = Mode::Sign;
    let later = now + Duration::from_secs(151);
    let synced = m.sync(&published, &s, "n", later).await;
    assert!(synced.published && synced.failed.is_empty(), "{synced:?}");
    let renewed = published.load_full();
    assert!(renewed.generation() > first.generation());
    assert_ne!(renewed.get(&alice()).unwrap().chain()[0], old);
    assert_eq!(m.next_retry(&alice()), None);

    // Identities that leave the node are forgotten, retry schedule included.
    let none = crate::xds::local::parse("").unwrap();
    assert!(m.sync(&published, &none, "n", later).await.published);
    assert!(published.load().is_empty());
}

/// A root rotation: the roots the CA sends join the trust bundle at the next sync (old and new
/// during the overlap); the old root leaves once neither the CA nor `CA_ROOT_CA` has it.
#[tokio::test]
async fn roots_from_the_ca_and_the_root_file_rotate_the_store() {
    let (fake, addr) = start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("root-cert.pem");
    std::fs::write(&file, pem_certificate(fake.ca.root())).unwrap();
    let mut m = CertManager::new(client(&fake, addr, None).with_root_file(&file));
    let published = ArcSwap::from_pointee(m.empty_store().unwrap());
    let s = snapshot();
    let (old, new) = (fake.ca.root().clone(), fake.other.root().clone());
    let roots = |p: &ArcSwap<CertStore>| p.load().root_certs().to_vec();
    let t0 = SystemTime::now();
    assert!(m.sync(&published, &s, "n", t0).await.published);
    assert_eq!(roots(&published), std::slice::from_ref(&old));

    // The CA signs under the new root and sends both: renewed, and both trusted.
    *fake.mode.lock().unwrap() = Mode::Rotating;
    let t1 = t0 + Duration::from_secs(13 * 3600);
    let synced = m.sync(&published, &s, "n", t1).await;
    assert!(synced.failed.is_empty(), "{:?}", synced.failed);
    m.sync(&published, &s, "n", t1).await;
    assert_eq!(roots(&published), [old.clone(), new.clone()]);
    assert_eq!(published.load().len(), 2, "the certificates stay");

    // The CA stops sending the old root; CA_ROOT_CA still lists it, so it stays trusted.
    *fake.mode.lock().unwrap() = Mode::Rotated;
    // (The fake signs at the real time, so at t1 the new certificates are due again.)
    let t2 = t1;
    m.sync(&published, &s, "n", t2).await;
    m.sync(&published, &s, "n", t2).await;
    assert_eq!(roots(&published), [old.clone(), new.clone()]);

    // The file moves to the new root too: the old one is gone.
    let generation = published.load().generation();
    std::fs::write(&file, pem_certificate(&new)).unwrap();
    assert!(m.sync(&published, &s, "n", t2).await.published);
    assert_eq!(roots(&published), std::slice::from_ref(&new));
    assert!(published.load().generation() > generation);

    // A certificate under a root nobody sent is still refused.
    *fake.mode.lock().unwrap() = Mode::OtherCa;
    let ca = client(&fake, addr, None);
    assert!(ca.issue(&alice(), SystemTime::now()).await.is_err());
}

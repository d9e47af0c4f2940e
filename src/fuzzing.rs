//! Entry points for the cargo-fuzz targets in `fuzz/` and for the seed-corpus test
//! (`tests/fuzz_corpus.rs`), which runs every committed corpus file through the same
//! functions: the two cannot drift, and CI exercises the corpora without cargo-fuzz.
//!
//! One function per parser that faces the network or the control plane (and one for the
//! HBONE server's HTTP/2 loop as a whole). Each takes raw bytes,
//! must never panic, and checks properties beyond "did not crash" (round trips, the invariants
//! the parsers' module docs promise), so the fuzzer can find wrong answers as well as crashes.
//! No IO (`hbone_server` runs its own monoio runtime over an in-memory connection); runs on
//! the caller's thread. Not part of zring's API.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderValue, Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::hbone::headers::{self, Baggage, TraceParent};
use crate::hbone::server::{self, connect_target};
use crate::identity::{Identity, identity_from_cert};
use crate::state::{Authorization, SnapshotBuilder};
use crate::xds::convert::AddressEntry;
use crate::xds::local;
use crate::xds::proto::discovery::DeltaDiscoveryResponse;
use crate::xds::proto::{security, workload};
use crate::xds::resources::{Kind, ResourceSet};

/// A target's entry function: panics when it finds a bug.
pub type Entry = fn(&[u8]);

/// Every target: its name (the file `fuzz/fuzz_targets/<name>.rs` and the corpus directory
/// `fuzz/corpus/<name>/`) and its entry function.
pub const TARGETS: &[(&str, Entry)] = &[
    ("connect_authority", connect_authority),
    ("hbone_headers", hbone_headers),
    ("spiffe_identity", spiffe_identity),
    ("certificate_san", certificate_san),
    ("xds_protobuf", xds_protobuf),
    ("xds_response", xds_response),
    ("local_yaml", local_yaml),
    ("hbone_server", hbone_server),
    ("dns_message", dns_message),
];

/// A DNS message as a client's query and as an upstream's answer (`dns::fuzz`).
pub fn dns_message(data: &[u8]) {
    crate::dns::fuzz::message(data);
}

/// Longest error message a parser may produce: messages are logged, and a hostile input must
/// not turn into a hostile log line (values are quoted as `state::excerpt`s).
pub const MAX_ERROR_MESSAGE: usize = 2048;

/// The CONNECT `:authority` as zring's own parser sees it, and as h2 hands it over (through
/// `http::Uri`) to `connect_target`.
pub fn connect_authority(data: &[u8]) {
    if let Ok(addr) = headers::parse_authority(data) {
        assert_ne!(addr.port(), 0, "accepted port 0");
        if let SocketAddr::V6(v6) = addr {
            assert_eq!((v6.scope_id(), v6.flowinfo()), (0, 0), "accepted a scope");
        }
        let text = addr.to_string();
        assert_eq!(headers::parse_authority(text.as_bytes()), Ok(addr));
    }
    let Ok(uri) = Uri::try_from(data) else {
        return;
    };
    let request = |method: Method| {
        Request::builder()
            .method(method)
            .uri(uri.clone())
            .body(())
            .ok()
    };
    if let Some(req) = request(Method::CONNECT)
        && let Ok(target) = connect_target(&req)
    {
        let authority = req.uri().authority().expect("a target has an authority");
        assert_eq!(
            headers::parse_authority(authority.as_str().as_bytes()),
            Ok(target)
        );
    }
    if let Some(req) = request(Method::GET) {
        assert!(connect_target(&req).is_err(), "a GET has a CONNECT target");
    }
}

/// `baggage`, `forwarded` and `traceparent`, each parsed from the same bytes: whatever one of
/// them accepts must format back into a valid header that parses to the same value.
pub fn hbone_headers(data: &[u8]) {
    if let Ok(t) = TraceParent::parse(data) {
        // The parser accepts exactly one spelling per value.
        assert_eq!(t.header().as_bytes(), data);
    }
    if let Ok(ip) = headers::parse_forwarded(data) {
        let again = headers::forwarded(SocketAddr::new(ip, 1));
        assert_eq!(headers::parse_forwarded(again.as_bytes()), Ok(ip));
    }
    if let Ok(b) = Baggage::parse(data) {
        let header = b.header();
        assert!(
            HeaderValue::try_from(header.as_str()).is_ok(),
            "baggage formats into an invalid header value: {header:?}"
        );
        assert!(header.len() <= data.len(), "formatting grew the baggage");
        let again = Baggage::parse(header.as_bytes()).expect("our own baggage parses");
        assert_eq!(again, normalized(b), "{header:?}");
    }
}

/// What a parsed baggage looks like after a round trip: empty values are not written, and a
/// workload kind travels only with a workload name.
fn normalized(b: Baggage) -> Baggage {
    let keep = |v: Option<String>| v.filter(|v| !v.is_empty());
    let workload_name = keep(b.workload_name);
    Baggage {
        cluster: keep(b.cluster),
        namespace: keep(b.namespace),
        workload_type: workload_name.as_ref().and(keep(b.workload_type)),
        workload_name,
        service_name: keep(b.service_name),
        service_version: keep(b.service_version),
    }
}

/// `Identity::parse`: an accepted identity is exactly its text, and its parts rebuild it.
pub fn spiffe_identity(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = Identity::parse(text) else {
        return;
    };
    assert_eq!(id.as_str(), text);
    assert_eq!(Some(id.principal()), text.strip_prefix("spiffe://"));
    let rebuilt = Identity::new(id.trust_domain(), id.namespace(), id.service_account())
        .expect("the parts of an identity make an identity");
    assert_eq!(rebuilt, id);
}

/// The identity of a peer certificate (its first `spiffe://` URI SAN), from DER bytes.
pub fn certificate_san(data: &[u8]) {
    let cert = rustls::pki_types::CertificateDer::from(data);
    if let Ok(id) = identity_from_cert(&cert) {
        // A URI SAN is an IA5String: its bytes appear in the DER as they are.
        let needle = id.as_str().as_bytes();
        assert!(
            data.windows(needle.len()).any(|w| w == needle),
            "{id} is not in the certificate"
        );
    }
}

/// One xDS resource payload, decoded both as an `istio.workload.Address` and as an
/// `istio.security.Authorization` and converted: a converted object has passed every
/// per-object rule, so it must build into a snapshot on its own.
pub fn xds_protobuf(data: &[u8]) {
    if let Ok(msg) = workload::Address::decode(data)
        && let Ok(entry) = AddressEntry::try_from(msg)
    {
        let mut b = SnapshotBuilder::new();
        match entry {
            AddressEntry::Workload(w) => b.add_prepared_workload(w),
            AddressEntry::Service(s) => b.add_service(s),
        };
        if let Err(e) = b.build() {
            panic!("a converted address does not build alone: {e}");
        }
    }
    if let Ok(msg) = security::Authorization::decode(data)
        && let Ok(policy) = Authorization::try_from(msg)
    {
        let mut b = SnapshotBuilder::new();
        b.add_policy(policy);
        if let Err(e) = b.build() {
            panic!("a converted policy does not build alone: {e}");
        }
    }
}

/// A whole Delta ADS response applied to the resource map: every resource is either applied
/// or rejected with a bounded reason, the map still builds (the invariant
/// `xds::resources` promises), and removing every name empties it.
pub fn xds_response(data: &[u8]) {
    let Ok(response) = DeltaDiscoveryResponse::decode(data) else {
        return;
    };
    let kind = Kind::from_type_url(&response.type_url).unwrap_or(Kind::Address);
    let mut set = ResourceSet::new();
    let offered = response.resources.len();
    let applied = set.apply(kind, response.resources, response.removed_resources);
    assert_eq!(
        applied.updated + applied.rejected.len(),
        offered,
        "a resource was neither applied nor rejected"
    );
    for r in &applied.rejected {
        let message = r.error.to_string();
        assert!(
            message.len() <= MAX_ERROR_MESSAGE,
            "{}-byte rejection reason",
            message.len()
        );
    }
    if let Err(e) = set.build() {
        panic!("the resource map no longer builds: {e}");
    }
    assert_eq!(set.len(kind), applied.updated);
    let names: Vec<String> = set.versions(kind).into_keys().collect();
    let removed = set.apply(kind, Vec::new(), names);
    assert!(removed.rejected.is_empty());
    assert_eq!(set.len(kind), 0);
    if let Err(e) = set.build() {
        panic!("the emptied resource map does not build: {e}");
    }
}

/// ztunnel's local config YAML: any bytes give a snapshot or an error with a bounded message.
pub fn local_yaml(data: &[u8]) {
    if let Err(e) = local::parse_bytes(data) {
        let message = e.to_string();
        assert!(
            message.len() <= MAX_ERROR_MESSAGE,
            "{}-byte error message",
            message.len()
        );
    }
}

/// The HTTP/2 client preface; `hbone_server` puts it in front of every input, so the fuzzer
/// spends its time on frames.
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The bytes a client sends to 15008 after TLS, served by the HBONE server's HTTP/2 loop
/// with zring's settings and abuse limits; each request is checked as the inbound path does
/// (`connect_target`) and answered 200 or 400. Must end (the input ends with EOF) without a
/// panic: a panic in h2 or in the loop would take down a core.
pub fn hbone_server(data: &[u8]) {
    serve_script(data);
}

/// [`hbone_server`]'s work; returns how many requests reached the handler, so tests can tell
/// that seeds get past h2's checks.
pub fn serve_script(data: &[u8]) -> usize {
    thread_local! {
        static RUNTIME: RefCell<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> =
            RefCell::new(
                monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
                    .expect("a monoio runtime"),
            );
    }
    let mut input = H2_PREFACE.to_vec();
    input.extend_from_slice(data);
    let io = Script {
        input,
        at: 0,
        stalls: 0,
    };
    let peer = SocketAddr::from(([10, 244, 1, 8], 40000));
    RUNTIME.with(|rt| {
        rt.borrow_mut().block_on(async move {
            let mut requests = 0;
            let _ = server::serve(io, peer, std::future::pending(), |request, respond| {
                requests += 1;
                match connect_target(&request) {
                    Ok(_) => drop(server::respond_ok(respond)),
                    Err(_) => server::refuse(respond, StatusCode::BAD_REQUEST),
                }
            })
            .await;
            requests
        })
    })
}

/// An in-memory connection: reads return the script, then "nothing yet" a few hundred times,
/// then EOF; writes vanish. The stalls matter: h2 drops requests still queued when it reads
/// EOF, and hands one out per `accept` only after a read has come back empty-handed.
struct Script {
    input: Vec<u8>,
    at: usize,
    stalls: usize,
}

/// More than the 200 streams a connection may have open, so every queued request gets out.
const STALLS: usize = 256;

impl AsyncRead for Script {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let rest = &self.input[self.at..];
        if rest.is_empty() && self.stalls < STALLS {
            self.stalls += 1;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Script {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

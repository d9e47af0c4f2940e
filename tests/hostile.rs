//! Hostile input against real zring processes in network namespaces: malformed HTTP/2 and
//! CONNECT requests, header and CONTINUATION floods, reset floods, data before the answer,
//! client certificates zring must not trust, captured calls to zring's own ports, and garbage
//! local config.
//!
//! Each attack checks three things: zring refused it in a way the client can see (a status,
//! RST_STREAM, GOAWAY or TLS alert), zring said so in its log (the refusal counters are
//! another issue's work: the log lines are what those counters will count), and nothing else
//! was hurt: zring is still running, never panicked, and a tunnel opened before the attack
//! (appa → appb through both nodes' zring) still carries bytes afterwards.
//!
//! The HTTP/2 attacks come from node a's namespace straight to appb's 15008 on node b (node
//! traffic is not captured), over mutual TLS with a certificate from the mesh's CA, written
//! frame by frame by `h2raw`. Needs root (namespaces, nftables, IP_TRANSPARENT): without it
//! `Lab::seed` fails the test.

#[path = "hostile/h2raw.rs"]
mod h2raw;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::SingleCertAndKey;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use zring::crypto::crypto_provider;
use zring::identity::{DevCa, Identity, ROOT_CERT_FILE, ROOT_KEY_FILE};
use zring::lab::{Lab, Mesh};

use h2raw::{Answer, Conn, Frame};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPA: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 8);
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const APPA_ID: &str = "spiffe://cluster.local/ns/default/sa/appa";
/// appb's echo port: every connection gets its bytes back.
const ECHO: u16 = 7000;
const MIB: u64 = 1 << 20;

fn config() -> String {
    format!(
        r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadIps: ["{APPA}"]
  protocol: HBONE
  node: a
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadIps: ["{APPB}"]
  protocol: HBONE
  node: b
"#
    )
}

/// The two-node mesh with an echo server on appb, and a bystander tunnel already open.
struct Hostile {
    m: Mesh,
    bystander: TcpStream,
    /// Connections appb's echo port has accepted.
    echoed: Arc<AtomicUsize>,
}

fn hostile(env: &[(&str, &str)]) -> Hostile {
    let lab = Lab::seed().expect("lab (needs root, ip, nft)");
    let m = Mesh::start(lab, Path::new(ZRING), &config(), &["a", "b"], env).unwrap();
    let echoed = Arc::new(AtomicUsize::new(0));
    let listener = m
        .lab
        .pod("appb")
        .run(|| TcpListener::bind(("0.0.0.0", ECHO)))
        .unwrap();
    let count = echoed.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || echo(s));
        }
    });
    let bystander = m
        .lab
        .pod("appa")
        .run(|| TcpStream::connect_timeout(&(APPB, ECHO).into(), Duration::from_secs(10)))
        .unwrap();
    bystander
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut h = Hostile {
        m,
        bystander,
        echoed,
    };
    h.unharmed("before the attack");
    h
}

fn echo(mut s: TcpStream) {
    let mut buf = [0u8; 16 << 10];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

impl Hostile {
    /// zring runs on both nodes, never panicked, and the bystander tunnel still echoes.
    fn unharmed(&mut self, when: &str) {
        for node in ["a", "b"] {
            assert!(
                self.m.zring(node).try_status().unwrap().is_none(),
                "zring on {node} exited {when}\n{}",
                self.m.logs()
            );
            assert!(
                !self.m.log(node).contains("panicked"),
                "zring on {node} panicked {when}\n{}",
                self.m.logs()
            );
        }
        let msg: Vec<u8> = (0..4096u32).map(|i| (i * 7) as u8).collect();
        let mut back = vec![0u8; msg.len()];
        let r = self
            .bystander
            .write_all(&msg)
            .and_then(|()| self.bystander.read_exact(&mut back));
        assert!(
            r.is_ok() && back == msg,
            "the bystander tunnel broke {when}: {r:?}\n{}",
            self.m.logs()
        );
    }

    /// A raw HTTP/2 connection to appb's 15008 from node a, presenting `config`'s certificate.
    fn dial(&self, config: Arc<ClientConfig>) -> Conn {
        let tcp = self
            .m
            .lab
            .node("a")
            .run(|| TcpStream::connect_timeout(&(APPB, 15008).into(), Duration::from_secs(10)))
            .unwrap();
        Conn::open(tcp, config).unwrap()
    }

    /// A raw HTTP/2 connection as appa, with a certificate from the mesh's CA.
    fn dial_as_appa(&self) -> Conn {
        let ca = DevCa::load_or_create(&self.m.ca_dir).unwrap();
        let cert = ca.issue(&Identity::parse(APPA_ID).unwrap()).unwrap();
        let mut conn = self.dial(tls(|b| {
            b.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
                cert.certified_key().clone(),
            )))
        }));
        conn.sync().expect("HTTP/2 handshake with zring");
        conn
    }

    /// CONNECT requests zring on node b has read (the bystander's is the first).
    fn connects(&self) -> usize {
        self.m.log("b").matches("got CONNECT request").count()
    }

    /// Waits until zring on `node` has logged `needle` `n` times; fails with every log.
    fn logged(&self, node: &str, needle: &str, n: usize) {
        self.m
            .eventually_logged(node, needle, n)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.m.logs()));
    }
}

/// A TLS 1.3 client config for HBONE (ALPN h2, no SNI) that accepts any server: these tests
/// attack the server, so who it is does not matter.
fn tls(
    auth: impl FnOnce(
        rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>,
    ) -> ClientConfig,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
    let mut config = auth(builder);
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.enable_sni = false;
    Arc::new(config)
}

#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crypto_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Requests zring must refuse one stream at a time, on one connection that keeps working:
/// each gets its answer, and a good CONNECT on the same connection still tunnels.
#[test]
fn malformed_connect_requests_are_refused_per_stream() {
    let mut h = hostile(&[]);
    let mut conn = h.dial_as_appa();
    let appb_echo = format!("{APPB}:{ECHO}");
    /// What the case is, its header fields, and zring's answer.
    type Case = (&'static str, Vec<(&'static str, String)>, Answer);
    let cases: Vec<Case> = vec![
        (
            "missing :authority",
            vec![(":method", "CONNECT".into())],
            Answer::Status(400),
        ),
        (
            "port 0",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("{APPB}:0")),
            ],
            Answer::Status(400),
        ),
        (
            "port above 65535",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("{APPB}:65536")),
            ],
            Answer::Status(400),
        ),
        (
            "named port",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("{APPB}:http")),
            ],
            Answer::Status(400),
        ),
        (
            "host name",
            vec![
                (":method", "CONNECT".into()),
                (":authority", "appb.default.svc.cluster.local:7000".into()),
            ],
            Answer::Status(400),
        ),
        (
            "GET",
            vec![
                (":method", "GET".into()),
                (":scheme", "https".into()),
                (":authority", appb_echo.clone()),
                (":path", "/".into()),
            ],
            Answer::Status(400),
        ),
        (
            "POST",
            vec![
                (":method", "POST".into()),
                (":scheme", "https".into()),
                (":authority", appb_echo.clone()),
                (":path", "/upload".into()),
            ],
            Answer::Status(400),
        ),
        (
            "CONNECT with a :path",
            vec![
                (":method", "CONNECT".into()),
                (":authority", appb_echo.clone()),
                (":path", "/".into()),
            ],
            Answer::Reset(h2raw::PROTOCOL_ERROR),
        ),
        (
            "no :method",
            vec![(":authority", appb_echo.clone())],
            Answer::Reset(h2raw::PROTOCOL_ERROR),
        ),
        (
            "another pod's IP",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("10.244.2.99:{ECHO}")),
            ],
            Answer::Status(400),
        ),
        (
            // Through the tunnel to zring's own HBONE port: zring's connection is marked, so
            // it reaches the pod's own (closed) port, not zring again.
            "zring's own port",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("{APPB}:15008")),
            ],
            Answer::Status(503),
        ),
    ];
    let mut stream = 1;
    for (what, fields, want) in &cases {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        conn.write(&h2raw::headers(stream, &fields, false)).unwrap();
        let got = conn.answer(stream);
        assert_eq!(&got, want, "{what}\n{}", h.m.logs());
        stream += 2;
    }
    h.logged("b", "bad CONNECT request: method is not CONNECT", 2);
    h.logged("b", "bad CONNECT request: authority is not ip:port", 5);
    h.logged("b", "target IP is not the connection's destination", 1);
    assert!(
        !h.m.log("b").contains("HBONE TLS handshake"),
        "a CONNECT to 15008 looped back into zring\n{}",
        h.m.logs()
    );

    // Bytes before the 200 on a request that is refused: they go nowhere.
    let before = h.echoed.load(Ordering::SeqCst);
    let mut early = h2raw::connect(stream, &format!("10.244.2.99:{ECHO}"));
    early.extend(h2raw::data(stream, b"early bytes", false));
    conn.write(&early).unwrap();
    assert_eq!(conn.answer(stream), Answer::Status(400));
    stream += 2;
    // Bytes before the 200 on a request that is accepted: held back by flow control until
    // the pod is connected, then delivered once and in order.
    let mut early = h2raw::connect(stream, &appb_echo);
    early.extend(h2raw::data(stream, b"early ", false));
    early.extend(h2raw::data(stream, b"bytes", false));
    conn.write(&early).unwrap();
    assert_eq!(conn.answer(stream), Answer::Status(200));
    assert_eq!(echoed_back(&mut conn, stream, 11), b"early bytes");
    assert_eq!(
        h.echoed.load(Ordering::SeqCst),
        before + 1,
        "the refused request reached appb"
    );
    // The connection is still good for new streams.
    let good = stream + 2;
    conn.write(&h2raw::connect(good, &appb_echo)).unwrap();
    assert_eq!(conn.answer(good), Answer::Status(200));
    conn.write(&h2raw::data(good, b"still here", false))
        .unwrap();
    assert_eq!(echoed_back(&mut conn, good, 10), b"still here");
    h.unharmed("after malformed requests");
}

/// Reads DATA on `stream` until `n` bytes have come back.
fn echoed_back(conn: &mut Conn, stream: u32, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match conn.read_frame().unwrap() {
            Frame::Data {
                stream: s, payload, ..
            } if s == stream => got.extend(payload),
            Frame::Reset { stream: s, code } if s == stream => {
                panic!("stream {s} reset ({code:#x}) after {got:?}")
            }
            Frame::GoAway { code, .. } => panic!("GOAWAY {code:#x} after {got:?}"),
            _ => {}
        }
    }
    got
}

/// Header blocks above zring's 16 KiB limit, in one frame or spread over CONTINUATION
/// frames, get 431 on their stream while the connection carries on; a block far above it
/// ends the connection with GOAWAY ENHANCE_YOUR_CALM.
#[test]
fn oversized_headers_get_431() {
    let mut h = hostile(&[]);
    let mut conn = h.dial_as_appa();
    let authority = format!("{APPB}:{ECHO}");
    let big = "x".repeat(20 << 10);
    let request = [
        (":method", "CONNECT"),
        (":authority", authority.as_str()),
        ("x-pad", big.as_str()),
    ];
    conn.write(&h2raw::headers(1, &request, false)).unwrap();
    assert_eq!(conn.answer(1), Answer::Status(431), "{}", h.m.logs());

    // 25 KiB in a HEADERS frame and five CONTINUATION frames.
    let block = h2raw::block(&request);
    let chunks: Vec<&[u8]> = block.chunks(block.len().div_ceil(6)).collect();
    let mut frames = h2raw::frame(h2raw::HEADERS, 0, 3, chunks[0]);
    for (i, chunk) in chunks[1..].iter().enumerate() {
        let last = i == chunks.len() - 2;
        let flags = if last { h2raw::END_HEADERS } else { 0 };
        frames.extend(h2raw::frame(h2raw::CONTINUATION, flags, 3, chunk));
    }
    conn.write(&frames).unwrap();
    assert_eq!(conn.answer(3), Answer::Status(431), "{}", h.m.logs());

    conn.write(&h2raw::connect(5, &authority)).unwrap();
    assert_eq!(conn.answer(5), Answer::Status(200), "{}", h.m.logs());

    // 900 KiB in one frame (zring's frames may be 1 MiB) is far past the limit: h2 treats it
    // as abuse and ends the connection rather than decoding it.
    let huge = "y".repeat(900 << 10);
    let request = [
        (":method", "CONNECT"),
        (":authority", authority.as_str()),
        ("x-pad", huge.as_str()),
    ];
    conn.write(&h2raw::headers(7, &request, false)).unwrap();
    assert_eq!(
        conn.answer(7),
        Answer::GoAway {
            code: h2raw::ENHANCE_YOUR_CALM,
            debug: "header_list_way_too_large".into()
        },
        "{}",
        h.m.logs()
    );
    h.logged("b", "HBONE connection refused", 1);
    let mut again = h.dial_as_appa();
    again.write(&h2raw::connect(1, &authority)).unwrap();
    assert_eq!(again.answer(1), Answer::Status(200), "{}", h.m.logs());
    h.unharmed("after oversized headers");
}

/// A header block that never ends (CONTINUATION after CONTINUATION, no END_HEADERS) ends the
/// connection with GOAWAY ENHANCE_YOUR_CALM long before memory or CPU matter.
#[test]
fn continuation_flood_ends_the_connection() {
    let mut h = hostile(&[]);
    let mut conn = h.dial_as_appa();
    let authority = format!("{APPB}:{ECHO}");
    let mut flood = h2raw::frame(
        h2raw::HEADERS,
        0,
        1,
        &h2raw::block(&[(":method", "CONNECT"), (":authority", authority.as_str())]),
    );
    let one = h2raw::frame(h2raw::CONTINUATION, 0, 1, b"");
    for _ in 0..10_000 {
        flood.extend_from_slice(&one);
    }
    // zring may close while we still write: what it answered is what counts.
    let _ = conn.write(&flood);
    let (goaway, end) = conn.until_closed();
    assert_eq!(
        goaway.as_ref().map(|(code, _)| *code),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{goaway:?}, then {end}\n{}",
        h.m.logs()
    );
    h.logged("b", "HBONE connection refused", 1);
    assert_eq!(h.connects(), 1, "only the bystander's\n{}", h.m.logs());
    h.m.eventually("the refusal to be counted", || {
        h.m.scrape("b").sum(
            "zring_hbone_connections_refused_total",
            &[("reason", "http2")],
        ) >= 1.0
    })
    .unwrap();
    h.unharmed("after a CONTINUATION flood");
}

/// Streams opened and reset at once, 1000 in one burst (the "rapid reset" attack): zring ends
/// the connection with GOAWAY ENHANCE_YOUR_CALM instead of working through them.
#[test]
fn reset_flood_ends_the_connection() {
    let mut h = hostile(&[]);
    let mut conn = h.dial_as_appa();
    let authority = format!("{APPB}:{ECHO}");
    let before = h.echoed.load(Ordering::SeqCst);
    let mut flood = Vec::new();
    for i in 0..1000u32 {
        let stream = 1 + 2 * i;
        flood.extend(h2raw::connect(stream, &authority));
        flood.extend(h2raw::rst_stream(stream, h2raw::CANCEL));
    }
    let _ = conn.write(&flood);
    let (goaway, end) = conn.until_closed();
    assert_eq!(
        goaway.as_ref().map(|(code, _)| *code),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{goaway:?}, then {end}\n{}",
        h.m.logs()
    );
    h.logged("b", "HBONE connection refused", 1);
    let reached = h.echoed.load(Ordering::SeqCst) - before;
    assert!(
        reached <= 100,
        "{reached} of 1000 reset streams reached appb\n{}",
        h.m.logs()
    );
    h.unharmed("after a reset flood");
}

/// Streams reset one by one after zring accepted them, while zring's connect to the pod is
/// stuck (the pod's accept queue is full, so its SYNs go unanswered): each reset must cancel
/// that connect. Otherwise every reset stream would leave a socket pending until the connect
/// timeout, without bound, since a reset stream no longer counts against the 200-stream
/// limit. 300 streams, then zring's open descriptors must be back near where they started.
#[test]
fn reset_streams_cancel_their_pending_connects() {
    const STUCK: u16 = 7001;
    // Long enough that nothing times out on its own during the test.
    let mut h = hostile(&[("ZRING_CONNECT_TIMEOUT_MS", "120000")]);
    let pod = h.m.lab.pod("appb");
    let _queue_full = pod.run(|| {
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.set_reuse_address(true).unwrap();
        l.bind(&SocketAddr::from((APPB, STUCK)).into()).unwrap();
        l.listen(0).unwrap();
        // Fill the accept queue from inside the pod (not captured), until a connect stalls.
        let mut fillers = Vec::new();
        loop {
            match TcpStream::connect_timeout(&(APPB, STUCK).into(), Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
            assert!(fillers.len() < 16, "the accept queue never fills");
        }
        (l, fillers)
    });
    let fds = |h: &Hostile| {
        std::fs::read_dir(format!("/proc/{}/fd", h.m.zring("b").pid()))
            .unwrap()
            .count()
    };
    let mut conn = h.dial_as_appa();
    let baseline = fds(&h);
    let authority = format!("{APPB}:{STUCK}");
    for i in 0..300u32 {
        let stream = 1 + 2 * i;
        // Wait until zring has read the request (and accepted the stream) before resetting.
        let r = conn
            .write(&h2raw::connect(stream, &authority))
            .and_then(|()| conn.sync())
            .and_then(|_| conn.write(&h2raw::rst_stream(stream, h2raw::CANCEL)));
        if let Err(e) = r {
            panic!("stream {stream}: {e}\n{}", h.m.logs());
        }
    }
    conn.sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = fds(&h);
    while now > baseline + 20 {
        assert!(
            Instant::now() < deadline,
            "zring on b holds {now} descriptors, {baseline} before 300 reset streams\n{}",
            h.m.logs()
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "a test thread polling a condition"
        )]
        std::thread::sleep(Duration::from_millis(20));
        now = fds(&h);
    }
    // The connection itself is fine: a CONNECT to the echo port still works on it.
    let good = 1 + 2 * 300;
    conn.write(&h2raw::connect(good, &format!("{APPB}:{ECHO}")))
        .unwrap();
    assert_eq!(conn.answer(good), Answer::Status(200), "{}", h.m.logs());
    h.unharmed("after reset streams");
}

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

/// Captured connections from a pod to zring's own ports (at another node's pod, and at its own
/// node's address) are refused with a reset and logged; the pods' own traffic goes on.
#[test]
fn own_ports_through_capture_are_refused() {
    let mut h = hostile(&[]);
    let node_a = h.m.lab.node("a").underlay_ip();
    let mut refused = 0;
    for ip in [APPB, node_a] {
        for port in zring::config::OWN_PORTS {
            let r = h.m.exchange("appa", (ip, port).into(), 1024, 1024);
            assert!(r.is_err(), "appa reached {ip}:{port}: {r:?}");
            refused += 1;
            h.logged("a", "one of zring's own ports", refused);
        }
    }
    h.m.serve("appb", 80, 1).unwrap();
    h.m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    h.unharmed("after calls to zring's own ports");
}

/// Garbage written over the local config while zring runs: binary noise, YAML that is not a
/// config, an alias bomb, nesting deeper than the parser allows, a 4 MiB scalar. Each is
/// refused once in the log, the last good snapshot keeps serving, zring keeps running.
#[test]
fn garbage_local_config_keeps_the_last_good_snapshot() {
    let mut h = hostile(&[]);
    let mut bomb = String::from(
        "workloads:\n- &a0 {uid: u, name: n, namespace: d, authorizationPolicies: [p, p, p, p, p, p, p, p]}\n",
    );
    for i in 1..=9 {
        bomb.push_str(&format!(
            "- &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("binary noise", noise),
        ("a YAML list", b"- just\n- a\n- list\n".to_vec()),
        ("an alias bomb", bomb.into_bytes()),
        (
            "deep nesting",
            format!("workloads: {}", "[".repeat(100_000)).into_bytes(),
        ),
        (
            "a 4 MiB scalar",
            format!("workloads:\n- uid: {}\n", "u".repeat(4 << 20)).into_bytes(),
        ),
    ];
    for (i, (what, bytes)) in garbage.iter().enumerate() {
        let started = Instant::now();
        std::fs::write(&h.m.config, bytes).unwrap();
        for node in ["a", "b"] {
            h.m.eventually_logged(node, "keeping the last good snapshot", i + 1)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} took {:?} to refuse",
            started.elapsed()
        );
        h.unharmed(&format!("after {what}"));
    }
    let longest = h.m.log("a").lines().map(str::len).max().unwrap_or_default();
    assert!(longest < 4096, "a {longest}-byte log line");
    h.m.serve("appb", 80, 1).unwrap();
    h.m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
}

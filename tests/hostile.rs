//! Hostile input against real zring processes in network namespaces: malformed HTTP/2 and
//! CONNECT requests, header and CONTINUATION floods, reset floods, data before the answer,
//! client certificates zring must not trust, captured calls to zring's own ports, and garbage
//! local config.
//!
//! Each attack checks three things: zring refused it in a way the client can see (a status,
//! RST_STREAM, GOAWAY or TLS alert), zring said so in its log (and, after the CONTINUATION
//! flood, in the `zring_hbone_connections_refused_total` counter with reason `http2`), and
//! nothing else was hurt: zring is still running, never panicked, and a tunnel opened before
//! the attack (appa → appb through both nodes' zring) still carries bytes afterwards.
//!
//! The HTTP/2 attacks come from node a's namespace straight to appb's 15008 on node b (node
//! traffic is not captured), over mutual TLS with a certificate from the mesh's CA, written
//! frame by frame by `h2raw`. Needs root (namespaces, nftables, IP_TRANSPARENT): without it
//! `Lab::seed` fails the test.
//!
//! This file holds the mesh every attack starts from ([`Hostile`]) and the TLS client setup;
//! the attacks are in `hostile/`, one file per kind:
//!
//! - `requests`: malformed CONNECTs, data before the answer, oversized headers (per stream);
//! - `floods`: CONTINUATION flood, rapid reset, resets that cancel pending connects;
//! - `certificates`: untrusted and malformed client certificates;
//! - `capture`: captured calls to zring's own ports;
//! - `local_config`: garbage local config;
//! - `limits`: 15008's deadlines, caps and receive budget (`attack`: hostile clients in bulk).

#[path = "hostile/h2raw.rs"]
mod h2raw;

#[path = "hostile/attack.rs"]
mod attack;
#[path = "hostile/capture.rs"]
mod capture;
#[path = "hostile/certificates.rs"]
mod certificates;
#[path = "hostile/floods.rs"]
mod floods;
#[path = "hostile/limits.rs"]
mod limits;
#[path = "hostile/local_config.rs"]
mod local_config;
#[path = "hostile/requests.rs"]
mod requests;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::SingleCertAndKey;
use zring::identity::{DevCa, Identity, ROOT_CERT_FILE, ROOT_KEY_FILE};
use zring::lab::{Lab, Mesh};

use attack::tls;
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
  services: {{}}
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  serviceAccount: appb
  workloadIps: ["{APPB}"]
  protocol: HBONE
  node: b
  services: {{}}
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

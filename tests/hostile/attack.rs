//! Hostile HBONE clients by the thousand, for the 15008 limit tests and `benches/hostile.rs`:
//! clients with a valid mesh certificate that finish TLS and then never send the HTTP/2
//! preface, clients that speak HTTP/2 (and answer pings) but open no stream, and clients that
//! open a CONNECT stream to a destination that never reads and push as much as flow control
//! lets them.
//!
//! One thread runs a tokio current-thread runtime inside the attacking namespace; every
//! attacker is a task on it, so thousands cost no thread each. The runtime and its
//! connections end when [`Attackers`] is dropped.

#![allow(
    dead_code,
    reason = "shared with benches/hostile.rs, which uses what the tests do not"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::SingleCertAndKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use zring::crypto::crypto_provider;
use zring::identity::{DevCa, Identity};
use zring::lab::Netns;

/// What an attacker does once connected.
#[derive(Debug, Clone)]
pub enum Kind {
    /// TLS, then silence.
    NoPreface,
    /// TLS and HTTP/2 (pings answered), no stream.
    NoStreams,
    /// One CONNECT to `authority`, then DATA as fast as the windows allow.
    Stalled { authority: String },
}

/// Counts over every attacker, read by the test.
#[derive(Debug, Default)]
pub struct Stats {
    /// Finished the TLS handshake.
    pub tls: AtomicU64,
    /// Finished the HTTP/2 handshake (`NoStreams`, `Stalled`).
    pub h2: AtomicU64,
    /// `Stalled`: got 200 for its CONNECT.
    pub streams: AtomicU64,
    /// `Stalled`: DATA bytes handed to h2 (flow control let them out).
    pub pushed: AtomicU64,
    /// Ended by the server (closed, reset, GOAWAY) or refused.
    pub ended: AtomicU64,
    /// The attackers' thread (Linux thread id), for its CPU time.
    pub tid: AtomicU64,
}

pub struct Attackers {
    tx: Option<mpsc::UnboundedSender<(Kind, SocketAddr)>>,
    pub stats: Arc<Stats>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Attackers {
    /// A runtime in `ns` whose attackers present `config`'s certificate.
    pub fn start(ns: &Netns, config: Arc<ClientConfig>) -> Attackers {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Kind, SocketAddr)>();
        let stats = Arc::new(Stats::default());
        let s = stats.clone();
        let thread = ns.spawn(move || {
            s.tid.store(thread_id(), Ordering::SeqCst);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                while let Some((kind, to)) = rx.recv().await {
                    let (config, stats) = (config.clone(), s.clone());
                    tokio::spawn(async move {
                        let _ = attack(kind, to, config, &stats).await;
                        stats.ended.fetch_add(1, Ordering::SeqCst);
                    });
                }
            });
            // Dropping the runtime drops every attacker's connection.
        });
        Attackers {
            tx: Some(tx),
            stats,
            thread: Some(thread),
        }
    }

    /// Starts `n` attackers of `kind` against `to`.
    pub fn add(&self, kind: &Kind, to: SocketAddr, n: usize) {
        for _ in 0..n {
            let _ = self.tx.as_ref().unwrap().send((kind.clone(), to));
        }
    }

    pub fn get(&self, f: impl Fn(&Stats) -> &AtomicU64) -> u64 {
        f(&self.stats).load(Ordering::SeqCst)
    }

    /// CPU seconds (user + system) the attackers' thread has used: every attacker's TLS and
    /// HTTP/2 runs on it.
    pub fn cpu_secs(&self) -> f64 {
        let tid = loop {
            match self.get(|s| &s.tid) {
                0 => std::thread::yield_now(),
                tid => break tid,
            }
        };
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        cpu_ticks(&stat) / 100.0
    }

    /// Waits until the stalled streams have pushed nothing for `quiet` (their windows and the
    /// kernel's buffers behind them are full), sampling the counter; returns how long that
    /// took, or `None` if they were still moving after `limit`.
    pub fn until_still(&self, quiet: Duration, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let (mut last, mut since) = (self.get(|s| &s.pushed), Instant::now());
        while start.elapsed() < limit {
            #[expect(clippy::disallowed_methods, reason = "sampling a counter")]
            std::thread::sleep(quiet / 10);
            let now = self.get(|s| &s.pushed);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= quiet {
                return Some(start.elapsed() - quiet);
            }
        }
        None
    }
}

/// The calling thread's Linux thread id.
fn thread_id() -> u64 {
    // "<pid>/task/<tid>"
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// User + system clock ticks in a `/proc/…/stat` line.
pub fn cpu_ticks(stat: &str) -> f64 {
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()
}

impl Drop for Attackers {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn attack(
    kind: Kind,
    to: SocketAddr,
    config: Arc<ClientConfig>,
    stats: &Stats,
) -> Result<(), Box<dyn std::error::Error>> {
    let tcp = tokio::net::TcpStream::connect(to).await?;
    let name = ServerName::try_from("hbone.invalid")?;
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    stats.tls.fetch_add(1, Ordering::SeqCst);
    if let Kind::NoPreface = kind {
        // Hold it until the server closes it.
        let mut buf = [0u8; 1024];
        while tls.read(&mut buf).await? > 0 {}
        return Ok(());
    }
    let (send, conn) = h2::client::Builder::new()
        .handshake::<_, Bytes>(tls)
        .await?;
    stats.h2.fetch_add(1, Ordering::SeqCst);
    let Kind::Stalled { authority } = kind else {
        // Drive the connection (pings answered) with no stream, until the server closes it.
        conn.await?;
        return Ok(());
    };
    let driver = tokio::spawn(conn);
    let mut send = send.ready().await?;
    let request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(authority.as_str())
        .body(())?;
    let (response, mut stream) = send.send_request(request, false)?;
    let response = response.await?;
    if response.status() != http::StatusCode::OK {
        return Err(format!("CONNECT answered {}", response.status()).into());
    }
    stats.streams.fetch_add(1, Ordering::SeqCst);
    let chunk = Bytes::from(vec![0x5a; 64 << 10]);
    loop {
        stream.reserve_capacity(chunk.len());
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(e.into()),
            None => break,
        };
        stream.send_data(chunk.slice(..granted.min(chunk.len())), false)?;
        stats.pushed.fetch_add(granted as u64, Ordering::SeqCst);
    }
    driver.await??;
    Ok(())
}

/// A TLS 1.3 HBONE client config (ALPN h2, no SNI) presenting a certificate for `id` from the
/// mesh's development CA in `ca_dir`, accepting any server: these clients attack it.
pub fn client_config(ca_dir: &std::path::Path, id: &str) -> Arc<ClientConfig> {
    let ca = DevCa::load_or_create(ca_dir).unwrap();
    let cert = ca.issue(&Identity::parse(id).unwrap()).unwrap();
    tls(|b| {
        b.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(
            cert.certified_key().clone(),
        )))
    })
}

/// A TLS 1.3 client config for HBONE (ALPN h2, no SNI) that accepts any server: these tests
/// attack the server, so who it is does not matter.
pub fn tls(
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

//! `cargo bench --bench tls_adapter`: HBONE's transport (mTLS + HTTP/2 CONNECT with zring's
//! settings) over the two ways a monoio program can give h2 a TLS stream, measured in one run:
//!
//! - `zring`: what zring ships (`hbone::tls`): tokio-rustls over `hbone::socket` (on io_uring
//!   readiness waits on the ring and non-blocking system calls; on epoll monoio's poll-IO
//!   bridge), with read-ahead under rustls and records batched until h2 flushes.
//! - `tokio-rustls`: the socket leaves completion mode (`TcpStream::try_into_poll_io`) and
//!   tokio-rustls wraps it, nothing else: the common way, and the baseline.
//! - `monoio-rustls`: the card's crate, TLS over monoio's owned-buffer IO, turned into tokio's
//!   traits for h2 by monoio-compat's `StreamWrapper` (boxed: h2 moves it).
//!
//! A client thread and a server thread, each with its own monoio runtime (2 cores: one each),
//! talk over loopback with the same certificates and rustls configs zring uses. Scenarios: one
//! stream sending bulk data client → server (Gb/s, and CPU seconds per GiB of both threads), and
//! 1 KiB request/response on one stream (requests/s, p50/p99). Both drivers. Ratios are to
//! tokio-rustls on the same driver. `ZRING_BENCH_SECS` sets the seconds per measurement (3).

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, Request};
use monoio::io::IntoPollIo;
use monoio::net::{TcpListener, TcpStream};
use rustls::{ClientConfig, ServerConfig};
use zring::hbone::client::H2Client;
use zring::hbone::{server, tls};
use zring::identity::{self, CertStore, DevCa, Identity};
use zring::net::Driver;

/// zring's own allocator, so that allocations per read cost what they cost in zring.
#[global_allocator]
static GLOBAL: zring::sys::alloc::Counting = zring::sys::alloc::Counting::new();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adapter {
    Zring,
    TokioRustls,
    MonoioRustls,
}

impl Adapter {
    fn name(self) -> &'static str {
        match self {
            Adapter::Zring => "zring",
            Adapter::TokioRustls => "tokio-rustls",
            Adapter::MonoioRustls => "monoio-rustls",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    /// Streams whose end never arrived (the peer stalled); each gave up after `STALL`.
    stalls: u32,
    gbps: f64,
    cpu_s_per_gib: f64,
    rr_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

const CHUNK: usize = 64 * 1024;
/// How long the client waits for the server to end a stream before calling it stalled.
const STALL: Duration = Duration::from_secs(5);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs: u64 = std::env::var("ZRING_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dur = Duration::from_secs(secs);
    let ca = DevCa::generate().unwrap();
    let client_id = Identity::parse("spiffe://cluster.local/ns/default/sa/appa").unwrap();
    let server_id = Identity::parse("spiffe://cluster.local/ns/default/sa/appb").unwrap();
    let store = CertStore::new(vec![ca.root().clone()])
        .unwrap()
        .with_certs([ca.issue(&client_id).unwrap(), ca.issue(&server_id).unwrap()]);
    let client_cfg =
        identity::client_config(&store, &client_id, std::slice::from_ref(&server_id)).unwrap();
    let server_cfg = identity::server_config(&store, &server_id).unwrap();

    println!(
        "\nHBONE transport by TLS adapter, {secs} s per measurement, loopback, client and server on their own cores\n"
    );
    println!(
        "{:<14} {:<7} {:>16} {:>18} {:>20} {:>16} {:>16} {:>7}",
        "adapter",
        "driver",
        "stream Gb/s",
        "CPU s/GiB",
        "1KiB req/resp/s",
        "p50 µs",
        "p99 µs",
        "stalls"
    );
    for driver in [Driver::Uring, Driver::Legacy] {
        let mut base = None;
        for adapter in [Adapter::TokioRustls, Adapter::Zring, Adapter::MonoioRustls] {
            let f = run(adapter, driver, dur, &client_cfg, &server_cfg);
            let b = *base.get_or_insert(f);
            println!(
                "{:<14} {:<7} {:>8.2} ({:>4.2}×) {:>9.3} ({:>4.2}×) {:>10.0} ({:>4.2}×) {:>7.0} ({:>4.2}×) {:>7.0} ({:>4.2}×) {:>7}",
                adapter.name(),
                match driver {
                    Driver::Uring => "uring",
                    Driver::Legacy => "epoll",
                },
                f.gbps,
                f.gbps / b.gbps,
                f.cpu_s_per_gib,
                f.cpu_s_per_gib / b.cpu_s_per_gib,
                f.rr_per_sec,
                f.rr_per_sec / b.rr_per_sec,
                f.p50_us,
                f.p50_us / b.p50_us,
                f.p99_us,
                f.p99_us / b.p99_us,
                f.stalls,
            );
        }
    }
}

/// Runs `f` to completion on a new thread with its own runtime of `driver`.
fn on_runtime<F, T>(
    driver: Driver,
    f: impl FnOnce() -> F + Send + 'static,
) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || match driver {
        Driver::Uring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f()),
        Driver::Legacy => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f()),
    })
}

fn run(
    adapter: Adapter,
    driver: Driver,
    dur: Duration,
    client_cfg: &Arc<ClientConfig>,
    server_cfg: &Arc<ServerConfig>,
) -> Figures {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let server_cfg = server_cfg.clone();
    // A stalled stream must not hang the bench: the server gives up well after the client.
    let deadline = dur * 4 + STALL * 4;
    let server = on_runtime(driver, move || async move {
        monoio::time::timeout(deadline, serve(adapter, driver, listener, server_cfg))
            .await
            .unwrap_or(f64::NAN)
    });
    let client_cfg = client_cfg.clone();
    let figures = on_runtime(driver, move || {
        client(adapter, driver, addr, client_cfg, dur)
    })
    .join()
    .unwrap();
    let server_cpu = server.join().unwrap();
    Figures {
        cpu_s_per_gib: figures.cpu_s_per_gib + server_cpu,
        ..figures
    }
}

/// Serves two connections (bulk, then request/response); returns the CPU seconds per GiB the
/// server spent on the bulk one.
async fn serve(
    adapter: Adapter,
    driver: Driver,
    listener: std::net::TcpListener,
    config: Arc<ServerConfig>,
) -> f64 {
    let listener = TcpListener::from_std(listener).unwrap();
    let mut cpu_per_gib = 0.0;
    for round in 0..2 {
        let (tcp, peer) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let cpu0 = zring::sys::thread_cpu_time().unwrap();
        let bytes = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let counted = bytes.clone();
        // Set when the round's stream has ended; the round is over then, whenever the client
        // gets round to closing its connection.
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        let finished = done.clone();
        let on_stream = move |req: Request<h2::RecvStream>, respond| {
            let counted = counted.clone();
            let finished = finished.clone();
            monoio::spawn(async move {
                let mut send = server::respond_ok(respond).unwrap();
                let mut recv = req.into_body();
                // Echo everything back (request/response), or count it (bulk).
                while let Some(Ok(data)) = poll_fn(|cx| recv.poll_data(cx)).await {
                    let n = data.len();
                    counted.set(counted.get() + n as u64);
                    let _ = recv.flow_control().release_capacity(n);
                    if round == 1 {
                        send_all(&mut send, data).await;
                    }
                }
                let _ = send.send_data(Bytes::new(), true);
                finished.set(true);
            });
        };
        let round_over = async {
            while !done.get() {
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        match adapter {
            Adapter::Zring => {
                let (tls, _) = tls::server_handshake(tcp, config.clone(), driver)
                    .await
                    .unwrap();
                monoio::select! {
                    _ = server::serve(tls, peer, std::future::pending(), on_stream) => {},
                    () = round_over => {},
                }
            }
            Adapter::TokioRustls => {
                let io = tcp.into_poll_io().unwrap();
                let tls = tokio_rustls_accept(io, config.clone()).await;
                monoio::select! {
                    _ = server::serve(tls, peer, std::future::pending(), on_stream) => {},
                    () = round_over => {},
                }
            }
            Adapter::MonoioRustls => {
                let tls = monoio_rustls::TlsAcceptor::from(config.clone())
                    .accept(tcp)
                    .await
                    .unwrap();
                let io = Box::new(monoio_compat::StreamWrapper::new(tls));
                monoio::select! {
                    _ = server::serve(io, peer, std::future::pending(), on_stream) => {},
                    () = round_over => {},
                }
            }
        }
        if round == 0 {
            let cpu = (zring::sys::thread_cpu_time().unwrap() - cpu0).as_secs_f64();
            cpu_per_gib = cpu / (bytes.get() as f64 / (1u64 << 30) as f64);
        }
    }
    cpu_per_gib
}

async fn tokio_rustls_accept(
    io: monoio::net::tcp::stream_poll::TcpStreamPoll,
    config: Arc<ServerConfig>,
) -> tokio_rustls::server::TlsStream<monoio::net::tcp::stream_poll::TcpStreamPoll> {
    tokio_rustls::TlsAcceptor::from(config)
        .accept(io)
        .await
        .unwrap()
}

async fn connect(
    adapter: Adapter,
    driver: Driver,
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> H2Client {
    let tcp = TcpStream::connect_addr(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    match adapter {
        Adapter::Zring => {
            let tls = tls::client_handshake(tcp, config.clone(), driver)
                .await
                .unwrap();
            H2Client::handshake(tls, addr).await.unwrap()
        }
        Adapter::TokioRustls => {
            let io = tcp.into_poll_io().unwrap();
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(identity::placeholder_server_name(), io)
                .await
                .unwrap();
            H2Client::handshake(tls, addr).await.unwrap()
        }
        Adapter::MonoioRustls => {
            let tls = monoio_rustls::TlsConnector::from(config.clone())
                .connect(identity::placeholder_server_name(), tcp)
                .await
                .unwrap();
            let io = Box::new(monoio_compat::StreamWrapper::new(tls));
            H2Client::handshake(io, addr).await.unwrap()
        }
    }
}

/// Waits for the server to end the stream: 0, or 1 when it did not within [`STALL`].
async fn end_of_stream(recv: &mut h2::RecvStream) -> u32 {
    let drain = async { while poll_fn(|cx| recv.poll_data(cx)).await.is_some() {} };
    u32::from(monoio::time::timeout(STALL, drain).await.is_err())
}

fn connect_request(addr: SocketAddr) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = Method::CONNECT;
    *req.uri_mut() = addr.to_string().parse().unwrap();
    req
}

/// Sends `data` on `send`, waiting for flow-control capacity as zring's pump does.
async fn send_all(send: &mut h2::SendStream<Bytes>, mut data: Bytes) {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let Some(Ok(n)) = poll_fn(|cx| send.poll_capacity(cx)).await else {
            return;
        };
        send.send_data(data.split_to(n.min(data.len())), false)
            .unwrap();
    }
}

async fn client(
    adapter: Adapter,
    driver: Driver,
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    dur: Duration,
) -> Figures {
    let timeout = Duration::from_secs(10);
    // Bulk: one stream, 64 KiB writes for `dur`.
    let h2 = connect(adapter, driver, addr, &config).await;
    let (mut send, mut recv) = h2.open(connect_request(addr), timeout).await.unwrap();
    let chunk = Bytes::from(vec![0x5Au8; CHUNK]);
    let cpu0 = zring::sys::thread_cpu_time().unwrap();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < dur {
        send_all(&mut send, chunk.clone()).await;
        sent += CHUNK as u64;
    }
    send.send_data(Bytes::new(), true).unwrap();
    let mut stalls = end_of_stream(&mut recv).await;
    let secs = start.elapsed().as_secs_f64();
    let cpu = (zring::sys::thread_cpu_time().unwrap() - cpu0).as_secs_f64();
    let gib = sent as f64 / (1u64 << 30) as f64;
    // The server moves on to the next connection once this one closes.
    drop((send, recv, h2));

    // Request/response: 1 KiB each way, back to back, on one stream.
    let h2 = connect(adapter, driver, addr, &config).await;
    let (mut send, mut recv) = h2.open(connect_request(addr), timeout).await.unwrap();
    let req = Bytes::from(vec![7u8; 1024]);
    let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        let t = Instant::now();
        send_all(&mut send, req.clone()).await;
        let mut got = 0;
        while got < req.len() {
            let data = poll_fn(|cx| recv.poll_data(cx)).await.unwrap().unwrap();
            got += data.len();
            let _ = recv.flow_control().release_capacity(data.len());
        }
        h.record(t.elapsed().as_micros() as u64).unwrap_or_default();
        n += 1;
    }
    let rr_secs = start.elapsed().as_secs_f64();
    send.send_data(Bytes::new(), true).unwrap();
    stalls += end_of_stream(&mut recv).await;
    Figures {
        stalls,
        gbps: sent as f64 * 8.0 / secs / 1e9,
        cpu_s_per_gib: cpu / gib,
        rr_per_sec: n as f64 / rr_secs,
        p50_us: h.value_at_quantile(0.5) as f64,
        p99_us: h.value_at_quantile(0.99) as f64,
    }
}

//! The soak tool: many concurrent connections held open through zring for a set time, every
//! byte checked, while zring's descriptors and memory are watched.
//!
//! Runs on the caller's thread (a test's): the client and the echo server are monoio runtimes
//! on threads entered into their pods' namespaces, so thousands of connections cost tasks, not
//! threads; a sampler thread reads `/proc/<pid>` of every zring process. Each connection sends
//! patterned chunks (its own seed), reads them back through the echo server and compares them,
//! until the time is up; then everything closes and the tool waits (bounded) for zring's
//! descriptor count to come back down before taking the "end" sample.

use std::cell::Cell;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};

use super::traffic::Pattern;
use super::{LabError, Mesh};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct SoakOptions {
    /// Connections held open at once.
    pub connections: usize,
    /// How long each connection keeps exchanging after all are open.
    pub duration: Duration,
    /// Bytes per chunk (each chunk goes up and comes back).
    pub chunk: usize,
    /// Pause between a connection's chunks, so the load is many live connections rather than
    /// a few saturated ones.
    pub pace: Duration,
}

/// One zring process's resources at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Open descriptors other than pipes: the pipes are the capture watch's `nft` and `ip`
    /// children's output (two while one runs, which it does at any moment), not anything a
    /// connection holds.
    pub fds: usize,
    pub rss_kib: u64,
    /// `zring_heap_live_bytes` in KiB: read at start and end (a scrape), not at the peak.
    pub heap_kib: Option<u64>,
}

/// Start, peak and end usage of one zring process.
#[derive(Debug, Clone)]
pub struct ProcessUsage {
    pub node: String,
    pub start: Usage,
    pub peak: Usage,
    pub end: Usage,
}

#[derive(Debug, Clone)]
pub struct SoakReport {
    /// Connections that were open at the same time, at the most.
    pub held: usize,
    /// Bytes sent and verified on the way back, across all connections.
    pub bytes_verified: u64,
    /// Connections that failed (connect, IO, or a mismatched byte), with the first reasons.
    pub errors: usize,
    pub first_errors: Vec<String>,
    pub zring: Vec<ProcessUsage>,
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "held {} connections at once, {} bytes verified, {} errors",
            self.held, self.bytes_verified, self.errors
        )?;
        for e in &self.first_errors {
            writeln!(f, "  error: {e}")?;
        }
        for z in &self.zring {
            writeln!(
                f,
                "zring on {}: fds {} → peak {} → {}, RSS {} KiB → peak {} KiB → {} KiB, heap {} → {}",
                z.node,
                z.start.fds,
                z.peak.fds,
                z.end.fds,
                z.start.rss_kib,
                z.peak.rss_kib,
                z.end.rss_kib,
                kib(z.start.heap_kib),
                kib(z.end.heap_kib),
            )?;
        }
        Ok(())
    }
}

fn kib(v: Option<u64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| format!("{v} KiB"))
}

/// [`usage`] plus the heap's live bytes, scraped from zring's metrics on `node`. `/proc` is
/// read first: the scrape's own connection holds a descriptor of zring's until it closes.
fn usage_with_heap(mesh: &Mesh, node: &str, pid: u32) -> Usage {
    let proc = usage(pid);
    let heap_kib = mesh
        .scrape(node)
        .exact("zring_heap_live_bytes", &Default::default())
        .map(|b| b as u64 / 1024);
    Usage { heap_kib, ..proc }
}

/// Reads `/proc/<pid>`: open descriptors (not pipes, see [`Usage::fds`]) and resident memory.
pub fn usage(pid: u32) -> Usage {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|target| !target.to_string_lossy().starts_with("pipe:"))
                })
                .count()
        })
        .unwrap_or(0);
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    Usage {
        fds,
        rss_kib,
        heap_kib: None,
    }
}

/// Runs the soak from `client_pod` to `server_pod:port` (an echo server is started there)
/// through the zring processes on `nodes`.
pub fn run(
    mesh: &Mesh,
    nodes: &[&str],
    client_pod: &str,
    server_pod: &str,
    port: u16,
    opts: SoakOptions,
) -> Result<SoakReport, LabError> {
    crate::sys::raise_nofile_limit().map_err(|source| LabError::Io {
        context: "raising the descriptor limit for the soak's sockets".into(),
        source,
    })?;
    let server_ip = mesh.lab.pod(server_pod).ip();
    let listener = mesh
        .lab
        .pod(server_pod)
        .run(move || TcpListener::bind(("0.0.0.0", port)))
        .map_err(|source| LabError::Io {
            context: format!("listening on {server_pod}:{port}"),
            source,
        })?;
    let done = Arc::new(AtomicBool::new(false));
    let server_done = done.clone();
    let server = std::thread::spawn(move || echo_server(listener, server_done));

    let pids: Vec<(String, u32)> = nodes
        .iter()
        .map(|n| (n.to_string(), mesh.zring(n).pid()))
        .collect();
    let starts: Vec<Usage> = pids
        .iter()
        .map(|(n, p)| usage_with_heap(mesh, n, *p))
        .collect();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let pids = pids.clone();
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peaks = vec![Usage::default(); pids.len()];
            while sampling.load(Ordering::Relaxed) {
                for (peak, (_, pid)) in peaks.iter_mut().zip(&pids) {
                    let u = usage(*pid);
                    peak.fds = peak.fds.max(u.fds);
                    peak.rss_kib = peak.rss_kib.max(u.rss_kib);
                }
                #[expect(clippy::disallowed_methods, reason = "a sampler thread, not a core")]
                std::thread::sleep(Duration::from_millis(50));
            }
            peaks
        })
    };

    let to = SocketAddr::from((server_ip, port));
    let outcome = mesh.lab.pod(client_pod).run(move || clients(to, opts));
    sampling.store(false, Ordering::Relaxed);
    let peaks = sampler.join().expect("sampler thread");

    // Connections are closed; wait (bounded) for zring to release their descriptors.
    let settle = Instant::now() + Duration::from_secs(30);
    let ends = loop {
        let now: Vec<Usage> = pids.iter().map(|(_, p)| usage(*p)).collect();
        let settled = now.iter().zip(&starts).all(|(e, s)| e.fds <= s.fds);
        if settled || Instant::now() >= settle {
            // Cores give back a burst's memory at their next trim, once a second: "end" is
            // zring at rest, after two of them.
            #[expect(clippy::disallowed_methods, reason = "a test thread, not a core")]
            std::thread::sleep(Duration::from_millis(2500));
            break pids
                .iter()
                .map(|(n, p)| usage_with_heap(mesh, n, *p))
                .collect::<Vec<_>>();
        }
        #[expect(clippy::disallowed_methods, reason = "a test thread, not a core")]
        std::thread::sleep(Duration::from_millis(50));
    };
    done.store(true, Ordering::Relaxed);
    let _ = server.join();

    Ok(SoakReport {
        held: outcome.held,
        bytes_verified: outcome.bytes,
        errors: outcome.errors.len(),
        first_errors: outcome.errors.into_iter().take(5).collect(),
        zring: pids
            .into_iter()
            .zip(starts)
            .zip(peaks)
            .zip(ends)
            .map(|((((node, _), start), peak), end)| ProcessUsage {
                node,
                start,
                peak,
                end,
            })
            .collect(),
    })
}

/// What the client side saw.
#[derive(Debug, Default)]
struct Outcome {
    held: usize,
    bytes: u64,
    errors: Vec<String>,
}

fn runtime() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .expect("a monoio runtime for the soak")
}

/// Sends one chunk of `pattern` on connection `i` and checks that the same bytes come back.
async fn echo(
    s: &mut monoio::net::TcpStream,
    pattern: &mut Pattern,
    chunk: usize,
    i: usize,
) -> Result<(), String> {
    let mut out = vec![0u8; chunk];
    pattern.fill(&mut out);
    let (r, out) = s.write_all(out).await;
    r.map_err(|e| format!("connection {i}: write: {e}"))?;
    let (r, back) = s.read_exact(vec![0u8; chunk]).await;
    r.map_err(|e| format!("connection {i}: read: {e}"))?;
    if back != out {
        return Err(format!("connection {i}: echoed bytes differ"));
    }
    Ok(())
}

/// Opens every connection and echoes once on each, waits until all have, then exchanges until
/// the time is up.
fn clients(to: SocketAddr, opts: SoakOptions) -> Outcome {
    runtime().block_on(async move {
        let open = Rc::new(Cell::new(0usize));
        let held = Rc::new(Cell::new(0usize));
        let all_open = Rc::new(crate::latch::Latch::<()>::default());
        let mut tasks = Vec::with_capacity(opts.connections);
        for i in 0..opts.connections {
            let (open, held, all_open) = (open.clone(), held.clone(), all_open.clone());
            tasks.push(monoio::spawn(async move {
                let mut s = monoio::net::TcpStream::connect_addr(to)
                    .await
                    .map_err(|e| format!("connection {i}: connect: {e}"))?;
                let mut pattern = Pattern::new(i as u64 + 1);
                let mut bytes = 0u64;
                // One echo before the connection counts as open: a connect completes in the
                // kernel's backlog, before zring has accepted it, so only an echo proves the
                // connection is proxied end to end. A slow (loaded) zring then still holds
                // every connection at once, as no connection starts its timed phase, let alone
                // closes, before all of them have echoed.
                echo(&mut s, &mut pattern, opts.chunk, i).await?;
                bytes += opts.chunk as u64;
                open.set(open.get() + 1);
                held.set(held.get().max(open.get()));
                if open.get() == opts.connections {
                    all_open.fire(());
                }
                all_open.wait().await;
                let start = Instant::now();
                let result = async {
                    while start.elapsed() < opts.duration {
                        echo(&mut s, &mut pattern, opts.chunk, i).await?;
                        bytes += opts.chunk as u64;
                        monoio::time::sleep(opts.pace).await;
                    }
                    Ok(())
                }
                .await;
                open.set(open.get() - 1);
                result.map(|()| bytes)
            }));
        }
        let mut outcome = Outcome::default();
        for t in tasks {
            match t.await {
                Ok(b) => outcome.bytes += b,
                Err(e) => outcome.errors.push(e),
            }
        }
        outcome.held = held.get();
        outcome
    })
}

/// Echoes every connection until `done`.
fn echo_server(listener: TcpListener, done: Arc<AtomicBool>) {
    runtime().block_on(async move {
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let listener =
            monoio::net::TcpListener::from_std(listener).expect("listener for the soak's server");
        while !done.load(Ordering::Relaxed) {
            let accepted =
                monoio::time::timeout(Duration::from_millis(100), listener.accept()).await;
            let Ok(Ok((mut s, _))) = accepted else {
                continue;
            };
            monoio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let (r, b) = monoio::io::AsyncReadRent::read(&mut s, buf).await;
                    buf = b;
                    match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let (r, b) = s.write_all(buf[..n].to_vec()).await;
                            if r.is_err() {
                                return;
                            }
                            drop(b);
                        }
                    }
                }
            });
        }
    });
}

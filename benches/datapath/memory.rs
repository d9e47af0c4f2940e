//! The memory scenario: open `n` idle HBONE connections from `appa` to `appb` (each proves its
//! tunnel with a one-byte echo, then stays silent), read each proxy's resident memory, close
//! them all, and read it again once the proxies have let go of every socket and their pooled
//! tunnels have been released.
//!
//! Per-connection memory is (RSS with the connections open − RSS before) / n, so it includes
//! each connection's share of the pooled HTTP/2 connections that carry the streams. Kernel
//! socket buffers are not in RSS and not counted (they are the same for any proxy).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::setup::{APPB, Running, fds, pause, rss_kib};

/// The idle server's port in `appb`.
const IDLE: u16 = 5003;
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the proxies get to close everything after the clients did.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Client threads opening connections (each one after the other on its thread).
const OPENERS: usize = 8;

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub role: &'static str,
    pub baseline_kib: u64,
    pub open_kib: u64,
    pub closed_kib: u64,
    /// (open − baseline) / connections.
    pub bytes_per_conn: f64,
    pub baseline_fds: usize,
    pub open_fds: usize,
    pub closed_fds: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub setup: String,
    pub connections: usize,
    /// Wall time to open (and prove) every connection.
    pub open_secs: f64,
    pub sides: Vec<Side>,
}

/// Runs the scenario on a running HBONE setup whose pool releases idle tunnels after
/// `pool_release`.
pub fn idle_connections(run: &Running, label: &str, n: usize, pool_release: Duration) -> Memory {
    let proxies = run.proxies();
    let baseline: Vec<(u64, usize)> = proxies
        .iter()
        .map(|(_, p)| (settled_rss(p.pid()), fds(p.pid())))
        .collect();

    let (accepted_tx, accepted_rx) = mpsc::channel();
    let (closed_tx, closed_rx) = mpsc::channel();
    let listener = run
        .lab()
        .pod("appb")
        .run(|| TcpListener::bind(("0.0.0.0", IDLE)))
        .expect("idle server listens");
    std::thread::spawn(move || serve(listener, n, accepted_tx, closed_tx));

    let start = Instant::now();
    let clients = run.lab().pod("appa").run(move || open(n));
    let open_secs = start.elapsed().as_secs_f64();
    accepted_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the idle server accepted every connection");
    let open: Vec<(u64, usize)> = proxies
        .iter()
        .map(|(_, p)| (settled_rss(p.pid()), fds(p.pid())))
        .collect();

    drop(clients);
    closed_rx
        .recv_timeout(DRAIN_TIMEOUT)
        .expect("the idle server saw every connection close");
    // Every socket gone (back to the baseline's descriptors, give or take a pooled tunnel),
    // then the pool's idle release, then whatever the allocator returns.
    for ((_, p), (_, base_fds)) in proxies.iter().zip(&baseline) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while fds(p.pid()) > base_fds + 4 && Instant::now() < deadline {
            pause(Duration::from_millis(100));
        }
    }
    pause(pool_release * 2 + Duration::from_secs(1));
    let closed: Vec<(u64, usize)> = proxies
        .iter()
        .map(|(_, p)| (settled_rss(p.pid()), fds(p.pid())))
        .collect();

    let sides = proxies
        .iter()
        .zip(baseline.iter().zip(open.iter().zip(&closed)))
        .map(|((role, _), (b, (o, c)))| Side {
            role,
            baseline_kib: b.0,
            open_kib: o.0,
            closed_kib: c.0,
            bytes_per_conn: (o.0 as f64 - b.0 as f64) * 1024.0 / n as f64,
            baseline_fds: b.1,
            open_fds: o.1,
            closed_fds: c.1,
        })
        .collect();
    Memory {
        setup: label.to_owned(),
        connections: n,
        open_secs,
        sides,
    }
}

/// RSS once it stops moving: two readings 300 ms apart within 1% (or after 10 s).
fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = rss_kib(pid);
    loop {
        pause(Duration::from_millis(300));
        let now = rss_kib(pid);
        if now.abs_diff(last) * 100 <= last || Instant::now() >= deadline {
            return now;
        }
        last = now;
    }
}

/// Accepts `n` connections, echoing one byte on each, reports, then waits for each to close.
fn serve(listener: TcpListener, n: usize, accepted: mpsc::Sender<()>, closed: mpsc::Sender<()>) {
    let mut held = Vec::with_capacity(n);
    while held.len() < n {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut b = [0u8; 1];
        if s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {
            let _ = s.set_read_timeout(Some(DRAIN_TIMEOUT));
            held.push(s);
        }
    }
    let _ = accepted.send(());
    for mut s in held {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let _ = closed.send(());
}

/// Opens `n` connections to the idle server, each proven by a one-byte echo. Call inside the
/// client pod.
fn open(n: usize) -> Vec<TcpStream> {
    let addr = SocketAddr::from((APPB, IDLE));
    let threads: Vec<_> = (0..OPENERS)
        .map(|i| {
            let count = n / OPENERS + usize::from(i < n % OPENERS);
            std::thread::spawn(move || {
                (0..count)
                    .map(|_| {
                        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
                            .unwrap_or_else(|e| panic!("idle connection to {addr}: {e}"));
                        s.set_read_timeout(Some(IO_TIMEOUT)).expect("socket option");
                        let mut b = [1u8; 1];
                        s.write_all(&b)
                            .and_then(|()| s.read_exact(&mut b))
                            .unwrap_or_else(|e| panic!("idle connection's echo: {e}"));
                        s
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().expect("an opener thread panicked"))
        .collect()
}

//! The memory scenario: open `n` idle HBONE connections from `appa` to `appb` (each proves its
//! tunnel with a one-byte echo, then stays silent), read each proxy's resident memory, close
//! them all, and read it again once the proxies have let go of every socket and their pooled
//! tunnels have been released.
//!
//! Per-connection memory is (RSS with the connections open − RSS before) / n, so it includes
//! each connection's share of the pooled HTTP/2 connections that carry the streams. Kernel
//! socket buffers are not in RSS and not counted (they are the same for any proxy).
//!
//! The idle server is a second process (this bench binary again, `--idle-server`, in `appb`):
//! clients and server together hold twice `n` sockets, more than one process may open where
//! the hard open-file limit is low and cannot be raised (no CAP_SYS_RESOURCE, as on this
//! project's machines).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::setup::{APPB, Running, Setup, fds, pause, rss_kib};

/// The idle server's port in `appb`.
const IDLE: u16 = 5003;
/// The argument that makes the bench binary the idle server.
pub const SERVER_ARG: &str = "--idle-server";
/// Descriptors a process needs beyond its share of the connections.
const SPARE_FDS: u64 = 512;
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the proxies get to close everything after the clients did.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Client threads opening connections (each one after the other on its thread).
const OPENERS: usize = 8;

/// Resident memory (KiB) and open descriptors of one proxy process at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Reading {
    pub rss_kib: u64,
    pub fds: usize,
}

/// One open-then-close cycle of the `n` connections.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Round {
    pub open: Reading,
    pub closed: Reading,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub role: &'static str,
    pub baseline: Reading,
    /// The same `n` connections opened and closed again: a second round that ends where the
    /// first did shows memory kept for reuse (allocator, pools), one that ends higher a leak.
    pub rounds: Vec<Round>,
    /// (first round's open − baseline) / connections.
    pub bytes_per_conn: f64,
    /// zring's `bytes_per_conn` over the other proxy's, same side and cores (zring only).
    pub vs_peer: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub setup: String,
    /// `zring` or the other proxy's name.
    pub proxy: String,
    pub cores: usize,
    pub connections: usize,
    /// Wall time to open (and prove) every connection, first round.
    pub open_secs: f64,
    pub sides: Vec<Side>,
}

impl Memory {
    /// Fills each side's `vs_peer` from the other proxy's same side.
    pub fn compare_peer(&mut self, peer: &Memory) {
        for side in &mut self.sides {
            side.vs_peer = peer
                .sides
                .iter()
                .find(|p| p.role == side.role)
                .and_then(|p| {
                    Some(side.bytes_per_conn / p.bytes_per_conn).filter(|r| r.is_finite())
                });
        }
    }
}

/// Open-then-close cycles per scenario.
const ROUNDS: usize = 2;

/// Runs the scenario on a running HBONE setup whose pool releases idle tunnels after
/// `pool_release`.
pub fn idle_connections(run: &Running, setup: &Setup, n: usize, pool_release: Duration) -> Memory {
    let limit = zring::sys::raise_nofile_limit().unwrap_or(0);
    assert!(
        limit >= n as u64 + SPARE_FDS,
        "{n} idle connections need {} open files per process, the limit here is {limit}: \
         lower ZRING_BENCH_IDLE_CONNS",
        n as u64 + SPARE_FDS
    );
    let proxies = run.proxies();
    let read = || -> Vec<Reading> {
        proxies
            .iter()
            .map(|(_, p)| Reading {
                rss_kib: settled_rss(p.pid()),
                fds: fds(p.pid()),
            })
            .collect()
    };
    let baseline = read();
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); proxies.len()];
    let mut open_secs = 0.0;
    for round in 0..ROUNDS {
        let mut server = Command::new(std::env::current_exe().expect("the bench's own path"));
        server.args([SERVER_ARG, &n.to_string()]);
        let lab = run.lab();
        let server = lab
            .spawn_process(lab.pod("appb"), server)
            .expect("starting the idle server");
        server
            .wait_for_log("listening", IO_TIMEOUT)
            .expect("the idle server listens");

        let start = Instant::now();
        let clients = lab.pod("appa").run(move || open(n));
        if round == 0 {
            open_secs = start.elapsed().as_secs_f64();
        }
        server
            .wait_for_log("accepted", IO_TIMEOUT)
            .expect("the idle server accepted every connection");
        let open = read();

        drop(clients);
        server
            .wait_exit(DRAIN_TIMEOUT)
            .expect("the idle server saw every connection close");
        // Every socket gone (back to the baseline's descriptors, give or take a pooled
        // tunnel), then the pool's idle release, then whatever the allocator returns.
        for ((_, p), base) in proxies.iter().zip(&baseline) {
            let deadline = Instant::now() + DRAIN_TIMEOUT;
            while fds(p.pid()) > base.fds + 4 && Instant::now() < deadline {
                pause(Duration::from_millis(100));
            }
        }
        pause(pool_release * 2 + Duration::from_secs(1));
        for (side, (open, closed)) in rounds.iter_mut().zip(open.into_iter().zip(read())) {
            side.push(Round { open, closed });
        }
    }

    let sides = proxies
        .iter()
        .zip(baseline.into_iter().zip(rounds))
        .map(|((role, _), (baseline, rounds))| Side {
            role,
            bytes_per_conn: (rounds[0].open.rss_kib as f64 - baseline.rss_kib as f64) * 1024.0
                / n as f64,
            baseline,
            rounds,
            vs_peer: None,
        })
        .collect();
    Memory {
        setup: setup.label(),
        proxy: setup.proxy_name().to_owned(),
        cores: setup.cores,
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

/// The idle server's process (`<bench> --idle-server N`, started inside `appb`): accepts `n`
/// connections, echoing one byte on each, says so, then waits for each to close and exits.
pub fn serve(n: usize) {
    let _ = zring::sys::raise_nofile_limit();
    let listener = TcpListener::bind(("0.0.0.0", IDLE)).expect("binding the idle server");
    println!("listening on {IDLE}");
    let mut held = Vec::with_capacity(n);
    while held.len() < n {
        let (mut s, _) = listener.accept().expect("accepting an idle connection");
        let mut b = [0u8; 1];
        if s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {
            let _ = s.set_read_timeout(Some(DRAIN_TIMEOUT));
            held.push(s);
        }
    }
    println!("accepted {n}");
    for mut s in held {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    println!("closed {n}");
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

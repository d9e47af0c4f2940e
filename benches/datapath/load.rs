//! The load: servers in pod `appb`, clients in pod `appa`, plain blocking `std::net` sockets on
//! one thread per connection, so that every setup (direct or proxied) is driven by exactly the
//! same code and only the path between the pods differs.
//!
//! Each client thread connects (bulk, rr) before a barrier; the clock starts when every thread
//! has passed it and each runs for the measurement's duration. Latency (rr, crr) is recorded
//! per request in nanoseconds in a per-thread hdrhistogram, merged at the end. Failures are
//! counted, not fatal: a proxy that drops connections shows it in the `errors` column.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::options::Workload;

/// Counts what it receives, answers the count (u64) after the client's FIN.
pub const SINK: u16 = 5001;
/// Echoes 1 KiB messages until the client closes (rr: a thread per connection).
pub const ECHO: u16 = 5002;
/// Echoes one 1 KiB message per connection, then waits for the client to close (crr).
pub const CRR: u16 = 5004;
/// Threads accepting and serving crr connections one at a time each: a thread per connection
/// would put a thread start into every request and dominate the pods' CPU.
const CRR_SERVERS: usize = 8;
/// Request and response size of rr and crr.
pub const MSG: usize = 1024;
/// Write size of bulk.
const CHUNK: usize = 256 * 1024;
/// No single socket operation may take longer; a stalled path shows up as an error.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A crr thread gives up after this many failures in a row (the path is down, not slow).
const MAX_FAILURES_IN_A_ROW: u64 = 100;

/// What one measurement observed, summed over its connections.
#[derive(Debug)]
pub struct Sample {
    /// From the barrier to the last thread's end (bulk: until the sink confirmed every byte).
    pub elapsed: Duration,
    /// Requests completed (rr, crr); 0 for bulk.
    pub requests: u64,
    /// Payload bytes that crossed the path, both directions.
    pub bytes: u64,
    /// Per-request latency in nanoseconds (empty for bulk).
    pub latency: Histogram<u64>,
    /// Failures by what failed and how (`connect: connection refused`, …).
    pub errors: Errors,
    /// SYNs the client pod's kernel had to send again during the measurement: no error, but a
    /// stall of a second or more. Filled in by the caller, which reads the pod's counters.
    pub syn_retransmits: u64,
    /// Retransmission timeouts in every namespace of the lab (both pods, both nodes): a
    /// segment lost and sent again only after the timer fired, a stall of 200 ms or more that
    /// doubles with each loss. Lets a stalled connection be told from a proxy that lost a
    /// wake-up. Filled in by the caller.
    pub retransmit_timeouts: u64,
}

/// Failure counts by `stage: error kind`.
pub type Errors = BTreeMap<String, u64>;

fn count(errors: &mut Errors, stage: &str, e: &io::Error) {
    *errors.entry(format!("{stage}: {}", e.kind())).or_default() += 1;
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Starts the sink and echo servers; call on a thread inside the server pod. They run until
/// the process exits (the lab's namespace goes away with the setup).
pub fn start_servers() -> std::io::Result<()> {
    let sink = TcpListener::bind(("0.0.0.0", SINK))?;
    let echo = TcpListener::bind(("0.0.0.0", ECHO))?;
    let crr = TcpListener::bind(("0.0.0.0", CRR))?;
    for _ in 0..CRR_SERVERS {
        let crr = crr.try_clone()?;
        std::thread::spawn(move || {
            for s in crr.incoming().flatten() {
                let mut s = s;
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                let mut buf = [0u8; MSG];
                if s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {
                    // The client closes first, so TIME_WAIT stays on its side (where the
                    // bench widened the port range), as with most real clients.
                    let _ = s.read(&mut buf);
                }
            }
        });
    }
    std::thread::spawn(move || {
        for s in sink.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; CHUNK];
                let mut n = 0u64;
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                let _ = s.write_all(&n.to_be_bytes());
            });
        }
    });
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; MSG];
                while s.read_exact(&mut buf).is_ok() && s.write_all(&buf).is_ok() {}
            });
        }
    });
    Ok(())
}

/// One request/response on a new connection: proves the path works end to end. For the
/// readiness probe.
pub fn one_request(server: Ipv4Addr) -> std::io::Result<()> {
    let mut s = connect(SocketAddr::from((server, ECHO)))?;
    let mut buf = [7u8; MSG];
    s.write_all(&buf)?;
    s.read_exact(&mut buf)
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// What one client thread did.
struct Part {
    requests: u64,
    bytes: u64,
    latency: Histogram<u64>,
    errors: Errors,
}

impl Part {
    fn new() -> Part {
        Part {
            requests: 0,
            bytes: 0,
            latency: histogram(),
            errors: Errors::new(),
        }
    }

    fn failed(stage: &str, e: &io::Error) -> Part {
        let mut part = Part::new();
        count(&mut part.errors, stage, e);
        part
    }
}

/// Runs `workload` on `conns` concurrent connections to `server` for `dur`, with `beside` bulk
/// connections running through the same path at the same time (their bytes are not counted,
/// their failures are, as `beside …`). Call on a thread inside the client pod: the threads it
/// starts inherit its network namespace.
pub fn run(
    workload: Workload,
    conns: usize,
    beside: usize,
    server: Ipv4Addr,
    dur: Duration,
) -> Sample {
    let barrier = Arc::new(Barrier::new(conns + beside + 1));
    let background: Vec<_> = (0..beside)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || bulk(server, &barrier, dur))
        })
        .collect();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || match workload {
                Workload::Bulk => bulk(server, &barrier, dur),
                Workload::Rr => rr(server, &barrier, dur),
                Workload::Crr => crr(server, &barrier, dur),
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let mut sample = Sample {
        elapsed: Duration::ZERO,
        requests: 0,
        bytes: 0,
        latency: histogram(),
        errors: Errors::new(),
        syn_retransmits: 0,
        retransmit_timeouts: 0,
    };
    for t in threads {
        let part = t.join().expect("a load thread panicked");
        sample.requests += part.requests;
        sample.bytes += part.bytes;
        for (what, n) in part.errors {
            *sample.errors.entry(what).or_default() += n;
        }
        sample
            .latency
            .add(&part.latency)
            .expect("histograms share their bounds");
    }
    sample.elapsed = start.elapsed();
    for t in background {
        let part = t.join().expect("a load thread panicked");
        for (what, n) in part.errors {
            *sample.errors.entry(format!("beside {what}")).or_default() += n;
        }
    }
    sample
}

/// Connects before the barrier, so connection set-up is outside the measured time. Every
/// thread reaches the barrier, failed or not, or the others would wait forever.
fn connected(server: Ipv4Addr, port: u16, barrier: &Barrier) -> io::Result<TcpStream> {
    let s = connect(SocketAddr::from((server, port)));
    barrier.wait();
    s
}

fn bulk(server: Ipv4Addr, barrier: &Barrier, dur: Duration) -> Part {
    let mut s = match connected(server, SINK, barrier) {
        Ok(s) => s,
        Err(e) => return Part::failed("connect", &e),
    };
    let buf = vec![0x5Au8; CHUNK];
    let deadline = Instant::now() + dur;
    let mut sent = 0u64;
    let result = (|| -> std::io::Result<u64> {
        while Instant::now() < deadline {
            s.write_all(&buf)?;
            sent += buf.len() as u64;
        }
        s.shutdown(Shutdown::Write)?;
        let mut n = [0u8; 8];
        s.read_exact(&mut n)?;
        Ok(u64::from_be_bytes(n))
    })();
    match result {
        // Only bytes the sink confirmed count.
        Ok(counted) if counted == sent => Part {
            bytes: sent,
            ..Part::new()
        },
        Ok(counted) => Part::failed(
            "transfer",
            &io::Error::other(format!("the sink counted {counted} of {sent} bytes")),
        ),
        Err(e) => Part::failed("transfer", &e),
    }
}

fn rr(server: Ipv4Addr, barrier: &Barrier, dur: Duration) -> Part {
    let mut s = match connected(server, ECHO, barrier) {
        Ok(s) => s,
        Err(e) => return Part::failed("connect", &e),
    };
    let mut part = Part::new();
    let req = [7u8; MSG];
    let mut resp = [0u8; MSG];
    let deadline = Instant::now() + dur;
    while Instant::now() < deadline {
        let t = Instant::now();
        if let Err(e) = s.write_all(&req).and_then(|()| s.read_exact(&mut resp)) {
            count(&mut part.errors, "request", &e);
            break;
        }
        part.latency
            .saturating_record(t.elapsed().as_nanos() as u64);
        part.requests += 1;
    }
    part.bytes = part.requests * 2 * MSG as u64;
    part
}

fn crr(server: Ipv4Addr, barrier: &Barrier, dur: Duration) -> Part {
    barrier.wait();
    let addr = SocketAddr::from((server, CRR));
    let mut part = Part::new();
    let req = [7u8; MSG];
    let mut resp = [0u8; MSG];
    let deadline = Instant::now() + dur;
    let mut failures_in_a_row = 0;
    while Instant::now() < deadline && failures_in_a_row < MAX_FAILURES_IN_A_ROW {
        let t = Instant::now();
        let done = connect(addr).map_err(|e| ("connect", e)).and_then(|mut s| {
            s.write_all(&req)
                .and_then(|()| s.read_exact(&mut resp))
                .map_err(|e| ("request", e))
        });
        match done {
            Ok(()) => {
                part.latency
                    .saturating_record(t.elapsed().as_nanos() as u64);
                part.requests += 1;
                failures_in_a_row = 0;
            }
            Err((stage, e)) => {
                count(&mut part.errors, stage, &e);
                failures_in_a_row += 1;
            }
        }
    }
    part.bytes = part.requests * 2 * MSG as u64;
    part
}

//! The `zring-inpod` thread: connects to the node agent's socket, says hello, applies requests
//! to the [`Registry`] one at a time and acks each, and reconnects with jittered backoff when the
//! connection ends. Blocking IO throughout; a [`Client`] handle stops it.
//!
//! What ends a connection (then: log, count, reconnect; the registry and every served pod stay):
//! - the agent closes or the socket fails;
//! - a packet that is no usable request (`codec::DecodeError`, truncation): acked with the error
//!   first, as ztunnel does, so the agent's log says why;
//! - an out-of-order request (`ApplyError::ends_connection`): acked with the error first.
//!
//! A refused add is acked with the handler's error and the connection goes on; the pod is
//! retried every `retry_interval` while the thread waits for the next request.

use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::codec::{self, DecodeError};
use super::metrics::Metrics;
use super::registry::{ApplyError, Registry};
use super::{DEFAULT_INPOD_UDS, INPOD_UDS_ENV, PodHandler};
use crate::backoff::Backoff;
use crate::sys::uds::{self, RecvError, SeqPacket};

/// Largest request accepted: an add holds a uid and three Kubernetes names (≤ 253 bytes each).
const MAX_REQUEST: usize = 4096;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The agent's socket (`INPOD_UDS`).
    pub uds: PathBuf,
    /// Reconnect delays double from `backoff_min` to `backoff_max`, jittered.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How often pods the handler refused are tried again (ztunnel: 5 s).
    pub retry_interval: Duration,
    /// How long an ack may wait for an agent that stops reading before the connection is
    /// given up.
    pub send_timeout: Duration,
}

impl ClientConfig {
    pub fn new(uds: impl Into<PathBuf>) -> ClientConfig {
        ClientConfig {
            uds: uds.into(),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_secs(15),
            retry_interval: Duration::from_secs(5),
            send_timeout: Duration::from_secs(5),
        }
    }

    /// `INPOD_UDS` or ztunnel's default path.
    pub fn from_env() -> ClientConfig {
        let uds = std::env::var_os(INPOD_UDS_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_INPOD_UDS), PathBuf::from);
        ClientConfig::new(uds)
    }
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("stopped")]
    Stopped,
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("the node agent closed the connection")]
    Closed,
    #[error("cannot send the hello: {0}")]
    Hello(io::Error),
    #[error("cannot receive: {0}")]
    Recv(io::Error),
    #[error("cannot send an ack: {0}")]
    Ack(io::Error),
    #[error("bad packet from the node agent: {0}")]
    BadPacket(String),
    #[error("bad request from the node agent: {0}")]
    BadRequest(#[from] DecodeError),
    #[error("request out of order: {0}")]
    OutOfOrder(ApplyError),
}

/// Handle on the running client. Dropping it stops the thread too (without returning the
/// handler).
#[derive(Debug)]
pub struct Client<H: PodHandler> {
    /// Shut down to wake and stop the thread (its peer end reads EOF).
    stop: SeqPacket,
    thread: Option<JoinHandle<H>>,
    metrics: Arc<Metrics>,
}

/// Starts the `zring-inpod` thread.
pub fn spawn<H: PodHandler>(config: ClientConfig, handler: H) -> io::Result<Client<H>> {
    let (stop, stop_rx) = SeqPacket::pair()?;
    let metrics = Arc::new(Metrics::default());
    let m = metrics.clone();
    let thread = std::thread::Builder::new()
        .name("zring-inpod".into())
        .spawn(move || run(config, handler, &m, &stop_rx))?;
    Ok(Client {
        stop,
        thread: Some(thread),
        metrics,
    })
}

impl<H: PodHandler> Client<H> {
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops the thread, after it removed every pod through the handler, and returns the
    /// handler.
    pub fn stop(mut self) -> H {
        let _ = self.stop.shutdown();
        let thread = self.thread.take().expect("joined once");
        match thread.join() {
            Ok(handler) => handler,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl<H: PodHandler> Drop for Client<H> {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.stop.shutdown();
            let _ = thread.join();
        }
    }
}

fn run<H: PodHandler>(
    config: ClientConfig,
    mut handler: H,
    metrics: &Metrics,
    stop: &SeqPacket,
) -> H {
    let mut registry = Registry::default();
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    info!(uds = %config.uds.display(), "in-pod mode: connecting to the node agent");
    loop {
        let end = match SeqPacket::connect(&config.uds) {
            Ok(conn) => {
                Metrics::inc(&metrics.connections);
                registry.begin_connection(metrics);
                let end = session(
                    &config,
                    &conn,
                    &mut registry,
                    &mut handler,
                    metrics,
                    stop,
                    &mut backoff,
                );
                metrics.ready.store(false, Ordering::Relaxed);
                end
            }
            Err(e) => {
                Metrics::inc(&metrics.connect_failures);
                SessionEnd::Connect(e)
            }
        };
        if matches!(end, SessionEnd::Stopped) {
            break;
        }
        let delay = backoff.next_delay();
        match &end {
            SessionEnd::Closed => info!(retry_in = ?delay, "node agent connection ended"),
            SessionEnd::Connect(e) => {
                warn!(uds = %config.uds.display(), error = %e, retry_in = ?delay, "cannot reach the node agent; is istio-cni healthy?")
            }
            other => warn!(error = %other, retry_in = ?delay, "node agent connection ended"),
        }
        // A failed poll (it cannot fail but for ENOMEM) just retries sooner.
        if wait(&[stop], Some(delay)).is_ok_and(|ready| ready[0]) {
            break;
        }
    }
    info!(
        pods = registry.enrolled().len(),
        "in-pod client stopping: removing every pod"
    );
    registry.remove_all(&mut handler, metrics);
    handler
}

/// One connection, from hello to its end.
fn session(
    config: &ClientConfig,
    conn: &SeqPacket,
    registry: &mut Registry,
    handler: &mut dyn PodHandler,
    metrics: &Metrics,
    stop: &SeqPacket,
    backoff: &mut Backoff,
) -> SessionEnd {
    if let Err(e) = conn.set_send_timeout(config.send_timeout) {
        return SessionEnd::Hello(e);
    }
    if let Err(e) = conn.send(&codec::hello(), &[]) {
        return SessionEnd::Hello(e);
    }
    info!("connected to the node agent");
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut next_retry: Option<Instant> = None;
    loop {
        if registry.has_pending() {
            let at = *next_retry.get_or_insert_with(|| Instant::now() + config.retry_interval);
            if Instant::now() >= at {
                registry.retry_pending(handler, metrics);
                next_retry = None;
                continue;
            }
        } else {
            next_retry = None;
        }
        let timeout = next_retry.map(|at| at.saturating_duration_since(Instant::now()));
        let ready = match wait(&[conn, stop], timeout) {
            Ok(ready) => ready,
            Err(e) => return SessionEnd::Recv(e),
        };
        if ready[1] {
            return SessionEnd::Stopped;
        }
        if !ready[0] {
            continue;
        }
        let packet = match conn.recv(&mut buf) {
            Ok(p) if p.len == 0 => return SessionEnd::Closed,
            Ok(p) => p,
            Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(RecvError::Io(e)) => return SessionEnd::Recv(e),
            Err(e @ (RecvError::Truncated(_) | RecvError::ControlTruncated)) => {
                Metrics::inc(&metrics.bad_requests);
                let text = e.to_string();
                error!(error = %text, "unusable packet from the node agent");
                let _ = conn.send(&codec::ack(Err(&text)), &[]);
                return SessionEnd::BadPacket(text);
            }
        };
        let request =
            match codec::decode(&buf[..packet.len], packet.fds, uds::is_netns, uds::file_id) {
                Ok(r) => r,
                Err(e) => {
                    Metrics::inc(&metrics.bad_requests);
                    error!(error = %e, "bad request from the node agent");
                    let _ = conn.send(&codec::ack(Err(&e.to_string())), &[]);
                    return SessionEnd::BadRequest(e);
                }
            };
        let kind = request.kind();
        debug!(kind, "request from the node agent");
        let outcome = registry.apply(request, handler, metrics);
        let sent = match &outcome {
            Ok(()) => conn.send(&codec::ack(Ok(())), &[]),
            Err(e) => conn.send(&codec::ack(Err(&e.to_string())), &[]),
        };
        if let Err(e) = sent {
            return SessionEnd::Ack(e);
        }
        match outcome {
            Ok(()) if kind == "snapshot_sent" => backoff.reset(),
            Ok(()) => {}
            Err(e) if e.ends_connection() => {
                error!(error = %e, "request out of order from the node agent");
                return SessionEnd::OutOfOrder(e);
            }
            Err(_) => {}
        }
    }
}

/// Waits for any of `sockets` to be readable, up to `timeout`.
fn wait(sockets: &[&SeqPacket], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let fds: Vec<_> = sockets.iter().map(|s| s.as_fd()).collect();
    uds::wait_readable(&fds, timeout)
}

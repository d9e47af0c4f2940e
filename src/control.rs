//! The control thread's work once the cores run: one tokio current-thread runtime driving a few
//! concurrent loops, none of which ever touches a core directly.
//!
//! - the config source: either the `LOCAL_XDS_PATH` poller or the Delta ADS client (never both;
//!   `config` refuses that), each publishing a new `Snapshot` into `Shared::snapshot`;
//! - the certificate loop: `CertManager::sync` after every published snapshot and every
//!   [`CERT_TICK`], publishing into `Shared::certs` (and each identity's latest failure into
//!   the admin state, for `/config_dump`);
//! - a heartbeat every [`HEARTBEAT`] into `Shared::health`, so liveness notices a stalled control
//!   thread (the admin, metrics and readiness servers run on their own thread, `admin::spawn`,
//!   so a flood of scrapes never delays this one);
//! - the drain trigger: SIGTERM, SIGINT or `/quitquitquit` (`admin::State::shutdown`) start a
//!   drain (`drain`); `run` returns once it is over (every connection done, or the deadline),
//!   and the process exits 0. The other loops keep running meanwhile;
//! - serving: the `serve` future `app` hands in waits for the first complete configuration
//!   ([`first_complete_state`]), then opens the cores; its failure (a core cannot bind) ends
//!   `run` with that error;
//! - node mode: this node's addresses, refreshed every [`OWN_ADDRS_TICK`] into
//!   `Shared::own_addrs` ([`refresh_own_addrs`]), where the outbound route refuses connections
//!   that would reach zring itself.
//!
//! The loops run interleaved on this one thread (`tokio::join!`), so they share plain
//! references; a CA that hangs delays only certificate work, never the xDS stream (every CA call
//! has a timeout and awaits). Publication is an `ArcSwap::store`: a core that loaded the previous
//! snapshot finishes its connection with it, the next connection sees the new one.
//!
//! Invariant: the snapshot is stored before the "published snapshot" line is logged and before
//! the certificate loop is woken, so certificates always follow the snapshot that needs them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::admin;
use crate::config::ProxyMode;
use crate::core::Shared;
use crate::identity::CertManager;
use crate::net::own::OwnAddrs;
use crate::state::Snapshot;
use crate::xds::client::{AdsClient, InitialSync};
use crate::xds::local::LocalSource;

/// How often certificates are checked for renewal when no snapshot arrives.
pub const CERT_TICK: Duration = Duration::from_secs(1);
/// How often, while start-up waits for the first complete configuration, the log says what is
/// still missing (once at once, then at this period).
pub const WAITING_LOG_PERIOD: Duration = Duration::from_secs(30);
/// How often node mode re-reads this node's addresses.
pub const OWN_ADDRS_TICK: Duration = Duration::from_secs(1);
/// How often the control thread tells `core::Health` it still turns.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Where snapshots come from after start-up.
#[derive(Debug)]
pub enum Source {
    /// No source: the start-up snapshot (empty) stays.
    None,
    Local {
        source: LocalSource,
        poll: Duration,
    },
    /// Boxed: the client is large and the enum is built once.
    Xds(Box<AdsClient>),
}

/// Runs the control loops until a shutdown is requested, or until `serve` (which starts the
/// cores once it may) fails. What `serve` returns is kept until `run` returns.
pub async fn run<S>(
    shared: Arc<Shared>,
    source: Source,
    mut certs: CertManager,
    admin: admin::State,
    serve: impl Future<Output = anyhow::Result<S>>,
) -> anyhow::Result<()> {
    let changed = Notify::new();
    let publish = |snapshot: Snapshot| {
        let snapshot = Arc::new(snapshot);
        // Before the store, so a core that sees the new snapshot finds what it changed.
        shared
            .policy_changes
            .record(&shared.snapshot.load(), &snapshot);
        shared.snapshot.store(snapshot.clone());
        log_snapshot(&snapshot);
        changed.notify_one();
    };
    let source = async {
        match source {
            Source::None => std::future::pending::<()>().await,
            Source::Local { mut source, poll } => loop {
                tokio::time::sleep(poll).await;
                match source.reload_if_changed() {
                    Ok(None) => {}
                    Ok(Some(snapshot)) => publish(snapshot),
                    Err(e) => error!(
                        "rejected {}: {e:#}; keeping the last good snapshot",
                        source.path().display()
                    ),
                }
            },
            Source::Xds(client) => client.run(publish).await,
        }
    };
    let enrolled = certs.enrolled();
    let certificates = async {
        loop {
            let snapshot = shared.snapshot.load_full();
            let synced = certs
                .sync(
                    &shared.certs,
                    &snapshot,
                    &shared.config.node_name,
                    SystemTime::now(),
                )
                .await;
            admin
                .cert_failures
                .record(&shared.certs.load(), &synced.failed);
            tokio::select! {
                () = changed.notified() => {}
                () = enrolled.changed() => {}
                () = tokio::time::sleep(CERT_TICK) => {}
            }
        }
    };
    let shutdown = admin.shutdown.clone();
    let heartbeat = async {
        loop {
            shared.health.beat_control();
            tokio::time::sleep(HEARTBEAT).await;
        }
    };
    // A drain (SIGTERM, SIGINT, `/quitquitquit`) runs beside the other loops, which keep
    // serving config and certificates until every connection is done; then `run`
    // returns and the process exits.
    let drain = async {
        let why = tokio::select! {
            why = signalled() => why,
            () = shutdown.notified() => "/quitquitquit",
        };
        info!("{why}: draining");
        shared.drain.start();
        crate::drain::wait(&shared.drain).await;
    };
    let serving = async {
        let _serving = serve.await?;
        std::future::pending::<anyhow::Result<()>>().await
    };
    let own_addrs = async {
        if shared.config.proxy_mode != ProxyMode::Node {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(OWN_ADDRS_TICK).await;
            refresh_own_addrs(&shared);
        }
    };
    tokio::select! {
        _ = async { tokio::join!(source, certificates, heartbeat, own_addrs) } => Ok(()),
        r = serving => r,
        () = drain => Ok(()),
    }
}

/// Resolves once `sync` is complete: addresses and authorizations have both arrived (the local
/// file and no source count as complete at once). Meanwhile logs what is missing, at once and
/// every [`WAITING_LOG_PERIOD`].
pub async fn first_complete_state(sync: &InitialSync) {
    loop {
        if sync.is_done() {
            return;
        }
        warn!(
            missing = sync.missing().join(", "),
            "not serving yet: waiting for the first complete configuration from istiod \
             (listeners unbound, readiness 503)"
        );
        tokio::select! {
            () = sync.wait() => return,
            () = tokio::time::sleep(WAITING_LOG_PERIOD) => {}
        }
    }
}

/// Node mode: reads this netns's interface addresses (where a captured connection would reach
/// zring itself) and publishes them when they changed; on a read error keeps the last ones.
pub fn refresh_own_addrs(shared: &Shared) {
    let now = match crate::sys::ifaddrs::interface_addrs() {
        Ok(ips) => OwnAddrs::node(ips),
        Err(e) => {
            warn!("cannot read this node's addresses, keeping the last ones: {e}");
            return;
        }
    };
    if **shared.own_addrs.load() != now {
        info!(addresses = ?now.ips(), "this node's addresses (zring's own ports refused there)");
        shared.own_addrs.store(Arc::new(now));
    }
}

/// Resolves with the signal's name on SIGTERM or SIGINT; never, if they cannot be handled.
async fn signalled() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            error!("cannot handle SIGTERM/SIGINT, drain on signal disabled: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

pub fn log_snapshot(s: &Snapshot) {
    info!(
        workloads = s.workload_count(),
        services = s.service_count(),
        policies = s.policy_count(),
        "published snapshot"
    );
}

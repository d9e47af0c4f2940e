//! The control thread's work once the cores run: one tokio current-thread runtime driving up to
//! three concurrent loops, none of which ever touches a core directly.
//!
//! - the config source: either the `LOCAL_XDS_PATH` poller or the Delta ADS client (never both;
//!   `config` refuses that), each publishing a new `Snapshot` into `Shared::snapshot`;
//! - the certificate loop: `CertManager::sync` after every published snapshot and every
//!   [`CERT_TICK`], publishing into `Shared::certs` (and each identity's latest failure into
//!   the admin state, for `/config_dump`);
//! - the admin (15000), metrics (15020) and readiness (15021) servers (`admin::serve`).
//!
//! `run` returns once `/quitquitquit` has been answered (`admin::State::shutdown`); the
//! process then exits (drain of live connections is not implemented yet).
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
use tracing::{error, info};

use crate::admin::{self, Listeners};
use crate::core::Shared;
use crate::identity::CertManager;
use crate::state::Snapshot;
use crate::xds::client::AdsClient;
use crate::xds::local::LocalSource;

/// How often certificates are checked for renewal when no snapshot arrives.
pub const CERT_TICK: Duration = Duration::from_secs(1);

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

/// Runs the control loops until a shutdown is requested.
pub async fn run(
    shared: Arc<Shared>,
    source: Source,
    mut certs: CertManager,
    listeners: Listeners,
    admin: admin::State,
) {
    let changed = Notify::new();
    let publish = |snapshot: Snapshot| {
        let snapshot = Arc::new(snapshot);
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
                () = tokio::time::sleep(CERT_TICK) => {}
            }
        }
    };
    let shutdown = admin.shutdown.clone();
    let servers = admin::serve(listeners, admin.clone());
    tokio::select! {
        _ = async { tokio::join!(source, certificates, servers) } => {}
        () = shutdown.notified() => info!("shutting down"),
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

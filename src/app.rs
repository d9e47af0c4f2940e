//! Process assembly: start-up order, the control loop, and the published state.
//!
//! Runs on the main thread, which becomes the control thread once the cores are up: it loads
//! the first snapshot (a broken config at start-up is fatal, with a clear error), resolves the
//! driver, starts the cores, then watches `LOCAL_XDS_PATH` and publishes each new valid
//! snapshot through arc-swap. A broken edit is logged and the last good snapshot stays.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::core::{self, Shared};
use crate::identity::{CertManager, DevCa};
use crate::state::Snapshot;
use crate::xds::local::{self, LocalSource};

pub fn run(config: Config) -> anyhow::Result<()> {
    let config = Arc::new(config);
    match crate::sys::raise_nofile_limit() {
        Ok(n) => info!(nofile = n, "file descriptor limit"),
        Err(e) => warn!("cannot raise the file descriptor limit: {e}"),
    }

    let mut source = config
        .local_xds_path
        .as_ref()
        .map(|p| LocalSource::new(p.clone()));
    let first = match source.as_mut() {
        None => Snapshot::empty(),
        Some(src) => src
            .reload_if_changed()
            .with_context(|| format!("LOCAL_XDS_PATH={}", src.path().display()))?
            .unwrap_or_else(Snapshot::empty),
    };
    log_snapshot(&first);

    let ca = DevCa::load_or_create(&config.dev_ca_dir).with_context(|| {
        format!(
            "development CA in ZRING_DEV_CA_DIR={}",
            config.dev_ca_dir.display()
        )
    })?;
    info!(dir = %config.dev_ca_dir.display(), "using the built-in development CA");
    let certs = CertManager::new(ca);
    let store = ArcSwap::from_pointee(certs.empty_store()?);
    certs.sync(&store, &first, &config.node_name, SystemTime::now())?;

    let (driver, fallback) = core::resolve_driver(config.driver, config.uring_entries)?;
    if let Some(why) = fallback {
        warn!("io_uring unavailable, falling back to epoll: {why}");
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        snapshot: ArcSwap::from_pointee(first),
        certs: store,
    });
    let cores = core::start(shared.clone(), driver)?;
    info!(
        cores = cores.len(),
        driver = driver.name(),
        node = %config.node_name,
        "zring ready"
    );

    // The control loop: configuration edits and certificate renewals. It has nothing else to
    // do yet; a poll keeps file watching dependency-free and works on every filesystem
    // (configmaps swap symlinks). Cores run until the process exits.
    loop {
        #[expect(clippy::disallowed_methods, reason = "the control thread, not a core")]
        std::thread::sleep(config.local_xds_poll);
        if let Some(src) = source.as_mut() {
            match src.reload_if_changed() {
                Ok(None) => {}
                Ok(Some(snapshot)) => {
                    let snapshot = Arc::new(snapshot);
                    shared.snapshot.store(snapshot.clone());
                    log_snapshot(&snapshot);
                }
                Err(e) => error!(
                    "rejected {}: {e:#}; keeping the last good snapshot",
                    src.path().display()
                ),
            }
        }
        let snapshot = shared.snapshot.load();
        if let Err(e) = certs.sync(
            &shared.certs,
            &snapshot,
            &config.node_name,
            SystemTime::now(),
        ) {
            error!("certificate renewal failed, still serving the current certificates: {e}");
        }
    }
}

fn log_snapshot(s: &Snapshot) {
    info!(
        workloads = s.workloads().count(),
        services = s.services().count(),
        policies = s.policies().count(),
        "published snapshot"
    );
}

/// Validates the environment and the local config, then reports; `zring check`.
pub fn check(config: &Config) -> anyhow::Result<String> {
    let mut out = format!(
        "config ok: node={} cores={} driver={:?}\n",
        config.node_name, config.cores, config.driver
    );
    if let Some(p) = &config.local_xds_path {
        let s = local::load(p).with_context(|| format!("LOCAL_XDS_PATH={}", p.display()))?;
        out.push_str(&format!(
            "{}: {} workloads, {} services, {} policies\n",
            p.display(),
            s.workloads().count(),
            s.services().count(),
            s.policies().count()
        ));
    }
    Ok(out)
}

//! Process assembly: start-up order, then the control thread.
//!
//! Runs on the main thread, which becomes the control thread: it loads the first snapshot from
//! `LOCAL_XDS_PATH` (a broken config at start-up is fatal, with a clear error) or starts empty
//! when xDS will fill it, sets up the certificate issuer (the Istio CA when `CA_ADDRESS` is
//! set, the development CA otherwise), resolves the driver, spawns the cores held at their
//! start gate (nothing bound), starts the `zring-admin` thread serving the admin, metrics and
//! readiness servers (bound here, before the cores start, so a port in use fails start-up; their
//! own thread, so scrapes never delay the control thread), and then runs `control::run` on a
//! tokio current-thread runtime: config updates (file or Delta ADS) and certificate rotation,
//! published through arc-swap, and `serve`: once the first complete configuration is in (xDS: one
//! response of each type; the local file at once), the cores bind and serve, readiness
//! follows, and `zring ready` is logged. Before that a restart or a rolling update never serves
//! a connection without its policies.
//!
//! In-pod mode (`PROXY_MODE=shared`): the cores open no listener of their own; the
//! `zring-inpod` thread connects to istio-cni's node agent (`INPOD_UDS`) and, for each pod it
//! hands over, binds 15001/15006/15008 inside the pod's netns for every core
//! (`inpod::ListenerHandler`), with the `zring-podns` thread making upstream sockets inside pods.
//! Readiness then also waits for the agent's snapshot to be acknowledged.
//!
//! Stopping: SIGTERM, SIGINT or `/quitquitquit` starts a drain (see `drain`'s module doc): the
//! control thread flips `Shared::drain`; each core's housekeeping task notices within one tick,
//! closes its listeners and sends GOAWAY on its HBONE connections; the control thread waits
//! until every proxied connection has finished or the drain deadline has passed, serving config,
//! certificates and scrapes meanwhile. Then `control::run` returns, `run` returns `Ok`, and
//! `main` exits with status 0 (connections still open at the deadline are cut by the exit).

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use arc_swap::ArcSwap;
use tracing::{info, warn};

use crate::admin::{self, CertFailures, Listeners, Readiness};
use crate::config::{Config, ProxyMode};
use crate::control::{self, Source};
use crate::core::{Driver, Faults, Health, Shared};
use crate::drain::Drain;
use crate::identity::{CertManager, DevCa, IstioCa};
use crate::logging::LogControl;
use crate::metrics::Registry;
use crate::runtime;
use crate::state::Snapshot;
use crate::xds::client::{self, AdsClient, InitialSync};
use crate::xds::local::{self, LocalSource};

pub fn run(config: Config, logs: Option<LogControl>) -> anyhow::Result<()> {
    let faults = test_faults(&config)?;
    let config = Arc::new(config);
    let metrics = Arc::new(Registry::new());
    if let Some(counter) = logs.as_ref().and_then(LogControl::dropped_lines) {
        metrics.watch_dropped_logs(counter);
    }
    match crate::sys::raise_nofile_limit() {
        Ok(n) => info!(nofile = n, "file descriptor limit"),
        Err(e) => warn!("cannot raise the file descriptor limit: {e}"),
    }
    match crate::sys::memcpy::current() {
        crate::sys::memcpy::Tuning::NotApplied => {
            warn!("large copies run on glibc's default, slow on this AMD CPU (see zring check)")
        }
        tuning => info!(%tuning, "large copies"),
    }
    // The control thread's runtime; built first because gRPC channels need its context.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("zring-control")
        .build()
        .context("control thread runtime")?;
    let _context = runtime.enter();

    let mut local_source = config
        .local_xds_path
        .as_ref()
        .map(|p| LocalSource::new(p.clone()));
    let first = match local_source.as_mut() {
        None => Snapshot::empty(),
        Some(src) => src
            .reload_if_changed()
            .with_context(|| format!("LOCAL_XDS_PATH={}", src.path().display()))?
            .unwrap_or_else(Snapshot::empty),
    };
    control::log_snapshot(&first);
    // The readiness signal (for the 15021 endpoint): with xDS, every type received once;
    // otherwise the start-up snapshot is the whole config.
    let initial_sync = match config.xds {
        Some(_) => InitialSync::pending(),
        None => InitialSync::complete(),
    };
    let source = match (local_source, &config.xds) {
        (Some(source), _) => Source::Local {
            source,
            poll: config.local_xds_poll,
        },
        (None, Some(target)) => {
            info!(
                address = target.address(),
                "configuration from istiod (Delta ADS)"
            );
            Source::Xds(Box::new(
                AdsClient::new(target.clone(), client::node(&config), initial_sync.clone())
                    .with_metrics(metrics.xds().clone()),
            ))
        }
        (None, None) => Source::None,
    };

    let mut certs = match &config.ca {
        Some(target) => {
            let roots = crate::grpc::load_certs(&config.ca_root_ca)
                .map_err(|e| anyhow::anyhow!("CA_ROOT_CA={}: {e}", config.ca_root_ca.display()))?;
            let ca = IstioCa::new(target.clone(), roots, config.secret_ttl, &config.cluster_id)
                .with_context(|| format!("CA_ADDRESS={}", target.address()))?
                .with_root_file(&config.ca_root_ca);
            info!(
                address = target.address(),
                "workload certificates from the Istio CA"
            );
            CertManager::new(ca)
        }
        None => {
            let ca = DevCa::load_or_create(&config.dev_ca_dir).with_context(|| {
                format!(
                    "development CA in ZRING_DEV_CA_DIR={}",
                    config.dev_ca_dir.display()
                )
            })?;
            info!(dir = %config.dev_ca_dir.display(), "using the built-in development CA");
            CertManager::new(ca)
        }
    };
    let store = ArcSwap::from_pointee(certs.empty_store()?);
    // With the dev CA this issues everything before the cores start; with the Istio CA a
    // failure here is retried by the control loop (HBONE waits for the certificates).
    runtime.block_on(certs.sync(&store, &first, &config.node_name, SystemTime::now()));

    let listeners = Listeners::bind(&config)?;
    let readiness = Arc::new(Readiness::new(initial_sync.clone()));
    let (driver, fallback) = runtime::resolve_driver(config.driver, config.uring_entries)?;
    if let Some(why) = fallback {
        warn!("io_uring unavailable, falling back to epoll: {why}");
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        snapshot: ArcSwap::from_pointee(first),
        certs: store,
        drain: Drain::new(config.cores, config.drain_deadline),
        metrics,
        own_addrs: Default::default(),
        policy_changes: Default::default(),
        health: Health::new(config.cores),
        faults,
    });
    let (mailboxes, inboxes) = match config.proxy_mode {
        ProxyMode::Shared => crate::inpod::handoff::pairs(config.cores)
            .context("in-pod mode: mail sockets for the cores")?,
        ProxyMode::Node => (Vec::new(), Vec::new()),
    };
    if config.proxy_mode == ProxyMode::Node {
        control::refresh_own_addrs(&shared);
    }
    let cores = runtime::spawn_with_pods(shared.clone(), driver, inboxes)?;
    let admin = admin::State {
        shared: shared.clone(),
        readiness: readiness.clone(),
        logs,
        cert_failures: Arc::new(CertFailures::default()),
        shutdown: Default::default(),
        admin_metrics: Default::default(),
    };
    admin.watch_metrics();
    // Its own thread from here on: scrapes and probes never wait for the control thread.
    admin::spawn(listeners, admin.clone())?;
    let start = Start {
        shared: shared.clone(),
        cores,
        mailboxes,
        readiness,
        initial_sync,
        driver,
        enrolled: certs.enrolled(),
    };
    runtime.block_on(control::run(shared, source, certs, admin, serve(start)))?;
    info!("zring exiting");
    Ok(())
}

/// The test-only fault hook (`ZRING_TEST_FAULTS`): refused in a Kubernetes pod, loudly
/// announced anywhere else.
fn test_faults(config: &Config) -> anyhow::Result<Faults> {
    let Some(spec) = &config.ops.test_faults else {
        return Ok(Faults::default());
    };
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty()) {
        anyhow::bail!(
            "ZRING_TEST_FAULTS is for tests only and is refused in a Kubernetes pod; unset it"
        );
    }
    let faults = Faults::parse(spec)
        .map_err(|e| anyhow::anyhow!("invalid ZRING_TEST_FAULTS={spec:?}: {e}"))?;
    tracing::error!(
        faults = %spec,
        "ZRING_TEST_FAULTS is set: connections to these ports will crash or stall this \
         process on purpose. For tests only; never set it in production."
    );
    Ok(faults)
}

/// What serving needs once the first complete configuration is in.
struct Start {
    shared: Arc<Shared>,
    cores: runtime::Gated,
    mailboxes: Vec<crate::inpod::handoff::Mailbox>,
    readiness: Arc<Readiness>,
    initial_sync: Arc<InitialSync>,
    driver: Driver,
    /// The in-pod pods' identities, whose certificates the certificate loop requests at add.
    enrolled: Arc<crate::identity::Enrolled>,
}

/// What must live as long as zring serves.
struct Serving {
    _cores: Vec<std::thread::JoinHandle<()>>,
    /// Dropping it stops the node agent client, which removes every pod.
    _inpod: Option<crate::inpod::client::Client<crate::inpod::ListenerHandler>>,
}

/// Runs on the control thread beside the config source: waits for the first complete
/// configuration (addresses and authorizations; the local file is complete at once; node
/// mode keeps the capture set from the first addresses on), then lets the cores bind their
/// listeners (in-pod mode: starts taking pods from the node agent),
/// marks the cores started for readiness and logs `zring ready`. Until then nothing listens on
/// 15001/15006/15008 and readiness answers 503, so no connection is ever served without its
/// policies, not even by a process started beside an old one on the same ports.
async fn serve(start: Start) -> anyhow::Result<Serving> {
    let Start {
        shared,
        cores,
        mailboxes,
        readiness,
        initial_sync,
        driver,
        enrolled,
    } = start;
    // Node mode: the capture set follows the snapshot from the first addresses on (not before:
    // a process started beside an old one must not empty the set with the empty snapshot it
    // starts from, or the pods would bypass capture). Captured meanwhile, their connections
    // are refused until the cores bind.
    let keeper = async {
        if shared.config.proxy_mode != ProxyMode::Node {
            return Ok(());
        }
        initial_sync.wait_for_addresses().await;
        readiness.watch_capture(shared.metrics.capture_set().clone());
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let snapshots = shared.clone();
            crate::capture::enrolled::Keeper::start(
                crate::capture::Place::Here,
                &shared.config.node_name,
                shared.config.ipv6_enabled,
                move || snapshots.snapshot.load_full(),
                shared.metrics.capture_set().clone(),
            )
        })
        .await?
        .context("starting the capture set keeper")
    };
    let (kept, ()) = tokio::join!(keeper, control::first_complete_state(&initial_sync));
    kept?;
    let cores = tokio::task::spawn_blocking(move || cores.open())
        .await
        .context("opening the cores")??;
    let config = &shared.config;
    let inpod = match config.proxy_mode {
        ProxyMode::Node => None,
        ProxyMode::Shared => {
            let factory = crate::inpod::factory::SocketFactory::spawn()
                .context("in-pod mode: starting the pod socket factory")?;
            let handler = crate::inpod::ListenerHandler::new(
                mailboxes,
                factory,
                config.packet_mark,
                config.listen_backlog,
            )
            .with_certificates(enrolled, &config.trust_domain)
            .with_dns(config.dns.enabled.then(|| config.dns.bind_addr(true)))
            .with_ipv6(config.ipv6_enabled);
            let client = crate::inpod::client::spawn(
                crate::inpod::ClientConfig::new(&config.inpod_uds),
                handler,
            )
            .context("in-pod mode: starting the node agent client")?;
            shared.metrics.watch_inpod(client.metrics().clone());
            readiness.watch_inpod(client.metrics().clone());
            Some(client)
        }
    };
    readiness.cores_started();
    let snapshot = shared.snapshot.load();
    info!(
        cores = cores.len(),
        driver = driver.name(),
        node = %config.node_name,
        mode = config.proxy_mode.name(),
        workloads = snapshot.workload_count(),
        policies = snapshot.policy_count(),
        "zring ready"
    );
    Ok(Serving {
        _cores: cores,
        _inpod: inpod,
    })
}

/// Validates the environment and the local config, then reports; `zring check`.
pub fn check(config: &Config) -> anyhow::Result<String> {
    let mut out = format!(
        "config ok: node={} cores={} driver={:?} mode={}\nlarge copies: {}\n",
        config.node_name,
        config.cores,
        config.driver,
        config.proxy_mode.name(),
        crate::sys::memcpy::current()
    );
    if config.proxy_mode == ProxyMode::Shared {
        out.push_str(&format!(
            "in-pod: pods from istio-cni at {}\n",
            config.inpod_uds.display()
        ));
    }
    match &config.xds {
        Some(t) => out.push_str(&format!("xds: Delta ADS from {}\n", t.address())),
        None => out.push_str("xds: off\n"),
    }
    match &config.ca {
        Some(t) => {
            crate::grpc::load_certs(&config.ca_root_ca)
                .map_err(|e| anyhow::anyhow!("CA_ROOT_CA={}: {e}", config.ca_root_ca.display()))?;
            out.push_str(&format!("ca: Istio CA at {}\n", t.address()));
        }
        None => out.push_str("ca: built-in development CA\n"),
    }
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

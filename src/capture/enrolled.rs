//! The set of enrolled pods that node capture takes (`table ip zring`'s `ztunnel-pods-ips`),
//! kept in step with zring's snapshot by zring itself.
//!
//! Enrolled means what istiod means: a workload on this node (`node` = `NODE_NAME`) whose
//! protocol is HBONE because the pod was redirected into the mesh, not because it speaks HBONE
//! itself: istiod also marks pods that terminate HBONE on their own (waypoints, gateways,
//! sidecars) HBONE, with `native_tunnel` set, and those must not be captured. Host-network
//! workloads share the node's address and are never in the set; the table is `ip`, so only
//! IPv4 addresses are. [`enrolled_ips`] is that rule, pure.
//!
//! [`Keeper`] runs on its own small thread (`zring-capture-set`), never a core and never the
//! control thread's runtime, because every update runs `nft` and waits for it. It looks at the
//! published snapshot every [`TICK`] (one pointer compare when nothing was published) and, only
//! when the set of IPs changes, applies the difference in one `nft -f` transaction
//! (`add element` / `delete element`): atomic, and incremental so an open flow's pod never
//! leaves the set for a moment. After a failure, or when the set in the kernel no longer holds
//! what was applied (someone re-ran `zring redirect apply`, which recreates the set empty;
//! checked every [`VERIFY_EVERY`]), the next update flushes and refills the set in one
//! transaction instead. Failures are logged (once per distinct error), counted
//! (`zring_capture_set_updates_total{result="error"}`) and retried after a backoff doubling
//! from [`RETRY_MIN`] to [`RETRY_MAX`].
//!
//! The first update runs in [`Keeper::start`], before the cores serve, so `zring ready` is
//! never logged while the snapshot's pods are still outside capture.
//!
//! Each tick first runs the capture watch (`super::watch`, settings from the environment):
//! when it restores the table it installs the current set with it, and the keeper takes that as
//! applied.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::watch::{self, Outcome, Watch};
use super::{Error, POD_SET, Place, TABLE};
use crate::metrics::CaptureSetMetrics;
use crate::state::{NetworkMode, Protocol, Snapshot};

/// How often the keeper looks for a new snapshot.
pub const TICK: Duration = Duration::from_millis(50);
/// How often the set in the kernel is compared with what was applied.
pub const VERIFY_EVERY: Duration = Duration::from_secs(10);
/// First retry delay after a failed update.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// This node's enrolled pod IPs in `snapshot` (see the module doc for the rule).
pub fn enrolled_ips(snapshot: &Snapshot, node: &str) -> BTreeSet<Ipv4Addr> {
    snapshot
        .workloads()
        .filter(|w| {
            &*w.node == node
                && w.protocol == Protocol::Hbone
                && !w.native_tunnel
                && w.network_mode == NetworkMode::Standard
        })
        .flat_map(|w| w.workload_ips.iter())
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// The `nft -f` script that turns the set from `applied` into `wanted`: the difference, or
/// (when what the kernel holds is unknown) a flush and a refill. `None` when nothing changes.
pub fn update_script(
    applied: Option<&BTreeSet<Ipv4Addr>>,
    wanted: &BTreeSet<Ipv4Addr>,
) -> Option<String> {
    let set = format!("ip {TABLE} {POD_SET}");
    let list = |ips: &mut dyn Iterator<Item = &Ipv4Addr>| {
        ips.map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    let mut script = String::new();
    let (added, removed): (Vec<&Ipv4Addr>, Vec<&Ipv4Addr>) = match applied {
        None => {
            script.push_str(&format!("flush set {set}\n"));
            (wanted.iter().collect(), Vec::new())
        }
        Some(old) if old == wanted => return None,
        Some(old) => (
            wanted.difference(old).collect(),
            old.difference(wanted).collect(),
        ),
    };
    if !removed.is_empty() {
        let ips = list(&mut removed.into_iter());
        script.push_str(&format!("delete element {set} {{ {ips} }}\n"));
    }
    if !added.is_empty() {
        let ips = list(&mut added.into_iter());
        script.push_str(&format!("add element {set} {{ {ips} }}\n"));
    }
    Some(script)
}

/// The elements of the set as `nft list set` prints them.
pub fn parse_elements(listing: &str) -> BTreeSet<Ipv4Addr> {
    let Some(start) = listing.find("elements = {") else {
        return BTreeSet::new();
    };
    let rest = &listing[start + "elements = {".len()..];
    let body = rest.split('}').next().unwrap_or_default();
    body.split([',', '\n', ' ', '\t'])
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// Keeps the set in step with the snapshot, on its own thread.
pub struct Keeper {
    node: String,
    load: Box<dyn Fn() -> Arc<Snapshot> + Send>,
    metrics: Arc<CaptureSetMetrics>,
    place: Place<'static>,
    /// The snapshot last looked at (compared by pointer).
    seen: Option<Arc<Snapshot>>,
    /// What the kernel's set holds, as far as we know; `None` after a failure.
    applied: Option<BTreeSet<Ipv4Addr>>,
    /// After a failure: when to try again, and the delay after that.
    retry: Option<(Instant, Duration)>,
    last_error: Option<String>,
    next_verify: Instant,
    /// Whether the ruleset itself is still there (and puts it back).
    watch: Watch,
}

impl Keeper {
    /// Fills the set once from `load()`'s snapshot (on the calling thread), then keeps it on a
    /// thread of its own for the rest of the process. `place` is where the table lives: the
    /// namespace zring runs in, on a node.
    pub fn start(
        place: Place<'static>,
        node: &str,
        load: impl Fn() -> Arc<Snapshot> + Send + 'static,
        metrics: Arc<CaptureSetMetrics>,
    ) -> std::io::Result<()> {
        let settings = watch::Settings::from_env()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let watch = Watch::new(place, settings, metrics.clone());
        let mut keeper = Keeper {
            node: node.to_owned(),
            load: Box::new(load),
            metrics,
            place,
            seen: None,
            applied: None,
            retry: None,
            last_error: None,
            next_verify: Instant::now() + VERIFY_EVERY,
            watch,
        };
        keeper.step(Instant::now());
        std::thread::Builder::new()
            .name("zring-capture-set".into())
            .spawn(move || {
                loop {
                    std::thread::park_timeout(TICK);
                    keeper.step(Instant::now());
                }
            })
            .map(drop)
    }

    /// One look: a new snapshot, a due retry or a due verification may each lead to an update.
    fn step(&mut self, now: Instant) {
        let (load, node) = (&self.load, &self.node);
        let outcome = self
            .watch
            .step(now, self.applied.as_ref(), || enrolled_ips(&load(), node));
        match outcome {
            Outcome::Installed(set) => {
                self.applied = Some(set);
                self.retry = None;
            }
            Outcome::SetDrifted => {
                self.applied = None;
                self.retry = None;
            }
            Outcome::Nothing => {}
        }
        if let Some((at, _)) = self.retry
            && now < at
        {
            return;
        }
        if self.applied.is_some() && now >= self.next_verify {
            self.next_verify = now + VERIFY_EVERY;
            self.verify();
        }
        let snapshot = (self.load)();
        let fresh = !self
            .seen
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &snapshot));
        if !fresh && self.retry.is_none() && self.applied.is_some() {
            return;
        }
        self.seen = Some(snapshot.clone());
        let wanted = enrolled_ips(&snapshot, &self.node);
        let Some(script) = update_script(self.applied.as_ref(), &wanted) else {
            self.retry = None;
            return;
        };
        match self.place.nft(&["-f", "-"], Some(&script)) {
            Ok(_) => {
                self.metrics.updated(true);
                info!(
                    pods = wanted.len(),
                    change = %script.trim().replace('\n', "; "),
                    "capture set {POD_SET} updated"
                );
                self.applied = Some(wanted);
                self.retry = None;
                self.last_error = None;
            }
            Err(e) => self.failed(now, &e),
        }
    }

    /// Compares the kernel's set with what was applied; a difference forces a full refill.
    fn verify(&mut self) {
        let listing = self.place.nft(&["list", "set", "ip", TABLE, POD_SET], None);
        let drifted = match (&listing, &self.applied) {
            (Ok(text), Some(applied)) => parse_elements(text) != *applied,
            _ => true,
        };
        if drifted {
            warn!("capture set {POD_SET} no longer holds what zring applied; refilling it");
            self.applied = None;
        }
    }

    fn failed(&mut self, now: Instant, e: &Error) {
        self.metrics.updated(false);
        self.applied = None;
        let delay = self
            .retry
            .map_or(RETRY_MIN, |(_, d)| (d * 2).min(RETRY_MAX));
        self.retry = Some((now + delay, delay));
        let text = e.to_string();
        if self.last_error.as_deref() != Some(&text) {
            warn!(
                retry_in = ?delay,
                "cannot update capture set {POD_SET} (is `zring redirect apply` installed on \
                 this node?): {text}"
            );
            self.last_error = Some(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> BTreeSet<Ipv4Addr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn only_this_nodes_redirected_pods_are_enrolled() {
        let yaml = r#"
workloads:
- { uid: a, name: a, namespace: ns, workloadIps: ["10.244.1.8"], protocol: HBONE, node: a }
- { uid: a2, name: a2, namespace: ns, workloadIps: ["10.244.1.9", "fd00::9"], protocol: HBONE, node: a }
- { uid: tcp, name: tcp, namespace: ns, workloadIps: ["10.244.1.10"], protocol: TCP, node: a }
- { uid: wp, name: wp, namespace: ns, workloadIps: ["10.244.1.11"], protocol: HBONE, nativeTunnel: true, node: a }
- { uid: host, name: host, namespace: ns, workloadIps: ["172.31.0.11"], protocol: HBONE, networkMode: HostNetwork, node: a }
- { uid: b, name: b, namespace: ns, workloadIps: ["10.244.2.4"], protocol: HBONE, node: b }
"#;
        let snapshot = crate::xds::local::parse(yaml).expect("config");
        assert_eq!(
            enrolled_ips(&snapshot, "a"),
            ips(&["10.244.1.8", "10.244.1.9"])
        );
        assert_eq!(enrolled_ips(&snapshot, "b"), ips(&["10.244.2.4"]));
        assert!(enrolled_ips(&snapshot, "c").is_empty());
    }

    #[test]
    fn updates_are_the_difference_or_a_refill() {
        let old = ips(&["10.0.0.1", "10.0.0.2"]);
        let new = ips(&["10.0.0.2", "10.0.0.3"]);
        assert_eq!(update_script(Some(&old), &old), None);
        assert_eq!(
            update_script(Some(&old), &new).unwrap(),
            "delete element ip zring ztunnel-pods-ips { 10.0.0.1 }\n\
             add element ip zring ztunnel-pods-ips { 10.0.0.3 }\n"
        );
        assert_eq!(
            update_script(None, &new).unwrap(),
            "flush set ip zring ztunnel-pods-ips\n\
             add element ip zring ztunnel-pods-ips { 10.0.0.2, 10.0.0.3 }\n"
        );
        assert_eq!(
            update_script(None, &BTreeSet::new()).unwrap(),
            "flush set ip zring ztunnel-pods-ips\n"
        );
    }

    #[test]
    fn elements_parse_from_a_listing() {
        let listing = "table ip zring {\n\tset ztunnel-pods-ips {\n\t\ttype ipv4_addr\n\t\t\
                       elements = { 10.244.1.8, 10.244.1.9,\n\t\t\t     10.244.1.10 }\n\t}\n}\n";
        assert_eq!(
            parse_elements(listing),
            ips(&["10.244.1.8", "10.244.1.9", "10.244.1.10"])
        );
        assert!(parse_elements("set x {\n type ipv4_addr\n}").is_empty());
    }
}

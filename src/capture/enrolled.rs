//! The sets of enrolled pods that node capture takes (`ztunnel-pods-ips` in `table ip zring`
//! and in `table ip6 zring`), kept in step with zring's snapshot by zring itself.
//!
//! Enrolled means what istiod means: a workload on this node (`node` = `NODE_NAME`) whose
//! protocol is HBONE because the pod was redirected into the mesh, not because it speaks HBONE
//! itself: istiod also marks pods that terminate HBONE on their own (waypoints, gateways,
//! sidecars) HBONE, with `native_tunnel` set, and those must not be captured. Host-network
//! workloads share the node's address and are never in the set. A workload's IPv4 addresses go
//! to the `ip` table's set, its IPv6 addresses to the `ip6` table's (when the node has IPv6
//! capture; else they are left out, as there is no set to hold them). [`enrolled_ips`] is that
//! rule, pure.
//!
//! [`Keeper`] runs on its own small thread (`zring-capture-set`), never a core and never the
//! control thread's runtime, because every update runs `nft` and waits for it. It looks at the
//! published snapshot every [`TICK`] (one pointer compare when nothing was published) and, only
//! when the set of IPs changes, applies the difference in one `nft -f` transaction
//! (`add element` / `delete element`, both families' sets in the same transaction): atomic, and incremental so an open flow's pod never
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
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::watch::{self, Outcome, Watch};
use super::{Error, Family, POD_SET, Place, TABLE};
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

/// This node's enrolled pod IPs in `snapshot` of the families in `families` (see the module
/// doc for the rule).
pub fn enrolled_ips(snapshot: &Snapshot, node: &str, families: &[Family]) -> BTreeSet<IpAddr> {
    snapshot
        .workloads()
        .filter(|w| {
            &*w.node == node
                && w.protocol == Protocol::Hbone
                && !w.native_tunnel
                && w.network_mode == NetworkMode::Standard
        })
        .flat_map(|w| w.workload_ips.iter().copied())
        .filter(|ip| families.contains(&Family::of(*ip)))
        .collect()
}

/// The `nft -f` script that turns the sets from `applied` into `wanted`: the difference, or
/// (when what the kernel holds is unknown) a flush and a refill of each family's set in
/// `families`. `None` when nothing changes. Each address goes to its own family's set.
pub fn update_script(
    applied: Option<&BTreeSet<IpAddr>>,
    wanted: &BTreeSet<IpAddr>,
    families: &[Family],
) -> Option<String> {
    let set = |f: Family| format!("{} {TABLE} {POD_SET}", f.nft());
    let mut script = String::new();
    let (added, removed): (Vec<&IpAddr>, Vec<&IpAddr>) = match applied {
        None => {
            for f in families {
                script.push_str(&format!("flush set {}\n", set(*f)));
            }
            (wanted.iter().collect(), Vec::new())
        }
        Some(old) if old == wanted => return None,
        Some(old) => (
            wanted.difference(old).collect(),
            old.difference(wanted).collect(),
        ),
    };
    for (verb, ips) in [("delete", removed), ("add", added)] {
        for f in Family::ALL {
            let of_family: Vec<String> = ips
                .iter()
                .filter(|ip| Family::of(***ip) == f)
                .map(ToString::to_string)
                .collect();
            if !of_family.is_empty() {
                script.push_str(&format!(
                    "{verb} element {} {{ {} }}\n",
                    set(f),
                    of_family.join(", ")
                ));
            }
        }
    }
    Some(script)
}

/// The elements of the sets as `nft list set` (or `list table`) prints them, every set of the
/// listing: `Ipv4Addr`, `Ipv6Addr` or `IpAddr` (then both families).
pub fn parse_elements<T: FromStr + Ord>(listing: &str) -> BTreeSet<T> {
    let mut out = BTreeSet::new();
    let mut rest = listing;
    while let Some(start) = rest.find("elements = {") {
        rest = &rest[start + "elements = {".len()..];
        let body = rest.split('}').next().unwrap_or_default();
        out.extend(
            body.split([',', '\n', ' ', '\t'])
                .filter_map(|s| s.trim().parse().ok()),
        );
    }
    out
}

/// Keeps the set in step with the snapshot, on its own thread.
pub struct Keeper {
    node: String,
    load: Box<dyn Fn() -> Arc<Snapshot> + Send>,
    metrics: Arc<CaptureSetMetrics>,
    place: Place<'static>,
    /// The snapshot last looked at (compared by pointer).
    seen: Option<Arc<Snapshot>>,
    /// What the kernel's sets hold, as far as we know; `None` after a failure.
    applied: Option<BTreeSet<IpAddr>>,
    /// The families with a table: IPv4, and IPv6 where the kernel has it.
    families: Vec<Family>,
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
    /// namespace zring runs in, on a node. `ipv6_enabled` (`IPV6_ENABLED`): whether the IPv6
    /// table is kept at all (where the kernel has IPv6); off, only `table ip zring` is filled,
    /// watched and put back, and the pods' v6 addresses are in no set.
    pub fn start(
        place: Place<'static>,
        node: &str,
        ipv6_enabled: bool,
        load: impl Fn() -> Arc<Snapshot> + Send + 'static,
        metrics: Arc<CaptureSetMetrics>,
    ) -> std::io::Result<()> {
        let settings = watch::Settings::from_env()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let families: Vec<Family> = Family::ALL
            .into_iter()
            .filter(|f| *f == Family::V4 || (ipv6_enabled && super::ipv6_available(place)))
            .collect();
        let watch = Watch::new(place, settings, metrics.clone(), &families);
        let mut keeper = Keeper {
            families,
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
        let (load, node, families) = (&self.load, &self.node, &self.families);
        let outcome = self.watch.step(now, self.applied.as_ref(), || {
            enrolled_ips(&load(), node, families)
        });
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
        let wanted = enrolled_ips(&snapshot, &self.node, &self.families);
        let Some(script) = update_script(self.applied.as_ref(), &wanted, &self.families) else {
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

    /// Compares the kernel's sets with what was applied; a difference forces a full refill.
    fn verify(&mut self) {
        let listing: Result<String, Error> = self
            .families
            .iter()
            .map(|f| {
                self.place
                    .nft(&["list", "set", f.nft(), TABLE, POD_SET], None)
            })
            .collect();
        let drifted = match (&listing, &self.applied) {
            (Ok(text), Some(applied)) => parse_elements::<IpAddr>(text) != *applied,
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

    fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const V4: &[Family] = &[Family::V4];
    const BOTH: &[Family] = &Family::ALL;

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
            enrolled_ips(&snapshot, "a", V4),
            ips(&["10.244.1.8", "10.244.1.9"])
        );
        assert_eq!(
            enrolled_ips(&snapshot, "a", BOTH),
            ips(&["10.244.1.8", "10.244.1.9", "fd00::9"])
        );
        assert_eq!(enrolled_ips(&snapshot, "b", BOTH), ips(&["10.244.2.4"]));
        assert!(enrolled_ips(&snapshot, "c", BOTH).is_empty());
    }

    #[test]
    fn updates_are_the_difference_or_a_refill() {
        let old = ips(&["10.0.0.1", "10.0.0.2"]);
        let new = ips(&["10.0.0.2", "10.0.0.3"]);
        assert_eq!(update_script(Some(&old), &old, V4), None);
        assert_eq!(
            update_script(Some(&old), &new, V4).unwrap(),
            "delete element ip zring ztunnel-pods-ips { 10.0.0.1 }\n\
             add element ip zring ztunnel-pods-ips { 10.0.0.3 }\n"
        );
        assert_eq!(
            update_script(None, &new, V4).unwrap(),
            "flush set ip zring ztunnel-pods-ips\n\
             add element ip zring ztunnel-pods-ips { 10.0.0.2, 10.0.0.3 }\n"
        );
        assert_eq!(
            update_script(None, &BTreeSet::new(), V4).unwrap(),
            "flush set ip zring ztunnel-pods-ips\n"
        );
    }

    #[test]
    fn each_family_goes_to_its_own_set() {
        let old = ips(&["10.0.0.1", "fd00::1"]);
        let new = ips(&["10.0.0.1", "fd00::2", "fd00::3"]);
        assert_eq!(
            update_script(Some(&old), &new, BOTH).unwrap(),
            "delete element ip6 zring ztunnel-pods-ips { fd00::1 }\n\
             add element ip6 zring ztunnel-pods-ips { fd00::2, fd00::3 }\n"
        );
        assert_eq!(
            update_script(None, &new, BOTH).unwrap(),
            "flush set ip zring ztunnel-pods-ips\n\
             flush set ip6 zring ztunnel-pods-ips\n\
             add element ip zring ztunnel-pods-ips { 10.0.0.1 }\n\
             add element ip6 zring ztunnel-pods-ips { fd00::2, fd00::3 }\n"
        );
    }

    #[test]
    fn elements_parse_from_a_listing() {
        let listing = "table ip zring {\n\tset ztunnel-pods-ips {\n\t\ttype ipv4_addr\n\t\t\
                       elements = { 10.244.1.8, 10.244.1.9,\n\t\t\t     10.244.1.10 }\n\t}\n}\n";
        assert_eq!(
            parse_elements::<IpAddr>(listing),
            ips(&["10.244.1.8", "10.244.1.9", "10.244.1.10"])
        );
        assert!(parse_elements::<IpAddr>("set x {\n type ipv4_addr\n}").is_empty());
        let both = format!(
            "{listing}table ip6 zring {{\n\tset ztunnel-pods-ips {{\n\t\ttype ipv6_addr\n\t\t\
             elements = {{ fd00:244:1::8 }}\n\t}}\n}}\n"
        );
        assert_eq!(
            parse_elements::<IpAddr>(&both),
            ips(&["10.244.1.8", "10.244.1.9", "10.244.1.10", "fd00:244:1::8"])
        );
        assert_eq!(
            parse_elements::<std::net::Ipv4Addr>(&both).len(),
            3,
            "the IPv4 set alone"
        );
    }
}

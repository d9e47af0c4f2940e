//! Capture watched (node mode): notices when `table ip zring`, `table ip6 zring` or their
//! policy routing is removed or altered (`nft flush ruleset`, a firewall reload, a table deleted, a chain edited, an
//! `ip rule` flushed), puts it back, counts it and holds readiness false while capture is not
//! whole. Without this a firewall reload silently turns the node fail-open: enrolled pods'
//! traffic leaves unencrypted and without policy while zring stays Ready.
//!
//! Runs on the capture-set keeper's thread (`zring-capture-set`, [`super::enrolled::Keeper`]),
//! one [`Watch::step`] per keeper tick (50 ms), before the keeper's own set update, so a
//! restored table is refilled in the same transaction.
//!
//! # How a change is noticed
//!
//! Two triggers, one judgement:
//! - **nf_tables notifications** (`sys::nfnetlink`, the netlink group `nft monitor` reads): every
//!   change to any table in the namespace is announced to subscribers; [`touches_capture`] keeps
//!   the ones naming `table ip zring` or `table ip6 zring` (a `flush ruleset` announces the deletion of every table,
//!   ours included) and skips set-element messages, which are the keeper's own updates and which
//!   it verifies itself. A relevant message, or a lost one (socket overflow), makes the next
//!   tick look. Reaction within one tick, and no work while nothing changes: kube-proxy's
//!   frequent updates of its own tables cost one message parse each.
//! - **rtnetlink notifications** of rule and route changes, both families (what `ip monitor
//!   rule route` reads): [`touches_policy_routing`] keeps the ones about table
//!   [`CAPTURE_TABLE`] (an `ip rule flush` or a deleted `fwmark … lookup 133` rule announces the
//!   deletion of a rule naming it; a pod's route added by the CNI names another table and costs
//!   one header read).
//! - **A poll**: every [`POLL_BACKSTOP`] while both subscriptions are open, a backstop for a
//!   change nothing announced; every [`POLL`] when either socket could not be opened (e.g. in a
//!   lab namespace entered by another thread) or failed. Each look runs `nft` and `ip` as child
//!   processes (a few milliseconds of CPU each), so the notifications are also what keeps an
//!   undisturbed node's cost near nothing: polling every 2 s cost ~1 % of a core.
//!
//! The look itself is `nft -s list table ip zring` and, where the node has IPv6, `nft -s list
//! table ip6 zring` (stateless: no counter values), one after the other, their set elements
//! cut out ([`strip_elements`]) and compared as text with the **baseline**, the same listing
//! when capture was last known whole, plus `ip rule show` and `ip route show table 133` of each
//! family for the policy routes. Either table missing is the capture missing: a dual-stack
//! node whose IPv6 table was deleted sends its pods' IPv6 traffic around the mesh. Preferred over a digest of `nft -j`: the text is small (~2 KiB), needs
//! no JSON, and is itself a valid `nft -f` script (the kernel's own rendering, checked to
//! round-trip), so it is also what a restore installs. The elements cut out are compared with
//! what the keeper applied: a table re-installed by someone else (`zring redirect apply` creates
//! the set empty) is refilled at once ([`Outcome::SetDrifted`]) instead of at the keeper's next
//! 10 s check. Preferred over comparing with [`super::ruleset`]'s text: nft prints rules
//! differently from how they were written, and the table on the node is whatever
//! `zring redirect apply` (the init container) installed, perhaps with another scope.
//!
//! # What counts as whole, and what a restore does
//!
//! - At start the baseline is the tables found, if each holds every rule [`REQUIRED_RULES`] names
//!   (the check `deploy/redirect.sh` makes). With no table, or an incomplete one, and the capture
//!   parameters in the environment (`ZRING_POD_CIDRS`, `ZRING_POD_INTERFACES`: the DaemonSet's
//!   ConfigMap gives both containers), zring installs [`super::ruleset`] itself; without them it
//!   stays unready until a complete table appears (`zring redirect apply` run by hand).
//! - Later, a missing table, a listing that differs from the baseline, or missing policy
//!   routing is damage ([`Damage`]): readiness turns false
//!   (`zring_capture_intact 0`), `zring_capture_damaged_total{reason}` counts it, and (unless
//!   `ZRING_CAPTURE_RESTORE=false`: report only, for nodes whose firewall tooling must own the
//!   ruleset) the baseline is installed again in one `nft -f` transaction together with the
//!   keeper's current set elements, so no enrolled pod is outside capture for a moment after
//!   the restore, and the policy route is re-added (`zring_capture_restored_total{reason}`).
//!   Readiness returns at the next look that finds everything whole.
//! - Restores are spaced: one within [`FLAP_WINDOW`] of the previous waits a delay that doubles
//!   from [`HOLD_MIN`] to [`HOLD_MAX`], so two agents that each want their own table (an
//!   operator's tooling, an older zring beside a newer one with a different ruleset) alternate
//!   slowly and loudly instead of spinning. A deliberate change of the capture parameters is made
//!   by restarting zring (the DaemonSet's init container re-installs; the new process takes
//!   what it finds as its baseline).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{CAPTURE_MARK, CAPTURE_TABLE, Capture, Error, Family, POD_SET, Place, TABLE};
use crate::metrics::CaptureSetMetrics;
use crate::sys::nfnetlink::Events;

/// How often the table and the policy route are looked at without a notification, when a
/// notification socket is missing.
pub const POLL: Duration = Duration::from_secs(2);
/// The same while both notification sockets are open: only a backstop.
pub const POLL_BACKSTOP: Duration = Duration::from_secs(30);
/// A restore this soon after the previous one counts as a flap and is delayed.
pub const FLAP_WINDOW: Duration = Duration::from_secs(1);
/// First delay before restoring again after a flap.
pub const HOLD_MIN: Duration = Duration::from_millis(250);
/// Longest delay between restores.
pub const HOLD_MAX: Duration = Duration::from_secs(30);
/// Rules (by their comment) a table must hold to be taken as zring's capture.
pub const REQUIRED_RULES: [&str; 6] = [
    "zring-conn",
    "reply-to-zring",
    "captured-flow",
    "outbound",
    "inbound-hbone",
    "inbound-plaintext",
];

/// What is wrong with capture, as the metrics' `reason` label says it.
pub use crate::metrics::CaptureDamage as Damage;

/// How the watch behaves, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Put damaged capture back (`ZRING_CAPTURE_RESTORE`, default true); false only reports.
    pub restore: bool,
    /// What to install when no complete table exists to take as the baseline
    /// (`ZRING_POD_CIDRS` and `ZRING_POD_INTERFACES`, as `zring redirect` reads them).
    pub install: Option<Capture>,
}

impl Settings {
    /// Reads `ZRING_CAPTURE_RESTORE`, `ZRING_POD_CIDRS`, `ZRING_POD_INTERFACES`.
    pub fn from_env() -> Result<Settings, Error> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Settings::from_vars(
            var("ZRING_CAPTURE_RESTORE").as_deref(),
            var("ZRING_POD_CIDRS").as_deref(),
            var("ZRING_POD_INTERFACES").as_deref(),
        )
    }

    fn from_vars(
        restore: Option<&str>,
        cidrs: Option<&str>,
        ifaces: Option<&str>,
    ) -> Result<Settings, Error> {
        let restore = match restore.map(str::trim) {
            None | Some("true") | Some("1") => true,
            Some("false") | Some("0") => false,
            Some(other) => {
                return Err(Error::Topology(format!(
                    "ZRING_CAPTURE_RESTORE={other:?}: use true or false"
                )));
            }
        };
        let install = cidrs
            .map(|c| Capture::parse(c, ifaces.unwrap_or("veth*")))
            .transpose()?;
        Ok(Settings { restore, install })
    }
}

/// What a look found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sight {
    /// `nft -s list table ip zring` (then `ip6`'s, where watched) without the sets' elements,
    /// or `None` when a watched table does not exist.
    pub table: Option<String>,
    /// The sets' elements, both families.
    pub elements: BTreeSet<IpAddr>,
    /// The policy rule and the local route of table 133 are both there, in every watched family.
    pub routing: bool,
}

/// The judgement of a [`Sight`] against the baseline. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// As it was.
    Whole,
    /// No baseline yet and a complete table: it becomes the baseline.
    Adopt(String),
    /// No baseline and no complete table: nothing to compare with or restore from.
    Absent,
    Damaged(Damage),
}

/// Whether every table of `listing` (one or more `table … {` blocks) holds every rule of
/// [`REQUIRED_RULES`].
pub fn complete(listing: &str) -> bool {
    let mut blocks: Vec<String> = Vec::new();
    for line in listing.lines() {
        match blocks.last_mut() {
            Some(block) if !line.starts_with("table ") => {
                block.push_str(line);
                block.push('\n');
            }
            _ => blocks.push(format!("{line}\n")),
        }
    }
    !blocks.is_empty()
        && blocks.iter().all(|b| {
            REQUIRED_RULES
                .iter()
                .all(|r| b.contains(&format!("comment \"{r}\"")))
        })
}

/// Judges `sight` against `baseline`.
pub fn judge(baseline: Option<&str>, sight: &Sight) -> Verdict {
    match (baseline, sight.table.as_deref()) {
        (None, Some(t)) if complete(t) => Verdict::Adopt(t.to_owned()),
        (None, _) => Verdict::Absent,
        (Some(_), None) => Verdict::Damaged(Damage::Missing),
        (Some(b), Some(t)) if b != t => Verdict::Damaged(Damage::Altered),
        (Some(_), Some(_)) if !sight.routing => Verdict::Damaged(Damage::Routing),
        (Some(_), Some(_)) => Verdict::Whole,
    }
}

/// `listing` without its sets' `elements = { … }` lines: the table's shape, which the baseline
/// is, apart from its contents, which the keeper owns.
pub fn strip_elements(listing: &str) -> String {
    let mut out = String::with_capacity(listing.len());
    let mut rest = listing;
    while let Some(at) = rest.find("elements = {") {
        let line_start = rest[..at].rfind('\n').map_or(0, |i| i + 1);
        out.push_str(&rest[..line_start]);
        let after = &rest[at..];
        let close = after.find('}').map_or(after.len(), |i| i + 1);
        let after = &after[close..];
        rest = after.strip_prefix('\n').unwrap_or(after);
    }
    out.push_str(rest);
    out
}

/// The `nft -f` script that puts `table` (one or both families' tables) back with `elements`
/// in their sets (each address in its family's, for the families `table` holds), in one
/// transaction.
pub fn restore_script(table: &str, elements: &BTreeSet<IpAddr>) -> String {
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|f| table.contains(&format!("table {} {TABLE} {{", f.nft())))
        .collect();
    let mut s = String::new();
    for f in &families {
        let fam = f.nft();
        s.push_str(&format!(
            "add table {fam} {TABLE}\ndelete table {fam} {TABLE}\n"
        ));
    }
    s.push_str(table);
    if !s.ends_with('\n') {
        s.push('\n');
    }
    for f in families {
        let ips: Vec<String> = elements
            .iter()
            .filter(|ip| Family::of(**ip) == f)
            .map(ToString::to_string)
            .collect();
        if !ips.is_empty() {
            s.push_str(&format!(
                "add element {} {TABLE} {POD_SET} {{ {} }}\n",
                f.nft(),
                ips.join(", ")
            ));
        }
    }
    s
}

/// Whether one datagram of nf_tables notifications announces a change to `table ip zring` or
/// `table ip6 zring` other than to its sets' elements. Each netlink message is a 16-byte header (length, type
/// `subsystem << 8 | message`), the 4-byte `nfgenmsg` (family first), then attributes; in every
/// table, chain, rule, set, object and flowtable message attribute 1 is the table's name.
pub fn touches_capture(datagram: &[u8]) -> bool {
    const HEADER: usize = 16;
    let mut rest = datagram;
    while rest.len() >= HEADER {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < HEADER || len > rest.len() {
            return false;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if message_touches(kind, &rest[HEADER..len]) {
            return true;
        }
        rest = &rest[align4(len).min(rest.len())..];
    }
    false
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn message_touches(kind: u16, body: &[u8]) -> bool {
    const SUBSYS_NFTABLES: u16 = 10;
    const NEWSETELEM: u16 = 12;
    const DELSETELEM: u16 = 14;
    const NFPROTO_IPV4: u8 = 2;
    const NFPROTO_IPV6: u8 = 10;
    const TABLE_NAME: u16 = 1;
    // Attribute types carry two flag bits (nested, network byte order) on top.
    const TYPE_MASK: u16 = 0x3fff;
    if kind >> 8 != SUBSYS_NFTABLES || matches!(kind & 0xff, NEWSETELEM | DELSETELEM) {
        return false;
    }
    if body.len() < 4 || !matches!(body[0], NFPROTO_IPV4 | NFPROTO_IPV6) {
        return false;
    }
    let mut attrs = &body[4..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & TYPE_MASK;
        if len < 4 || len > attrs.len() {
            return false;
        }
        if kind == TABLE_NAME {
            let name = attrs[4..len].split(|b| *b == 0).next().unwrap_or_default();
            return name == TABLE.as_bytes();
        }
        attrs = &attrs[align4(len).min(attrs.len())..];
    }
    false
}

/// Whether rtnetlink `datagram` (one or more messages) adds or deletes a rule or a route of
/// table [`CAPTURE_TABLE`], either family. Both headers (`struct rtmsg`, `struct
/// fib_rule_hdr`) carry the table in byte 4 when it is below 256, as 133 is; larger ids sit in
/// the `RTA_TABLE` / `FRA_TABLE` attribute (type 15 in both), read as well. Malformed input
/// is not relevant (and not a panic).
pub fn touches_policy_routing(datagram: &[u8]) -> bool {
    const HEADER: usize = 16;
    const NEWROUTE: u16 = 24;
    const DELROUTE: u16 = 25;
    const NEWRULE: u16 = 32;
    const DELRULE: u16 = 33;
    const BODY: usize = 12;
    const ATTR_TABLE: u16 = 15;
    const TYPE_MASK: u16 = 0x3fff;
    let mut rest = datagram;
    while rest.len() >= HEADER {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < HEADER || len > rest.len() {
            return false;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let body = &rest[HEADER..len];
        if matches!(kind, NEWROUTE | DELROUTE | NEWRULE | DELRULE) && body.len() >= BODY {
            if u32::from(body[4]) == CAPTURE_TABLE {
                return true;
            }
            let mut attrs = &body[BODY..];
            while attrs.len() >= 4 {
                let alen = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
                let akind = u16::from_ne_bytes([attrs[2], attrs[3]]) & TYPE_MASK;
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                if akind == ATTR_TABLE
                    && alen >= 8
                    && u32::from_ne_bytes([attrs[4], attrs[5], attrs[6], attrs[7]]) == CAPTURE_TABLE
                {
                    return true;
                }
                attrs = &attrs[align4(alen).min(attrs.len())..];
            }
        }
        rest = &rest[align4(len).min(rest.len())..];
    }
    false
}

/// Drains a notification socket; whether something relevant (or an overflow, which hides
/// what changed) asks for a look. A failed socket is dropped (the poll then runs every
/// [`POLL`]) and asks for a look too.
fn drain(events: &mut Option<Events>, what: &str, relevant: fn(&[u8]) -> bool) -> bool {
    let Some(socket) = events.as_mut() else {
        return false;
    };
    let mut hit = false;
    match socket.drain(|d| hit |= relevant(d)) {
        Ok(lost) => {
            if hit || lost {
                tracing::debug!(lost, "capture watch: {what} notification");
            }
            hit || lost
        }
        Err(e) => {
            warn!("capture watch: {what} notifications failed ({e}); polling every {POLL:?}");
            *events = None;
            true
        }
    }
}

/// What a step did that the keeper must know.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Nothing,
    /// The table is whole but its set does not hold what the keeper applied (someone
    /// re-installed the table: `zring redirect apply` creates the set empty): refill it now.
    SetDrifted,
    /// The tables were (re)installed with these set elements.
    Installed(BTreeSet<IpAddr>),
}

/// The watch's state; owned by the keeper.
pub struct Watch {
    place: Place<'static>,
    settings: Settings,
    metrics: Arc<CaptureSetMetrics>,
    /// The families watched: IPv4, and IPv6 where the node has it.
    families: Vec<Family>,
    /// The tables' listing when capture was last known whole.
    baseline: Option<String>,
    /// `None` when the socket could not be opened: polling every [`POLL`] then.
    events: Option<Events>,
    /// Rule and route notifications; `None` as above.
    routing: Option<Events>,
    /// A notification (or the start) asks for a look at the next step.
    dirty: bool,
    next_poll: Instant,
    /// The last restore, and the delay imposed before the next one.
    last_restore: Option<Instant>,
    hold: Duration,
    /// The damage being repaired: counted and logged once per episode.
    damaged: Option<Damage>,
    /// The last problem logged, so a lasting one is logged once.
    last_note: Option<String>,
}

impl Watch {
    /// A watch of capture at `place`, the tables of `families`; the first
    /// [`step`](Self::step) looks at once.
    pub fn new(
        place: Place<'static>,
        settings: Settings,
        metrics: Arc<CaptureSetMetrics>,
        families: &[Family],
    ) -> Self {
        let (events, routing) = match place {
            Place::Here => (
                Events::open()
                    .inspect_err(|e| {
                        warn!("capture watch: no nf_tables notifications ({e}); polling every {POLL:?}")
                    })
                    .ok(),
                Events::policy_routing()
                    .inspect_err(|e| {
                        warn!("capture watch: no rule and route notifications ({e}); polling every {POLL:?}")
                    })
                    .ok(),
            ),
            Place::Netns(_) => (None, None),
        };
        metrics.set_watched();
        metrics.set_intact(false);
        Watch {
            place,
            settings,
            metrics,
            families: families.to_vec(),
            baseline: None,
            events,
            routing,
            dirty: true,
            next_poll: Instant::now(),
            last_restore: None,
            hold: Duration::ZERO,
            damaged: None,
            last_note: None,
        }
    }

    /// Looks when a notification or the poll asks; restores damage. `wanted` gives the set
    /// elements a restore installs (the keeper's current enrolled pods).
    /// `applied` is what the keeper believes the set holds (`None`: unknown).
    pub fn step(
        &mut self,
        now: Instant,
        applied: Option<&BTreeSet<IpAddr>>,
        wanted: impl FnOnce() -> BTreeSet<IpAddr>,
    ) -> Outcome {
        self.read_events();
        if !self.dirty && now < self.next_poll {
            return Outcome::Nothing;
        }
        self.next_poll = now + self.poll_interval();
        let sight = match self.look() {
            Ok(s) => s,
            Err(e) => {
                // Cannot even look (nft gone?): nothing is known to be wrong, try again later.
                self.note(format!("capture watch: cannot read the ruleset: {e}"));
                self.dirty = false;
                return Outcome::Nothing;
            }
        };
        let mut verdict = judge(self.baseline.as_deref(), &sight);
        if let Verdict::Adopt(table) = verdict {
            info!("capture watch: taking the installed table(s) {TABLE} as the baseline");
            self.baseline = Some(table);
            // The same sight again, now against its own table: whole unless the policy route
            // is missing. So the keeper's first step, before `zring ready`, ends ready.
            verdict = judge(self.baseline.as_deref(), &sight);
        }
        match verdict {
            Verdict::Whole => {
                self.dirty = false;
                if !self.metrics.intact() {
                    info!("capture watch: node capture (tables {TABLE}, policy routes) is whole");
                }
                self.metrics.set_intact(true);
                self.damaged = None;
                self.last_note = None;
                match applied {
                    Some(a) if *a != sight.elements => {
                        warn!("capture watch: set {POD_SET} was emptied or changed; refilling it");
                        Outcome::SetDrifted
                    }
                    _ => Outcome::Nothing,
                }
            }
            // Never after the adoption above: a baseline exists by then.
            Verdict::Adopt(_) => Outcome::Nothing,
            Verdict::Absent => {
                self.metrics.set_intact(false);
                self.dirty = false;
                match self.settings.install.clone() {
                    Some(c) => {
                        let v6 = self.families.contains(&Family::V6);
                        let table = super::tables(&c.with_ipv6(v6));
                        self.install(now, Damage::Missing, Some(&table), wanted)
                    }
                    None => {
                        self.note(format!(
                            "capture watch: no complete table ip/ip6 {TABLE} to watch (install it \
                             with `zring redirect apply`, or set ZRING_POD_CIDRS so zring \
                             installs it); not ready meanwhile"
                        ));
                        Outcome::Nothing
                    }
                }
            }
            Verdict::Damaged(damage) => {
                self.metrics.set_intact(false);
                if self.damaged.is_none() {
                    self.damaged = Some(damage);
                    self.metrics.damaged(damage);
                    warn!(
                        reason = damage.reason(),
                        restore = self.settings.restore,
                        "capture watch: node capture is not whole (table ip {TABLE} or its \
                         policy route was removed or changed); not ready until it is"
                    );
                }
                if !self.settings.restore {
                    self.dirty = false;
                    return Outcome::Nothing;
                }
                let baseline = self.baseline.clone();
                let table = baseline.as_deref().filter(|_| damage != Damage::Routing);
                self.install(now, damage, table, wanted)
            }
        }
    }

    /// The poll's period: a backstop while every change is announced, frequent otherwise.
    fn poll_interval(&self) -> Duration {
        if self.events.is_some() && self.routing.is_some() {
            POLL_BACKSTOP
        } else {
            POLL
        }
    }

    fn read_events(&mut self) {
        self.dirty |= drain(&mut self.events, "nf_tables", touches_capture);
        self.dirty |= drain(&mut self.routing, "rule and route", touches_policy_routing);
    }

    /// Installs `table` (a baseline, or the canonical ruleset; `None`: keep the table) with
    /// `wanted()`'s elements, and the policy route, unless restores are being spaced after a
    /// flap.
    fn install(
        &mut self,
        now: Instant,
        damage: Damage,
        table: Option<&str>,
        wanted: impl FnOnce() -> BTreeSet<IpAddr>,
    ) -> Outcome {
        if let Some(last) = self.last_restore
            && now < last + self.hold
        {
            self.dirty = true;
            return Outcome::Nothing;
        }
        self.hold = match self.last_restore {
            Some(last) if now < last + FLAP_WINDOW => (self.hold * 2).clamp(HOLD_MIN, HOLD_MAX),
            _ => Duration::ZERO,
        };
        if !self.hold.is_zero() {
            warn!(
                next_restore_after = ?self.hold,
                "capture watch: capture was changed again soon after a restore; is another \
                 agent rewriting table ip {TABLE}?"
            );
        }
        self.last_restore = Some(now);
        // Whatever happens, the next step looks again (and finds it whole or not).
        self.dirty = true;
        let mut elements = None;
        let result = match table {
            Some(table) => {
                let set = wanted();
                let script = restore_script(table, &set);
                elements = Some(set);
                self.place.nft(&["-f", "-"], Some(&script)).map(drop)
            }
            None => Ok(()),
        }
        .and_then(|()| {
            self.families
                .iter()
                .try_for_each(|f| super::install_routing(self.place, *f))
        });
        match result {
            Ok(()) => {
                self.metrics.restored(damage);
                info!(
                    reason = damage.reason(),
                    table = table.is_some(),
                    "capture watch: node capture restored"
                );
                elements.map_or(Outcome::Nothing, Outcome::Installed)
            }
            Err(e) => {
                self.metrics.restore_failed();
                self.note(format!("capture watch: restoring capture failed: {e}"));
                Outcome::Nothing
            }
        }
    }

    /// What the kernel holds now.
    fn look(&self) -> Result<Sight, Error> {
        let mut listing = Some(String::new());
        let mut routing = true;
        let rule = format!("fwmark {CAPTURE_MARK:#x} lookup {CAPTURE_TABLE}");
        for f in &self.families {
            let (fam, flag) = (f.nft(), if *f == Family::V4 { "-4" } else { "-6" });
            match self.place.nft(&["-s", "list", "table", fam, TABLE], None) {
                Ok(text) => {
                    if let Some(l) = listing.as_mut() {
                        l.push_str(&text);
                    }
                }
                Err(Error::Command { stderr, .. })
                    if stderr.contains("No such file or directory") =>
                {
                    listing = None;
                }
                Err(e) => return Err(e),
            }
            let has_rule = self.place.ip(&format!("{flag} rule show"))?.contains(&rule);
            // An emptied table 133 may be reported as an error by newer iproute2: missing
            // either way.
            let has_route = self
                .place
                .ip(&format!("{flag} route show table {CAPTURE_TABLE}"))
                .is_ok_and(|r| r.contains("local default dev lo"));
            routing &= has_rule && has_route;
        }
        let elements = listing
            .as_deref()
            .map(super::enrolled::parse_elements::<IpAddr>)
            .unwrap_or_default();
        Ok(Sight {
            table: listing.as_deref().map(strip_elements),
            elements,
            routing,
        })
    }

    fn note(&mut self, text: String) {
        if self.last_note.as_deref() != Some(&text) {
            warn!("{text}");
            self.last_note = Some(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE_TEXT: &str = "table ip zring {\n\tchain output {\n\t\tcounter comment \"zring-conn\"\n\t}\n\tchain prerouting {\n\t\tcomment \"reply-to-zring\"\n\t\tcomment \"captured-flow\"\n\t\tcomment \"outbound\"\n\t\tcomment \"inbound-hbone\"\n\t\tcomment \"inbound-plaintext\"\n\t}\n}\n";

    fn sight(table: Option<&str>, routing: bool) -> Sight {
        Sight {
            table: table.map(str::to_owned),
            elements: BTreeSet::new(),
            routing,
        }
    }

    #[test]
    fn verdicts() {
        // Start: a complete table becomes the baseline; an incomplete one or none is absent.
        assert_eq!(
            judge(None, &sight(Some(TABLE_TEXT), false)),
            Verdict::Adopt(TABLE_TEXT.into())
        );
        let flushed_chain = TABLE_TEXT.replace("\t\tcomment \"outbound\"\n", "");
        assert_eq!(
            judge(None, &sight(Some(&flushed_chain), true)),
            Verdict::Absent
        );
        assert_eq!(judge(None, &sight(None, true)), Verdict::Absent);
        // Later: gone, edited, routing lost, whole.
        let b = Some(TABLE_TEXT);
        assert_eq!(
            judge(b, &sight(None, true)),
            Verdict::Damaged(Damage::Missing)
        );
        assert_eq!(
            judge(b, &sight(Some(&flushed_chain), true)),
            Verdict::Damaged(Damage::Altered)
        );
        let inserted = TABLE_TEXT.replace("\t\tcomment \"reply", "\t\taccept\n\t\tcomment \"reply");
        assert_eq!(
            judge(b, &sight(Some(&inserted), true)),
            Verdict::Damaged(Damage::Altered)
        );
        assert_eq!(
            judge(b, &sight(Some(TABLE_TEXT), false)),
            Verdict::Damaged(Damage::Routing)
        );
        assert_eq!(judge(b, &sight(Some(TABLE_TEXT), true)), Verdict::Whole);
    }

    #[test]
    fn elements_are_cut_from_the_shape() {
        let listing = "table ip zring {\n\tset ztunnel-pods-ips {\n\t\ttype ipv4_addr\n\t\t\
                       elements = { 10.244.1.8, 10.244.1.9,\n\t\t\t     10.244.1.10 }\n\t}\n\n\t\
                       chain output {\n\t}\n}\n";
        let shape = "table ip zring {\n\tset ztunnel-pods-ips {\n\t\ttype ipv4_addr\n\t}\n\n\t\
                     chain output {\n\t}\n}\n";
        assert_eq!(strip_elements(listing), shape);
        assert_eq!(strip_elements(shape), shape);
    }

    #[test]
    fn restore_is_one_transaction_with_the_set() {
        let ips: BTreeSet<IpAddr> = ["10.244.1.8", "10.244.1.9", "fd00:244:1::8"]
            .into_iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let s = restore_script(TABLE_TEXT, &ips);
        assert!(s.starts_with("add table ip zring\ndelete table ip zring\ntable ip zring {"));
        assert!(
            s.ends_with("}\nadd element ip zring ztunnel-pods-ips { 10.244.1.8, 10.244.1.9 }\n"),
            "no IPv6 table, no IPv6 element: {s}"
        );
        assert!(!restore_script(TABLE_TEXT, &BTreeSet::new()).contains("add element"));
        // Both families: both tables replaced, each address in its own family's set.
        let both = format!(
            "{TABLE_TEXT}{}",
            TABLE_TEXT.replace("table ip ", "table ip6 ")
        );
        let s = restore_script(&both, &ips);
        assert!(s.starts_with(
            "add table ip zring\ndelete table ip zring\nadd table ip6 zring\n\
             delete table ip6 zring\ntable ip zring {"
        ));
        assert!(s.ends_with(
            "add element ip zring ztunnel-pods-ips { 10.244.1.8, 10.244.1.9 }\n\
             add element ip6 zring ztunnel-pods-ips { fd00:244:1::8 }\n"
        ));
    }

    #[test]
    fn every_table_must_be_complete() {
        let v6 = TABLE_TEXT.replace("table ip ", "table ip6 ");
        assert!(complete(&format!("{TABLE_TEXT}{v6}")));
        let v6_flushed = v6.replace("\t\tcomment \"outbound\"\n", "");
        assert!(!complete(&format!("{TABLE_TEXT}{v6_flushed}")));
        assert!(!complete(""));
    }

    /// One nf_tables message: netlink header, nfgenmsg, then `attrs`.
    fn message(kind: u16, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        netlink(kind, &[family, 0, 0, 0], attrs)
    }

    /// One netlink message: header, the family header `head`, then `attrs` (type, value)
    /// padded to 4 bytes.
    fn netlink(kind: u16, head: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = head.to_vec();
        for (t, v) in attrs {
            let len = 4 + v.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(v);
            body.resize(align4(body.len()), 0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn notifications_about_our_table_are_recognised() {
        let nft = |msg: u16| (10 << 8) | msg;
        let (delrule, deltable, newsetelem, newgen) = (nft(8), nft(2), nft(12), nft(15));
        let ours = message(deltable, 2, &[(1, b"zring\0")]);
        assert!(touches_capture(&ours));
        // A rule message: the table first, then the chain (with the nested flag on another).
        let rule = message(
            delrule,
            2,
            &[(1, b"zring\0"), (2 | 0x8000, b"prerouting\0")],
        );
        assert!(touches_capture(&rule));
        // Not ours: another table, another family, our own set updates, a generation message,
        // another subsystem, truncated garbage.
        assert!(!touches_capture(&message(
            delrule,
            2,
            &[(1, b"kube-proxy\0")]
        )));
        assert!(!touches_capture(&message(deltable, 1, &[(1, b"zring\0")])));
        // The IPv6 table is ours too.
        assert!(touches_capture(&message(deltable, 10, &[(1, b"zring\0")])));
        assert!(!touches_capture(&message(
            newsetelem,
            2,
            &[(1, b"zring\0")]
        )));
        assert!(!touches_capture(&message(newgen, 2, &[(1, b"\0\0\0\x07")])));
        assert!(!touches_capture(&message(
            (1 << 8) | 2,
            2,
            &[(1, b"zring\0")]
        )));
        assert!(!touches_capture(&ours[..ours.len() - 4]));
        assert!(!touches_capture(&[]));
        // Several messages in one datagram: ours second.
        let mut two = message(delrule, 2, &[(1, b"kube-proxy\0")]);
        two.extend_from_slice(&ours);
        assert!(touches_capture(&two));
    }

    /// One rtnetlink message: a 12-byte `rtmsg` / `fib_rule_hdr` with `table` in byte 4.
    fn rt_message(kind: u16, table: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        netlink(kind, &[2, 0, 0, 0, table, 0, 0, 0, 0, 0, 0, 0], attrs)
    }

    #[test]
    fn rule_and_route_notifications_about_table_133_are_recognised() {
        let (newroute, delroute, newrule, delrule, newlink) = (24, 25, 32, 33, 16);
        let table = u8::try_from(CAPTURE_TABLE).unwrap();
        assert!(touches_policy_routing(&rt_message(delrule, table, &[])));
        assert!(touches_policy_routing(&rt_message(newrule, table, &[])));
        assert!(touches_policy_routing(&rt_message(delroute, table, &[])));
        // The table given only as the attribute (header byte RT_TABLE_COMPAT).
        let attr = CAPTURE_TABLE.to_ne_bytes();
        assert!(touches_policy_routing(&rt_message(
            newroute,
            252,
            &[(1, &[10, 0, 0, 0]), (15, &attr)]
        )));
        // Not ours: the main table (a CNI adding a pod's route), another table's rule, a link
        // message, truncated or garbage input.
        let main = rt_message(newroute, 254, &[(15, &254u32.to_ne_bytes())]);
        assert!(!touches_policy_routing(&main));
        assert!(!touches_policy_routing(&rt_message(delrule, 255, &[])));
        assert!(!touches_policy_routing(&rt_message(newlink, table, &[])));
        let ours = rt_message(delrule, table, &[]);
        assert!(!touches_policy_routing(&ours[..ours.len() - 4]));
        assert!(!touches_policy_routing(&[]));
        assert!(!touches_policy_routing(&[0xff; 40]));
        // Several messages in one datagram: ours second.
        let mut two = main.clone();
        two.extend_from_slice(&ours);
        assert!(touches_policy_routing(&two));
    }

    #[test]
    fn settings_from_the_environment() {
        let s = Settings::from_vars(None, None, None).unwrap();
        assert_eq!(
            s,
            Settings {
                restore: true,
                install: None
            }
        );
        let s = Settings::from_vars(Some("false"), Some("10.244.0.0/16"), Some("cali*")).unwrap();
        assert!(!s.restore);
        assert_eq!(s.install.unwrap().pod_interfaces, "cali*");
        assert!(Settings::from_vars(Some("maybe"), None, None).is_err());
        assert!(Settings::from_vars(None, Some("not-a-cidr"), None).is_err());
    }
}

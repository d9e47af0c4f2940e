//! zring's older shorthand for snapshots written inside Rust code (test fixtures, the lab's
//! helpers), rewritten into ztunnel's format before the one parser runs. Files never get it:
//! `load`, `LocalSource` and `parse_bytes` read ztunnel's format exactly.
//!
//! The shorthand is what zring accepted before it matched ztunnel: string matches as one-key
//! maps (`{Exact: x}`, `{Presence: []}`), and these fields left out: a workload's `namespace`,
//! `workloadIps` and `services`, a gateway's `hboneMtlsPort` (15008), a locality's parts, a
//! service's names, `vips` and `ports`, a load balancer's parts, a policy's `name`,
//! `namespace`, `rules` and `dryRun`. Names and lists left out are empty, so the snapshot's
//! own rules still name the object at fault. Kept so fixtures in
//! modules being reworked in parallel need not change at once; new code writes ztunnel's format.
//! Once `src/core` and `src/proxy` fixtures are rewritten, `parse` can call `parse_bytes` and
//! this module can go.
//!
//! Part of `xds::local`, on whatever thread builds the fixture.

use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

use crate::state::DEFAULT_HBONE_MTLS_PORT;

/// Fixtures are small and never use aliases; anything else is left to the strict parser, so
/// the desugaring (which holds the whole document as a `Value`) never sees hostile input.
const MAX_BYTES: usize = 64 << 10;

/// The document in ztunnel's format, or `None` if it is not shorthand worth rewriting (too
/// large, uses aliases, not a YAML mapping, or nothing to change).
pub fn desugar(yaml: &str) -> Option<String> {
    if yaml.len() > MAX_BYTES || yaml.contains('*') {
        return None;
    }
    let mut doc: Value = serde_yaml::from_str(yaml).ok()?;
    let root = doc.as_mapping_mut()?;
    let mut changed = false;
    for w in items(root, "workloads") {
        changed |= fill(w, "namespace", "".into());
        changed |= fill(w, "workloadIps", Value::Sequence(Vec::new()));
        changed |= fill(w, "services", Value::Mapping(Mapping::new()));
        changed |= gateways(w);
        if let Some(l) = w.get_mut("locality").and_then(Value::as_mapping_mut) {
            for part in ["region", "zone", "subzone"] {
                changed |= fill(l, part, "".into());
            }
        }
    }
    for s in items(root, "services") {
        for name in ["name", "namespace", "hostname"] {
            changed |= fill(s, name, "".into());
        }
        changed |= fill(s, "vips", Value::Sequence(Vec::new()));
        changed |= fill(s, "ports", Value::Mapping(Mapping::new()));
        changed |= gateways(s);
        if let Some(lb) = s.get_mut("loadBalancer").and_then(Value::as_mapping_mut) {
            changed |= fill(lb, "routingPreferences", Value::Sequence(Vec::new()));
            changed |= fill(lb, "mode", "Standard".into());
            changed |= fill(lb, "healthPolicy", "OnlyHealthy".into());
        }
    }
    for p in items(root, "policies") {
        changed |= fill(p, "name", "".into());
        changed |= fill(p, "namespace", "".into());
        changed |= fill(p, "rules", Value::Sequence(Vec::new()));
        changed |= fill(p, "dryRun", false.into());
        let rules = p.get_mut("rules").and_then(Value::as_sequence_mut);
        for clause in rules
            .into_iter()
            .flatten()
            .filter_map(Value::as_sequence_mut)
        {
            for group in clause.iter_mut().filter_map(Value::as_sequence_mut) {
                for m in group.iter_mut().filter_map(Value::as_mapping_mut) {
                    changed |= string_matches(m);
                }
            }
        }
    }
    if !changed {
        return None;
    }
    serde_yaml::to_string(&doc).ok()
}

/// The mappings in the list under `key` (nothing if it is absent or not a list).
fn items<'a>(root: &'a mut Mapping, key: &str) -> impl Iterator<Item = &'a mut Mapping> {
    let list = root.get_mut(key).and_then(Value::as_sequence_mut);
    list.into_iter().flatten().filter_map(Value::as_mapping_mut)
}

/// Inserts `key: value` if `key` is absent; whether it did.
fn fill(m: &mut Mapping, key: &str, value: Value) -> bool {
    if m.contains_key(key) {
        return false;
    }
    m.insert(key.into(), value);
    true
}

fn gateways(m: &mut Mapping) -> bool {
    let mut changed = false;
    for key in ["waypoint", "networkGateway"] {
        if let Some(g) = m.get_mut(key).and_then(Value::as_mapping_mut) {
            changed |= fill(g, "hboneMtlsPort", DEFAULT_HBONE_MTLS_PORT.into());
        }
    }
    changed
}

/// `{Exact: x}` → `!Exact x` in every string-match list of one match group.
fn string_matches(group: &mut Mapping) -> bool {
    let mut changed = false;
    for key in ["namespaces", "notNamespaces", "principals", "notPrincipals"] {
        let list = group.get_mut(key).and_then(Value::as_sequence_mut);
        for item in list.into_iter().flatten() {
            let Some(m) = item.as_mapping() else { continue };
            let Some((Value::String(kind), value)) = m.iter().next() else {
                continue;
            };
            if m.len() != 1 || !["Exact", "Prefix", "Suffix", "Presence"].contains(&&**kind) {
                continue;
            }
            let value = match (&**kind, value) {
                ("Presence", Value::Null) => Value::Sequence(Vec::new()),
                ("Presence", Value::Mapping(m)) if m.is_empty() => Value::Sequence(Vec::new()),
                _ => value.clone(),
            };
            *item = Value::Tagged(Box::new(TaggedValue {
                tag: Tag::new(kind.clone()),
                value,
            }));
            changed = true;
        }
    }
    changed
}

//! Endpoint choice for a connection to a service: the health policy, the locality routing
//! preferences (`STRICT`, `FAILOVER`) and capacity weighting, together. Pure: no IO, no clock,
//! no allocation; randomness comes in as an argument. Runs on a core, inside `route::outbound`.
//!
//! Steps, in order (the facts follow Istio's workload API, `LoadBalancing`):
//! 1. eligible endpoints: admitted by the health policy (`ONLY_HEALTHY`, the default, or
//!    `ALLOW_ALL`), with a capacity above 0 (a drained endpoint takes no traffic), and with a
//!    way for zring to reach them: an IP or a hostname to resolve. An endpoint on another
//!    network behind a network gateway is skipped (ztunnel tunnels through the gateway; zring
//!    does not yet, so choosing it would fail the connection while others could serve it: the
//!    router refuses with `UNROUTABLE` only when nothing else is left, see [`behind_gateway`]).
//!    So is an endpoint with neither address nor gateway, as in ztunnel (istiod sends
//!    gateway-only workloads to every client, those of the client's own network included).
//! 2. the tier, by how well each endpoint matches the source on `routing_preference`, in order
//!    (region, zone, subzone, node, cluster, network): the score is the number of leading
//!    preferences that match. When `NETWORK` is the first preference it dominates instead of
//!    ending the count: a same-network endpoint outranks every other-network one, and within
//!    each the remaining preferences count as usual.
//!    - no load balancer, or mode unspecified: every eligible endpoint (preferences ignored);
//!    - `STRICT`: only endpoints matching every preference; none → no endpoint;
//!    - `FAILOVER`: the endpoints with the best score (all preferences, then fewer, then none);
//!    - `PASSTHROUGH` picks no endpoint at all; the router never asks (the original
//!      destination is used), and if asked this treats it as unspecified.
//! 3. within the tier, one endpoint with probability proportional to its capacity.

use crate::state::{Endpoint, LoadBalancerMode, LoadBalancerScope, Service, Workload};

/// How an endpoint was chosen: what the debug log says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub mode: LoadBalancerMode,
    /// Preferences the chosen endpoint matched, in order, of `preferences` (0 of 0 without
    /// routing preferences). With `NETWORK` first, a match there counts as one.
    pub matched: usize,
    pub preferences: usize,
    /// Endpoints in the chosen tier, and eligible ones overall.
    pub tier: usize,
    pub eligible: usize,
}

/// Chooses an endpoint of `service` for a connection from `source`, `random` deciding among
/// the best tier by capacity. `None`: no eligible endpoint, or none in the `STRICT` tier.
pub fn choose<'s>(
    service: &'s Service,
    source: &Workload,
    random: u64,
) -> Option<(&'s Endpoint, Choice)> {
    let (mode, prefs) = match &service.load_balancer {
        Some(lb) => (lb.mode, lb.routing_preferences.as_slice()),
        None => (LoadBalancerMode::Standard, &[][..]),
    };
    let eligible = || {
        service
            .endpoints
            .iter()
            .filter(|e| eligible(service, source, &e.workload))
    };
    let score_of = |w: &Workload| score(prefs, source, w);
    // The tier's score: endpoints scoring exactly this are candidates.
    let best = match mode {
        LoadBalancerMode::Standard | LoadBalancerMode::Passthrough => None,
        LoadBalancerMode::Strict => Some(full_score(prefs)),
        LoadBalancerMode::Failover => Some(eligible().map(|e| score_of(&e.workload)).max()?),
    };
    let in_tier = |e: &&Endpoint| best.is_none_or(|b| score_of(&e.workload) == b);
    let weight = |e: &Endpoint| u64::from(e.workload.capacity);
    let (mut total, mut tier, mut count) = (0u64, 0usize, 0usize);
    for e in eligible() {
        count += 1;
        if in_tier(&e) {
            tier += 1;
            total += weight(e);
        }
    }
    if total == 0 {
        return None;
    }
    let mut ticket = random % total;
    let chosen = eligible().filter(in_tier).find(|e| {
        let hit = ticket < weight(e);
        ticket = ticket.saturating_sub(weight(e));
        hit
    })?;
    let choice = Choice {
        mode,
        matched: matched(prefs, source, &chosen.workload),
        preferences: prefs.len(),
        tier,
        eligible: count,
    };
    Some((chosen, choice))
}

/// Step 1 of the module doc.
pub fn eligible(service: &Service, source: &Workload, w: &Workload) -> bool {
    let reachable = !w.workload_ips.is_empty() || !w.hostname.is_empty();
    service.admits(w.status) && w.capacity > 0 && reachable && !behind_gateway(source, w)
}

/// An endpoint the health policy and capacity would admit but that only its network gateway
/// reaches: what a service with no eligible endpoint may still have (the router then refuses
/// the connection as `UNROUTABLE` rather than "no healthy endpoint").
pub fn gateway_only<'s>(service: &'s Service, source: &Workload) -> Option<&'s Endpoint> {
    service.endpoints.iter().find(|e| {
        let w = &e.workload;
        service.admits(w.status) && w.capacity > 0 && behind_gateway(source, w)
    })
}

/// On another network than `source`, behind a network gateway: reached through the gateway
/// (as ztunnel does), not at its own addresses.
pub fn behind_gateway(source: &Workload, w: &Workload) -> bool {
    w.network != source.network && w.network_gateway.is_some()
}

/// Whether `w` matches `source` on one dimension. Empty values match each other (both
/// unknown is treated as the same place, as ztunnel compares them).
fn same(scope: LoadBalancerScope, source: &Workload, w: &Workload) -> bool {
    match scope {
        LoadBalancerScope::Region => source.locality.region == w.locality.region,
        LoadBalancerScope::Zone => source.locality.zone == w.locality.zone,
        LoadBalancerScope::Subzone => source.locality.subzone == w.locality.subzone,
        LoadBalancerScope::Node => source.node == w.node,
        LoadBalancerScope::Cluster => source.cluster_id == w.cluster_id,
        LoadBalancerScope::Network => source.network == w.network,
    }
}

/// The tier score of `w` (step 2): leading matches, with a first `NETWORK` preference
/// dominating. Ordered: higher is closer.
pub fn score(prefs: &[LoadBalancerScope], source: &Workload, w: &Workload) -> usize {
    match prefs.split_first() {
        Some((LoadBalancerScope::Network, rest)) => {
            let network = usize::from(same(LoadBalancerScope::Network, source, w));
            // Every same-network score is above every other-network one.
            network * (rest.len() + 1) + leading(rest, source, w)
        }
        _ => leading(prefs, source, w),
    }
}

/// The score of an endpoint matching every preference.
fn full_score(prefs: &[LoadBalancerScope]) -> usize {
    match prefs.split_first() {
        Some((LoadBalancerScope::Network, rest)) => 2 * rest.len() + 1,
        _ => prefs.len(),
    }
}

/// Preferences matched for the log: leading matches, with a first `NETWORK` counted when it
/// matches and not ending the count when it does not.
fn matched(prefs: &[LoadBalancerScope], source: &Workload, w: &Workload) -> usize {
    match prefs.split_first() {
        Some((LoadBalancerScope::Network, rest)) => {
            usize::from(same(LoadBalancerScope::Network, source, w)) + leading(rest, source, w)
        }
        _ => leading(prefs, source, w),
    }
}

fn leading(prefs: &[LoadBalancerScope], source: &Workload, w: &Workload) -> usize {
    prefs.iter().take_while(|&&p| same(p, source, w)).count()
}

#[cfg(test)]
mod tests;

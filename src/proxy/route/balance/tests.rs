//! Tables for endpoint choice: health policy × routing preferences × mode × capacity.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::state::{
    Destination, GatewayAddress, HealthStatus, LoadBalancer, LoadBalancerHealthPolicy,
    LoadBalancerMode as M, LoadBalancerScope as S, Locality, NetworkAddress, PortMap, Workload,
};

/// A workload from a compact spec: `uid region/zone/subzone node cluster network`, then
/// optional words `sick`, `cap=N`, `noip`, `host`, `gw`.
fn wl(spec: &str) -> Workload {
    let words: Vec<&str> = spec.split_whitespace().collect();
    let [uid, place, node, cluster, network, extra @ ..] = words.as_slice() else {
        panic!("bad spec {spec}")
    };
    let place: Vec<&str> = place.split('/').collect();
    let mut w = Workload {
        uid: (*uid).into(),
        name: (*uid).into(),
        namespace: "default".into(),
        workload_ips: vec!["10.0.0.1".parse().unwrap()],
        node: (*node).into(),
        cluster_id: (*cluster).into(),
        network: (*network).into(),
        locality: Locality {
            region: place[0].into(),
            zone: place[1].into(),
            subzone: place[2].into(),
        },
        ..Workload::default()
    };
    for x in extra {
        match *x {
            "sick" => w.status = HealthStatus::Unhealthy,
            "noip" => w.workload_ips.clear(),
            "host" => {
                w.workload_ips.clear();
                w.hostname = "db.example.com".into();
            }
            "gw" => {
                w.workload_ips.clear();
                w.network_gateway = Some(GatewayAddress {
                    destination: Destination::Address(NetworkAddress {
                        network: w.network.clone(),
                        address: "192.0.2.1".parse().unwrap(),
                    }),
                    hbone_mtls_port: 15008,
                });
            }
            c if c.starts_with("cap=") => w.capacity = c[4..].parse().unwrap(),
            other => panic!("bad word {other}"),
        }
    }
    w
}

/// The source of every case: region r1, zone z1, subzone s1, node n1, cluster c1, network a.
fn source() -> Workload {
    wl("src r1/z1/s1 n1 c1 a")
}

fn service(lb: Option<(M, &[S], LoadBalancerHealthPolicy)>, endpoints: &[&str]) -> Service {
    Service {
        name: "svc".into(),
        namespace: "default".into(),
        hostname: "svc.default.svc.cluster.local".into(),
        load_balancer: lb.map(|(mode, prefs, health_policy)| LoadBalancer {
            routing_preferences: prefs.to_vec(),
            mode,
            health_policy,
        }),
        endpoints: endpoints
            .iter()
            .map(|spec| Endpoint {
                workload: Arc::new(wl(spec)),
                ports: PortMap::new(),
            })
            .collect(),
        ..Service::default()
    }
}

/// uid → how many of 1,000 consecutive tickets chose it (an empty map: never any endpoint).
fn spread(svc: &Service) -> BTreeMap<String, usize> {
    let src = source();
    let mut m = BTreeMap::new();
    for random in 0..1000 {
        if let Some((e, _)) = choose(svc, &src, random) {
            *m.entry(e.workload.uid.to_string()).or_default() += 1;
        }
    }
    m
}

fn chosen(svc: &Service) -> Vec<String> {
    spread(svc).into_keys().collect()
}

const ONLY: LoadBalancerHealthPolicy = LoadBalancerHealthPolicy::OnlyHealthy;
const ALL: LoadBalancerHealthPolicy = LoadBalancerHealthPolicy::AllowAll;

/// Endpoints at every distance from the source.
const SPREAD: &[&str] = &[
    "subzone r1/z1/s1 n2 c1 a",
    "zone r1/z1/s2 n3 c1 a",
    "region r1/z2/s3 n4 c1 a",
    "far r2/z3/s4 n5 c1 a",
];

#[test]
fn mode_and_preferences_pick_the_tier() {
    type Case<'a> = (
        &'a str,
        Option<(M, &'a [S], LoadBalancerHealthPolicy)>,
        &'a [&'a str],
        &'a [&'a str],
    );
    let cases: &[Case] = &[
        (
            "no load balancer: all",
            None,
            SPREAD,
            &["far", "region", "subzone", "zone"],
        ),
        (
            "unspecified mode ignores preferences",
            Some((M::Standard, &[S::Region, S::Zone], ONLY)),
            SPREAD,
            &["far", "region", "subzone", "zone"],
        ),
        (
            "failover: best tier only",
            Some((M::Failover, &[S::Region, S::Zone, S::Subzone], ONLY)),
            SPREAD,
            &["subzone"],
        ),
        (
            "failover: next tier when the best is gone",
            Some((M::Failover, &[S::Region, S::Zone, S::Subzone], ONLY)),
            &SPREAD[1..],
            &["zone"],
        ),
        (
            "failover: region tier",
            Some((M::Failover, &[S::Region, S::Zone, S::Subzone], ONLY)),
            &SPREAD[2..],
            &["region"],
        ),
        (
            "failover: anything at last",
            Some((M::Failover, &[S::Region, S::Zone, S::Subzone], ONLY)),
            &SPREAD[3..],
            &["far"],
        ),
        (
            "failover: two endpoints share the best tier",
            Some((M::Failover, &[S::Region], ONLY)),
            SPREAD,
            &["region", "subzone", "zone"],
        ),
        (
            "strict: only full matches",
            Some((M::Strict, &[S::Region, S::Zone], ONLY)),
            SPREAD,
            &["subzone", "zone"],
        ),
        (
            "strict: no full match, no endpoint",
            Some((M::Strict, &[S::Region, S::Zone], ONLY)),
            &SPREAD[2..],
            &[],
        ),
        (
            "strict without preferences: all",
            Some((M::Strict, &[], ONLY)),
            SPREAD,
            &["far", "region", "subzone", "zone"],
        ),
        (
            "failover on node",
            Some((M::Failover, &[S::Node], ONLY)),
            &["here r9/z9/s9 n1 c1 a", "there r1/z1/s1 n2 c1 a"],
            &["here"],
        ),
        (
            "failover on cluster",
            Some((M::Failover, &[S::Cluster], ONLY)),
            &["remote r1/z1/s1 n1 c2 a", "local r2/z2/s2 n2 c1 a"],
            &["local"],
        ),
        (
            "strict on network",
            Some((M::Strict, &[S::Network], ONLY)),
            &["other r1/z1/s1 n1 c1 b", "same r2/z2/s2 n2 c2 a"],
            &["same"],
        ),
        (
            "network first dominates: same network, other region beats other network, same region",
            Some((M::Failover, &[S::Network, S::Region], ONLY)),
            &["othernet r1/z1/s1 n2 c1 b", "samenet r2/z2/s2 n2 c1 a"],
            &["samenet"],
        ),
        (
            "network first, then region within the network",
            Some((M::Failover, &[S::Network, S::Region], ONLY)),
            &[
                "othernet r1/z1/s1 n2 c1 b",
                "samenet r2/z2/s2 n2 c1 a",
                "best r1/z2/s2 n2 c1 a",
            ],
            &["best"],
        ),
        (
            "network first: without same-network endpoints, region decides among the others",
            Some((M::Failover, &[S::Network, S::Region], ONLY)),
            &["near r1/z2/s2 n2 c1 b", "far r2/z2/s2 n2 c1 c"],
            &["near"],
        ),
        (
            "network later in the list is an ordinary preference",
            Some((M::Failover, &[S::Region, S::Network], ONLY)),
            &["samenet r2/z2/s2 n2 c1 a", "sameregion r1/z2/s2 n2 c1 b"],
            &["sameregion"],
        ),
        (
            "health first: an unhealthy best tier fails over",
            Some((M::Failover, &[S::Region, S::Zone, S::Subzone], ONLY)),
            &["subzone r1/z1/s1 n2 c1 a sick", "zone r1/z1/s2 n3 c1 a"],
            &["zone"],
        ),
        (
            "allow all keeps the unhealthy best tier",
            Some((M::Failover, &[S::Region, S::Zone, S::Subzone], ALL)),
            &["subzone r1/z1/s1 n2 c1 a sick", "zone r1/z1/s2 n3 c1 a"],
            &["subzone"],
        ),
        (
            "strict with only unhealthy matches: none",
            Some((M::Strict, &[S::Zone], ONLY)),
            &["zone r1/z1/s1 n2 c1 a sick", "far r2/z2/s2 n3 c1 a"],
            &[],
        ),
        (
            "no load balancer: unhealthy skipped",
            None,
            &["sick r1/z1/s1 n2 c1 a sick", "ok r2/z2/s2 n3 c1 a"],
            &["ok"],
        ),
        (
            "capacity 0 is drained, even in the best tier",
            Some((M::Failover, &[S::Zone], ONLY)),
            &["drained r1/z1/s1 n2 c1 a cap=0", "far r2/z2/s2 n3 c1 a"],
            &["far"],
        ),
        (
            "all drained: none",
            None,
            &["d1 r1/z1/s1 n2 c1 a cap=0"],
            &[],
        ),
        (
            "reachability: hostname-only kept; no address or behind a gateway skipped",
            None,
            &[
                "dns r1/z1/s1 n2 c1 a host",
                "nothing r1/z1/s1 n2 c1 a noip",
                "samegw r1/z1/s1 n2 c1 a gw",
                "remotegw r1/z1/s1 n2 c1 b gw",
            ],
            &["dns"],
        ),
        (
            "only a gateway endpoint: none (the router says why)",
            None,
            &["remotegw r1/z1/s1 n2 c1 b gw"],
            &[],
        ),
    ];
    for (name, lb, endpoints, want) in cases {
        let svc = service(*lb, endpoints);
        assert_eq!(chosen(&svc), *want, "{name}");
    }
}

#[test]
fn gateway_only_endpoints_are_found_for_the_refusal() {
    let src = source();
    let svc = service(
        None,
        &[
            "remotegw r1/z1/s1 n2 c1 b gw",
            "sick r1/z1/s1 n2 c1 b gw sick",
        ],
    );
    assert_eq!(
        gateway_only(&svc, &src).map(|e| &*e.workload.uid),
        Some("remotegw")
    );
    // Same network: its gateway is never used, so it is no reason to refuse.
    let svc = service(None, &["samegw r1/z1/s1 n2 c1 a gw"]);
    assert!(gateway_only(&svc, &src).is_none());
    // Unhealthy (ONLY_HEALTHY) or drained: not a candidate either way.
    let svc = service(
        None,
        &["x r1/z1/s1 n2 c1 b gw sick", "y r1/z1/s1 n2 c1 b gw cap=0"],
    );
    assert!(gateway_only(&svc, &src).is_none());
}

#[test]
fn capacity_weights_the_tier() {
    // Within the best tier (same zone) capacities 3 and 1; the other zone never.
    let svc = service(
        Some((M::Failover, &[S::Region, S::Zone], ONLY)),
        &[
            "big r1/z1/s1 n2 c1 a cap=3",
            "small r1/z1/s2 n3 c1 a",
            "far r1/z2/s1 n4 c1 a cap=100",
        ],
    );
    let s = spread(&svc);
    assert_eq!(s.get("far"), None);
    assert_eq!((s["big"], s["small"]), (750, 250));
    // Without preferences the heavy far endpoint takes its share: 100 of 104 tickets.
    let svc = service(
        None,
        &[
            "big r1/z1/s1 n2 c1 a cap=3",
            "small r1/z1/s2 n3 c1 a",
            "far r1/z2/s1 n4 c1 a cap=100",
        ],
    );
    let src = source();
    let mut far = 0;
    for random in 0..104 {
        let (e, _) = choose(&svc, &src, random).unwrap();
        far += usize::from(&*e.workload.uid == "far");
    }
    assert_eq!(far, 100);
}

#[test]
fn the_choice_says_how() {
    let src = source();
    let svc = service(
        Some((M::Failover, &[S::Region, S::Zone, S::Subzone], ONLY)),
        &SPREAD[1..],
    );
    let (e, c) = choose(&svc, &src, 7).unwrap();
    assert_eq!(&*e.workload.uid, "zone");
    assert_eq!(
        c,
        Choice {
            mode: M::Failover,
            matched: 2,
            preferences: 3,
            tier: 1,
            eligible: 3,
        }
    );
    let svc = service(
        Some((M::Failover, &[S::Network, S::Zone], ONLY)),
        &["x r1/z9/s1 n2 c1 a"],
    );
    let (_, c) = choose(&svc, &src, 0).unwrap();
    assert_eq!((c.matched, c.preferences), (1, 2));
    let svc = service(None, SPREAD);
    let (_, c) = choose(&svc, &src, 0).unwrap();
    assert_eq!(
        c,
        Choice {
            mode: M::Standard,
            matched: 0,
            preferences: 0,
            tier: 4,
            eligible: 4,
        }
    );
}

#[test]
fn scores_order_the_tiers() {
    let src = source();
    let prefs = [S::Network, S::Region, S::Zone];
    let table = [
        ("all", "r1/z1/s9 n9 c9 a", 5),
        ("network and region", "r1/z9/s9 n9 c9 a", 4),
        ("network", "r9/z1/s9 n9 c9 a", 3),
        ("region and zone, other network", "r1/z1/s9 n9 c9 b", 2),
        ("region, other network", "r1/z9/s9 n9 c9 b", 1),
        ("nothing", "r9/z9/s9 n9 c9 b", 0),
    ];
    for (name, spec, want) in table {
        let w = wl(&format!("x {spec}"));
        assert_eq!(score(&prefs, &src, &w), want, "{name}");
    }
    assert_eq!(full_score(&prefs), 5);
    assert_eq!(full_score(&[S::Region, S::Zone]), 2);
}

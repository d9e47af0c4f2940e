//! The registry: shards on several threads merged on scrape, the accounting of the five TCP
//! families, histograms, gauges and the text the server answers with.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::metrics::labels::{NO_FLAGS, Value};

/// A label set whose only distinguishing value is the source workload.
fn labels(source: &'static str, flags: &'static str) -> LabelsRef<'static> {
    let mut values = [Value::Str("unknown"); labels::LEN];
    values[0] = Value::Str("source");
    values[1] = Value::Str(source);
    values[20] = Value::Str("tcp");
    values[21] = Value::Str(flags);
    LabelsRef { values }
}

/// Parses the text format back: `name{labels}` → value, for the assertions below.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

fn key(name: &str, source: &str, flags: &str) -> String {
    let mut s = format!("{name}{{");
    for (i, n) in labels::NAMES.iter().enumerate() {
        let v = match i {
            0 => "source",
            1 => source,
            20 => "tcp",
            21 => flags,
            _ => "unknown",
        };
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{n}=\"{v}\""));
    }
    s.push('}');
    s
}

#[test]
fn shards_on_two_threads_merge_by_label_set() {
    let registry = Registry::new();
    std::thread::scope(|scope| {
        for core in 0..2 {
            let registry = &registry;
            scope.spawn(move || {
                let shard = registry.attach_core(core, "epoll");
                // Three connections of appa, one of appx (DENY), per core.
                for i in 0..3u64 {
                    let s = shard.series(&labels("appa", NO_FLAGS));
                    s.open();
                    let up = Meter::new(s.clone(), Flow::Request);
                    let down = Meter::new(s.clone(), Flow::Response);
                    up.add(100 + i);
                    down.add(1000);
                    s.close(false);
                }
                let s = shard.series(&labels("appx", NO_FLAGS));
                s.open();
                shard.series(&labels("appx", "DENY")).close(true);
                assert_eq!(shard.series_count(), 3, "a label set is registered once");
                shard.connection_started();
                shard.observe(LatencyKind::SetupOutbound, Duration::from_millis(3));
                assert_eq!(shard.flush(), 1);
                assert_eq!(shard.flush(), 0, "nothing new to hand over");
            });
        }
    });
    let text = registry.scrape();
    let s = samples(&text);
    let get = |name: &str, src: &str, flags: &str| {
        *s.get(&key(name, src, flags))
            .unwrap_or_else(|| panic!("{} missing in\n{text}", key(name, src, flags)))
    };
    assert_eq!(get("istio_tcp_connections_opened_total", "appa", "-"), 6.0);
    assert_eq!(get("istio_tcp_connections_closed_total", "appa", "-"), 6.0);
    assert_eq!(get("istio_tcp_connections_failed_total", "appa", "-"), 0.0);
    assert_eq!(
        get("istio_tcp_received_bytes_total", "appa", "-"),
        (2 * (100 + 101 + 102)) as f64
    );
    assert_eq!(get("istio_tcp_sent_bytes_total", "appa", "-"), 6000.0);
    assert_eq!(get("istio_tcp_connections_opened_total", "appx", "-"), 2.0);
    assert_eq!(
        get("istio_tcp_connections_closed_total", "appx", "DENY"),
        2.0
    );
    assert_eq!(
        get("istio_tcp_connections_failed_total", "appx", "DENY"),
        2.0
    );
    // A connection is opened (and moves bytes) before it has an outcome: no flagged series.
    assert!(!s.contains_key(&key("istio_tcp_connections_opened_total", "appx", "DENY")));
    assert!(!s.contains_key(&key("istio_tcp_sent_bytes_total", "appx", "DENY")));
    // Gauges per core, histograms merged.
    assert_eq!(s["zring_core_connections_open{core=\"0\"}"], 1.0);
    assert_eq!(s["zring_core_connections_open{core=\"1\"}"], 1.0);
    assert_eq!(s["zring_core_info{core=\"1\",driver=\"epoll\"}"], 1.0);
    assert_eq!(
        s["zring_connection_setup_duration_seconds_count{direction=\"outbound\"}"],
        2.0
    );
    assert_eq!(
        s["zring_connection_setup_duration_seconds_bucket{direction=\"outbound\",le=\"0.0025\"}"],
        0.0
    );
    assert_eq!(
        s["zring_connection_setup_duration_seconds_bucket{direction=\"outbound\",le=\"0.005\"}"],
        2.0
    );
    assert_eq!(
        s["zring_connection_setup_duration_seconds_bucket{direction=\"outbound\",le=\"+Inf\"}"],
        2.0
    );
    assert_eq!(
        s["zring_connection_setup_duration_seconds_sum{direction=\"outbound\"}"],
        0.006
    );
    assert!(
        !text.contains("direction=\"inbound\""),
        "empty histograms are not written"
    );
    assert_eq!(s["istio_build{component=\"ztunnel\",tag=\"0.1.0\"}"], 1.0);
    assert!(s["process_resident_memory_bytes"] > 0.0);
    assert!(s["process_open_fds"] > 0.0);
    // Scraping again reads the same cells: nothing is lost or counted twice. (The process's
    // own gauges move between two scrapes.)
    let of_zring = |m: BTreeMap<String, f64>| {
        m.into_iter()
            .filter(|(k, _)| !k.starts_with("process_"))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(of_zring(samples(&registry.scrape())), of_zring(s));
}

#[test]
fn latencies_wait_in_the_core_while_nobody_scrapes() {
    let registry = Registry::new();
    let shard = registry.attach_core(0, "epoll");
    for i in 0..LATENCY_QUEUE as u64 + 10 {
        shard.observe(LatencyKind::SetupInbound, Duration::from_micros(10 + i));
        shard.flush();
    }
    // The queue is full: the last observations stayed on the core, none was dropped.
    assert_eq!(shard.flush(), 0);
    assert_eq!(
        registry.latency(LatencyKind::SetupInbound).count(),
        LATENCY_QUEUE as u64
    );
    assert_eq!(
        shard.flush(),
        1,
        "room again after the scrape drained the queue"
    );
    assert_eq!(
        registry.latency(LatencyKind::SetupInbound).count(),
        LATENCY_QUEUE as u64 + 10
    );
}

#[test]
fn counters_move_while_connections_are_open() {
    let registry = Registry::new();
    let shard = registry.attach_core(0, "io_uring");
    let s = shard.series(&labels("long", NO_FLAGS));
    s.open();
    let up = Meter::new(s.clone(), Flow::Request);
    let read = |r: &Registry| r.traffic().into_values().next().unwrap();
    up.add(10);
    assert_eq!(
        read(&registry),
        Totals {
            opened: 1,
            received: 10,
            ..Totals::default()
        }
    );
    up.add(5);
    assert_eq!(read(&registry).received, 15);
    s.close(false);
    assert_eq!(read(&registry).closed, 1);
}

#[test]
fn every_family_has_help_and_type_before_its_samples() {
    let registry = Registry::new();
    let shard = registry.attach_core(0, "io_uring");
    let s = shard.series(&labels("a\"b\\c\nd", NO_FLAGS));
    s.open();
    shard.observe(LatencyKind::HandshakeServer, Duration::from_micros(700));
    shard.flush();
    registry.xds().terminated(Termination::Error);
    registry.xds().response(crate::xds_types::Kind::Address, 2);
    let text = registry.scrape();
    assert!(text.ends_with('\n'));
    let mut declared: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                !declared.iter().any(|(n, _)| n == name),
                "{name} declared twice"
            );
            declared.push((name.to_owned(), kind.to_owned()));
        } else if !line.starts_with("# HELP ") {
            let name = line.split(['{', ' ']).next().unwrap();
            let (family, kind) = declared.last().expect("a sample before any TYPE");
            let ok = name == family
                || (kind == "histogram"
                    && [
                        format!("{family}_bucket"),
                        format!("{family}_sum"),
                        format!("{family}_count"),
                    ]
                    .contains(&name.to_owned()));
            assert!(ok, "sample {name} under family {family}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }
    assert!(
        text.contains(r#"source_workload="a\"b\\c\nd""#),
        "escaped label value missing:\n{text}"
    );
    assert!(text.contains("istio_xds_connection_terminations_total{reason=\"Error\"} 1"));
    assert!(text.contains(
        "zring_xds_responses_total{type_url=\"type.googleapis.com/istio.workload.Address\",result=\"nack\"} 1"
    ));
    assert!(text.contains(
        "zring_xds_rejected_resources_total{type_url=\"type.googleapis.com/istio.workload.Address\"} 2"
    ));
    assert!(text.contains("zring_hbone_handshake_duration_seconds_count{role=\"server\"} 1"));
}

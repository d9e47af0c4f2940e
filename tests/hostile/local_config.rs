//! Garbage written over the local config while zring runs: refused, the last good snapshot
//! keeps serving.

use super::*;

/// Garbage written over the local config while zring runs: binary noise, YAML that is not a
/// config, an alias bomb, nesting deeper than the parser allows, a 4 MiB scalar. Each is
/// refused once in the log, the last good snapshot keeps serving, zring keeps running.
#[test]
fn garbage_local_config_keeps_the_last_good_snapshot() {
    let mut h = hostile(&[]);
    let mut bomb = String::from(
        "workloads:\n- &a0 {uid: u, name: n, namespace: d, authorizationPolicies: [p, p, p, p, p, p, p, p]}\n",
    );
    for i in 1..=9 {
        bomb.push_str(&format!(
            "- &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        ("binary noise", noise),
        ("a YAML list", b"- just\n- a\n- list\n".to_vec()),
        ("an alias bomb", bomb.into_bytes()),
        (
            "deep nesting",
            format!("workloads: {}", "[".repeat(100_000)).into_bytes(),
        ),
        (
            "a 4 MiB scalar",
            format!("workloads:\n- uid: {}\n", "u".repeat(4 << 20)).into_bytes(),
        ),
    ];
    for (i, (what, bytes)) in garbage.iter().enumerate() {
        let started = Instant::now();
        std::fs::write(&h.m.config, bytes).unwrap();
        for node in ["a", "b"] {
            h.m.eventually_logged(node, "keeping the last good snapshot", i + 1)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} took {:?} to refuse",
            started.elapsed()
        );
        h.unharmed(&format!("after {what}"));
    }
    let longest = h.m.log("a").lines().map(str::len).max().unwrap_or_default();
    assert!(longest < 4096, "a {longest}-byte log line");
    h.m.serve("appb", 80, 1).unwrap();
    h.m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
}

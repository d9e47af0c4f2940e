//! Hostile input: random garbage never panics, and nesting, flow depth, huge values and alias
//! expansion are bounded, each with a short error.

use super::*;

/// Deterministic xorshift, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..2_000 {
        let len = (rng.next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = parse_bytes(&bytes);
        let _ = parse(&String::from_utf8_lossy(&bytes));
    }
    // YAML-shaped garbage reaches deeper into the deserializers than random bytes do.
    const TOKENS: &[&str] = &[
        "workloads:",
        "services:",
        "policies:",
        "rules:",
        "- ",
        "- - - ",
        "\n",
        "  ",
        "{",
        "}",
        "[",
        "]",
        ",",
        ": ",
        "uid: a",
        "namespace: ns",
        "workloadIps: [10.0.0.1]",
        "vips: [/10.96.0.1]",
        "services: {ns/a: {80: 80}}",
        "&a ",
        "*a",
        "!!str ",
        "!Exact ",
        "Exact: ",
        "Presence: []",
        "'",
        "\"",
        "|",
        ">",
        "#",
        "~",
        "-1",
        "65536",
        "sourceIps: [10.0.0.0/8]",
        "scope: Global",
        "action: Allow",
        "\t",
        "\0",
        "é",
        "\u{feff}",
    ];
    for _ in 0..5_000 {
        let n = (rng.next() % 40) as usize;
        let doc: String = (0..n)
            .map(|_| TOKENS[(rng.next() % TOKENS.len() as u64) as usize])
            .collect();
        let _ = parse(&doc);
    }
}

#[test]
fn deep_nesting_is_an_error() {
    let deep = [
        "[".repeat(200_000),
        "{".repeat(200_000),
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        format!("workloads: {}", "[".repeat(100_000)),
        format!(
            "policies:\n- {{name: p, namespace: ns, scope: Global, action: Allow, rules: {}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
        (0..2_000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect(),
        "- ".repeat(50_000),
    ];
    for doc in &deep {
        let e = parse(doc).expect_err("deep nesting");
        assert!(e.to_string().len() < 1_000, "{}", e.to_string().len());
    }
}

#[test]
fn flow_depth_is_checked_before_parsing() {
    assert!(check_flow_depth("[".repeat(MAX_FLOW_DEPTH).as_bytes()).is_ok());
    let e =
        check_flow_depth(format!("a: 1\nworkloads: {}", "[".repeat(MAX_FLOW_DEPTH + 1)).as_bytes())
            .unwrap_err();
    assert!(
        e.to_string().contains("deeper than 128 levels at line 2"),
        "{e}"
    );
    // Closed collections do not add up.
    assert!(check_flow_depth("[[]] ".repeat(10_000).as_bytes()).is_ok());

    // Brackets in quoted scalars, comments and inside plain scalars cannot open a collection.
    let b = "[".repeat(500);
    let doc = format!(
        "workloads:\n- uid: u1 # {b}\n  namespace: ns\n  workloadIps: [10.0.0.1]\n  name: \"{b}\\\"{b}\"\n  workloadName: '{b}''{b}'\n  canonicalName: x{b}\n# {b}\n"
    );
    let s = ok(&doc);
    let w = s.workload_by_uid("u1").unwrap();
    assert_eq!(w.name.len(), 1001);
    assert_eq!(w.workload_name.len(), 1001);
    assert_eq!(w.canonical_name.len(), 501);
}

#[test]
fn huge_values_give_short_errors() {
    // One 10 MB number (the slow case in debug builds), then 1 MB values in every position.
    let ten_mb = "9".repeat(10 * 1024 * 1024);
    let e = parse(&format!("workloads: {ten_mb}")).unwrap_err();
    assert!(
        matches!(
            e,
            LocalConfigError::Yaml {
                line: Some(1),
                column: Some(_),
                ..
            }
        ),
        "{e:?}"
    );
    let e = e.to_string();
    assert!(
        e.len() < 1_000 && e.ends_with("at line 1 column 12"),
        "{} bytes: {}",
        e.len(),
        &e[..200]
    );

    let nines = "9".repeat(1024 * 1024);
    for doc in [
        format!(
            "workloads:\n- {{uid: u1, namespace: ns, workloadIps: [10.0.0.1], services: {{}}, capacity: {nines}}}\n"
        ),
        format!(
            "workloads:\n- {{uid: u1, namespace: ns, workloadIps: ['{nines}'], services: {{}}}}\n"
        ),
        format!(
            "workloads:\n- {{uid: u1, namespace: '{nines}', workloadIps: [10.0.0.1], services: {{}}}}\n"
        ),
        format!(
            "workloads:\n- {{uid: '{nines}', namespace: 'bad/ns', workloadIps: [10.0.0.1], services: {{}}}}\n"
        ),
        format!("{nines}: 1\n"),
        format!(
            "policies:\n- {{name: p, namespace: ns, scope: Global, action: Allow, dryRun: false, rules: [[[{{principals: [!Bogus{nines} x]}}]]]}}\n"
        ),
    ] {
        let e = strict_err(&doc);
        assert!(e.len() < 1_000, "error is {} bytes: {}", e.len(), &e[..200]);
        assert!(e.contains("999"), "{e}");
    }
}

#[test]
fn alias_expansion_is_bounded() {
    // One 100 KB string referenced 10,000 times would be a gigabyte once expanded.
    let big = "x".repeat(100 * 1024);
    let refs = vec!["*s"; 10_000].join(", ");
    let doc = format!(
        "workloads:\n- {{uid: &s '{big}', namespace: ns, workloadIps: [10.0.0.1], services: {{}}, authorizationPolicies: [{refs}]}}\n"
    );
    let e = parse(&doc).expect_err("string bomb").to_string();
    assert!(
        e.contains("expands") || e.contains("repetition limit"),
        "{e}"
    );

    // Nested lists: 100 ports × 100 matches × 100 clauses per rule, the rule repeated.
    let ports = (1..=100)
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let doc = format!(
        "policies:\n- name: p\n  namespace: ns\n  scope: Global\n  action: Allow\n  rules:\n  - &r [&c [&m {{destinationPorts: [{ports}]}}, {m}], {c}]\n  - [{r}]\n",
        m = vec!["*m"; 99].join(", "),
        c = vec!["*c"; 99].join(", "),
        r = vec!["*r"; 1000].join(", "),
    );
    let e = parse(&doc).expect_err("list bomb").to_string();
    assert!(
        e.contains("expands") || e.contains("repetition limit"),
        "{e}"
    );

    // Tagged string matches are charged too: one tagged 100 KB principal, aliased.
    let doc = format!(
        "policies:\n- {{name: p, namespace: ns, scope: Global, action: Allow, dryRun: false, rules: [[[{{principals: [&s !Exact '{big}', {refs}]}}]]]}}\n"
    );
    let e = strict_err(&doc);
    assert!(
        e.contains("expands") || e.contains("repetition limit"),
        "{e}"
    );

    // Modest, legitimate alias use still works.
    let s = strict(
        "workloads:\n- {uid: a, namespace: &ns ns, workloadIps: [10.0.0.1], services: &none {}}\n- {uid: b, namespace: *ns, workloadIps: [10.0.0.2], services: *none}\n",
    );
    assert_eq!(&*s.workload_by_uid("b").unwrap().namespace, "ns");
}

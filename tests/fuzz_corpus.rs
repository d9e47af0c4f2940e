//! The fuzz targets' seed corpora (`fuzz/corpus/<target>/`), run as a regular test through the
//! same entry functions cargo-fuzz calls (`zring::fuzzing`), so CI exercises every seed and
//! every regression input without cargo-fuzz or a nightly compiler.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seeds` (re)writes the generated seeds:
//! certificates with hostile SANs, protobuf resources and responses, and the text seeds.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use zring::fuzzing::TARGETS;

// The frame writer of the hostile tests builds the HTTP/2 seeds.
#[allow(dead_code)]
#[path = "hostile/h2raw.rs"]
mod h2raw;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The regular files of one corpus directory (libFuzzer's working copies live in `.cache/`,
/// which is ignored by git and by this test).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Every entry function has a cargo-fuzz target calling it and a corpus of its own, and every
/// target file belongs to an entry function.
#[test]
fn every_target_has_a_fuzz_binary_and_seeds() {
    let listed: BTreeSet<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    let files: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    assert_eq!(
        files.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        listed,
        "fuzz/fuzz_targets/*.rs and zring::fuzzing::TARGETS differ"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for name in listed {
        let source =
            std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        assert!(
            source.contains(&format!("zring::fuzzing::{name}(data)")),
            "fuzz_targets/{name}.rs does not call zring::fuzzing::{name}"
        );
        assert!(
            manifest.contains(&format!("path = \"fuzz_targets/{name}.rs\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
        let seeds = corpus(name).len();
        assert!(seeds >= 5, "fuzz/corpus/{name} has {seeds} seeds");
    }
}

/// Every committed seed goes through its target without a panic (a failed property is a
/// panic too). All failures are reported, each with its file.
#[test]
fn every_seed_passes_its_target() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for (name, run) in TARGETS {
        for path in corpus(name) {
            let data = std::fs::read(&path).unwrap();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| run(&data))) {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {why}", path.display()));
            }
            ran += 1;
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(ran >= 5 * TARGETS.len(), "only {ran} seeds ran");
}

/// The HTTP/2 seeds get where they should: well-formed requests reach zring's handler,
/// floods do not.
#[test]
fn http2_seeds_reach_the_request_handler_or_not() {
    let dir = fuzz_dir().join("corpus/hbone_server");
    for (seed, want) in [
        ("connect-data-close", 1),
        ("get", 1),
        ("no-authority", 1),
        ("continuation", 1),
        ("padded-priority", 1),
        ("continuation-flood", 0),
        ("oversized", 0),
    ] {
        let data = std::fs::read(dir.join(seed)).unwrap();
        assert_eq!(zring::fuzzing::serve_script(&data), want, "{seed}");
    }
}

#[test]
#[ignore = "writes the generated seeds into fuzz/corpus; run by hand"]
fn write_seeds() {
    for (target, seeds) in [
        ("connect_authority", seeds::authority()),
        ("hbone_headers", seeds::headers()),
        ("spiffe_identity", seeds::identities()),
        ("certificate_san", seeds::certificates()),
        ("xds_protobuf", seeds::protobufs()),
        ("xds_response", seeds::responses()),
        ("local_yaml", seeds::yaml()),
        ("hbone_server", seeds::http2()),
    ] {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}

mod seeds {
    use std::collections::HashMap;

    use prost::Message;
    use rcgen::{CertificateParams, KeyPair, SanType, string::Ia5String};
    use zring::xds::proto::discovery::{DeltaDiscoveryResponse, Resource};
    use zring::xds::proto::{ADDRESS_TYPE, AUTHORIZATION_TYPE, security as ps, workload as pw};

    use super::h2raw::{self, frame};

    type Seeds = Vec<(String, Vec<u8>)>;

    /// Client frames after the preface (the target adds the preface), starting with SETTINGS.
    pub fn http2() -> Seeds {
        let settings = frame(h2raw::SETTINGS, 0, 0, &[0, 4, 0, 0x40, 0, 0]);
        let target = "10.244.2.4:80";
        let connect = h2raw::connect(1, target);
        let mut split = frame(
            h2raw::HEADERS,
            0,
            1,
            &h2raw::block(&[(":method", "CONNECT")]),
        );
        split.extend(frame(
            h2raw::CONTINUATION,
            h2raw::END_HEADERS,
            1,
            &h2raw::block(&[(":authority", target)]),
        ));
        let mut flood = frame(
            h2raw::HEADERS,
            0,
            1,
            &h2raw::block(&[(":method", "CONNECT")]),
        );
        for _ in 0..50 {
            flood.extend(frame(h2raw::CONTINUATION, 0, 1, b""));
        }
        let mut resets = Vec::new();
        for i in 0..30 {
            resets.extend(h2raw::connect(1 + 2 * i, target));
            resets.extend(h2raw::rst_stream(1 + 2 * i, h2raw::CANCEL));
        }
        let big = "x".repeat(20 << 10);
        let mut padded = vec![4u8];
        padded.extend(h2raw::block(&[
            (":method", "CONNECT"),
            (":authority", target),
        ]));
        padded.extend([0u8; 4]);
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            (
                "connect-data-close",
                vec![
                    connect.clone(),
                    h2raw::data(1, b"hello", false),
                    h2raw::data(1, b"", true),
                ],
            ),
            (
                "get",
                vec![h2raw::headers(
                    1,
                    &[
                        (":method", "GET"),
                        (":scheme", "https"),
                        (":authority", target),
                        (":path", "/"),
                    ],
                    true,
                )],
            ),
            (
                "no-authority",
                vec![h2raw::headers(1, &[(":method", "CONNECT")], false)],
            ),
            ("continuation", vec![split]),
            ("continuation-flood", vec![flood]),
            ("reset-burst", vec![resets]),
            (
                "oversized",
                vec![h2raw::headers(
                    1,
                    &[
                        (":method", "CONNECT"),
                        (":authority", target),
                        ("x-pad", &big),
                    ],
                    false,
                )],
            ),
            (
                "ping-window-goaway",
                vec![
                    frame(h2raw::PING, 0, 0, b"12345678"),
                    frame(0x8, 0, 0, &1000u32.to_be_bytes()),
                    connect.clone(),
                    frame(0x8, 0, 1, &1000u32.to_be_bytes()),
                    frame(h2raw::GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
                ],
            ),
            (
                "padded-priority",
                vec![
                    frame(0x2, 0, 3, &[0, 0, 0, 1, 16]),
                    frame(
                        h2raw::HEADERS,
                        h2raw::END_HEADERS | h2raw::PADDED,
                        1,
                        &padded,
                    ),
                ],
            ),
        ];
        cases
            .into_iter()
            .map(|(name, frames)| {
                let mut bytes = settings.clone();
                bytes.extend(frames.concat());
                (name.to_string(), bytes)
            })
            .collect()
    }

    fn text(items: &[(&str, &str)]) -> Seeds {
        items
            .iter()
            .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
            .collect()
    }

    pub fn authority() -> Seeds {
        text(&[
            ("v4", "10.244.2.4:80"),
            ("v6", "[fd00::4]:8080"),
            ("v4-mapped", "[::ffff:10.244.2.4]:15008"),
            ("port-zero", "10.244.2.4:0"),
            ("port-too-big", "10.244.2.4:65536"),
            ("no-port", "10.244.2.4"),
            ("hostname", "appb.default.svc.cluster.local:80"),
            ("scoped", "[fe80::1%eth0]:80"),
            ("absolute-uri", "http://10.244.2.4:80/path?q"),
            ("userinfo", "user@10.244.2.4:80"),
            ("path", "/just/a/path"),
            ("nul", "10.244.2.4:80\0"),
            ("empty", ""),
        ])
    }

    pub fn headers() -> Seeds {
        text(&[
            (
                "baggage",
                "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=appa,service.name=appa,service.version=v1",
            ),
            (
                "baggage-props",
                "k8s.job.name=x;prop=1, other=y ,,k8s.pod.name=",
            ),
            ("baggage-quoted", "k=\"quoted\""),
            ("baggage-novalue", "novalue"),
            ("forwarded", "for=\"10.244.1.8:41234\""),
            (
                "forwarded-v6",
                "for=\"[fd00::8]:1\";proto=http, for=1.2.3.4",
            ),
            ("forwarded-bare", "For=[fd00::9]"),
            ("forwarded-hidden", "for=\"_hidden\""),
            (
                "traceparent",
                "00-0000000000000000000000000000dead-0000000000001234-01",
            ),
            (
                "traceparent-upper",
                "00-0000000000000000000000000000DEAD-0000000000001234-00",
            ),
            (
                "traceparent-zero",
                "00-00000000000000000000000000000000-0000000000001234-00",
            ),
        ])
    }

    pub fn identities() -> Seeds {
        text(&[
            ("valid", "spiffe://cluster.local/ns/default/sa/appa"),
            ("dots", "spiffe://my_td-1.example/ns/0ns/sa/build.robot-1"),
            ("extra-segment", "spiffe://cluster.local/ns/a/sa/b/c"),
            ("nul", "spiffe://cluster.local/ns/a/sa/b\0"),
            ("upper-scheme", "SPIFFE://cluster.local/ns/a/sa/b"),
            ("port", "spiffe://cluster.local:443/ns/a/sa/b"),
            ("percent", "spiffe://cluster.local/ns/%61/sa/b"),
            ("dotdot", "spiffe://cluster.local/ns/../sa/b"),
            ("unicode", "spiffe://clüster.local/ns/a/sa/b"),
        ])
    }

    /// Self-signed certificates whose SANs are what a hostile peer would present.
    pub fn certificates() -> Seeds {
        let uri = |s: &str| SanType::URI(Ia5String::try_from(s).unwrap());
        let cases: Vec<(&str, Vec<SanType>)> = vec![
            (
                "good",
                vec![uri("spiffe://cluster.local/ns/default/sa/appa")],
            ),
            (
                "nul",
                vec![uri("spiffe://cluster.local/ns/default/sa/appa\0.evil")],
            ),
            (
                "extra-segments",
                vec![uri("spiffe://cluster.local/ns/default/sa/appa/extra/path")],
            ),
            (
                "upper-scheme",
                vec![uri("SPIFFE://cluster.local/ns/default/sa/appa")],
            ),
            (
                "bad-first-good-second",
                vec![
                    uri("spiffe://cluster.local/ns/default/sa/a/b"),
                    uri("spiffe://cluster.local/ns/default/sa/appa"),
                ],
            ),
            (
                "other-uri-first",
                vec![
                    uri("https://example.com/"),
                    uri("spiffe://cluster.local/ns/default/sa/appa"),
                ],
            ),
            (
                "dns-only",
                vec![SanType::DnsName(
                    Ia5String::try_from("appa.default").unwrap(),
                )],
            ),
            ("no-san", vec![]),
        ];
        cases
            .into_iter()
            .map(|(name, sans)| {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                let mut params = CertificateParams::default();
                params.subject_alt_names = sans;
                let cert = params.self_signed(&key).unwrap();
                (format!("{name}.der"), cert.der().to_vec())
            })
            .collect()
    }

    fn v4(s: &str) -> Vec<u8> {
        s.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec()
    }

    fn workload(uid: &str, ip: &str) -> pw::Workload {
        pw::Workload {
            uid: uid.into(),
            name: "appa".into(),
            namespace: "default".into(),
            addresses: vec![v4(ip)],
            tunnel_protocol: pw::TunnelProtocol::Hbone as i32,
            service_account: "appa".into(),
            node: "a".into(),
            canonical_name: "appa".into(),
            canonical_revision: "v1".into(),
            workload_type: pw::WorkloadType::Pod as i32,
            workload_name: "appa".into(),
            services: HashMap::from([(
                "default/appb.default.svc.cluster.local".to_string(),
                pw::PortList {
                    ports: vec![pw::Port {
                        service_port: 8000,
                        target_port: 80,
                    }],
                },
            )]),
            authorization_policies: vec!["default/allow".into()],
            capacity: Some(2),
            waypoint: Some(pw::GatewayAddress {
                destination: Some(pw::gateway_address::Destination::Address(
                    pw::NetworkAddress {
                        network: String::new(),
                        address: v4("10.244.3.3"),
                    },
                )),
                hbone_mtls_port: 15008,
            }),
            ..Default::default()
        }
    }

    fn service() -> pw::Service {
        pw::Service {
            name: "appb".into(),
            namespace: "default".into(),
            hostname: "appb.default.svc.cluster.local".into(),
            addresses: vec![pw::NetworkAddress {
                network: String::new(),
                address: v4("10.96.101.203"),
            }],
            ports: vec![pw::Port {
                service_port: 8000,
                target_port: 80,
            }],
            subject_alt_names: vec!["spiffe://cluster.local/ns/default/sa/extra".into()],
            ..Default::default()
        }
    }

    fn policy(name: &str) -> ps::Authorization {
        let exact = |s: &str| ps::StringMatch {
            match_type: Some(ps::string_match::MatchType::Exact(s.into())),
        };
        ps::Authorization {
            name: name.into(),
            namespace: "default".into(),
            scope: ps::Scope::WorkloadSelector as i32,
            action: ps::Action::Allow as i32,
            rules: vec![ps::Rule {
                clauses: vec![ps::Clause {
                    matches: vec![ps::Match {
                        principals: vec![exact("cluster.local/ns/default/sa/appa")],
                        not_source_ips: vec![ps::Address {
                            address: v4("10.1.0.0"),
                            length: 16,
                        }],
                        destination_ports: vec![80],
                        ..Default::default()
                    }],
                }],
            }],
            ..Default::default()
        }
    }

    fn address(t: pw::address::Type) -> pw::Address {
        pw::Address { r#type: Some(t) }
    }

    pub fn protobufs() -> Seeds {
        let mut bad_ip = workload("Kubernetes//Pod/default/bad", "10.0.0.1");
        bad_ip.addresses = vec![vec![1, 2, 3, 4, 5]];
        let mut no_ip = workload("Kubernetes//Pod/default/dns", "10.0.0.1");
        no_ip.addresses.clear();
        no_ip.hostname = "dns.example".into();
        let mut bad_policy = policy("bad");
        bad_policy.rules[0].clauses[0].matches[0].destination_ports = vec![70000];
        vec![
            (
                "workload.pb",
                address(pw::address::Type::Workload(workload(
                    "Kubernetes//Pod/default/appa",
                    "10.244.1.8",
                )))
                .encode_to_vec(),
            ),
            (
                "service.pb",
                address(pw::address::Type::Service(service())).encode_to_vec(),
            ),
            ("policy.pb", policy("allow").encode_to_vec()),
            (
                "workload-5-byte-ip.pb",
                address(pw::address::Type::Workload(bad_ip)).encode_to_vec(),
            ),
            (
                "workload-hostname-only.pb",
                address(pw::address::Type::Workload(no_ip)).encode_to_vec(),
            ),
            ("policy-bad-port.pb", bad_policy.encode_to_vec()),
            (
                "empty-address.pb",
                pw::Address { r#type: None }.encode_to_vec(),
            ),
        ]
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect()
    }

    fn resource(name: &str, type_url: &str, value: Vec<u8>) -> Resource {
        Resource {
            name: name.into(),
            version: "1".into(),
            resource: Some(prost_types::Any {
                type_url: type_url.into(),
                value,
            }),
            ..Default::default()
        }
    }

    fn response(type_url: &str, resources: Vec<Resource>, removed: &[&str]) -> Vec<u8> {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            nonce: "n1".into(),
            resources,
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    pub fn responses() -> Seeds {
        let w = |uid: &str, ip: &str| {
            resource(
                uid,
                ADDRESS_TYPE,
                address(pw::address::Type::Workload(workload(uid, ip))).encode_to_vec(),
            )
        };
        let svc = resource(
            "default/appb.default.svc.cluster.local",
            ADDRESS_TYPE,
            address(pw::address::Type::Service(service())).encode_to_vec(),
        );
        let pol = resource(
            "default/allow",
            AUTHORIZATION_TYPE,
            policy("allow").encode_to_vec(),
        );
        vec![
            (
                "addresses.pb",
                response(
                    ADDRESS_TYPE,
                    vec![
                        w("Kubernetes//Pod/default/appa", "10.244.1.8"),
                        w("Kubernetes//Pod/default/appb", "10.244.2.4"),
                        svc.clone(),
                    ],
                    &[],
                ),
            ),
            (
                "conflict.pb",
                response(
                    ADDRESS_TYPE,
                    vec![
                        w("Kubernetes//Pod/default/appa", "10.244.1.8"),
                        w("Kubernetes//Pod/default/thief", "10.244.1.8"),
                        w("Kubernetes//Pod/default/appa", "10.244.1.9"),
                    ],
                    &["Kubernetes//Pod/default/gone"],
                ),
            ),
            (
                "name-mismatch.pb",
                response(
                    ADDRESS_TYPE,
                    vec![resource(
                        "wrong-name",
                        ADDRESS_TYPE,
                        address(pw::address::Type::Service(service())).encode_to_vec(),
                    )],
                    &[],
                ),
            ),
            (
                "policies.pb",
                response(AUTHORIZATION_TYPE, vec![pol.clone()], &["default/old"]),
            ),
            ("wrong-type.pb", response(ADDRESS_TYPE, vec![pol], &[])),
            (
                "garbage-payload.pb",
                response(
                    ADDRESS_TYPE,
                    vec![resource("x", ADDRESS_TYPE, b"\xff\xff\xff".to_vec())],
                    &[],
                ),
            ),
        ]
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect()
    }

    pub fn yaml() -> Seeds {
        let mesh = r#"
workloads:
- uid: Kubernetes//Pod/default/appa
  name: appa
  namespace: default
  serviceAccount: appa
  workloadIps: ["10.244.1.8"]
  protocol: HBONE
  node: a
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
- uid: Kubernetes//Pod/default/appb
  name: appb
  namespace: default
  workloadIps: ["10.244.2.4", "fd00::4"]
  protocol: TCP
  node: b
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/10.96.101.203"]
  ports:
    8000: 80
policies:
- name: allow-appa
  namespace: default
  scope: Namespace
  action: Allow
  rules:
  - - - principals:
        - Exact: cluster.local/ns/default/sa/appa
        - Presence: []
        notDestinationPorts: [22]
"#;
        // Aliases in a valid place: each `*w` re-reads the anchored workload.
        let mut bomb = String::from(
            "workloads:\n- &w {uid: u, name: n, namespace: d, authorizationPolicies: [a, b, c, d]}\n",
        );
        bomb.push_str(&"- *w\n".repeat(64));
        text(&[
            ("mesh.yaml", mesh),
            ("empty.yaml", ""),
            ("null.yaml", "~\n"),
            ("broken.yaml", "workloads: [ {{{ not yaml"),
            ("unknown-field.yaml", "workloads:\n- uid: x\n  nmae: typo\n"),
            (
                "duplicate-ip.yaml",
                "workloads:\n- {uid: a, name: a, namespace: d, workloadIps: [10.0.0.1]}\n- {uid: b, name: b, namespace: d, workloadIps: [10.0.0.1]}\n",
            ),
            ("deep-flow.yaml", &format!("workloads: {}", "[".repeat(200))),
            ("alias-bomb.yaml", &bomb),
            ("tabs.yaml", "workloads:\n\t- uid: x\n"),
        ])
    }
}

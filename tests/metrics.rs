//! End to end, in network namespaces: real traffic over HBONE and plaintext through zring on two
//! nodes, then the scraped `istio_tcp_*` counters must equal the connections and bytes that
//! actually moved, on the source node and on the destination node, with the right labels.
//! Also: counters move while a connection is open, failures carry their response flags,
//! `promtool check metrics` accepts real scrapes, and a real Prometheus server scrapes both
//! nodes and answers queries for the counters.
//!
//! Needs root (namespaces, nftables, IP_TRANSPARENT) and, for the last two, Debian's
//! `prometheus` package (`promtool`, `prometheus`), which they install if it is missing
//! (`zring::lab::tools::ensure`): when that fails, they fail loudly.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use zring::lab::mesh::eventually;
use zring::lab::prom::Scrape;
use zring::lab::tools::{self, Tool};
use zring::lab::traffic::Report;
use zring::lab::{Lab, Mesh, http};

fn scrape(m: &Mesh, node: &str) -> Scrape {
    m.scrape(node)
}

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const APPB: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 4);
const APPC: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 66);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 101, 203);

/// appa (node a) and appb (node b) speak HBONE; appc (node b) plain TCP.
const CONFIG: &str = r#"
workloads:
- uid: Kubernetes//Pod/default/appa-7d9f
  name: appa-7d9f
  namespace: default
  serviceAccount: appa
  workloadName: appa
  workloadType: deployment
  canonicalName: appa
  canonicalRevision: v1
  workloadIps: ["10.244.1.8"]
  protocol: HBONE
  node: a
  services: {}
- uid: Kubernetes//Pod/default/appb-5c6d
  name: appb-5c6d
  namespace: default
  serviceAccount: appb
  workloadName: appb
  workloadType: deployment
  canonicalName: appb
  canonicalRevision: v2
  workloadIps: ["10.244.2.4"]
  protocol: HBONE
  node: b
  services:
    "default/appb.default.svc.cluster.local":
      8000: 80
- uid: Kubernetes//Pod/shop/appc-1
  name: appc-1
  namespace: shop
  serviceAccount: appc
  workloadName: appc
  canonicalName: appc
  canonicalRevision: v3
  clusterId: east
  locality:
    region: us-east
    zone: us-east-2
    subzone: ""
  workloadIps: ["10.244.2.5"]
  protocol: TCP
  node: b
  services: {}
services:
- name: appb
  namespace: default
  hostname: appb.default.svc.cluster.local
  vips: ["/10.96.101.203"]
  ports:
    8000: 80
"#;

fn mesh(driver: &str) -> Mesh {
    let mut lab = Lab::seed().expect("lab (needs root, ip, nft)");
    // appc speaks plain TCP and the stranger is unknown: neither is enrolled, and both are to
    // be captured here.
    lab.capture_every_pod_address();
    lab.add_pod("b", "appc", APPC).unwrap();
    lab.add_pod("a", "stranger", STRANGER).unwrap();
    Mesh::start(
        lab,
        Path::new(ZRING),
        CONFIG,
        &["a", "b"],
        &[("ZRING_DRIVER", driver)],
    )
    .unwrap()
}

zring::on_both_drivers!(counts_equal_traffic_on_both_nodes);

/// What a set of exchanges put on the wire: connections, client→server and server→client bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Wire {
    conns: f64,
    request: f64,
    response: f64,
}

impl Wire {
    /// One exchange (see `lab::traffic`): a 16-byte header and the upload up; the download, the
    /// digest, a length byte and the peer address text down.
    fn add(&mut self, up: u64, down: u64, r: &Report) {
        self.conns += 1.0;
        self.request += (16 + up) as f64;
        self.response += (down + 9 + r.peer_seen_by_server.to_string().len() as u64) as f64;
    }
}

const SPIFFE_APPA: &str = "spiffe://cluster.local/ns/default/sa/appa";
const SPIFFE_APPB: &str = "spiffe://cluster.local/ns/default/sa/appb";
const SPIFFE_APPC: &str = "spiffe://cluster.local/ns/shop/sa/appc";

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The full label set of appa → appb over HBONE as `reporter` sees it, with `service` (host,
/// namespace, name) or none.
fn appa_to_appb(reporter: &str, service: Option<(&str, &str, &str)>) -> BTreeMap<String, String> {
    let (svc, svc_ns, svc_name) = service.unwrap_or(("unknown", "unknown", "unknown"));
    labels(&[
        ("reporter", reporter),
        ("source_workload", "appa"),
        ("source_canonical_service", "appa"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "default"),
        ("source_principal", SPIFFE_APPA),
        ("source_app", "appa"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_service", svc),
        ("destination_service_namespace", svc_ns),
        ("destination_service_name", svc_name),
        ("destination_workload", "appb"),
        ("destination_canonical_service", "appb"),
        ("destination_canonical_revision", "v2"),
        ("destination_workload_namespace", "default"),
        ("destination_principal", SPIFFE_APPB),
        ("destination_app", "appb"),
        ("destination_version", "v2"),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
        ("source_region", "unknown"),
        ("source_zone", "unknown"),
        ("destination_region", "unknown"),
        ("destination_zone", "unknown"),
    ])
}

/// appa → appc in plain TCP: no mTLS, so no source principal.
fn appa_to_appc(reporter: &str) -> BTreeMap<String, String> {
    labels(&[
        ("reporter", reporter),
        ("source_workload", "appa"),
        ("source_canonical_service", "appa"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "default"),
        ("source_principal", "unknown"),
        ("source_app", "appa"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_service", "unknown"),
        ("destination_service_namespace", "unknown"),
        ("destination_service_name", "unknown"),
        ("destination_workload", "appc"),
        ("destination_canonical_service", "appc"),
        ("destination_canonical_revision", "v3"),
        ("destination_workload_namespace", "shop"),
        ("destination_principal", SPIFFE_APPC),
        ("destination_app", "appc"),
        ("destination_version", "v3"),
        ("destination_cluster", "east"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("connection_security_policy", "unknown"),
        ("source_region", "unknown"),
        ("source_zone", "unknown"),
        ("destination_region", "us-east"),
        ("destination_zone", "us-east-2"),
    ])
}

/// Asserts the five counters of exactly one series with exactly `want` labels.
fn assert_series(s: &Scrape, node: &str, want: &BTreeMap<String, String>, wire: Wire) {
    for (family, value) in [
        ("istio_tcp_connections_opened_total", wire.conns),
        ("istio_tcp_connections_closed_total", wire.conns),
        ("istio_tcp_connections_failed_total", 0.0),
        ("istio_tcp_received_bytes_total", wire.request),
        ("istio_tcp_sent_bytes_total", wire.response),
    ] {
        assert_eq!(
            s.exact(family, want),
            Some(value),
            "node {node}: {family}{want:?}\n{}",
            s.text
        );
    }
}

/// Two nodes, three kinds of traffic: appa → appb directly and through its VIP (HBONE), appa
/// → appc (plain TCP). Node a reports as source, node b as destination; every counter equals
/// what moved, under the full label set.
fn counts_equal_traffic_on_both_nodes(driver: &str) {
    let m = mesh(driver);
    m.serve("appb", 80, 3).unwrap();
    m.serve("appc", 80, 2).unwrap();
    let (mut direct, mut via_vip, mut plain) = (Wire::default(), Wire::default(), Wire::default());
    for (up, down) in [(1000, 300_000), (200_000, 10)] {
        let r = m.must_exchange("appa", (APPB, 80).into(), up, down);
        direct.add(up, down, &r);
    }
    let r = m.must_exchange("appa", (VIP, 8000).into(), 5000, 7000);
    via_vip.add(5000, 7000, &r);
    for (up, down) in [(4096, 123), (1, 65_543)] {
        let r = m.must_exchange("appa", (APPC, 80).into(), up, down);
        plain.add(up, down, &r);
    }
    let total = direct.conns + via_vip.conns + plain.conns;
    // The clients are done; wait for both proxies to have closed every connection.
    let settled = |node: &'static str| {
        eventually(&format!("node {node} closes {total} connections"), || {
            let s = scrape(&m, node);
            let closed = s.sum("istio_tcp_connections_closed_total", &[]);
            let open = s.sum("zring_core_connections_open", &[]);
            (closed == total && open == 0.0)
                .then_some(s)
                .ok_or_else(|| format!("closed {closed}, open {open}"))
        })
    };
    let a = settled("a");
    let svc = Some(("appb.default.svc.cluster.local", "default", "appb"));
    assert_series(&a, "a", &appa_to_appb("source", None), direct);
    assert_series(&a, "a", &appa_to_appb("source", svc), via_vip);
    assert_series(&a, "a", &appa_to_appc("source"), plain);
    assert_eq!(
        a.count("istio_tcp_connections_opened_total"),
        3,
        "{}",
        a.text
    );
    assert_eq!(a.sum("istio_tcp_connections_failed_total", &[]), 0.0);

    // Node b: both HBONE flows land on appb:80, which belongs to service appb (guessed from the
    // target port, as ztunnel does); the plaintext one arrives on 15006.
    let b = settled("b");
    let both = Wire {
        conns: direct.conns + via_vip.conns,
        request: direct.request + via_vip.request,
        response: direct.response + via_vip.response,
    };
    assert_series(&b, "b", &appa_to_appb("destination", svc), both);
    assert_series(&b, "b", &appa_to_appc("destination"), plain);
    assert_eq!(
        b.count("istio_tcp_connections_opened_total"),
        2,
        "{}",
        b.text
    );

    // Latencies: every connection's setup on both sides, every HBONE handshake once per side.
    let hist =
        |s: &Scrape, name: &str, label: (&str, &str)| s.sum(&format!("{name}_count"), &[label]);
    let setup = "zring_connection_setup_duration_seconds";
    let handshake = "zring_hbone_handshake_duration_seconds";
    eventually("histograms flushed", || {
        let (a, b) = (scrape(&m, "a"), scrape(&m, "b"));
        let got = (
            hist(&a, setup, ("direction", "outbound")),
            hist(&b, setup, ("direction", "inbound")),
            hist(&a, handshake, ("role", "client")),
            hist(&b, handshake, ("role", "server")),
        );
        (got.0 == total && got.1 == total && got.2 >= 1.0 && got.2 == got.3)
            .then_some(())
            .ok_or_else(|| format!("{got:?}"))
    });
    let a = scrape(&m, "a");
    assert_eq!(
        a.exact(
            &format!("{setup}_bucket"),
            &labels(&[("direction", "outbound"), ("le", "+Inf")])
        ),
        Some(total)
    );
    let driver_name = if driver == "uring" {
        "io_uring"
    } else {
        "epoll"
    };
    for core in ["0", "1"] {
        assert_eq!(
            a.exact(
                "zring_core_info",
                &labels(&[("core", core), ("driver", driver_name)])
            ),
            Some(1.0),
            "{}",
            a.text
        );
    }
    assert_eq!(
        a.exact(
            "istio_build",
            &labels(&[("component", "ztunnel"), ("tag", "0.1.0")])
        ),
        Some(1.0)
    );
    // /stats/prometheus is the same exposition.
    let other = m.scrape_path("a", "/stats/prometheus");
    assert!(other.text.contains("istio_tcp_connections_opened_total{"));
}

/// A long connection's bytes show on every scrape while it is open, on both nodes.
#[test]
fn bytes_count_while_the_connection_is_open() {
    let m = mesh("uring");
    let listener = m
        .lab
        .pod("appb")
        .run(|| TcpListener::bind("0.0.0.0:80"))
        .unwrap();
    // An echo server for one connection.
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (to_client, from_test) = std::sync::mpsc::channel::<usize>();
    let (done_tx, done) = std::sync::mpsc::channel::<()>();
    let client = m.lab.pod("appa").spawn(move || {
        let mut s = TcpStream::connect_timeout(&(APPB, 80).into(), Duration::from_secs(10))
            .expect("connect appb");
        // Each message: send that many bytes, read them back, report.
        for n in from_test {
            s.write_all(&vec![7u8; n]).unwrap();
            let mut back = vec![0u8; n];
            s.read_exact(&mut back).unwrap();
            done_tx.send(()).unwrap();
        }
    });
    let want = appa_to_appb("source", None);
    let want_b = appa_to_appb(
        "destination",
        Some(("appb.default.svc.cluster.local", "default", "appb")),
    );
    let mut moved = 0.0;
    for n in [100_000usize, 50_000, 1] {
        to_client.send(n).unwrap();
        done.recv_timeout(Duration::from_secs(20)).unwrap();
        moved += n as f64;
        for (node, want) in [("a", &want), ("b", &want_b)] {
            eventually(
                &format!("node {node} counts {moved} bytes each way"),
                || {
                    let s = scrape(&m, node);
                    let got = (
                        s.exact("istio_tcp_received_bytes_total", want),
                        s.exact("istio_tcp_sent_bytes_total", want),
                        s.exact("istio_tcp_connections_opened_total", want),
                        s.exact("istio_tcp_connections_closed_total", want),
                    );
                    (got == (Some(moved), Some(moved), Some(1.0), Some(0.0)))
                        .then_some(())
                        .ok_or_else(|| format!("{got:?}"))
                },
            );
        }
    }
    drop(to_client);
    client.join().unwrap();
    for (node, want) in [("a", &want), ("b", &want_b)] {
        eventually(&format!("node {node} closes the connection"), || {
            let got = scrape(&m, node).exact("istio_tcp_connections_closed_total", want);
            (got == Some(1.0))
                .then_some(())
                .ok_or_else(|| format!("{got:?}"))
        });
    }
}

/// Failures count as closed and failed under their response flag, opened under `-`: a source
/// no workload owns is refused by node a after the workload wait (NO_WORKLOAD); a closed port
/// on appb gets 503 from node b, so both nodes report CONNECT.
#[test]
fn failures_carry_their_response_flags() {
    let m = mesh("uring");
    let refused = m.exchange("stranger", (APPB, 80).into(), 10, 10);
    assert!(refused.is_err(), "{refused:?}");
    let unreachable = m.exchange("appa", (APPB, 81).into(), 10, 10);
    assert!(unreachable.is_err(), "{unreachable:?}");
    // An unknown source is waited for (bounded), then refused as NO_WORKLOAD.
    let deny = labels(&[("reporter", "source"), ("response_flags", "NO_WORKLOAD")]);
    let connect = labels(&[("response_flags", "CONNECT")]);
    eventually("node a counts both failures", || {
        let a = scrape(&m, "a");
        let got = (
            a.sum_matching("istio_tcp_connections_failed_total", &deny),
            a.sum_matching("istio_tcp_connections_closed_total", &deny),
            a.sum_matching("istio_tcp_connections_failed_total", &connect),
            a.sum(
                "istio_tcp_connections_opened_total",
                &[("response_flags", "-")],
            ),
            a.sum("istio_tcp_connections_closed_total", &[]),
        );
        (got == (1.0, 1.0, 1.0, 2.0, 2.0))
            .then_some(())
            .ok_or_else(|| format!("{got:?}\n{}", a.text))
    });
    let a = scrape(&m, "a");
    // The refused source is unknown; its destination is still named.
    let denied = a
        .matching("istio_tcp_connections_failed_total", &deny)
        .pop()
        .unwrap();
    // Refused before routing: nothing is known but who reports and why.
    assert_eq!(denied["source_workload"], "unknown");
    assert_eq!(denied["destination_workload"], "unknown");
    assert!(a.sum_matching("istio_tcp_sent_bytes_total", &deny) == 0.0);
    eventually("node b counts the 503", || {
        let b = scrape(&m, "b");
        let want = labels(&[
            ("reporter", "destination"),
            ("response_flags", "CONNECT"),
            ("source_principal", SPIFFE_APPA),
            ("destination_workload", "appb"),
        ]);
        let got = (
            b.sum_matching("istio_tcp_connections_failed_total", &want),
            b.sum_matching("istio_tcp_connections_closed_total", &want),
        );
        (got == (1.0, 1.0))
            .then_some(())
            .ok_or_else(|| format!("{got:?}\n{}", b.text))
    });
}

/// `promtool check metrics` (Prometheus's own linter) accepts real scrapes of both nodes after
/// traffic, on both paths.
#[test]
fn promtool_accepts_real_scrapes() {
    if let Err(e) = tools::ensure(&[Tool::Promtool]) {
        panic!("{e}");
    }
    let m = mesh("uring");
    m.serve("appb", 80, 1).unwrap();
    m.serve("appc", 80, 1).unwrap();
    m.must_exchange("appa", (APPB, 80).into(), 1000, 1000);
    m.must_exchange("appa", (APPC, 80).into(), 1000, 1000);
    let _ = m.exchange("stranger", (APPB, 80).into(), 1, 1);
    eventually("histograms flushed", || {
        let s = scrape(&m, "b");
        s.text
            .contains("zring_hbone_handshake_duration_seconds_count")
            .then_some(())
            .ok_or_else(|| "no handshake histogram yet".to_owned())
    });
    for node in ["a", "b"] {
        for path in ["/metrics", "/stats/prometheus"] {
            let text = m.scrape_path(node, path).text;
            let mut child = Command::new(Tool::Promtool.path())
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("promtool (Debian package prometheus)");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
                "promtool on node {node} {path}: {}\n{}{}\n--- scrape:\n{text}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A real Prometheus server (in node a's namespace) scrapes both nodes during traffic; its
/// query API returns the counters with the values zring serves.
#[test]
fn prometheus_scrapes_and_queries_the_counters() {
    if let Err(e) = tools::ensure(&[Tool::Prometheus]) {
        panic!("{e}");
    }
    let m = mesh("uring");
    m.serve("appb", 80, 2).unwrap();
    let dir = m.lab.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let targets: Vec<String> = ["a", "b"]
        .iter()
        .map(|n| format!("'{}:15020'", m.lab.node(n).underlay_ip()))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n- job_name: zring\n  metrics_path: /stats/prometheus\n  \
         static_configs:\n  - targets: [{}]\n",
        targets.join(", ")
    );
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config).unwrap();
    let mut cmd = Command::new(Tool::Prometheus.path());
    cmd.arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg("--web.listen-address=127.0.0.1:19090")
        .arg("--log.level=warn");
    let prom = m
        .lab
        .spawn_process(m.lab.node("a").netns(), cmd)
        .expect("prometheus (Debian package prometheus)");
    let api: SocketAddr = "127.0.0.1:19090".parse().unwrap();
    let query = |q: &'static str| -> Result<serde_json::Value, String> {
        let path = format!("/api/v1/query?query={q}");
        let a = m
            .lab
            .node("a")
            .run(move || http::get(api, &path))
            .map_err(|e| e.to_string())?;
        if a.status != 200 {
            return Err(format!("{}: {}", a.status, a.body));
        }
        serde_json::from_str(&a.body).map_err(|e| e.to_string())
    };
    // Traffic while Prometheus scrapes: one exchange, then another after a first scrape saw it.
    let first = m.must_exchange("appa", (APPB, 80).into(), 4000, 5000);
    let mut wire = Wire::default();
    wire.add(4000, 5000, &first);
    let both_up = || {
        eventually("Prometheus scrapes both nodes", || {
            let v = query("up")?;
            let ups: Vec<&str> = v["data"]["result"]
                .as_array()
                .ok_or("no result")?
                .iter()
                .filter_map(|r| r["value"][1].as_str())
                .collect();
            (ups == ["1", "1"])
                .then_some(())
                .ok_or_else(|| format!("up = {ups:?}\n{}", prom.log_tail()))
        })
    };
    both_up();
    let second = m.must_exchange("appa", (APPB, 80).into(), 123, 456);
    wire.add(123, 456, &second);
    let served = |node: &'static str| {
        let s = scrape(&m, node);
        s.sum("istio_tcp_received_bytes_total", &[])
    };
    // Prometheus's latest sample of each node must reach the bytes zring serves: all of it.
    eventually("Prometheus has the final counters of both nodes", || {
        let v = query("sum%20by%20(reporter)%20(istio_tcp_received_bytes_total)")?;
        let mut got: Vec<(String, f64)> = v["data"]["result"]
            .as_array()
            .ok_or("no result")?
            .iter()
            .map(|r| {
                (
                    r["metric"]["reporter"].as_str().unwrap_or("").to_owned(),
                    r["value"][1].as_str().unwrap_or("").parse().unwrap_or(-1.0),
                )
            })
            .collect();
        got.sort_by(|x, y| x.0.cmp(&y.0));
        let want = vec![
            ("destination".to_owned(), wire.request),
            ("source".to_owned(), wire.request),
        ];
        (got == want)
            .then_some(())
            .ok_or_else(|| format!("Prometheus {got:?}, want {want:?}"))
    });
    assert_eq!(served("a"), wire.request);
    assert_eq!(served("b"), wire.request);
    // The whole label set made it through Prometheus's parser.
    let v = query("istio_tcp_connections_opened_total%7Breporter%3D%22source%22%7D").unwrap();
    let r = &v["data"]["result"][0];
    assert_eq!(r["value"][1], "2", "{v}");
    let mut want = appa_to_appb("source", None);
    want.insert(
        "__name__".into(),
        "istio_tcp_connections_opened_total".into(),
    );
    want.insert("job".into(), "zring".into());
    want.insert(
        "instance".into(),
        format!("{}:15020", m.lab.node("a").underlay_ip()),
    );
    let got: BTreeMap<String, String> = serde_json::from_value(r["metric"].clone()).unwrap();
    assert_eq!(got, want);
    prom.kill().unwrap();
}

//! `cargo bench --bench datapath`: the data path compared with direct TCP between the same pods
//! and with the real ztunnel, in network namespaces, every figure a ratio to direct and (zring's)
//! to ztunnel's measured in the same run, with issue 14's targets marked met or missed.
//!
//! Setups: `direct` (no capture: the kernel forwards between the pods), `zring plaintext`
//! (TCP workloads: 15001 on the client's node, 15006 on the server's) and `zring hbone` (HBONE
//! workloads: 15001 → mTLS HTTP/2 CONNECT → 15008), each zring setup on both drivers, and the
//! same proxied setups with the other node proxy: the real ztunnel whenever the peers directory
//! has it (`../shared/peers/ztunnel/as-node-proxy.sh`), or what `ZRING_BENCH_PROXY` names. Each
//! proxied setup runs once per `ZRING_BENCH_CORES` entry (rows labelled `1c`, `2c`).
//! Workloads: bulk (one direction), rr (1 KiB request/response on long-lived connections) and
//! crr (a new connection per 1 KiB request), each on 1, 8 and 64 concurrent connections.
//! Figures: Gb/s, requests/s, p50/p99/p999 latency (hdrhistogram), CPU seconds per GiB of
//! each proxy process (from `/proc/<pid>/stat`) and of the pods' own threads. Then the memory
//! scenario: resident memory per idle HBONE connection, and after they closed.
//!
//! Results: the table on stdout and in `target/zring-bench/datapath.txt`, JSON in
//! `datapath.json`, bar charts in `datapath.svg`. Needs root (namespaces, nftables).
//!
//! Environment (all optional; README "Benchmarks" has the full story):
//! - `ZRING_BENCH_SECS` seconds per measurement (3);
//! - `ZRING_BENCH_DRIVER` `uring,legacy` (both); `ZRING_BENCH_SCENARIOS` `plaintext,hbone,memory`
//!   (direct always runs); `ZRING_BENCH_WORKLOADS` `bulk,rr,crr`; `ZRING_BENCH_CONNS` `1,8,64`;
//! - `ZRING_BENCH_CORES` runtimes per zring and worker threads per ztunnel, a list (`1,2`);
//! - `ZRING_BENCH_IDLE_CONNS` connections of the memory scenario (10000);
//! - `ZRING_BENCH_BESIDE` bulk connections running beside every measurement, not counted (0);
//! - `ZRING_BENCH_PROXY`: unset, ztunnel from `ZRING_PEERS_DIR` (default `../shared/peers`) when
//!   there; `none` for no comparison; or `/path/to/binary`, another node proxy, with
//!   `ZRING_BENCH_PROXY_NAME`, `ZRING_BENCH_PROXY_ARGS` and `ZRING_BENCH_PROXY_ENV` (`K=V K=V`);
//! - `ZRING_BENCH_OUT` output directory; `ZRING_BENCH_PERF=dir` records `perf` profiles of the
//!   proxies during each measurement (`perf/flamegraph.sh` drives it).

mod chart;
mod load;
mod memory;
mod options;
mod report;
mod selftest;
mod setup;
mod targets;

use std::path::Path;
use std::time::Duration;

use options::{Mode, Options, Workload};
use report::{Report, Row};
use setup::{APPB, Proxy, Recording, Running, Setup, cpu, softirq_threads_cpu};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
/// How quickly the memory scenario's proxies release idle pooled tunnels.
const POOL_RELEASE: Duration = Duration::from_secs(2);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(memory::SERVER_ARG) {
        let n = args
            .get(2)
            .and_then(|n| n.parse().ok())
            .expect("--idle-server N");
        memory::serve(n);
        return;
    }
    // `cargo test --benches` runs bench targets without `--bench`: check the report's
    // arithmetic on made-up rows; only `cargo bench` measures.
    if !args.iter().any(|a| a == "--bench") {
        selftest::run();
        return;
    }
    // Cargo's per-target scratch directory is `<target dir>/tmp`, wherever the target dir is.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"));
    let opts = Options::from_env(target);
    let mut report = Report::new(&opts);

    if let Some(note) = &opts.other_missing {
        println!("\nzring datapath bench: {note}");
    }

    // Direct once (it has no cores), then per core count: zring on each driver, the other proxy.
    let mut setups = vec![Setup::direct()];
    for &cores in &opts.cores {
        for &mode in &opts.modes {
            for driver in &opts.drivers {
                setups.push(Setup {
                    mode,
                    proxy: Some(Proxy::Zring {
                        driver: driver.clone(),
                    }),
                    cores,
                });
            }
            if let Some(other) = &opts.other {
                setups.push(Setup {
                    mode,
                    proxy: Some(Proxy::Other(other.clone())),
                    cores,
                });
            }
        }
    }
    let measurements = setups.len() * opts.workloads.len() * opts.conns.len();
    println!(
        "\nzring datapath bench: {} setups{} × {} workloads × {} connection counts = {measurements} \
         measurements of {:?}, {} round(s){}; results in {}",
        setups.len(),
        opts.other
            .as_ref()
            .map_or(String::new(), |o| format!(" (with {})", o.name)),
        opts.workloads.len(),
        opts.conns.len(),
        opts.secs,
        opts.rounds,
        if opts.memory {
            ", then the memory scenario"
        } else {
            ""
        },
        opts.out.display()
    );

    // Every setup once per round, the order reversed every other round, so that a drift of
    // the machine over the run (it happens: 20-30 % within minutes on this VM) falls on every
    // setup alike; each figure is then the median of its rounds (`Row::median_of`).
    let points: Vec<(Workload, usize)> = opts
        .workloads
        .iter()
        .flat_map(|&w| opts.conns.iter().map(move |&c| (w, c)))
        .collect();
    let mut measured: Vec<Vec<Vec<Row>>> = vec![vec![Vec::new(); points.len()]; setups.len()];
    for round in 0..opts.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..setups.len()).collect()
        } else {
            (0..setups.len()).rev().collect()
        };
        for i in order {
            let setup = &setups[i];
            let running = Running::start(setup, Path::new(ZRING), &[]);
            for (p, &(workload, conns)) in points.iter().enumerate() {
                let row = measure(&running, setup, workload, conns, &opts);
                println!("round {}/{}: {}", round + 1, opts.rounds, progress(&row));
                measured[i][p].push(row);
            }
            running.check_path(setup);
        }
    }
    for rounds in measured.into_iter().flatten() {
        let mut row = Row::median_of(rounds);
        if let Some(direct) = report
            .group(row.workload, row.conns)
            .find(|r| r.mode == Mode::Direct.name())
        {
            row.compare(direct);
        }
        report.rows.push(row);
    }

    if opts.memory {
        for &cores in &opts.cores {
            let mut proxies: Vec<Proxy> = opts
                .drivers
                .iter()
                .map(|d| Proxy::Zring { driver: d.clone() })
                .collect();
            proxies.extend(opts.other.clone().map(Proxy::Other));
            for proxy in proxies {
                let setup = Setup {
                    mode: Mode::Hbone,
                    proxy: Some(proxy),
                    cores,
                };
                report.memory.push(memory_scenario(&setup, &opts));
            }
        }
    }

    report.finish();
    write(&report, &opts);
}

/// The memory scenario on one setup, with a line per proxy side.
fn memory_scenario(setup: &Setup, opts: &Options) -> memory::Memory {
    let release = format!("{}s", POOL_RELEASE.as_secs());
    let running = Running::start(
        setup,
        Path::new(ZRING),
        &[("POOL_UNUSED_RELEASE_TIMEOUT", &release)],
    );
    let m = memory::idle_connections(&running, setup, opts.idle_conns, POOL_RELEASE);
    for side in &m.sides {
        let rounds: Vec<String> = side
            .rounds
            .iter()
            .map(|r| format!("{} open, {} closed", r.open.rss_kib, r.closed.rss_kib))
            .collect();
        println!(
            "{:<26} {} idle connections: {:>6} bytes each on the {} side (KiB: {} before; {})",
            m.setup,
            m.connections,
            side.bytes_per_conn.round(),
            side.role,
            side.baseline.rss_kib,
            rounds.join("; then ")
        );
    }
    m
}

/// One measurement: the load between the pods, with the proxies' and the pods' CPU time
/// around it (and `perf record` on the proxies when asked).
fn measure(
    running: &Running,
    setup: &Setup,
    workload: Workload,
    conns: usize,
    opts: &Options,
) -> Row {
    let proxies = running.proxies();
    let recording = opts
        .perf
        .as_ref()
        .filter(|_| !proxies.is_empty())
        .map(|perf| {
            let named: Vec<(String, &zring::lab::Process)> = proxies
                .iter()
                .map(|(role, p)| (setup.profile_name(workload.name(), conns, role), *p))
                .collect();
            Recording::start(perf, &named)
        });
    let client = running.lab().pod("appa");
    // A lost SYN is no error, only a stall of a second: the client's kernel counts the retries.
    let syn_retransmits = || {
        client
            .netns()
            .tcp_ext("TCPSynRetrans")
            .expect("the client pod's TcpExt statistics")
    };
    let syn_before = syn_retransmits();
    // Retransmission timeouts anywhere in the lab, proxies' sockets included.
    let lab = running.lab();
    let namespaces: Vec<&zring::lab::Netns> = lab
        .nodes()
        .iter()
        .map(|n| n.netns())
        .chain(lab.pods().iter().map(|p| p.netns()))
        .collect();
    let retransmit_timeouts = || -> u64 {
        namespaces
            .iter()
            .map(|ns| {
                ns.tcp_ext("TCPTimeouts")
                    .expect("the lab's TcpExt statistics")
            })
            .sum()
    };
    let rto_before = retransmit_timeouts();
    let me = std::process::id();
    let before: Vec<Duration> = proxies.iter().map(|(_, p)| cpu(p.pid())).collect();
    let load_before = cpu(me);
    let softirq_before = softirq_threads_cpu();
    let dur = opts.secs;
    let beside = opts.beside;
    let mut sample = client.run(move || load::run(workload, conns, beside, APPB, dur));
    // The pods' CPU (the load's threads run in this process) and the softirq threads' (see
    // `softirq_threads_cpu`): the rest of what the path cost besides the proxies.
    let load =
        cpu(me).saturating_sub(load_before) + softirq_threads_cpu().saturating_sub(softirq_before);
    sample.syn_retransmits = syn_retransmits() - syn_before;
    sample.retransmit_timeouts = retransmit_timeouts() - rto_before;
    let spent: Vec<Duration> = proxies
        .iter()
        .zip(&before)
        .map(|((_, p), b)| cpu(p.pid()).saturating_sub(*b))
        .collect();
    if let Some(r) = recording {
        for path in r.stop() {
            println!("  perf profile: {}", path.display());
        }
    }
    let proxy_cpu = match spent.as_slice() {
        [a, b] => Some((*a, *b)),
        _ => None,
    };
    Row::new(setup, workload, conns, &sample, proxy_cpu, load)
}

/// One line per measurement while the bench runs.
fn progress(r: &Row) -> String {
    let ratio = |x: Option<f64>| x.map_or(String::new(), |x| format!(" ({x:.2}×)"));
    let main = match (r.gbps, r.rps, r.latency_us) {
        (Some(g), _, _) => format!("{g:.2} Gb/s{}", ratio(r.vs_direct.gbps)),
        (_, Some(q), Some(l)) => format!(
            "{q:.0} req/s{}, p50 {:.0} µs, p99 {:.0} µs, p999 {:.0} µs",
            ratio(r.vs_direct.rps),
            l.p50,
            l.p99,
            l.p999
        ),
        (_, Some(q), None) => format!("{q:.0} req/s"),
        _ => "no result".into(),
    };
    let errors = if r.errors > 0 {
        let kinds: Vec<String> = r
            .error_kinds
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        format!(", {} errors ({})", r.errors, kinds.join(", "))
    } else {
        String::new()
    };
    let syn = if r.syn_retransmits > 0 {
        format!(", {} SYNs sent again", r.syn_retransmits)
    } else {
        String::new()
    };
    let rto = if r.retransmit_timeouts > 0 {
        format!(", {} retransmission timeouts", r.retransmit_timeouts)
    } else {
        String::new()
    };
    format!(
        "{:<26} {:<5} × {:>3}: {main}, CPU {} out {:.3}, in {:.3}, total {:.3}{}{errors}{syn}{rto}",
        r.setup,
        r.workload,
        r.conns,
        r.cpu_unit,
        r.cpu_per_op.outbound.unwrap_or(f64::NAN),
        r.cpu_per_op.inbound.unwrap_or(f64::NAN),
        r.cpu_per_op.total,
        ratio(r.vs_direct.cpu_total)
    )
}

/// The table on stdout, and the table, JSON and SVG in the output directory.
fn write(report: &Report, opts: &Options) {
    let table = report.table();
    println!("\n{table}");
    let out = &opts.out;
    std::fs::create_dir_all(out).unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
    let json = serde_json::to_string_pretty(report).expect("the report serializes");
    for (name, text) in [
        ("datapath.txt", table),
        ("datapath.json", json),
        ("datapath.svg", chart::svg(report)),
    ] {
        let path = out.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("wrote {}", path.display());
    }
}

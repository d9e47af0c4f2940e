//! `cargo bench --bench inpod`: enrolling pods in in-pod mode, zring beside the real ztunnel in
//! the same run, each with two workers, on the same pod namespaces.
//!
//! For each proxy: a fake istio-cni agent (`lab::cni::FakeAgent`) listens, the proxy starts in a
//! lab node's namespace (`PROXY_MODE=shared`, `INPOD_UDS` the agent's socket, a local config
//! naming every pod), connects, gets an empty snapshot (`snapshot_sent`), then the agent adds
//! N bare pods (`lab::scale`) one at a time, waiting for each `Ack` as istio-cni does, and
//! deletes them again one at a time. Figures: add→Ack and del→Ack p50/p99/max, the proxy's
//! CPU per add, its resident memory (`VmRSS`) and open descriptors per enrolled idle pod
//! (sampled before the first add and 1 s after the last), and whether both come back after
//! the deletes (right after the last `Ack`, then once descriptors are back or 10 s passed).
//!
//! Output: a table with zring/ztunnel beside every figure, on stdout and in
//! `target/zring-bench/inpod.txt`, JSON in `inpod.json`. Needs root (namespaces).
//!
//! Environment: `ZRING_BENCH_PODS` (500), `ZRING_BENCH_OUT` (output directory),
//! `ZRING_BENCH_ZTUNNEL_ENV` (`K=V K=V`, extra environment for ztunnel), `ZRING_PEERS_DIR`
//! (where `ztunnel/ztunnel.xz` lives; default `../shared/peers` beside the checkout). Without
//! the peer, zring runs alone and the table says how to get ztunnel.
#![allow(
    clippy::disallowed_methods,
    reason = "a bench on plain threads: settling sleeps are part of the method"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use zring::lab::cni::{CniError, FakeAgent};
use zring::lab::scale::{self, BulkPod};
use zring::lab::soak::{Usage, usage};
use zring::lab::{Lab, Process, peers};

const ZRING: &str = env!("CARGO_BIN_EXE_zring");
const NODE: &str = "a";
/// Workers (zring cores, ztunnel worker threads) per proxy.
const WORKERS: &str = "2";
/// Quiet time before a memory sample, so start-up or enrolment work has finished.
const SETTLE: Duration = Duration::from_secs(1);
/// How long descriptors get to come back after the last delete.
const RELEASE: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum Proxy {
    Zring,
    Ztunnel(PathBuf),
}

impl Proxy {
    fn name(&self) -> &'static str {
        match self {
            Proxy::Zring => "zring",
            Proxy::Ztunnel(_) => "ztunnel",
        }
    }
}

/// What one proxy measured.
#[derive(Debug)]
struct Run {
    add: Vec<Duration>,
    del: Vec<Duration>,
    add_wall: Duration,
    add_cpu: Duration,
    del_wall: Duration,
    /// The same proxy started with no workload at all, after its snapshot.
    empty: Usage,
    base: Usage,
    enrolled: Usage,
    deleted: Usage,
    released: Usage,
    /// Time after the last del's ack until descriptors were at the baseline again.
    fds_back_after: Option<Duration>,
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`; only `cargo bench` measures.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let pods: usize = std::env::var("ZRING_BENCH_PODS")
        .ok()
        .map(|v| v.parse().expect("ZRING_BENCH_PODS: a number"))
        .unwrap_or(500);
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap_or(Path::new("target"));
    let out = std::env::var_os("ZRING_BENCH_OUT")
        .map_or_else(|| target.join("zring-bench"), PathBuf::from);
    // The lab (and every namespace) drops before the exit code is set, on failure too.
    let ok = match bench(pods, &out) {
        Ok(ok) => ok,
        Err(e) => {
            eprintln!("inpod bench failed: {e:#}");
            false
        }
    };
    if !ok {
        std::process::exit(1);
    }
}

/// Runs every proxy; `Ok(false)` when one failed after the others were measured.
fn bench(n: usize, out: &Path) -> Result<bool> {
    let mut lab = Lab::new()?;
    lab.add_node(NODE, "172.31.0.11".parse()?, "10.200.0.0/16".parse()?)?;
    let started = Instant::now();
    let pods = lab.add_bare_pods("pod", n)?;
    eprintln!(
        "inpod bench: {n} pod namespaces in {:.1?}",
        started.elapsed()
    );
    let config = lab.dir().join("pods.yaml");
    std::fs::write(&config, scale::local_config(NODE, &pods))?;

    let mut proxies = vec![Proxy::Zring];
    let missing = match peers::ztunnel() {
        Ok(bin) => {
            proxies.push(Proxy::Ztunnel(bin));
            None
        }
        Err(e) => Some(e.to_string()),
    };
    let mut runs = Vec::new();
    let mut ok = true;
    for proxy in &proxies {
        eprintln!("inpod bench: {} …", proxy.name());
        match measure(&lab, proxy, &pods, &config) {
            Ok(run) => runs.push((proxy.name(), run)),
            Err(e) => {
                eprintln!("inpod bench: {} failed: {e:#}", proxy.name());
                ok = false;
            }
        }
    }
    let text = table(n, &runs, missing.as_deref());
    print!("{text}");
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("inpod.txt"), &text)?;
    let json = serde_json::to_string_pretty(&to_json(n, &runs, missing.as_deref()))?;
    std::fs::write(out.join("inpod.json"), json)?;
    eprintln!(
        "inpod bench: results in {}",
        out.join("inpod.json").display()
    );
    Ok(ok)
}

fn measure(lab: &Lab, proxy: &Proxy, pods: &[BulkPod], config: &Path) -> Result<Run> {
    let empty_config = lab.dir().join("empty.yaml");
    std::fs::write(&empty_config, scale::local_config(NODE, &[]))?;
    let empty = with_proxy(lab, proxy, &empty_config, |agent, process| {
        connect(agent, process)?;
        Ok(usage(process.pid()))
    })?;
    let mut run = with_proxy(lab, proxy, config, |agent, process| {
        connect(agent, process)?;
        enrol(agent, process, pods)
    })?;
    run.empty = empty;
    Ok(run)
}

/// Starts `proxy` with `config` and an agent of its own, runs `f`, and stops the proxy.
fn with_proxy<T>(
    lab: &Lab,
    proxy: &Proxy,
    config: &Path,
    f: impl FnOnce(&mut FakeAgent, &Process) -> Result<T>,
) -> Result<T> {
    let uds = lab.dir().join(format!("{}.sock", proxy.name()));
    let mut agent = FakeAgent::listen(&uds)?;
    let process = start(lab, proxy, &uds, config)?;
    let result =
        f(&mut agent, &process).with_context(|| format!("log tail:\n{}", process.log_tail()));
    // The lab kills it on drop too; killing now keeps the next measurement's machine quiet.
    let _ = process.kill();
    result
}

fn start(lab: &Lab, proxy: &Proxy, uds: &Path, config: &Path) -> Result<Process> {
    let mut cmd;
    match proxy {
        Proxy::Zring => {
            cmd = Command::new(ZRING);
            cmd.arg("run")
                .env("ZRING_CORES", WORKERS)
                .env("ZRING_DEV_CA_DIR", lab.dir().join("dev-ca"))
                .env("ZRING_DRAIN_DEADLINE", "1s");
        }
        Proxy::Ztunnel(bin) => {
            cmd = Command::new(bin);
            cmd.arg("proxy")
                .env("FAKE_CA", "true")
                .env("ZTUNNEL_WORKER_THREADS", WORKERS)
                .env("CLUSTER_ID", "Kubernetes")
                .env("TRUST_DOMAIN", "cluster.local");
            for kv in std::env::var("ZRING_BENCH_ZTUNNEL_ENV")
                .unwrap_or_default()
                .split_whitespace()
            {
                let (k, v) = kv.split_once('=').context("ZRING_BENCH_ZTUNNEL_ENV: K=V")?;
                cmd.env(k, v);
            }
        }
    }
    cmd.env("PROXY_MODE", "shared")
        .env("INPOD_UDS", uds)
        .env("NODE_NAME", NODE)
        .env("LOCAL_XDS_PATH", config)
        .env("XDS_ADDRESS", "")
        .env("CA_ADDRESS", "")
        .env("RUST_LOG", "info");
    Ok(lab.spawn_process(lab.node(NODE).netns(), cmd)?)
}

/// Accepts the proxy's connection, sends an empty snapshot and lets the proxy settle.
fn connect(agent: &mut FakeAgent, process: &Process) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match agent.accept() {
            Ok(()) => break,
            Err(CniError::Timeout(..)) if Instant::now() < deadline => {
                if let Some(status) = process.try_status()? {
                    bail!("the proxy exited ({status}) before connecting");
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    agent.snapshot_sent()?.map_err(anyhow::Error::msg)?;
    std::thread::sleep(SETTLE);
    Ok(())
}

fn enrol(agent: &mut FakeAgent, process: &Process, pods: &[BulkPod]) -> Result<Run> {
    let pid = process.pid();
    let base = usage(pid);
    if process.try_status()?.is_some() {
        bail!("the proxy exited before the first add");
    }

    let (cpu0, started) = (cpu(pid), Instant::now());
    let add = scale::add_each(agent, pods)?;
    let (add_wall, add_cpu) = (started.elapsed(), cpu(pid).saturating_sub(cpu0));
    std::thread::sleep(SETTLE);
    let enrolled = usage(pid);

    let started = Instant::now();
    let del = scale::del_each(agent, pods)?;
    let del_wall = started.elapsed();
    let deleted = usage(pid);
    let acked = Instant::now();
    let mut fds_back_after = None;
    while acked.elapsed() < RELEASE {
        if usage(pid).fds <= base.fds {
            fds_back_after = Some(acked.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(SETTLE);
    let released = usage(pid);
    if process.try_status()?.is_some() {
        bail!("the proxy exited during the run");
    }
    Ok(Run {
        add,
        del,
        add_wall,
        add_cpu,
        del_wall,
        empty: Usage::default(),
        base,
        enrolled,
        deleted,
        released,
        fds_back_after,
    })
}

fn cpu(pid: u32) -> Duration {
    zring::sys::process_cpu_time(pid).unwrap_or_default()
}

/// Nearest-rank percentile of `samples` in milliseconds.
fn pct(samples: &[Duration], p: f64) -> f64 {
    let mut v: Vec<Duration> = samples.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len().max(1)) - 1)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn per_pod(after: u64, before: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n.max(1) as f64
}

/// Every figure of one run, by name, in table order: (key, label, value).
fn figures(run: &Run) -> Vec<(&'static str, &'static str, f64)> {
    let n = run.add.len();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let signed = |a: u64, b: u64| a as f64 - b as f64;
    vec![
        ("add_p50_ms", "add→Ack p50 (ms)", pct(&run.add, 50.0)),
        ("add_p99_ms", "add→Ack p99 (ms)", pct(&run.add, 99.0)),
        ("add_max_ms", "add→Ack max (ms)", pct(&run.add, 100.0)),
        ("add_total_ms", "all adds, wall (ms)", ms(run.add_wall)),
        (
            "add_cpu_ms_per_pod",
            "proxy CPU per add (ms)",
            ms(run.add_cpu) / n.max(1) as f64,
        ),
        (
            "rss_base_kib",
            "RSS before adds (KiB)",
            run.base.rss_kib as f64,
        ),
        (
            "rss_per_pod_kib",
            "RSS per enrolled idle pod (KiB)",
            per_pod(run.enrolled.rss_kib, run.base.rss_kib, n),
        ),
        (
            "rss_empty_kib",
            "RSS with no workload configured (KiB)",
            run.empty.rss_kib as f64,
        ),
        (
            "rss_per_pod_with_workload_kib",
            "RSS per pod, its workload included (KiB)",
            per_pod(run.enrolled.rss_kib, run.empty.rss_kib, n),
        ),
        ("fds_base", "descriptors before adds", run.base.fds as f64),
        (
            "fds_per_pod",
            "descriptors per enrolled pod",
            per_pod(run.enrolled.fds as u64, run.base.fds as u64, n),
        ),
        ("del_p50_ms", "del→Ack p50 (ms)", pct(&run.del, 50.0)),
        ("del_p99_ms", "del→Ack p99 (ms)", pct(&run.del, 99.0)),
        ("del_max_ms", "del→Ack max (ms)", pct(&run.del, 100.0)),
        ("del_total_ms", "all deletes, wall (ms)", ms(run.del_wall)),
        (
            "fds_after_del",
            "descriptors vs before, at last del Ack",
            signed(run.deleted.fds as u64, run.base.fds as u64),
        ),
        (
            "fds_back_ms",
            "descriptors back to before after (ms)",
            run.fds_back_after.map_or(f64::NAN, ms),
        ),
        (
            "rss_after_del_kib",
            "RSS vs before, at last del Ack (KiB)",
            signed(run.deleted.rss_kib, run.base.rss_kib),
        ),
        (
            "rss_released_kib",
            "RSS vs before, settled after dels (KiB)",
            signed(run.released.rss_kib, run.base.rss_kib),
        ),
    ]
}

fn cell(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_nan() => "never".into(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

fn get(runs: &[(&str, Run)], name: &str) -> Option<Vec<(&'static str, &'static str, f64)>> {
    runs.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| figures(r))
}

fn table(n: usize, runs: &[(&str, Run)], missing: Option<&str>) -> String {
    let (z, t) = (get(runs, "zring"), get(runs, "ztunnel"));
    let rows = z.as_ref().or(t.as_ref()).cloned().unwrap_or_default();
    let mut out = format!(
        "\nin-pod enrolment: {n} pods added then deleted one at a time (each waits for its Ack), \
         {WORKERS} workers each\n\n{:<40} {:>10} {:>10} {:>14}\n",
        "", "zring", "ztunnel", "zring/ztunnel"
    );
    for (i, (_, label, _)) in rows.iter().enumerate() {
        let zv = z.as_ref().map(|f| f[i].2);
        let tv = t.as_ref().map(|f| f[i].2);
        let r = ratio(zv, tv).map_or("-".into(), |r| format!("{r:.2}x"));
        out.push_str(&format!(
            "{label:<40} {:>10} {:>10} {r:>14}\n",
            cell(zv),
            cell(tv)
        ));
    }
    if let (Some(z), Some(t)) = (&z, &t) {
        let at = |f: &[(&str, &str, f64)], k: &str| f.iter().find(|x| x.0 == k).map(|x| x.2);
        let verdict = |k: &str, limit: f64| {
            ratio(at(z, k), at(t, k)).map_or("n/a".to_owned(), |r| {
                format!("{r:.2}x ({})", if r <= limit { "met" } else { "missed" })
            })
        };
        out.push_str(&format!(
            "\ntargets: add→Ack p99 <= 0.5x ztunnel's: {}; RSS per enrolled pod <= 0.4x: {}\n",
            verdict("add_p99_ms", 0.5),
            verdict("rss_per_pod_kib", 0.4)
        ));
    }
    if let Some(why) = missing {
        out.push_str(&format!("\nztunnel not measured: {why}\n"));
    }
    out
}

fn to_json(n: usize, runs: &[(&str, Run)], missing: Option<&str>) -> Value {
    let finite = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    let mut proxies = serde_json::Map::new();
    for (name, run) in runs {
        let f: serde_json::Map<String, Value> = figures(run)
            .into_iter()
            .map(|(k, _, v)| (k.to_owned(), finite(v)))
            .collect();
        proxies.insert((*name).to_owned(), Value::Object(f));
    }
    let mut ratios = serde_json::Map::new();
    if let (Some(z), Some(t)) = (get(runs, "zring"), get(runs, "ztunnel")) {
        for (a, b) in z.iter().zip(&t) {
            ratios.insert(
                a.0.to_owned(),
                ratio(Some(a.2), Some(b.2)).map_or(Value::Null, |r| json!(r)),
            );
        }
    }
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    json!({
        "bench": "inpod",
        "date": date,
        "pods": n,
        "workers": WORKERS,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "proxies": proxies,
        "zring_over_ztunnel": ratios,
        "ztunnel_missing": missing,
    })
}

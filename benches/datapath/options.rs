//! The bench's knobs, all environment variables, read once at start. A bad value stops the bench
//! with a message naming the variable (a typo must not silently run the default).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the client does on its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// One direction, client → server, as fast as the path takes it.
    Bulk,
    /// 1 KiB request, 1 KiB response, back to back on one long-lived connection.
    Rr,
    /// A new connection per 1 KiB request/response: connect, request, response, close.
    Crr,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Bulk, Workload::Rr, Workload::Crr];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Bulk => "bulk",
            Workload::Rr => "rr",
            Workload::Crr => "crr",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Workload::Bulk => "bulk, client → server",
            Workload::Rr => "1 KiB request/response",
            Workload::Crr => "new connection per 1 KiB request",
        }
    }
}

/// How traffic crosses from node a to node b.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// No capture, no proxy: the kernel forwards between the pods. The baseline.
    Direct,
    /// TCP workloads: 15001 on the client's node, plaintext to 15006 on the server's.
    Plaintext,
    /// HBONE workloads: 15001 → mTLS HTTP/2 CONNECT → 15008.
    Hbone,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Plaintext => "plaintext",
            Mode::Hbone => "hbone",
        }
    }
}

/// Everything the environment asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ZRING_BENCH_SECS`: seconds per measurement.
    pub secs: Duration,
    /// `ZRING_BENCH_ROUNDS`: how many times every setup is measured, in alternating order;
    /// each figure reported is the median of its rounds.
    pub rounds: usize,
    /// `ZRING_BENCH_DRIVER`: `uring`, `legacy`, or both (comma-separated).
    pub drivers: Vec<String>,
    /// `ZRING_BENCH_SCENARIOS`: which proxied modes run (`plaintext`, `hbone`), plus `memory`.
    pub modes: Vec<Mode>,
    pub memory: bool,
    /// `ZRING_BENCH_CONNS`: concurrent connections per measurement.
    pub conns: Vec<usize>,
    /// `ZRING_BENCH_WORKLOADS`.
    pub workloads: Vec<Workload>,
    /// `ZRING_BENCH_CORES`: runtimes per zring process (and worker threads per ztunnel), one
    /// set of rows per entry (the two nodes share this machine).
    pub cores: Vec<usize>,
    /// `ZRING_BENCH_IDLE_CONNS`: connections the memory scenario opens.
    pub idle_conns: usize,
    /// `ZRING_BENCH_PROXY`: another node proxy binary to run the same scenarios with; by
    /// default the real ztunnel when the peers directory has it, `none` turns it off.
    pub other: Option<OtherProxy>,
    /// Why there is no other proxy when the default found none (printed once at start).
    pub other_missing: Option<String>,
    /// `ZRING_BENCH_OUT`: where results go (default `<target dir>/zring-bench`).
    pub out: PathBuf,
    /// `ZRING_BENCH_BESIDE`: bulk connections that run beside every measurement, their bytes
    /// not counted (default 0). Shows what a saturating flow does to the latency of the rows'
    /// workloads on the same proxy: with one runtime per zring, they share its core. The rows'
    /// CPU per operation then includes the bulk flows' CPU, so only latency and throughput
    /// compare.
    pub beside: usize,
    /// `ZRING_BENCH_PERF`: record a perf profile of every proxy process during each
    /// measurement into this directory (`perf/flamegraph.sh` sets it).
    pub perf: Option<Perf>,
}

/// The other node proxy and what it needs beyond the common environment.
#[derive(Debug, Clone)]
pub struct OtherProxy {
    pub binary: PathBuf,
    /// `ZRING_BENCH_PROXY_NAME` (default: the binary's file name).
    pub name: String,
    /// `ZRING_BENCH_PROXY_ARGS`: whitespace-separated arguments.
    pub args: Vec<String>,
    /// `ZRING_BENCH_PROXY_ENV`: whitespace-separated `KEY=VALUE` pairs.
    pub env: Vec<(String, String)>,
}

/// How `perf record` samples the proxies.
#[derive(Debug, Clone)]
pub struct Perf {
    pub dir: PathBuf,
    /// `ZRING_BENCH_PERF_EVENT` (default `cpu-clock`: hardware counters are often missing in VMs).
    pub event: String,
    /// `ZRING_BENCH_PERF_CALLGRAPH`: `dwarf` (default) or `fp`.
    pub call_graph: String,
    /// `ZRING_BENCH_PERF_FREQ`: samples per second (default 499).
    pub freq: u32,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn bad(name: &str, value: &str, want: &str) -> ! {
    panic!("{name}={value:?}: expected {want}")
}

fn list<T>(name: &str, default: &str, want: &str, parse: impl Fn(&str) -> Option<T>) -> Vec<T> {
    let value = var(name).unwrap_or_else(|| default.to_owned());
    let items: Vec<T> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| parse(s).unwrap_or_else(|| bad(name, &value, want)))
        .collect();
    if items.is_empty() {
        bad(name, &value, want);
    }
    items
}

impl Options {
    pub fn from_env(target_dir: &Path) -> Options {
        let rounds = var("ZRING_BENCH_ROUNDS").map_or(3, |v| {
            v.parse::<usize>()
                .ok()
                .filter(|r| (1..=50).contains(r))
                .unwrap_or_else(|| bad("ZRING_BENCH_ROUNDS", &v, "rounds, 1 ≤ n ≤ 50"))
        });
        let secs = var("ZRING_BENCH_SECS").map_or(2.0, |v| {
            v.parse::<f64>()
                .ok()
                .filter(|s| *s > 0.0 && *s <= 600.0)
                .unwrap_or_else(|| bad("ZRING_BENCH_SECS", &v, "seconds, 0 < s ≤ 600"))
        });
        let drivers = list(
            "ZRING_BENCH_DRIVER",
            "uring,legacy",
            "uring and/or legacy",
            |s| matches!(s, "uring" | "legacy").then(|| s.to_owned()),
        );
        let scenarios = list(
            "ZRING_BENCH_SCENARIOS",
            "plaintext,hbone,memory",
            "some of plaintext, hbone, memory (direct always runs: it is the baseline)",
            |s| match s {
                "plaintext" => Some(Some(Mode::Plaintext)),
                "hbone" => Some(Some(Mode::Hbone)),
                "memory" => Some(None),
                "direct" => Some(Some(Mode::Direct)),
                _ => None,
            },
        );
        let modes = [Mode::Plaintext, Mode::Hbone]
            .into_iter()
            .filter(|m| scenarios.contains(&Some(*m)))
            .collect();
        let conns = list(
            "ZRING_BENCH_CONNS",
            "1,8,64",
            "connection counts 1..=1024",
            |s| s.parse().ok().filter(|n| (1..=1024).contains(n)),
        );
        let workloads = list(
            "ZRING_BENCH_WORKLOADS",
            "bulk,rr,crr",
            "some of bulk, rr, crr",
            |s| Workload::ALL.into_iter().find(|w| w.name() == s),
        );
        let cores = list(
            "ZRING_BENCH_CORES",
            "1,2",
            "runtimes per proxy, each 1..=64",
            |s| s.parse().ok().filter(|n| (1..=64).contains(n)),
        );
        let idle_conns = var("ZRING_BENCH_IDLE_CONNS").map_or(10_000, |v| {
            v.parse()
                .ok()
                .filter(|n| (100..=50_000).contains(n))
                .unwrap_or_else(|| bad("ZRING_BENCH_IDLE_CONNS", &v, "100..=50000"))
        });
        let beside = var("ZRING_BENCH_BESIDE").map_or(0, |v| {
            v.parse()
                .ok()
                .filter(|n| *n <= 256)
                .unwrap_or_else(|| bad("ZRING_BENCH_BESIDE", &v, "bulk connections 0..=256"))
        });
        let (other, other_missing) = other_proxy();
        let out =
            var("ZRING_BENCH_OUT").map_or_else(|| target_dir.join("zring-bench"), PathBuf::from);
        let perf = var("ZRING_BENCH_PERF").map(|dir| Perf {
            dir: PathBuf::from(dir),
            event: var("ZRING_BENCH_PERF_EVENT").unwrap_or_else(|| "cpu-clock".into()),
            call_graph: var("ZRING_BENCH_PERF_CALLGRAPH").map_or("dwarf".into(), |v| {
                match v.as_str() {
                    "dwarf" | "fp" => v,
                    _ => bad("ZRING_BENCH_PERF_CALLGRAPH", &v, "dwarf or fp"),
                }
            }),
            freq: var("ZRING_BENCH_PERF_FREQ").map_or(499, |v| {
                v.parse()
                    .ok()
                    .filter(|f| (1..=20_000).contains(f))
                    .unwrap_or_else(|| bad("ZRING_BENCH_PERF_FREQ", &v, "1..=20000"))
            }),
        });
        Options {
            secs: Duration::from_secs_f64(secs),
            rounds,
            drivers,
            modes,
            memory: scenarios.contains(&None),
            conns,
            workloads,
            cores,
            idle_conns,
            beside,
            other,
            other_missing,
            out,
            perf,
        }
    }
}

/// The word that turns the comparison off: `ZRING_BENCH_PROXY=none`.
const NO_PROXY: &str = "none";
/// The wrapper that runs the real ztunnel as a lab node's proxy, in the peers directory.
const ZTUNNEL_WRAPPER: &str = "ztunnel/as-node-proxy.sh";

/// `ZRING_BENCH_PROXY`: unset means the real ztunnel from the peers directory (`ZRING_PEERS_DIR`,
/// default `../shared/peers` beside the checkout) when it is there, and a note saying how to get
/// it when not; `none` (or `off`) means no comparison; anything else is a node proxy's path.
fn other_proxy() -> (Option<OtherProxy>, Option<String>) {
    let args = var("ZRING_BENCH_PROXY_ARGS")
        .map(|a| a.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    let mut env: Vec<(String, String)> = var("ZRING_BENCH_PROXY_ENV")
        .map(|e| {
            e.split_whitespace()
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) if !k.is_empty() => (k.to_owned(), v.to_owned()),
                    _ => bad("ZRING_BENCH_PROXY_ENV", &e, "KEY=VALUE pairs"),
                })
                .collect()
        })
        .unwrap_or_default();
    let (binary, default_name) = match var("ZRING_BENCH_PROXY") {
        Some(v) if v == NO_PROXY || v == "off" => return (None, None),
        Some(path) => {
            let binary = PathBuf::from(&path);
            if !binary.is_file() {
                bad(
                    "ZRING_BENCH_PROXY",
                    &path,
                    "the path of a node proxy binary, or `none`",
                );
            }
            let name = binary
                .file_name()
                .map_or("other".into(), |n| n.to_string_lossy().into_owned());
            (binary, name)
        }
        None => {
            let peers = zring::lab::peers::dir();
            let wrapper = peers.join(ZTUNNEL_WRAPPER);
            if !wrapper.is_file() {
                let note = format!(
                    "no ztunnel to compare with: {} is missing; put the peers kit at ../shared/peers \
                     beside the checkout or name it with ZRING_PEERS_DIR (ZRING_BENCH_PROXY=none \
                     silences this)",
                    wrapper.display()
                );
                return (None, Some(note));
            }
            // The wrapper unpacks ztunnel.xz itself when ZTUNNEL_BIN is unset; the lab's
            // unpacking names the binary by the archive's version, so a newer peer is used.
            if let Ok(bin) = zring::lab::peers::ztunnel()
                && !env.iter().any(|(k, _)| k == "ZTUNNEL_BIN")
            {
                env.push(("ZTUNNEL_BIN".into(), bin.display().to_string()));
            }
            (wrapper, "ztunnel".to_owned())
        }
    };
    let name = var("ZRING_BENCH_PROXY_NAME").unwrap_or(default_name);
    let other = OtherProxy {
        binary,
        name,
        args,
        env,
    };
    (Some(other), None)
}

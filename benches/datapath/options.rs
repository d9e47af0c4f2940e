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
    /// `ZRING_BENCH_DRIVER`: `uring`, `legacy`, or both (comma-separated).
    pub drivers: Vec<String>,
    /// `ZRING_BENCH_SCENARIOS`: which proxied modes run (`plaintext`, `hbone`), plus `memory`.
    pub modes: Vec<Mode>,
    pub memory: bool,
    /// `ZRING_BENCH_CONNS`: concurrent connections per measurement.
    pub conns: Vec<usize>,
    /// `ZRING_BENCH_WORKLOADS`.
    pub workloads: Vec<Workload>,
    /// `ZRING_BENCH_CORES`: runtimes per zring process (the two nodes share this machine).
    pub cores: usize,
    /// `ZRING_BENCH_IDLE_CONNS`: connections the memory scenario opens.
    pub idle_conns: usize,
    /// `ZRING_BENCH_PROXY`: another node proxy binary to run the same scenarios with.
    pub other: Option<OtherProxy>,
    /// `ZRING_BENCH_OUT`: where results go (default `<target dir>/zring-bench`).
    pub out: PathBuf,
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
        let secs = var("ZRING_BENCH_SECS").map_or(3.0, |v| {
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
        let cores = var("ZRING_BENCH_CORES").map_or(1, |v| {
            v.parse()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .unwrap_or_else(|| bad("ZRING_BENCH_CORES", &v, "1..=64"))
        });
        let idle_conns = var("ZRING_BENCH_IDLE_CONNS").map_or(10_000, |v| {
            v.parse()
                .ok()
                .filter(|n| (100..=50_000).contains(n))
                .unwrap_or_else(|| bad("ZRING_BENCH_IDLE_CONNS", &v, "100..=50000"))
        });
        let other = var("ZRING_BENCH_PROXY").map(|path| {
            let binary = PathBuf::from(&path);
            if !binary.is_file() {
                bad(
                    "ZRING_BENCH_PROXY",
                    &path,
                    "the path of a node proxy binary",
                );
            }
            let name = var("ZRING_BENCH_PROXY_NAME").unwrap_or_else(|| {
                binary
                    .file_name()
                    .map_or("other".into(), |n| n.to_string_lossy().into_owned())
            });
            let args = var("ZRING_BENCH_PROXY_ARGS")
                .map(|a| a.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            let env = var("ZRING_BENCH_PROXY_ENV")
                .map(|e| {
                    e.split_whitespace()
                        .map(|kv| match kv.split_once('=') {
                            Some((k, v)) if !k.is_empty() => (k.to_owned(), v.to_owned()),
                            _ => bad("ZRING_BENCH_PROXY_ENV", &e, "KEY=VALUE pairs"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            OtherProxy {
                binary,
                name,
                args,
                env,
            }
        });
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
            drivers,
            modes,
            memory: scenarios.contains(&None),
            conns,
            workloads,
            cores,
            idle_conns,
            other,
            out,
            perf,
        }
    }
}

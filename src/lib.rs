//! zring: a node proxy for Istio's ambient mesh, one io_uring runtime per core.
//!
//! The crate is split by thread and by purity (see `ARCHITECTURE.md`):
//! - `config`, `state`, `rbac`, `xds`, `xds_types`, `grpc`, `crypto`, `backoff`, `control`,
//!   `drain` and `proxy::route` are pure or control-thread code;
//! - `runtime` starts the per-core monoio runtimes; `core` is what each core holds, `proxy` the
//!   listeners, `hbone` the HBONE tunnels, `net` the sockets, buffers and byte pump under both.
//!   All of it runs on the cores and never blocks or locks;
//! - `sys` is the only module that may opt out of the compiler's memory-safety checks;
//! - `latch` (a core's one-shot, many-waiter latch), `rng` (the xorshift generator) and `task`
//!   (per-connection tasks whose panic ends only themselves) are leaves that import nothing
//!   from the crate;
//! - `dns` is the DNS proxy on 15053 (codec and resolution pure, its sockets on the cores);
//! - `capture` is the node's nftables capture rules (`zring redirect`, and the lab);
//! - `lab` builds network-namespace topologies for `zring demo`, the tests and the benches;
//! - `metrics` (per-core shards, merged on scrape), `admin` (the 15000/15020/15021 servers and
//!   the admin socket, on their own `zring-admin` thread) and `logging` (non-blocking writer, run-time levels) are observability.
//! - `fuzzing` holds the entry points the cargo-fuzz targets (`fuzz/`) and the seed-corpus
//!   test share.
//!
//! No top-level module imports one that imports it back (`tests/layering.rs` checks): the data
//! path layers `runtime` → `proxy` → `core` → `hbone` → `net` → `sys`.

pub mod admin;
pub mod app;
pub mod backoff;
pub mod capture;
pub mod config;
pub mod control;
pub mod core;
pub mod crypto;
pub mod demo;
pub mod dns;
pub mod drain;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod hbone;
pub mod identity;
pub mod inpod;
pub mod lab;
pub mod latch;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod proxy;
pub mod rbac;
pub mod rng;
pub mod runtime;
pub mod state;
// The `unsafe_code` lint is allowed only here (Cargo.toml denies it everywhere else): each
// block in this module carries a `// SAFETY:` line.
#[allow(unsafe_code)]
pub mod sys;
pub mod task;
pub mod xds;
pub mod xds_types;

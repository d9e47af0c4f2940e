//! zring: a node proxy for Istio's ambient mesh, one io_uring runtime per core.
//!
//! The crate is split by thread and by purity (see `ARCHITECTURE.md`):
//! - `config`, `state`, `rbac`, `xds`, `grpc`, `backoff`, `control`, `drain` and `proxy::route`
//!   are pure or control-thread code;
//! - `core` and `proxy` run inside the per-core monoio runtimes and never block or lock;
//! - `sys` is the only module that may opt out of the compiler's memory-safety checks;
//! - `lab` builds network-namespace topologies for `zring demo`, the tests and the benches;
//! - `metrics` (per-core shards, merged on scrape), `admin` (the 15000/15020/15021 servers on
//!   the control thread) and `logging` (non-blocking writer, run-time levels) are observability.
//! - `fuzzing` holds the entry points the cargo-fuzz targets (`fuzz/`) and the seed-corpus
//!   test share.

pub mod admin;
pub mod app;
pub mod backoff;
pub mod config;
pub mod control;
pub mod core;
pub mod demo;
pub mod drain;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod identity;
pub mod inpod;
pub mod lab;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod rbac;
pub mod state;
pub mod sys;
pub mod xds;

//! zring: a node proxy for Istio's ambient mesh, one io_uring runtime per core.
//!
//! The crate is split by thread and by purity (see `ARCHITECTURE.md`):
//! - `config`, `state`, `rbac`, `xds`, `grpc`, `backoff` and `proxy::route` are pure or
//!   control-thread code;
//! - `core` and `proxy` run inside the per-core monoio runtimes and never block or lock;
//! - `sys` holds every `unsafe` block in the crate;
//! - `lab` builds network-namespace topologies for `zring demo`, the tests and the benches;
//! - `fuzzing` holds the entry points the cargo-fuzz targets (`fuzz/`) and the seed-corpus
//!   test share.

pub mod app;
pub mod backoff;
pub mod config;
pub mod control;
pub mod core;
pub mod demo;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod identity;
pub mod lab;
pub mod proxy;
pub mod rbac;
pub mod state;
pub mod sys;
pub mod xds;

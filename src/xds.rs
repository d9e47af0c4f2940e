//! Config sources: what turns configuration from outside the process into a `state::Snapshot`.
//! Runs on the control thread only; cores never call into it.
//!
//! - `local`: ztunnel's `LOCAL_XDS_PATH` YAML file (workloads, services, policies), parsed,
//!   validated and watched for changes.
//! - `proto`: the generated Istio / Envoy protobuf types.
//! - `convert`: protobuf → `state` conversion, pure and total (hostile input is an error,
//!   never a panic).
//! - `resources`: the xDS resource map a Delta ADS stream maintains, and the snapshot built
//!   from it (per-resource rejection, so one bad resource does not block the others).
//! - `client`: the Delta ADS client to istiod (tonic, on the control thread's tokio runtime).
//!
//! Both sources feed the same `state::SnapshotBuilder`, so both get the same validation.

pub mod client;
pub mod convert;
pub mod local;
pub mod proto;
pub mod resources;

//! Config sources: what turns configuration from outside the process into a `state::Snapshot`.
//! Runs on the control thread only; cores never call into it.
//!
//! - `local`: ztunnel's `LOCAL_XDS_PATH` YAML file (workloads, services, policies), parsed,
//!   validated and watched for changes.
//! - The Delta ADS client (istiod, `istio.workload.Address` and `istio.security.Authorization`
//!   resources, proto → state conversion with NACKs) will live here too (issue 4). Both feed
//!   the same `state::SnapshotBuilder`, so both get the same validation.

pub mod local;

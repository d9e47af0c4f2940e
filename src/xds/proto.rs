//! The generated protobuf types (see `build.rs` and `proto/`): Istio's workload and
//! authorization API, Envoy's Delta ADS, google.rpc.Status and Istio's certificate service.
//!
//! Pure data plus tonic client stubs; server stubs exist only in unit tests. Nothing here is
//! trusted: every message that arrives from the network goes through `xds::convert` (or the CA
//! client's checks) before it becomes zring state.

#![allow(clippy::all, missing_docs, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/protos.rs"));

pub use envoy::service::discovery::v3 as discovery;
pub use istio::security;
pub use istio::v1::auth as ca;
pub use istio::workload;

pub use crate::xds_types::{ADDRESS_TYPE, AUTHORIZATION_TYPE};

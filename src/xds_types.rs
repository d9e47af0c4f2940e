//! The xDS resource types zring subscribes to: their [`Kind`] and type URLs.
//!
//! A leaf, pure: the xDS client (`xds`) subscribes by these, and the metrics server (`metrics`)
//! labels the xDS counters with them, without either module importing the other's internals
//! (`xds` reports into `metrics`, so `metrics` must not import `xds`).

/// Type URL of `istio.workload.Address` resources (workloads and services).
pub const ADDRESS_TYPE: &str = "type.googleapis.com/istio.workload.Address";
/// Type URL of `istio.security.Authorization` resources (policies).
pub const AUTHORIZATION_TYPE: &str = "type.googleapis.com/istio.security.Authorization";

/// The resource types zring subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Address,
    Authorization,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Address, Kind::Authorization];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Address => ADDRESS_TYPE,
            Kind::Authorization => AUTHORIZATION_TYPE,
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }
}

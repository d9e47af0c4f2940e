//! The limits of the HBONE server (15008) from the environment: handshake deadlines, the idle
//! timeout of tunnels without streams, connection and stream caps, and the receive-buffer
//! budget. Read once at start-up on the main thread; `hbone::limits` enforces them on the cores.

use std::time::Duration;

use super::ConfigError;
use super::parse::{err, parse_duration, parse_range};

/// What 15008 tolerates before it refuses or closes. Counts say whether they hold per core or
/// per process (then each core enforces an equal share: cores share nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HboneLimits {
    /// From the accepted TCP connection to a finished TLS handshake.
    pub tls_timeout: Duration,
    /// From the finished TLS handshake to the client's preface and its first SETTINGS frame.
    pub preface_timeout: Duration,
    /// A tunnel that has carried no stream for this long is closed (GOAWAY).
    pub idle_timeout: Duration,
    /// HBONE connections from one peer IP address, per core.
    pub max_connections_per_peer: u32,
    /// HBONE connections in all, per process (each core takes `ceil(max / cores)`).
    pub max_connections: u32,
    /// Concurrent CONNECT streams of one client identity, per core.
    pub max_streams_per_identity: u32,
    /// Bytes of HTTP/2 receive window (what clients may send before zring has written it to
    /// the destination) across all HBONE server connections, per process (each core takes an
    /// equal share). Beyond the 64 KiB every connection may hold (its fixed cost, bounded by
    /// `max_connections`).
    pub receive_budget: u64,
}

impl Default for HboneLimits {
    fn default() -> HboneLimits {
        HboneLimits {
            tls_timeout: Duration::from_secs(10),
            preface_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections_per_peer: 512,
            max_connections: 4096,
            max_streams_per_identity: 16384,
            receive_budget: 128 << 20,
        }
    }
}

/// Reads the `ZRING_HBONE_*` variables; `var` returns a set, non-empty value.
pub(super) fn hbone_limits(
    var: impl Fn(&'static str) -> Option<String>,
) -> Result<HboneLimits, ConfigError> {
    let d = HboneLimits::default();
    let duration = |name: &'static str, default: Duration| match var(name) {
        None => Ok(default),
        Some(v) => parse_duration(&v)
            .ok_or_else(|| err(name, &v, "expected a duration such as 10s or 1500ms")),
    };
    let count = |name: &'static str, default: u32, max: u64| match var(name) {
        None => Ok(default),
        Some(v) => parse_range(name, &v, 1, max).map(|n| n as u32),
    };
    Ok(HboneLimits {
        tls_timeout: duration("ZRING_HBONE_TLS_TIMEOUT", d.tls_timeout)?,
        preface_timeout: duration("ZRING_HBONE_PREFACE_TIMEOUT", d.preface_timeout)?,
        idle_timeout: duration("ZRING_HBONE_IDLE_TIMEOUT", d.idle_timeout)?,
        max_connections_per_peer: count(
            "ZRING_HBONE_MAX_CONNECTIONS_PER_PEER",
            d.max_connections_per_peer,
            1 << 20,
        )?,
        max_connections: count("ZRING_HBONE_MAX_CONNECTIONS", d.max_connections, 1 << 24)?,
        max_streams_per_identity: count(
            "ZRING_HBONE_MAX_STREAMS_PER_IDENTITY",
            d.max_streams_per_identity,
            1 << 24,
        )?,
        receive_budget: match var("ZRING_HBONE_RECEIVE_BUDGET_MB") {
            None => d.receive_budget,
            Some(v) => parse_range("ZRING_HBONE_RECEIVE_BUDGET_MB", &v, 1, 1 << 20)? << 20,
        },
    })
}

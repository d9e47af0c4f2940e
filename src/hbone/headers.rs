//! HBONE request metadata: building and parsing the CONNECT `:authority`, `baggage`,
//! `forwarded` and `traceparent` headers. Pure; runs on the cores.
//!
//! Parsers face the network: they take bytes, never panic, never allocate more than the
//! input's size, and reject anything outside the narrow forms zring and ztunnel send.

use std::fmt::Write;
use std::net::SocketAddr;

use http::{HeaderValue, Method, Request, Uri};

use crate::state::Workload;

/// Longest header value we parse; anything longer is refused before parsing.
pub const MAX_VALUE_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("method is not CONNECT")]
    Method,
    #[error("authority is not an ip:port socket address")]
    Authority,
    #[error("authority port is 0")]
    AuthorityPort,
    #[error("header value longer than {MAX_VALUE_LEN} bytes")]
    TooLong,
    #[error("malformed traceparent")]
    Traceparent,
    #[error("malformed forwarded header")]
    Forwarded,
    #[error("malformed baggage")]
    Baggage,
}

/// Parses a CONNECT `:authority`: exactly `ip:port` (IPv6 in brackets), nonzero port.
pub fn parse_authority(raw: &[u8]) -> Result<SocketAddr, HeaderError> {
    if raw.len() > 64 {
        return Err(HeaderError::Authority);
    }
    let s = std::str::from_utf8(raw).map_err(|_| HeaderError::Authority)?;
    let addr: SocketAddr = s.parse().map_err(|_| HeaderError::Authority)?;
    // `SocketAddr` accepts scoped IPv6 (`%eth0`); ours never carry scopes.
    if let SocketAddr::V6(v6) = addr
        && (v6.scope_id() != 0 || v6.flowinfo() != 0)
    {
        return Err(HeaderError::Authority);
    }
    if addr.port() == 0 {
        return Err(HeaderError::AuthorityPort);
    }
    Ok(addr)
}

/// `for="<client>"` (RFC 7239 quoting; IPv6 addresses are bracketed by `SocketAddr`'s Display).
pub fn forwarded(client: SocketAddr) -> String {
    format!("for=\"{client}\"")
}

/// Extracts the `for=` client address from a `forwarded` header (first element only; we only
/// accept IP:port or bare IP values, quoted or not).
pub fn parse_forwarded(raw: &[u8]) -> Result<std::net::IpAddr, HeaderError> {
    if raw.len() > MAX_VALUE_LEN {
        return Err(HeaderError::TooLong);
    }
    let s = std::str::from_utf8(raw).map_err(|_| HeaderError::Forwarded)?;
    let first = s.split(',').next().unwrap_or_default();
    for pair in first.split(';') {
        let Some((k, v)) = pair.trim().split_once('=') else {
            continue;
        };
        if !k.eq_ignore_ascii_case("for") {
            continue;
        }
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        if let Ok(sa) = v.parse::<SocketAddr>() {
            return Ok(sa.ip());
        }
        let bare = v
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .unwrap_or(v);
        return bare.parse().map_err(|_| HeaderError::Forwarded);
    }
    Err(HeaderError::Forwarded)
}

/// A W3C trace context, version 00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// A new root context from two random words (trace and span ids must be nonzero).
    pub fn new(r1: u64, r2: u64, r3: u64) -> TraceParent {
        let trace_id = (u128::from(r1) << 64 | u128::from(r2)).max(1);
        TraceParent {
            trace_id,
            span_id: r3.max(1),
            flags: 0,
        }
    }

    pub fn header(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    pub fn parse(raw: &[u8]) -> Result<TraceParent, HeaderError> {
        // Exactly "00-" 32 hex "-" 16 hex "-" 2 hex: 55 bytes, lowercase hex.
        if raw.len() != 55 || &raw[..3] != b"00-" || raw[35] != b'-' || raw[52] != b'-' {
            return Err(HeaderError::Traceparent);
        }
        let hex = |b: &[u8]| -> Result<u128, HeaderError> {
            let mut v = 0u128;
            for &c in b {
                let d = match c {
                    b'0'..=b'9' => c - b'0',
                    b'a'..=b'f' => c - b'a' + 10,
                    _ => return Err(HeaderError::Traceparent),
                };
                v = v << 4 | u128::from(d);
            }
            Ok(v)
        };
        let trace_id = hex(&raw[3..35])?;
        let span_id = hex(&raw[36..52])? as u64;
        let flags = hex(&raw[53..55])? as u8;
        if trace_id == 0 || span_id == 0 {
            return Err(HeaderError::Traceparent);
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }
}

/// What `baggage` says about the source workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub workload_type: Option<String>,
    pub workload_name: Option<String>,
    pub service_name: Option<String>,
    pub service_version: Option<String>,
}

/// Workload kinds that get their own `k8s.<kind>.name` key; ztunnel uses the same set.
const WORKLOAD_KINDS: [&str; 4] = ["deployment", "pod", "job", "cronjob"];

impl Baggage {
    /// The header value: `k8s.cluster.name=…,k8s.namespace.name=…,k8s.<kind>.name=…,
    /// service.name=…,service.version=…`, skipping unknown values.
    pub fn header(&self) -> String {
        let mut out = String::with_capacity(160);
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                if !out.is_empty() {
                    out.push(',');
                }
                let _ = write!(out, "{k}={v}");
            }
        };
        put("k8s.cluster.name", &self.cluster);
        put("k8s.namespace.name", &self.namespace);
        let kind = self
            .workload_type
            .as_deref()
            .filter(|k| WORKLOAD_KINDS.contains(k))
            .unwrap_or("deployment");
        put(&format!("k8s.{kind}.name"), &self.workload_name);
        put("service.name", &self.service_name);
        put("service.version", &self.service_version);
        out
    }

    /// Parses the keys we know; unknown keys are ignored, malformed members refuse the whole
    /// header (a peer that cannot format baggage gets no say in our metric labels).
    pub fn parse(raw: &[u8]) -> Result<Baggage, HeaderError> {
        if raw.len() > MAX_VALUE_LEN {
            return Err(HeaderError::TooLong);
        }
        let s = std::str::from_utf8(raw).map_err(|_| HeaderError::Baggage)?;
        let mut b = Baggage::default();
        for member in s.split(',') {
            let member = member.split(';').next().unwrap_or_default().trim();
            if member.is_empty() {
                continue;
            }
            let (k, v) = member.split_once('=').ok_or(HeaderError::Baggage)?;
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty()
                || !v
                    .bytes()
                    .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\\')
            {
                return Err(HeaderError::Baggage);
            }
            let v = Some(v.to_owned());
            match k {
                "k8s.cluster.name" => b.cluster = v,
                "k8s.namespace.name" => b.namespace = v,
                "service.name" => b.service_name = v,
                "service.version" => b.service_version = v,
                _ => {
                    if let Some(kind) = k.strip_prefix("k8s.").and_then(|r| r.strip_suffix(".name"))
                        && WORKLOAD_KINDS.contains(&kind)
                    {
                        b.workload_type = Some(kind.to_owned());
                        b.workload_name = v;
                    }
                }
            }
        }
        Ok(b)
    }
}

impl Baggage {
    /// What zring says about a source workload: ztunnel's keys, canonical service as
    /// `service.name` and its revision as `service.version`.
    pub fn of(w: &Workload) -> Baggage {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Baggage {
            cluster: some(&w.cluster_id),
            namespace: some(&w.namespace),
            workload_type: some(&w.workload_type),
            workload_name: some(&w.workload_name),
            service_name: some(&w.canonical_name),
            service_version: some(&w.canonical_revision),
        }
    }
}

/// The CONNECT request for a tunnel to `authority` on behalf of `client` (the source pod's
/// socket address), with the metadata headers ztunnel sends.
pub fn connect_request(
    authority: SocketAddr,
    client: SocketAddr,
    source: &Workload,
    trace: TraceParent,
) -> Request<()> {
    let mut req = Request::new(());
    *req.method_mut() = Method::CONNECT;
    // An `ip:port` always parses as an authority-form URI.
    *req.uri_mut() = Uri::try_from(authority.to_string()).unwrap_or_default();
    let h = req.headers_mut();
    let value = |s: String| HeaderValue::try_from(s).ok();
    if let Some(v) = value(Baggage::of(source).header()) {
        h.insert("baggage", v);
    }
    if let Some(v) = value(forwarded(client)) {
        h.insert(http::header::FORWARDED, v);
    }
    if let Some(v) = value(trace.header()) {
        h.insert("traceparent", v);
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_forms() {
        assert_eq!(
            parse_authority(b"10.244.2.4:80").unwrap(),
            "10.244.2.4:80".parse().unwrap()
        );
        assert_eq!(
            parse_authority(b"[fd00::1]:8080").unwrap(),
            "[fd00::1]:8080".parse().unwrap()
        );
        for bad in [
            &b"10.244.2.4"[..],
            b"appb.default.svc:80",
            b"10.244.2.4:0",
            b"10.244.2.4:65536",
            b"10.244.2.4:-1",
            b" 10.244.2.4:80",
            b"10.244.2.4:80\0",
            b"[fe80::1%1]:80",
            b"\xff\xfe:80",
            b"",
        ] {
            assert!(
                parse_authority(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn forwarded_round_trip() {
        let c: SocketAddr = "10.244.1.8:41234".parse().unwrap();
        assert_eq!(forwarded(c), "for=\"10.244.1.8:41234\"");
        assert_eq!(parse_forwarded(forwarded(c).as_bytes()).unwrap(), c.ip());
        let v6: SocketAddr = "[fd00::8]:1".parse().unwrap();
        assert_eq!(parse_forwarded(forwarded(v6).as_bytes()).unwrap(), v6.ip());
        assert_eq!(
            parse_forwarded(b"for=10.0.0.1;proto=http, for=1.2.3.4")
                .unwrap()
                .to_string(),
            "10.0.0.1"
        );
        assert!(parse_forwarded(b"by=1.2.3.4").is_err());
        assert!(parse_forwarded(b"for=\"_hidden\"").is_err());
    }

    #[test]
    fn traceparent_round_trip_and_rejects() {
        let t = TraceParent::new(0xdead, 0xbeef, 0x1234);
        let h = t.header();
        assert_eq!(h.len(), 55);
        assert_eq!(TraceParent::parse(h.as_bytes()).unwrap(), t);
        for bad in [
            "00-00000000000000000000000000000000-0000000000001234-00",
            "01-0000000000000000000000000000dead-0000000000001234-00",
            "00-0000000000000000000000000000DEAD-0000000000001234-00",
            "00-0000000000000000000000000000dead-0000000000001234-0",
            "00-0000000000000000000000000000dead_0000000000001234-00",
        ] {
            assert!(TraceParent::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn connect_request_carries_authority_and_metadata() {
        let w = Workload {
            namespace: "default".into(),
            workload_name: "appa".into(),
            workload_type: "deployment".into(),
            canonical_name: "appa".into(),
            canonical_revision: "v1".into(),
            ..Workload::default()
        };
        let req = connect_request(
            "10.244.2.4:80".parse().unwrap(),
            "10.244.1.8:41234".parse().unwrap(),
            &w,
            TraceParent::new(1, 2, 3),
        );
        assert_eq!(req.method(), Method::CONNECT);
        assert_eq!(req.uri().authority().unwrap().as_str(), "10.244.2.4:80");
        assert_eq!(req.uri().path_and_query(), None);
        assert_eq!(req.headers()["forwarded"], "for=\"10.244.1.8:41234\"");
        assert_eq!(
            req.headers()["baggage"],
            "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=appa,service.name=appa,service.version=v1"
        );
        assert_eq!(
            TraceParent::parse(req.headers()["traceparent"].as_bytes()).unwrap(),
            TraceParent::new(1, 2, 3)
        );
        let v6 = connect_request(
            "[fd00::4]:80".parse().unwrap(),
            "[fd00::8]:1".parse().unwrap(),
            &w,
            TraceParent::new(1, 2, 3),
        );
        assert_eq!(v6.uri().authority().unwrap().as_str(), "[fd00::4]:80");
        assert_eq!(
            parse_authority(v6.uri().authority().unwrap().as_str().as_bytes()).unwrap(),
            "[fd00::4]:80".parse().unwrap()
        );
    }

    #[test]
    fn baggage_round_trip() {
        let b = Baggage {
            cluster: Some("Kubernetes".into()),
            namespace: Some("default".into()),
            workload_type: Some("deployment".into()),
            workload_name: Some("appa".into()),
            service_name: Some("appa".into()),
            service_version: Some("v1".into()),
        };
        let h = b.header();
        assert_eq!(
            h,
            "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=appa,service.name=appa,service.version=v1"
        );
        assert_eq!(Baggage::parse(h.as_bytes()).unwrap(), b);
        assert_eq!(
            Baggage::parse(b"k8s.job.name=x;prop=1, other=y")
                .unwrap()
                .workload_type
                .as_deref(),
            Some("job")
        );
        assert!(Baggage::parse(b"novalue").is_err());
        assert!(Baggage::parse(b"k=\"quoted\"").is_err());
        assert!(Baggage::parse(&vec![b'a'; MAX_VALUE_LEN + 1]).is_err());
    }
}

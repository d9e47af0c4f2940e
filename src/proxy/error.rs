//! Why a connection did not complete normally, and the one table that says, for each reason,
//! what the client is told, what the metrics call it and whose fault it was.
//!
//! Pure; used by every listener task on the cores. [`Error::report`] is that table: one
//! exhaustive `match` with no `_ =>` arm, so a new error variant (here, in `hbone` or `net`)
//! does not compile until it has an answer, a `response_flags` value and a side. The listeners
//! never choose an answer themselves: the plaintext ones reset the client on
//! [`Answer::Refuse`], 15008 sends the status.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::route::{self, Denied};
use crate::hbone::HboneError;
use crate::net::copy::CopyError;
use crate::net::{self, Side};
use crate::rbac::Decision;

/// Why a connection did not complete normally. The `Display` texts are the access log's
/// `error` field.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("refused: {0}")]
    Denied(#[from] route::Denied),
    /// The workload a connection comes from (outbound) or goes to (inbound) was not in the
    /// snapshot, nor arrived while the connection waited for it (a pod newer than the
    /// configuration waits, bounded like ztunnel).
    #[error("unknown {role} workload {ip}: not in the configuration after waiting {waited:?}")]
    NoWorkload {
        role: Role,
        ip: IpAddr,
        waited: Duration,
    },
    #[error("destination workload {0} is not on this node")]
    NotLocal(IpAddr),
    #[error(transparent)]
    Connect(#[from] net::Error),
    #[error("{0}")]
    Copy(#[from] CopyError),
    #[error("HBONE: {0}")]
    Hbone(#[from] HboneError),
    #[error("workload {0} has no valid SPIFFE identity")]
    NoIdentity(Arc<str>),
    #[error("unauthorized: {0}")]
    Unauthorized(Decision),
    #[error("closed on policy change: {0}")]
    Revoked(Decision),
    /// In-pod mode: the pod was removed and the connection was still open at the drain
    /// deadline, so it was cut.
    #[error("closed: pod removed, connection still open at the drain deadline")]
    PodRemoved,
    /// Node mode: a passthrough to a link-local, loopback or node address (`local_reach`).
    #[error(
        "refused: passthrough to {0}, a link-local, loopback or node address \
         (ZRING_PASSTHROUGH_ALLOW_LOCAL=true allows it)"
    )]
    LocalPassthrough(std::net::SocketAddr),
    /// The connection's task panicked (`task::spawn` contained it); its sockets closed.
    #[error("closed: the connection's task panicked")]
    Panicked,
}

/// Which end of a connection a workload lookup was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Destination,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Destination => "destination",
        })
    }
}

/// What the client of a failed connection is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Refused before any byte flowed: a TCP RST on the plaintext listeners (so the client sees
    /// a failure, not an empty connection), this status on an HBONE stream.
    Refuse(StatusCode),
    /// Nothing more to say: the client was answered already (the bytes flowed), or its HBONE
    /// stream is gone.
    Nothing,
}

/// An error's entry in the table: see [`Error::report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub answer: Answer,
    /// The `response_flags` metric label and access-log field.
    pub flags: &'static str,
    /// Whose failure it is: the client's, the upstream's, or zring's own.
    pub side: Side,
}

const DENY: &str = "DENY";
const CONNECT: &str = "CONNECT";
const NONE: &str = "-";
/// No workload for the connection's source or destination, even after waiting for it.
const NO_WORKLOAD: &str = "NO_WORKLOAD";
/// Kept in the configuration but not routable by zring (yet): see `route::Unroutable`.
const UNROUTABLE: &str = "UNROUTABLE";
/// An endpoint addressed by hostname whose name did not resolve (`dns::ondemand`).
const DNS_FAILED: &str = "DNS_FAILED";
/// Cut at the drain deadline of a removed pod.
const POD_REMOVED: &str = "POD_REMOVED";
/// Node mode: passthrough to an address only the node should reach (`local_reach`).
const PASSTHROUGH_LOCAL: &str = "PASSTHROUGH_LOCAL";

impl Error {
    /// The answer, `response_flags` and side of this error.
    pub fn report(&self) -> Report {
        use Answer::{Nothing, Refuse};
        use Side::{Downstream, Internal, Upstream};
        const BAD: Answer = Refuse(StatusCode::BAD_REQUEST);
        const DENIED: Answer = Refuse(StatusCode::UNAUTHORIZED);
        const UNAVAILABLE: Answer = Refuse(StatusCode::SERVICE_UNAVAILABLE);
        let (answer, flags, side) = match self {
            // Routing (15001) and the destination checks (15006, 15008).
            Error::Denied(Denied::OwnPort(_) | Denied::UnknownSource(_)) => (BAD, DENY, Downstream),
            Error::Denied(Denied::NoServicePort { .. }) => (BAD, DENY, Downstream),
            Error::Denied(Denied::NoHealthyEndpoint(_)) => (UNAVAILABLE, DENY, Upstream),
            Error::Denied(Denied::UnresolvedWaypoint(_)) => (UNAVAILABLE, DENY, Internal),
            Error::Denied(Denied::Unroutable(_)) => (UNAVAILABLE, UNROUTABLE, Internal),
            Error::Denied(Denied::DnsFailed { .. }) => (UNAVAILABLE, DNS_FAILED, Upstream),
            // The configuration may just be late (a new pod): 503, worth a retry.
            Error::NoWorkload { .. } => (UNAVAILABLE, NO_WORKLOAD, Internal),
            Error::NotLocal(_) => (BAD, DENY, Downstream),
            Error::NoIdentity(_) => (UNAVAILABLE, CONNECT, Internal),
            // Authorization, at setup and on policy change.
            Error::Unauthorized(_) => (DENIED, DENY, Downstream),
            Error::Revoked(_) => (Nothing, DENY, Internal),
            // In-pod: the pod went away; nothing left to answer.
            Error::PodRemoved => (Nothing, POD_REMOVED, Internal),
            Error::LocalPassthrough(_) => (BAD, PASSTHROUGH_LOCAL, Downstream),
            // A bug: the task unwound; nothing left to answer with.
            Error::Panicked => (Nothing, NONE, Internal),
            // Connecting upstream: TCP, or the HBONE client (15001).
            Error::Connect(_) => (UNAVAILABLE, CONNECT, Upstream),
            Error::Hbone(e) => match e {
                HboneError::Connect(_)
                | HboneError::Tls { .. }
                | HboneError::Http2Handshake(_)
                | HboneError::Timeout { .. }
                | HboneError::H2(_)
                | HboneError::Retryable(_)
                | HboneError::Pooled(..) => (UNAVAILABLE, CONNECT, Upstream),
                HboneError::Status(s) if *s == StatusCode::UNAUTHORIZED => (DENIED, DENY, Upstream),
                HboneError::Status(s) => (Refuse(*s), CONNECT, Upstream),
                HboneError::NoCertificate(_) | HboneError::Config(_) => {
                    (UNAVAILABLE, CONNECT, Internal)
                }
                // The HBONE server's side of a stream (15008).
                HboneError::BadRequest(_) => (BAD, DENY, Downstream),
                HboneError::Downstream(_) => (Nothing, CONNECT, Downstream),
            },
            // The pump, after the answer.
            Error::Copy(e) => (Nothing, NONE, e.side()),
        };
        Report {
            answer,
            flags,
            side,
        }
    }

    /// The `response_flags` value for this outcome (see [`Error::report`]).
    pub fn response_flag(&self) -> &'static str {
        self.report().flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn refusals_before_the_answer_refuse_and_pump_errors_do_not() {
        let dst: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let refused = [
            Error::Denied(Denied::OwnPort(dst)),
            Error::NoWorkload {
                role: Role::Destination,
                ip: dst.ip(),
                waited: Duration::from_secs(5),
            },
            Error::Connect(net::Error::ConnectTimeout(dst)),
            HboneError::BadRequest("method is not CONNECT").into(),
        ];
        for e in refused {
            assert!(matches!(e.report().answer, Answer::Refuse(_)), "{e}");
        }
        let copy = Error::Copy(CopyError::Read {
            side: Side::Upstream,
            source: std::io::Error::other("reset"),
        });
        assert_eq!(
            Error::PodRemoved.report(),
            Report {
                answer: Answer::Nothing,
                flags: "POD_REMOVED",
                side: Side::Internal
            }
        );
        assert_eq!(
            copy.report(),
            Report {
                answer: Answer::Nothing,
                flags: "-",
                side: Side::Upstream
            }
        );
    }

    /// The HBONE server answers each refusal with the status ztunnel uses.
    #[test]
    fn hbone_statuses() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let status = |e: Error| match e.report().answer {
            Answer::Refuse(s) => s.as_u16(),
            Answer::Nothing => 0,
        };
        assert_eq!(status(HboneError::BadRequest("x").into()), 400);
        assert_eq!(status(Error::NotLocal(ip)), 400);
        let dst = SocketAddr::new(ip, 80);
        assert_eq!(status(Error::Connect(net::Error::ConnectTimeout(dst))), 503);
        assert_eq!(
            Error::from(HboneError::Status(StatusCode::UNAUTHORIZED)).response_flag(),
            "DENY"
        );
        assert_eq!(
            Error::from(HboneError::Status(StatusCode::SERVICE_UNAVAILABLE)).response_flag(),
            "CONNECT"
        );
    }
}

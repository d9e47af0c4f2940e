//! ZDS wire format: one protobuf message per SEQPACKET packet, the pod's netns riding along as
//! one SCM_RIGHTS descriptor on `add` only. Turns a received packet into a [`Request`] or a
//! [`DecodeError`] naming exactly what was wrong, and builds the proxy's two messages (the hello
//! and the ack).
//!
//! Pure apart from the netns check, which the caller passes in (the client passes
//! `sys::uds::is_netns`, unit tests a fake), so this file runs on any thread and tests in
//! microseconds. Every descriptor handed in is either moved into the returned request or dropped
//! (closed) here: a malformed packet never leaks one.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use prost::Message;

use super::{Pod, PodNetns, WorkloadInfo};
use crate::xds::proto::workload::zds as pb;

/// Longest uid accepted: Kubernetes uids are 36-character UUIDs; anything far longer is not one.
pub const MAX_UID_LEN: usize = 253;

/// A well-formed request from the node agent.
#[derive(Debug)]
pub enum Request {
    /// Enrol a pod; `pod.netns` is the descriptor that came with the packet.
    Add(Pod),
    /// Keep serving this pod across the coming reconciliation.
    Keep { uid: String },
    /// The pod is gone.
    Del { uid: String },
    /// Every pod the agent knows has been (re)sent since the connection began.
    SnapshotSent,
}

impl Request {
    /// Short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Add(_) => "add",
            Request::Keep { .. } => "keep",
            Request::Del { .. } => "del",
            Request::SnapshotSent => "snapshot_sent",
        }
    }
}

/// Why a packet is not a usable request. Every variant is answered with an `Ack` carrying its
/// text, then the connection is dropped and made again (as ztunnel does on a bad read): the
/// agent and the proxy may no longer agree on the stream, and a fresh snapshot re-aligns them.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("undecodable WorkloadRequest: {0}")]
    Undecodable(#[from] prost::DecodeError),
    #[error("WorkloadRequest has no payload (unknown or empty message)")]
    NoPayload,
    #[error("{0} request has an empty uid")]
    EmptyUid(&'static str),
    #[error("{kind} request has a uid of {len} bytes (at most {MAX_UID_LEN})")]
    LongUid { kind: &'static str, len: usize },
    #[error("add request for {0} has no workload_info")]
    NoWorkloadInfo(String),
    #[error("add request for {0} carries no netns descriptor")]
    AddWithoutFd(String),
    #[error("add request for {uid} carries {count} descriptors, expected exactly one")]
    TooManyFds { uid: String, count: usize },
    #[error("add request for {0}: the descriptor is not a network namespace")]
    NotNetns(String),
    #[error("add request for {uid}: cannot inspect the descriptor: {source}")]
    FdCheck { uid: String, source: io::Error },
    #[error("{kind} request carries {count} descriptors, expected none")]
    UnexpectedFds { kind: &'static str, count: usize },
}

/// Decodes one packet's bytes and descriptors. `is_netns` says whether a descriptor is a network
/// namespace; `file_id` names the namespace it refers to (duplicate adds compare it).
pub fn decode(
    bytes: &[u8],
    mut fds: Vec<OwnedFd>,
    is_netns: impl Fn(BorrowedFd<'_>) -> io::Result<bool>,
    file_id: impl Fn(BorrowedFd<'_>) -> io::Result<(u64, u64)>,
) -> Result<Request, DecodeError> {
    let req = pb::WorkloadRequest::decode(bytes)?;
    let payload = req.payload.ok_or(DecodeError::NoPayload)?;
    let request = match payload {
        pb::workload_request::Payload::Add(add) => {
            let uid = check_uid("add", add.uid)?;
            let info = add
                .workload_info
                .ok_or_else(|| DecodeError::NoWorkloadInfo(uid.clone()))?;
            let fd = match fds.len() {
                0 => return Err(DecodeError::AddWithoutFd(uid)),
                1 => fds.pop().expect("one descriptor"),
                count => return Err(DecodeError::TooManyFds { uid, count }),
            };
            match is_netns(fd.as_fd()) {
                Ok(true) => {}
                Ok(false) => return Err(DecodeError::NotNetns(uid)),
                Err(source) => return Err(DecodeError::FdCheck { uid, source }),
            }
            let id = match file_id(fd.as_fd()) {
                Ok(id) => id,
                Err(source) => return Err(DecodeError::FdCheck { uid, source }),
            };
            return Ok(Request::Add(Pod {
                uid,
                info: WorkloadInfo {
                    name: info.name,
                    namespace: info.namespace,
                    service_account: info.service_account,
                },
                netns: PodNetns::new(fd, id),
            }));
        }
        pb::workload_request::Payload::Keep(keep) => Request::Keep {
            uid: check_uid("keep", keep.uid)?,
        },
        pb::workload_request::Payload::Del(del) => Request::Del {
            uid: check_uid("del", del.uid)?,
        },
        pb::workload_request::Payload::SnapshotSent(_) => Request::SnapshotSent,
    };
    if !fds.is_empty() {
        return Err(DecodeError::UnexpectedFds {
            kind: request.kind(),
            count: fds.len(),
        });
    }
    Ok(request)
}

fn check_uid(kind: &'static str, uid: String) -> Result<String, DecodeError> {
    if uid.is_empty() {
        return Err(DecodeError::EmptyUid(kind));
    }
    if uid.len() > MAX_UID_LEN {
        return Err(DecodeError::LongUid {
            kind,
            len: uid.len(),
        });
    }
    Ok(uid)
}

/// The proxy's first message on every connection.
pub fn hello() -> Vec<u8> {
    pb::ZdsHello {
        version: pb::Version::V1 as i32,
    }
    .encode_to_vec()
}

/// The answer to one request: `Ok` acks, `Err` carries the reason to the agent.
pub fn ack(outcome: Result<(), &str>) -> Vec<u8> {
    pb::WorkloadResponse {
        payload: Some(pb::workload_response::Payload::Ack(pb::Ack {
            error: outcome.err().unwrap_or_default().to_owned(),
        })),
    }
    .encode_to_vec()
}

#[cfg(test)]
#[path = "codec/tests.rs"]
mod tests;

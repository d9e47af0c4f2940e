//! Unit tests for the ZDS codec, with no socket: each packet is bytes plus descriptors (pipe
//! ends standing in for netns handles, recognised by a fake `is_netns`). They cover decoding
//! `add` (with its one netns descriptor), `keep`, `del` and `snapshot_sent`; Istio's field
//! numbers, checked against hand-encoded bytes for requests, the hello and the ack; a typed
//! error for each malformed request; descriptors that are wrong, surplus or misplaced being
//! refused and closed; errors naming the pod's uid; and (proptest) arbitrary bytes never
//! panicking. The netns check itself is tested in `sys`.

use std::io::Write;
use std::os::fd::{BorrowedFd, OwnedFd};

use proptest::prelude::*;
use prost::Message;

use super::*;

/// Tests call a descriptor a netns when it is the read end of a pipe marked as such: the check
/// itself is `sys::uds::is_netns`, tested in `sys`.
fn fake_is_netns(netns: &[i32]) -> impl Fn(BorrowedFd<'_>) -> io::Result<bool> + '_ {
    use std::os::fd::AsRawFd;
    move |fd| Ok(netns.contains(&fd.as_raw_fd()))
}

fn fake_id(_: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    Ok((1, 2))
}

fn info() -> pb::WorkloadInfo {
    pb::WorkloadInfo {
        name: "app".into(),
        namespace: "default".into(),
        service_account: "sa".into(),
    }
}

fn encode(p: pb::workload_request::Payload) -> Vec<u8> {
    pb::WorkloadRequest { payload: Some(p) }.encode_to_vec()
}

fn add(uid: &str, info: Option<pb::WorkloadInfo>) -> Vec<u8> {
    encode(pb::workload_request::Payload::Add(pb::AddWorkload {
        uid: uid.into(),
        workload_info: info,
    }))
}

/// A pipe: the read end is handed to `decode`, the write end tells whether it was closed.
fn pipe() -> (OwnedFd, std::io::PipeWriter) {
    let (r, w) = std::io::pipe().unwrap();
    (r.into(), w)
}

fn closed(mut w: &std::io::PipeWriter) -> bool {
    // With the read end gone the write fails with EPIPE (Rust ignores SIGPIPE).
    w.write_all(b"x").is_err()
}

fn decode_with(bytes: &[u8], fds: Vec<OwnedFd>, netns: &[i32]) -> Result<Request, DecodeError> {
    decode(bytes, fds, fake_is_netns(netns), fake_id)
}

#[test]
fn add_with_one_netns_fd_decodes() {
    use std::os::fd::AsRawFd;
    let (r, w) = pipe();
    let raw = r.as_raw_fd();
    let req = decode_with(&add("uid-1", Some(info())), vec![r], &[raw]).unwrap();
    let Request::Add(pod) = req else {
        panic!("not an add: {req:?}")
    };
    assert_eq!(pod.uid, "uid-1");
    assert_eq!(
        pod.info,
        WorkloadInfo {
            name: "app".into(),
            namespace: "default".into(),
            service_account: "sa".into()
        }
    );
    assert_eq!(pod.netns.id(), (1, 2));
    assert!(!closed(&w), "the request owns the descriptor");
    drop(pod);
    assert!(closed(&w), "dropping the request closes it");
}

#[test]
fn keep_del_and_snapshot_decode() {
    let keep = encode(pb::workload_request::Payload::Keep(pb::KeepWorkload {
        uid: "k".into(),
    }));
    assert!(matches!(decode_with(&keep, vec![], &[]), Ok(Request::Keep { uid }) if uid == "k"));
    let del = encode(pb::workload_request::Payload::Del(pb::DelWorkload {
        uid: "d".into(),
    }));
    assert!(matches!(decode_with(&del, vec![], &[]), Ok(Request::Del { uid }) if uid == "d"));
    let snap = encode(pb::workload_request::Payload::SnapshotSent(
        pb::SnapshotSent {},
    ));
    assert!(matches!(
        decode_with(&snap, vec![], &[]),
        Ok(Request::SnapshotSent)
    ));
}

#[test]
fn field_numbers_are_istios() {
    // Hand-encoded from Istio's zds.proto: WorkloadRequest.add = 1 { uid = 1, workload_info = 2
    // { name = 1, namespace = 2, service_account = 3 } }, del = 2 { uid = 2 }, keep = 5 { uid = 1 },
    // snapshot_sent = 3.
    let add = [
        0x0a, 0x0c, 0x0a, 0x01, b'u', 0x12, 0x07, 0x0a, 0x01, b'n', 0x12, 0x00, 0x1a, 0x00,
    ];
    let (r, _w) = pipe();
    use std::os::fd::AsRawFd;
    let raw = r.as_raw_fd();
    let Ok(Request::Add(pod)) = decode_with(&add, vec![r], &[raw]) else {
        panic!("hand-encoded add")
    };
    assert_eq!((pod.uid.as_str(), pod.info.name.as_str()), ("u", "n"));
    let del = [0x12, 0x03, 0x12, 0x01, b'd'];
    assert!(matches!(decode_with(&del, vec![], &[]), Ok(Request::Del { uid }) if uid == "d"));
    let keep = [0x2a, 0x03, 0x0a, 0x01, b'k'];
    assert!(matches!(decode_with(&keep, vec![], &[]), Ok(Request::Keep { uid }) if uid == "k"));
    assert!(matches!(
        decode_with(&[0x1a, 0x00], vec![], &[]),
        Ok(Request::SnapshotSent)
    ));
    // ZdsHello { version: V1 } and WorkloadResponse { ack: Ack { error } }.
    assert_eq!(hello(), [0x08, 0x01]);
    assert_eq!(ack(Ok(())), [0x0a, 0x00]);
    assert_eq!(ack(Err("no")), [0x0a, 0x04, 0x0a, 0x02, b'n', b'o']);
}

#[test]
fn malformed_requests_have_typed_errors() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", vec![0xff, 0xff, 0xff, 0xff]),
        ("truncated length", vec![0x0a, 0x10, 0x0a]),
        ("empty", vec![]),
        ("unknown field only", vec![0x78, 0x01]),
        ("empty uid", add("", Some(info()))),
        ("long uid", add(&"u".repeat(MAX_UID_LEN + 1), Some(info()))),
        ("no workload_info", add("uid", None)),
        ("add without fd", add("uid", Some(info()))),
    ];
    for (what, bytes) in cases {
        let err = decode_with(&bytes, vec![], &[]).expect_err(what);
        let ok = match what {
            "garbage" | "truncated length" => matches!(err, DecodeError::Undecodable(_)),
            "empty" | "unknown field only" => matches!(err, DecodeError::NoPayload),
            "empty uid" => matches!(err, DecodeError::EmptyUid("add")),
            "long uid" => matches!(err, DecodeError::LongUid { kind: "add", .. }),
            "no workload_info" => matches!(err, DecodeError::NoWorkloadInfo(_)),
            "add without fd" => matches!(err, DecodeError::AddWithoutFd(_)),
            _ => unreachable!(),
        };
        assert!(ok, "{what}: {err}");
    }
}

#[test]
fn bad_descriptors_are_refused_and_closed() {
    use std::os::fd::AsRawFd;
    // Not a netns.
    let (r, w) = pipe();
    let err = decode_with(&add("uid", Some(info())), vec![r], &[]).unwrap_err();
    assert!(
        matches!(err, DecodeError::NotNetns(ref u) if u == "uid"),
        "{err}"
    );
    assert!(closed(&w));

    // Two descriptors on an add: both closed.
    let ((r1, w1), (r2, w2)) = (pipe(), pipe());
    let raws = [r1.as_raw_fd(), r2.as_raw_fd()];
    let err = decode_with(&add("uid", Some(info())), vec![r1, r2], &raws).unwrap_err();
    assert!(
        matches!(err, DecodeError::TooManyFds { count: 2, .. }),
        "{err}"
    );
    assert!(closed(&w1) && closed(&w2));

    // A descriptor on a del.
    let (r, w) = pipe();
    let del = encode(pb::workload_request::Payload::Del(pb::DelWorkload {
        uid: "d".into(),
    }));
    let err = decode_with(&del, vec![r], &[]).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::UnexpectedFds {
                kind: "del",
                count: 1
            }
        ),
        "{err}"
    );
    assert!(closed(&w));

    // A descriptor on garbage.
    let (r, w) = pipe();
    assert!(decode_with(&[0xff], vec![r], &[]).is_err());
    assert!(closed(&w));

    // The check itself failing.
    let (r, w) = pipe();
    let err = decode(
        &add("uid", Some(info())),
        vec![r],
        |_| Err(io::Error::other("boom")),
        fake_id,
    )
    .unwrap_err();
    assert!(matches!(err, DecodeError::FdCheck { .. }), "{err}");
    assert!(closed(&w));
}

#[test]
fn errors_name_the_uid_for_the_agents_log() {
    let err = decode_with(&add("pod-7", Some(info())), vec![], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "add request for pod-7 carries no netns descriptor"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let (r, w) = pipe();
        use std::os::fd::AsRawFd;
        let raw = r.as_raw_fd();
        match decode_with(&bytes, vec![r], &[raw]) {
            Ok(Request::Add(pod)) => drop(pod),
            Ok(_) => unreachable!("a descriptor on anything but add is refused"),
            Err(_) => prop_assert!(closed(&w)),
        }
    }
}

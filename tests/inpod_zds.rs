//! The ZDS client (`zring::inpod`) against the lab's fake istio-cni agent, over a real SEQPACKET
//! socket, with real network-namespace descriptors of lab pods: enrolment and acks, keep, del,
//! snapshot reconciliation, agent restarts and vanishing mid-snapshot, duplicate adds, and every
//! kind of bad input the agent could send. The handler is the recording test handler; listeners
//! inside the pods are another step's.
//!
//! Runs as root under `cargo test` (the lab makes namespaces); without root it fails with
//! `Lab::new`'s error, never skips. Waits are conditions with deadlines, never sleeps.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use zring::inpod::testing::{Call, RecordingHandler};
use zring::inpod::{Client, ClientConfig, WorkloadInfo, client};
use zring::lab::Lab;
use zring::lab::cni::FakeAgent;
use zring::lab::mesh::eventually;

/// A lab with one node and `pods`, a fake agent listening in a temp dir, and the client
/// connected to it (its hello checked).
struct Fixture {
    lab: Lab,
    agent: FakeAgent,
    client: Option<Client<RecordingHandler>>,
    handler: RecordingHandler,
    _dir: tempfile::TempDir,
}

fn info(name: &str) -> WorkloadInfo {
    WorkloadInfo {
        name: name.into(),
        namespace: "default".into(),
        service_account: "sa".into(),
    }
}

fn config(path: PathBuf) -> ClientConfig {
    ClientConfig {
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
        retry_interval: Duration::from_millis(20),
        ..ClientConfig::new(path)
    }
}

impl Fixture {
    fn new(pods: &[&str]) -> Result<Fixture> {
        let mut lab = Lab::new()?;
        lab.add_node("a", Ipv4Addr::new(172, 31, 0, 11), "10.244.1.0/24".parse()?)?;
        for (i, name) in pods.iter().enumerate() {
            lab.add_pod("a", name, Ipv4Addr::new(10, 244, 1, 10 + i as u8))?;
        }
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("ztunnel.sock");
        let mut agent = FakeAgent::listen(&path)?;
        let handler = RecordingHandler::new();
        let client = client::spawn(config(path), handler.clone())?;
        agent.accept()?;
        Ok(Fixture {
            lab,
            agent,
            client: Some(client),
            handler,
            _dir: dir,
        })
    }

    fn add(&mut self, uid: &str, pod: &str) -> Result<Result<(), String>> {
        let netns = self.lab.pod(pod).netns().clone();
        Ok(self.agent.add(uid, &info(pod), &netns)?)
    }

    fn client(&self) -> &Client<RecordingHandler> {
        self.client.as_ref().expect("running")
    }

    fn metrics(&self) -> zring::inpod::metrics::MetricsSnapshot {
        self.client().metrics().snapshot()
    }

    /// The netns identity of lab pod `pod`, as the client sees it.
    fn netns_id(&self, pod: &str) -> Result<(u64, u64)> {
        let path = zring::sys::netns::path(self.lab.pod(pod).netns().name());
        let file = std::fs::File::open(path)?;
        Ok(zring::sys::uds::file_id(file.as_fd())?)
    }
}

/// How many descriptors of this process refer to lab pod `pod`'s netns: the client must hold
/// one per enrolled pod and none once the pod is gone. Counted by the namespace's inode, so
/// tests running in parallel (other namespaces) do not disturb it.
fn netns_fds(fx: &Fixture, pod: &str) -> Result<usize> {
    use std::os::unix::fs::MetadataExt;
    let id = fx.netns_id(pod)?;
    let mut n = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        // stat follows the magic link to the namespace itself, however it was opened; a
        // descriptor closing meanwhile (other tests) simply does not count.
        if std::fs::metadata(entry?.path()).is_ok_and(|m| (m.dev(), m.ino()) == id) {
            n += 1;
        }
    }
    Ok(n)
}

fn served(h: &RecordingHandler) -> Vec<String> {
    h.served()
}

#[test]
fn client_waits_for_the_agent_then_enrols_keeps_and_deletes() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_node("a", Ipv4Addr::new(172, 31, 0, 11), "10.244.1.0/24".parse()?)?;
    lab.add_pod("a", "p1", Ipv4Addr::new(10, 244, 1, 10))?;
    lab.add_pod("a", "p2", Ipv4Addr::new(10, 244, 1, 11))?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ztunnel.sock");
    let handler = RecordingHandler::new();
    // The agent is not there yet: the client retries.
    let client = client::spawn(config(path.clone()), handler.clone())?;
    eventually("a failed connection attempt", || {
        let m = client.metrics().snapshot();
        (m.connect_failures >= 2)
            .then_some(())
            .ok_or(format!("{m:?}"))
    });
    let mut agent = FakeAgent::listen(&path)?;
    agent.accept()?;
    let mut fx = Fixture {
        lab,
        agent,
        client: Some(client),
        handler,
        _dir: dir,
    };

    ensure!(fx.add("uid-1", "p1")? == Ok(()));
    // The ack came after the handler returned: the pod is served already.
    ensure!(served(&fx.handler) == ["uid-1"]);
    ensure!(!fx.metrics().ready, "not ready before the snapshot");
    ensure!(fx.add("uid-2", "p2")? == Ok(()));
    ensure!(fx.agent.snapshot_sent()? == Ok(()));
    let m = fx.metrics();
    ensure!(
        m.ready && m.active_proxy_count == 2 && m.proxies_started == 2,
        "{m:?}"
    );
    let pod = fx.handler.pod("uid-1").context("served")?;
    ensure!(pod.info == info("p1") && pod.netns.id() == fx.netns_id("p1")?);
    drop(pod);

    ensure!(
        netns_fds(&fx, "p1")? == 1,
        "one descriptor per enrolled pod"
    );
    ensure!(fx.agent.del("uid-1")? == Ok(()));
    ensure!(served(&fx.handler) == ["uid-2"]);
    ensure!(
        netns_fds(&fx, "p1")? == 0,
        "a deleted pod's netns is closed"
    );
    // Deletes are idempotent: an unknown uid is acked, and counted.
    ensure!(fx.agent.del("nobody")? == Ok(()));
    let m = fx.metrics();
    ensure!(m.unknown_deletes == 1 && m.proxies_stopped == 1, "{m:?}");

    // keep after snapshot_sent is out of order: error ack, then the client reconnects.
    let ack = fx.agent.keep("uid-2")?;
    ensure!(
        ack.as_ref()
            .is_err_and(|e| e.contains("after snapshot_sent")),
        "{ack:?}"
    );
    fx.agent.expect_hangup()?;
    fx.agent.accept()?;
    ensure!(
        served(&fx.handler) == ["uid-2"],
        "pods survive the reconnect"
    );
    ensure!(fx.metrics().protocol_errors == 1);

    // Stopping the client removes every pod and hands the handler back.
    let handler = fx.client.take().expect("running").stop();
    ensure!(handler.served().is_empty());
    ensure!(netns_fds(&fx, "p2")? == 0, "stopping closes every netns");
    ensure!(handler.calls().last() == Some(&Call::Remove("uid-2".into())));
    Ok(())
}

#[test]
fn agent_restart_keeps_pods_and_the_new_snapshot_reconciles() -> Result<()> {
    let mut fx = Fixture::new(&["p1", "p2", "p3"])?;
    for (uid, pod) in [("u1", "p1"), ("u2", "p2"), ("u3", "p3")] {
        ensure!(fx.add(uid, pod)? == Ok(()));
    }
    ensure!(fx.agent.snapshot_sent()? == Ok(()));
    let calls_before = fx.handler.calls();

    fx.agent.restart()?;
    fx.agent.accept()?;
    ensure!(
        served(&fx.handler) == ["u1", "u2", "u3"],
        "served while the agent restarts"
    );
    ensure!(!fx.metrics().ready, "not ready until the new snapshot");

    // The new agent re-sends u1 (same netns: nothing to do), keeps u2, forgets u3.
    ensure!(fx.add("u1", "p1")? == Ok(()));
    ensure!(fx.agent.keep("u2")? == Ok(()));
    ensure!(fx.agent.snapshot_sent()? == Ok(()));
    ensure!(served(&fx.handler) == ["u1", "u2"]);
    let mut expected = calls_before;
    expected.push(Call::Remove("u3".into()));
    ensure!(fx.handler.calls() == expected, "{:?}", fx.handler.calls());
    let m = fx.metrics();
    ensure!(
        m.ready && m.connections == 2 && m.active_proxy_count == 2,
        "{m:?}"
    );
    Ok(())
}

#[test]
fn agent_vanishing_mid_snapshot_changes_nothing_until_a_full_snapshot() -> Result<()> {
    let mut fx = Fixture::new(&["p1", "p2", "p3"])?;
    for (uid, pod) in [("u1", "p1"), ("u2", "p2"), ("u3", "p3")] {
        ensure!(fx.add(uid, pod)? == Ok(()));
    }
    ensure!(fx.agent.snapshot_sent()? == Ok(()));

    fx.agent.restart()?;
    fx.agent.accept()?;
    ensure!(fx.add("u1", "p1")? == Ok(()));
    // Gone before snapshot_sent: no reconciliation may happen.
    fx.agent.stop();
    fx.agent.restart()?;
    fx.agent.accept()?;
    ensure!(served(&fx.handler) == ["u1", "u2", "u3"]);

    ensure!(fx.add("u2", "p2")? == Ok(()));
    ensure!(fx.agent.snapshot_sent()? == Ok(()));
    ensure!(
        served(&fx.handler) == ["u2"],
        "u1 was not re-sent on this connection"
    );
    ensure!(fx.metrics().connections == 3);
    Ok(())
}

#[test]
fn duplicate_adds_follow_ztunnel() -> Result<()> {
    let mut fx = Fixture::new(&["p1", "p2"])?;
    ensure!(fx.add("u1", "p1")? == Ok(()));
    ensure!(fx.add("u1", "p1")? == Ok(()), "same pod, same netns: acked");
    ensure!(
        fx.handler.calls() == [Call::Add("u1".into())],
        "and nothing redone"
    );
    // Same uid, another netns: the old one is replaced.
    ensure!(fx.add("u1", "p2")? == Ok(()));
    ensure!(
        fx.handler.calls()
            == [
                Call::Add("u1".into()),
                Call::Remove("u1".into()),
                Call::Add("u1".into())
            ]
    );
    ensure!(fx.handler.pod("u1").context("served")?.netns.id() == fx.netns_id("p2")?);
    ensure!(netns_fds(&fx, "p1")? == 0 && netns_fds(&fx, "p2")? == 1);
    Ok(())
}

#[test]
fn refused_pods_are_nacked_retried_and_hold_readiness() -> Result<()> {
    let mut fx = Fixture::new(&["p1", "p2"])?;
    fx.handler.refuse("u2", true);
    ensure!(fx.add("u1", "p1")? == Ok(()));
    let ack = fx.add("u2", "p2")?;
    ensure!(
        ack.as_ref()
            .is_err_and(|e| e.contains("test handler refuses u2")),
        "{ack:?}"
    );
    // The connection goes on.
    ensure!(fx.agent.snapshot_sent()? == Ok(()));
    let m = fx.metrics();
    ensure!(
        !m.ready && m.pending_proxy_count == 1 && m.add_failures >= 1,
        "{m:?}"
    );
    fx.handler.refuse("u2", false);
    eventually("the pending pod to be retried", || {
        let m = fx.metrics();
        (m.ready && m.active_proxy_count == 2)
            .then_some(())
            .ok_or(format!("{m:?}"))
    });
    ensure!(served(&fx.handler) == ["u1", "u2"]);
    Ok(())
}

#[test]
fn hostile_agent_gets_error_acks_and_reconnects_while_pods_stay() -> Result<()> {
    let mut fx = Fixture::new(&["p1", "p2"])?;
    ensure!(fx.add("u1", "p1")? == Ok(()));
    ensure!(fx.agent.snapshot_sent()? == Ok(()));
    let p2 = std::fs::File::open(zring::sys::netns::path(fx.lab.pod("p2").netns().name()))?;
    let (pipe, _pipe_w) = std::io::pipe()?;
    let add = |uid: &str, info: Option<&WorkloadInfo>| -> Vec<u8> {
        use prost::Message;
        use zring::xds::proto::workload::zds as pb;
        pb::WorkloadRequest {
            payload: Some(pb::workload_request::Payload::Add(pb::AddWorkload {
                uid: uid.into(),
                workload_info: info.map(|i| pb::WorkloadInfo {
                    name: i.name.clone(),
                    namespace: i.namespace.clone(),
                    service_account: i.service_account.clone(),
                }),
            })),
        }
        .encode_to_vec()
    };
    let del = {
        use prost::Message;
        use zring::xds::proto::workload::zds as pb;
        pb::WorkloadRequest {
            payload: Some(pb::workload_request::Payload::Del(pb::DelWorkload {
                uid: "u1".into(),
            })),
        }
        .encode_to_vec()
    };
    let i2 = info("p2");
    let cases: Vec<(&str, Vec<u8>, Vec<std::os::fd::BorrowedFd<'_>>, &str)> = vec![
        (
            "add without fd",
            add("u2", Some(&i2)),
            vec![],
            "no netns descriptor",
        ),
        (
            "fd that is a pipe",
            add("u2", Some(&i2)),
            vec![pipe.as_fd()],
            "not a network namespace",
        ),
        (
            "two fds",
            add("u2", Some(&i2)),
            vec![p2.as_fd(), p2.as_fd()],
            "expected exactly one",
        ),
        (
            "no workload_info",
            add("u2", None),
            vec![p2.as_fd()],
            "no workload_info",
        ),
        (
            "empty uid",
            add("", Some(&i2)),
            vec![p2.as_fd()],
            "empty uid",
        ),
        ("garbage", vec![0xff; 16], vec![], "undecodable"),
        ("unknown message", vec![0x78, 0x01], vec![], "no payload"),
        ("fd on a del", del, vec![p2.as_fd()], "expected none"),
        (
            "oversized packet",
            vec![0x0a; 8192],
            vec![],
            "packet larger than",
        ),
    ];
    let n = cases.len() as u64;
    for (what, bytes, fds, needle) in cases {
        fx.agent.send_raw(&bytes, &fds)?;
        let ack = fx.agent.recv_ack().with_context(|| what.to_owned())?;
        ensure!(
            ack.as_ref().is_err_and(|e| e.contains(needle)),
            "{what}: {ack:?}"
        );
        fx.agent.expect_hangup().with_context(|| what.to_owned())?;
        fx.agent.accept().with_context(|| what.to_owned())?;
        ensure!(
            served(&fx.handler) == ["u1"],
            "{what}: the other pod must stay"
        );
    }
    let m = fx.metrics();
    ensure!(m.bad_requests == n, "{m:?}");
    ensure!(m.connections == n + 1, "{m:?}");
    ensure!(
        fx.handler.calls() == [Call::Add("u1".into())],
        "{:?}",
        fx.handler.calls()
    );

    // After all that, a normal snapshot still works.
    ensure!(fx.add("u1", "p1")? == Ok(()));
    ensure!(fx.add("u2", "p2")? == Ok(()));
    ensure!(fx.agent.snapshot_sent()? == Ok(()));
    ensure!(served(&fx.handler) == ["u1", "u2"]);
    ensure!(fx.metrics().ready);
    Ok(())
}

#[test]
fn a_second_snapshot_on_one_connection_is_refused() -> Result<()> {
    let mut fx = Fixture::new(&["p1"])?;
    ensure!(fx.add("u1", "p1")? == Ok(()));
    ensure!(fx.agent.snapshot_sent()? == Ok(()));
    let ack = fx.agent.snapshot_sent()?;
    ensure!(ack.as_ref().is_err_and(|e| e.contains("twice")), "{ack:?}");
    fx.agent.expect_hangup()?;
    fx.agent.accept()?;
    ensure!(served(&fx.handler) == ["u1"]);
    Ok(())
}

//! 15008's limits against clients with valid mesh certificates: no HTTP/2 preface, tunnels
//! without streams, too many connections from one address, a denied identity holding
//! connections, too many streams of one identity, and destinations that never read. Each
//! refusal must be seen by the client as an orderly answer (close_notify, GOAWAY,
//! RST_STREAM REFUSED_STREAM, or a reset before TLS for the connection caps), be counted in
//! zring's metrics, and leave healthy tunnels carrying every byte.
//!
//! Limits are set small through the environment; nothing here asserts a duration: every wait
//! is for a condition.

use super::attack::{self, Attackers, Kind};
use super::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const NO_ERROR: u32 = 0x0;
const SETTINGS_TIMEOUT: u32 = 0x4;
const REFUSED_STREAM: u32 = 0x7;
const OTHER_ID: &str = "spiffe://cluster.local/ns/default/sa/other";
const EVIL_ID: &str = "spiffe://cluster.local/ns/default/sa/evil";

impl Hostile {
    /// TCP from node a to appb's 15008, and TLS as `id`; nothing more.
    fn tls_as(&self, id: &str) -> io::Result<Conn> {
        let tcp =
            self.m.lab.node("a").run(|| {
                TcpStream::connect_timeout(&(APPB, 15008).into(), Duration::from_secs(10))
            })?;
        Conn::handshake(tcp, attack::client_config(&self.m.ca_dir, id))
    }

    /// An HTTP/2 connection as `id` whose preface zring has answered.
    fn h2_as(&self, id: &str) -> io::Result<Conn> {
        let tcp =
            self.m.lab.node("a").run(|| {
                TcpStream::connect_timeout(&(APPB, 15008).into(), Duration::from_secs(10))
            })?;
        let mut conn = Conn::open(tcp, attack::client_config(&self.m.ca_dir, id))?;
        conn.sync()?;
        Ok(conn)
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.m.scrape("b").sum(name, labels)
    }

    fn refused(&self, reason: &str) -> f64 {
        self.metric(
            "zring_hbone_connections_refused_total",
            &[("reason", reason)],
        )
    }

    /// Waits until `name{labels}` on node b reaches `at_least`.
    fn counted(&self, name: &str, labels: &[(&str, &str)], at_least: f64) {
        self.m
            .eventually(&format!("{name}{labels:?} >= {at_least}"), || {
                self.metric(name, labels) >= at_least
            })
            .unwrap();
    }

    /// A fresh tunnel from appa to appb's echo port carries `MIB` both ways.
    fn fresh_tunnel_works(&self, when: &str) {
        let r = self.m.exchange("appa", (APPB, EXCHANGE).into(), MIB, MIB);
        assert!(
            r.is_ok(),
            "a fresh tunnel failed {when}: {r:?}\n{}",
            self.m.logs()
        );
    }
}

use std::io;

/// appb's exchange server port (checksummed both ways, see `lab::traffic`).
const EXCHANGE: u16 = 7100;
/// appb's port that accepts and never reads.
const STALL: u16 = 7101;

fn limited(env: &[(&str, &str)]) -> Hostile {
    let h = hostile(env);
    h.m.serve("appb", EXCHANGE, usize::MAX).unwrap();
    h
}

/// A client that finishes TLS and never sends the preface is closed at the deadline with
/// close_notify (an orderly end, not a reset); one that sends the preface but no SETTINGS
/// gets GOAWAY SETTINGS_TIMEOUT. Both are counted.
#[test]
fn a_client_without_preface_is_closed_and_counted() {
    let mut h = limited(&[("ZRING_HBONE_PREFACE_TIMEOUT", "300ms")]);
    let mut silent = h.tls_as(APPA_ID).unwrap();
    let (goaway, end) = silent.until_closed();
    assert_eq!(goaway, None, "{}", h.m.logs());
    assert_eq!(
        end.kind(),
        io::ErrorKind::UnexpectedEof,
        "{end}\n{}",
        h.m.logs()
    );
    let mut half = h.tls_as(APPA_ID).unwrap();
    half.write(PREFACE).unwrap();
    let (goaway, end) = half.until_closed();
    assert_eq!(
        goaway.as_ref().map(|(code, _)| *code),
        Some(SETTINGS_TIMEOUT),
        "{goaway:?}, then {end}\n{}",
        h.m.logs()
    );
    h.counted(
        "zring_hbone_connections_refused_total",
        &[("reason", "preface_timeout")],
        2.0,
    );
    h.unharmed("after clients without preface");
    h.fresh_tunnel_works("after clients without preface");
}

/// A tunnel that carries no stream is closed with GOAWAY NO_ERROR after the idle timeout,
/// although it answers every ping (keepalive alone would never close it); the bystander, whose
/// tunnel carries a stream all along, is untouched.
#[test]
fn a_tunnel_without_streams_is_closed_after_the_idle_timeout() {
    let mut h = limited(&[("ZRING_HBONE_IDLE_TIMEOUT", "500ms")]);
    let mut conn = h.dial_as_appa();
    // One stream that ends at once (400: not this connection's destination), so the idle
    // clock starts from its end, not from the handshake.
    conn.write(&h2raw::connect(1, "10.244.2.99:80")).unwrap();
    assert_eq!(conn.answer(1), Answer::Status(400), "{}", h.m.logs());
    let mut goaway = None;
    while let Ok(frames) = conn.sync() {
        for f in frames {
            if let Frame::GoAway { code, .. } = f {
                goaway = Some(code);
            }
        }
        #[expect(clippy::disallowed_methods, reason = "a test thread pinging zring")]
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(goaway, Some(NO_ERROR), "{}", h.m.logs());
    h.counted("zring_hbone_connections_closed_idle_total", &[], 1.0);
    h.unharmed("after an idle tunnel was closed");
    h.fresh_tunnel_works("after an idle tunnel was closed");
}

/// Connections from one address beyond its cap are reset before TLS and counted, while a
/// tunnel from another address works; a place freed is taken again.
#[test]
fn connections_beyond_the_peer_cap_are_refused() {
    let mut h = limited(&[
        ("ZRING_CORES", "1"),
        ("ZRING_HBONE_MAX_CONNECTIONS_PER_PEER", "4"),
    ]);
    let mut held: Vec<Conn> = (0..4).map(|_| h.h2_as(APPA_ID).unwrap()).collect();
    let refused = h.h2_as(APPA_ID);
    assert!(
        refused.is_err(),
        "a fifth connection from node a was served"
    );
    h.counted(
        "zring_hbone_connections_refused_total",
        &[("reason", "peer_limit")],
        1.0,
    );
    h.unharmed("with node a at its cap");
    h.fresh_tunnel_works("with node a at its cap");
    for c in &mut held {
        c.sync().expect("a connection within the cap was hurt");
    }
    held.pop();
    h.m.eventually("a freed place to be taken again", || {
        h.h2_as(APPA_ID).is_ok()
    })
    .unwrap();
    assert_eq!(h.refused("connection_limit"), 0.0);
}

/// An identity every policy denies opens connections as fast as it can and answers pings:
/// its address's cap bounds what it holds, every stream it tries is refused (401), the idle
/// timeout closes what it holds, and healthy tunnels work meanwhile.
#[test]
fn a_denied_identity_holding_connections_cannot_exhaust_15008() {
    let mut h = limited(&[
        ("ZRING_CORES", "1"),
        ("ZRING_HBONE_MAX_CONNECTIONS_PER_PEER", "4"),
        ("ZRING_HBONE_MAX_CONNECTIONS", "16"),
        ("ZRING_HBONE_IDLE_TIMEOUT", "1s"),
    ]);
    let deny = format!(
        "{}policies:\n- name: deny-evil\n  namespace: default\n  scope: Namespace\n  action: Deny\n  \
         dryRun: false\n  rules: [[[{{ principals: [!Exact cluster.local/ns/default/sa/evil] }}]]]\n",
        config()
    );
    std::fs::write(&h.m.config, deny).unwrap();
    let authority = format!("{APPB}:{ECHO}");
    let mut stream = 1;
    h.m.eventually("the DENY policy to apply", || {
        let Ok(mut c) = h.h2_as(EVIL_ID) else {
            return false;
        };
        stream += 2;
        c.write(&h2raw::connect(stream, &authority)).is_ok()
            && c.answer(stream) == Answer::Status(401)
    })
    .unwrap();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match h.h2_as(EVIL_ID) {
            Ok(c) => held.push(c),
            Err(_) => refused += 1,
        }
    }
    assert!(held.len() <= 4, "node a holds {} connections", held.len());
    assert!(refused >= 36, "{refused} refused\n{}", h.m.logs());
    for c in &mut held {
        c.write(&h2raw::connect(1, &authority)).unwrap();
        assert_eq!(c.answer(1), Answer::Status(401), "{}", h.m.logs());
    }
    h.unharmed("while a denied identity holds connections");
    h.fresh_tunnel_works("while a denied identity holds connections");
    for mut c in held {
        let (goaway, end) = c.until_closed();
        assert_eq!(
            goaway.as_ref().map(|(code, _)| *code),
            Some(NO_ERROR),
            "{goaway:?}, then {end}\n{}",
            h.m.logs()
        );
    }
    assert!(h.refused("peer_limit") >= 36.0);
    h.counted("zring_hbone_connections_closed_idle_total", &[], 4.0);
    h.unharmed("after the denied identity's connections closed");
}

/// One identity's streams beyond its cap are refused with RST_STREAM REFUSED_STREAM and
/// counted; other identities (the bystander is appa) are unaffected, and a freed place is
/// taken again.
#[test]
fn streams_beyond_the_identity_cap_are_refused() {
    let mut h = limited(&[
        ("ZRING_CORES", "1"),
        ("ZRING_HBONE_MAX_STREAMS_PER_IDENTITY", "3"),
    ]);
    let authority = format!("{APPB}:{ECHO}");
    let mut a = h.h2_as(OTHER_ID).unwrap();
    let mut b = h.h2_as(OTHER_ID).unwrap();
    for s in [1, 3] {
        a.write(&h2raw::connect(s, &authority)).unwrap();
        assert_eq!(a.answer(s), Answer::Status(200), "{}", h.m.logs());
    }
    b.write(&h2raw::connect(1, &authority)).unwrap();
    assert_eq!(b.answer(1), Answer::Status(200), "{}", h.m.logs());
    b.write(&h2raw::connect(3, &authority)).unwrap();
    assert_eq!(b.answer(3), Answer::Reset(REFUSED_STREAM), "{}", h.m.logs());
    h.counted(
        "zring_hbone_streams_refused_total",
        &[("reason", "identity_limit")],
        1.0,
    );
    h.unharmed("with an identity at its stream cap");
    h.fresh_tunnel_works("with an identity at its stream cap");
    // Ending one stream frees its place.
    a.write(&h2raw::rst_stream(1, h2raw::CANCEL)).unwrap();
    let mut next = 5;
    h.m.eventually("a freed stream place to be taken again", || {
        next += 2;
        b.write(&h2raw::connect(next, &authority)).is_ok() && b.answer(next) == Answer::Status(200)
    })
    .unwrap();
}

/// Destinations that never read, fed by clients that push all that flow control allows:
/// their connections stay at the protocol's floor window and reserve nothing from the budget,
/// however much the kernel's buffers took in their first burst, while a healthy transfer's
/// connection, started after them, grows its windows from the budget. Healthy tunnels keep
/// every byte, and the stalled streams' sockets go with their connections.
#[test]
fn stalled_destinations_pin_at_most_the_budget() {
    // 1 MiB: room for a healthy connection to climb a few levels, not for many.
    let mut h = limited(&[("ZRING_CORES", "1"), ("ZRING_HBONE_RECEIVE_BUDGET_MB", "1")]);
    let pod = h.m.lab.pod("appb");
    let stall = pod.run(|| TcpListener::bind(("0.0.0.0", STALL))).unwrap();
    // Accepts and holds every connection, never reading.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in stall.incoming().flatten() {
            held.push(s);
        }
    });
    let budget = h.metric("zring_hbone_receive_budget_bytes", &[]);
    assert_eq!(budget, MIB as f64);
    let granted = |h: &Hostile| {
        h.metric(
            "zring_hbone_receive_window_growths_total",
            &[("result", "granted")],
        )
    };
    let reserved = |h: &Hostile| h.metric("zring_hbone_receive_reserved_bytes", &[]);

    let attackers = Attackers::start(
        h.m.lab.node("a"),
        attack::client_config(&h.m.ca_dir, OTHER_ID),
    );
    let stalled = Kind::Stalled {
        authority: format!("{APPB}:{STALL}"),
    };
    const N: u64 = 12;
    attackers.add(&stalled, (APPB, 15008).into(), N as usize);
    h.m.eventually("every stalled stream to be answered", || {
        attackers.get(|s| &s.streams) == N
    })
    .unwrap();
    // Wait until the pushes stop: every window the stalled streams hold is full, and the
    // kernel's buffers behind them.
    attackers
        .until_still(Duration::from_secs(1), Duration::from_secs(120))
        .expect("the stalled streams to stop moving");
    let fds_under_attack = std::fs::read_dir(format!("/proc/{}/fd", h.m.zring("b").pid()))
        .unwrap()
        .count();
    assert_eq!(
        attackers.get(|s| &s.ended),
        0,
        "a stalled client was cut off\n{}",
        h.m.logs()
    );
    let pushed = attackers.get(|s| &s.pushed);
    let denied = h.metric(
        "zring_hbone_receive_window_growths_total",
        &[("result", "denied")],
    );
    eprintln!(
        "stalled: {N} streams pushed {pushed} bytes; {} of {budget} reserved; {} granted, {denied} denied",
        reserved(&h),
        granted(&h)
    );
    assert!(pushed > 0);
    // However much the kernel took, no stalled connection proved it drains: none grew, none
    // holds a reservation (the bystander's tunnel carried a few KiB only).
    assert_eq!(granted(&h), 0.0, "{}", h.m.logs());
    assert_eq!(reserved(&h), 0.0, "{}", h.m.logs());
    h.unharmed("with stalled destinations");
    h.fresh_tunnel_works("with stalled destinations");
    // A healthy transfer while the stalled connections are held: every byte, checksummed, and
    // its connection climbs from the floor, within the budget.
    h.m.must_exchange("appa", (APPB, EXCHANGE).into(), 16 * MIB, 16 * MIB);
    assert!(granted(&h) >= 1.0, "{}", h.m.logs());
    let r = reserved(&h);
    assert!(r > 0.0 && r <= budget, "{r} reserved, budget {budget}");
    drop(attackers);
    h.m.eventually("the attackers' connections to close", || {
        h.metric("zring_hbone_connections_open", &[]) <= 2.0
    })
    .unwrap();
    // Their streams went with their connections, though the destination still stalls: no
    // socket toward it is left behind (12 attackers, 12 sockets to the stalled port).
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", h.m.zring("b").pid()))
            .unwrap()
            .count()
    };
    h.m.eventually("the stalled streams' sockets to close", || {
        fds() + 12 <= fds_under_attack
    })
    .unwrap();
    // The healthy connection keeps its reservation, never above the budget.
    assert!(reserved(&h) <= budget);
}

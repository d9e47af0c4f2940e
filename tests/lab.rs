//! Network-namespace tests of `zring::lab`: the two-node topology, the node capture rules
//! (proved with a stand-in transparent proxy written here with std::net + socket2), processes
//! and logs, and cleanup.
//!
//! Runs as root under `cargo test`, each test on its own thread with its own `Lab`; without
//! root (or without `ip`/`nft`) every test fails with `Lab::new`'s error, never skips.

#![expect(
    clippy::disallowed_methods,
    reason = "test threads poll with a deadline; no core runs here"
)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use zring::lab::{
    INBOUND_HBONE_PORT, INBOUND_PLAINTEXT_PORT, Lab, LabError, Netns, OUTBOUND_PORT, ZRING_MARK,
};

/// Upper bound for any single network step; the happy path takes milliseconds.
const STEP: Duration = Duration::from_secs(5);

#[test]
fn pods_reach_each_other_without_redirection() -> Result<()> {
    let root_before = root_namespace_state()?;
    let lab = Lab::seed()?;
    let (appa, appb) = (lab.pod("appa"), lab.pod("appb"));
    assert_eq!(appa.ip(), Ipv4Addr::new(10, 244, 1, 8));
    assert_eq!(appb.ip(), Ipv4Addr::new(10, 244, 2, 4));
    assert_eq!(lab.node("a").underlay_ip(), Ipv4Addr::new(172, 31, 0, 11));
    assert_eq!(lab.node("b").pod_cidr().to_string(), "10.244.2.0/24");

    let listener = appb.run(|| TcpListener::bind("0.0.0.0:80"))?;
    let dst = SocketAddr::new(appb.ip().into(), 80);
    let (reply, peer) = thread::scope(|s| -> Result<_> {
        let server = s.spawn(|| echo_once(&listener));
        let reply = appa.run(move || exchange(dst, b"hello across the underlay"))?;
        let peer = server.join().expect("server thread")?;
        Ok((reply, peer))
    })?;
    assert_eq!(reply, b"hello across the underlay");
    assert_eq!(
        peer.ip(),
        IpAddr::from(appa.ip()),
        "appb must see appa's own IP"
    );

    // The lab touched nothing in the root namespace.
    assert_eq!(root_namespace_state()?, root_before);
    Ok(())
}

#[test]
fn redirection_captures_spoofs_and_fails_closed() -> Result<()> {
    let lab = Lab::seed()?;
    let (a, b) = (lab.node("a"), lab.node("b"));
    let (appa, appb) = (lab.pod("appa"), lab.pod("appb"));
    lab.redirect(a)?;
    lab.redirect(b)?;
    lab.redirect(a)?; // re-applying replaces the table and keeps one policy rule
    // What zring does from its snapshot: appa and appb are the enrolled pods of their nodes.
    lab.enroll(a, &[appa.ip()])?;
    lab.enroll(b, &[appb.ip()])?;
    let rules = a.ip(&["rule", "show"])?;
    ensure!(
        rules.matches("fwmark 0x111 lookup 133").count() == 1,
        "ip rules:\n{rules}"
    );

    let client_ip = IpAddr::from(appa.ip());
    let dst = SocketAddr::new(appb.ip().into(), 80);
    let server = appb.run(|| TcpListener::bind("0.0.0.0:80"))?;

    // Nothing listens on 15001 yet: the capture rule must reset the connection, not let it
    // bypass the mesh and reach appb directly.
    let early = appa.run(move || TcpStream::connect_timeout(&dst, STEP));
    match early {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => bail!("with no proxy listening, appa -> {dst} must be refused, got {other:?}"),
    }

    // Stand-ins for zring on both nodes, on all three ports as zring binds them.
    let za = a.run(ZringListeners::bind)?;
    let zb = b.run(ZringListeners::bind)?;

    // appa -> appb:80, captured on node a (15001), forwarded spoofing appa, captured on node b
    // (15006), forwarded spoofing appa again, answered by appb.
    let (reply, seen_a, seen_b, peer) = thread::scope(|s| -> Result<_> {
        let proxy_a = s.spawn(|| proxy_once(&za.outbound, a));
        let proxy_b = s.spawn(|| proxy_once(&zb.plaintext, b));
        let echo = s.spawn(|| echo_once(&server));
        let reply = appa.run(move || exchange(dst, b"through two zrings"));
        let seen_a = proxy_a
            .join()
            .expect("node a proxy")
            .context("node a proxy")?;
        let seen_b = proxy_b
            .join()
            .expect("node b proxy")
            .context("node b proxy")?;
        let peer = echo.join().expect("appb server").context("appb server")?;
        Ok((reply?, seen_a, seen_b, peer))
    })?;
    assert_eq!(reply, b"through two zrings");
    assert_eq!(
        seen_a.orig_dst, dst,
        "node a's proxy must see the original destination"
    );
    assert_eq!(seen_a.client.ip(), client_ip);
    assert_eq!(
        seen_b.orig_dst, dst,
        "node b's proxy must see the original destination"
    );
    assert_eq!(
        seen_b.client.ip(),
        client_ip,
        "node b must see the spoofed client"
    );
    assert_eq!(peer.ip(), client_ip, "appb must see appa's IP");

    // zring on node a dials appb:15008 (HBONE) spoofing appa: node b's 15008 listener gets it
    // with the destination intact, and the answer finds its way back to node a's socket.
    let hbone_dst = SocketAddr::new(appb.ip().into(), INBOUND_HBONE_PORT);
    let (reply, (local, peer)) = thread::scope(|s| -> Result<_> {
        let hbone = s.spawn(|| -> Result<_> {
            let (mut conn, peer) = accept_within(&zb.hbone)?;
            let local = conn.local_addr()?;
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf)?;
            conn.write_all(&buf)?;
            Ok((local, peer))
        });
        let reply = a.run(move || -> Result<Vec<u8>> {
            let mut up = spoofed_connect(client_ip, hbone_dst)?;
            up.write_all(b"hbone")?;
            let mut buf = vec![0u8; 5];
            up.read_exact(&mut buf)?;
            Ok(buf)
        });
        let seen = hbone
            .join()
            .expect("node b hbone")
            .context("node b 15008")?;
        Ok((reply?, seen))
    })?;
    assert_eq!(reply, b"hbone");
    assert_eq!(local, hbone_dst);
    assert_eq!(peer.ip(), client_ip);

    // A pod dialing a remote :15008 is outbound traffic: node a's 15001 gets it, never node a's
    // own 15008 listener (which a wildcard `socket` match would pick).
    let seen = thread::scope(|s| -> Result<_> {
        let out =
            s.spawn(|| -> Result<SocketAddr> { Ok(accept_within(&za.outbound)?.0.local_addr()?) });
        let conn = appa.run(move || TcpStream::connect_timeout(&hbone_dst, STEP))?;
        let seen = out.join().expect("node a outbound")?;
        drop(conn);
        Ok(seen)
    })?;
    assert_eq!(seen, hbone_dst);

    // And from outside, a pod's :15001 is inbound traffic: node b's 15006 gets it, never node
    // b's own outbound listener.
    let odd_dst = SocketAddr::new(appb.ip().into(), OUTBOUND_PORT);
    let seen = thread::scope(|s| -> Result<_> {
        let inbound =
            s.spawn(|| -> Result<SocketAddr> { Ok(accept_within(&zb.plaintext)?.0.local_addr()?) });
        let conn = a.run(move || spoofed_connect(client_ip, odd_dst))?;
        let seen = inbound.join().expect("node b inbound")?;
        drop(conn);
        Ok(seen)
    })?;
    assert_eq!(seen, odd_dst);

    // No listener saw a connection it should not have.
    for (node, listener) in [("a", &za.plaintext), ("a", &za.hbone), ("b", &zb.outbound)] {
        assert_idle(listener).with_context(|| format!("node {node}"))?;
    }

    // Every rule matched the traffic it exists for.
    let expect = [
        (
            "a",
            &[
                "zring-conn",
                "reply-to-zring",
                "captured-flow",
                "outbound",
                "outbound-closed",
            ][..],
        ),
        (
            "b",
            &[
                "zring-conn",
                "reply-to-zring",
                "captured-flow",
                "inbound-plaintext",
                "inbound-hbone",
            ][..],
        ),
    ];
    for (node, rules) in expect {
        let counters = lab.rule_counters(lab.node(node))?;
        for rule in rules {
            let hit = counters
                .iter()
                .find(|c| c.rule == *rule)
                .map_or(0, |c| c.packets);
            ensure!(
                hit > 0,
                "rule {rule} on node {node} matched nothing: {counters:#?}"
            );
        }
    }
    Ok(())
}

#[test]
fn processes_run_inside_their_namespace_and_log() -> Result<()> {
    let lab = Lab::seed()?;
    let appa = lab.pod("appa");
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "ip -4 -o addr show dev eth0; echo \"ready $ZR_LAB_TEST\"; exec sleep 600",
    ])
    .env("ZR_LAB_TEST", "env-ok");
    let p = lab.spawn_process(appa, cmd)?;
    p.wait_for_log("ready env-ok", STEP)?;
    let log = p.log();
    ensure!(
        log.contains("10.244.1.8/32"),
        "process must run in appa's namespace:\n{log}"
    );
    ensure!(p.log_path().starts_with(lab.dir()));

    let err = p
        .wait_for_log("never printed", Duration::from_millis(100))
        .unwrap_err();
    ensure!(matches!(err, LabError::Timeout { .. }), "{err}");
    ensure!(
        err.to_string().contains("ready env-ok"),
        "timeout error must show the log tail: {err}"
    );

    p.signal(libc::SIGTERM)?;
    let status = p.wait_exit(STEP)?;
    ensure!(!status.success(), "sleep killed by SIGTERM: {status}");

    let mut quits = Command::new("sh");
    quits.args(["-c", "echo going away; exit 3"]);
    let q = lab.spawn_process(lab.node("b"), quits)?;
    let err = q.wait_for_log("never printed", STEP).unwrap_err();
    ensure!(
        matches!(err, LabError::Exited { .. }),
        "an exited process must fail fast: {err}"
    );
    ensure!(err.to_string().contains("going away"), "{err}");
    Ok(())
}

#[test]
fn lab_cleans_up_on_drop_and_on_panic() -> Result<()> {
    let (names, pid) = {
        let lab = Lab::seed()?;
        let mut sleeper = Command::new("sleep");
        sleeper.arg("600");
        let p = lab.spawn_process(lab.node("a"), sleeper)?;
        let names = lab.namespaces();
        ensure!(names.len() == 5, "underlay + 2 nodes + 2 pods: {names:?}");
        let listed = netns_list()?;
        ensure!(
            names.iter().all(|n| listed.contains(n)),
            "{names:?} not all in {listed:?}"
        );
        (names, p.pid())
    };
    let listed = netns_list()?;
    ensure!(
        names.iter().all(|n| !listed.contains(n)),
        "left behind: {listed:?}"
    );
    ensure!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} survived"
    );

    let seen = Arc::new(Mutex::new(Vec::new()));
    let result = std::panic::catch_unwind({
        let seen = seen.clone();
        move || {
            let lab = Lab::seed().expect("lab");
            *seen.lock().unwrap() = lab.namespaces();
            panic!("deliberate panic: the lab must still clean up");
        }
    });
    ensure!(result.is_err());
    let names = seen.lock().unwrap().clone();
    ensure!(!names.is_empty());
    let listed = netns_list()?;
    ensure!(
        names.iter().all(|n| !listed.contains(n)),
        "left behind after panic: {listed:?}"
    );
    Ok(())
}

#[test]
fn new_lab_sweeps_namespaces_of_dead_processes() -> Result<()> {
    // Stand-in for a test run that was killed with a lab up: an "owner" process, a namespace
    // named after it with a process inside, then the owner dies. While the owner lives, no
    // other lab (parallel tests, other test processes) may sweep the half-built namespace.
    let owner = Command::new("sleep").arg("600").spawn()?;
    let stale = format!("zr{}-0-stale", owner.id());
    run("ip", &["netns", "add", &stale])?;
    let mut left = Leftovers {
        name: stale.clone(),
        children: vec![owner],
    };
    let squatter = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "600"])
        .spawn()?;
    left.children.push(squatter);
    let deadline = Instant::now() + STEP;
    while run("ip", &["netns", "pids", &stale])?.trim().is_empty() {
        ensure!(Instant::now() < deadline, "sleep never entered {stale}");
        thread::sleep(Duration::from_millis(5));
    }
    left.children[0].kill()?;
    left.children[0].wait()?;

    let _lab = Lab::new()?;
    ensure!(
        !netns_list()?.contains(&stale),
        "Lab::new left the stale namespace {stale}"
    );
    let deadline = Instant::now() + STEP;
    while left.children[1].try_wait()?.is_none() {
        ensure!(
            Instant::now() < deadline,
            "Lab::new left the process inside {stale} running"
        );
        thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Whatever a failed sweep test leaves behind is removed here.
struct Leftovers {
    name: String,
    children: Vec<std::process::Child>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

// ---- stand-in zring: std::net + socket2, no unsafe ----

/// zring's three transparent listeners, bound inside a node.
struct ZringListeners {
    outbound: TcpListener,
    plaintext: TcpListener,
    hbone: TcpListener,
}

impl ZringListeners {
    fn bind() -> Result<Self> {
        Ok(ZringListeners {
            outbound: transparent_listener(OUTBOUND_PORT)?,
            plaintext: transparent_listener(INBOUND_PLAINTEXT_PORT)?,
            hbone: transparent_listener(INBOUND_HBONE_PORT)?,
        })
    }
}

fn transparent_listener(port: u16) -> Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_ip_transparent(true)?;
    socket.bind(&SockAddr::from(SocketAddr::from(([0, 0, 0, 0], port))))?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// A zring-style upstream: own mark, bound to the client's IP (not ours) with IP_TRANSPARENT.
fn spoofed_connect(src: IpAddr, dst: SocketAddr) -> Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_ip_transparent(true)?;
    socket.set_mark(ZRING_MARK)?;
    socket.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
    socket
        .connect_timeout(&SockAddr::from(dst), STEP)
        .with_context(|| format!("spoofed connect {src} -> {dst}"))?;
    let stream: TcpStream = socket.into();
    with_timeouts(&stream)?;
    Ok(stream)
}

/// What a proxy learned from one accepted connection.
#[derive(Debug)]
struct Seen {
    client: SocketAddr,
    orig_dst: SocketAddr,
}

/// Accepts one captured connection and relays it to its original destination, spoofing the
/// client, from inside `node`.
fn proxy_once(listener: &TcpListener, node: &Netns) -> Result<Seen> {
    let (down, client) = accept_within(listener)?;
    let orig_dst = down.local_addr()?;
    let up = node.run(move || spoofed_connect(client.ip(), orig_dst))?;
    thread::scope(|s| -> Result<()> {
        let to_up = s.spawn(|| pipe(&down, &up));
        pipe(&up, &down)?;
        to_up.join().expect("relay thread")
    })?;
    Ok(Seen { client, orig_dst })
}

/// Copies `from` to `to` until end of stream, then half-closes `to`.
fn pipe(mut from: &TcpStream, mut to: &TcpStream) -> Result<()> {
    io::copy(&mut from, &mut to)?;
    to.shutdown(Shutdown::Write)?;
    Ok(())
}

/// Accepts one connection, echoes it to end of stream, returns the client's address.
fn echo_once(listener: &TcpListener) -> Result<SocketAddr> {
    let (conn, peer) = accept_within(listener)?;
    pipe(&conn, &conn)?;
    Ok(peer)
}

/// Connects, sends `payload`, half-closes, returns everything read back.
fn exchange(dst: SocketAddr, payload: &[u8]) -> Result<Vec<u8>> {
    let mut conn =
        TcpStream::connect_timeout(&dst, STEP).with_context(|| format!("connect {dst}"))?;
    with_timeouts(&conn)?;
    conn.write_all(payload)?;
    conn.shutdown(Shutdown::Write)?;
    let mut back = Vec::new();
    conn.read_to_end(&mut back)?;
    Ok(back)
}

/// `accept` with a deadline, so a broken rule fails the test instead of hanging it.
fn accept_within(listener: &TcpListener) -> Result<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + STEP;
    let accepted = loop {
        match listener.accept() {
            Ok(pair) => break pair,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                bail!(
                    "nothing arrived at {} within {STEP:?}",
                    listener.local_addr()?
                )
            }
            Err(e) => return Err(e.into()),
        }
    };
    accepted.0.set_nonblocking(false)?;
    with_timeouts(&accepted.0)?;
    Ok(accepted)
}

fn assert_idle(listener: &TcpListener) -> Result<()> {
    listener.set_nonblocking(true)?;
    match listener.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Ok((_, peer)) => bail!(
            "{} got an unexpected connection from {peer}",
            listener.local_addr()?
        ),
        Err(e) => Err(e.into()),
    }
}

fn with_timeouts(conn: &TcpStream) -> io::Result<()> {
    conn.set_read_timeout(Some(STEP))?;
    conn.set_write_timeout(Some(STEP))
}

/// `zring redirect apply` (what the DaemonSet runs on a node) installs exactly what the lab
/// installs, keeps one policy rule when applied twice, and `remove` takes it all away.
#[test]
fn zring_redirect_installs_the_lab_ruleset_and_removes_it() -> Result<()> {
    let lab = Lab::seed()?;
    let (a, b) = (lab.node("a"), lab.node("b"));
    lab.redirect(b)?;
    let zring = |action: &str| -> Result<()> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zring"));
        cmd.args(["redirect", action])
            .env("ZRING_POD_CIDRS", a.pod_cidr().to_string())
            .env("ZRING_POD_INTERFACES", "zp*");
        let p = lab.spawn_process(a, cmd)?;
        let status = p.wait_exit(STEP * 10)?;
        ensure!(status.success(), "zring redirect {action}: {}", p.log());
        Ok(())
    };
    zring("apply")?;
    zring("apply")?;
    let listing = |n: &Netns| {
        run(
            "ip",
            &[
                "netns",
                "exec",
                n.name(),
                "nft",
                "list",
                "table",
                "ip",
                "zring",
            ],
        )
    };
    // Node b's table came from the lab for its own CIDR: the same text once a's CIDR is put in.
    let from_lab = listing(b)?.replace(&b.pod_cidr().to_string(), &a.pod_cidr().to_string());
    ensure!(
        listing(a)? == from_lab,
        "zring redirect:\n{}\nlab:\n{from_lab}",
        listing(a)?
    );
    let rules = a.ip(&["rule", "show"])?;
    ensure!(
        rules.matches("fwmark 0x111 lookup 133").count() == 1,
        "{rules}"
    );
    ensure!(
        a.ip(&["route", "show", "table", "133"])?
            .contains("local default dev lo")
    );

    zring("remove")?;
    ensure!(listing(a).is_err(), "the table is gone");
    ensure!(!a.ip(&["rule", "show"])?.contains("lookup 133"));
    Ok(())
}

// ---- looking at the host ----

fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output()?;
    ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn netns_list() -> Result<Vec<String>> {
    Ok(run("ip", &["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Links, routes and policy rules of the root namespace (which the lab must never change).
fn root_namespace_state() -> Result<String> {
    let links: Vec<String> = run("ip", &["-o", "link", "show"])?
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_owned()))
        .collect();
    Ok(format!(
        "links {links:?}\nroutes\n{}rules\n{}",
        run("ip", &["route", "show", "table", "all"])?,
        run("ip", &["rule", "show"])?
    ))
}

//! Floods that end the HTTP/2 connection with GOAWAY ENHANCE_YOUR_CALM (a CONTINUATION flood,
//! rapid reset), and resets that must cancel zring's pending connects to the pod.

use super::*;

/// A header block that never ends (CONTINUATION after CONTINUATION, no END_HEADERS) ends the
/// connection with GOAWAY ENHANCE_YOUR_CALM long before memory or CPU matter.
#[test]
fn continuation_flood_ends_the_connection() {
    let mut h = hostile(&[]);
    let mut conn = h.dial_as_appa();
    let authority = format!("{APPB}:{ECHO}");
    let mut flood = h2raw::frame(
        h2raw::HEADERS,
        0,
        1,
        &h2raw::block(&[(":method", "CONNECT"), (":authority", authority.as_str())]),
    );
    let one = h2raw::frame(h2raw::CONTINUATION, 0, 1, b"");
    for _ in 0..10_000 {
        flood.extend_from_slice(&one);
    }
    // zring may close while we still write: what it answered is what counts.
    let _ = conn.write(&flood);
    let (goaway, end) = conn.until_closed();
    assert_eq!(
        goaway.as_ref().map(|(code, _)| *code),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{goaway:?}, then {end}\n{}",
        h.m.logs()
    );
    h.logged("b", "HBONE connection refused", 1);
    assert_eq!(h.connects(), 1, "only the bystander's\n{}", h.m.logs());
    h.m.eventually("the refusal to be counted", || {
        h.m.scrape("b").sum(
            "zring_hbone_connections_refused_total",
            &[("reason", "http2")],
        ) >= 1.0
    })
    .unwrap();
    h.unharmed("after a CONTINUATION flood");
}

/// Streams opened and reset at once, 1000 in one burst (the "rapid reset" attack): zring ends
/// the connection with GOAWAY ENHANCE_YOUR_CALM instead of working through them.
#[test]
fn reset_flood_ends_the_connection() {
    let mut h = hostile(&[]);
    let mut conn = h.dial_as_appa();
    let authority = format!("{APPB}:{ECHO}");
    let before = h.echoed.load(Ordering::SeqCst);
    let mut flood = Vec::new();
    for i in 0..1000u32 {
        let stream = 1 + 2 * i;
        flood.extend(h2raw::connect(stream, &authority));
        flood.extend(h2raw::rst_stream(stream, h2raw::CANCEL));
    }
    let _ = conn.write(&flood);
    let (goaway, end) = conn.until_closed();
    assert_eq!(
        goaway.as_ref().map(|(code, _)| *code),
        Some(h2raw::ENHANCE_YOUR_CALM),
        "{goaway:?}, then {end}\n{}",
        h.m.logs()
    );
    h.logged("b", "HBONE connection refused", 1);
    let reached = h.echoed.load(Ordering::SeqCst) - before;
    assert!(
        reached <= 100,
        "{reached} of 1000 reset streams reached appb\n{}",
        h.m.logs()
    );
    h.unharmed("after a reset flood");
}

/// Streams reset one by one after zring accepted them, while zring's connect to the pod is
/// stuck (the pod's accept queue is full, so its SYNs go unanswered): each reset must cancel
/// that connect. Otherwise every reset stream would leave a socket pending until the connect
/// timeout, without bound, since a reset stream no longer counts against the 200-stream
/// limit. 300 streams, then zring's open descriptors must be back near where they started.
#[test]
fn reset_streams_cancel_their_pending_connects() {
    const STUCK: u16 = 7001;
    // Long enough that nothing times out on its own during the test.
    let mut h = hostile(&[("ZRING_CONNECT_TIMEOUT_MS", "120000")]);
    let pod = h.m.lab.pod("appb");
    let _queue_full = pod.run(|| {
        let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        l.set_reuse_address(true).unwrap();
        l.bind(&SocketAddr::from((APPB, STUCK)).into()).unwrap();
        l.listen(0).unwrap();
        // Fill the accept queue from inside the pod (not captured), until a connect stalls.
        let mut fillers = Vec::new();
        loop {
            match TcpStream::connect_timeout(&(APPB, STUCK).into(), Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => break,
            }
            assert!(fillers.len() < 16, "the accept queue never fills");
        }
        (l, fillers)
    });
    let fds = |h: &Hostile| {
        std::fs::read_dir(format!("/proc/{}/fd", h.m.zring("b").pid()))
            .unwrap()
            .count()
    };
    let mut conn = h.dial_as_appa();
    let baseline = fds(&h);
    let authority = format!("{APPB}:{STUCK}");
    for i in 0..300u32 {
        let stream = 1 + 2 * i;
        // Wait until zring has read the request (and accepted the stream) before resetting.
        let r = conn
            .write(&h2raw::connect(stream, &authority))
            .and_then(|()| conn.sync())
            .and_then(|_| conn.write(&h2raw::rst_stream(stream, h2raw::CANCEL)));
        if let Err(e) = r {
            panic!("stream {stream}: {e}\n{}", h.m.logs());
        }
    }
    conn.sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = fds(&h);
    while now > baseline + 20 {
        assert!(
            Instant::now() < deadline,
            "zring on b holds {now} descriptors, {baseline} before 300 reset streams\n{}",
            h.m.logs()
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "a test thread polling a condition"
        )]
        std::thread::sleep(Duration::from_millis(20));
        now = fds(&h);
    }
    // The connection itself is fine: a CONNECT to the echo port still works on it.
    let good = 1 + 2 * 300;
    conn.write(&h2raw::connect(good, &format!("{APPB}:{ECHO}")))
        .unwrap();
    assert_eq!(conn.answer(good), Answer::Status(200), "{}", h.m.logs());
    h.unharmed("after reset streams");
}

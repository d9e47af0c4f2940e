//! Requests zring refuses one HTTP/2 stream at a time while the connection carries on: malformed
//! CONNECTs, bytes sent before the answer, and header blocks above the 16 KiB limit.

use super::*;

/// Requests zring must refuse one stream at a time, on one connection that keeps working:
/// each gets its answer, and a good CONNECT on the same connection still tunnels.
#[test]
fn malformed_connect_requests_are_refused_per_stream() {
    let mut h = hostile(&[]);
    let mut conn = h.dial_as_appa();
    let appb_echo = format!("{APPB}:{ECHO}");
    /// What the case is, its header fields, and zring's answer.
    type Case = (&'static str, Vec<(&'static str, String)>, Answer);
    let cases: Vec<Case> = vec![
        (
            "missing :authority",
            vec![(":method", "CONNECT".into())],
            Answer::Status(400),
        ),
        (
            "port 0",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("{APPB}:0")),
            ],
            Answer::Status(400),
        ),
        (
            "port above 65535",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("{APPB}:65536")),
            ],
            Answer::Status(400),
        ),
        (
            "named port",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("{APPB}:http")),
            ],
            Answer::Status(400),
        ),
        (
            "host name",
            vec![
                (":method", "CONNECT".into()),
                (":authority", "appb.default.svc.cluster.local:7000".into()),
            ],
            Answer::Status(400),
        ),
        (
            "GET",
            vec![
                (":method", "GET".into()),
                (":scheme", "https".into()),
                (":authority", appb_echo.clone()),
                (":path", "/".into()),
            ],
            Answer::Status(400),
        ),
        (
            "POST",
            vec![
                (":method", "POST".into()),
                (":scheme", "https".into()),
                (":authority", appb_echo.clone()),
                (":path", "/upload".into()),
            ],
            Answer::Status(400),
        ),
        (
            "CONNECT with a :path",
            vec![
                (":method", "CONNECT".into()),
                (":authority", appb_echo.clone()),
                (":path", "/".into()),
            ],
            Answer::Reset(h2raw::PROTOCOL_ERROR),
        ),
        (
            "no :method",
            vec![(":authority", appb_echo.clone())],
            Answer::Reset(h2raw::PROTOCOL_ERROR),
        ),
        (
            "another pod's IP",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("10.244.2.99:{ECHO}")),
            ],
            Answer::Status(400),
        ),
        (
            // Through the tunnel to zring's own HBONE port: zring's connection is marked, so
            // it reaches the pod's own (closed) port, not zring again.
            "zring's own port",
            vec![
                (":method", "CONNECT".into()),
                (":authority", format!("{APPB}:15008")),
            ],
            Answer::Status(503),
        ),
    ];
    let mut stream = 1;
    for (what, fields, want) in &cases {
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        conn.write(&h2raw::headers(stream, &fields, false)).unwrap();
        let got = conn.answer(stream);
        assert_eq!(&got, want, "{what}\n{}", h.m.logs());
        stream += 2;
    }
    h.logged("b", "bad CONNECT request: method is not CONNECT", 2);
    h.logged("b", "bad CONNECT request: authority is not ip:port", 5);
    h.logged("b", "target IP is not the connection's destination", 1);
    assert!(
        !h.m.log("b").contains("HBONE TLS handshake"),
        "a CONNECT to 15008 looped back into zring\n{}",
        h.m.logs()
    );

    // Bytes before the 200 on a request that is refused: they go nowhere.
    let before = h.echoed.load(Ordering::SeqCst);
    let mut early = h2raw::connect(stream, &format!("10.244.2.99:{ECHO}"));
    early.extend(h2raw::data(stream, b"early bytes", false));
    conn.write(&early).unwrap();
    assert_eq!(conn.answer(stream), Answer::Status(400));
    stream += 2;
    // Bytes before the 200 on a request that is accepted: held back by flow control until
    // the pod is connected, then delivered once and in order.
    let mut early = h2raw::connect(stream, &appb_echo);
    early.extend(h2raw::data(stream, b"early ", false));
    early.extend(h2raw::data(stream, b"bytes", false));
    conn.write(&early).unwrap();
    assert_eq!(conn.answer(stream), Answer::Status(200));
    assert_eq!(echoed_back(&mut conn, stream, 11), b"early bytes");
    assert_eq!(
        h.echoed.load(Ordering::SeqCst),
        before + 1,
        "the refused request reached appb"
    );
    // The connection is still good for new streams.
    let good = stream + 2;
    conn.write(&h2raw::connect(good, &appb_echo)).unwrap();
    assert_eq!(conn.answer(good), Answer::Status(200));
    conn.write(&h2raw::data(good, b"still here", false))
        .unwrap();
    assert_eq!(echoed_back(&mut conn, good, 10), b"still here");
    h.unharmed("after malformed requests");
}

/// Reads DATA on `stream` until `n` bytes have come back.
fn echoed_back(conn: &mut Conn, stream: u32, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match conn.read_frame().unwrap() {
            Frame::Data {
                stream: s, payload, ..
            } if s == stream => got.extend(payload),
            Frame::Reset { stream: s, code } if s == stream => {
                panic!("stream {s} reset ({code:#x}) after {got:?}")
            }
            Frame::GoAway { code, .. } => panic!("GOAWAY {code:#x} after {got:?}"),
            _ => {}
        }
    }
    got
}

/// Header blocks above zring's 16 KiB limit, in one frame or spread over CONTINUATION
/// frames, get 431 on their stream while the connection carries on; a block far above it
/// ends the connection with GOAWAY ENHANCE_YOUR_CALM.
#[test]
fn oversized_headers_get_431() {
    let mut h = hostile(&[]);
    let mut conn = h.dial_as_appa();
    let authority = format!("{APPB}:{ECHO}");
    let big = "x".repeat(20 << 10);
    let request = [
        (":method", "CONNECT"),
        (":authority", authority.as_str()),
        ("x-pad", big.as_str()),
    ];
    conn.write(&h2raw::headers(1, &request, false)).unwrap();
    assert_eq!(conn.answer(1), Answer::Status(431), "{}", h.m.logs());

    // 25 KiB in a HEADERS frame and five CONTINUATION frames.
    let block = h2raw::block(&request);
    let chunks: Vec<&[u8]> = block.chunks(block.len().div_ceil(6)).collect();
    let mut frames = h2raw::frame(h2raw::HEADERS, 0, 3, chunks[0]);
    for (i, chunk) in chunks[1..].iter().enumerate() {
        let last = i == chunks.len() - 2;
        let flags = if last { h2raw::END_HEADERS } else { 0 };
        frames.extend(h2raw::frame(h2raw::CONTINUATION, flags, 3, chunk));
    }
    conn.write(&frames).unwrap();
    assert_eq!(conn.answer(3), Answer::Status(431), "{}", h.m.logs());

    conn.write(&h2raw::connect(5, &authority)).unwrap();
    assert_eq!(conn.answer(5), Answer::Status(200), "{}", h.m.logs());

    // 900 KiB in one frame (zring's frames may be 1 MiB) is far past the limit: h2 treats it
    // as abuse and ends the connection rather than decoding it.
    let huge = "y".repeat(900 << 10);
    let request = [
        (":method", "CONNECT"),
        (":authority", authority.as_str()),
        ("x-pad", huge.as_str()),
    ];
    conn.write(&h2raw::headers(7, &request, false)).unwrap();
    assert_eq!(
        conn.answer(7),
        Answer::GoAway {
            code: h2raw::ENHANCE_YOUR_CALM,
            debug: "header_list_way_too_large".into()
        },
        "{}",
        h.m.logs()
    );
    h.logged("b", "HBONE connection refused", 1);
    let mut again = h.dial_as_appa();
    again.write(&h2raw::connect(1, &authority)).unwrap();
    assert_eq!(again.answer(1), Answer::Status(200), "{}", h.m.logs());
    h.unharmed("after oversized headers");
}

//! Seeds for `hbone_server`: client HTTP/2 frames after the preface, from a plain CONNECT with
//! data to CONTINUATION and reset floods, written with the hostile tests' frame writer.

use super::Seeds;
use super::h2raw::{self, frame};

/// Client frames after the preface (the target adds the preface), starting with SETTINGS.
pub fn frames() -> Seeds {
    let settings = frame(h2raw::SETTINGS, 0, 0, &[0, 4, 0, 0x40, 0, 0]);
    let target = "10.244.2.4:80";
    let connect = h2raw::connect(1, target);
    let mut split = frame(
        h2raw::HEADERS,
        0,
        1,
        &h2raw::block(&[(":method", "CONNECT")]),
    );
    split.extend(frame(
        h2raw::CONTINUATION,
        h2raw::END_HEADERS,
        1,
        &h2raw::block(&[(":authority", target)]),
    ));
    let mut flood = frame(
        h2raw::HEADERS,
        0,
        1,
        &h2raw::block(&[(":method", "CONNECT")]),
    );
    for _ in 0..50 {
        flood.extend(frame(h2raw::CONTINUATION, 0, 1, b""));
    }
    let mut resets = Vec::new();
    for i in 0..30 {
        resets.extend(h2raw::connect(1 + 2 * i, target));
        resets.extend(h2raw::rst_stream(1 + 2 * i, h2raw::CANCEL));
    }
    let big = "x".repeat(20 << 10);
    let mut padded = vec![4u8];
    padded.extend(h2raw::block(&[
        (":method", "CONNECT"),
        (":authority", target),
    ]));
    padded.extend([0u8; 4]);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "connect-data-close",
            vec![
                connect.clone(),
                h2raw::data(1, b"hello", false),
                h2raw::data(1, b"", true),
            ],
        ),
        (
            "get",
            vec![h2raw::headers(
                1,
                &[
                    (":method", "GET"),
                    (":scheme", "https"),
                    (":authority", target),
                    (":path", "/"),
                ],
                true,
            )],
        ),
        (
            "no-authority",
            vec![h2raw::headers(1, &[(":method", "CONNECT")], false)],
        ),
        ("continuation", vec![split]),
        ("continuation-flood", vec![flood]),
        ("reset-burst", vec![resets]),
        (
            "oversized",
            vec![h2raw::headers(
                1,
                &[
                    (":method", "CONNECT"),
                    (":authority", target),
                    ("x-pad", &big),
                ],
                false,
            )],
        ),
        (
            "ping-window-goaway",
            vec![
                frame(h2raw::PING, 0, 0, b"12345678"),
                frame(0x8, 0, 0, &1000u32.to_be_bytes()),
                connect.clone(),
                frame(0x8, 0, 1, &1000u32.to_be_bytes()),
                frame(h2raw::GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]),
            ],
        ),
        (
            "padded-priority",
            vec![
                frame(0x2, 0, 3, &[0, 0, 0, 1, 16]),
                frame(
                    h2raw::HEADERS,
                    h2raw::END_HEADERS | h2raw::PADDED,
                    1,
                    &padded,
                ),
            ],
        ),
    ];
    cases
        .into_iter()
        .map(|(name, frames)| {
            let mut bytes = settings.clone();
            bytes.extend(frames.concat());
            (name.to_string(), bytes)
        })
        .collect()
}

//! DNS messages for the `dns_message` target: valid queries (with and without EDNS, every type
//! the proxy answers or forwards) and the hostile shapes the proxy must survive (truncated,
//! compression loops, huge counts, unknown types and classes, TC and QR set, two OPTs).

/// (file name, message).
pub fn messages() -> Vec<(String, Vec<u8>)> {
    let q = |id: u16, flags: u16, counts: [u16; 4], body: &[u8]| {
        let mut m = Vec::new();
        for w in [id, flags, counts[0], counts[1], counts[2], counts[3]] {
            m.extend_from_slice(&w.to_be_bytes());
        }
        m.extend_from_slice(body);
        m
    };
    let name = |dotted: &str| {
        let mut w = Vec::new();
        for l in dotted.split('.').filter(|l| !l.is_empty()) {
            w.push(l.len() as u8);
            w.extend_from_slice(l.as_bytes());
        }
        w.push(0);
        w
    };
    let question = |dotted: &str, qtype: u16, class: u16| {
        let mut b = name(dotted);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&class.to_be_bytes());
        b
    };
    let opt = |size: u16| {
        let mut b = vec![0, 0, 41];
        b.extend_from_slice(&size.to_be_bytes());
        b.extend_from_slice(&[0, 0, 0x80, 0, 0, 0]);
        b
    };
    let mut out = Vec::new();
    let mut add = |n: &str, m: Vec<u8>| out.push((n.to_owned(), m));
    add(
        "a-service",
        q(
            1,
            0x0100,
            [1, 0, 0, 0],
            &question("appb.default.svc.cluster.local", 1, 1),
        ),
    );
    add(
        "a-short",
        q(2, 0x0100, [1, 0, 0, 0], &question("appb", 1, 1)),
    );
    let mut edns = question("AppB.default.default.svc.cluster.local", 28, 1);
    edns.extend_from_slice(&opt(1232));
    add("aaaa-edns-search", q(3, 0x0100, [1, 0, 0, 1], &edns));
    add(
        "wildcard",
        q(4, 0x0100, [1, 0, 0, 0], &question("api.example.com", 1, 1)),
    );
    add(
        "txt-forward",
        q(5, 0x0100, [1, 0, 0, 0], &question("example.org", 16, 1)),
    );
    add(
        "unknown-type-class",
        q(6, 0, [1, 0, 0, 0], &question("x.y", 0xfffe, 0xabcd)),
    );
    add(
        "tc-set",
        q(7, 0x0300, [1, 0, 0, 0], &question("appb", 1, 1)),
    );
    add(
        "response",
        q(8, 0x8180, [1, 0, 0, 0], &question("appb", 1, 1)),
    );
    add(
        "pointer-self",
        q(9, 0, [1, 0, 0, 0], &[0xc0, 12, 0, 1, 0, 1]),
    );
    add(
        "pointer-mutual",
        q(
            10,
            0,
            [1, 0, 0, 0],
            &[1, b'x', 0xc0, 15, 0xc0, 12, 0, 1, 0, 1],
        ),
    );
    add(
        "huge-counts",
        q(11, 0, [1, 0xffff, 0xffff, 0xffff], &question("a", 1, 1)),
    );
    let full = q(
        12,
        0,
        [1, 0, 0, 1],
        &[question("a.b.c", 1, 1), opt(4096)].concat(),
    );
    add("truncated", full[..full.len() - 3].to_vec());
    add("runt", vec![0, 13, 1]);
    let mut two_opt = question("a", 1, 1);
    two_opt.extend_from_slice(&opt(512));
    two_opt.extend_from_slice(&opt(512));
    add("two-opt", q(14, 0, [1, 0, 0, 2], &two_opt));
    let mut long = Vec::new();
    for _ in 0..5 {
        long.push(60);
        long.extend_from_slice(&[b'x'; 60]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    add("long-name", q(15, 0, [1, 0, 0, 0], &long));
    add(
        "opcode-status",
        q(16, 0x1000, [1, 0, 0, 0], &question("appb", 1, 1)),
    );
    // Upstream answers to zring's own lookups (`dns::answer`): `db.example.com` CNAME (by a
    // pointer to the question) to `real.example.net`, its A and AAAA, and a record about
    // another name; then a CNAME loop.
    let rr = |owner: &[u8], rtype: u16, ttl: u32, data: &[u8]| {
        let mut b = owner.to_vec();
        b.extend_from_slice(&rtype.to_be_bytes());
        b.extend_from_slice(&[0, 1]);
        b.extend_from_slice(&ttl.to_be_bytes());
        b.extend_from_slice(&(data.len() as u16).to_be_bytes());
        b.extend_from_slice(data);
        b
    };
    let at_question = [0xc0, 12];
    let real = name("real.example.net");
    let chain = [
        question("db.example.com", 1, 1),
        rr(&at_question, 5, 300, &real),
        rr(&real, 1, 60, &[192, 0, 2, 7]),
        rr(
            &real,
            28,
            60,
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        rr(&name("other.example.org"), 1, 60, &[192, 0, 2, 66]),
    ]
    .concat();
    add("answer-cname-chain", q(17, 0x8180, [1, 4, 0, 0], &chain));
    let looped = [
        question("db.example.com", 1, 1),
        rr(&at_question, 5, 30, &name("b.example.com")),
        rr(&name("b.example.com"), 5, 30, &at_question),
    ]
    .concat();
    add("answer-cname-loop", q(18, 0x8180, [1, 2, 0, 0], &looped));
    out
}

//! The DNS message format (RFC 1035, EDNS0 from RFC 6891), as far as the proxy needs it:
//! parsing a query (header, one question, the OPT record), checking an upstream's answer
//! against the query it answers, and building the proxy's own answers (A, AAAA, CNAME, with
//! name compression, the OPT record and the TC bit). Pure: no IO, runs on whichever core
//! received the message.
//!
//! Hostile input is the normal case here (anything in a pod can send anything to 15053), so
//! every read is bounds-checked and returns a [`WireError`], never panics:
//! - a name is at most 255 bytes on the wire and 63 per label; compression pointers must point
//!   strictly backwards from where they are read, so a chain of them always ends (a loop is an
//!   error), and the number of jumps is bounded anyway;
//! - section counts are believed only as far as the bytes go: a count of 65535 with 20 bytes
//!   behind it ends at the first record that does not fit (`Truncated`), after at most as many
//!   steps as there are bytes;
//! - unknown types and classes are carried, not refused; extended label types (0b01, 0b10) are.

use std::net::IpAddr;

/// Bytes in a DNS header.
pub const HEADER_LEN: usize = 12;
/// The largest answer over UDP to a query without EDNS (RFC 1035 §4.2.1).
pub const PLAIN_UDP_SIZE: usize = 512;
/// The largest UDP answer the proxy sends, whatever a client's EDNS offers, and what it
/// advertises in its own OPT record.
pub const MAX_UDP_SIZE: usize = 4096;
/// The largest message over TCP (two-byte length prefix).
pub const MAX_TCP_SIZE: usize = 65535;
/// Wire length limit of a name, terminal zero included (RFC 1035 §3.1).
pub const MAX_NAME: usize = 255;
/// Length limit of one label.
pub const MAX_LABEL: usize = 63;
/// Compression jumps followed in one name, at most. Pointers only go backwards, so a chain
/// ends anyway; this bounds the work a crafted 64 KiB message can ask for per name.
pub const MAX_JUMPS: usize = 32;

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const CLASS_IN: u16 = 1;

/// Header flag bits (the second 16-bit word).
pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_RA: u16 = 0x0080;
/// Checking disabled (RFC 4035): echoed from the query.
pub const FLAG_CD: u16 = 0x0010;

/// Response codes the proxy sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// Why a message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("message ends inside {0}")]
    Truncated(&'static str),
    #[error("name longer than 255 bytes")]
    NameTooLong,
    #[error("compression pointer does not point backwards (loop)")]
    PointerLoop,
    #[error("too many compression jumps in one name")]
    TooManyJumps,
    #[error("extended or reserved label type")]
    LabelType,
    #[error("a query must carry exactly one question, not {0}")]
    QuestionCount(u16),
    #[error("more than one OPT record")]
    DuplicateOpt,
    #[error("OPT record outside the additional section or not at the root")]
    MisplacedOpt,
}

impl WireError {
    /// The metric label of this error (`zring_dns_rejected_total{reason}`), fixed strings.
    pub fn reason(self) -> &'static str {
        match self {
            WireError::Truncated(_) => "truncated",
            WireError::NameTooLong => "name_too_long",
            WireError::PointerLoop | WireError::TooManyJumps => "compression_loop",
            WireError::LabelType => "label_type",
            WireError::QuestionCount(_) => "question_count",
            WireError::DuplicateOpt | WireError::MisplacedOpt => "bad_opt",
        }
    }
}

/// The fixed 12 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    pub fn parse(msg: &[u8]) -> Result<Header, WireError> {
        let h = msg
            .get(..HEADER_LEN)
            .ok_or(WireError::Truncated("the header"))?;
        let w = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        Ok(Header {
            id: w(0),
            flags: w(2),
            qdcount: w(4),
            ancount: w(6),
            nscount: w(8),
            arcount: w(10),
        })
    }

    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xf) as u8
    }

    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }

    fn write(&self, out: &mut Vec<u8>) {
        for w in [
            self.id,
            self.flags,
            self.qdcount,
            self.ancount,
            self.nscount,
            self.arcount,
        ] {
            out.extend_from_slice(&w.to_be_bytes());
        }
    }
}

/// A name read from a message: its labels as sent (case kept, for the echo and for 0x20
/// case randomization), uncompressed wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    /// Uncompressed wire form: length-prefixed labels and the terminal zero.
    wire: Vec<u8>,
}

impl Name {
    /// The root name (`.`).
    pub fn root() -> Name {
        Name { wire: vec![0] }
    }

    /// From dotted text (`a.b.c`, trailing dot optional). `None` for an empty label, a label
    /// over 63 bytes or a name over 255.
    pub fn from_dotted(text: &str) -> Option<Name> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let mut wire = Vec::with_capacity(text.len() + 2);
        if !text.is_empty() {
            for label in text.split('.') {
                if label.is_empty() || label.len() > MAX_LABEL {
                    return None;
                }
                wire.push(label.len() as u8);
                wire.extend_from_slice(label.as_bytes());
            }
        }
        wire.push(0);
        (wire.len() <= MAX_NAME).then_some(Name { wire })
    }

    /// Reads the name at `pos` of `msg`, following compression pointers. Returns the name and
    /// the position right after it where it was read (after the first pointer, if any).
    pub fn parse(msg: &[u8], pos: usize) -> Result<(Name, usize), WireError> {
        let mut wire = Vec::with_capacity(32);
        let mut at = pos;
        let mut end = None;
        let mut jumps = 0;
        loop {
            let len = *msg.get(at).ok_or(WireError::Truncated("a name"))?;
            match len & 0xc0 {
                0x00 => {}
                0xc0 => {
                    let lo = *msg.get(at + 1).ok_or(WireError::Truncated("a pointer"))?;
                    let target = usize::from(u16::from_be_bytes([len & 0x3f, lo]));
                    // Strictly backwards from the pointer itself: every chain ends.
                    if target >= at {
                        return Err(WireError::PointerLoop);
                    }
                    jumps += 1;
                    if jumps > MAX_JUMPS {
                        return Err(WireError::TooManyJumps);
                    }
                    end.get_or_insert(at + 2);
                    at = target;
                    continue;
                }
                _ => return Err(WireError::LabelType),
            }
            let len = usize::from(len);
            if wire.len() + 1 + len > MAX_NAME {
                return Err(WireError::NameTooLong);
            }
            let label = msg
                .get(at..at + 1 + len)
                .ok_or(WireError::Truncated("a label"))?;
            wire.extend_from_slice(label);
            at += 1 + len;
            if len == 0 {
                return Ok((Name { wire }, end.unwrap_or(at)));
            }
        }
    }

    /// The uncompressed wire form.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The labels, as sent.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let len = usize::from(*self.wire.get(at)?);
            if len == 0 {
                return None;
            }
            let label = self.wire.get(at + 1..at + 1 + len)?;
            at += 1 + len;
            Some(label)
        })
    }

    /// Lowercase dotted text without the trailing dot, for lookups; `None` when a label holds
    /// anything but letters, digits, `-`, `_` or `*` (such names are never the mesh's, and a
    /// `.` inside a label would make the text ambiguous).
    pub fn lookup_key(&self) -> Option<String> {
        let mut out = String::with_capacity(self.wire.len());
        for label in self.labels() {
            if !out.is_empty() {
                out.push('.');
            }
            for &b in label {
                if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*') {
                    return None;
                }
                out.push(char::from(b.to_ascii_lowercase()));
            }
        }
        Some(out)
    }

    /// Dotted text for logs, with anything unusual escaped.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for label in self.labels() {
            for &b in label {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("\\{b:03}"));
                }
            }
            out.push('.');
        }
        if out.is_empty() {
            out.push('.');
        }
        out
    }

    fn eq_ignore_case(&self, other: &Name) -> bool {
        self.wire.eq_ignore_ascii_case(&other.wire)
    }
}

/// The one question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

/// The query's OPT record (EDNS0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The largest UDP answer the client takes (at least 512 is assumed).
    pub udp_size: u16,
    pub version: u8,
    /// The DO bit (DNSSEC OK): echoed.
    pub dnssec_ok: bool,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub header: Header,
    pub question: Question,
    /// Where the question section ends in the original message.
    pub question_end: usize,
    pub edns: Option<Edns>,
}

impl Query {
    /// Parses a message that must be a query: exactly one question. What follows it (answer
    /// and authority records, which a query should not have, and the additional section) is
    /// walked only to find the OPT record; unknown records there are skipped.
    ///
    /// Whether it is a query at all (QR, opcode) is the caller's check on [`Query::header`],
    /// so that it can answer a wrong opcode with NOTIMP and drop a response.
    pub fn parse(msg: &[u8]) -> Result<Query, WireError> {
        let header = Header::parse(msg)?;
        if header.qdcount != 1 {
            return Err(WireError::QuestionCount(header.qdcount));
        }
        let (name, at) = Name::parse(msg, HEADER_LEN)?;
        let fixed = msg
            .get(at..at + 4)
            .ok_or(WireError::Truncated("the question"))?;
        let question = Question {
            name,
            qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
            qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
        };
        let question_end = at + 4;
        let mut at = question_end;
        let mut edns = None;
        let before_additional = u32::from(header.ancount) + u32::from(header.nscount);
        let total = before_additional + u32::from(header.arcount);
        for i in 0..total {
            let (rr, next) = RawRecord::parse(msg, at)?;
            at = next;
            if rr.rtype != TYPE_OPT {
                continue;
            }
            if i < before_additional || rr.root_owner.is_none() {
                return Err(WireError::MisplacedOpt);
            }
            if edns.is_some() {
                return Err(WireError::DuplicateOpt);
            }
            edns = Some(Edns {
                udp_size: rr.class,
                version: (rr.ttl >> 16) as u8,
                dnssec_ok: rr.ttl & 0x8000 != 0,
            });
        }
        Ok(Query {
            header,
            question,
            question_end,
            edns,
        })
    }

    /// The largest answer the client takes over UDP: 512 without EDNS, else what it offers,
    /// between 512 and [`MAX_UDP_SIZE`].
    pub fn udp_limit(&self) -> usize {
        self.edns.map_or(PLAIN_UDP_SIZE, |e| {
            usize::from(e.udp_size).clamp(PLAIN_UDP_SIZE, MAX_UDP_SIZE)
        })
    }
}

/// One resource record as far as the OPT search needs it.
struct RawRecord {
    /// `Some` when the owner is the root name (OPT's must be).
    root_owner: Option<()>,
    rtype: u16,
    class: u16,
    ttl: u32,
}

impl RawRecord {
    fn parse(msg: &[u8], at: usize) -> Result<(RawRecord, usize), WireError> {
        let (owner, at) = Name::parse(msg, at)?;
        let fixed = msg
            .get(at..at + 10)
            .ok_or(WireError::Truncated("a record"))?;
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let end = at + 10 + rdlen;
        if end > msg.len() {
            return Err(WireError::Truncated("record data"));
        }
        Ok((
            RawRecord {
                root_owner: (owner.wire == [0]).then_some(()),
                rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
                class: u16::from_be_bytes([fixed[2], fixed[3]]),
                ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            },
            end,
        ))
    }
}

/// Whether `answer` (an upstream's message) answers `query`: a response, the same id and the
/// same question (names compared without case: some servers do not keep it).
pub fn answers(query: &Query, answer: &[u8]) -> bool {
    let Ok(h) = Header::parse(answer) else {
        return false;
    };
    if !h.is_response() || h.id != query.header.id {
        return false;
    }
    // A FORMERR or NOTIMP may come without the question; anything else must echo it.
    if h.qdcount == 0 {
        return h.rcode() != 0;
    }
    if h.qdcount != 1 {
        return false;
    }
    let Ok((name, at)) = Name::parse(answer, HEADER_LEN) else {
        return false;
    };
    let Some(fixed) = answer.get(at..at + 4) else {
        return false;
    };
    name.eq_ignore_case(&query.question.name)
        && u16::from_be_bytes([fixed[0], fixed[1]]) == query.question.qtype
        && u16::from_be_bytes([fixed[2], fixed[3]]) == query.question.qclass
}

/// Replaces a message's id in place (the first two bytes); no-op on a runt.
pub fn set_id(msg: &mut [u8], id: u16) {
    if let Some(head) = msg.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
}

/// One record of an answer the proxy builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Cname { owner: Name, target: Name },
    Addr { owner: Name, ip: IpAddr },
}

/// TTL of the proxy's own records (ztunnel's: 30 s).
pub const TTL: u32 = 30;

/// Builds the answer to `query`: `rcode`, `authoritative`, `records` in the answer section,
/// an OPT record when the query had one. When the whole answer exceeds `limit` (UDP) the
/// records are left out and TC is set, so the client asks again over TCP.
pub fn response(
    query: &Query,
    rcode: Rcode,
    authoritative: bool,
    records: &[Record],
    limit: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut flags = FLAG_QR
        | (u16::from(query.header.opcode()) << 11)
        | (query.header.flags & (FLAG_RD | FLAG_CD))
        | FLAG_RA
        | rcode as u16;
    if authoritative {
        flags |= FLAG_AA;
    }
    let header = |ancount: u16, flags: u16| Header {
        id: query.header.id,
        flags,
        qdcount: 1,
        ancount,
        nscount: 0,
        arcount: u16::from(query.edns.is_some()),
    };
    header(records.len() as u16, flags).write(&mut out);
    out.extend_from_slice(query.question.name.wire());
    out.extend_from_slice(&query.question.qtype.to_be_bytes());
    out.extend_from_slice(&query.question.qclass.to_be_bytes());
    let question_end = out.len();
    // Names written so far (lowercase wire form → offset), for compression pointers.
    let mut written: Vec<(Vec<u8>, usize)> =
        vec![(query.question.name.wire.to_ascii_lowercase(), HEADER_LEN)];
    for r in records {
        match r {
            Record::Cname { owner, target } => {
                write_name(&mut out, owner, &mut written);
                out.extend_from_slice(&TYPE_CNAME.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&TTL.to_be_bytes());
                let len_at = out.len();
                out.extend_from_slice(&[0, 0]);
                write_name(&mut out, target, &mut written);
                let rdlen = (out.len() - len_at - 2) as u16;
                out[len_at..len_at + 2].copy_from_slice(&rdlen.to_be_bytes());
            }
            Record::Addr { owner, ip } => {
                write_name(&mut out, owner, &mut written);
                let (rtype, rdata): (u16, &[u8]) = match ip {
                    IpAddr::V4(v4) => (TYPE_A, &v4.octets()),
                    IpAddr::V6(v6) => (TYPE_AAAA, &v6.octets()),
                };
                out.extend_from_slice(&rtype.to_be_bytes());
                out.extend_from_slice(&CLASS_IN.to_be_bytes());
                out.extend_from_slice(&TTL.to_be_bytes());
                out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                out.extend_from_slice(rdata);
            }
        }
    }
    let opt_len = if query.edns.is_some() { 11 } else { 0 };
    if out.len() + opt_len > limit {
        out.clear();
        header(0, flags | FLAG_TC).write(&mut out);
        out.extend_from_slice(query.question.name.wire());
        out.extend_from_slice(&query.question.qtype.to_be_bytes());
        out.extend_from_slice(&query.question.qclass.to_be_bytes());
        debug_assert_eq!(out.len(), question_end);
    }
    if let Some(edns) = query.edns {
        // Root owner, OPT, our UDP size, extended rcode 0, version 0, DO echoed, no options.
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&(MAX_UDP_SIZE as u16).to_be_bytes());
        let do_bit: u16 = if edns.dnssec_ok { 0x8000 } else { 0 };
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&do_bit.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out
}

/// An error answer that needs no parsed question: FORMERR (or any `rcode`) to a message whose
/// header could be read, with no sections. `None` when even the header is missing.
pub fn bare_error(msg: &[u8], rcode: Rcode) -> Option<Vec<u8>> {
    let h = Header::parse(msg).ok()?;
    let mut out = Vec::with_capacity(HEADER_LEN);
    Header {
        id: h.id,
        flags: FLAG_QR | (h.flags & (0x7800 | FLAG_RD)) | FLAG_RA | rcode as u16,
        ..Header::default()
    }
    .write(&mut out);
    Some(out)
}

/// Writes `name` at the end of `out`: a pointer when the same name (any case) was written
/// before within pointer range, else its labels, remembered for later.
fn write_name(out: &mut Vec<u8>, name: &Name, written: &mut Vec<(Vec<u8>, usize)>) {
    let lower = name.wire.to_ascii_lowercase();
    if let Some((_, at)) = written.iter().find(|(w, _)| *w == lower) {
        out.extend_from_slice(&(0xc000 | *at as u16).to_be_bytes());
        return;
    }
    let at = out.len();
    out.extend_from_slice(&name.wire);
    if at < 0x3fff {
        written.push((lower, at));
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;

//! The lab's model of istio-cni: a fake node agent that speaks ZDS to a proxy over a real
//! SEQPACKET socket (handing over real netns descriptors of lab pods), and the redirection rules
//! the real agent installs inside each enrolled pod's network namespace.
//!
//! Runs on a test thread; every call blocks up to the agent's timeout at most, so a test never
//! hangs on a silent proxy.
//!
//! The rules, written from the facts in Istio's `cni/pkg/iptables/` and ztunnel's
//! `scripts/ztunnel-redirect-inpod.sh` as one nftables table `ip istio_inpod` (every rule counts
//! and carries a comment naming it):
//! - mangle: a packet marked 0x539 (the proxy's sockets) coming in gives its connection
//!   connmark 0x111 (`proxy-conn`); on output a connection with connmark 0x111 restores it as the
//!   packet mark (`restore-proxy-mark`), and policy routing `fwmark 0x111/0xfff lookup 100` with
//!   `local 0.0.0.0/0 dev lo table 100` brings those replies back to the proxy's local socket;
//! - nat prerouting: TCP from the kubelet probe source 169.254.7.127 is left alone
//!   (`kubelet-probe`); other TCP to the pod, except to 15008 and except 0x539-marked, is
//!   REDIRECTed to 15006 (`inbound`);
//! - nat output: TCP to 169.254.7.127 is left alone (`probe-reply`); DNS (UDP not via lo, TCP
//!   not to 127.0.0.1, port 53, not marked 0x539) goes to 15053 when DNS capture is on
//!   (`dns-udp`, `dns-tcp`); connmark-restored 0x111 TCP is left alone (`proxy-reply`); traffic
//!   leaving through lo to another address than 127.0.0.1 (the pod's own IP) is left alone
//!   (`to-self`); other TCP not to 127.0.0.1 and not marked 0x539 is REDIRECTed to 15001
//!   (`outbound`).
//!
//! The same rules go in `ip6 istio_inpod` for IPv6 (`::1` for loopback, istio-cni's IPv6 probe
//! source `fd16:9254:7127:1337:ffff:ffff:ffff:ffff`), with `ip -6` policy routing
//! `local ::/0 dev lo table 100`, as istio-cni installs both families.
//!
//! Marks are compared under the mask 0xfff, as Istio does, so other bits stay free for others.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use prost::Message;

use super::{LabError, Netns};
use crate::capture::cmd;
use crate::inpod::WorkloadInfo;
use crate::sys::uds::{self, RecvError, SeqPacket, SeqPacketListener};
use crate::xds::proto::workload::zds as pb;

/// Mark of the proxy's own sockets: the rules let them through.
pub const PROXY_MARK: u32 = 0x539;
/// Connmark (and restored packet mark) of connections the proxy's marked packets entered by.
pub const CONN_MARK: u32 = 0x111;
/// Routing table sending 0x111-marked packets to the local stack.
pub const ROUTE_TABLE: u32 = 100;
/// Source address the kubelet's probes arrive from (SNATed by istio-cni on the node).
pub const PROBE_SRC: &str = "169.254.7.127";
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
pub const HBONE_PORT: u16 = 15008;
pub const DNS_PORT: u16 = 15053;
/// The nft table the rules live in.
pub const TABLE: &str = "istio_inpod";

/// What one fake-agent exchange can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, &'static str),
    #[error("the proxy closed the connection")]
    Closed,
    #[error("no proxy connected")]
    NotConnected,
    #[error("bad message from the proxy: {0}")]
    BadMessage(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> CniError {
    let context = context.into();
    move |source| CniError::Io { context, source }
}

/// The proxy's answer to one request: `Err` holds the ack's error text.
pub type Ack = Result<(), String>;

/// A fake istio-cni node agent: listens where the proxy connects (`INPOD_UDS`), and sends the
/// requests a test asks for, one at a time, waiting for each ack.
#[derive(Debug)]
pub struct FakeAgent {
    path: PathBuf,
    listener: Option<SeqPacketListener>,
    conn: Option<SeqPacket>,
    /// Upper bound of every wait.
    timeout: Duration,
}

impl FakeAgent {
    /// Listens at `path` (a stale socket file there is replaced).
    pub fn listen(path: &Path) -> Result<FakeAgent, CniError> {
        let listener = SeqPacketListener::bind(path)
            .map_err(io_err(format!("cannot listen at {}", path.display())))?;
        Ok(FakeAgent {
            path: path.to_owned(),
            listener: Some(listener),
            conn: None,
            timeout: Duration::from_secs(10),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the proxy to connect and checks its hello (`ZdsHello{V1}`). A connection
    /// already open is dropped first.
    pub fn accept(&mut self) -> Result<(), CniError> {
        self.conn = None;
        let listener = self.listener.as_ref().ok_or(CniError::NotConnected)?;
        if !uds::wait_readable(&[listener.as_fd()], Some(self.timeout)).map_err(io_err("poll"))?[0]
        {
            return Err(CniError::Timeout(self.timeout, "the proxy to connect"));
        }
        let conn = listener.accept().map_err(io_err("accept"))?;
        let (bytes, fds) = recv_within(&conn, self.timeout, "the hello")?;
        if !fds.is_empty() {
            return Err(CniError::BadMessage("descriptors on the hello".into()));
        }
        let hello =
            pb::ZdsHello::decode(&bytes[..]).map_err(|e| CniError::BadMessage(e.to_string()))?;
        if hello.version != pb::Version::V1 as i32 {
            return Err(CniError::BadMessage(format!(
                "hello with version {}",
                hello.version
            )));
        }
        self.conn = Some(conn);
        Ok(())
    }

    /// Sends `add` for `uid` with the lab namespace `netns` (opened from `/var/run/netns`).
    pub fn add(&mut self, uid: &str, info: &WorkloadInfo, netns: &Netns) -> Result<Ack, CniError> {
        let path = crate::sys::netns::path(netns.name());
        let file = std::fs::File::open(&path)
            .map_err(io_err(format!("cannot open {}", path.display())))?;
        self.add_with_fds(uid, Some(info), &[file.as_fd()])
    }

    /// Sends `add` with any descriptors (none, several, not a netns) and an optional info.
    pub fn add_with_fds(
        &mut self,
        uid: &str,
        info: Option<&WorkloadInfo>,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Ack, CniError> {
        let add = pb::AddWorkload {
            uid: uid.to_owned(),
            workload_info: info.map(|i| pb::WorkloadInfo {
                name: i.name.clone(),
                namespace: i.namespace.clone(),
                service_account: i.service_account.clone(),
            }),
        };
        self.request(pb::workload_request::Payload::Add(add), fds)
    }

    pub fn keep(&mut self, uid: &str) -> Result<Ack, CniError> {
        let keep = pb::KeepWorkload {
            uid: uid.to_owned(),
        };
        self.request(pb::workload_request::Payload::Keep(keep), &[])
    }

    pub fn del(&mut self, uid: &str) -> Result<Ack, CniError> {
        let del = pb::DelWorkload {
            uid: uid.to_owned(),
        };
        self.request(pb::workload_request::Payload::Del(del), &[])
    }

    pub fn snapshot_sent(&mut self) -> Result<Ack, CniError> {
        self.request(
            pb::workload_request::Payload::SnapshotSent(pb::SnapshotSent {}),
            &[],
        )
    }

    fn request(
        &mut self,
        payload: pb::workload_request::Payload,
        fds: &[BorrowedFd<'_>],
    ) -> Result<Ack, CniError> {
        let bytes = pb::WorkloadRequest {
            payload: Some(payload),
        }
        .encode_to_vec();
        self.send_raw(&bytes, fds)?;
        self.recv_ack()
    }

    /// Sends `bytes` as one packet with `fds`, without waiting for anything (hostile tests).
    pub fn send_raw(&mut self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), CniError> {
        let conn = self.conn.as_ref().ok_or(CniError::NotConnected)?;
        conn.send(bytes, fds).map_err(io_err("send"))
    }

    /// Waits for the proxy's next ack.
    pub fn recv_ack(&mut self) -> Result<Ack, CniError> {
        let conn = self.conn.as_ref().ok_or(CniError::NotConnected)?;
        let (bytes, fds) = recv_within(conn, self.timeout, "an ack")?;
        if !fds.is_empty() {
            return Err(CniError::BadMessage("descriptors on an ack".into()));
        }
        let response = pb::WorkloadResponse::decode(&bytes[..])
            .map_err(|e| CniError::BadMessage(e.to_string()))?;
        match response.payload {
            Some(pb::workload_response::Payload::Ack(ack)) if ack.error.is_empty() => Ok(Ok(())),
            Some(pb::workload_response::Payload::Ack(ack)) => Ok(Err(ack.error)),
            None => Err(CniError::BadMessage("response without an ack".into())),
        }
    }

    /// Waits until the proxy closes the connection (after a fatal error), then forgets it.
    pub fn expect_hangup(&mut self) -> Result<(), CniError> {
        let conn = self.conn.take().ok_or(CniError::NotConnected)?;
        match recv_within(&conn, self.timeout, "the proxy to hang up") {
            Err(CniError::Closed) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Err(CniError::BadMessage(
                "expected a hang-up, got a message".into(),
            )),
        }
    }

    /// The agent drops the current connection and keeps listening (a restart that leaves the
    /// socket in place); the proxy should reconnect.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// The agent goes away: connection and listener closed, socket file removed.
    pub fn stop(&mut self) {
        self.conn = None;
        self.listener = None;
        let _ = std::fs::remove_file(&self.path);
    }

    /// A new agent process: stops, then listens at the same path again.
    pub fn restart(&mut self) -> Result<(), CniError> {
        self.stop();
        self.listener = Some(
            SeqPacketListener::bind(&self.path)
                .map_err(io_err(format!("cannot listen at {}", self.path.display())))?,
        );
        Ok(())
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One packet from `conn` within `timeout`; `Closed` when the peer hung up.
fn recv_within(
    conn: &SeqPacket,
    timeout: Duration,
    what: &'static str,
) -> Result<(Vec<u8>, Vec<std::os::fd::OwnedFd>), CniError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CniError::Timeout(timeout, what));
        }
        if !uds::wait_readable(&[conn.as_fd()], Some(left)).map_err(io_err("poll"))?[0] {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        return match conn.recv(&mut buf) {
            Ok(p) if p.len == 0 => Err(CniError::Closed),
            Ok(p) => {
                buf.truncate(p.len);
                Ok((buf, p.fds))
            }
            Err(RecvError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
                Err(CniError::Closed)
            }
            Err(e) => Err(CniError::BadMessage(e.to_string())),
        };
    }
}

/// What the in-pod rules capture besides TCP.
#[derive(Debug, Clone, Copy)]
pub struct InpodRules {
    /// DNS (UDP and TCP 53) to 15053.
    pub dns: bool,
}

impl Default for InpodRules {
    fn default() -> Self {
        InpodRules { dns: true }
    }
}

/// The address family of one of the in-pod tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `table ip istio_inpod`.
    V4,
    /// `table ip6 istio_inpod`: the same rules for IPv6 (istio-cni installs both).
    V6,
}

impl Family {
    /// nft's family keyword, which is also the address-match keyword (`ip daddr`, `ip6 daddr`).
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1",
            Family::V6 => "::1",
        }
    }

    fn probe_src(self) -> &'static str {
        match self {
            Family::V4 => PROBE_SRC,
            Family::V6 => PROBE_SRC_V6,
        }
    }
}

/// The IPv6 source the kubelet's probes arrive from (istio-cni's IPv6 probe SNAT address).
pub const PROBE_SRC_V6: &str = "fd16:9254:7127:1337:ffff:ffff:ffff:ffff";

/// The nft script for `rules`, both families (see the module doc for each rule). It replaces
/// the tables atomically when applied again.
pub fn ruleset(rules: InpodRules) -> String {
    ruleset_of(rules, Family::V4) + &ruleset_of(rules, Family::V6)
}

/// The nft script of one family's table.
pub fn ruleset_of(rules: InpodRules, family: Family) -> String {
    let (fam, lo, probe) = (family.nft(), family.loopback(), family.probe_src());
    let skip = format!("meta mark and 0xfff != {PROXY_MARK:#x}");
    let dns = if rules.dns {
        format!(
            "        oifname != \"lo\" udp dport 53 {skip} counter redirect to :{DNS_PORT} comment \"dns-udp\"\n\
             \x20       {fam} daddr != {lo} tcp dport 53 {skip} counter redirect to :{DNS_PORT} comment \"dns-tcp\"\n"
        )
    } else {
        String::new()
    };
    format!(
        "add table {fam} {TABLE}\n\
         delete table {fam} {TABLE}\n\
         table {fam} {TABLE} {{\n\
         \x20   chain prerouting_mangle {{\n\
         \x20       type filter hook prerouting priority mangle; policy accept;\n\
         \x20       meta mark and 0xfff == {PROXY_MARK:#x} counter ct mark set ct mark and 0xfffff000 or {CONN_MARK:#x} comment \"proxy-conn\"\n\
         \x20   }}\n\
         \x20   chain output_mangle {{\n\
         \x20       type route hook output priority mangle; policy accept;\n\
         \x20       ct mark and 0xfff == {CONN_MARK:#x} counter meta mark set ct mark comment \"restore-proxy-mark\"\n\
         \x20   }}\n\
         \x20   chain prerouting_nat {{\n\
         \x20       type nat hook prerouting priority dstnat; policy accept;\n\
         \x20       {fam} saddr {probe} meta l4proto tcp counter accept comment \"kubelet-probe\"\n\
         \x20       {fam} daddr != {lo} tcp dport != {HBONE_PORT} {skip} counter redirect to :{INBOUND_PLAINTEXT_PORT} comment \"inbound\"\n\
         \x20   }}\n\
         \x20   chain output_nat {{\n\
         \x20       type nat hook output priority -100; policy accept;\n\
         \x20       {fam} daddr {probe} meta l4proto tcp counter accept comment \"probe-reply\"\n\
         {dns}\
         \x20       meta l4proto tcp meta mark and 0xfff == {CONN_MARK:#x} counter accept comment \"proxy-reply\"\n\
         \x20       {fam} daddr != {lo} oifname \"lo\" counter accept comment \"to-self\"\n\
         \x20       {fam} daddr != {lo} meta l4proto tcp {skip} counter redirect to :{OUTBOUND_PORT} comment \"outbound\"\n\
         \x20   }}\n\
         }}\n"
    )
}

/// Installs istio-cni's in-pod rules in `netns` (a lab pod): the nft tables (IPv4 and IPv6)
/// and the policy routing for the proxy's connections in both families. Calling it again
/// replaces the tables.
pub fn install_rules(netns: &Netns, rules: InpodRules) -> Result<(), LabError> {
    cmd::nft_in(netns.name(), &["-f", "-"], Some(&ruleset(rules)))?;
    let rule = format!("fwmark {CONN_MARK:#x}/0xfff lookup {ROUTE_TABLE}");
    for (flag, any) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
        if !netns.ip(&[flag, "rule", "show"])?.contains(&rule) {
            netns.ip_line(&format!("{flag} rule add {rule} pref 32764"))?;
        }
        netns.ip_line(&format!(
            "{flag} route replace local {any} dev lo table {ROUTE_TABLE}"
        ))?;
    }
    Ok(())
}

/// Packets each commented rule of the in-pod IPv4 table has counted in `netns`, by comment.
pub fn rule_counters(netns: &Netns) -> Result<Vec<(String, u64)>, LabError> {
    rule_counters_of(netns, Family::V4)
}

/// [`rule_counters`] of one family's table.
pub fn rule_counters_of(netns: &Netns, family: Family) -> Result<Vec<(String, u64)>, LabError> {
    let listing = cmd::nft_in(netns.name(), &["list", "table", family.nft(), TABLE], None)?;
    Ok(listing
        .lines()
        .filter_map(|line| {
            let packets = line
                .split_once("counter packets ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            let comment = line.split_once("comment \"")?.1.split_once('"')?.0;
            Some((comment.to_owned(), packets))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_names_every_rule_and_dns_is_optional() {
        let with = ruleset(InpodRules { dns: true });
        for name in [
            "proxy-conn",
            "restore-proxy-mark",
            "kubelet-probe",
            "inbound",
            "probe-reply",
            "dns-udp",
            "dns-tcp",
            "proxy-reply",
            "to-self",
            "outbound",
        ] {
            assert!(with.contains(&format!("comment \"{name}\"")), "{name}");
        }
        let without = ruleset(InpodRules { dns: false });
        assert!(!without.contains("dns-udp") && !without.contains(":15053"));
        assert!(with.contains("redirect to :15001") && with.contains("tcp dport != 15008"));
        let v6 = ruleset_of(InpodRules { dns: true }, Family::V6);
        assert!(v6.contains("table ip6 istio_inpod") && v6.contains("ip6 daddr != ::1"));
        assert!(!v6.contains("127.0.0.1") && !v6.contains(" ip daddr"));
        assert!(with.contains(&v6), "ruleset installs both families");
    }
}

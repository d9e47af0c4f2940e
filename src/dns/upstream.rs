//! Forwarding to the upstream resolvers: the list (`/etc/resolv.conf`'s nameservers or
//! `ZRING_DNS_UPSTREAMS`), one UDP socket per core and network namespace whose answers a reader
//! task hands to the waiting queries by id, and TCP forwarding (one connection per query).
//!
//! Runs on one core; `Rc`/`RefCell` only. The socket is made where queries must leave from:
//! in node mode the node's netns, marked so the capture rules let it pass; in-pod the pod's
//! netns (made by the `zring-inpod` thread with the pod's listeners, marked so the pod's rules
//! do not send it back to 15053), so upstreams see the pod, as with ztunnel.
//!
//! Invariants: a query id is unique among the socket's pending queries (a fresh random id per
//! forward, so clients' ids never meet upstream and an answer cannot be steered to another
//! client); an answer is delivered only when it comes from the server asked and answers the
//! question asked (`wire::answers`), anything else is discarded and counted; a pending slot is
//! removed when its query's future ends, whatever ended it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::net::udp::UdpSocket;

use super::DnsError;
use super::wire::{self, Query};
use crate::latch::Latch;
use crate::metrics::dns::DnsShard;

/// The nameservers of a resolv.conf text, port 53; scoped IPv6 (`fe80::1%eth0`) is skipped.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// A core's UDP socket to the upstreams in one netns, with its pending queries.
#[derive(Debug)]
pub struct UdpUpstream {
    socket: UdpSocket,
    pending: RefCell<HashMap<u16, Rc<Pending>>>,
}

#[derive(Debug)]
struct Pending {
    server: SocketAddr,
    /// The query as sent upstream (our id), to check the answer against.
    query: Query,
    answer: Latch<Vec<u8>>,
}

/// Removes a pending query when the forward ends, answered or not.
struct PendingGuard<'a> {
    up: &'a UdpUpstream,
    id: u16,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.up.pending.borrow_mut().remove(&self.id);
    }
}

impl UdpUpstream {
    /// Takes a bound, non-blocking UDP socket (see `inpod::factory::dns_upstream_socket`).
    pub fn new(socket: std::net::UdpSocket) -> std::io::Result<UdpUpstream> {
        Ok(UdpUpstream {
            socket: UdpSocket::from_std(socket)?,
            pending: RefCell::default(),
        })
    }

    /// Queries waiting for an answer now.
    pub fn pending(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Reads answers until `stop` ends: each goes to its pending query, or is discarded.
    pub async fn read_answers(
        &self,
        metrics: &DnsShard,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut buf = vec![0u8; 65536];
        loop {
            buf.clear();
            let (res, back) = monoio::select! {
                r = self.socket.recv_from(buf) => r,
                () = &mut stop => return,
            };
            buf = back;
            let Ok((n, from)) = res else {
                // ICMP errors (port unreachable from a dead upstream) surface here; the query
                // times out and the next upstream is tried.
                continue;
            };
            let msg = &buf[..n.min(buf.len())];
            let Ok(h) = wire::Header::parse(msg) else {
                metrics.upstream_discarded();
                continue;
            };
            let slot = self.pending.borrow().get(&h.id).cloned();
            match slot {
                Some(p) if same_peer(p.server, from) && wire::answers(&p.query, msg) => {
                    p.answer.fire(msg.to_vec());
                }
                _ => metrics.upstream_discarded(),
            }
        }
    }

    /// Sends `msg` (the client's query, parsed as `query`) to `server` under a fresh id and
    /// waits up to `timeout` for its answer, returned with the client's id back in place.
    pub async fn forward(
        &self,
        server: SocketAddr,
        msg: &[u8],
        query: &Query,
        random: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, DnsError> {
        let id = {
            let pending = self.pending.borrow();
            let mut id = random as u16;
            let mut step = (random >> 16) as u16 | 1;
            // Bounded: pending queries are far fewer than the 65536 ids (`max_inflight`).
            for _ in 0..64 {
                if !pending.contains_key(&id) {
                    break;
                }
                id = id.wrapping_add(step);
                step = step.rotate_left(3) | 1;
            }
            if pending.contains_key(&id) {
                return Err(DnsError::Busy);
            }
            id
        };
        let mut upstream_query = query.clone();
        upstream_query.header.id = id;
        let p = Rc::new(Pending {
            server,
            query: upstream_query,
            answer: Latch::default(),
        });
        self.pending.borrow_mut().insert(id, p.clone());
        let _guard = PendingGuard { up: self, id };
        let mut out = msg.to_vec();
        wire::set_id(&mut out, id);
        let (sent, _) = self.socket.send_to(out, server).await;
        sent.map_err(|e| DnsError::Upstream(server, e))?;
        match monoio::time::timeout(timeout, p.answer.wait()).await {
            Err(_) => Err(DnsError::Timeout(server)),
            Ok(mut answer) => {
                wire::set_id(&mut answer, query.header.id);
                Ok(answer)
            }
        }
    }
}

/// Forwards `msg` (parsed as `query`) over an already connected TCP `stream` and reads one
/// answer, within `timeout` for the whole exchange. The id is the client's: the connection
/// carries nothing else.
pub async fn forward_tcp(
    mut stream: TcpStream,
    server: SocketAddr,
    msg: &[u8],
    query: &Query,
    timeout: Duration,
) -> Result<Vec<u8>, DnsError> {
    let exchange = async {
        let mut out = Vec::with_capacity(msg.len() + 2);
        out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        out.extend_from_slice(msg);
        let (r, _) = stream.write_all(out).await;
        r?;
        let (r, len) = stream.read_exact(vec![0u8; 2]).await;
        r?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let (r, answer) = stream.read_exact(vec![0u8; len]).await;
        r?;
        Ok::<_, std::io::Error>(answer)
    };
    match monoio::time::timeout(timeout, exchange).await {
        Err(_) => Err(DnsError::Timeout(server)),
        Ok(Err(e)) => Err(DnsError::Upstream(server, e)),
        Ok(Ok(answer)) if wire::answers(query, &answer) => Ok(answer),
        Ok(Ok(_)) => Err(DnsError::BadAnswer(server)),
    }
}

/// `a` and `b` are the same peer, an IPv4 address and its `::ffff:` mapping alike: the IPv6
/// (dual-stack) socket that serves IPv6 clients hears an IPv4 upstream's answers from the
/// mapped address.
fn same_peer(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch default.svc.cluster.local svc.cluster.local\n\
                    nameserver 10.96.0.10\nnameserver  fd00::a \noptions ndots:5\n\
                    nameserver fe80::1%eth0\nnameserver\nnameserverx 1.2.3.4\n";
        assert_eq!(
            nameservers(text),
            vec![
                "10.96.0.10:53".parse::<SocketAddr>().unwrap(),
                "[fd00::a]:53".parse().unwrap()
            ]
        );
    }
}

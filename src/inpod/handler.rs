//! The [`PodHandler`] of in-pod mode: on add, binds 15001, 15006 and 15008 inside the pod's
//! netns once per core (SO_REUSEPORT), hands each core its three listeners and returns once
//! every core has confirmed, so the agent's `Ack` means "served on every core"; on remove, tells
//! every core to close the pod's listeners (its connections then end within the drain deadline)
//! and returns once each has.
//!
//! Runs on the `zring-inpod` thread (the client calls it inline), which is where `setns`
//! happens for listeners ([`factory::in_netns`]); cores only receive ready sockets
//! (`handoff`). Every wait for the cores is bounded by `confirm_timeout`.
//!
//! Invariant: a pod is served by all cores or by none. An add that fails on any core (or
//! times out) is undone on every core before the error goes back to the agent; a late
//! confirmation is undone by that removal, which reaches the core after the add (one channel
//! per core, in order).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::factory::{self, SocketFactory};
use super::handoff::{CoreAnswer, CoreMail, Mailbox};
use super::pod::{PodCtx, PodPort};
use super::{Pod, PodHandler};
use crate::identity::{Enrolled, Identity};

/// How long an add or a remove waits for every core's confirmation.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct ListenerHandler {
    cores: Vec<Mailbox>,
    factory: SocketFactory,
    /// `PACKET_MARK` for the pods' upstream sockets.
    mark: u32,
    backlog: i32,
    confirm_timeout: Duration,
    /// Where an added pod's identity goes, so its certificate is requested at once, and the
    /// trust domain it is in.
    certificates: Option<(Arc<Enrolled>, String)>,
    /// Where the DNS proxy listens inside each pod, when it is on.
    dns: Option<SocketAddr>,
    /// `IPV6_ENABLED`: whether a pod whose kernel has IPv6 also gets `[::]` listeners.
    ipv6: bool,
}

impl ListenerHandler {
    pub fn new(cores: Vec<Mailbox>, factory: SocketFactory, mark: u32, backlog: i32) -> Self {
        ListenerHandler {
            cores,
            factory,
            mark,
            backlog,
            confirm_timeout: CONFIRM_TIMEOUT,
            certificates: None,
            dns: None,
            ipv6: true,
        }
    }

    /// Whether pods get IPv6 listeners beside the IPv4 ones (`IPV6_ENABLED`; default on). Off,
    /// a pod is served on `0.0.0.0` only, as ztunnel then binds `0.0.0.0` instead of `[::]`:
    /// istio-cni's `ip6` rules (if any) find nothing listening, and no IPv6 DNS socket opens.
    pub fn with_ipv6(mut self, ipv6: bool) -> Self {
        self.ipv6 = ipv6;
        self
    }

    /// Also binds the DNS proxy's sockets at `addr` inside each added pod (`None`: off).
    pub fn with_dns(mut self, addr: Option<SocketAddr>) -> Self {
        self.dns = addr;
        self
    }

    /// Each added pod's identity (`spiffe://<trust_domain>/ns/<namespace>/sa/<service account>`
    /// from the agent's `WorkloadInfo`) goes into `enrolled`, which the certificate manager
    /// serves: the pod's certificate is requested at its add, as ztunnel does.
    pub fn with_certificates(mut self, enrolled: Arc<Enrolled>, trust_domain: &str) -> Self {
        self.certificates = Some((enrolled, trust_domain.to_owned()));
        self
    }

    /// Sends `mail(core)` to every core and waits for every answer; the first error, or
    /// which cores did not answer in time.
    fn to_every_core(
        &self,
        what: &str,
        mut mail: impl FnMut(usize, crossbeam_channel::Sender<CoreAnswer>) -> CoreMail,
    ) -> Result<(), String> {
        let (tx, rx) = crossbeam_channel::bounded(self.cores.len());
        let mut waiting = vec![false; self.cores.len()];
        let mut first_error = None;
        for (i, mailbox) in self.cores.iter().enumerate() {
            match mailbox.send(mail(i, tx.clone())) {
                Ok(()) => waiting[i] = true,
                Err(e) => {
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        drop(tx);
        let deadline = Instant::now() + self.confirm_timeout;
        while waiting.iter().any(|w| *w) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(answer) => {
                    waiting[answer.core] = false;
                    if let Err(e) = answer.result {
                        first_error.get_or_insert_with(|| format!("core {}: {e}", answer.core));
                    }
                }
                Err(_) => {
                    let late: Vec<usize> = (0..waiting.len()).filter(|i| waiting[*i]).collect();
                    first_error.get_or_insert_with(|| {
                        format!(
                            "cores {late:?} did not confirm {what} within {:?}",
                            self.confirm_timeout
                        )
                    });
                    break;
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Whether the current namespace's kernel takes IPv6 sockets: probed with a throwaway v6-only
/// listener on an ephemeral port. No IPv6 at all (`EAFNOSUPPORT`, or no address to bind) is
/// `false`; any other failure is an error.
fn ipv6_available(backlog: i32) -> std::io::Result<bool> {
    match factory::pod_listener((Ipv6Addr::UNSPECIFIED, 0).into(), backlog) {
        Ok(_) => Ok(true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Where the DNS proxy listens inside a pod: `addr`, and when the pod has IPv6 (and
/// `IPV6_ENABLED` allows) its IPv6 counterpart on the same port: the IPv6 wildcard beside the
/// IPv4 one, the IPv6 loopback beside the IPv4 loopback. istio-cni's `ip6` rules REDIRECT a
/// pod's v6 DNS, which lands on `::1`; ztunnel binds `localhost:15053` (its default) as both
/// loopbacks for that reason. zring keeps `localhost:PORT` as the IPv4 loopback, so an explicit
/// `127.0.0.1:PORT` gets `::1` too, where ztunnel would bind it alone.
fn dns_addrs(addr: Option<SocketAddr>, v6: bool) -> Vec<SocketAddr> {
    let Some(addr) = addr else {
        return Vec::new();
    };
    let mut out = vec![addr];
    let counterpart = match addr.ip() {
        ip if ip == Ipv4Addr::UNSPECIFIED => Some(Ipv6Addr::UNSPECIFIED),
        ip if ip == Ipv4Addr::LOCALHOST => Some(Ipv6Addr::LOCALHOST),
        _ => None,
    };
    if let (true, Some(ip)) = (v6, counterpart) {
        out.push((ip, addr.port()).into());
    }
    out
}

impl PodHandler for ListenerHandler {
    fn add(&mut self, pod: &Pod) -> Result<(), String> {
        let started = Instant::now();
        let cores = self.cores.len();
        let (backlog, dns, mark, ipv6) = (self.backlog, self.dns, self.mark, self.ipv6);
        // Every core's listeners in one visit: the pod's netns is entered once per add.
        let (mut per_core, mut per_core_dns) = factory::in_netns(pod.netns.as_fd(), || {
            // IPv6 beside IPv4: separate v6-only sockets on `[::]`, so a v4 connection keeps
            // plain v4 addresses (no `::ffff:` mapping for lookups and logs to undo) and the
            // original destination is asked in the socket's own family. A pod whose kernel
            // has no IPv6, or any pod with `IPV6_ENABLED=false`, gets v4 only.
            let v6 = ipv6 && ipv6_available(backlog)?;
            let tcp = (0..cores)
                .map(|_| {
                    let mut out = Vec::with_capacity(PodPort::ALL.len() * 2);
                    for p in PodPort::ALL {
                        let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, p.port()));
                        out.push((p, factory::pod_listener(v4, backlog)?));
                        if v6 {
                            let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, p.port()));
                            out.push((p, factory::pod_listener(v6, backlog)?));
                        }
                    }
                    Ok(out)
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            let dns = (0..cores)
                .map(|_| {
                    let mut sockets = Vec::with_capacity(2);
                    for addr in dns_addrs(dns, v6) {
                        match factory::dns_sockets(addr, backlog, mark, false) {
                            Ok(s) => sockets.push(s),
                            // A pod whose loopback has no `::1` (IPv6 off on `lo` alone) is
                            // served on 127.0.0.1 only, as ztunnel checks per pod.
                            Err(e)
                                if addr.ip() == Ipv6Addr::LOCALHOST
                                    && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(sockets)
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            Ok((tcp, dns))
        })
        .map_err(|e| format!("cannot listen inside the pod's network namespace: {e}"))?;
        let ctx = Arc::new(PodCtx::new(
            pod.uid.clone(),
            pod.info.clone(),
            pod.netns.clone(),
            self.mark,
            self.factory.clone(),
        ));
        let added = self.to_every_core("the listeners", |core, done| CoreMail::AddPod {
            pod: ctx.clone(),
            listeners: std::mem::take(&mut per_core[core]),
            dns: std::mem::take(&mut per_core_dns[core]),
            done,
        });
        if let Err(e) = added {
            warn!(uid = %pod.uid, error = %e, "pod listeners not up on every core: undoing");
            let _ = self.remove(pod);
            return Err(e);
        }
        if let Some((enrolled, trust_domain)) = &self.certificates {
            let info = &pod.info;
            match Identity::new(trust_domain, &info.namespace, &info.service_account) {
                Ok(id) => enrolled.insert(&pod.uid, id),
                Err(e) => warn!(uid = %pod.uid, "no certificate requested at add: {e}"),
            }
        }
        info!(
            uid = %pod.uid,
            cores,
            took = ?started.elapsed(),
            "pod served: 15001, 15006, 15008 (IPv4 and, when the pod has it, IPv6) inside its netns on every core"
        );
        Ok(())
    }

    fn remove(&mut self, pod: &Pod) -> Result<(), String> {
        let uid = &pod.uid;
        if let Some((enrolled, _)) = &self.certificates {
            enrolled.remove(uid);
        }
        self.to_every_core("the removal", |_, done| CoreMail::RemovePod {
            uid: uid.clone(),
            done,
        })
    }
}

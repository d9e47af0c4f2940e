//! The in-pod redirection rules of `zring::lab::cni` (istio-cni's, written as nftables), proved
//! with plain std::net listeners standing in for the proxy inside a lab pod's netns: outbound
//! lands on 15001 with `SO_ORIGINAL_DST` naming the real destination, inbound on 15006, 15008
//! and loopback are not redirected, the proxy's 0x539-marked sockets and the kubelet probe source
//! pass untouched, the proxy's spoofed replies route back through connmark 0x111, DNS lands on
//! 15053.
//!
//! Runs as root under `cargo test`; without root (or without `ip`/`nft`) it fails with
//! `Lab::new`'s error, never skips. No sleeps: a connect that completed has already put the
//! connection in some listener's accept queue, so each check accepts without waiting.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use socket2::{Domain, SockAddr, Socket, Type};
use zring::lab::Lab;
use zring::lab::cni::{self, InpodRules};
use zring::sys::origdst::original_dst;

const STEP: Duration = Duration::from_secs(5);

/// The connection waiting in `listener`'s queue, if any (never blocks).
fn take(listener: &TcpListener) -> Result<Option<(TcpStream, SocketAddr)>> {
    listener.set_nonblocking(true)?;
    match listener.accept() {
        Ok(pair) => Ok(Some(pair)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn connect(dst: SocketAddr, mark: Option<u32>, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(mark) = mark {
        s.set_mark(mark)?;
    }
    if let Some(src) = src {
        // A source the namespace does not own is the proxy's spoofed client address.
        s.set_ip_transparent(true)?;
        s.bind(&SockAddr::from(SocketAddr::from((src, 0))))?;
    }
    s.connect_timeout(&SockAddr::from(dst), STEP)?;
    Ok(s.into())
}

fn bind(ns: &zring::lab::Netns, addr: &str) -> Result<TcpListener> {
    let addr = addr.to_owned();
    ns.run(move || TcpListener::bind(addr))
        .with_context(|| format!("bind in {}", ns.name()))
}

#[test]
fn inpod_rules_redirect_like_istio_cni() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_node("a", Ipv4Addr::new(172, 31, 0, 11), "10.244.1.0/24".parse()?)?;
    let pod_ip = Ipv4Addr::new(10, 244, 1, 8);
    lab.add_pod("a", "appa", pod_ip)?;
    let (node, pod) = (lab.node("a"), lab.pod("appa"));
    cni::install_rules(pod, InpodRules::default())?;
    // Twice: the table is replaced, the policy rule not duplicated.
    cni::install_rules(pod, InpodRules::default())?;
    let rules = pod.netns().ip(&["rule", "show"])?;
    ensure!(
        rules.matches("lookup 100").count() == 1,
        "one policy rule: {rules}"
    );

    let outbound = bind(pod, "0.0.0.0:15001")?;
    let inbound = bind(pod, "0.0.0.0:15006")?;
    let hbone = bind(pod, "0.0.0.0:15008")?;
    let app = bind(pod, "0.0.0.0:8080")?;
    let local_only = bind(pod, "127.0.0.1:7000")?;
    let node_ip = node.underlay_ip();
    let on_node = bind(node, &format!("{node_ip}:9000"))?;

    // Outbound TCP from the pod lands on 15001, the original destination intact.
    let dst = SocketAddr::from((node_ip, 9000));
    let _c = pod.run(move || connect(dst, None, None))?;
    let (accepted, _) = take(&outbound)?.context("outbound connection not on 15001")?;
    ensure!(
        original_dst(accepted.as_fd())? == SocketAddrV4::new(node_ip, 9000),
        "SO_ORIGINAL_DST"
    );
    ensure!(
        take(&on_node)?.is_none(),
        "the node saw a redirected connection"
    );

    // The proxy's own 0x539-marked sockets go out untouched.
    let _c = pod.run(move || connect(dst, Some(cni::PROXY_MARK), None))?;
    ensure!(
        take(&on_node)?.is_some(),
        "marked connection did not reach the node"
    );
    ensure!(
        take(&outbound)?.is_none(),
        "marked connection was redirected"
    );

    // Loopback is not redirected.
    let _c = pod.run(|| connect("127.0.0.1:7000".parse().unwrap(), None, None))?;
    ensure!(
        take(&local_only)?.is_some(),
        "loopback connection redirected"
    );
    ensure!(take(&outbound)?.is_none());

    // Inbound TCP to the pod lands on 15006 with its original destination.
    let app_addr = SocketAddr::from((pod_ip, 8080));
    let _c = node.run(move || connect(app_addr, None, None))?;
    let (accepted, peer) = take(&inbound)?.context("inbound connection not on 15006")?;
    ensure!(original_dst(accepted.as_fd())? == SocketAddrV4::new(pod_ip, 8080));
    ensure!(
        peer.ip() == std::net::IpAddr::from(pod.gateway()),
        "client address kept: {peer}"
    );
    ensure!(take(&app)?.is_none(), "inbound bypassed 15006");

    // HBONE (15008) is not redirected: it reaches the 15008 listener itself.
    let hbone_addr = SocketAddr::from((pod_ip, 15008));
    let _c = node.run(move || connect(hbone_addr, None, None))?;
    let (accepted, _) = take(&hbone)?.context("15008 connection not on 15008")?;
    // Tracked but not rewritten: conntrack's original destination is the address itself.
    ensure!(
        original_dst(accepted.as_fd())? == SocketAddrV4::new(pod_ip, 15008),
        "15008 connection was nat-ed"
    );
    ensure!(take(&inbound)?.is_none());

    // The kubelet probe source is exempt: it reaches the app directly.
    node.ip_line(&format!(
        "addr add {}/32 dev {}",
        cni::PROBE_SRC,
        pod.host_if()
    ))?;
    let probe_src: Ipv4Addr = cni::PROBE_SRC.parse()?;
    let _c = node.run(move || connect(app_addr, None, Some(probe_src)))?;
    ensure!(take(&app)?.is_some(), "probe did not reach the app");
    ensure!(take(&inbound)?.is_none(), "probe was redirected");

    // The proxy's inbound-passthrough hop: a 0x539-marked socket inside the pod, spoofing a
    // remote client, connects to the app. The SYN-ACK goes to an address that is not the pod's;
    // only connmark 0x111 + `fwmark 0x111 lookup 100` (local) bring it back to the proxy's
    // socket, so a completed handshake proves that routing.
    let client: Ipv4Addr = "172.31.0.99".parse()?;
    let _c = pod
        .run(move || connect(app_addr, Some(cni::PROXY_MARK), Some(client)))
        .context("spoofed, marked connect to the app")?;
    let (_, peer) = take(&app)?.context("marked connection did not reach the app")?;
    ensure!(
        peer.ip() == std::net::IpAddr::from(client),
        "app saw {peer}"
    );
    ensure!(
        take(&inbound)?.is_none(),
        "marked connection was redirected"
    );

    // DNS over UDP lands on 15053.
    let dns = pod.run(|| UdpSocket::bind("0.0.0.0:15053"))?;
    dns.set_read_timeout(Some(STEP))?;
    pod.run(|| -> io::Result<()> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.send_to(b"query", "10.96.0.10:53").map(drop)
    })?;
    let mut buf = [0u8; 16];
    let (n, _) = dns.recv_from(&mut buf).context("DNS not on 15053")?;
    ensure!(&buf[..n] == b"query");

    let counters = cni::rule_counters(pod)?;
    for rule in [
        "outbound",
        "inbound",
        "kubelet-probe",
        "dns-udp",
        "to-self",
        "proxy-conn",
        "restore-proxy-mark",
    ] {
        let Some((_, packets)) = counters.iter().find(|(c, _)| c == rule) else {
            bail!("no counter for {rule}: {counters:?}")
        };
        if rule != "to-self" {
            ensure!(*packets > 0, "rule {rule} never matched: {counters:?}");
        }
    }
    Ok(())
}

#[test]
fn without_dns_capture_dns_is_left_alone() -> Result<()> {
    let mut lab = Lab::new()?;
    lab.add_node("a", Ipv4Addr::new(172, 31, 0, 11), "10.244.1.0/24".parse()?)?;
    lab.add_pod("a", "appa", Ipv4Addr::new(10, 244, 1, 8))?;
    let pod = lab.pod("appa");
    cni::install_rules(pod, InpodRules { dns: false })?;
    let counters = cni::rule_counters(pod)?;
    ensure!(
        counters.iter().all(|(c, _)| !c.starts_with("dns")),
        "{counters:?}"
    );
    Ok(())
}

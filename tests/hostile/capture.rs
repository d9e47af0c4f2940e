//! Captured connections from pods to zring's own ports: refused with a reset and logged where
//! they would reach zring itself; the same port numbers elsewhere are not zring's to refuse.

use super::*;

/// Captured connections from a pod to zring's own ports at its own node's addresses (the
/// underlay address and the pods' gateway) are refused with a reset and logged. At another
/// node's pod the same ports are ordinary traffic: not refused as zring's (they fail only
/// because nothing listens there). The pods' own traffic goes on.
#[test]
fn own_ports_through_capture_are_refused() {
    let mut h = hostile(&[]);
    let node_a = h.m.lab.node("a").underlay_ip();
    let gateway = h.m.lab.node("a").gateway();
    let mut refused = 0;
    for ip in [node_a, gateway] {
        for port in zring::config::OWN_PORTS {
            let r = h.m.exchange("appa", (ip, port).into(), 1024, 1024);
            assert!(r.is_err(), "appa reached {ip}:{port}: {r:?}");
            refused += 1;
            h.logged("a", "is zring itself (one of its own ports", refused);
        }
    }
    for port in zring::config::OWN_PORTS {
        let r = h.m.exchange("appa", (APPB, port).into(), 1024, 1024);
        assert!(r.is_err(), "nothing listens on appb:{port}: {r:?}");
    }
    h.m.eventually_logged("a", &format!("proxy to {APPB}:15021 using HBONE"), 1)
        .unwrap();
    let log = h.m.log("a");
    assert_eq!(
        log.matches("is zring itself").count(),
        refused,
        "appb's ports refused as zring's:\n{log}"
    );
    h.m.serve("appb", 80, 1).unwrap();
    h.m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    h.unharmed("after calls to zring's own ports");
}

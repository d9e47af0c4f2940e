//! Captured connections from pods to zring's own ports: refused with a reset and logged.

use super::*;

/// Captured connections from a pod to zring's own ports (at another node's pod, and at its own
/// node's address) are refused with a reset and logged; the pods' own traffic goes on.
#[test]
fn own_ports_through_capture_are_refused() {
    let mut h = hostile(&[]);
    let node_a = h.m.lab.node("a").underlay_ip();
    let mut refused = 0;
    for ip in [APPB, node_a] {
        for port in zring::config::OWN_PORTS {
            let r = h.m.exchange("appa", (ip, port).into(), 1024, 1024);
            assert!(r.is_err(), "appa reached {ip}:{port}: {r:?}");
            refused += 1;
            h.logged("a", "one of zring's own ports", refused);
        }
    }
    h.m.serve("appb", 80, 1).unwrap();
    h.m.must_exchange("appa", (APPB, 80).into(), MIB, MIB);
    h.unharmed("after calls to zring's own ports");
}

//! The operations settings: where the admin API's mutating endpoints are served
//! (`ZRING_ADMIN_SOCKET`, `ZRING_ADMIN_TCP_WRITES`) and the test-only fault hook
//! (`ZRING_TEST_FAULTS`). Read once at start-up on the main thread, with the rest of `Config`.
//!
//! Why a socket: in node mode zring shares the host's network namespace, so 127.0.0.1:15000 is
//! reachable by every host-network process on the node. A Unix socket in a directory only
//! zring's user may enter is reachable only by the node proxy's operator (`kubectl exec`); the
//! read-only endpoints stay on TCP, where `istioctl` looks for them.

use std::path::PathBuf;

use super::parse::{err, parse_bool};
use super::{ConfigError, ProxyMode};

/// The admin socket's path when `ZRING_ADMIN_SOCKET` is unset, under the temporary directory
/// (`$TMPDIR`, else `/tmp`: an emptyDir of the pod in both manifests, so private to it).
pub const DEFAULT_ADMIN_SOCKET: &str = "zring/admin.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ops {
    /// The admin API's Unix socket (every endpoint, mutating ones included); `None`: off.
    pub admin_socket: Option<PathBuf>,
    /// Whether the TCP admin listener (127.0.0.1:15000) takes mutating requests too. Off in node
    /// mode (the host's loopback is shared), on in shared mode (the pod's loopback is its own,
    /// and `istioctl ztunnel-config log` posts there).
    pub admin_tcp_writes: bool,
    /// `ZRING_TEST_FAULTS` as given: faults the tests inject (`core::Faults` parses it).
    /// Never set in production; start-up refuses it inside a Kubernetes pod.
    pub test_faults: Option<String>,
}

pub(super) fn read(
    var: impl Fn(&'static str) -> Option<String>,
    mode: ProxyMode,
) -> Result<Ops, ConfigError> {
    let admin_socket = match var("ZRING_ADMIN_SOCKET").as_deref() {
        None => Some(std::env::temp_dir().join(DEFAULT_ADMIN_SOCKET)),
        Some("off") => None,
        Some(p) if p.starts_with('/') => Some(PathBuf::from(p)),
        Some(p) => {
            return Err(err(
                "ZRING_ADMIN_SOCKET",
                p,
                "expected an absolute path, or off",
            ));
        }
    };
    let admin_tcp_writes = parse_bool(
        "ZRING_ADMIN_TCP_WRITES",
        var("ZRING_ADMIN_TCP_WRITES"),
        mode == ProxyMode::Shared,
    )?;
    Ok(Ops {
        admin_socket,
        admin_tcp_writes,
        test_faults: var("ZRING_TEST_FAULTS"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_with(mode: ProxyMode, pairs: &[(&'static str, &str)]) -> Result<Ops, ConfigError> {
        read(
            |k| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            },
            mode,
        )
    }

    #[test]
    fn node_mode_mutates_on_the_socket_only_by_default() {
        let node = read_with(ProxyMode::Node, &[]).unwrap();
        assert!(!node.admin_tcp_writes);
        assert_eq!(
            node.admin_socket,
            Some(std::env::temp_dir().join(DEFAULT_ADMIN_SOCKET))
        );
        assert!(read_with(ProxyMode::Shared, &[]).unwrap().admin_tcp_writes);
        let set = read_with(
            ProxyMode::Node,
            &[
                ("ZRING_ADMIN_SOCKET", "/run/z/a.sock"),
                ("ZRING_ADMIN_TCP_WRITES", "true"),
            ],
        )
        .unwrap();
        assert_eq!(set.admin_socket, Some(PathBuf::from("/run/z/a.sock")));
        assert!(set.admin_tcp_writes);
        let off = read_with(ProxyMode::Node, &[("ZRING_ADMIN_SOCKET", "off")]).unwrap();
        assert_eq!(off.admin_socket, None);
        assert!(read_with(ProxyMode::Node, &[("ZRING_ADMIN_SOCKET", "rel.sock")]).is_err());
        assert!(read_with(ProxyMode::Node, &[("ZRING_ADMIN_TCP_WRITES", "maybe")]).is_err());
    }
}

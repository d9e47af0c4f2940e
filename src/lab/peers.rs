//! Other node proxies to measure against and interoperate with, kept outside the repository in
//! `../shared/peers/` (beside the checkout; CI always has it, a newcomer's clone may not).
//! Today: the real istio/ztunnel (`peers/ztunnel/ztunnel.xz`, see its README there), the test
//! CA its `FAKE_CA=true` signs with, and what it takes to run it as a lab node's proxy beside
//! zring ([`ztunnel_dedicated`], [`mixed_mesh`]).
//!
//! Runs on a test thread. Tests that need a peer are `#[ignore]`d with a message naming how to
//! run them, and `.ci/run` runs them with `--include-ignored`; once running, a missing peer is
//! a failure ([`PeerError::Missing`]), never a pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::{Lab, LabError, Mesh, NodeProxy};
use crate::identity::{ROOT_CERT_FILE, ROOT_KEY_FILE};

/// Overrides where the peers live (default: `../shared/peers` beside the crate).
pub const PEERS_DIR_ENV: &str = "ZRING_PEERS_DIR";

/// What a test says when a peer is needed but absent.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(
        "peer {what} not found at {}: tests that compare with the real ztunnel need \
         ../shared/peers/ztunnel/ beside the checkout (CI has it), or {PEERS_DIR_ENV} naming \
         a directory that holds ztunnel/ztunnel.xz",
        path.display()
    )]
    Missing { what: &'static str, path: PathBuf },
    #[error("cannot unpack {}: {reason}", path.display())]
    Unpack { path: PathBuf, reason: String },
    #[error("cannot install the test CA into {}: {source}", dir.display())]
    TestCa {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lab(#[from] LabError),
}

/// The directory holding the peers: `$ZRING_PEERS_DIR`, else `../shared/peers` beside the
/// crate root.
pub fn dir() -> PathBuf {
    match std::env::var_os(PEERS_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers"),
    }
}

/// Whether the real ztunnel is there (for messages; tests call [`ztunnel`]).
pub fn has_ztunnel() -> bool {
    dir().join("ztunnel/ztunnel.xz").is_file()
}

/// Serializes unpacking between test threads of one process.
static UNPACK: Mutex<()> = Mutex::new(());

/// The real ztunnel's binary, unpacked once (per peer file version) into the temp dir:
/// `ztunnel.xz` is decompressed with `xz`, to a name that carries the archive's size and
/// modification time, so a newer peer is unpacked afresh.
pub fn ztunnel() -> Result<PathBuf, PeerError> {
    let xz = dir().join("ztunnel/ztunnel.xz");
    let meta = std::fs::metadata(&xz).map_err(|_| PeerError::Missing {
        what: "ztunnel",
        path: xz.clone(),
    })?;
    let stamp = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let bin = std::env::temp_dir().join(format!("zring-peer-ztunnel-{}-{stamp}", meta.len()));
    let _serial = UNPACK.lock().unwrap_or_else(|p| p.into_inner());
    if bin.is_file() {
        return Ok(bin);
    }
    let unpack_err = |reason: String| PeerError::Unpack {
        path: xz.clone(),
        reason,
    };
    let out = Command::new("xz")
        .arg("-dc")
        .arg(&xz)
        .output()
        .map_err(|e| unpack_err(format!("cannot run xz (install the xz-utils package): {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(unpack_err(format!("xz failed ({}): {stderr}", out.status)));
    }
    // Written under a private name and renamed, so another process never runs half a file.
    let tmp = bin.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&tmp, &out.stdout)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &bin)
    };
    write().map_err(|e| unpack_err(format!("cannot write {}: {e}", bin.display())))?;
    Ok(bin)
}

/// The test root ztunnel's `FAKE_CA=true` signs workload certificates with, beside its binary:
/// (certificate, private key), PEM files.
pub fn ztunnel_test_ca() -> Result<(PathBuf, PathBuf), PeerError> {
    let here = dir().join("ztunnel");
    let found = |name: &str| {
        let path = here.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(PeerError::Missing {
                what: "ztunnel test CA",
                path,
            })
        }
    };
    Ok((found("test-root-cert.pem")?, found("test-root-key.pem")?))
}

/// Makes `dir` a development CA directory for zring (`ZRING_DEV_CA_DIR`) holding ztunnel's test
/// root, so zring issues its workload certificates from the root ztunnel's fake CA uses and
/// each trusts the other's. The directory must not hold another root yet (zring never replaces
/// one: it would keep its own).
pub fn install_ztunnel_test_ca(dir: &Path) -> Result<(), PeerError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let (cert, key) = ztunnel_test_ca()?;
    let err = |source| PeerError::TestCa {
        dir: dir.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    for (from, name, mode) in [(cert, ROOT_CERT_FILE, 0o644), (key, ROOT_KEY_FILE, 0o600)] {
        let to = dir.join(name);
        if to.exists() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists", to.display()),
            )));
        }
        std::fs::copy(&from, &to).map_err(err)?;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    }
    Ok(())
}

/// The pod a dedicated-mode ztunnel proxies for (its `PROXY_WORKLOAD_INFO`), which must be a
/// workload of the local config with this namespace, name and service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dedicated<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub service_account: &'a str,
}

/// The real ztunnel as a lab node's proxy, facts from its README: it has no node-level mode
/// any more, so it runs in dedicated mode as the node's one pod, listening transparently (as
/// root) behind the lab's TPROXY rules; no xDS and no CA (local config, its fake CA signing with
/// the test root); its upstream sockets marked 1337 as the capture rules expect; one worker.
/// [`start_sides`] gives it this environment over the mesh's (which is zring's), so
/// `PROXY_MODE` and the like stay ztunnel's. Ready once it listens on the capture ports.
pub fn ztunnel_dedicated(pod: Dedicated<'_>) -> Result<NodeProxy, PeerError> {
    let mut proxy = NodeProxy::other(&ztunnel()?);
    proxy.args = vec!["proxy".into()];
    let Dedicated {
        namespace,
        name,
        service_account,
    } = pod;
    proxy.env = ztunnel_env(&[
        ("PROXY_MODE", "dedicated"),
        (
            "PROXY_WORKLOAD_INFO",
            &format!("{namespace}/{name}/{service_account}"),
        ),
    ]);
    Ok(proxy)
}

/// ztunnel's environment in the lab: `mode` (its capture mode and what goes with it), then
/// what every lab ztunnel shares: no xDS and no CA (local config, its fake CA signing with the
/// test root), upstream sockets marked 1337 as the capture rules expect, one worker.
fn ztunnel_env(mode: &[(&str, &str)]) -> Vec<(String, String)> {
    const SHARED: [(&str, &str); 7] = [
        ("XDS_ADDRESS", ""),
        ("CA_ADDRESS", ""),
        ("FAKE_CA", "true"),
        ("PACKET_MARK", "1337"),
        ("ZTUNNEL_WORKER_THREADS", "1"),
        ("CLUSTER_ID", "Kubernetes"),
        ("TRUST_DOMAIN", "cluster.local"),
    ];
    mode.iter()
        .chain(&SHARED)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The real ztunnel in in-pod mode (`PROXY_MODE=shared`), as Istio runs it: pods arrive from
/// the mesh's fake istio-cni agent (`INPOD_UDS`, set by [`Mesh::start_inpod`]'s launch); no
/// xDS and no CA (local config, its fake CA signing with the test root); one worker. Ready
/// once its readiness port listens in the node's namespace (its pod listeners are inside the
/// pods, and the agent's acks say when they are up).
pub fn ztunnel_inpod() -> Result<NodeProxy, PeerError> {
    let mut proxy = NodeProxy::other(&ztunnel()?);
    proxy.args = vec!["proxy".into()];
    proxy.ready = super::mesh::Ready::Listening(vec![super::mesh::READINESS_PORT]);
    proxy.env = ztunnel_env(&[("PROXY_MODE", "shared")]);
    Ok(proxy)
}

/// Which node proxy serves a node of a [`mixed_mesh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side<'a> {
    /// zring, in node mode (the mesh's own proxy).
    Zring,
    /// The real ztunnel, dedicated to the node's one pod ([`ztunnel_dedicated`]).
    ZtunnelDedicated(Dedicated<'a>),
}

/// A mesh of zring and the real ztunnel on `lab`'s nodes: `config` (ztunnel's local-config
/// format, which both read) as every node's `LOCAL_XDS_PATH`, the mesh's development CA
/// directory holding ztunnel's test root (so zring's and ztunnel's certificates chain to one
/// root), then on each of `nodes` in order the capture rules and its proxy, started and ready.
/// `env` goes to every proxy under the proxy's own (see [`Mesh::start_proxy`]).
pub fn mixed_mesh(
    lab: Lab,
    zring: &Path,
    config: &str,
    nodes: &[(&str, Side<'_>)],
    env: &[(&str, &str)],
) -> Result<Mesh, PeerError> {
    let mut mesh = Mesh::start(lab, zring, config, &[], env)?;
    install_ztunnel_test_ca(&mesh.ca_dir)?;
    start_sides(&mut mesh, nodes)?;
    Ok(mesh)
}

/// On each of `nodes` of `mesh`, in order: the capture rules, then its proxy, started and
/// ready. [`mixed_mesh`] without its shared root: zring uses whatever `mesh.ca_dir` holds
/// (a root of its own if empty), so a test can give the two implementations different roots.
pub fn start_sides(mesh: &mut Mesh, nodes: &[(&str, Side<'_>)]) -> Result<(), PeerError> {
    for (node, side) in nodes {
        mesh.lab.redirect(mesh.lab.node(node))?;
        match side {
            Side::Zring => mesh.start_node(node, &[])?,
            Side::ZtunnelDedicated(pod) => {
                // ztunnel keeps no capture set of its own: the lab enrolls the pod it serves.
                let ip = mesh.lab.pod(pod.name).ip();
                mesh.lab.enroll(mesh.lab.node(node), &[ip])?;
                let proxy = ztunnel_dedicated(*pod)?;
                // A proxy's own environment goes under the mesh's; ztunnel's must win over
                // zring's settings (`PROXY_MODE=node`, say), so it is the node's too.
                let env = proxy.env.clone();
                let env: Vec<(&str, &str)> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                mesh.start_node_with(node, proxy, &env)?
            }
        };
    }
    Ok(())
}

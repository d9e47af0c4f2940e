//! Other node proxies to measure against and interoperate with, kept outside the repository in
//! `../shared/peers/` (beside the checkout; CI always has it, a newcomer's clone may not).
//! Today: the real istio/ztunnel (`peers/ztunnel/ztunnel.xz`, see its README there).
//!
//! Runs on a test thread. Tests that need a peer are `#[ignore]`d with a message naming how to
//! run them, and `.ci/run` runs them with `--include-ignored`; once running, a missing peer is
//! a failure ([`PeerError::Missing`]), never a pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

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

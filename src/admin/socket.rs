//! The admin Unix socket (`ZRING_ADMIN_SOCKET`): bound on the main thread at start-up, mode
//! 0600, in a directory only zring's user may write, so only that user (the node proxy's
//! operator, through `kubectl exec … zring admin`) may connect. Unlike 127.0.0.1:15000 in node
//! mode, no other host-network process reaches it: a Unix socket path is in the filesystem, not
//! in the network namespace (never an abstract socket, which would be).
//!
//! The socket is bound under a temporary name, given its mode, then renamed into place, so it is
//! never connectable with looser permissions, and a stale socket of an earlier run is replaced
//! atomically (the newest process owns the path).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use super::AdminError;

/// Binds the admin socket at `path`, creating its directory (0700) if missing.
pub fn bind(path: &Path) -> Result<UnixListener, AdminError> {
    let fail = |what: &str, source: std::io::Error| AdminError::Socket {
        path: path.to_owned(),
        what: what.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("cannot create its directory", e))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp: PathBuf = dir.join(format!(".{name}.{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp).map_err(|e| fail("cannot bind", e))?;
    let placed = (|| {
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail("cannot set its mode", e))?;
        // Whoever may write the directory may replace the socket: only zring's own user.
        let me = std::fs::metadata(&temp)
            .map_err(|e| fail("cannot stat it", e))?
            .uid();
        let d = std::fs::metadata(dir).map_err(|e| fail("cannot stat its directory", e))?;
        if d.uid() != me || d.mode() & 0o022 != 0 {
            return Err(fail(
                "refusing its directory",
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "{} must be owned by uid {me} and writable by it alone (owner {}, mode {:o})",
                        dir.display(),
                        d.uid(),
                        d.mode() & 0o7777
                    ),
                ),
            ));
        }
        std::fs::rename(&temp, path).map_err(|e| fail("cannot move it into place", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| fail("cannot make it non-blocking", e))
    })();
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_private_and_replaces_a_stale_socket() {
        let dir = std::env::temp_dir().join(format!("zring-admin-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/admin.sock");
        let first = bind(&path).unwrap();
        drop(first);
        // The stale socket of an earlier run is replaced.
        let _l = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let d = std::fs::metadata(path.parent().unwrap()).unwrap().mode();
        assert_eq!(d & 0o777, 0o700, "{d:o}");
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        // A directory others may write is refused.
        let open = dir.join("open");
        std::fs::create_dir_all(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = bind(&open.join("admin.sock")).unwrap_err().to_string();
        assert!(e.contains("writable by it alone"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

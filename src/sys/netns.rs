//! Network namespaces and process signals for the lab (the `lab` module): the only `unsafe` the lab
//! needs, wrapped so the lab itself stays safe code.
//!
//! Runs on whichever thread calls it; [`enter`] affects only the *calling thread*. Namespaces
//! are the ones `ip netns add` made, reachable as bind mounts under [`NETNS_DIR`].
//!
//! Invariant: `setns(CLONE_NEWNET)` is per thread and safe in a multi-threaded process (unlike
//! `CLONE_NEWNS` or `CLONE_NEWUSER`), so a thread that entered a namespace keeps every socket it
//! creates there while the rest of the process stays where it was. Callers enter from a thread
//! they own (a fresh `std::thread`), never from a pooled or runtime thread they do not control.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// Where `ip netns add NAME` bind-mounts the namespace it creates.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Path of the named namespace's bind mount.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Moves the calling thread into the network namespace named `name` (as listed by
/// `ip netns list`). Other threads of the process are unaffected.
pub fn enter(name: &str) -> io::Result<()> {
    let file = File::open(path(name))?;
    enter_fd(file.as_fd())
}

/// Moves the calling thread into the network namespace that `fd` refers to (an open
/// `/var/run/netns/NAME` or `/proc/PID/ns/net`).
pub fn enter_fd(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor borrowed for the call; setns only reads it and changes the
    // calling thread's network namespace, touching no memory of ours.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` (e.g. `libc::SIGTERM`) to process `pid`.
///
/// The caller must own `pid` as an unreaped child (so it cannot have been recycled for another
/// process), or otherwise know it is the process it means.
pub fn signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    if pid <= 0 {
        // kill(0 or negative) would signal whole process groups, ours included.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pid must be positive",
        ));
    }
    // SAFETY: kill takes plain integers and touches no memory; a positive pid targets exactly one
    // process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_is_under_netns_dir() {
        assert_eq!(path("zr1-0-a"), PathBuf::from("/var/run/netns/zr1-0-a"));
    }

    #[test]
    fn missing_namespace_is_not_found() {
        let err = enter("zr-no-such-namespace").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn signal_refuses_process_groups() {
        assert!(signal(0, 0).is_err());
        assert!(signal(u32::MAX, 0).is_err());
    }

    #[test]
    fn signal_zero_probes_ourselves() {
        signal(std::process::id(), 0).unwrap();
    }
}

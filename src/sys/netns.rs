//! Network namespaces and process signals: entering a namespace (the lab's pods and nodes, and
//! in-pod mode's helper threads, which create sockets inside enrolled pods), a guard that comes
//! back ([`Visit`]), the namespace a socket belongs to, and signals for the lab's processes.
//!
//! Runs on whichever thread calls it; [`enter`] affects only the *calling thread*. Named
//! namespaces are the ones `ip netns add` made, reachable as bind mounts under [`NETNS_DIR`].
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

/// The calling thread's own network namespace, as a descriptor to come back to.
pub fn current() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

/// A stay in another network namespace by the calling thread: [`Visit::enter`] keeps a
/// descriptor of the thread's namespace and goes into the target; [`Visit::leave`] (or drop)
/// comes back. Sockets created meanwhile stay in the target namespace for their whole life.
///
/// Coming back cannot fail in practice (the descriptor is open and names a namespace the thread
/// was in); if it ever did, the thread would go on creating sockets in a pod's namespace, so a
/// drop that cannot come back aborts the process rather than let that happen.
#[derive(Debug)]
pub struct Visit {
    home: Option<File>,
}

impl Visit {
    pub fn enter(target: BorrowedFd<'_>) -> io::Result<Visit> {
        let home = current()?;
        enter_fd(target)?;
        Ok(Visit { home: Some(home) })
    }

    /// Comes back to the namespace the thread was in before [`enter`](Self::enter).
    pub fn leave(mut self) -> io::Result<()> {
        let home = self.home.take().expect("left once");
        enter_fd(home.as_fd())
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        if let Some(home) = self.home.take()
            && let Err(e) = enter_fd(home.as_fd())
        {
            eprintln!("fatal: cannot return to the thread's own network namespace: {e}");
            std::process::abort();
        }
    }
}

/// `SIOCGSKNS`: a descriptor of the network namespace a socket lives in (linux/sockios.h).
const SIOCGSKNS: libc::c_ulong = 0x894C;

/// The network namespace socket `fd` was created in, as an open descriptor (compare
/// namespaces by the (device, inode) of such descriptors).
pub fn of_socket(fd: BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: SIOCGSKNS takes no argument and returns a new descriptor (or -1); `fd` is borrowed
    // alive for the call.
    let ns = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSKNS as _) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ns` was just returned by the kernel as a new descriptor nobody else owns.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(ns) };
    // The kernel does not set close-on-exec on it; the lab's children must not inherit it.
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(owned)
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
    fn a_socket_knows_its_namespace_and_a_visit_comes_back() {
        let home = current().unwrap();
        let id = |f: BorrowedFd<'_>| crate::sys::uds::file_id(f).unwrap();
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(id(of_socket(s.as_fd()).unwrap().as_fd()), id(home.as_fd()));
        // A visit to our own namespace is a round trip that leaves the thread where it was.
        let v = Visit::enter(home.as_fd()).unwrap();
        v.leave().unwrap();
        assert_eq!(id(current().unwrap().as_fd()), id(home.as_fd()));
    }

    #[test]
    fn signal_zero_probes_ourselves() {
        signal(std::process::id(), 0).unwrap();
    }
}

//! SOCK_SEQPACKET Unix sockets carrying descriptors (SCM_RIGHTS), and the check that a received
//! descriptor is a network namespace: the kernel side of istio-cni's ZDS protocol
//! (the in-pod client), for the client and for the lab's fake node agent (the lab's `cni` module).
//!
//! Runs on whichever thread calls it; every call is blocking (the in-pod thread and test threads
//! only, never a core). [`wait_readable`] is the one way to wait with a deadline or to be woken
//! by a second descriptor.
//!
//! Invariants:
//! - a packet is received whole or reported as [`RecvError::Truncated`]; a descriptor the kernel
//!   handed us is always wrapped in an `OwnedFd` at once, so none leaks, whatever the caller
//!   does with the packet;
//! - every socket is created `SOCK_CLOEXEC`, every received descriptor `MSG_CMSG_CLOEXEC`: the
//!   lab's child processes inherit none of them.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// At most this many descriptors are taken from one packet; the kernel closes any beyond it
/// (and sets MSG_CTRUNC, which [`SeqPacket::recv`] reports).
pub const MAX_FDS: usize = 4;
/// At most this many descriptors are sent with one packet: more than [`MAX_FDS`], so tests can
/// play a hostile peer.
pub const MAX_SEND_FDS: usize = 8;

/// Why [`SeqPacket::recv`] returned no packet.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error("recvmsg: {0}")]
    Io(#[from] io::Error),
    /// The packet was larger than the buffer; its tail is lost.
    #[error("packet larger than {0} bytes")]
    Truncated(usize),
    /// The packet carried more control data than fits (more than [`MAX_FDS`] descriptors).
    #[error("packet carried more than {MAX_FDS} descriptors or other control data")]
    ControlTruncated,
}

/// One received packet: its length in the caller's buffer and the descriptors that came with it.
#[derive(Debug)]
pub struct Packet {
    pub len: usize,
    pub fds: Vec<OwnedFd>,
}

/// A connected SOCK_SEQPACKET Unix socket: message boundaries are kept, descriptors travel.
#[derive(Debug)]
pub struct SeqPacket {
    fd: OwnedFd,
}

/// A listening SOCK_SEQPACKET Unix socket (the node agent's side).
#[derive(Debug)]
pub struct SeqPacketListener {
    fd: OwnedFd,
}

fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments; the result is checked before it is wrapped.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `sockaddr_un` for `path` and its length; paths too long for `sun_path` are refused.
fn unix_addr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data for which all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { MaybeUninit::zeroed().assume_init() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    // Keep one byte for the terminating NUL.
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unusable Unix socket path {}", path.display()),
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

impl SeqPacket {
    /// Connects to the listener bound at `path`.
    pub fn connect(path: &Path) -> io::Result<SeqPacket> {
        let fd = seqpacket_socket()?;
        let (addr, len) = unix_addr(path)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes living across the call.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SeqPacket { fd })
    }

    /// A connected pair, for tests.
    pub fn pair() -> io::Result<(SeqPacket, SeqPacket)> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` is a writable array of two ints, as socketpair requires.
        let rc = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created by socketpair and are owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((SeqPacket { fd: a }, SeqPacket { fd: b }))
    }

    /// Sends `data` as one packet, with `fds` attached as SCM_RIGHTS when not empty.
    pub fn send(&self, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        if fds.len() > MAX_SEND_FDS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many descriptors for one packet",
            ));
        }
        let mut iov = libc::iovec {
            iov_base: data.as_ptr().cast_mut().cast(),
            iov_len: data.len(),
        };
        // u64 words keep the control buffer aligned for cmsghdr.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain data for which all-zero bytes are a valid (empty) value.
        let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let payload = (fds.len() * size_of::<RawFd>()) as libc::c_uint;
            // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
            let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
            debug_assert!(space <= size_of::<[u64; 8]>());
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: msg_control points at `space` writable, aligned bytes, so the first header
            // exists and its data area holds `fds.len()` ints (CMSG_SPACE said so).
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for (i, fd) in fds.iter().enumerate() {
                    data.add(i).write_unaligned(fd.as_raw_fd());
                }
            }
        }
        // SAFETY: `msg` points at `iov` (and `control`), all alive across the call; the kernel
        // only reads them. MSG_NOSIGNAL turns a closed peer into EPIPE instead of a signal.
        let n = unsafe { libc::sendmsg(self.fd.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n as usize != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short packet write",
            ));
        }
        Ok(())
    }

    /// Receives one packet into `buf`, with any descriptors it carried. `Ok` with `len` 0 means
    /// the peer closed (an empty packet cannot be told apart, and ZDS never sends one).
    pub fn recv(&self, buf: &mut [u8]) -> Result<Packet, RecvError> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut control = [0u64; 8];
        // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
        let space = unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as libc::c_uint) };
        debug_assert!(space as usize <= size_of::<[u64; 8]>());
        // SAFETY: msghdr is plain data for which all-zero bytes are a valid value.
        let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points at `iov` over `buf` and at `control`, all writable and alive
        // across the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            return Err(RecvError::Io(io::Error::last_os_error()));
        }
        // Take ownership of every descriptor first, so an error below still closes them.
        let mut fds = Vec::new();
        // SAFETY: the kernel filled `msg_controllen` bytes of `control` with well-formed headers;
        // CMSG_FIRSTHDR/NXTHDR stay inside that length, and each SCM_RIGHTS header's data holds
        // (cmsg_len - CMSG_LEN(0)) / 4 descriptors newly installed in our table, owned by us.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    for i in 0..bytes / size_of::<RawFd>() {
                        fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(RecvError::Truncated(buf.len()));
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(RecvError::ControlTruncated);
        }
        Ok(Packet {
            len: n as usize,
            fds,
        })
    }

    /// Bounds how long [`send`](Self::send) may block on a peer that stops reading
    /// (SO_SNDTIMEO); past it the send fails with `WouldBlock`.
    pub fn set_send_timeout(&self, timeout: Duration) -> io::Result<()> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        // SAFETY: `tv` is a valid timeval alive across the call; the kernel copies it.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Ends both directions: a thread blocked in `recv` on this socket (or on the peer) wakes.
    pub fn shutdown(&self) -> io::Result<()> {
        // SAFETY: plain integer arguments on a descriptor we own.
        if unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsFd for SeqPacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl SeqPacketListener {
    /// Binds and listens at `path`, replacing a stale socket file left there.
    pub fn bind(path: &Path) -> io::Result<SeqPacketListener> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let fd = seqpacket_socket()?;
        let (addr, len) = unix_addr(path)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes living across the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: plain integer arguments on a descriptor we own.
        if unsafe { libc::listen(fd.as_raw_fd(), 16) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(SeqPacketListener { fd })
    }

    /// Accepts one connection (blocking; pair with [`wait_readable`] for a deadline).
    pub fn accept(&self) -> io::Result<SeqPacket> {
        // SAFETY: null address pointers ask accept4 not to report the peer's address.
        let fd = unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
        Ok(SeqPacket {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

impl AsFd for SeqPacketListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Waits until one of `fds` is readable (or hung up), or `timeout` passes (`None`: forever).
/// Returns, per descriptor, whether it is ready; all false on timeout. EINTR counts as a
/// timeout-free wake with nothing ready, so callers simply loop.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| {
        // Round up so a short remaining time never becomes a busy zero-timeout poll.
        i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
    });
    // SAFETY: `polls` is a writable array of `polls.len()` pollfd structs alive across the call.
    let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(polls.iter().map(|p| p.revents != 0).collect())
}

/// Whether `fd` refers to a network namespace (`ioctl(NS_GET_NSTYPE)` answers CLONE_NEWNET).
/// A descriptor that is no namespace at all (a pipe, a file) answers `Ok(false)`.
pub fn is_netns(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // _IO(NSIO = 0xb7, 3) from linux/nsfs.h.
    const NS_GET_NSTYPE: libc::c_ulong = (0xb7 << 8) | 0x3;
    // SAFETY: NS_GET_NSTYPE takes no argument and writes no memory; on a descriptor that is not
    // an nsfs file the kernel answers ENOTTY.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTTY | libc::EINVAL | libc::EBADF) => Ok(false),
            _ => Err(e),
        };
    }
    Ok(rc == libc::CLONE_NEWNET)
}

/// The (device, inode) pair naming the file `fd` refers to: two descriptors of the same network
/// namespace share it, whoever opened them.
pub fn file_id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: stat is plain data for which all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: `st` is writable and alive across the call.
    if unsafe { libc::fstat(fd.as_raw_fd(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_keep_boundaries_and_carry_descriptors() {
        let (a, b) = SeqPacket::pair().unwrap();
        let netns = std::fs::File::open("/proc/self/ns/net").unwrap();
        a.send(b"first", &[netns.as_fd()]).unwrap();
        a.send(b"second", &[]).unwrap();
        let mut buf = [0u8; 64];
        let p = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..p.len], b"first");
        assert_eq!(p.fds.len(), 1);
        assert!(is_netns(p.fds[0].as_fd()).unwrap());
        assert_eq!(
            file_id(p.fds[0].as_fd()).unwrap(),
            file_id(netns.as_fd()).unwrap()
        );
        let p = b.recv(&mut buf).unwrap();
        assert_eq!((&buf[..p.len], p.fds.len()), (&b"second"[..], 0));
        drop(a);
        assert_eq!(b.recv(&mut buf).unwrap().len, 0, "closed peer reads as 0");
    }

    #[test]
    fn oversized_packets_and_descriptor_floods_are_errors_without_leaks() {
        let (a, b) = SeqPacket::pair().unwrap();
        a.send(&[7u8; 100], &[]).unwrap();
        let mut small = [0u8; 10];
        assert!(matches!(b.recv(&mut small), Err(RecvError::Truncated(10))));

        let files: Vec<_> = (0..MAX_FDS)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let borrowed: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
        a.send(b"x", &borrowed).unwrap();
        let p = b.recv(&mut [0u8; 8]).unwrap();
        assert_eq!(p.fds.len(), MAX_FDS);
        assert!(
            !is_netns(p.fds[0].as_fd()).unwrap(),
            "/dev/null is no netns"
        );
    }

    #[test]
    fn pipes_are_not_namespaces() {
        let (r, _w) = std::io::pipe().unwrap();
        assert!(!is_netns(r.as_fd()).unwrap());
        let uts = std::fs::File::open("/proc/self/ns/uts").unwrap();
        assert!(
            !is_netns(uts.as_fd()).unwrap(),
            "a namespace of another type"
        );
    }

    #[test]
    fn wait_readable_times_out_then_sees_data() {
        let (a, b) = SeqPacket::pair().unwrap();
        let ready = wait_readable(&[b.as_fd()], Some(Duration::from_millis(1))).unwrap();
        assert_eq!(ready, [false]);
        a.send(b"x", &[]).unwrap();
        assert_eq!(wait_readable(&[b.as_fd()], None).unwrap(), [true]);
    }

    #[test]
    fn listener_accepts_a_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zds.sock");
        let l = SeqPacketListener::bind(&path).unwrap();
        let c = SeqPacket::connect(&path).unwrap();
        let s = l.accept().unwrap();
        c.send(b"hello", &[]).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.recv(&mut buf).unwrap().len, 5);
        // Binding again replaces the stale file.
        drop(l);
        assert!(SeqPacketListener::bind(&path).is_ok());
        assert!(SeqPacket::connect(&dir.path().join("absent")).is_err());
    }
}

//! splice(2) between TCP sockets and a pipe, for plaintext passthrough that never copies the
//! bytes into user space, and the read-only access to a split monoio socket it needs.
//!
//! Called by `net::copy` on the cores, with non-blocking descriptors only (the caller waits for
//! readiness through monoio and retries on `WouldBlock`), so no call here ever blocks a core.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use monoio::io::{AsyncWriteRent, OwnedReadHalf, OwnedWriteHalf};

/// A pipe whose two ends stay open as long as it lives; both ends non-blocking.
#[derive(Debug)]
pub struct Pipe {
    pub read: OwnedFd,
    pub write: OwnedFd,
}

/// Opens a non-blocking, close-on-exec pipe (the kernel's default capacity, 64 KiB; its pages
/// are allocated only while bytes sit in it, so an idle pipe costs about a kilobyte).
pub fn pipe() -> io::Result<Pipe> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two c_ints for the duration of the call.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok(Pipe { read, write })
}

/// Moves up to `len` bytes from `from` to `to` (one of them a pipe) without blocking:
/// `Ok(0)` is end of stream on `from`, `WouldBlock` means wait for readiness and retry.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets are allowed (sockets and pipes have none); a bad descriptor or an
    // unsupported pair yields an error, never undefined behaviour.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sets O_NONBLOCK on `fd`. splice honours the socket's own blocking mode, not only
/// SPLICE_F_NONBLOCK, and io_uring accepts sockets without it (monoio's accept leaves them
/// blocking); io_uring's own socket operations work the same either way.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL take and return plain ints; a bad fd yields EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        return Ok(());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The stream behind a monoio read half, to wait for its readiness (`readable`) and read its
/// descriptor; both take `&self` and touch only the stream's shared descriptor.
pub fn read_half<T: AsRawFd>(half: &OwnedReadHalf<T>) -> &T {
    // SAFETY: monoio's split keeps the stream in an `Rc<UnsafeCell<_>>` shared by the two
    // halves, and reads it the same way for its own `&self` accessors (`peer_addr`); the
    // stream lives as long as `half`, and the caller only calls `&self` methods that touch the
    // reference-counted descriptor, never the state the other half's operations mutate.
    unsafe { &*half.0.get() }
}

/// [`read_half`] for the write half, to wait for writability.
pub fn write_half<T: AsRawFd + AsyncWriteRent>(half: &OwnedWriteHalf<T>) -> &T {
    // SAFETY: as in `read_half`.
    unsafe { &*half.0.get() }
}

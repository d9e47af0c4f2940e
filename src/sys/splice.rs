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
    /// Bytes the pipe holds: the most one splice into it can move.
    pub capacity: usize,
}

/// The capacity asked for each pipe. With the default 16 slots a splice out of a TCP socket
/// stops after 16 socket buffers (64 KiB, or less where the peer's segments are small), though
/// the receive queue of a bulk flow holds far more: in the bench every splice out of the
/// sending pod's socket moved a full 64 KiB. 64 slots cut those calls, and the wake-ups between
/// them, by up to four. The slot array costs the kernel 2.5 KiB per spliced direction; pages
/// are held only while bytes sit in the pipe, which is emptied before the next splice into it.
const PIPE_CAPACITY: usize = 256 * 1024;

/// Opens a non-blocking, close-on-exec pipe of [`PIPE_CAPACITY`] where the kernel grants it and
/// of its default capacity (64 KiB) where it does not (a user over `fs.pipe-user-pages-soft`
/// without `CAP_SYS_RESOURCE`/`CAP_SYS_ADMIN`). Its pages are allocated only while bytes sit in
/// it, so an idle pipe costs a few kilobytes.
pub fn pipe() -> io::Result<Pipe> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid, writable array of two c_ints for the duration of the call.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_SETPIPE_SZ/F_GETPIPE_SZ take and return plain ints on a descriptor we own.
    let grown = unsafe {
        libc::fcntl(
            write.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            PIPE_CAPACITY as libc::c_int,
        )
    };
    let capacity = if grown > 0 {
        grown as usize
    } else {
        // SAFETY: as above.
        match unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) } {
            n if n > 0 => n as usize,
            _ => return Err(io::Error::last_os_error()),
        }
    };
    Ok(Pipe {
        read,
        write,
        capacity,
    })
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    /// One splice takes more than the kernel's default 64 KiB when the socket holds more: the
    /// point of asking for a larger pipe. Run as root (the tests are), so the kernel grants it.
    #[test]
    fn one_splice_moves_more_than_a_default_pipe_holds() {
        const QUEUED: usize = 96 * 1024;
        let pipe = pipe().unwrap();
        assert_eq!(pipe.capacity, PIPE_CAPACITY);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (receiver, _) = listener.accept().unwrap();
        // More than the receive queue may take at once: the writer blocks until we read.
        let writer = std::thread::spawn(move || {
            let _ = sender.write_all(&vec![7u8; 4 * QUEUED]);
        });
        set_nonblocking(receiver.as_raw_fd()).unwrap();
        // Readable only once QUEUED bytes are queued (TCP honours SO_RCVLOWAT in poll).
        let lowat = QUEUED as libc::c_int;
        let mut ready = libc::pollfd {
            fd: receiver.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: SO_RCVLOWAT takes one int; poll gets one valid pollfd.
        unsafe {
            let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let lowat_ptr = (&raw const lowat).cast();
            assert_eq!(
                libc::setsockopt(
                    ready.fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVLOWAT,
                    lowat_ptr,
                    size
                ),
                0
            );
            assert_eq!(
                libc::poll(&mut ready, 1, 10_000),
                1,
                "{QUEUED} bytes never queued"
            );
        }
        let n = splice(receiver.as_raw_fd(), pipe.write.as_raw_fd(), pipe.capacity).unwrap();
        assert!(n > 64 * 1024, "one splice moved only {n} bytes");
        drop(receiver);
        writer.join().unwrap();
    }
}

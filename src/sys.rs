//! Operating-system seams: the only module that may hold `unsafe`.
//!
//! Everything that talks to the kernel below what std, socket2 and monoio offer lives here, each
//! block with a `// SAFETY:` line. The compiler holds the rest of the crate to that:
//! `unsafe_code = "deny"` in Cargo.toml's `[lints.rust]`, allowed only on this module's
//! declaration in `lib.rs`. Functions here are synchronous and cheap; cores call them at connection
//! set-up, the control thread at start-up.

pub mod alloc;
pub mod ifaddrs;
pub mod memcpy;
pub mod netns;
pub mod nfnetlink;
pub mod origdst;
pub mod seccomp;
pub mod socket;
pub mod splice;
pub mod uds;

/// Raises `RLIMIT_NOFILE` as far as allowed: a node proxy holds two descriptors per proxied
/// connection, and the usual soft limit (1024) caps it at a few hundred connections. With
/// CAP_SYS_RESOURCE (a root DaemonSet) both limits go up to the kernel's `fs.nr_open`;
/// otherwise the soft limit goes up to the hard one. Returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if ceiling > lim.rlim_max {
        let wider = libc::rlimit {
            rlim_cur: ceiling,
            rlim_max: ceiling,
        };
        // SAFETY: `wider` is a valid rlimit; without the privilege the call fails with EPERM
        // and changes nothing, and the soft-limit path below still applies.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wider) } == 0 {
            return Ok(ceiling);
        }
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// CPU time (user + system, every thread) process `pid` has used so far, from
/// `/proc/<pid>/stat`, at the kernel's clock-tick resolution (usually 10 ms).
pub fn process_cpu_time(pid: u32) -> std::io::Result<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces; fields after it are
    // plain. utime and stime are fields 14 and 15, so the 12th and 13th after the name.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| std::io::Error::other("malformed /proc stat"))?;
    let mut fields = after_name.split_whitespace().skip(11);
    let mut next = || -> std::io::Result<u64> {
        fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| std::io::Error::other("malformed /proc stat"))
    };
    let ticks = next()? + next()?;
    // SAFETY: sysconf has no preconditions; _SC_CLK_TCK is always supported on Linux.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).unwrap_or(100).max(1);
    Ok(std::time::Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / hz,
    ))
}

/// Resident memory of this process, in bytes (`/proc/self/statm`).
pub fn resident_bytes() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| std::io::Error::other("malformed /proc/self/statm"))?;
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always supported on Linux.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Ok(pages * u64::try_from(page).unwrap_or(4096))
}

/// Whether this process runs with an effective uid of 0 (needed for IP_TRANSPARENT and netns).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Number of open file descriptors of this process (for leak checks and the soak tool).
pub fn open_fds() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

/// CPU time (user + system) the calling thread has used so far.
pub fn thread_cpu_time() -> std::io::Result<std::time::Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::time::Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_time_counts_every_thread() {
        let me = std::process::id();
        let before = process_cpu_time(me).unwrap();
        // Spin until the thread itself has used `ms` of CPU (wall time says nothing on a busy
        // machine).
        let busy = |ms: u64| {
            let start = thread_cpu_time().unwrap();
            let mut x = 0u64;
            while thread_cpu_time().unwrap() - start < std::time::Duration::from_millis(ms) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        };
        std::thread::spawn(move || busy(150)).join().unwrap();
        busy(150);
        let spent = process_cpu_time(me).unwrap() - before;
        // 300 ms on two threads, read at the kernel's tick resolution (10 ms per reading).
        assert!(spent >= std::time::Duration::from_millis(270), "{spent:?}");
        assert!(process_cpu_time(u32::MAX).is_err());
    }
}

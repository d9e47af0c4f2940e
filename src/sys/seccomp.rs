//! A seccomp filter that refuses the io_uring system calls, as container runtimes' default
//! profiles often do, so tests can run zring where io_uring is unavailable for real.
//!
//! Runs in a child process between fork and exec (`Command::pre_exec`), set up by the thread
//! that spawns it (the lab). The filter survives `exec` (with `no_new_privs`, which it sets) and
//! applies to everything the child runs, `ip netns exec` and the program it starts.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `io_uring_setup`, `io_uring_enter`, `io_uring_register`: the same numbers on every
/// architecture Linux gives io_uring (they came after the syscall tables were unified).
const FIRST_IO_URING: u32 = 425;
const LAST_IO_URING: u32 = 427;

// Classic BPF opcodes (linux/filter.h: class | size | mode, class | op | source) and seccomp
// return values (linux/seccomp.h).
/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JGE | BPF_K` (0x05 | 0x30 | 0x00).
const BPF_JMP_JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JGT | BPF_K` (0x05 | 0x20 | 0x00).
const BPF_JMP_JGT_K: u16 = 0x25;
/// `BPF_RET | BPF_K` (0x06 | 0x00).
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
/// Offset of `nr` in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program: io_uring's three calls fail with EPERM, everything else is allowed.
fn program() -> Vec<libc::sock_filter> {
    vec![
        stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR),
        // nr < 425 → allow (skip to the last instruction).
        jump(BPF_JMP_JGE_K, FIRST_IO_URING, 0, 2),
        // nr > 427 → allow; else fall through to the refusal.
        jump(BPF_JMP_JGT_K, LAST_IO_URING, 1, 0),
        stmt(BPF_RET_K, SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
    ]
}

/// Makes `command`'s process (and whatever it execs) unable to use io_uring.
pub fn deny_io_uring(command: &mut Command) {
    let filter = program();
    // SAFETY: the closure runs in the forked child before exec. It only calls prctl(2), which is
    // async-signal-safe, on memory (`filter`, `prog`) allocated before the fork and only read.
    unsafe {
        command.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const prog,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child under the filter cannot set up a ring; without it, it can. `true` and `false`
    /// would not tell: the probe is this test binary itself, re-run as a child.
    #[test]
    fn filtered_child_cannot_use_io_uring() {
        if std::env::var_os("ZRING_SECCOMP_PROBE").is_some() {
            // In the child: report whether io_uring works.
            let works =
                crate::runtime::resolve_driver(crate::config::DriverChoice::Uring, 64).is_ok();
            std::process::exit(if works { 0 } else { 3 });
        }
        let me = std::env::current_exe().unwrap();
        let run = |deny: bool| {
            let mut cmd = Command::new(&me);
            cmd.args([
                "--exact",
                "sys::seccomp::tests::filtered_child_cannot_use_io_uring",
            ])
            .env("ZRING_SECCOMP_PROBE", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
            if deny {
                deny_io_uring(&mut cmd);
            }
            cmd.status().unwrap().code()
        };
        assert_eq!(run(false), Some(0), "io_uring should work on this machine");
        assert_eq!(run(true), Some(3), "the filter did not stop io_uring");
    }
}

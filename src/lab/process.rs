//! Programs the lab runs inside its namespaces (through `ip netns exec`), their log files, and
//! waiting on them with deadlines.
//!
//! Runs on whichever thread holds the [`Lab`](super::Lab) or a [`Process`] handle; every wait
//! polls with a deadline and never blocks without one.
//!
//! Invariants: a [`Process`] is an unreaped child of this process until `kill`/`wait_exit` reaps
//! it, so signalling its pid can never hit a recycled pid; the lab keeps a clone of every handle
//! and kills whatever is still running when it drops.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{LabError, Netns, cmd};
use crate::sys;

/// How often waits look at the log or the exit status again.
const POLL: Duration = Duration::from_millis(10);
/// How much of the log an error shows.
const TAIL_BYTES: u64 = 4096;

/// A program running inside a lab namespace. Clones share the same process.
#[derive(Debug, Clone)]
pub struct Process {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The program's own pid: `ip netns exec` enters the namespace and then execs the program.
    pid: u32,
    /// Program and namespace, for error messages.
    label: String,
    /// Where stdout and stderr are appended.
    log: PathBuf,
    /// Behind a lock so any clone can reap it, exactly once.
    child: Mutex<Child>,
}

/// Starts `command` inside `ns` with stdout and stderr appended to `log`.
///
/// Program, arguments, environment changes (`env`, `env_remove`) and the working directory carry
/// over; `env_clear` and stdio settings do not (stdin is null, output goes to the log).
///
/// With `deny_io_uring`, a seccomp filter refuses the io_uring system calls to the program (as
/// container runtimes often do).
pub(crate) fn spawn(
    ns: &Netns,
    command: &Command,
    log: PathBuf,
    deny_io_uring: bool,
) -> Result<Process, LabError> {
    let label = format!(
        "`{}` in {}",
        std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(|s| s.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        ns.name()
    );
    let mut real = Command::new(cmd::program(cmd::IP));
    real.args(["netns", "exec", ns.name()])
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => real.env(key, value),
            None => real.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        real.current_dir(dir);
    }
    if deny_io_uring {
        sys::seccomp::deny_io_uring(&mut real);
    }
    let io_err = |context: String| move |source| LabError::Io { context, source };
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(io_err(format!("cannot open log {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io_err(format!("cannot open log {}", log.display())))?;
    real.stdin(Stdio::null()).stdout(out).stderr(err);
    let child = real
        .spawn()
        .map_err(io_err(format!("cannot start {label}")))?;
    Ok(Process {
        inner: Arc::new(Inner {
            pid: child.id(),
            label,
            log,
            child: Mutex::new(child),
        }),
    })
}

impl Process {
    /// The program's pid (in the root pid namespace: the lab makes no pid namespaces).
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The file that collects the program's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.inner.log
    }

    /// Everything the program has printed so far (lossily decoded).
    pub fn log(&self) -> String {
        read_from(&self.inner.log, 0)
            .map(|(text, _)| text)
            .unwrap_or_default()
    }

    /// The last few KiB of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let len = std::fs::metadata(&self.inner.log)
            .map(|m| m.len())
            .unwrap_or(0);
        let (text, _) =
            read_from(&self.inner.log, len.saturating_sub(TAIL_BYTES)).unwrap_or_default();
        text
    }

    /// Waits until the log contains `needle`. Fails at once if the program exits first, and after
    /// `timeout` otherwise; both errors carry the log's tail.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<(), LabError> {
        // Scan only what is new each round, overlapping by the needle's length so a needle split
        // across two reads is still found.
        let mut scanned = 0u64;
        self.wait_for(&format!("{needle:?} in the log"), timeout, || {
            let start = scanned.saturating_sub(needle.len() as u64);
            read_from(&self.inner.log, start).is_ok_and(|(text, end)| {
                scanned = end;
                text.contains(needle)
            })
        })
    }

    /// Waits until `ready()` holds, checking every few milliseconds. Fails at once if the
    /// program exits first and after `timeout` otherwise (errors name `what` and carry the log's
    /// tail). The exit status is taken before `ready()` runs, so a program that gets ready and
    /// then exits still counts as ready.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        let what = || format!("{what} of {}", self.inner.label);
        loop {
            let exited = self.try_status()?;
            if ready() {
                return Ok(());
            }
            if let Some(status) = exited {
                return Err(LabError::Exited {
                    what: what(),
                    status: status.to_string(),
                    tail: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: what(),
                    timeout,
                    tail: self.log_tail(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The exit status if the program has exited (reaping it), `None` while it runs.
    pub fn try_status(&self) -> Result<Option<ExitStatus>, LabError> {
        self.child().try_wait().map_err(|source| LabError::Io {
            context: format!("cannot poll {}", self.inner.label),
            source,
        })
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`). A program that has already exited is left alone.
    pub fn signal(&self, signal: i32) -> Result<(), LabError> {
        let mut child = self.child();
        // Checked under the lock: once reaped, the pid could belong to someone else.
        if matches!(child.try_wait(), Ok(Some(_))) {
            return Ok(());
        }
        sys::netns::signal(self.inner.pid, signal).map_err(|source| LabError::Io {
            context: format!("cannot signal {}", self.inner.label),
            source,
        })
    }

    /// Kills the program (SIGKILL) and reaps it.
    pub fn kill(&self) -> Result<ExitStatus, LabError> {
        let mut child = self.child();
        let context = || format!("cannot kill {}", self.inner.label);
        if let Some(status) = child.try_wait().map_err(|source| LabError::Io {
            context: context(),
            source,
        })? {
            return Ok(status);
        }
        child.kill().map_err(|source| LabError::Io {
            context: context(),
            source,
        })?;
        child.wait().map_err(|source| LabError::Io {
            context: context(),
            source,
        })
    }

    /// Waits up to `timeout` for the program to exit; the timeout error carries the log's tail.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!("{} to exit", self.inner.label),
                    timeout,
                    tail: self.log_tail(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        // A panic while holding the lock leaves the Child intact; keep using it.
        self.inner
            .child
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Reads `path` from byte `start` to its current end: (text, end offset).
fn read_from(path: &Path, start: u64) -> std::io::Result<(String, u64)> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((
        String::from_utf8_lossy(&bytes).into_owned(),
        start + bytes.len() as u64,
    ))
}

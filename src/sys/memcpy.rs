//! glibc's large-copy path on AMD CPUs, and the tunable that steers around it.
//!
//! glibc's `memcpy`/`memmove` copy blocks above `glibc.cpu.x86_rep_movsb_threshold` (a few KiB)
//! with `rep movsb`. On this project's machine (AMD EPYC with FSRM, glibc 2.36) that instruction
//! runs at 2.2–2.6 GB/s instead of 50–85 GB/s whenever the destination sits 1 to 31 bytes past
//! the source modulo 64 (a 16 KiB copy, `perf/notes-hbone.md` §9 has the table). rustls copies
//! every byte of plaintext into its TLS record behind a 5-byte record header, which is that case
//! for a 64-byte-aligned source: on HBONE bulk the outbound proxy spent 24–26% of its CPU in that
//! one copy (ztunnel, whose buffers fall differently, 7.5%). Above the threshold glibc uses its
//! vector loop instead, 44–50 GB/s at every alignment.
//!
//! The dynamic loader reads `GLIBC_TUNABLES` once, at exec, so the only way for a process to
//! change the threshold is to be started with it. [`reexec_if_needed`] runs first thing in
//! `main`: on an AMD CPU, when `GLIBC_TUNABLES` does not already name the threshold and
//! `ZRING_MEMCPY_TUNING` is not `off`, it executes this same binary again with the same
//! arguments and the tunable added. Same process id and name, nothing opened yet, about a
//! millisecond.
//!
//! Measured in four same-run A/Bs, HBONE bulk (perf/notes-hbone.md §9): outbound CPU per GiB
//! 0.73–0.79× at one connection and 0.64–0.93× at eight; the inbound unchanged. Intel CPUs
//! are left alone: nothing was measured there.

use std::ffi::{OsStr, OsString};
use std::io;

/// The tunable and the value zring sets: beyond any copy zring makes, so glibc never picks
/// `rep movsb` for it.
pub const TUNABLE: &str = "glibc.cpu.x86_rep_movsb_threshold";
pub const THRESHOLD: u64 = 1 << 30;

/// Why the process runs with or without the tunable, for `zring check` and the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tuning {
    /// `GLIBC_TUNABLES` names the threshold (set by zring's re-exec or by the operator).
    Set(String),
    /// `ZRING_MEMCPY_TUNING=off`.
    Off,
    /// Not an AMD CPU (the vendor from /proc/cpuinfo, if it could be read).
    NotAmd(Option<String>),
    /// A privileged (set-uid or file-capability) exec: the loader ignores tunables then.
    Secure,
    /// Wanted, but this process was not executed again (the exec failed).
    NotApplied,
}

impl std::fmt::Display for Tuning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tuning::Set(v) => write!(f, "GLIBC_TUNABLES={v}"),
            Tuning::Off => f.write_str("glibc's default (ZRING_MEMCPY_TUNING=off)"),
            Tuning::NotAmd(Some(v)) => write!(f, "glibc's default (CPU vendor {v})"),
            Tuning::NotAmd(None) => f.write_str("glibc's default (CPU vendor unknown)"),
            Tuning::Secure => f.write_str("glibc's default (privileged exec ignores tunables)"),
            Tuning::NotApplied => {
                f.write_str("glibc's default (executing again with the tunable failed)")
            }
        }
    }
}

/// What to do given the environment and the CPU: `Err(tuning)` leaves the process as it is,
/// `Ok(value)` is the `GLIBC_TUNABLES` to execute again with. Pure, for the tests.
pub fn decide(
    tunables: Option<&OsStr>,
    opt: Option<&OsStr>,
    vendor: Option<&str>,
    secure: bool,
) -> Result<OsString, Tuning> {
    let current = tunables.map(|t| t.to_string_lossy().into_owned());
    if let Some(t) = &current
        && t.split(':').any(|kv| kv.split('=').next() == Some(TUNABLE))
    {
        return Err(Tuning::Set(t.clone()));
    }
    if opt.is_some_and(|o| o == "off") {
        return Err(Tuning::Off);
    }
    if vendor != Some("AuthenticAMD") {
        return Err(Tuning::NotAmd(vendor.map(str::to_owned)));
    }
    if secure {
        return Err(Tuning::Secure);
    }
    let ours = format!("{TUNABLE}={THRESHOLD}");
    Ok(match current.filter(|t| !t.is_empty()) {
        Some(t) => format!("{t}:{ours}").into(),
        None => ours.into(),
    })
}

/// The CPU vendor string (`AuthenticAMD`, `GenuineIntel`) from /proc/cpuinfo.
pub fn cpu_vendor() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("vendor_id"))
        .and_then(|rest| rest.split(':').nth(1))
        .map(|v| v.trim().to_owned())
}

/// Whether this exec was privileged (the loader's secure mode, `AT_SECURE`).
fn secure_exec() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector the kernel gave this process.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// [`decide`] for this process: its environment, its CPU, its exec.
fn decide_here() -> Result<OsString, Tuning> {
    decide(
        std::env::var_os("GLIBC_TUNABLES").as_deref(),
        std::env::var_os("ZRING_MEMCPY_TUNING").as_deref(),
        cpu_vendor().as_deref(),
        secure_exec(),
    )
}

/// The process's tuning now, without acting on it.
pub fn current() -> Tuning {
    decide_here().err().unwrap_or(Tuning::NotApplied)
}

/// Executes this binary again with the tunable when [`decide`] says so. Returns only if it
/// does not: `Ok` when nothing was needed, the exec's error when it failed (the process then
/// carries on with glibc's default, and [`current`] says so). Call before any thread or file
/// is opened.
pub fn reexec_if_needed() -> io::Result<()> {
    let Ok(value) = decide_here() else {
        return Ok(());
    };
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "zring".into());
    // The binary's own path, not `/proc/self/exe`: the kernel names the process (and its main
    // thread) after the file it executes, and `ps`, `top` and the thread names tests check
    // would read `exe`.
    let exe = std::env::current_exe()?;
    Err(std::process::Command::new(exe)
        .arg0(arg0)
        .args(args)
        .env("GLIBC_TUNABLES", value)
        .exec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMD: Option<&str> = Some("AuthenticAMD");

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    #[test]
    fn an_amd_cpu_without_the_tunable_is_executed_again_with_it() {
        let ours = format!("{TUNABLE}={THRESHOLD}");
        assert_eq!(decide(None, None, AMD, false), Ok(ours.clone().into()));
        assert_eq!(decide(os(""), None, AMD, false), Ok(ours.clone().into()));
        assert_eq!(
            decide(None, os("auto"), AMD, false),
            Ok(ours.clone().into())
        );
        // Other tunables the operator set are kept, ours appended.
        assert_eq!(
            decide(os("glibc.malloc.arena_max=2"), None, AMD, false),
            Ok(format!("glibc.malloc.arena_max=2:{ours}").into())
        );
    }

    #[test]
    fn the_operators_setting_off_switch_other_cpus_and_secure_mode_are_left_alone() {
        // The threshold already named (by the re-exec itself: this is what stops a loop, or by
        // the operator, whose value wins).
        let set = format!("glibc.malloc.arena_max=2:{TUNABLE}=8192");
        assert_eq!(
            decide(os(&set), None, AMD, false),
            Err(Tuning::Set(set.clone()))
        );
        // A tunable whose name merely contains ours does not count as ours.
        assert!(decide(os(&format!("x{TUNABLE}=1")), None, AMD, false).is_ok());
        assert_eq!(decide(None, os("off"), AMD, false), Err(Tuning::Off));
        assert_eq!(
            decide(None, None, Some("GenuineIntel"), false),
            Err(Tuning::NotAmd(Some("GenuineIntel".into())))
        );
        assert_eq!(decide(None, None, None, false), Err(Tuning::NotAmd(None)));
        assert_eq!(decide(None, None, AMD, true), Err(Tuning::Secure));
    }

    #[test]
    fn the_vendor_is_read_from_proc_cpuinfo() {
        let v = cpu_vendor().expect("/proc/cpuinfo names a vendor");
        assert!(!v.is_empty() && !v.contains(':'), "{v:?}");
    }
}

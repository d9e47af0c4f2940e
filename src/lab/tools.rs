//! The programs the lab, the demo and the tests run (`ip`, `nft`, `promtool`, `prometheus`):
//! where they are, and installing the ones a fresh machine lacks, so that the README's two
//! commands (`cargo run --release -- demo`, `cargo test`) set the machine up themselves.
//!
//! [`ensure`] looks each tool up; when some are missing it installs their Debian packages with
//! `apt-get` (as root only), printing one line per step on stderr, and fails saying what to
//! install by hand when it cannot (not root, no `apt-get`, `apt-get` failed). A tool still
//! missing afterwards is an error: callers fail loudly, they never skip.
//!
//! Tests run on parallel threads, and test binaries may run as parallel processes: installs are
//! serialized by a mutex within the process and an advisory lock on [`lock_path`] across
//! processes, and the lookup is repeated once both are held, so only the first caller installs
//! and `apt-get update` runs at most once per install.
//!
//! Runs on the calling thread and blocks (file lookups; `apt-get` when installing): lab, demo
//! and test code only, never the data plane.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, PoisonError};

use crate::capture::cmd;

/// A program the lab or the tests run, each shipped by one Debian package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    /// `ip`: namespaces, links, addresses, routes.
    Ip,
    /// `nft`: the capture rules.
    Nft,
    /// `promtool`: lints real scrapes (tests/metrics.rs).
    Promtool,
    /// `prometheus`: a real server scraping zring (tests/metrics.rs).
    Prometheus,
}

impl Tool {
    /// The program's file name.
    pub fn program(self) -> &'static str {
        match self {
            Tool::Ip => "ip",
            Tool::Nft => "nft",
            Tool::Promtool => "promtool",
            Tool::Prometheus => "prometheus",
        }
    }

    /// The Debian package that ships it.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Ip => "iproute2",
            Tool::Nft => "nftables",
            Tool::Promtool | Tool::Prometheus => "prometheus",
        }
    }

    /// Where the program is, if anywhere: `PATH`, then the sbin and bin directories (the same
    /// lookup `ip` and `nft` get in `capture`).
    pub fn find(self) -> Option<PathBuf> {
        cmd::locate(self.program(), std::env::var_os("PATH").as_deref())
    }

    /// Where the program is, or its bare name while it is not found (running it then fails with
    /// the OS's error).
    pub fn path(self) -> PathBuf {
        self.find().unwrap_or_else(|| PathBuf::from(self.program()))
    }
}

/// How long apt-get waits for another apt or dpkg run (someone else's install) to finish.
const APT_LOCK_TIMEOUT: &str = "DPkg::Lock::Timeout=600";

/// Why the missing tools could not be installed: each message says what to install by hand.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{missing} not found; only root can install it: run as root, or install by hand: {}", missing.by_hand())]
    NotRoot { missing: Missing },
    #[error("{missing} not found, and there is no apt-get here to install it: install the Debian package(s) {} or their equivalent by hand", missing.packages().join(" "))]
    NoAptGet { missing: Missing },
    #[error("{missing} not found, and `{command}` failed ({status}):\n{output}\ninstall by hand: {}", missing.by_hand())]
    Apt {
        missing: Missing,
        command: String,
        status: String,
        output: String,
    },
    #[error("{missing} still not found after `{command}` succeeded; install by hand: {}", missing.by_hand())]
    StillMissing { missing: Missing, command: String },
    #[error("{missing} not found, and an earlier attempt in this process failed: {earlier}")]
    Failed { missing: Missing, earlier: String },
    #[error("cannot take the install lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Tools not found, in the order asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub Vec<Tool>);

impl Missing {
    /// Their packages, each once, in the order of the tools.
    pub fn packages(&self) -> Vec<&'static str> {
        let mut packages = Vec::new();
        for package in self.0.iter().map(|t| t.package()) {
            if !packages.contains(&package) {
                packages.push(package);
            }
        }
        packages
    }

    /// The command that installs them by hand.
    pub fn by_hand(&self) -> String {
        format!("apt-get install {}", self.packages().join(" "))
    }
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, tool) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(
                f,
                "{sep}`{}` (Debian package {})",
                tool.program(),
                tool.package()
            )?;
        }
        Ok(())
    }
}

/// Makes sure every tool in `tools` can be run: returns at once if all are there, else installs
/// the missing ones' packages (see the module doc) and checks again. Threads of one process
/// take turns; after a failed attempt, later calls in the process fail with its message at once
/// instead of running apt-get again for every test.
pub fn ensure(tools: &[Tool]) -> Result<(), ToolError> {
    if missing(tools).0.is_empty() {
        return Ok(());
    }
    static FAILED: Mutex<Option<String>> = Mutex::new(None);
    let mut failed = FAILED.lock().unwrap_or_else(PoisonError::into_inner);
    let missing = self::missing(tools);
    if missing.0.is_empty() {
        return Ok(());
    }
    if let Some(earlier) = failed.as_ref() {
        return Err(ToolError::Failed {
            missing,
            earlier: earlier.clone(),
        });
    }
    install(tools, missing).inspect_err(|e| *failed = Some(e.to_string()))
}

/// One install attempt for the `missing` ones of `tools`, under the cross-process lock.
fn install(tools: &[Tool], missing: Missing) -> Result<(), ToolError> {
    say(&format!(
        "{missing} not found on PATH or in {}; installing",
        cmd::EXTRA_DIRS.join(", ")
    ));
    if !crate::sys::is_root() {
        return Err(ToolError::NotRoot { missing });
    }
    let Some(apt_get) = cmd::locate("apt-get", std::env::var_os("PATH").as_deref()) else {
        return Err(ToolError::NoAptGet { missing });
    };
    let _lock = lock()?;
    // Another process may have installed them while this one waited for the lock.
    let missing = self::missing(tools);
    if missing.0.is_empty() {
        say("another process installed them meanwhile");
        return Ok(());
    }
    let [update, install] = apt_commands(&missing.packages());
    say(&format!("running `{}`", update.join(" ")));
    if let Err((status, output)) = apt(&apt_get, &update) {
        say(&format!(
            "`{}` failed ({status}); installing from the package lists already here: {}",
            update.join(" "),
            output.lines().last().unwrap_or_default()
        ));
    }
    let command = install.join(" ");
    say(&format!("running `{command}`"));
    if let Err((status, output)) = apt(&apt_get, &install) {
        return Err(ToolError::Apt {
            missing,
            command,
            status,
            output,
        });
    }
    let still = self::missing(tools);
    if !still.0.is_empty() {
        return Err(ToolError::StillMissing {
            missing: still,
            command,
        });
    }
    let found: Vec<String> = missing
        .0
        .iter()
        .map(|t| format!("`{}` is {}", t.program(), t.path().display()))
        .collect();
    say(&format!("installed: {}", found.join(", ")));
    Ok(())
}

fn missing(tools: &[Tool]) -> Missing {
    Missing(
        tools
            .iter()
            .copied()
            .filter(|t| t.find().is_none())
            .collect(),
    )
}

/// The two apt-get command lines of one install: refresh the package lists, then install
/// `packages` quietly, without recommends, waiting for anyone else's apt run to finish.
pub fn apt_commands(packages: &[&str]) -> [Vec<String>; 2] {
    let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let update = words(&["apt-get", "-qq", "-o", APT_LOCK_TIMEOUT, "update"]);
    let mut install = words(&[
        "apt-get",
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "-o",
        APT_LOCK_TIMEOUT,
    ]);
    install.extend(words(packages));
    [update, install]
}

/// Runs one apt-get command line (`args[0]` is resolved to `apt_get`) with its output kept;
/// on failure its exit status and the tail of its output.
fn apt(apt_get: &Path, args: &[String]) -> Result<(), (String, String)> {
    let out = Command::new(apt_get)
        .args(&args[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ("not started".to_owned(), e.to_string()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    Err((out.status.to_string(), tail))
}

/// The lock file that serializes installs across processes: in `/run/lock` (root's, cleared
/// at boot), or the temp dir where there is none.
pub fn lock_path() -> PathBuf {
    let run_lock = Path::new("/run/lock");
    let dir = if run_lock.is_dir() {
        run_lock.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join("zring-tools.lock")
}

/// Holds the install lock (an exclusive `flock`, released when the file closes), saying so
/// when another process holds it first.
fn lock() -> Result<File, ToolError> {
    let path = lock_path();
    let err = |source| ToolError::Lock {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => {
            say(&format!(
                "waiting for another process installing tools (lock {})",
                path.display()
            ));
            file.lock().map_err(err)?;
            Ok(file)
        }
        Err(TryLockError::Error(e)) => Err(err(e)),
    }
}

/// One progress line on stderr, written to the descriptor itself: the test harness captures
/// `eprintln!` in test threads, and a newcomer waiting on an install must see why.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "zring setup: {line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn each_tool_maps_to_its_debian_package() {
        let map: Vec<_> = [Tool::Ip, Tool::Nft, Tool::Promtool, Tool::Prometheus]
            .map(|t| (t.program(), t.package()))
            .to_vec();
        assert_eq!(
            map,
            [
                ("ip", "iproute2"),
                ("nft", "nftables"),
                ("promtool", "prometheus"),
                ("prometheus", "prometheus"),
            ]
        );
    }

    #[test]
    fn packages_are_listed_once_in_order() {
        let missing = Missing(vec![Tool::Promtool, Tool::Nft, Tool::Prometheus]);
        assert_eq!(missing.packages(), ["prometheus", "nftables"]);
        assert_eq!(missing.by_hand(), "apt-get install prometheus nftables");
    }

    // The lookup itself is `capture::cmd`'s; these pin what `ensure` relies on.
    #[test]
    fn search_dirs_keep_path_order_then_the_sbin_dirs_once() {
        use cmd::{EXTRA_DIRS, search_dirs};
        let dirs = search_dirs(Some(&OsString::from("/opt/x:/usr/bin::relative:/opt/x")));
        let want = ["/opt/x", "/usr/bin", "/usr/sbin", "/sbin", "/bin"].map(PathBuf::from);
        assert_eq!(dirs, want);
        assert_eq!(search_dirs(None), EXTRA_DIRS.map(PathBuf::from));
    }

    #[test]
    fn locate_takes_the_first_executable_file() {
        use cmd::locate;
        let tmp = tempfile::tempdir().unwrap();
        let (plain, exec, dir) = (
            tmp.path().join("a"),
            tmp.path().join("b"),
            tmp.path().join("c"),
        );
        for d in [&plain, &exec, &dir] {
            std::fs::create_dir(d).unwrap();
        }
        let name = "zring-test-tool";
        std::fs::write(plain.join(name), "").unwrap();
        std::fs::create_dir(dir.join(name)).unwrap();
        let script = exec.join(name);
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([&plain, &dir, &exec]).unwrap();
        assert_eq!(locate(name, Some(&path)), Some(script));
        let without = std::env::join_paths([&plain, &dir]).unwrap();
        assert_eq!(locate(name, Some(&without)), None);
    }

    #[test]
    fn errors_say_what_to_install_by_hand() {
        let missing = Missing(vec![Tool::Nft, Tool::Promtool]);
        let text = ToolError::NotRoot {
            missing: missing.clone(),
        }
        .to_string();
        for part in [
            "`nft` (Debian package nftables)",
            "`promtool` (Debian package prometheus)",
            "root",
            "apt-get install nftables prometheus",
        ] {
            assert!(text.contains(part), "{part:?} not in {text:?}");
        }
        let text = ToolError::NoAptGet { missing }.to_string();
        assert!(
            text.contains("no apt-get") && text.contains("nftables prometheus"),
            "{text}"
        );
    }

    #[test]
    fn apt_updates_then_installs_quietly_without_recommends() {
        let [update, install] = apt_commands(&["nftables", "prometheus"]);
        assert_eq!(
            update.join(" "),
            format!("apt-get -qq -o {APT_LOCK_TIMEOUT} update")
        );
        assert_eq!(
            install.join(" "),
            format!(
                "apt-get install -y -qq --no-install-recommends -o {APT_LOCK_TIMEOUT} nftables prometheus"
            )
        );
    }

    #[test]
    fn nothing_asked_nothing_missing() {
        assert!(missing(&[]).0.is_empty());
        assert_eq!(ensure(&[]).ok(), Some(()));
    }
}

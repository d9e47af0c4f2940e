//! Network namespaces the lab makes: their names, creation and deletion, the sweep of ones left
//! behind by dead processes, per-namespace sysctls, and [`Netns`], the handle tests use to run
//! code inside one.
//!
//! Runs on the thread that builds or drops a lab; [`Netns::spawn`] starts a new thread that
//! enters the namespace before running the caller's closure.
//!
//! Invariants:
//! - every name is `zr<pid>-<lab seq>-<role>`, so two labs (in one process or two) never share a
//!   namespace, and a name tells which process owns it (the stale sweep relies on that);
//! - nothing here touches the root namespace's links, addresses or routes: namespaces are created
//!   empty (`ip netns add`) and only ever configured from the inside.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{LabError, cmd};
use crate::sys;

/// Every lab namespace name starts with this, then the owning pid.
const NAME_PREFIX: &str = "zr";

/// `ip netns add` creates and bind-mounts `/var/run/netns` itself the first time it runs; two
/// concurrent first runs can each stack a mount there. Serializing creation within the process
/// (tests run labs on parallel threads) avoids that, and costs little: creation is ~1 ms.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// The name prefix of every namespace of lab number `seq` of this process: `zr<pid>-<seq>-`.
pub(crate) fn lab_prefix(seq: u32) -> String {
    format!("{NAME_PREFIX}{}-{seq}-", std::process::id())
}

/// The pid that owns a lab namespace name, or `None` if the name is not one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Names of all named network namespaces (`ip netns list`, first column).
pub(crate) fn list() -> Result<BTreeSet<String>, LabError> {
    let out = cmd::ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Creates the empty namespace `name` (nothing in it yet, not even `lo` up: see [`prepare`]).
pub(crate) fn add(name: &str) -> Result<Netns, LabError> {
    let _serial = CREATE_LOCK
        .lock()
        .unwrap_or_else(|poison| poison.into_inner());
    cmd::ip(&["netns", "add", name])?;
    Ok(Netns::named(name))
}

/// Readies a fresh namespace: `lo` up, and reverse-path filtering off for every interface that
/// will ever appear in it (see [`base_sysctls`]).
pub(crate) fn prepare(ns: &Netns) -> Result<(), LabError> {
    ns.sysctls(&base_sysctls())?;
    ns.ip(&["link", "set", "lo", "up"]).map(drop)
}

/// Sysctls every lab namespace gets before any interface exists in it.
///
/// A new namespace copies IPv4 `all`/`default` settings from the root namespace
/// (`net.core.devconf_inherit_init_net=0`), and many distributions turn `rp_filter` on there.
/// Reverse-path filtering drops packets whose source is not routed back through the interface
/// they came in on, which transparent proxying produces whenever paths are not symmetric (a
/// spoofed client IP leaving through another interface than the client's). The seed's paths
/// are symmetric and pass even in strict mode, but a lab must not depend on that. The effective
/// value is max(all, iface), so `all` and `default` (inherited by interfaces created later) both
/// go to 0 here, and each interface is set again explicitly as it is added.
fn base_sysctls() -> Vec<(String, String)> {
    ["all", "default", "lo"]
        .iter()
        .map(|dev| (format!("net.ipv4.conf.{dev}.rp_filter"), "0".to_owned()))
        .collect()
}

/// Deletes namespace `name`: removes its name, then kills every process still inside it (other
/// than this one), which destroys its interfaces, routes and nft tables once nothing else holds
/// it.
///
/// The namespace is identified (nsfs device and inode) *before* its name goes, and processes are
/// found by that identity afterwards (as `ip netns pids` does): a process that entered just
/// before the deletion is still found, and nothing enters through the name any more. Several
/// labs may sweep the same stale namespace at once: whichever unmounts it first had identified
/// it first, so it does the killing, and the others' `ip netns del` failing on a name that is
/// already gone is no error.
pub(crate) fn delete(name: &str) -> Result<(), LabError> {
    let path = sys::netns::path(name);
    let identity = |p: &std::path::Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    // Until the bind mount is gone, the name resolves to the namespace itself (on nsfs, the
    // device every /proc/*/ns/net shares); after, to a plain file that must not be matched.
    let nsfs = identity(std::path::Path::new("/proc/self/ns/net")).map(|(dev, _)| dev);
    let target = identity(&path).filter(|&(dev, _)| Some(dev) == nsfs);
    let deleted = cmd::ip(&["netns", "del", name]);
    if let Some(target) = target {
        kill_inside(target);
    }
    match deleted {
        Err(_) if !path.exists() => Ok(()),
        other => Ok(other.map(drop)?),
    }
}

/// SIGKILLs every process (but this one) whose network namespace is the nsfs inode `id`.
fn kill_inside(id: (u64, u64)) {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // stat follows the magic link to the namespace itself; a process that exits meanwhile
        // simply fails it.
        let inside = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| (m.dev(), m.ino()) == id);
        if inside && pid != me {
            // Already gone is fine: all that matters is that nothing keeps running in there.
            let _ = sys::netns::signal(pid, libc::SIGKILL);
        }
    }
}

/// Deletes namespaces left by lab processes that no longer exist (a test run killed before its
/// labs dropped). Returns the names it removed; errors on single namespaces are ignored so one
/// stubborn leftover cannot stop a new lab.
pub(crate) fn sweep_stale() -> Result<Vec<String>, LabError> {
    let me = std::process::id();
    let mut swept = Vec::new();
    for name in list()? {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if pid == me || PathBuf::from(format!("/proc/{pid}")).exists() {
            continue;
        }
        if delete(&name).is_ok() {
            swept.push(name);
        }
    }
    Ok(swept)
}

/// A network namespace made by a lab, by name. Cheap to clone; it does not own the namespace
/// (the [`Lab`](super::Lab) does and deletes it on drop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    name: Arc<str>,
}

impl Netns {
    pub(crate) fn named(name: &str) -> Self {
        Netns { name: name.into() }
    }

    /// The namespace's name, as `ip netns list` shows it (`ip -n NAME …` works with it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread that first enters this namespace, so plain `std::net` code in `f`
    /// creates its sockets here. Those sockets stay in this namespace whatever thread uses them
    /// later. If the thread cannot enter the namespace it panics, which `join` reports.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || {
                if let Err(e) = sys::netns::enter(&name) {
                    panic!("cannot enter network namespace {name}: {e}");
                }
                f()
            })
            .expect("cannot start a thread")
    }

    /// Runs `f` inside this namespace and waits for it (a [`spawn`](Self::spawn) plus `join`);
    /// a panic in `f` continues on the caller's thread. Handy for making a socket here and using
    /// it elsewhere: `let l = pod.run(|| TcpListener::bind("0.0.0.0:80"))?;`
    pub fn run<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.spawn(f).join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// `ip -n NAME args…`: returns what it printed.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        Ok(cmd::ip_in(&self.name, args)?)
    }

    /// `ip -n NAME …` with the arguments given as one line split on whitespace, e.g.
    /// `node.ip_line(&format!("route add {cidr} via {gw} dev eth0"))`.
    pub fn ip_line(&self, line: &str) -> Result<String, LabError> {
        self.ip(&line.split_whitespace().collect::<Vec<_>>())
    }

    /// Sets sysctls of this namespace, e.g. `("net.ipv4.ip_forward", "1")`. Keys use dots as
    /// separators, so interface names with dots cannot be addressed (lab names have none).
    pub fn sysctls<K: AsRef<str>, V: AsRef<str>>(
        &self,
        settings: &[(K, V)],
    ) -> Result<(), LabError> {
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        // /proc/sys/net shows the network namespace of the *thread* that opens it, so a thread
        // inside the namespace writes them directly: no `ip netns exec sysctl` per key.
        let name = self.name.clone();
        self.run(move || {
            for (key, value) in &settings {
                let path = sysctl_path(key);
                std::fs::write(&path, value).map_err(|source| LabError::Io {
                    context: format!("cannot set {key}={value} in namespace {name}"),
                    source,
                })?;
            }
            Ok(())
        })
    }

    /// Reads one sysctl of this namespace (see [`sysctls`](Self::sysctls) for the key form).
    pub fn sysctl(&self, key: &str) -> Result<String, LabError> {
        let (key, name) = (key.to_owned(), self.name.clone());
        self.run(move || {
            std::fs::read_to_string(sysctl_path(&key))
                .map(|v| v.trim().to_owned())
                .map_err(|source| LabError::Io {
                    context: format!("cannot read {key} in namespace {name}"),
                    source,
                })
        })
    }

    /// One counter of the kernel's `TcpExt` statistics in this namespace (what `nstat` shows as
    /// `TcpExt<counter>`), e.g. `TCPSynRetrans`: SYNs sent again because no answer came.
    pub fn tcp_ext(&self, counter: &str) -> Result<u64, LabError> {
        let (counter, name) = (counter.to_owned(), self.name.clone());
        // /proc/thread-self/net, like /proc/sys/net, shows the calling thread's namespace.
        self.run(move || {
            let text =
                std::fs::read_to_string("/proc/thread-self/net/netstat").map_err(|source| {
                    LabError::Io {
                        context: format!("cannot read TcpExt statistics in namespace {name}"),
                        source,
                    }
                })?;
            tcp_ext_value(&text, &counter).ok_or_else(|| LabError::Io {
                context: format!("no TcpExt counter {counter} in namespace {name}"),
                source: std::io::ErrorKind::NotFound.into(),
            })
        })
    }
}

/// `counter`'s value in the text of `/proc/net/netstat`: a `TcpExt:` line of names, then a
/// `TcpExt:` line of values.
fn tcp_ext_value(netstat: &str, counter: &str) -> Option<u64> {
    let mut lines = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (lines.next()?, lines.next()?);
    let (_, value) = names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == counter)?;
    value.parse().ok()
}

fn sysctl_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_lab_names() {
        assert_eq!(owner_pid("zr123-0-n-a"), Some(123));
        assert_eq!(
            owner_pid(&format!("{}n-a", lab_prefix(7))),
            Some(std::process::id())
        );
        assert_eq!(owner_pid("zr-0-a"), None);
        assert_eq!(owner_pid("zrx1-0-a"), None);
        assert_eq!(owner_pid("zr12"), None);
        assert_eq!(owner_pid("cni-1234"), None);
    }

    #[test]
    fn tcp_ext_counters_are_read_by_name() {
        let text = "TcpExt: SyncookiesSent TCPSynRetrans\nTcpExt: 4 17\n\
                    IpExt: InNoRoutes\nIpExt: 9\n";
        assert_eq!(tcp_ext_value(text, "TCPSynRetrans"), Some(17));
        assert_eq!(tcp_ext_value(text, "SyncookiesSent"), Some(4));
        assert_eq!(tcp_ext_value(text, "InNoRoutes"), None, "an IpExt counter");
        assert_eq!(tcp_ext_value(text, "TCPTimeouts"), None);
        assert_eq!(
            tcp_ext_value("TcpExt: TCPSynRetrans\n", "TCPSynRetrans"),
            None
        );
        // This kernel has the counter the lab's tests and the bench read.
        let real = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
        assert!(tcp_ext_value(&real, "TCPSynRetrans").is_some(), "{real}");
    }

    #[test]
    fn sysctl_keys_map_to_proc_paths() {
        assert_eq!(
            sysctl_path("net.ipv4.conf.zp-appa.rp_filter"),
            PathBuf::from("/proc/sys/net/ipv4/conf/zp-appa/rp_filter")
        );
    }
}

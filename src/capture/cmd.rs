//! The external programs capture and the lab drive (`ip`, `nft`): finding them, running them,
//! and turning a failure into an [`Error`] that shows the exact command line and what it printed.
//!
//! Runs on the thread that installs capture or builds or tears down a lab (`zring redirect`'s or
//! `zring demo`'s main thread, a test thread). Every call blocks until the program exits; none of
//! this is data-plane code.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::Error;

/// A program the lab cannot work without, and the package that ships it (for the error message).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    pub(crate) program: &'static str,
    pub(crate) package: &'static str,
}

pub(crate) const IP: Tool = Tool {
    program: "ip",
    package: "iproute2",
};
pub(crate) const NFT: Tool = Tool {
    program: "nft",
    package: "nftables",
};

/// Finds `tool` (see [`locate`]).
pub(crate) fn find(tool: Tool) -> Result<PathBuf, Error> {
    locate(tool.program, std::env::var_os("PATH").as_deref()).ok_or(Error::MissingTool {
        program: tool.program,
        package: tool.package,
    })
}

/// Directories searched after `PATH`: root's `PATH` may lack the sbin directories (under sudo).
pub(crate) const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The first executable file named `program` in [`search_dirs`]`(path_var)`, like `which`.
/// Also how `lab::tools` decides what to install.
pub(crate) fn locate(program: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    search_dirs(path_var)
        .into_iter()
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// The directories searched for a program: the absolute entries of `path_var` (a `PATH` value;
/// empty or relative entries would depend on the working directory), then [`EXTRA_DIRS`], each
/// once.
pub(crate) fn search_dirs(path_var: Option<&OsStr>) -> Vec<PathBuf> {
    let from_path = path_var
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for dir in from_path
        .into_iter()
        .filter(|d| d.is_absolute())
        .chain(EXTRA_DIRS.map(PathBuf::from))
    {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Where `tool` lives, resolved once per process; falls back to the bare name (so a missing tool
/// still fails with the OS error) when [`find`] has nothing.
pub(crate) fn program(tool: Tool) -> &'static Path {
    static IP_PATH: OnceLock<PathBuf> = OnceLock::new();
    static NFT_PATH: OnceLock<PathBuf> = OnceLock::new();
    let cell = if tool.program == NFT.program {
        &NFT_PATH
    } else {
        &IP_PATH
    };
    cell.get_or_init(|| find(tool).unwrap_or_else(|_| PathBuf::from(tool.program)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program args…`, feeding it `stdin` if given; returns its stdout, or a
/// [`Error::Command`] with the command line, exit status and stderr.
pub(crate) fn run(
    program: impl AsRef<OsStr>,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    let program = program.as_ref();
    let line = command_line(&program.to_string_lossy(), args);
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| Error::Io {
        context: format!("cannot start `{line}`"),
        source,
    })?;
    if let Some(input) = stdin {
        // Dropping the pipe after writing closes it, so the program sees end of input.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes())
            .map_err(|source| Error::Io {
                context: format!("cannot feed `{line}`"),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| Error::Io {
        context: format!("cannot wait for `{line}`"),
        source,
    })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            stdin: stdin.map(str::to_owned),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip args…` in the root namespace: only `ip netns …` management commands go through here;
/// everything that configures links, addresses or routes uses [`ip_in`].
pub(crate) fn ip(args: &[&str]) -> Result<String, Error> {
    run(program(IP), args, None)
}

/// `ip -n NS args…`: one configuration command inside namespace `ns`.
pub(crate) fn ip_in(ns: &str, args: &[&str]) -> Result<String, Error> {
    let mut full = Vec::with_capacity(args.len() + 2);
    full.extend_from_slice(&["-n", ns]);
    full.extend_from_slice(args);
    run(program(IP), &full, None)
}

/// `nft args…` inside namespace `ns` (nft has no namespace flag, so through `ip netns exec`).
pub(crate) fn nft_in(ns: &str, args: &[&str], stdin: Option<&str>) -> Result<String, Error> {
    let nft = program(NFT).to_string_lossy();
    let mut full = Vec::with_capacity(args.len() + 4);
    full.extend_from_slice(&["netns", "exec", ns, &nft]);
    full.extend_from_slice(args);
    run(program(IP), &full, stdin)
}

fn command_line(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_names_the_command_and_its_stderr() {
        let err = run("sh", &["-c", "echo oops >&2; exit 3"], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c echo oops >&2; exit 3"), "{text}");
        assert!(text.contains("oops"), "{text}");
        assert!(text.contains('3'), "{text}");
    }

    #[test]
    fn stdin_reaches_the_program() {
        assert_eq!(run("cat", &[], Some("hello")).unwrap(), "hello");
    }

    #[test]
    fn missing_tool_names_its_package() {
        let tool = Tool {
            program: "zring-no-such-program",
            package: "zring-pkg",
        };
        let text = find(tool).unwrap_err().to_string();
        assert!(
            text.contains("zring-no-such-program") && text.contains("zring-pkg"),
            "{text}"
        );
    }
}

//! The external programs the lab drives (`ip`, `nft`): running them, and turning a
//! failure into a [`LabError`] that shows the exact command line and what it printed.
//!
//! Runs on the thread that builds or tears down a lab (a test thread, `zring demo`'s main
//! thread). Every call blocks until the program exits; none of this is data-plane code.

use std::ffi::OsStr;
use std::io::Write;
use std::process::{Command, Stdio};

use super::LabError;

// Where `ip` and `nft` are, and installing them, is `tools`' job.
pub(crate) use super::tools::{Tool, program};

pub(crate) const IP: Tool = Tool::Ip;
pub(crate) const NFT: Tool = Tool::Nft;

/// Runs `program args…`, feeding it `stdin` if given; returns its stdout, or a
/// [`LabError::Command`] with the command line, exit status and stderr.
pub(crate) fn run(
    program: impl AsRef<OsStr>,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, LabError> {
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
    let mut child = cmd.spawn().map_err(|source| LabError::Io {
        context: format!("cannot start `{line}`"),
        source,
    })?;
    if let Some(input) = stdin {
        // Dropping the pipe after writing closes it, so the program sees end of input.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes())
            .map_err(|source| LabError::Io {
                context: format!("cannot feed `{line}`"),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| LabError::Io {
        context: format!("cannot wait for `{line}`"),
        source,
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
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
pub(crate) fn ip(args: &[&str]) -> Result<String, LabError> {
    run(program(IP), args, None)
}

/// `ip -n NS args…`: one configuration command inside namespace `ns`.
pub(crate) fn ip_in(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut full = Vec::with_capacity(args.len() + 2);
    full.extend_from_slice(&["-n", ns]);
    full.extend_from_slice(args);
    run(program(IP), &full, None)
}

/// `nft args…` inside namespace `ns` (nft has no namespace flag, so through `ip netns exec`).
pub(crate) fn nft_in(ns: &str, args: &[&str], stdin: Option<&str>) -> Result<String, LabError> {
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
}

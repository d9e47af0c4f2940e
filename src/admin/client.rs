//! `zring admin [METHOD] PATH`: one request to the admin Unix socket, for operators (the image
//! has no curl: `kubectl exec -n istio-system <pod> -- zring admin POST /quitquitquit`) and for
//! tests. Blocking, on the caller's thread, with a timeout on every socket operation.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a connect, read or write may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `method target` (no body) over the socket at `socket`; returns the status and body.
pub fn request(socket: &Path, method: &str, target: &str) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP answer: {:?}", &text[..text.len().min(200)]),
        )
    };
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

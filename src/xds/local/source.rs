//! Reading the config file: `LocalSource` (the change-tracking watcher `control` polls) and
//! `read_bounded` (the size-capped read `load` shares). Runs on the control thread; the only
//! part of `xds::local` that does IO. Invariant: a file is parsed only after two consecutive
//! reads agree, and the same broken content or read failure is reported once.

use std::fs::File;
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{LocalConfigError, MAX_FILE_BYTES, parse_bytes};
use crate::state::Snapshot;

/// Watches one local config file for the control thread. Each `reload_if_changed` reads the
/// whole file (cheap at config sizes, and it sees configmap symlink swaps that mtime-based
/// checks miss) and compares a digest with what the previous call saw.
#[derive(Debug)]
pub struct LocalSource {
    path: PathBuf,
    /// What the previous call saw, valid or not: the same broken content (or the same read
    /// failure) is reported once, not on every poll.
    last: Option<Seen>,
    /// A change seen by exactly one read so far. A change is applied only when two consecutive
    /// reads agree: writers that truncate and then write (editors, `cp`, `fs::write`) are
    /// otherwise caught half way, and an empty or partial config would be published — an empty
    /// one turns every workload into an unknown source for a whole poll interval.
    settling: Option<Seen>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Content { len: usize, digest: u64 },
    Unreadable(io::ErrorKind),
    TooLarge(u64),
}

impl LocalSource {
    pub fn new(path: impl Into<PathBuf>) -> LocalSource {
        LocalSource {
            path: path.into(),
            last: None,
            settling: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `Ok(Some)` when the content differs from what was last applied, two consecutive calls
    /// read it identically, and it is valid (the first call applies at once); `Ok(None)` when
    /// nothing changed or a change has been read only once so far; `Err` once per new broken
    /// content or new read failure (after the same settling). The caller keeps its last good
    /// snapshot on `Err` and `Ok(None)`.
    pub fn reload_if_changed(&mut self) -> Result<Option<Snapshot>, LocalConfigError> {
        let read = read_bounded(&self.path);
        let seen = match &read {
            Ok(bytes) => Seen::Content {
                len: bytes.len(),
                digest: digest(bytes),
            },
            Err(ReadError::Io(e)) => Seen::Unreadable(e.kind()),
            Err(ReadError::TooLarge(size)) => Seen::TooLarge(*size),
        };
        if self.last == Some(seen) {
            self.settling = None;
            return Ok(None);
        }
        if self.last.is_some() && self.settling != Some(seen) {
            self.settling = Some(seen);
            return Ok(None);
        }
        self.settling = None;
        self.last = Some(seen);
        let bytes = read.map_err(|e| e.with_path(&self.path))?;
        parse_bytes(&bytes).map(Some)
    }
}

// SipHash with fixed keys: deterministic within the process, which is all a change check needs.
fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Why the file's bytes could not be had; kept apart from `LocalConfigError` so `LocalSource`
/// can tell a repeated failure from a new one without a catch-all arm.
pub(super) enum ReadError {
    Io(io::Error),
    TooLarge(u64),
}

impl ReadError {
    pub(super) fn with_path(self, path: &Path) -> LocalConfigError {
        match self {
            ReadError::Io(error) => LocalConfigError::Read {
                path: path.to_owned(),
                error,
            },
            ReadError::TooLarge(size) => LocalConfigError::TooLarge {
                path: path.to_owned(),
                size,
                limit: MAX_FILE_BYTES,
            },
        }
    }
}

pub(super) fn read_bounded(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let size = file.metadata().map_err(ReadError::Io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(size));
    }
    let mut bytes = Vec::new();
    // `take` also bounds a file that grows (or a special file) between metadata and read.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

//! Process logging: the subscriber (plain text, or JSON with `LOG_FORMAT=json`), the writer that
//! keeps cores from ever waiting on stdout, and the level filter the admin API changes at run
//! time.
//!
//! Threads: `init` runs once on the main thread. Every thread formats its own events (a core
//! formats its access-log line itself), then hands the bytes to a bounded queue drained by one
//! writer thread (`tracing-appender`); when the queue is full the line is dropped and counted
//! (`zring_log_lines_dropped_total`) rather than blocking a core. [`LogControl`] is used by the
//! admin server on the control thread; the filter swap it does is atomic for readers.
//!
//! Level specs are `tracing` directives, as `RUST_LOG` and ztunnel's `/logging?level=` take
//! them: a level (`off`, `error`, `warn`, `info`, `debug`, `trace`), or `target=level`, comma
//! separated. A change replaces the directives with the same target (the bare level being the
//! default target) and keeps the others; `reset` starts again from the start-up spec.

use std::sync::{Arc, Mutex};

use tracing_appender::non_blocking::{ErrorCounter, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LogFormat;

/// A duration as the access log writes it, in whole milliseconds (`12ms`). Formatted only when
/// the line is: a connection whose access log is filtered out pays nothing for it.
#[derive(Debug, Clone, Copy)]
pub struct Millis(pub std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

/// The level spec when `RUST_LOG` is unset.
pub const DEFAULT_LEVEL: &str = "info";
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LevelError {
    #[error("invalid level {0:?}: expected off, error, warn, info, debug, trace or target=level")]
    Invalid(String),
    #[error("cannot change the log filter: {0}")]
    Reload(String),
}

/// Reads and changes the process's log levels at run time. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogControl {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    handle: reload::Handle<EnvFilter, Registry>,
    initial: String,
    /// The spec in force; the filter itself does not round-trip its text reliably.
    current: Mutex<String>,
    dropped: Option<ErrorCounter>,
}

/// Installs the process-wide subscriber: `RUST_LOG` (or [`DEFAULT_LEVEL`]) as the filter,
/// `format` for the lines, stdout through the non-blocking writer. The guard flushes queued
/// lines when dropped: keep it until the process ends.
pub fn init(format: LogFormat) -> (LogControl, WorkerGuard) {
    use std::io::IsTerminal;
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| DEFAULT_LEVEL.to_owned());
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let dropped = writer.error_counter();
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&spec));
    let (plain, json) = match format {
        LogFormat::Plain => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_target(true)
                    .with_writer(writer),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_target(true)
                    .with_writer(writer),
            ),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(plain)
        .with(json)
        .init();
    let control = LogControl::new(handle, spec, Some(dropped));
    (control, guard)
}

impl LogControl {
    /// A control over `handle`, whose filter was built from `spec`.
    pub fn new(
        handle: reload::Handle<EnvFilter, Registry>,
        spec: String,
        dropped: Option<ErrorCounter>,
    ) -> LogControl {
        LogControl {
            inner: Arc::new(Inner {
                handle,
                current: Mutex::new(spec.clone()),
                initial: spec,
                dropped,
            }),
        }
    }

    /// The spec in force, e.g. `access=debug,info`.
    pub fn current(&self) -> String {
        self.inner
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies `level` over the current spec (or over the start-up spec with `reset`) and
    /// returns the spec now in force. An invalid spec changes nothing.
    pub fn set(&self, level: &str, reset: bool) -> Result<String, LevelError> {
        let mut current = self.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        let base = if reset {
            self.inner.initial.clone()
        } else {
            current.clone()
        };
        let next = if reset && level.trim().is_empty() {
            base
        } else {
            merge(&base, level)?
        };
        let filter = EnvFilter::try_new(&next).map_err(|_| LevelError::Invalid(level.into()))?;
        self.inner
            .handle
            .reload(filter)
            .map_err(|e| LevelError::Reload(e.to_string()))?;
        *current = next.clone();
        Ok(next)
    }

    /// The writer's count of dropped lines, when logging goes through it.
    pub fn dropped_lines(&self) -> Option<ErrorCounter> {
        self.inner.dropped.clone()
    }
}

/// `base` with `change`'s directives replacing those of the same target. Checks every clause of
/// `change`: a bare level, or `target=level` with a known level.
pub fn merge(base: &str, change: &str) -> Result<String, LevelError> {
    let invalid = || LevelError::Invalid(change.to_owned());
    let target_of = |clause: &str| clause.split_once('=').map(|(t, _)| t.trim().to_owned());
    let mut clauses: Vec<String> = base
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let mut any = false;
    for clause in change.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        any = true;
        let level = clause.rsplit_once('=').map_or(clause, |(_, l)| l).trim();
        let target = target_of(clause);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str())
            || target.as_deref().is_some_and(str::is_empty)
        {
            return Err(invalid());
        }
        clauses.retain(|c| target_of(c) != target);
        match target {
            // The default level goes last, as `RUST_LOG` conventionally spells it.
            None => clauses.push(clause.to_owned()),
            Some(_) => clauses.insert(0, clause.to_owned()),
        }
    }
    if !any {
        return Err(invalid());
    }
    Ok(clauses.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_are_whole_milliseconds() {
        use std::time::Duration;
        assert_eq!(Millis(Duration::from_micros(12_999)).to_string(), "12ms");
        assert_eq!(Millis(Duration::ZERO).to_string(), "0ms");
        assert_eq!(Millis(Duration::from_secs(61)).to_string(), "61000ms");
    }

    #[test]
    fn merge_replaces_by_target() {
        assert_eq!(merge("info", "debug").unwrap(), "debug");
        assert_eq!(merge("info", "access=debug").unwrap(), "access=debug,info");
        assert_eq!(
            merge("access=debug,info", "warn").unwrap(),
            "access=debug,warn"
        );
        assert_eq!(
            merge("access=debug,warn", "access=off,error").unwrap(),
            "access=off,error"
        );
        for bad in [
            "",
            "loud",
            "access=",
            "=debug",
            "access=loud",
            "debug,,chatty",
        ] {
            assert!(merge("info", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn set_changes_the_filter_in_force() {
        let (filter, handle) = reload::Layer::new(EnvFilter::new("info"));
        let subscriber = tracing_subscriber::registry().with(filter);
        let control = LogControl::new(handle, "info".into(), None);
        tracing::subscriber::with_default(subscriber, || {
            assert!(!tracing::enabled!(tracing::Level::DEBUG));
            assert_eq!(control.set("debug", false).unwrap(), "debug");
            tracing::callsite::rebuild_interest_cache();
            assert!(tracing::enabled!(tracing::Level::DEBUG));
            assert_eq!(control.set("warn", false).unwrap(), "warn");
            tracing::callsite::rebuild_interest_cache();
            assert!(!tracing::enabled!(tracing::Level::INFO));
            assert!(tracing::enabled!(tracing::Level::WARN));
            assert_eq!(
                control.set("loud", false),
                Err(LevelError::Invalid("loud".into()))
            );
            assert_eq!(control.current(), "warn", "a bad spec changes nothing");
            assert_eq!(control.set("", false), Err(LevelError::Invalid("".into())));
            assert_eq!(
                control.set("", true).unwrap(),
                "info",
                "reset alone: the start-up spec"
            );
            assert_eq!(
                control.set("access=trace", true).unwrap(),
                "access=trace,info"
            );
        });
    }
}

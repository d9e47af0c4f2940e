//! The test-only fault hook (`ZRING_TEST_FAULTS`): connections to chosen destination ports make
//! the core that accepts them (on a node-mode listener) fail in a chosen way, so end-to-end tests can prove that faults
//! are contained (`task`) and noticed (`health`).
//!
//! - `panic-port=P`: the connection's task panics while the connection is open (after
//!   [`PANIC_AFTER`], or when it ends, whichever is first);
//! - `stall-port=P`: the accepting core's thread blocks for good (its loop stops turning);
//! - `exit-port=P`: the accepting core's accept loop panics outside any contained task, which
//!   ends the core's thread.
//!
//! Compiled in (the tests run the release-shaped binary), but `app` refuses to start with it in
//! a Kubernetes pod and logs an error at start-up otherwise. Read on the cores; parsed once at
//! start-up.

use std::time::Duration;

/// How long a `panic-port` connection runs before its task panics.
pub const PANIC_AFTER: Duration = Duration::from_millis(300);

/// What to do to one accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Panic,
    Stall,
    Exit,
}

/// The parsed `ZRING_TEST_FAULTS`; the default injects nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    rules: Vec<(u16, Fault)>,
}

impl Faults {
    /// `panic-port=P,stall-port=P,exit-port=P` (any subset, any order).
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut rules = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?}: expected name=port"))?;
            let fault = match k {
                "panic-port" => Fault::Panic,
                "stall-port" => Fault::Stall,
                "exit-port" => Fault::Exit,
                _ => {
                    return Err(format!(
                        "{k:?}: expected panic-port, stall-port or exit-port"
                    ));
                }
            };
            let port = v
                .parse::<u16>()
                .map_err(|_| format!("{item:?}: not a port"))?;
            rules.push((port, fault));
        }
        Ok(Faults { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The fault for a connection to `port`.
    pub fn on_accept(&self, port: u16) -> Fault {
        self.rules
            .iter()
            .find(|(p, _)| *p == port)
            .map_or(Fault::None, |(_, f)| *f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let f = Faults::parse("panic-port=7001, stall-port=7002,exit-port=7003").unwrap();
        assert_eq!(f.on_accept(7001), Fault::Panic);
        assert_eq!(f.on_accept(7002), Fault::Stall);
        assert_eq!(f.on_accept(7003), Fault::Exit);
        assert_eq!(f.on_accept(80), Fault::None);
        assert!(Faults::parse("").unwrap().is_empty());
        assert!(Faults::parse("panic-port=x").is_err());
        assert!(Faults::parse("crash=1").is_err());
    }
}

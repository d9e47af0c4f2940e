//! The io_uring ring each core runs on, and the setup flags it is built with ([`UringSetup`]).
//! Called once per core thread, when the core starts.

use std::io;

use tracing::warn;

/// Builds a core's io_uring runtime with `setup`'s flags; a kernel that refuses them (EINVAL)
/// gets a ring without any.
pub(super) fn runtime(
    id: usize,
    entries: u32,
    setup: UringSetup,
) -> io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let build = |setup: UringSetup| {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(entries)
            .uring_builder(setup.builder())
            .enable_timer()
            .build()
    };
    match build(setup) {
        Err(e) if setup != UringSetup::NONE && e.raw_os_error() == Some(libc::EINVAL) => {
            warn!(
                core = id,
                ?setup,
                "io_uring refused the setup flags, using none: {e}"
            );
            build(UringSetup::NONE)
        }
        other => other,
    }
}

/// The io_uring setup flags a core's ring is built with. What each buys was measured in
/// `perf/notes-plaintext.md`; the default is what won there.
///
/// - `coop` (`IORING_SETUP_COOP_TASKRUN`): a completion that needs the core's own context
///   (a socket read woken by its poll) waits for the core's next `io_uring_enter` instead of
///   interrupting the thread (an IPI and a trip through the signal path).
/// - `single` (`IORING_SETUP_SINGLE_ISSUER`): only the core's thread submits, which lets the
///   kernel skip the ring's submission lock. True by construction here.
/// - `defer` (`IORING_SETUP_DEFER_TASKRUN`, needs `single`): all such work runs only when the
///   core waits for completions; a core that stays busy sees its completions later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringSetup {
    pub coop: bool,
    pub single: bool,
    pub defer: bool,
}

impl UringSetup {
    pub const NONE: UringSetup = UringSetup {
        coop: false,
        single: false,
        defer: false,
    };

    /// The default: see `perf/notes-plaintext.md`.
    pub const DEFAULT: UringSetup = UringSetup::NONE;

    /// `ZRING_URING_SETUP` (`none`, or a comma-separated subset of `coop,single,defer`), for
    /// measuring the flags side by side; unset or unreadable means [`UringSetup::DEFAULT`].
    pub fn from_env() -> UringSetup {
        match std::env::var("ZRING_URING_SETUP") {
            Ok(v) => UringSetup::parse(&v).unwrap_or_else(|| {
                warn!("ZRING_URING_SETUP={v:?} is not `none` or a list of coop,single,defer");
                UringSetup::DEFAULT
            }),
            Err(_) => UringSetup::DEFAULT,
        }
    }

    /// `none`, or a comma-separated list of `coop`, `single`, `defer` (`defer` implies
    /// `single`, which the kernel requires with it).
    pub fn parse(s: &str) -> Option<UringSetup> {
        let mut setup = UringSetup::NONE;
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "none" => {}
                "coop" => setup.coop = true,
                "single" => setup.single = true,
                "defer" => (setup.defer, setup.single) = (true, true),
                _ => return None,
            }
        }
        Some(setup)
    }

    fn builder(self) -> io_uring::Builder {
        let mut b = io_uring::IoUring::builder();
        if self.coop {
            b.setup_coop_taskrun();
        }
        if self.single {
            b.setup_single_issuer();
        }
        if self.defer {
            b.setup_defer_taskrun();
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flag_lists() {
        assert_eq!(UringSetup::parse("none"), Some(UringSetup::NONE));
        assert_eq!(UringSetup::parse(""), Some(UringSetup::NONE));
        let coop = UringSetup::parse("coop").unwrap();
        assert!(coop.coop && !coop.single && !coop.defer);
        let all = UringSetup::parse("coop, single,defer").unwrap();
        assert!(all.coop && all.single && all.defer);
        let defer = UringSetup::parse("defer").unwrap();
        assert!(defer.single, "defer needs single issuer");
        assert_eq!(UringSetup::parse("coop,fast"), None);
    }

    /// Every combination builds a ring that runs I/O (falling back to none where the kernel
    /// refuses flags), so any of them can be chosen with `ZRING_URING_SETUP`.
    #[test]
    fn every_setup_runs_io() {
        for words in ["none", "coop", "coop,single", "coop,single,defer", "defer"] {
            let setup = UringSetup::parse(words).unwrap();
            let mut rt = runtime(0, 256, setup).expect(words);
            let echoed = rt.block_on(async {
                use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
                let l = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = l.local_addr().unwrap();
                let (c, s) = monoio::join!(monoio::net::TcpStream::connect_addr(addr), l.accept());
                let (mut c, mut s) = (c.unwrap(), s.unwrap().0);
                let (r, _) = c.write_all(b"ping".to_vec()).await;
                r.unwrap();
                let (r, buf) = s.read_exact(vec![0u8; 4]).await;
                r.unwrap();
                // A timer too: the runtime's time driver parks with a timeout.
                monoio::time::sleep(std::time::Duration::from_millis(1)).await;
                buf
            });
            assert_eq!(echoed, b"ping", "{words}");
        }
    }
}

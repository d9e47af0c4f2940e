//! The io_uring ring each core runs on, built with the configured setup flags ([`UringSetup`]).
//! Called once per core thread, when the core starts.

use std::io;

use tracing::warn;

use crate::config::UringSetup;

/// Builds a core's io_uring runtime with `setup`'s flags. A kernel that refuses them (EINVAL)
/// gets fewer: first without `single` and `defer` (before 6.0), then none (before 5.19).
pub(crate) fn runtime(
    id: usize,
    entries: u32,
    setup: UringSetup,
) -> io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::IoUringDriver>>> {
    let build = |setup: UringSetup| {
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(entries)
            .uring_builder(builder(setup))
            .enable_timer()
            .build()
    };
    let mut setup = setup;
    loop {
        match build(setup) {
            Err(e) if setup != UringSetup::NONE && e.raw_os_error() == Some(libc::EINVAL) => {
                let fewer = match setup.without_single_issuer() {
                    same if same == setup => UringSetup::NONE,
                    fewer => fewer,
                };
                warn!(
                    core = id,
                    refused = %setup,
                    using = %fewer,
                    "io_uring refused the setup flags: {e}"
                );
                setup = fewer;
            }
            other => return other,
        }
    }
}

fn builder(setup: UringSetup) -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    if setup.coop {
        b.setup_coop_taskrun();
    }
    if setup.single {
        b.setup_single_issuer();
    }
    if setup.defer {
        b.setup_defer_taskrun();
    }
    b
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
        // Display writes what parse reads, so config_dump shows a value that can be set.
        for words in ["none", "coop", "single", "coop,single", "coop,single,defer"] {
            let setup = UringSetup::parse(words).unwrap();
            assert_eq!(setup.to_string(), words);
        }
        assert_eq!(UringSetup::DEFAULT.to_string(), "coop,single,defer");
        assert_eq!(
            UringSetup::DEFAULT.without_single_issuer(),
            UringSetup::parse("coop").unwrap()
        );
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

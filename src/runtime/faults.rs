//! Where the test-only fault hook (`core::faults`, `ZRING_TEST_FAULTS`) acts: in a core's accept
//! loop, on a connection to one of the chosen ports, and around the connection's task. With no
//! fault configured the accept loop never calls [`on_accept`] and [`spawn`] is `task::spawn`.
//!
//! Runs on the cores.

use std::future::Future;

use tracing::error;

use crate::core::faults::PANIC_AFTER;
use crate::core::{CoreCtx, Fault};

/// Applies the faults that act on the core itself (a stall, an exit) at once, in the accept
/// loop; returns what is left for the connection's task.
pub(super) fn on_accept(ctx: &CoreCtx, port: u16) -> Fault {
    match ctx.shared.faults.on_accept(port) {
        Fault::Stall => {
            error!(
                core = ctx.id,
                port, "ZRING_TEST_FAULTS: stalling this core's thread for good"
            );
            // Blocks the whole runtime: no task of this core runs again. Parked with nobody to
            // unpark it; the loop only absorbs spurious wake-ups.
            loop {
                std::thread::park();
            }
        }
        Fault::Exit => {
            error!(
                core = ctx.id,
                port, "ZRING_TEST_FAULTS: panicking outside any contained task"
            );
            panic!("ZRING_TEST_FAULTS: core {} exits", ctx.id);
        }
        other => other,
    }
}

/// Spawns a connection's task, contained (`task::spawn`); with [`Fault::Panic`] the task panics
/// [`PANIC_AFTER`] into the connection (or at its end), while the connection's state is alive.
pub(super) fn spawn<F>(fault: Fault, what: &'static str, serve: F)
where
    F: Future<Output = ()> + 'static,
{
    if fault != Fault::Panic {
        crate::task::spawn(what, serve);
        return;
    }
    crate::task::spawn(what, async move {
        // Held past the select, so the panic unwinds through a live connection.
        let mut serve = std::pin::pin!(serve);
        monoio::select! {
            () = &mut serve => {}
            () = monoio::time::sleep(PANIC_AFTER) => {}
        }
        panic!("ZRING_TEST_FAULTS: injected panic in a {what} connection");
    });
}

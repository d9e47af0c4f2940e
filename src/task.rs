//! Tasks whose panic ends only themselves: [`spawn`] runs a future as a monoio task on the
//! calling core and catches a panic in any of its polls.
//!
//! Why: monoio does not catch a panicking task. The panic unwinds through the runtime and ends
//! the core's thread, so one bad connection would silently take every connection of that core
//! with it, and the core's share of the listeners' traffic for good. Every task a core spawns
//! per connection (the data path's `serve`, an HBONE stream, an HBONE client's driver) goes
//! through [`spawn`]: a panic is logged, counted ([`panics`], `zring_task_panics_total`) and
//! the task ends there. Unwinding drops what the future held (its sockets, which close; its
//! guards, which uncount the connection and write its access-log record), as a normal end does.
//!
//! Threads: runs on a core (any monoio runtime). The counter is one process-wide atomic, written
//! only when a task panics. A leaf: imports nothing from the crate.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use tracing::error;

/// Tasks that panicked since the process started.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// How many tasks have panicked (and were contained) so far.
pub fn panics() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

/// Spawns `fut` on the current monoio runtime; a panic in it ends the task (output `None`)
/// instead of the core. `what` names the task in the log line.
pub fn spawn<F>(what: &'static str, fut: F) -> monoio::task::JoinHandle<Option<F::Output>>
where
    F: Future + 'static,
    F::Output: 'static,
{
    monoio::spawn(contain(what, fut))
}

/// `fut`, with its panics caught: `None` when it panicked.
///
/// `fut` is boxed, not pinned in an `async fn`: an `async fn` keeps its argument for its whole
/// life beside the pinned copy it polls, so every connection's task held its future twice
/// (measured: an inbound HBONE stream's task 3,968 bytes for a 1,928-byte future). Boxed, the
/// future is stored once, at the price of one allocation per task.
pub fn contain<F: Future>(what: &'static str, fut: F) -> impl Future<Output = Option<F::Output>> {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(move |cx| {
        // Unwind safety: after a panic the future is never polled again, only dropped, and what
        // it shared with the rest of the core (Cell/RefCell counters and tables) is left in
        // the state its guards restore while unwinding.
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Some(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                PANICS.fetch_add(1, Ordering::Relaxed);
                let thread = std::thread::current();
                error!(
                    thread = thread.name().unwrap_or("?"),
                    task = what,
                    "task panicked, ending it (its connection closes; nothing else is affected): {}",
                    message(&*payload)
                );
                Poll::Ready(None)
            }
        }
    })
}

/// Lets every task already queued on this core run before the caller goes on, then queues the
/// caller behind them.
///
/// Not a self-wake: monoio puts a task that wakes itself while it runs at the *front* of the
/// queue, so it runs again at once and the others wait. This spawns an empty task instead (at
/// the back) and waits for it: its end wakes the caller from outside, which queues the caller at
/// the back too. One small allocation per call.
///
/// Under io_uring with deferred task work (zring's default rings) this alone does not let the
/// core's other connections see their I/O: their completions are posted only when the core
/// parks, and it parks only with an empty queue. There a wait that goes through the ring is the
/// way to give way (`net::copy` uses a readiness wait).
pub async fn yield_to_queue() {
    let _ = monoio::spawn(async {}).await;
}

/// The panic's message, when it is a string (as `panic!` makes it).
fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A panicking task ends alone: the runtime, and a task beside it, go on; the panic is
    /// counted; what the task held is dropped.
    #[monoio::test_all(timer_enabled = true)]
    async fn a_panic_ends_only_its_task() {
        struct Held(Rc<Cell<bool>>);
        impl Drop for Held {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let before = panics();
        let dropped = Rc::new(Cell::new(false));
        let held = Held(dropped.clone());
        let bad = spawn("test", async move {
            let _held = held;
            monoio::time::sleep(std::time::Duration::from_millis(5)).await;
            panic!("injected");
        });
        let good = spawn("test", async {
            monoio::time::sleep(std::time::Duration::from_millis(20)).await;
            7
        });
        assert_eq!(bad.await, None);
        assert!(dropped.get(), "the panicked task's state is dropped");
        assert_eq!(good.await, Some(7));
        assert!(panics() > before);
    }
}

//! A one-shot, many-waiter signal for the tasks of one core (the drain notice).
//!
//! Runs on one core (`Cell`/`RefCell`). Waiting registers the task's waker in a slot that the
//! wait future frees when dropped, so tasks that wait in a `select!` over and over (an accept
//! loop, a connection's serve loop) never grow the waiter list: it holds at most one waker per
//! pending wait.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub struct Signal {
    fired: Cell<bool>,
    /// Wakers of pending waits; `None` slots are free and listed in `free`.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl Signal {
    /// Fires the signal (once; later calls do nothing) and wakes every waiter.
    pub fn fire(&self) {
        if self.fired.replace(true) {
            return;
        }
        for w in self.slots.borrow_mut().iter_mut().filter_map(Option::take) {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once the signal has fired.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            signal: self,
            slot: None,
        }
    }

    /// Pending waits right now (for tests).
    pub fn waiters(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }
}

/// See [`Signal::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    signal: &'a Signal,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            self.release();
            return Poll::Ready(());
        }
        let mut slots = self.signal.slots.borrow_mut();
        match self.slot {
            Some(i) => slots[i] = Some(cx.waker().clone()),
            None => {
                let i = match self.signal.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        slots.push(Some(cx.waker().clone()));
                        slots.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Wait<'_> {
    fn release(&mut self) {
        if let Some(i) = self.slot.take() {
            self.signal.slots.borrow_mut()[i] = None;
            self.signal.free.borrow_mut().push(i);
        }
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[monoio::test_all(timer_enabled = true)]
    async fn waits_are_released_and_all_wake_on_fire() {
        let s = Signal::default();
        // A loop that waits and gives up many times keeps at most one slot.
        for _ in 0..1000 {
            let w = s.wait();
            let _ = monoio::time::timeout(Duration::from_micros(1), w).await;
        }
        assert_eq!(s.waiters(), 0);
        assert!(s.slots.borrow().len() <= 1);
        let (a, b) = (s.wait(), s.wait());
        let fire = async {
            monoio::time::sleep(Duration::from_millis(1)).await;
            s.fire();
        };
        monoio::join!(a, b, fire);
        assert!(s.is_fired());
        s.wait().await;
        assert_eq!(s.waiters(), 0);
    }
}

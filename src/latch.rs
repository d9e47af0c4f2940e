//! A one-shot, many-waiter latch for the tasks of one core: fired once with a value, and every
//! wait, before or after, resolves to (a clone of) that value. It is the core's drain notice
//! (`CoreCtx::draining`) and a pool dial's outcome shared with the checkouts that wait for it
//! (`hbone::pool`).
//!
//! Runs on one core (`Cell`/`RefCell`, `!Sync`). A leaf: imports nothing from the crate.
//!
//! Invariant: the waiter list holds at most one waker per pending [`Wait`]. A wait takes a slot
//! on its first pending poll, reuses it on later polls, and gives it back when it resolves or is
//! dropped, so a task that waits in a `select!` over and over (an accept loop, a connection's
//! serve loop) never grows the list.

use std::cell::{OnceCell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug)]
pub struct Latch<T> {
    value: OnceCell<T>,
    /// Wakers of pending waits; `None` slots are free and listed in `free`.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl<T> Default for Latch<T> {
    fn default() -> Self {
        Latch {
            value: OnceCell::new(),
            slots: RefCell::default(),
            free: RefCell::default(),
        }
    }
}

impl<T> Latch<T> {
    /// Fires the latch with `value` and wakes every waiter. Only the first call counts: later
    /// values are dropped and `false` is returned.
    pub fn fire(&self, value: T) -> bool {
        if self.value.set(value).is_err() {
            return false;
        }
        // Wake outside the borrow: a waker may run code that drops another wait of this latch.
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        wakers.into_iter().for_each(Waker::wake);
        true
    }

    pub fn is_fired(&self) -> bool {
        self.value.get().is_some()
    }

    /// The value the latch fired with, if it has.
    pub fn get(&self) -> Option<&T> {
        self.value.get()
    }

    /// Resolves to the fired value (cloned) once the latch has fired.
    pub fn wait(&self) -> Wait<'_, T>
    where
        T: Clone,
    {
        Wait {
            latch: self,
            slot: None,
        }
    }

    /// Pending waits right now (for tests).
    pub fn waiters(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.is_some()).count()
    }
}

/// See [`Latch::wait`].
#[derive(Debug)]
pub struct Wait<'a, T> {
    latch: &'a Latch<T>,
    /// This wait's index in `latch.slots`, once it has been pending.
    slot: Option<usize>,
}

impl<T: Clone> Future for Wait<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if let Some(value) = self.latch.value.get() {
            self.release();
            return Poll::Ready(value.clone());
        }
        let mut slots = self.latch.slots.borrow_mut();
        match self.slot {
            Some(i) => match &mut slots[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            },
            None => {
                let waker = Some(cx.waker().clone());
                let i = match self.latch.free.borrow_mut().pop() {
                    Some(i) => {
                        slots[i] = waker;
                        i
                    }
                    None => {
                        slots.push(waker);
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

impl<T> Wait<'_, T> {
    fn release(&mut self) {
        if let Some(i) = self.slot.take() {
            self.latch.slots.borrow_mut()[i] = None;
            self.latch.free.borrow_mut().push(i);
        }
    }
}

impl<T> Drop for Wait<'_, T> {
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
        let s = Latch::<()>::default();
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
            s.fire(());
        };
        monoio::join!(a, b, fire);
        assert!(s.is_fired());
        s.wait().await;
        assert_eq!(s.waiters(), 0);
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn every_waiter_gets_the_first_value() {
        let latch = Latch::<String>::default();
        let early = async { latch.wait().await };
        let fire = async {
            monoio::time::sleep(Duration::from_millis(1)).await;
            assert!(latch.fire("first".to_owned()));
            assert!(!latch.fire("second".to_owned()));
        };
        let (early, ()) = monoio::join!(early, fire);
        assert_eq!(early, "first");
        // A wait that starts after the fire resolves at once, to the same value.
        assert_eq!(latch.wait().await, "first");
        assert_eq!(latch.get().map(String::as_str), Some("first"));
        assert_eq!(latch.waiters(), 0);
    }

    /// Waits pending at once take one slot each; once dropped, their slots serve the next ones.
    #[test]
    fn slots_are_reused_after_waits_drop() {
        let latch = Latch::<u8>::default();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..3 {
            let mut waits: Vec<_> = (0..10).map(|_| Box::pin(latch.wait())).collect();
            for w in &mut waits {
                assert!(w.as_mut().poll(&mut cx).is_pending());
            }
            assert_eq!(latch.waiters(), 10);
            drop(waits);
            assert_eq!(latch.waiters(), 0);
        }
        assert_eq!(latch.slots.borrow().len(), 10);
        latch.fire(7);
        let mut w = Box::pin(latch.wait());
        assert_eq!(w.as_mut().poll(&mut cx), Poll::Ready(7));
    }
}

//! Per-core pools of copy buffers, two sizes.
//!
//! Runs on one core; `RefCell` inside, never shared. With io_uring a read owns its buffer until
//! the kernel completes it, so an idle connection waiting in `recv` pins its buffer. To keep
//! idle connections cheap, a copy direction reads into a *small* buffer while traffic is sparse
//! and switches to a *large* one only after a read fills the small one (bulk transfer), and
//! back when reads become small again. Buffers lost to a cancelled operation are simply not
//! returned; the pool allocates anew.
//!
//! A burst of connections leaves its buffers on the free lists. [`BufferPool::trim`], called
//! by the core's housekeeping once per period, frees the buffers no connection took during the
//! whole period (each list's low-water mark), so a node gives back the memory of yesterday's
//! peak instead of keeping it for a peak that may not come.

use std::cell::RefCell;

/// Bytes in a small buffer: fits a typical request or response in one read.
pub const SMALL: usize = 4096;
/// How many free small buffers a core keeps at most; beyond this they are freed.
const MAX_FREE_SMALL: usize = 4096;
/// Bytes of free large buffers a core keeps at most (64 of the default 256 KiB); beyond this
/// they are freed. Bounded in bytes because the large size is configurable.
const MAX_FREE_LARGE_BYTES: usize = 16 << 20;

/// Free buffers of one size, with the fewest it held since the last trim.
#[derive(Debug, Default)]
struct FreeList {
    bufs: Vec<Vec<u8>>,
    low: usize,
}

impl FreeList {
    fn take(&mut self) -> Option<Vec<u8>> {
        let buf = self.bufs.pop();
        self.low = self.low.min(self.bufs.len());
        buf
    }

    /// Frees the buffers that stayed on the list through the whole period.
    fn trim(&mut self) -> usize {
        let surplus = self.low;
        self.bufs.truncate(self.bufs.len() - surplus);
        self.bufs.shrink_to(self.bufs.len().max(16));
        self.low = self.bufs.len();
        surplus
    }
}

#[derive(Debug)]
pub struct BufferPool {
    large_size: usize,
    small: RefCell<FreeList>,
    large: RefCell<FreeList>,
}

impl BufferPool {
    pub fn new(large_size: usize) -> BufferPool {
        BufferPool {
            large_size: large_size.max(SMALL),
            small: RefCell::default(),
            large: RefCell::default(),
        }
    }

    pub fn large_size(&self) -> usize {
        self.large_size
    }

    /// An empty buffer with capacity [`SMALL`].
    pub fn small(&self) -> Vec<u8> {
        self.small
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Vec::with_capacity(SMALL))
    }

    /// An empty buffer with the configured large capacity.
    pub fn large(&self) -> Vec<u8> {
        self.large
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Vec::with_capacity(self.large_size))
    }

    /// Returns a buffer to the pool it came from (by capacity); others are dropped.
    pub fn put(&self, mut buf: Vec<u8>) {
        buf.clear();
        let (list, max) = if buf.capacity() == SMALL {
            (&self.small, MAX_FREE_SMALL)
        } else if buf.capacity() == self.large_size {
            (&self.large, (MAX_FREE_LARGE_BYTES / self.large_size).max(1))
        } else {
            return;
        };
        let mut list = list.borrow_mut();
        if list.bufs.len() < max {
            list.bufs.push(buf);
        }
    }

    /// Frees the buffers of each size that no connection took since the previous call; returns
    /// how many bytes that gave back to the allocator.
    pub fn trim(&self) -> usize {
        self.small.borrow_mut().trim() * SMALL + self.large.borrow_mut().trim() * self.large_size
    }

    /// (free small, free large): for tests and runtime gauges.
    pub fn free_counts(&self) -> (usize, usize) {
        (
            self.small.borrow().bufs.len(),
            self.large.borrow().bufs.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_by_size() {
        let pool = BufferPool::new(65536);
        let mut s = pool.small();
        s.extend_from_slice(b"abc");
        let l = pool.large();
        assert_eq!((s.capacity(), l.capacity()), (SMALL, 65536));
        let (sp, lp) = (s.as_ptr(), l.as_ptr());
        pool.put(s);
        pool.put(l);
        pool.put(Vec::with_capacity(100)); // foreign size: dropped
        assert_eq!(pool.free_counts(), (1, 1));
        let s2 = pool.small();
        assert!(s2.is_empty());
        assert_eq!(s2.as_ptr(), sp);
        let l2 = pool.large();
        assert_eq!(l2.as_ptr(), lp);
    }

    #[test]
    fn trim_frees_only_what_a_whole_period_left_unused() {
        let pool = BufferPool::new(65536);
        // A burst: 10 small and 2 large in use at once, then all returned.
        let smalls: Vec<_> = (0..10).map(|_| pool.small()).collect();
        let larges: Vec<_> = (0..2).map(|_| pool.large()).collect();
        smalls.into_iter().for_each(|b| pool.put(b));
        larges.into_iter().for_each(|b| pool.put(b));
        assert_eq!(pool.free_counts(), (10, 2));
        // The period of the burst itself: the lists were empty at their lowest, nothing goes.
        assert_eq!(pool.trim(), 0);
        assert_eq!(pool.free_counts(), (10, 2));
        // Next period only 3 small buffers are taken at once: 7 small and both large go.
        let taken: Vec<_> = (0..3).map(|_| pool.small()).collect();
        taken.into_iter().for_each(|b| pool.put(b));
        assert_eq!(pool.trim(), 7 * SMALL + 2 * 65536);
        assert_eq!(pool.free_counts(), (3, 0));
        // An idle period frees the rest.
        assert_eq!(pool.trim(), 3 * SMALL);
        assert_eq!(pool.free_counts(), (0, 0));
        // And the pool still serves.
        assert_eq!(pool.small().capacity(), SMALL);
    }
}

//! Per-core pools of copy buffers, two sizes.
//!
//! Runs on one core; `RefCell` inside, never shared. With io_uring a read owns its buffer until
//! the kernel completes it, so an idle connection waiting in `recv` pins its buffer. To keep
//! idle connections cheap, a copy direction reads into a *small* buffer while traffic is sparse
//! and switches to a *large* one only after a read fills the small one (bulk transfer), and
//! back when reads become small again. Buffers lost to a cancelled operation are simply not
//! returned; the pool allocates anew.

use std::cell::RefCell;

/// Bytes in a small buffer: fits a typical request or response in one read.
pub const SMALL: usize = 4096;
/// How many free buffers of each size a core keeps at most; beyond this they are freed.
const MAX_FREE_SMALL: usize = 4096;
const MAX_FREE_LARGE: usize = 256;

#[derive(Debug)]
pub struct BufferPool {
    large_size: usize,
    small: RefCell<Vec<Vec<u8>>>,
    large: RefCell<Vec<Vec<u8>>>,
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
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SMALL))
    }

    /// An empty buffer with the configured large capacity.
    pub fn large(&self) -> Vec<u8> {
        self.large
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.large_size))
    }

    /// Returns a buffer to the pool it came from (by capacity); others are dropped.
    pub fn put(&self, mut buf: Vec<u8>) {
        buf.clear();
        let (list, max) = if buf.capacity() == SMALL {
            (&self.small, MAX_FREE_SMALL)
        } else if buf.capacity() == self.large_size {
            (&self.large, MAX_FREE_LARGE)
        } else {
            return;
        };
        let mut list = list.borrow_mut();
        if list.len() < max {
            list.push(buf);
        }
    }

    /// (free small, free large): for tests and runtime gauges.
    pub fn free_counts(&self) -> (usize, usize) {
        (self.small.borrow().len(), self.large.borrow().len())
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
}

//! The global allocator: mimalloc, wrapped to count the bytes the process holds.
//!
//! Resident memory says little about leaks: the allocator keeps pages for reuse, a few long-lived
//! objects pin a page, code pages fault in as new paths run, so RSS at rest moves by megabytes
//! between identical bursts. The bytes handed out and not yet freed do not: a connection that
//! leaks 100 bytes shows up as 100 bytes per connection. zring reports that number as
//! `zring_heap_live_bytes` and the soak test watches it.
//!
//! Counting must not become the contention it measures, so each thread adds to a counter of its
//! own (a plain load and store: it is the only writer) and a reader sums them all. A thread
//! gets its counter on its first allocation; threads beyond [`SLOTS`] share the last one and
//! pay for an atomic add. A block freed on another thread than the one that allocated it makes
//! one counter go up and another down; only the sum means anything, and it is exact.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

/// Counters for this many threads; the last is shared by every thread after them.
const SLOTS: usize = 64;

/// One cache line each: every allocation writes its thread's counter, and counters sharing a
/// line would make the cores invalidate each other's caches on every allocation.
static COUNTERS: [CachePadded<AtomicIsize>; SLOTS] =
    [const { CachePadded::new(AtomicIsize::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
/// Whether [`Counting`] is the global allocator of this process (a library test's is not).
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's counter, `usize::MAX` until its first allocation. Const-initialised and
    /// without a destructor, so it stays readable while the thread exits.
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// The global allocator of the `zring` binary: mimalloc, with live bytes counted.
pub struct Counting(mimalloc::MiMalloc);

impl Counting {
    pub const fn new() -> Counting {
        Counting(mimalloc::MiMalloc)
    }
}

impl Default for Counting {
    fn default() -> Counting {
        Counting::new()
    }
}

impl std::fmt::Debug for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counting(mimalloc)")
    }
}

/// Adds `delta` to the calling thread's counter.
#[inline]
fn count(delta: isize) {
    let slot = SLOT
        .try_with(|s| {
            let mut slot = s.get();
            if slot == usize::MAX {
                slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed).min(SLOTS - 1);
                s.set(slot);
            }
            slot
        })
        .unwrap_or(SLOTS - 1);
    let counter = &COUNTERS[slot];
    if slot < SLOTS - 1 {
        // Only this thread writes this counter: a load and a store cannot lose an update.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(delta),
            Ordering::Relaxed,
        );
    } else {
        counter.fetch_add(delta, Ordering::Relaxed);
    }
}

/// Bytes allocated through [`Counting`] and not freed yet, summed over every thread; `None`
/// when [`Counting`] is not this process's global allocator. A sum of counters read one after
/// the other, so exact only when the process is at rest, within a few blocks otherwise.
pub fn live_bytes() -> Option<u64> {
    if !INSTALLED.load(Ordering::Relaxed) {
        return None;
    }
    let sum: isize = COUNTERS.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    Some(sum.max(0) as u64)
}

// SAFETY: every method forwards to mimalloc's GlobalAlloc with the caller's own arguments, so
// mimalloc's guarantees are ours; the counting around it neither allocates nor touches the block.
unsafe impl GlobalAlloc for Counting {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract (a non-zero-size layout).
        let p = unsafe { self.0.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { self.0.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned, with its layout.
        unsafe { self.0.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a block this allocator returned, its layout and a valid
        // new size.
        let p = unsafe { self.0.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// mimalloc's option index for `allow_thp` (`mi_option_e` in the v3 `mimalloc.h` the
/// `mimalloc` crate builds).
const MI_OPTION_ALLOW_THP: libc::c_int = 43;

unsafe extern "C" {
    /// From the mimalloc library the `mimalloc` crate links.
    fn mi_option_set(option: libc::c_int, value: libc::c_long);
    fn mi_collect(force: bool);
}

/// Sets the process up for [`Counting`] as its global allocator; the binary calls it first
/// thing in `main`:
/// - [`live_bytes`] starts reporting;
/// - mimalloc keeps its default purge delay (10 ms, elapsed when the thread next allocates):
///   purging every freed page at once cost the control thread 10-25 % on a 100,000-workload
///   push (`cargo bench --bench xds_apply`), and a core that goes idle returns its pages with
///   [`collect_thread_heap`] instead;
/// - no transparent huge pages: mimalloc would ask for them on its arenas, and a 2 MiB page
///   stays resident while any of it is in use, so the small, short-lived blocks of many
///   connections kept whole huge pages alive. Measured with the soak test (1,000 HBONE
///   connections, two nodes): at rest 46 MiB resident with them, 31 MiB without; at the peak
///   57-60 MiB against 42-47 MiB.
pub fn configure() {
    INSTALLED.store(true, Ordering::Relaxed);
    // SAFETY: mi_option_set only stores an option value (allow_thp 0: off), from any thread
    // at any time. prctl with PR_SET_THP_DISABLE takes plain integers and only sets a flag on
    // this process.
    unsafe {
        mi_option_set(MI_OPTION_ALLOW_THP, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Returns the calling thread's free allocator pages to the kernel now. `thorough` also
/// collects what other threads freed into this heap and abandoned pages: worth it when the
/// thread has just gone idle, too slow to do often on a busy one.
pub fn collect_thread_heap(thorough: bool) {
    // SAFETY: mi_collect only walks and trims the calling thread's own heap (and, forced,
    // takes over abandoned pages, which mimalloc synchronises); any thread may call it.
    unsafe { mi_collect(thorough) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_is_held_across_threads() {
        // Not the test binary's global allocator: drive it directly.
        let a = Counting::new();
        let sum = || {
            COUNTERS
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum::<isize>()
        };
        let before = sum();
        let layout = Layout::from_size_align(1000, 8).unwrap();
        // SAFETY: a valid non-zero layout; every block is freed with its layout below.
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null());
        // SAFETY: `p` came from `a` with `layout`; 3000 is a valid size.
        let p = unsafe { a.realloc(p, layout, 3000) };
        assert!(!p.is_null());
        let grown = Layout::from_size_align(3000, 8).unwrap();
        // Freed on another thread: that thread's counter goes negative, the sum is exact.
        let addr = p as usize;
        std::thread::spawn(move || {
            // SAFETY: the block from `a.realloc` above, with its current layout.
            unsafe { Counting::new().dealloc(addr as *mut u8, grown) };
        })
        .join()
        .unwrap();
        // Other tests may allocate concurrently through the test harness's allocator, not
        // through `Counting`, so the counters moved only by what this test did.
        assert_eq!(sum(), before);
        // SAFETY: as above.
        let q = unsafe { a.alloc_zeroed(layout) };
        assert_eq!(sum(), before + 1000);
        // SAFETY: `q` came from `a` with `layout`.
        unsafe { a.dealloc(q, layout) };
        assert_eq!(sum(), before);
    }
}

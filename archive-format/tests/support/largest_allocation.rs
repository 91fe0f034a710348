//! The largest single allocation a parser makes: a counting global
//! allocator and `assert_refused`, shared by the allocation-bomb tests of
//! archive-format and of the tools (`#[path]`-included by both).
// Each including test uses a part of it.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// The largest single allocation (or reallocation's new size) of this
    /// thread since the last `peak`.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the thread-local may be gone while a thread exits.
    let _ = LARGEST.try_with(|l| {
        if size > l.get() {
            l.set(size);
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the largest single allocation it
/// made on this thread.
pub fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(std::cell::Cell::get))
}

pub const MIB: usize = 1 << 20;
/// What a parser may allocate beyond a documented limit, or for a few
/// small inputs: its own state, a read buffer, an error message.
pub const MARGIN: usize = MIB;

/// Asserts that `f` fails and allocates at most `limit` + [`MARGIN`].
pub fn assert_refused<T, E: std::fmt::Display>(
    case: &str,
    limit: usize,
    f: impl FnOnce() -> Result<T, E>,
) -> String {
    let (result, largest) = peak(f);
    let error = match result {
        Ok(_) => panic!("{case}: accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        largest <= limit + MARGIN,
        "{case}: allocated {largest} bytes at once (limit {limit} + {MARGIN}); error: {error}"
    );
    error
}

//! Software prefetch: asks the CPU to start loading memory that is about to be used.
//!
//! A shard handles a batch of a few hundred frames at once, each touching state last used a
//! whole report cycle ago (its device's and vehicle's state, the records it replaces, its
//! connection's outbox). At 10,000 terminals that state is no longer in the cache, and handling
//! the frames one after the other waits for each miss in turn. Asking for all of a batch's
//! state first lets the misses overlap (session 14). A prefetch is only a hint: it never faults,
//! whatever the address, and changes nothing but timing.
//!
//! Written by hand because the standard library's `core::intrinsics::prefetch_read_data` is
//! unstable and no well-kept crate offers more than these few lines.

/// Cache line size assumed for stepping through an object.
const LINE: usize = 64;

/// Starts loading the lines of `*value` into the second-level cache. The second level rather
/// than the first: a batch's state (hundreds of lines) would evict itself from the first before
/// it is used.
#[inline(always)]
pub fn prefetch<T: ?Sized>(value: &T) {
    let start = value as *const T as *const u8;
    let len = std::mem::size_of_val(value);
    if len == 0 {
        return;
    }
    // Every line the object overlaps, from the one holding its first byte to the one holding
    // its last: an object need not start on a line boundary.
    let first = start.addr() & !(LINE - 1);
    let last = (start.addr() + (len - 1)) & !(LINE - 1);
    for addr in (first..=last).step_by(LINE) {
        line(start.with_addr(addr));
    }
}

#[inline(always)]
fn line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch instructions do not access memory architecturally and never fault; the
    // pointer is only a hint, and here it points into a live object anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

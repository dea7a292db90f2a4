//! One read buffer per thread, lent to whichever connection reads next.
//!
//! A connection holds a read buffer only while a frame is incomplete: an idle connection must
//! not keep one (its memory is the budget for a million quiet trackers). Allocating a buffer for
//! every read and freeing it once the frame was handled cost an allocation, a free and a
//! `BytesMut::reserve` per frame (about 400 instructions, session 13). Instead the thread keeps
//! one buffer: a connection about to read borrows it, and gives it back once everything it read
//! was handled. A connection that keeps a partial frame keeps the buffer; the next reader on
//! the thread then finds none and allocates its own, which it gives back in turn.
use std::cell::RefCell;

use bytes::BytesMut;

/// The largest buffer a thread keeps: one that grew for a large frame is freed instead.
const KEEP: usize = 16 * 1024;

thread_local! {
    static SPARE: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// The thread's spare buffer (empty, possibly without capacity if another connection has it).
pub(super) fn lend() -> BytesMut {
    SPARE.with_borrow_mut(std::mem::take)
}

/// Gives an empty buffer back to the thread, or frees it if the thread has one already.
///
/// `capacity` here is what is left past the consumed bytes, not the allocation: a buffer read to
/// its very end counts as empty and is freed, and one that grew for a large frame may be kept
/// while it reports less than `KEEP`. Either way it is one buffer per thread at most.
pub(super) fn give_back(mut buf: BytesMut) {
    debug_assert!(buf.is_empty());
    if buf.capacity() == 0 || buf.capacity() > KEEP {
        return;
    }
    buf.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.capacity() == 0 {
            *spare = buf;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_lent_again_and_only_one_is_kept() {
        let first = lend();
        drop(first);
        let mut a = BytesMut::with_capacity(512);
        let a_ptr = a.as_ptr();
        a.extend_from_slice(b"frame");
        a.clear();
        give_back(a);
        // A second buffer given back while the thread has one is freed.
        give_back(BytesMut::with_capacity(512));
        let again = lend();
        assert_eq!(again.as_ptr(), a_ptr);
        assert!(again.capacity() >= 512);
        // Lent out: the next reader gets none.
        assert_eq!(lend().capacity(), 0);
        give_back(BytesMut::with_capacity(KEEP + 1));
        assert_eq!(lend().capacity(), 0, "a large buffer is not kept");
    }
}

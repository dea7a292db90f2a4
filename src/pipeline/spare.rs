//! Last known records' allocations, reused on the thread that replaces them.
//!
//! Every position that moves a device or a vehicle makes a new shared record (the live view keeps
//! the one it published until the next replaces it), and the commit stage frees the old one when
//! it publishes the new: an allocation and a free per record, two records per position, about a
//! twentieth of a shard thread's instructions per position (session 18, `bench-callgrind.sh`).
//! A record that nothing else holds when it is replaced is kept here instead and the tracker
//! writes its next record into it. The records a reader of the HTTP API still holds are freed
//! as before, when it lets them go.
use std::cell::RefCell;
use std::sync::Arc;

use crate::model::LastKnown;

/// Records kept per thread at most: a batch replaces up to two per frame, and the tracker takes
/// them back at the same pace, so a few hundred cover the difference between two batches.
const MAX_SPARE: usize = 512;

thread_local! {
    static SPARE: RefCell<Vec<Arc<LastKnown>>> = const { RefCell::new(Vec::new()) };
}

/// Takes back a record that the live view no longer holds; kept for reuse if nothing else holds
/// it either, dropped otherwise.
pub fn give_back(mut record: Arc<LastKnown>) {
    if Arc::get_mut(&mut record).is_none() {
        return;
    }
    // `try_with`: on a thread whose locals are being torn down the record is simply dropped.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(record);
        }
    });
}

/// `record` in a shared allocation, a spare one if this thread has any.
pub fn share(record: LastKnown) -> Arc<LastKnown> {
    match SPARE
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
    {
        Some(mut shared) => {
            // Spares are only ever kept while unique (`give_back`), and no one can reach them.
            *Arc::get_mut(&mut shared).expect("a spare record is held only here") = record;
            shared
        }
        None => Arc::new(record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fix, Motion, Signals};

    fn record(lat: f64) -> LastKnown {
        LastKnown {
            vehicle_id: Arc::from("V1"),
            fix: Fix::for_test("T1", 1_000, lat),
            motion: Motion::Moving,
            acc: false,
            last_frame_ms: 1_000,
            signals: Signals::default(),
        }
    }

    #[test]
    fn a_record_nothing_holds_is_reused_and_a_shared_one_is_not() {
        let first = share(record(1.0));
        let place = Arc::as_ptr(&first);
        give_back(first);
        let second = share(record(2.0));
        assert_eq!(
            Arc::as_ptr(&second),
            place,
            "the spare allocation is reused"
        );
        assert_eq!(second.fix.latitude, 2.0, "holding the new record");
        // A reader still holds this one: it must stay as it was.
        let held = second.clone();
        give_back(second);
        let third = share(record(3.0));
        assert_ne!(Arc::as_ptr(&third), place);
        assert_eq!(held.fix.latitude, 2.0);
    }
}

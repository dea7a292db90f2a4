//! The hot path — split a stream, decode a 0x0200 with extras and a 0x0704
//! batch, read the standard items — must not touch the heap.
//!
//! Counting allocations needs a global allocator, and implementing
//! `GlobalAlloc` is `unsafe` by definition. This test crate is separate from
//! the library, which stays `#![forbid(unsafe_code)]`; the wrapper only
//! counts and forwards to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use liengate_protocols::jt808::{
    decode_frame, DecodeOptions, Message, Split, Splitter, DEFAULT_MAX_FRAME, MAX_LOGICAL_FRAME,
};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn split_and_decode_allocate_nothing() {
    // jt808-sc-0200-location-vendor-extras and jt808-sc-0704-batch-2 (SmallChi/JT808 tests),
    // plus jt808-gj-0200-location-escaped for the escape path.
    let mut stream = Vec::new();
    for _ in 0..50 {
        stream.extend(unhex("7e020000670440054300360d0700000000000c01030158a18406c96fe0000f0000012423120709365201040000000c30011731010ceb06000400ce06d62b04000000005110ffffffffffffffffffffffffffffffff58100fff0fff0fff0fff0fff0fff0fff0fff55080000000000099066520103287e"));
        stream.extend(unhex("7e0704005311223344556622b80002000026000000010000000200ba7f0e07e4f11c0028003c0000180715101010010400000064020200370026000000020000000100cb735507e6a32300290036007818071510103001040000006002020042d47e"));
    }
    let mut scratch = [0u8; MAX_LOGICAL_FRAME];
    let opts = DecodeOptions::default();
    let mut splitter = Splitter::new(DEFAULT_MAX_FRAME);
    let (mut locations, mut sum) = (0usize, 0f64);

    let before = ALLOCS.load(Ordering::Relaxed);
    let mut buf = &stream[..];
    loop {
        match splitter.next(buf) {
            Split::Frame { frame, consumed } => {
                let (_p, m) = decode_frame(&buf[frame], &mut scratch, &opts).unwrap();
                match m {
                    Message::Location(l) => {
                        locations += 1;
                        sum += l.latitude() + l.longitude() + l.speed_kmh();
                        sum += l.extras.mileage_km().unwrap_or(0.0);
                        sum += l.extras.rssi().unwrap_or(0) as f64;
                        sum += l.extras.iter().map(|i| i.value.len()).sum::<usize>() as f64;
                        sum += l.time.to_unix().unwrap() as f64;
                        sum += l.extras.standard().satellites.unwrap_or(0) as f64;
                    }
                    Message::Batch(b) => {
                        for item in b.items() {
                            let l = item.unwrap();
                            locations += 1;
                            sum += l.latitude() + l.extras.fuel_l().unwrap_or(0.0);
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
                buf = &buf[consumed..];
            }
            Split::Incomplete { consumed } => {
                assert_eq!(consumed, 0);
                break;
            }
            Split::Invalid { error, .. } => panic!("{error}"),
        }
    }
    let after = ALLOCS.load(Ordering::Relaxed);
    assert_eq!(locations, 150);
    assert!(sum > 0.0);
    assert_eq!(
        after - before,
        0,
        "hot path allocated {} times",
        after - before
    );
}

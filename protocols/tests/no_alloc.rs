//! The hot path allocates nothing: splitting and decoding a 0x0200 with
//! extras and a 0x0704 batch (every item, every extra, the time conversion)
//! is run under a global allocator that counts allocations made by this
//! thread while counting is switched on.
//!
//! This is a separate test binary because a `#[global_allocator]` applies to
//! the whole binary; counting per thread keeps the test harness's own
//! allocations (other threads, output capture) out of the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use liengate_protocols::jt808::{
    decode_frame, DecodeOptions, Message, Split, Splitter, DEFAULT_MAX_FRAME, MAX_LOGICAL_FRAME,
};

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Per thread: the tests run in parallel, and one test's allocations must not count for
    /// another that is measuring at the same moment.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: during thread teardown the thread-locals may be gone.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts, and counting allocates nothing.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made by this thread while running `f`.
fn allocations_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (ALLOCATIONS.with(Cell::get) - before, out)
}

/// `jt808-sc-0200-2019-flag-2013-header`, from
/// SmallChi/JT808@c9552b0f9eadc6906aeeaa501335c312ce082232:src/JT808.Protocol.Test/MessageBody/JT808_0x0200Test.cs#L332:
/// a real device's 0x0200 with eight extra items.
const LOCATION: &str = "7e0200406c010030000681090e00000000000c0003026c936f074c794c0004036300d7210625155739010400000000052801cc00210625155739054145bbc91e4145a2fa1141450000004145bbc8194145a1370a4145000000240200002a0200002b04000000003001153101125f0a89860418231870850620757e";

/// `jt808-tr-0200-escaped-b`, from traccar/traccar@9e5c458ad0bf44ceaddf72534bf6874787f41b6c:src/test/java/org/traccar/protocol/Jt808ProtocolDecoderTest.java#L204:
/// a 0x0200 with six extra items and escaped bytes, so unescaping runs too.
const ESCAPED_LOCATION: &str = "7e0200008201215233475100030000000000000003015a7f6106cf8cec003d0000000021071311481901040000005630011931011ae10200755d3d0601cc0024990a7d01a0032301cc002499099b2941fc01cc002499099b29430b01cc0024990a7d01a0290601cc0024990a7d01a015fd01cc0026220994506bfffe157c010400000001f10c000000000000000000000000997e";

/// `jt808-tr-0704-batch-c`, from traccar/traccar@9e5c458ad0bf44ceaddf72534bf6874787f41b6c
/// (Jt808ProtocolDecoderTest L256): a blind-area batch of three locations, four extras each.
const BATCH: &str = "7e070400db07904116875014480003010046000000000000000b020057d40072fb9c0064017200f220090215230301040000092930011f31010ceb1c000c00b28921200272401241734f00060089ffffffef000400ce1d460046000000000000000b0200570c0072fdb2005f013600ee20090215230801040000092a30011f31010ceb1c000c00b28921200272401241734f00060089ffffffef000400ce1e800046000000000000000b020056ac0072fe9b005a00d200ec20090215231301040000092a30011b31010ceb1c000c00b28921200272401241734f00060089ffffffef000400ce1e35d77e";

/// Splits and decodes every frame in `stream` the way a connection does,
/// touching every decoded field; returns (frames, locations, extras seen).
fn split_and_decode(
    splitter: &mut Splitter,
    scratch: &mut [u8; MAX_LOGICAL_FRAME],
    stream: &[u8],
) -> (usize, usize, usize) {
    let opts = DecodeOptions {
        skip_checksum: false,
        max_frame: DEFAULT_MAX_FRAME,
    };
    let (mut frames, mut locations, mut extras) = (0, 0, 0);
    let mut at = 0;
    loop {
        match splitter.next(&stream[at..]) {
            Split::Frame { frame, consumed } => {
                let wire = &stream[at + frame.start..at + frame.end];
                let (packet, message) =
                    decode_frame(wire, scratch, &opts).expect("reference frame decodes");
                std::hint::black_box(packet.header.terminal);
                let mut visit = |l: &liengate_protocols::jt808::Location<'_>| {
                    locations += 1;
                    std::hint::black_box((
                        l.latitude(),
                        l.longitude(),
                        l.speed_kmh(),
                        l.time.to_unix().ok(),
                    ));
                    std::hint::black_box((
                        l.extras.mileage_km(),
                        l.extras.rssi(),
                        l.extras.satellites(),
                    ));
                    for item in l.extras.iter() {
                        extras += 1;
                        std::hint::black_box(item.value);
                    }
                };
                match message {
                    Message::Location(l) => visit(&l),
                    Message::Batch(b) => b
                        .items()
                        .for_each(|item| visit(&item.expect("batch item decodes"))),
                    other => panic!("unexpected message {other:?}"),
                }
                frames += 1;
                at += consumed;
            }
            Split::Incomplete { .. } => return (frames, locations, extras),
            Split::Invalid { error, .. } => panic!("reference stream rejected: {error:?}"),
        }
    }
}

#[test]
fn split_and_decode_allocate_nothing() {
    let mut stream = Vec::new();
    for frame in [LOCATION, ESCAPED_LOCATION, BATCH] {
        stream.extend(hex::decode(frame).unwrap());
    }
    let mut splitter = Splitter::new(DEFAULT_MAX_FRAME);
    let mut scratch = [0u8; MAX_LOGICAL_FRAME];

    let (allocations, (frames, locations, extras)) =
        allocations_during(|| split_and_decode(&mut splitter, &mut scratch, &stream));

    // The decode really ran: 2 locations + a batch of 3, with their extras.
    assert_eq!(frames, 3);
    assert_eq!(locations, 5);
    assert_eq!(extras, 8 + 6 + 3 * 4, "extra items seen");
    assert_eq!(
        allocations, 0,
        "the hot decode path allocated {allocations} times"
    );
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that never counts.
    let (allocations, v) = allocations_during(|| vec![1u8; 64]);
    assert_eq!(v.len(), 64);
    assert!(allocations >= 1);
}

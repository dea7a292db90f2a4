//! The real frames the JT808 benchmarks decode, copied byte for byte from
//! shared/reference-frames/jt808.jsonl (copied into fixtures/jt808/frames.jsonl) (id and source kept).
//!
//! Both were chosen because every implementation under test can take them:
//! the `jt808` crate panics on most timestamps (see `peers.rs`), and these two
//! have times it survives.
#![allow(dead_code)]

/// `jt808-tr-0200-a`, from
/// traccar/traccar@9e5c458ad0bf44ceaddf72534bf6874787f41b6c:src/test/java/org/traccar/protocol/Jt808ProtocolDecoderTest.java#L296.
/// A 2013 location report with three extra items (mileage, fuel, recorder speed).
pub const LOCATION_0200_HEX: &str = "7e0200002a013833501744001900000000000000c201597fa806cc01580080000000081508180721210104000002f502020000030200009f7e";

/// `jt808-tr-0704-batch-c`, from
/// traccar/traccar@9e5c458ad0bf44ceaddf72534bf6874787f41b6c:src/test/java/org/traccar/protocol/Jt808ProtocolDecoderTest.java#L256.
/// A blind-area batch of three locations, each with five extra items.
pub const BATCH_0704_HEX: &str = "7e070400db07904116875014480003010046000000000000000b020057d40072fb9c0064017200f220090215230301040000092930011f31010ceb1c000c00b28921200272401241734f00060089ffffffef000400ce1d460046000000000000000b0200570c0072fdb2005f013600ee20090215230801040000092a30011f31010ceb1c000c00b28921200272401241734f00060089ffffffef000400ce1e800046000000000000000b020056ac0072fe9b005a00d200ec20090215231301040000092a30011b31010ceb1c000c00b28921200272401241734f00060089ffffffef000400ce1e35d77e";

/// Number of locations in [`BATCH_0704_HEX`].
pub const BATCH_0704_ITEMS: usize = 3;

pub fn location_0200() -> Vec<u8> {
    hex::decode(LOCATION_0200_HEX).expect("valid hex")
}

pub fn batch_0704() -> Vec<u8> {
    hex::decode(BATCH_0704_HEX).expect("valid hex")
}

//! Code shared by the JT808 benchmarks: the frames, liengate's decode loop and
//! adapters for the crates.io peers.
pub mod coverage;
pub mod frames;
pub mod ours;
pub mod peers;
pub mod ratio;

//! Same-process comparison of liengate's JT808 split + decode with the
//! crates.io crates `jt808` and `jt808-rs`, printing frames/s, MB/s and the
//! ratio ours / fastest peer; then a per-frame table of what each peer
//! decodes right, wrong, or panics on over the reference frames.
//!
//! Run: `cargo bench --bench jt808_ratio` (about 15 s). The criterion view of
//! the same loops is `cargo bench --bench jt808_decode`.

mod common;

fn main() {
    if !common::ratio::benchmarking() {
        // `cargo test --benches` runs this binary without `--bench`: check
        // that every implementation still decodes the frames, skip timing.
        common::ratio::smoke_test();
        return;
    }
    common::ratio::print_ratio();
    println!();
    common::coverage::print_peer_coverage();
}

//! Criterion benchmark: split + decode of real JT808 frames by liengate and,
//! in the same run, by the crates.io crates `jt808` and `jt808-rs`.
//!
//! Every iteration copies the frame into the connection buffer first (what a
//! socket read does), then splits and decodes it, for every implementation
//! alike. Throughput is reported per frame (elements) and per byte.
//!
//! Run: `cargo bench --bench jt808_decode`. After the criterion groups it
//! prints the ours / fastest-peer ratio; `cargo bench --bench jt808_ratio`
//! prints only that, plus what each peer gets wrong per reference frame.

mod common;

use std::hint::black_box;

use bytes::BytesMut;
use common::{frames, ours::Ours, peers};
use criterion::{criterion_group, Criterion, Throughput};
use jt808::codec::Jt808Codec;

/// One criterion group: the same on-wire `frame` split and decoded by liengate (`ours`) and by
/// the `jt808` crate (`peer`), plus `jt808-rs`, which can only unescape it.
fn split_decode_group<A, B>(
    c: &mut Criterion,
    name: &str,
    frame: &[u8],
    mut ours: impl FnMut(&mut Ours, &[u8]) -> Option<A>,
    mut peer: impl FnMut(&mut Jt808Codec, &mut BytesMut) -> Option<B>,
) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::ElementsAndBytes {
        elements: 1,
        bytes: frame.len() as u64,
    });

    let mut decoder = Ours::default();
    let mut buf = Vec::with_capacity(4096);
    group.bench_function("liengate", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(black_box(frame));
            black_box(ours(&mut decoder, &buf).expect("liengate decodes the frame"))
        })
    });

    let mut codec = Jt808Codec::new();
    let mut peer_buf = BytesMut::with_capacity(4096);
    group.bench_function("jt808 crate", |b| {
        b.iter(|| {
            peer_buf.extend_from_slice(black_box(frame));
            black_box(peer(&mut codec, &mut peer_buf).expect("jt808 decodes the frame"))
        })
    });

    group.bench_function("jt808-rs (framing only)", |b| {
        b.iter(|| {
            black_box(
                peers::jt808_rs_frame(black_box(frame)).expect("jt808-rs unescapes the frame"),
            )
        })
    });
    group.finish();
}

fn location_0200(c: &mut Criterion) {
    split_decode_group(
        c,
        "jt808_0200_split_decode",
        &frames::location_0200(),
        |ours, buf| ours.location(buf),
        peers::jt808_crate_location,
    );
}

fn batch_0704(c: &mut Criterion) {
    split_decode_group(
        c,
        "jt808_0704_split_decode",
        &frames::batch_0704(),
        |ours, buf| ours.batch(buf),
        peers::jt808_crate_batch,
    );
}

criterion_group!(benches, location_0200, batch_0704);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // The ratio in the same run: criterion's means above include the time
    // slices other processes take on a shared machine, so the ratio is also
    // measured as the best of many short rounds (see `common::ratio`).
    if common::ratio::benchmarking() {
        println!();
        common::ratio::print_ratio();
    }
}

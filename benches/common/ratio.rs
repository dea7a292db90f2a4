//! Same-process timing of liengate's split + decode and the crates.io peers,
//! printed as frames/s, MB/s and the ratio ours / fastest peer. Shared by
//! `jt808_ratio` (ratio + peer coverage) and `jt808_decode` (printed after
//! the criterion groups, so one run gives both views).
#![allow(dead_code)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use jt808::codec::Jt808Codec;

use super::{frames, ours::Ours, peers};

/// True under `cargo bench` (which passes `--bench`), false under
/// `cargo test --benches`, where timing loops would only slow the tests.
pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Decodes each benchmark frame once with every implementation.
pub fn smoke_test() {
    let mut ours = Ours::default();
    let (fix, consumed) = ours
        .location(&frames::location_0200())
        .expect("liengate decodes 0x0200");
    assert_eq!(consumed, frames::location_0200().len());
    // Fix::extras is the value bytes plus one per item: mileage (4),
    // fuel (2) and recorder speed (2).
    assert_eq!(fix.extras, (4 + 1) + (2 + 1) + (2 + 1));
    let (items, _) = ours
        .batch(&frames::batch_0704())
        .expect("liengate decodes 0x0704");
    assert_eq!(items, frames::BATCH_0704_ITEMS);
    let mut codec = Jt808Codec::new();
    let mut buf = BytesMut::from(&frames::location_0200()[..]);
    let peer = peers::jt808_crate_location(&mut codec, &mut buf).expect("jt808 decodes 0x0200");
    assert_eq!((peer.lat_raw, peer.lon_raw), (fix.lat_raw, fix.lon_raw));
    let mut buf = BytesMut::from(&frames::batch_0704()[..]);
    assert_eq!(
        peers::jt808_crate_batch(&mut codec, &mut buf),
        Some(frames::BATCH_0704_ITEMS)
    );
    assert_eq!(
        peers::jt808_rs_frame(&frames::location_0200()),
        Some(0x0200)
    );
    println!("jt808 benchmark smoke test: 1 passed, 0 failed");
}

/// Best throughput (frames per second) of many short timed rounds of `step`.
///
/// The machine this runs on is shared (2 cores, several busy processes), so a
/// long round mostly measures the scheduler. Short rounds (about 5 ms), many
/// of them over about 1.5 s, and the fastest one kept, measure the code in
/// the time slices it actually ran; every implementation is measured the
/// same way.
fn frames_per_sec(mut step: impl FnMut()) -> f64 {
    let mut n: u64 = 100;
    loop {
        let start = Instant::now();
        for _ in 0..n {
            step();
        }
        let took = start.elapsed();
        if took >= Duration::from_millis(2) {
            n = (n as f64 * 0.005 / took.as_secs_f64()).max(1.0) as u64;
            break;
        }
        n *= 2;
    }
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut best = 0.0f64;
    while Instant::now() < deadline {
        let start = Instant::now();
        for _ in 0..n {
            step();
        }
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

struct Row {
    name: &'static str,
    decodes_body: bool,
    fps: f64,
}

fn report(title: &str, frame_len: usize, rows: &[Row]) {
    println!("{title} ({frame_len} bytes on the wire)");
    for row in rows {
        println!(
            "  {:<26} {:>12.0} frames/s {:>8.1} ns/frame {:>9.1} MB/s",
            row.name,
            row.fps,
            1e9 / row.fps,
            row.fps * frame_len as f64 / 1e6
        );
    }
    let ours = rows[0].fps;
    let fastest_decoder = rows[1..]
        .iter()
        .filter(|r| r.decodes_body)
        .max_by(|a, b| a.fps.total_cmp(&b.fps));
    let fastest_any = rows[1..].iter().max_by(|a, b| a.fps.total_cmp(&b.fps));
    if let Some(peer) = fastest_decoder {
        println!(
            "  ratio ours / fastest decoding peer ({}): {:.1}x",
            peer.name,
            ours / peer.fps
        );
    }
    if let Some(peer) = fastest_any {
        println!(
            "  ratio ours / fastest peer of any kind ({}): {:.1}x",
            peer.name,
            ours / peer.fps
        );
    }
}

/// Times the 0x0200 and 0x0704 frames through every implementation and
/// prints one table per frame with the ratios.
pub fn print_ratio() {
    let location = frames::location_0200();
    let mut ours = Ours::default();
    let mut buf = Vec::with_capacity(4096);
    let ours_fps = frames_per_sec(|| {
        buf.clear();
        buf.extend_from_slice(black_box(&location));
        black_box(ours.location(&buf).expect("liengate decodes the frame"));
    });
    let mut codec = Jt808Codec::new();
    let mut peer_buf = BytesMut::with_capacity(4096);
    let jt808_fps = frames_per_sec(|| {
        peer_buf.extend_from_slice(black_box(&location));
        black_box(
            peers::jt808_crate_location(&mut codec, &mut peer_buf)
                .expect("jt808 decodes the frame"),
        );
    });
    let jt808_rs_fps = frames_per_sec(|| {
        black_box(
            peers::jt808_rs_frame(black_box(&location)).expect("jt808-rs unescapes the frame"),
        );
    });
    report(
        "0x0200 location, split + decode, jt808-tr-0200-a",
        location.len(),
        &rows(ours_fps, jt808_fps, jt808_rs_fps),
    );

    let batch = frames::batch_0704();
    let ours_fps = frames_per_sec(|| {
        buf.clear();
        buf.extend_from_slice(black_box(&batch));
        black_box(ours.batch(&buf).expect("liengate decodes the batch"));
    });
    let jt808_fps = frames_per_sec(|| {
        peer_buf.extend_from_slice(black_box(&batch));
        black_box(
            peers::jt808_crate_batch(&mut codec, &mut peer_buf).expect("jt808 decodes the batch"),
        );
    });
    let jt808_rs_fps = frames_per_sec(|| {
        black_box(peers::jt808_rs_frame(black_box(&batch)).expect("jt808-rs unescapes the frame"));
    });
    report(
        &format!(
            "0x0704 batch of {} locations, split + decode, jt808-tr-0704-batch-c",
            frames::BATCH_0704_ITEMS
        ),
        batch.len(),
        &rows(ours_fps, jt808_fps, jt808_rs_fps),
    );
}

/// The three implementations' rows of one ratio table, in print order.
fn rows(ours_fps: f64, jt808_fps: f64, jt808_rs_fps: f64) -> [Row; 3] {
    [
        Row {
            name: "liengate",
            decodes_body: true,
            fps: ours_fps,
        },
        Row {
            name: "jt808 crate",
            decodes_body: true,
            fps: jt808_fps,
        },
        Row {
            name: "jt808-rs (framing only)",
            decodes_body: false,
            fps: jt808_rs_fps,
        },
    ]
}

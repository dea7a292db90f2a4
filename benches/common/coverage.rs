//! Runs every reference frame (location, location reply and batch frames, plus
//! the ones a strict decoder must reject) through the peers and says, per
//! frame, what each got right, got wrong, or panicked on.
#![allow(dead_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use bytes::{Buf, BytesMut};
use jt808::bytes::JtBytes;
use jt808::codec::Jt808Codec;
use jt808::models::jt0x0200::Jt0x0200;
use jt808::models::Jt808BodyTrans;
use serde_json::Value;
use tokio_util::codec::Decoder;

/// Where the reference frames are: `JT808_REFERENCE_FRAMES`, the repository's
/// fixtures, or the shared reference set next to the checkout.
fn frame_files() -> Vec<PathBuf> {
    if let Ok(path) = std::env::var("JT808_REFERENCE_FRAMES") {
        return vec![PathBuf::from(path)];
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("fixtures/jt808");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        for shared in [
            "../shared/reference-frames/jt808.jsonl",
            "../../shared/reference-frames/jt808.jsonl",
        ] {
            let path = root.join(shared);
            if path.exists() {
                files.push(path);
                break;
            }
        }
    }
    files.sort();
    files
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Compares one peer-decoded location body with its `expect` block.
fn judge_location(location: &Jt0x0200, expect: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    let raw = |key: &str| (expect[key].as_f64().unwrap_or(0.0).abs() * 1e6).round() as u32;
    if location.gps.lat != raw("latitude") || location.gps.lng != raw("longitude") {
        wrong.push("position".to_string());
    }
    let bcd = expect["time_bcd"].as_str().unwrap_or("");
    let got = location.gps.time.format("%y%m%d%H%M%S").to_string();
    if got != bcd {
        wrong.push(format!(
            "time (BCD {bcd} read as binary: {})",
            location.gps.time.format("%Y-%m-%d %H:%M:%S")
        ));
    }
    wrong
}

fn jt808_crate_verdict(wire: &[u8], expect: &Value, values: &Value) -> String {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut codec = Jt808Codec::new();
        let mut buf = BytesMut::from(wire);
        let frame = match codec.decode(&mut buf) {
            Err(e) => return format!("rejected ({e})"),
            Ok(None) => return "no frame found".to_string(),
            Ok(Some(frame)) => frame,
        };
        let mut wrong = Vec::new();
        if let Some(error) = expect.get("error") {
            wrong.push(format!("accepted a frame that must be rejected ({error})"));
        }
        if values.is_null() {
            return if wrong.is_empty() {
                "header only".into()
            } else {
                format!("wrong: {}", wrong.join("; "))
            };
        }
        if let Some(terminal) = values["terminal_id"].as_str() {
            if frame.sim.to_string().trim_start_matches('0') != terminal.trim_start_matches('0') {
                wrong.push(format!("terminal {} (expected {terminal})", frame.sim));
            }
        }
        match frame.id {
            0x0200 => {
                let location = Jt0x0200::fill_new(&mut JtBytes::from(frame.get_body()), &frame);
                wrong.extend(judge_location(&location, &values["location"]));
            }
            0x0704 => {
                let mut body = frame.get_body();
                let count = usize::from(body.get_u16());
                let _kind = body.get_u8();
                for i in 0..count {
                    let len = usize::from(body.get_u16());
                    let item = body.split_to(len);
                    let location = Jt0x0200::fill_new(&mut JtBytes::from(item), &frame);
                    for w in judge_location(&location, &values["batch"]["items"][i]) {
                        wrong.push(format!("item {i} {w}"));
                    }
                }
            }
            other => return format!("header only (0x{other:04x} body not decoded)"),
        }
        if wrong.is_empty() {
            "ok".to_string()
        } else {
            format!("wrong: {}", wrong.join("; "))
        }
    }));
    outcome.unwrap_or_else(|p| format!("PANIC: {}", panic_text(p)))
}

fn jt808_rs_verdict(wire: &[u8], expect: &Value) -> String {
    let outcome = catch_unwind(|| match jt808_rs::model::Base::try_from(wire.to_vec()) {
        Err(e) => format!("rejected ({e})"),
        Ok(_) if expect.get("error").is_some() => {
            "unescaped a frame that must be rejected; no body decoder".into()
        }
        Ok(base) => format!(
            "framing only (id 0x{:04x}); no body decoder",
            base.meta.msgtp
        ),
    });
    outcome.unwrap_or_else(|p| format!("PANIC: {}", panic_text(p)))
}

/// Prints one line per location/batch reference frame (and per frame a strict
/// decoder must reject) with each peer's verdict, and a summary count.
pub fn print_peer_coverage() {
    let files = frame_files();
    if files.is_empty() {
        println!("peer coverage: no reference frames found (set JT808_REFERENCE_FRAMES)");
        return;
    }
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    println!(
        "peer coverage over {}:",
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (mut total, mut jt808_ok, mut jt808_panic) = (0, 0, 0);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(frame) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let expect = &frame["expect"];
            let id = frame["id"].as_str().unwrap_or("?");
            let malformed = expect.get("error").is_some();
            // A frame a strict decoder rejects may still carry the values a
            // lenient one finds (`lenient_expect`, bad check byte only).
            let values = if malformed {
                &frame["lenient_expect"]
            } else {
                expect
            };
            let message_id = values["message_id"].as_u64().unwrap_or(0);
            if !(malformed || matches!(message_id, 0x0200 | 0x0704)) || frame["direction"] == "down"
            {
                continue;
            }
            let Some(wire) = frame["hex"].as_str().and_then(|h| hex::decode(h).ok()) else {
                continue;
            };
            let jt808 = jt808_crate_verdict(&wire, expect, values);
            let jt808_rs = jt808_rs_verdict(&wire, expect);
            total += 1;
            jt808_ok += usize::from(jt808 == "ok");
            jt808_panic += usize::from(jt808.starts_with("PANIC"));
            println!("  {id}\n      jt808:    {jt808}\n      jt808-rs: {jt808_rs}");
        }
    }
    std::panic::set_hook(hook);
    println!(
        "peer coverage summary: {total} frames; jt808 fully right on {jt808_ok}, panicked on {jt808_panic}; \
         jt808-rs decodes no body"
    );
}

//! Black-box tests of `liengate decode`: the real binary, real reference frames, JSON on stdout.
use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Returns the on-wire hex of a reference frame from fixtures/jt808/frames.jsonl.
fn fixture_hex(id: &str) -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/jt808/frames.jsonl"
    ))
    .expect("fixtures/jt808/frames.jsonl");
    for line in text.lines() {
        let frame: Value = serde_json::from_str(line).expect("fixture line is JSON");
        if frame["id"] == id {
            return frame["hex"].as_str().expect("hex").to_owned();
        }
    }
    panic!("no fixture {id}");
}

fn decode(args: &[&str], stdin: Option<&[u8]>) -> (Vec<Value>, Output) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liengate"))
        .arg("decode")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn liengate");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("write stdin");
        }
    }
    let output = child.wait_with_output().expect("wait");
    let objects = String::from_utf8(output.stdout.clone())
        .expect("utf8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    (objects, output)
}

/// Splits hex into pairs separated by spaces, as people paste it from logs.
fn spaced(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|pair| std::str::from_utf8(pair).unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn location_frame_prints_header_and_location_in_degrees_and_utc() {
    let hex = fixture_hex("jt808-sc-0200-2019-flag-2013-header");
    let (objects, output) = decode(&["--protocol", "jt808", "--hex", &spaced(&hex)], None);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(objects.len(), 1);
    let frame = &objects[0];
    assert_eq!(frame["protocol"], "jt808");
    assert_eq!(frame["message_id"], 512);
    assert_eq!(frame["message"], "location");
    assert_eq!(frame["version"], "2013");
    assert_eq!(frame["terminal_id"], "010030000681");
    assert_eq!(frame["serial"], 2318);
    let location = &frame["location"];
    assert!((location["latitude"].as_f64().unwrap() - 40.670063).abs() < 1e-9);
    assert!((location["longitude"].as_f64().unwrap() - 122.4523).abs() < 1e-9);
    assert!((location["speed_kmh"].as_f64().unwrap() - 86.7).abs() < 1e-9);
    assert_eq!(location["course"], 215);
    // The device sent 2021-06-25 15:57:39 China Standard Time.
    assert_eq!(location["time"], "2021-06-25T07:57:39Z");
}

#[test]
fn batch_frame_lists_every_location() {
    let hex = fixture_hex("jt808-gj-0704-batch-3-2013");
    let (objects, output) = decode(&["--hex", &hex], None);
    assert!(output.status.success(), "{output:?}");
    let locations = objects[0]["locations"].as_array().expect("locations array");
    assert_eq!(locations.len(), 3);
    assert_eq!(locations[0]["time"], "2020-07-07T11:23:59Z");
}

#[test]
fn bad_frame_is_reported_and_the_next_frame_still_decodes() {
    let bad = fixture_hex("jt808-sc-0200-bad-checksum-nonstd-extras");
    let good = fixture_hex("jt808-sc-0002-heartbeat");
    let (objects, output) = decode(&["--hex", &format!("{bad}{good}")], None);
    assert!(
        !output.status.success(),
        "a rejected frame must fail the run"
    );
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["error"]["kind"], "checksum");
    assert!(objects[0]["error"]["offset"].is_u64());
    assert!(objects[0]["error"]["message"].is_string());
    assert_eq!(objects[1]["message"], "heartbeat");
    assert_eq!(objects[1]["serial"], 10);
}

#[test]
fn skip_checksum_accepts_a_wrong_check_code() {
    let bad = fixture_hex("jt808-sc-0200-bad-checksum-nonstd-extras");
    let (objects, output) = decode(&["--skip-checksum", "--hex", &bad], None);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(objects[0]["message"], "location");
    assert!((objects[0]["location"]["latitude"].as_f64().unwrap() - 24.681268).abs() < 1e-9);
}

#[test]
fn stdin_accepts_raw_bytes_and_hex_text() {
    let hex = fixture_hex("jt808-sc-0002-heartbeat");
    let raw = hex::decode(&hex).unwrap();
    let (objects, output) = decode(&[], Some(&raw));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(objects[0]["message"], "heartbeat");

    let (objects, output) = decode(&[], Some(format!("{}\n", spaced(&hex)).as_bytes()));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(objects[0]["message"], "heartbeat");
}

#[test]
fn file_input_and_truncated_tail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.bin");
    let mut bytes = hex::decode(fixture_hex("jt808-sc-0002-heartbeat")).unwrap();
    bytes.extend_from_slice(&hex::decode("7e020000").unwrap());
    std::fs::write(&path, &bytes).unwrap();
    let (objects, output) = decode(&["--file", path.to_str().unwrap()], None);
    assert!(!output.status.success());
    assert_eq!(objects.len(), 2);
    assert_eq!(objects[0]["message"], "heartbeat");
    assert_eq!(objects[1]["error"]["kind"], "truncated");
}

#[test]
fn invalid_hex_is_a_clear_error() {
    let (objects, output) = decode(&["--hex", "7e0"], None);
    assert!(objects.is_empty());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("odd number of hex digits"), "{stderr}");
}

//! Black-box checks of `liengate sim`: against the ceiling server it must see every position
//! acknowledged without errors; against a server that answers with the wrong serial it must
//! say so and fail.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use liengate_protocols::jt808::{
    encode_frame, parse_packet, DecodeOptions, Header, Split, Splitter, DEFAULT_MAX_FRAME,
    MAX_LOGICAL_FRAME,
};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_liengate");

/// Kills the child when the test ends, even on a failed assertion.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_ceiling() -> (Guard, String) {
    let mut child = Command::new(BIN)
        .args(["sim", "--ceiling-server", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the ceiling server");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("read the listening line");
    thread::spawn(move || for _ in reader.lines() {});
    let addr = line
        .trim()
        .strip_prefix("listening jt808 ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Guard(child), addr)
}

fn run_sim(target: &str, duration: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let mut args = vec![
        "sim",
        "--target",
        target,
        "--devices",
        "20",
        "--duration",
        duration,
        "--json",
        "--quiet",
        "--answer-timeout",
        "2",
        "--drain",
        "1",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(BIN)
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .expect("run liengate sim");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 summary");
    let summary: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is not one JSON line ({e}): {stdout:?}"));
    (out.status.code(), summary)
}

#[test]
fn every_position_is_acknowledged_by_the_ceiling_server() {
    let (_ceiling, addr) = start_ceiling();
    let (code, summary) = run_sim(&addr, "2", &["--rate", "5"]);
    assert_eq!(code, Some(0), "summary: {summary}");
    assert_eq!(summary["registered"], 20);
    assert!(summary["registration_ms"].as_f64().is_some());
    let acked = summary["positions_acked_total"].as_u64().unwrap();
    assert!(
        summary["positions_acked"].as_u64().unwrap() > 0,
        "{summary}"
    );
    assert_eq!(
        acked,
        summary["positions_sent"].as_u64().unwrap(),
        "{summary}"
    );
    assert_eq!(summary["error_total"], 0, "{summary}");
    assert!(summary["latency"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn closed_loop_2019_terminals_are_acknowledged() {
    let (_ceiling, addr) = start_ceiling();
    let (code, summary) = run_sim(
        &addr,
        "2",
        &[
            "--closed-loop",
            "--version",
            "2019",
            "--blind-area-every",
            "5",
        ],
    );
    assert_eq!(code, Some(0), "summary: {summary}");
    assert_eq!(summary["mode"], "closed_loop");
    assert_eq!(summary["version"], "2019");
    // With a coverage gap every few positions, batches carry more positions than messages.
    assert!(
        summary["positions_sent"].as_u64().unwrap() > summary["reports_sent"].as_u64().unwrap(),
        "{summary}"
    );
    assert_eq!(summary["error_total"], 0, "{summary}");
}

#[test]
fn the_gateway_acknowledges_every_position_and_batch() {
    let server = common::start(None);
    let addr = server.jt808.to_string();
    let (code, summary) = run_sim(&addr, "2", &["--rate", "5", "--blind-area-every", "5"]);
    assert_eq!(code, Some(0), "summary: {summary}");
    assert_eq!(summary["registered"], 20);
    assert_eq!(summary["error_total"], 0, "{summary}");
    let sent = summary["positions_sent"].as_u64().unwrap();
    assert!(
        sent > summary["reports_sent"].as_u64().unwrap(),
        "no blind-area batch: {summary}"
    );
    assert_eq!(
        summary["positions_acked_total"].as_u64().unwrap(),
        sent,
        "{summary}"
    );
}

/// A server that registers terminals correctly but answers everything else with a reply
/// serial one too high, as a buggy platform would.
fn start_wrong_serial_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            thread::spawn(move || answer_off_by_one(stream));
        }
    });
    addr
}

fn answer_off_by_one(mut stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut splitter = Splitter::new(DEFAULT_MAX_FRAME);
    let mut scratch = [0u8; MAX_LOGICAL_FRAME];
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let opts = DecodeOptions {
        skip_checksum: false,
        max_frame: DEFAULT_MAX_FRAME,
    };
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut out = BytesMut::new();
        loop {
            match splitter.next(&buf) {
                Split::Frame { frame, consumed } => {
                    let header = parse_packet(&buf[frame], &mut scratch, &opts)
                        .unwrap()
                        .header;
                    let mut body = BytesMut::new();
                    let id = if header.message_id == 0x0100 {
                        body.put_u16(header.serial);
                        body.put_u8(0);
                        body.put_slice(b"CODE1234");
                        0x8100
                    } else {
                        body.put_u16(header.serial.wrapping_add(1));
                        body.put_u16(header.message_id);
                        body.put_u8(0);
                        0x8001
                    };
                    encode_frame(
                        &Header::new(id, header.terminal, 0, header.version),
                        &body,
                        &mut out,
                    );
                    buf.advance(consumed);
                }
                Split::Incomplete { consumed } | Split::Invalid { consumed, .. } => {
                    buf.advance(consumed);
                    break;
                }
            }
        }
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

#[test]
fn wrong_reply_serials_fail_the_run() {
    let addr = start_wrong_serial_server();
    let (code, summary) = run_sim(&addr, "0.5", &[]);
    assert_eq!(code, Some(1), "summary: {summary}");
    assert_eq!(summary["registered"], 0);
    assert_eq!(summary["errors"]["wrong_reply_serial"], 20, "{summary}");
    assert_eq!(summary["wrong_answers"], 20);
}

#[test]
fn an_unreachable_target_is_a_transport_error() {
    // Bind and drop to get a port that nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, summary) = run_sim(&format!("127.0.0.1:{port}"), "0.2", &[]);
    assert_eq!(code, Some(2), "summary: {summary}");
    assert_eq!(summary["errors"]["connect"], 20, "{summary}");
    assert_eq!(summary["wrong_answers"], 0);
}

/// A gateway that falls behind (here: one shard allowed 2 streak slots, with 20 terminals in a
/// closed loop) serves a few devices at a time in streaks and lets the others take turns: every
/// position is still answered, and every device gets its share.
#[test]
fn a_gateway_that_falls_behind_takes_devices_in_turns_and_answers_every_position() {
    let server = common::start(Some(
        "[pipeline]\nshards = 1\nadmission_limit = 2\nadmission_streak = 3\n",
    ));
    let addr = server.jt808.to_string();
    let (code, summary) = run_sim(&addr, "2", &["--closed-loop", "--blind-area-every", "5"]);
    assert_eq!(code, Some(0), "summary: {summary}");
    assert_eq!(summary["error_total"], 0, "{summary}");
    assert_eq!(
        summary["positions_acked_total"].as_u64().unwrap(),
        summary["positions_sent"].as_u64().unwrap(),
        "{summary}"
    );
    let per_device = &summary["per_device"];
    assert_eq!(per_device["devices"], 20, "{summary}");
    assert!(
        per_device["min"].as_u64().unwrap() > 0,
        "a device was starved: {summary}"
    );
    assert!(
        server.metric("connection_admission_waits_total", &[]) > 0.0,
        "the policy never engaged"
    );
}

/// The interleaved benchmark's building block: a `--paused` run reports only between SIGUSR2
/// and SIGUSR1, its duration counts only that time, and its terminals go on reporting after a
/// pause.
#[test]
fn a_paused_run_reports_only_while_resumed() {
    let (_ceiling, addr) = start_ceiling();
    let mut child = Command::new(BIN)
        .args([
            "sim",
            "--target",
            &addr,
            "--devices",
            "20",
            "--closed-loop",
            "--paused",
            "--duration",
            "2",
            "--json",
            "--drain",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start liengate sim");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut sim = Guard(child);
    let (summary_tx, summary_rx) = std::sync::mpsc::channel::<String>();
    thread::spawn(move || {
        let mut out = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut out);
        let _ = summary_tx.send(out);
    });
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("registration ended"))
    {
        seen.push(
            lines
                .recv_timeout(Duration::from_secs(30))
                .expect("the simulator ends its registration"),
        );
    }
    // Progress lines come once a second from the end of registration (r). Paused until r+1.5,
    // reporting until r+2.9, paused until r+5.6 (the seconds from r+3 to r+5 inside the pause),
    // then the remaining 0.6 s: every slice edge falls at least 0.5 s from a progress line, a
    // margin for a loaded machine.
    thread::sleep(Duration::from_millis(1500));
    common::send_signal(pid, "USR2");
    thread::sleep(Duration::from_millis(1400));
    common::send_signal(pid, "USR1");
    thread::sleep(Duration::from_millis(2700));
    assert!(
        sim.0.try_wait().expect("poll the simulator").is_none(),
        "a paused simulator ended before its reporting time was up"
    );
    common::send_signal(pid, "USR2");
    let out = summary_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the simulator ends after its reporting time");
    let status = sim.0.wait().expect("wait for the simulator");
    seen.extend(lines.try_iter());
    let summary: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("summary is not one JSON line ({e}): {out:?}"));
    assert_eq!(status.code(), Some(0), "summary: {summary}");
    assert_eq!(summary["error_total"], 0, "{summary}");
    // The duration is the reporting time, not the 4.7 s of wall time it spanned.
    let duration = summary["duration_s"].as_f64().unwrap();
    assert!((1.9..2.6).contains(&duration), "duration_s {duration}");
    // Progress lines: "sim 1.0s <phase>: ... acked positions N (R/s) errors E".
    let parse = |l: &String| {
        let phase = l
            .split_whitespace()
            .nth(2)?
            .trim_end_matches(':')
            .to_string();
        let after = l.split("acked positions ").nth(1)?;
        let total = after.split_whitespace().next()?.parse::<u64>().ok()?;
        let rate = after
            .split('(')
            .nth(1)?
            .split('/')
            .next()?
            .parse::<u64>()
            .ok()?;
        Some((phase, total, rate))
    };
    let progress: Vec<(String, u64, u64)> = seen.iter().filter_map(parse).collect();
    let first_reporting = progress
        .iter()
        .position(|(phase, _, rate)| phase == "reporting" && *rate > 0)
        .unwrap_or_else(|| panic!("no reporting second with positions: {seen:#?}"));
    assert!(
        progress[..first_reporting]
            .iter()
            .any(|(phase, _, rate)| phase == "paused" && *rate == 0),
        "no paused second before reporting: {seen:#?}"
    );
    let idle_paused = progress[first_reporting..]
        .iter()
        .rfind(|(phase, _, rate)| phase == "paused" && *rate == 0)
        .unwrap_or_else(|| panic!("no idle paused second after reporting: {seen:#?}"));
    // Terminals reported again after the pause.
    let acked_total = summary["positions_acked_total"].as_u64().unwrap();
    assert!(acked_total > idle_paused.1, "{summary} after {seen:#?}");
}

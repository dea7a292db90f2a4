//! Malformed input, black-box: bad frames are counted by kind and answered with 0x8001
//! "message error" when their header is readable, the connection survives single bad frames,
//! and only hostile streams (oversized frames, a run of bad frames) are closed.
mod common;

use std::time::Duration;

use common::*;
use liengate_protocols::jt808::Message;

const CONFIG: &str = "[jt808]\nmax_bad_frames = 4\nmax_frame = 1024\nread_buffer = 4096\n";

/// The frame with its check code changed (unescape, flip the check code, escape again).
fn corrupt_check(frame: &[u8]) -> Vec<u8> {
    let inner = &frame[1..frame.len() - 1];
    let mut logical = Vec::new();
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == 0x7d {
            logical.push(if inner[i + 1] == 0x01 { 0x7d } else { 0x7e });
            i += 2;
        } else {
            logical.push(inner[i]);
            i += 1;
        }
    }
    logical.pop();
    let mut out = wire(&logical);
    let n = out.len();
    let check_pos = if out[n - 3] == 0x7d { n - 3 } else { n - 2 };
    if out[check_pos] == 0x7d {
        // Escaped check code (0x7d/0x7e): replace the escape pair by a plain wrong byte.
        out.splice(check_pos..check_pos + 2, [0x11]);
    } else {
        out[check_pos] = if out[check_pos] == 0x55 { 0x56 } else { 0x55 };
    }
    out
}

#[test]
fn single_bad_frames_are_counted_answered_and_survived() {
    let server = start(Some(CONFIG));
    let tid = "013800000123";
    let mut c = server.connect();
    c.login(tid);
    let mut serial = 100;
    let mut heartbeat = |c: &mut Client| {
        serial += 1;
        assert_eq!(c.request(&heartbeat_frame(tid, serial), serial, 0x0002), 0);
    };

    // A real frame (traccar) with its check code changed: header readable -> 0x8001 result 2
    // for its serial 25.
    c.send(&corrupt_check(&fixture("jt808-tr-0200-a")));
    assert_eq!(c.recv().general(), (25, 0x0200, 2));
    heartbeat(&mut c);

    // A real device frame with a wrong check code that is also cut short (its declared body
    // length does not match), so the header cannot be trusted: counted, not answered.
    c.send(&fixture("jt808-tr-0200-bad-checksum-b"));
    heartbeat(&mut c);

    // Invalid escape: no readable header, so no answer; the next answer is the heartbeat's.
    c.send(&fixture("jt808-mut-bad-escape"));
    heartbeat(&mut c);

    // Bytes outside any frame.
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    heartbeat(&mut c);

    // A location body too short for its message id: header readable -> result 2.
    c.send(&raw_frame(tid, 55, 0x0200, &[0u8; 10]));
    assert_eq!(c.recv().general(), (55, 0x0200, 2));
    heartbeat(&mut c);

    // Our own frame with a wrong check code: rejected too (the model does not skip checks).
    let pos = Pos::at(now_s() - 30, 22.5, 114.0);
    c.send(&corrupt_check(&location_frame(tid, 56, pos)));
    assert_eq!(c.recv().general(), (56, 0x0200, 2));
    heartbeat(&mut c);

    let rejected = |kind: &str| {
        server.metric(
            "frames_rejected_total",
            &[("protocol", "jt808"), ("kind", kind)],
        )
    };
    assert_eq!(rejected("checksum"), 3.0);
    assert_eq!(rejected("escape"), 1.0);
    assert_eq!(rejected("framing"), 1.0);
    assert!(rejected("body") + rejected("truncated") + rejected("length") >= 1.0);
    assert_eq!(server.metric("positions_stored_total", &[]), 0.0);
    assert!(server.stderr().contains("frame rejected"));
    assert!(server.stderr().contains("peer=127.0.0.1:"));
}

#[test]
fn an_oversized_frame_closes_the_connection() {
    let server = start(Some(CONFIG));
    let mut c = server.connect();
    c.login("013800000124");
    let mut junk = vec![0x7e];
    junk.extend(std::iter::repeat_n(0x01u8, 3000));
    c.send(&junk);
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "connection stayed open"
    );
    assert_eq!(
        server.metric("frames_rejected_total", &[("kind", "oversized")]),
        1.0
    );
    server.eventually("the close to be counted", || {
        server.metric("connections_closed_total", &[("reason", "hostile")]) == 1.0
    });
}

#[test]
fn a_garbage_flood_without_delimiters_closes_the_connection() {
    let server = start(Some(CONFIG));
    let mut c = server.connect();
    c.login("013800000126");
    // More bytes outside any frame than the largest frame (1024 here), sent in small pieces so
    // that no single read looks oversized: only the length of the run gives it away.
    for _ in 0..40 {
        c.send(&[0x01u8; 64]);
    }
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "connection stayed open"
    );
    assert_eq!(
        server.metric("frames_rejected_total", &[("kind", "framing")]),
        1.0,
        "a run of garbage is one rejected span"
    );
    server.eventually("the close to be counted", || {
        server.metric("connections_closed_total", &[("reason", "hostile")]) == 1.0
    });
}

#[test]
fn a_vehicle_control_reply_is_stored_but_not_answered() {
    let server = start(Some(CONFIG));
    let tid = "013800000127";
    let mut c = server.connect();
    c.login(tid);
    // 0x0500 answers the platform's 0x8500 (JT/T 808-2013 §8.34): the standard wants no answer.
    let pos = Pos::at(now_s() - 20, 31.2, 121.5);
    let reply = frame(
        tid,
        40,
        &Message::VehicleControlReply {
            reply_serial: 9,
            location: pos.location(),
        },
    );
    c.send(&reply);
    // The next answer on the wire must be the heartbeat's, not one for the 0x0500.
    assert_eq!(c.request(&heartbeat_frame(tid, 41), 41, 0x0002), 0);
    server.eventually("the 0x0500 position to be stored", || {
        server.metric("positions_stored_total", &[]) == 1.0
    });
}

#[test]
fn a_run_of_bad_frames_closes_the_connection() {
    let server = start(Some(CONFIG));
    let mut c = server.connect();
    c.login("013800000125");
    let bad = corrupt_check(&fixture("jt808-tr-0200-a"));
    for _ in 0..4 {
        c.send(&bad);
    }
    for _ in 0..4 {
        assert_eq!(c.recv().general(), (25, 0x0200, 2));
    }
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "connection stayed open"
    );
    server.eventually("the close to be counted", || {
        server.metric("connections_closed_total", &[("reason", "hostile")]) == 1.0
    });
}

#[test]
fn models_configured_to_skip_checksums_are_accepted_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let registry = write_registry(
        dir.path(),
        "terminal_id,protocol,role,model,skip_checksum,vehicle_id\n\
         013800138003,jt808,wired,BSJ-A6,true,VH-2\n\
         013800138004,jt808,wired,QUIRKY,false,VH-3\n\
         013800138005,jt808,wired,OTHER,false,VH-4\n",
    );
    let config = format!(
        "[[jt808.models]]\nname = \"QUIRKY\"\nskip_checksum = true\n[registry]\nimport = \"{}\"\n",
        registry.display()
    );
    let server = start(Some(&config));
    let pos = Pos::at(now_s() - 30, 22.5, 114.0);
    // Flag on the device record, and via the [[jt808.models]] setting of its model.
    for tid in ["013800138003", "013800138004"] {
        let mut c = server.connect();
        c.login(tid);
        c.send(&corrupt_check(&location_frame(tid, 9, pos)));
        assert_eq!(c.recv().general(), (9, 0x0200, 0), "{tid}");
        let (status, loc) = server.get_json(&format!("/v1/devices/{tid}/location"));
        assert_eq!(status, 200, "{loc}");
    }
    assert_eq!(server.metric("frames_checksum_skipped_total", &[]), 2.0);
    // Any other model: rejected.
    let mut c = server.connect();
    c.login("013800138005");
    c.send(&corrupt_check(&location_frame("013800138005", 9, pos)));
    assert_eq!(c.recv().general(), (9, 0x0200, 2));

    // A device of a lenient model that the registry does not know yet: its very first 0x0100
    // already has a wrong check code, and the model it names there is what lets it in.
    let tid = "013800138006";
    let mut c = server.connect();
    c.send(&corrupt_check(&register_frame(tid, 1, "QUIRKY")));
    let reply = c.recv();
    assert_eq!(reply.header.message_id, 0x8100, "{reply:?}");
    assert_eq!(reply.body[2], 0, "registration refused: {reply:?}");
    let code = String::from_utf8(reply.body[3..].to_vec()).unwrap();
    c.send(&corrupt_check(&auth_frame(tid, 2, &code)));
    assert_eq!(c.recv().general(), (2, 0x0102, 0));
    // The same first frame from an unknown model stays rejected.
    let mut c = server.connect();
    c.send(&corrupt_check(&register_frame("013800138007", 1, "OTHER")));
    assert_eq!(c.recv().general(), (1, 0x0100, 2));
}

//! Device session behaviour of `liengate serve`, black-box over real TCP: registration,
//! authentication, the answers the standard requires (byte for byte), unknown-device policies,
//! auth failures, reconnects, idle timeout and the connection limit.
mod common;

use std::time::Duration;

use common::*;
use liengate::protocols::jt808::Message;

/// JT808 2013 header (logical bytes) for a platform message to 012345678901.
fn header(message_id: u16, body_len: u16, serial: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&message_id.to_be_bytes());
    h.extend_from_slice(&body_len.to_be_bytes());
    h.extend_from_slice(&[0x01, 0x23, 0x45, 0x67, 0x89, 0x01]);
    h.extend_from_slice(&serial.to_be_bytes());
    h
}

fn general_response(serial: u16, reply_serial: u16, reply_id: u16, result: u8) -> Vec<u8> {
    let mut f = header(0x8001, 5, serial);
    f.extend_from_slice(&reply_serial.to_be_bytes());
    f.extend_from_slice(&reply_id.to_be_bytes());
    f.push(result);
    wire(&f)
}

#[test]
fn register_auth_and_answers_match_the_standard_byte_for_byte() {
    let server = start(None);
    let mut c = server.connect();

    // A real 2013 registration (go-jt808 test data), terminal 012345678901, serial 0.
    c.send(&fixture("jt808-gj-0100-register-2013"));
    let reply = c.recv();
    let code = reply.body[3..].to_vec();
    assert_eq!(code.len(), 16, "auth code length: {reply:?}");
    assert!(code.iter().all(u8::is_ascii_alphanumeric), "{code:?}");
    // 0x8100: platform serial 0, reply serial 0, result 0 (success), then the auth code.
    let mut expected = header(0x8100, 3 + 16, 0);
    expected.extend_from_slice(&[0x00, 0x00, 0x00]);
    expected.extend_from_slice(&code);
    assert_eq!(reply.raw, wire(&expected));

    // Authentication with that code (2013 body = the code): 0x8001 result 0.
    let code = String::from_utf8(code).unwrap();
    c.send(&auth_frame("012345678901", 1, &code));
    assert_eq!(c.recv().raw, general_response(1, 1, 0x0102, 0));

    // A real escaped location frame: acknowledged with 0x8001 naming its serial and id.
    c.send(&fixture("jt808-gj-0200-location-escaped"));
    assert_eq!(c.recv().raw, general_response(2, 0, 0x0200, 0));

    // Heartbeat (real frame, serial 0).
    c.send(&fixture("jt808-gj-0002-heartbeat"));
    assert_eq!(c.recv().raw, general_response(3, 0, 0x0002, 0));

    // The terminal's own general response gets no answer: the next answer is the heartbeat's.
    c.send(&terminal_response_frame("012345678901", 7));
    c.send(&heartbeat_frame("012345678901", 8));
    assert_eq!(c.recv().raw, general_response(4, 8, 0x0002, 0));

    // A message id the gateway does not handle: result 3 "not supported".
    c.send(&raw_frame("012345678901", 9, 0x0f01, &[1, 2, 3]));
    assert_eq!(c.recv().raw, general_response(5, 9, 0x0f01, 3));

    // 0x0004 query server time -> 0x8004 with the current time (BCD, UTC+8).
    let before = now_s();
    c.send(&frame("012345678901", 10, &Message::QueryServerTime));
    let reply = c.recv();
    assert_eq!(reply.header.message_id, 0x8004);
    assert_eq!(reply.header.serial, 6);
    let t = liengate::protocols::jt808::BcdTime(reply.body[..6].try_into().unwrap())
        .to_unix()
        .unwrap();
    assert!(
        t >= before - 1 && t <= now_s() + 1,
        "server time {t} vs {before}"
    );

    // The reference fix has no GNSS lock and an out-of-range latitude: stored flagged, counted,
    // and not a last known position.
    assert_eq!(server.metric("positions_stored_total", &[]), 1.0);
    assert_eq!(
        server.metric("positions_flagged_total", &[("flag", "no_gnss")]),
        1.0
    );
    assert_eq!(
        server.metric("positions_flagged_total", &[("flag", "out_of_range")]),
        1.0
    );
    let (status, body) = server.get_json("/v1/devices/012345678901/location");
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "no_location");
}

#[test]
fn a_real_location_frame_becomes_the_devices_last_known_position() {
    let server = start(None);
    let mut c = server.connect();
    c.login("013833501744");
    // traccar test frame: terminal 013833501744, serial 25, fixed, 22.6426 / 114.032984.
    c.send(&fixture("jt808-tr-0200-a"));
    assert_eq!(c.recv().general(), (25, 0x0200, 0));
    let (status, loc) = server.get_json("/v1/devices/013833501744/location");
    assert_eq!(status, 200, "{loc}");
    assert_eq!(loc["terminal_id"], "013833501744");
    assert_eq!(loc["latitude"], 22.6426);
    assert_eq!(loc["longitude"], 114.032984);
    assert_eq!(loc["time"], "2015-08-17T23:21:21Z");
    assert_eq!(loc["vehicle_id"], serde_json::Value::Null);
    assert_eq!(loc["state"], "parked", "speed 0 and years old: {loc}");
    assert_eq!(loc["online"], true);
    assert_eq!(loc["source"], "wired");
    assert!(loc["age_s"].as_i64().unwrap() > 300_000_000);
}

#[test]
fn frames_before_authentication_are_refused() {
    let server = start(None);
    let mut c = server.connect();
    let pos = Pos::at(now_s() - 10, 22.5, 114.0);
    assert_eq!(
        c.request(&location_frame("013800000009", 3, pos), 3, 0x0200),
        1
    );
    assert_eq!(c.request(&heartbeat_frame("013800000009", 4), 4, 0x0002), 1);
    assert_eq!(
        server.metric("frames_rejected_total", &[("kind", "unauthenticated")]),
        2.0
    );
    assert_eq!(server.metric("positions_stored_total", &[]), 0.0);
}

#[test]
fn unknown_devices_are_rejected_under_the_reject_policy_unless_registered() {
    let dir = tempfile::tempdir().unwrap();
    let registry = write_registry(
        dir.path(),
        "terminal_id,protocol,role,vehicle_id\n013800138001,jt808,wired,VH-1\n",
    );
    let config = format!(
        "[jt808]\nunknown_device = \"reject\"\n[registry]\nimport = \"{}\"\n",
        registry.display()
    );
    let server = start(Some(&config));
    let mut c = server.connect();
    c.send(&register_frame("013899999999", 5, "X"));
    let reply = c.recv();
    assert_eq!(reply.header.message_id, 0x8100);
    // Reply serial 5, result 4 "no such terminal", no auth code.
    assert_eq!(reply.body, vec![0x00, 0x05, 0x04]);
    assert_eq!(
        server.metric("registrations_total", &[("result", "rejected")]),
        1.0
    );
    // A device from the registry may register.
    c.login("013800138001");
}

#[test]
fn allowlist_policy_accepts_only_listed_terminals() {
    let server = start(Some(
        "[jt808]\nunknown_device = \"allowlist\"\nallowlist = [\"0139*\", \"013800000001\"]\n",
    ));
    let mut c = server.connect();
    c.login("013900000042");
    let mut c = server.connect();
    c.login("013800000001");
    let mut c = server.connect();
    c.send(&register_frame("013800000002", 1, "X"));
    assert_eq!(c.recv().body, vec![0x00, 0x01, 0x04]);
}

#[test]
fn accept_policy_registers_unknown_devices_as_unassigned() {
    let server = start(None);
    let mut c = server.connect();
    c.login("013811112222");
    let pos = Pos::at(now_s() - 5, 22.5, 114.0);
    assert_eq!(
        c.request(&location_frame("013811112222", 3, pos), 3, 0x0200),
        0
    );
    let (status, loc) = server.get_json("/v1/devices/013811112222/location");
    assert_eq!(status, 200, "{loc}");
    assert_eq!(loc["vehicle_id"], serde_json::Value::Null);
    assert_eq!(loc["latitude"], 22.5);
    // Registering again returns the same persisted code.
    let mut c2 = server.connect();
    c2.send(&register_frame("013811112222", 9, "TEST-1"));
    let first = c2.recv();
    let mut c3 = server.connect();
    c3.send(&register_frame("013811112222", 9, "TEST-1"));
    assert_eq!(first.body, c3.recv().body);
}

#[test]
fn wrong_auth_codes_fail_then_close_and_lock_the_terminal_out() {
    let server = start(Some("[jt808.auth]\nmax_failures = 3\nlockout = \"1h\"\n"));
    let mut c = server.connect();
    let code = c.login("013800000077");

    let mut c = server.connect();
    assert_eq!(c.auth("013800000077", 10, "wrong-1"), 1);
    assert_eq!(c.auth("013800000077", 11, "wrong-2"), 1);
    assert_eq!(c.auth("013800000077", 12, "wrong-3"), 1);
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "connection should be closed"
    );

    // Even the right code is refused while locked out.
    let mut c = server.connect();
    assert_eq!(c.auth("013800000077", 13, &code), 1);
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_eq!(
        server.metric("auth_total", &[("result", "wrong_code")]),
        3.0
    );
    assert_eq!(
        server.metric("auth_total", &[("result", "locked_out")]),
        1.0
    );

    // Other terminals are not affected.
    let mut c = server.connect();
    c.login("013800000078");

    // Nor is the real tracker at another address: wrong codes sent by someone who only knows
    // its number must not lock it out.
    let mut real = Client::connect_from(server.jt808, "127.0.0.2".parse().unwrap());
    assert_eq!(real.auth("013800000077", 14, &code), 0);
}

#[test]
fn a_reconnecting_terminal_replaces_its_old_connection() {
    let server = start(None);
    let mut old = server.connect();
    let code = old.login("013800000055");
    let mut new = server.connect();
    assert_eq!(new.auth("013800000055", 3, &code), 0);
    assert!(
        old.closed_within(Duration::from_secs(5)),
        "old connection still open"
    );
    assert_eq!(
        new.request(&heartbeat_frame("013800000055", 4), 4, 0x0002),
        0
    );
    server.eventually("the close to be counted", || {
        server.metric("connections_closed_total", &[("reason", "replaced")]) == 1.0
    });
}

#[test]
fn idle_connections_are_closed_and_heartbeats_keep_them_open() {
    let server = start(Some("[jt808]\nheartbeat_interval = \"100ms\"\n"));
    let mut busy = server.connect();
    busy.login("013800000031");
    let mut quiet = server.connect();
    quiet.login("013800000032");
    for serial in 10..18 {
        assert_eq!(
            busy.request(&heartbeat_frame("013800000031", serial), serial, 0x0002),
            0
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // 800 ms without a frame is well past the 300 ms idle timeout.
    assert!(quiet.closed_within(Duration::from_millis(10)));
    assert_eq!(
        busy.request(&heartbeat_frame("013800000031", 30), 30, 0x0002),
        0
    );
    server.eventually("the idle close to be counted", || {
        server.metric("connections_closed_total", &[("reason", "idle")]) >= 1.0
    });
}

#[test]
fn connections_beyond_the_limit_are_refused_and_counted() {
    let server = start(Some("[jt808]\nmax_connections = 2\n"));
    let mut a = server.connect();
    a.login("013800000001");
    let mut b = server.connect();
    b.login("013800000002");
    let mut c = server.connect();
    assert!(
        c.closed_within(Duration::from_secs(5)),
        "third connection accepted"
    );
    assert_eq!(server.metric("connections_refused_total", &[]), 1.0);
    drop(a);
    // The slot is free again once the first connection is gone.
    server.eventually("a free connection slot", || {
        let mut d = server.connect();
        d.send(&register_frame("013800000003", 1, "X"));
        d.try_recv(Duration::from_millis(500)).is_some()
    });
}

#[test]
fn subpackaged_uploads_are_reassembled_and_missing_packages_requested() {
    use liengate::protocols::jt808::{encode_frame, Header, SubPackage, Version};
    let server = start(None);
    let tid = "013800000066";
    let mut c = server.connect();
    c.login(tid);
    // A 0x0801 multimedia upload: media id 7, JPEG, location basic block, 600 data bytes.
    let mut body = vec![0, 0, 0, 7, 0, 0, 1, 1];
    let mut loc = bytes::BytesMut::new();
    let m =
        liengate::protocols::jt808::Message::Location(Pos::at(now_s() - 5, 22.5, 114.0).location());
    m.encode_body(Version::V2013, &mut loc);
    body.extend_from_slice(&loc[..28]);
    body.extend((0..600).map(|i| (i % 251) as u8));
    let chunks: Vec<&[u8]> = body.chunks(256).collect();
    assert_eq!(chunks.len(), 3);
    let package = |index: u16| {
        let mut h = Header::new(0x0801, terminal(tid), 99 + index, Version::V2013);
        h.subpackage = Some(SubPackage { total: 3, index });
        let mut out = bytes::BytesMut::new();
        encode_frame(&h, chunks[index as usize - 1], &mut out);
        out.to_vec()
    };
    // Package 1: acknowledged.
    assert_eq!(c.request(&package(1), 100, 0x0801), 0);
    // Package 3 (the last) arrives with 2 missing: 0x8003 asks for it (first serial 100, one
    // index: 2).
    c.send(&package(3));
    let reply = c.recv();
    assert_eq!(reply.header.message_id, 0x8003, "{reply:?}");
    assert_eq!(reply.body, vec![0x00, 100, 1, 0x00, 0x02]);
    // Package 2 completes the upload: 0x8800 with the media id and nothing to resend.
    c.send(&package(2));
    let reply = c.recv();
    assert_eq!(reply.header.message_id, 0x8800, "{reply:?}");
    assert_eq!(reply.body, vec![0, 0, 0, 7]);
    assert_eq!(server.metric("subpackage_resend_requests_total", &[]), 1.0);
}

#[test]
fn a_subpackaged_message_whose_last_package_is_lost_is_asked_for_at_timeout() {
    use liengate::protocols::jt808::{encode_frame, Header, SubPackage, Version};
    let server = start(Some("[jt808.subpackage]\ntimeout = \"1s\"\n"));
    let tid = "013800000067";
    let mut c = server.connect();
    c.login(tid);
    let package = |index: u16| {
        let mut h = Header::new(0x0801, terminal(tid), 199 + index, Version::V2013);
        h.subpackage = Some(SubPackage { total: 3, index });
        let mut out = bytes::BytesMut::new();
        encode_frame(&h, &[index as u8; 64], &mut out);
        out.to_vec()
    };
    // Packages 1 and 2 of 3 arrive and are acknowledged; the last one never comes, so the
    // terminal has no reason to resend anything.
    assert_eq!(c.request(&package(1), 200, 0x0801), 0);
    assert_eq!(c.request(&package(2), 201, 0x0801), 0);
    // After the timeout, with nothing more sent, the gateway asks for package 3 of the message
    // whose first package had serial 200.
    let reply = c
        .try_recv(Duration::from_secs(5))
        .expect("a 0x8003 after the reassembly timeout");
    assert_eq!(reply.header.message_id, 0x8003, "{reply:?}");
    assert_eq!(reply.body, vec![0x00, 200, 1, 0x00, 0x03]);
    assert_eq!(server.metric("subpackage_resend_requests_total", &[]), 1.0);
    // Asked once: when the package still does not come, the message is dropped quietly.
    assert!(c.try_recv(Duration::from_millis(2500)).is_none());
    assert_eq!(server.metric("subpackage_resend_requests_total", &[]), 1.0);
    // The connection is fine: a heartbeat is still answered.
    assert_eq!(c.request(&heartbeat_frame(tid, 7), 7, 0x0002), 0);
}

#[test]
fn the_platform_serial_continues_across_reconnects() {
    let server = start(None);
    let tid = "013800000088";
    let mut c = server.connect();
    let code = c.login(tid);
    // 0x8100 and the auth answer used platform serials 0 and 1.
    assert_eq!(c.request(&heartbeat_frame(tid, 3), 3, 0x0002), 0);
    drop(c);
    server.eventually("the old connection to close", || {
        server.metric("connections_closed_total", &[("reason", "eof")]) >= 1.0
    });
    let mut c = server.connect();
    c.send(&auth_frame(tid, 4, &code));
    let reply = c.recv();
    assert_eq!(reply.general(), (4, 0x0102, 0));
    assert_eq!(reply.header.serial, 3);
}

#[test]
fn the_platform_serial_continues_after_a_graceful_restart() {
    let server = start(None);
    let tid = "013800000089";
    let mut c = server.connect();
    let code = c.login(tid);
    // 0x8100 and the auth answer used platform serials 0 and 1; every answer takes the next.
    let mut platform_serials = Vec::new();
    for serial in 3..6u16 {
        c.send(&heartbeat_frame(tid, serial));
        let reply = c.recv();
        assert_eq!(reply.general(), (serial, 0x0002, 0));
        platform_serials.push(reply.header.serial);
    }
    let pos = Pos::at(now_s() - 30, 22.5, 114.0);
    c.send(&location_frame(tid, 6, pos));
    let reply = c.recv();
    assert_eq!(reply.general(), (6, 0x0200, 0));
    platform_serials.push(reply.header.serial);
    assert_eq!(platform_serials, vec![2, 3, 4, 5]);

    // SIGTERM with the device still connected, then a new process on the same data directory.
    let server = server.restart();
    drop(c);
    let mut c = server.connect();
    c.send(&auth_frame(tid, 7, &code));
    let reply = c.recv();
    assert_eq!(reply.general(), (7, 0x0102, 0));
    assert_eq!(
        reply.header.serial, 6,
        "the platform serial restarted instead of continuing"
    );
    c.send(&heartbeat_frame(tid, 8));
    let reply = c.recv();
    assert_eq!(reply.general(), (8, 0x0002, 0));
    assert_eq!(reply.header.serial, 7);
}

#[test]
fn jt808_2019_terminals_are_answered_with_2019_headers() {
    use liengate::protocols::jt808::{Auth, Header, TerminalId, Version};
    let server = start(None);
    let mut c = server.connect();
    // go-jt808 2019 registration: terminal 00000000017299841738, serial 0, protocol version 1.
    c.send(&fixture("jt808-gj-0100-register-2019"));
    let reply = c.recv();
    let code = reply.body[3..].to_vec();
    let h2019 = |id: u16, len: u16, serial: u16| {
        let mut h = id.to_be_bytes().to_vec();
        h.extend_from_slice(&(0x4000 | len).to_be_bytes());
        h.push(1);
        h.extend_from_slice(&[0x00, 0x00, 0x00, 0x00, 0x01, 0x72, 0x99, 0x84, 0x17, 0x38]);
        h.extend_from_slice(&serial.to_be_bytes());
        h
    };
    let mut expected = h2019(0x8100, 19, 0);
    expected.extend_from_slice(&[0, 0, 0]);
    expected.extend_from_slice(&code);
    assert_eq!(reply.raw, wire(&expected));

    // 2019 authentication: code length, code, IMEI, software version.
    let terminal = TerminalId::parse("00000000017299841738", Version::V2019).unwrap();
    let header = Header::new(0x0102, terminal, 1, Version::V2019);
    let mut out = bytes::BytesMut::new();
    liengate::protocols::jt808::encode_message(
        &header,
        &liengate::protocols::jt808::Message::Auth(Auth {
            code: &code,
            imei: Some(b"860000000000001"),
            software_version: Some(b"1.0.0"),
        }),
        &mut out,
    );
    c.send(&out);
    let mut expected = h2019(0x8001, 5, 1);
    expected.extend_from_slice(&[0x00, 0x01, 0x01, 0x02, 0x00]);
    assert_eq!(c.recv().raw, wire(&expected));

    // A real 2019 location (serial 65535).
    c.send(&fixture("jt808-gj-0200-extras-2019"));
    let mut expected = h2019(0x8001, 5, 2);
    expected.extend_from_slice(&[0xff, 0xff, 0x02, 0x00, 0x00]);
    assert_eq!(c.recv().raw, wire(&expected));
}

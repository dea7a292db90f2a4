//! Position handling, black-box: duplicates, late (blind-area / out-of-order) data, sanitation,
//! wired + wireless fusion and derived state, observed through the HTTP API and metrics.
mod common;

use std::time::Duration;

use common::*;

const REGISTRY: &str = "terminal_id,protocol,role,vehicle_id\n\
    013800138001,jt808,wired,VH-0001\n\
    013800138002,jt808,wireless,VH-0001\n\
    013800138009,jt808,wired,VH-0009\n";

fn server_with_registry(extra: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let registry = write_registry(dir.path(), REGISTRY);
    let config = format!("{extra}\n[registry]\nimport = \"{}\"\n", registry.display());
    (start(Some(&config)), dir)
}

fn vehicle(server: &Server, id: &str) -> serde_json::Value {
    let (status, v) = server.get_json(&format!("/v1/vehicles/{id}/location"));
    assert_eq!(status, 200, "{v}");
    v
}

fn device(server: &Server, id: &str) -> serde_json::Value {
    let (status, v) = server.get_json(&format!("/v1/devices/{id}/location"));
    assert_eq!(status, 200, "{v}");
    v
}

fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[test]
fn a_resent_frame_is_answered_again_but_processed_once() {
    let (server, _dir) = server_with_registry("");
    let tid = "013800138009";
    let mut c = server.connect();
    c.login(tid);
    let t = now_s() - 60;
    let f = location_frame(tid, 40, Pos::at(t, 22.5, 114.0));
    assert_eq!(c.request(&f, 40, 0x0200), 0);
    // The device missed our answer and sends the very same frame again.
    assert_eq!(c.request(&f, 40, 0x0200), 0);
    // Also across a reconnect.
    let code = c.login(tid);
    drop(c);
    let mut c = server.connect();
    assert_eq!(c.auth(tid, 3, &code), 0);
    assert_eq!(c.request(&f, 40, 0x0200), 0);
    assert_eq!(server.metric("frames_duplicate_total", &[]), 2.0);
    assert_eq!(server.metric("positions_stored_total", &[]), 1.0);
    // A new serial with the same time is a different frame.
    let g = location_frame(tid, 41, Pos::at(t, 22.5, 114.0));
    assert_eq!(c.request(&g, 41, 0x0200), 0);
    assert_eq!(server.metric("positions_stored_total", &[]), 2.0);
}

#[test]
fn late_and_blind_area_data_never_rewinds_the_last_known_position() {
    let (server, _dir) = server_with_registry("");
    let tid = "013800138009";
    let mut c = server.connect();
    c.login(tid);
    let now = now_s();
    let t = now - 120;
    assert_eq!(
        c.request(
            &location_frame(tid, 1, Pos::at(t, 22.50, 114.00)),
            1,
            0x0200
        ),
        0
    );
    // A blind-area batch from an hour ago, and an older single report sent late.
    let old = [
        Pos::at(now - 3600, 22.40, 113.90),
        Pos::at(now - 3000, 22.42, 113.92),
        Pos::at(now - 2400, 22.44, 113.94),
    ];
    assert_eq!(c.request(&batch_frame(tid, 2, true, &old), 2, 0x0704), 0);
    assert_eq!(
        c.request(
            &location_frame(tid, 3, Pos::at(t - 30, 22.49, 113.99)),
            3,
            0x0200
        ),
        0
    );
    let v = vehicle(&server, "VH-0009");
    assert_eq!(v["time"], rfc3339(t));
    assert_eq!(v["latitude"], 22.5);
    assert_eq!(v["terminal_id"], tid);
    assert_eq!(server.metric("positions_stored_total", &[]), 5.0);
    // A normal (non-blind) batch whose newest item is newer moves it forward.
    let newer = [
        Pos::at(t + 10, 22.501, 114.001),
        Pos::at(t + 20, 22.502, 114.002),
    ];
    assert_eq!(c.request(&batch_frame(tid, 4, false, &newer), 4, 0x0704), 0);
    let v = vehicle(&server, "VH-0009");
    assert_eq!(v["time"], rfc3339(t + 20));
    assert_eq!(v["latitude"], 22.502);

    // Everything is in the track in device-time order (read from the store after a stop).
    let mut server = server;
    assert!(server.signal_and_wait("TERM").success());
    let store = liengate::store::Store::open(&liengate::store::StoreConfig::new(server.data_dir()))
        .unwrap();
    let track = store
        .track("VH-0009", (now - 7200) * 1000, (now + 60) * 1000, 100)
        .unwrap();
    let times: Vec<i64> = track.iter().map(|f| f.time_ms / 1000).collect();
    assert_eq!(
        times,
        vec![
            now - 3600,
            now - 3000,
            now - 2400,
            t - 30,
            t,
            t + 10,
            t + 20
        ]
    );
    assert!(track[0]
        .flags
        .contains(liengate::model::FixFlags::BLIND_AREA));
    assert!(!track[6]
        .flags
        .contains(liengate::model::FixFlags::BLIND_AREA));
}

#[test]
fn suspect_fixes_are_stored_flagged_but_never_become_last_known() {
    let (server, _dir) = server_with_registry("[sanitation]\nmax_speed_kmh = 250.0\n");
    let tid = "013800138009";
    let mut c = server.connect();
    c.login(tid);
    let now = now_s();
    let good = Pos::at(now - 100, 22.5, 114.0);
    assert_eq!(c.request(&location_frame(tid, 1, good), 1, 0x0200), 0);

    let no_fix = Pos {
        fixed: false,
        ..Pos::at(now - 90, 22.6, 114.1)
    };
    let zero = Pos::at(now - 80, 0.0, 0.0);
    let future = Pos::at(now + 86_400, 22.5, 114.0);
    // 200 km in 10 s.
    let jump = Pos::at(now - 70, 24.3, 114.0);
    for (serial, p) in [(2, no_fix), (3, zero), (4, future), (5, jump)] {
        assert_eq!(
            c.request(&location_frame(tid, serial, p), serial, 0x0200),
            0
        );
    }
    // Invalid BCD time (month 13).
    let mut loc = good.location();
    loc.time = liengate::protocols::jt808::BcdTime([0x24, 0x13, 0x01, 0x00, 0x00, 0x00]);
    let bad_time = frame(tid, 6, &liengate::protocols::jt808::Message::Location(loc));
    assert_eq!(c.request(&bad_time, 6, 0x0200), 0);

    let v = vehicle(&server, "VH-0009");
    assert_eq!(v["time"], rfc3339(now - 100));
    assert_eq!(v["latitude"], 22.5);
    for flag in [
        "no_gnss",
        "zero_coord",
        "future_time",
        "impossible_jump",
        "invalid_time",
    ] {
        assert_eq!(
            server.metric("positions_flagged_total", &[("flag", flag)]),
            1.0,
            "{flag}"
        );
    }
    assert_eq!(server.metric("positions_stored_total", &[]), 6.0);
    // A plausible continuation is accepted again.
    let next = Pos::at(now - 60, 22.501, 114.001);
    assert_eq!(c.request(&location_frame(tid, 7, next), 7, 0x0200), 0);
    assert_eq!(vehicle(&server, "VH-0009")["latitude"], 22.501);
}

#[test]
fn the_vehicle_shows_the_freshest_fix_of_its_wired_and_wireless_devices() {
    let (server, _dir) = server_with_registry("");
    let (wired, wireless) = ("013800138001", "013800138002");
    let mut w = server.connect();
    w.login(wired);
    let mut b = server.connect();
    b.login(wireless);
    let now = now_s();
    assert_eq!(
        w.request(
            &location_frame(wired, 1, Pos::at(now - 300, 22.50, 114.00)),
            1,
            0x0200
        ),
        0
    );
    let v = vehicle(&server, "VH-0001");
    assert_eq!(v["terminal_id"], wired);
    assert_eq!(v["source"], "wired");

    // The wireless unit reports later (device time): it becomes the source.
    let parked = Pos {
        speed_kmh: 0.0,
        acc: false,
        ..Pos::at(now - 200, 22.60, 114.10)
    };
    assert_eq!(
        b.request(&location_frame(wireless, 1, parked), 1, 0x0200),
        0
    );
    let v = vehicle(&server, "VH-0001");
    assert_eq!(v["terminal_id"], wireless);
    assert_eq!(v["source"], "wireless");
    assert_eq!(v["latitude"], 22.6);
    assert_eq!(v["acc"], false);

    // An older wired fix arriving now does not take over.
    assert_eq!(
        w.request(
            &location_frame(wired, 2, Pos::at(now - 250, 22.51, 114.01)),
            2,
            0x0200
        ),
        0
    );
    assert_eq!(vehicle(&server, "VH-0001")["terminal_id"], wireless);

    // A newer wired fix does.
    assert_eq!(
        w.request(
            &location_frame(wired, 3, Pos::at(now - 100, 22.52, 114.02)),
            3,
            0x0200
        ),
        0
    );
    let v = vehicle(&server, "VH-0001");
    assert_eq!(v["terminal_id"], wired);
    assert_eq!(v["vehicle_id"], "VH-0001");
    assert_eq!(v["acc"], true);

    // Each device keeps its own last known position.
    assert_eq!(device(&server, wireless)["latitude"], 22.6);
    assert_eq!(device(&server, wired)["latitude"], 22.52);
    assert_eq!(device(&server, wired)["vehicle_id"], "VH-0001");
}

#[test]
fn parked_and_offline_state_is_derived() {
    let (server, _dir) =
        server_with_registry("[state]\noffline_after = \"400ms\"\nparked_after = \"10m\"\n");
    let tid = "013800138009";
    let mut c = server.connect();
    c.login(tid);
    let now = now_s();
    let stop = |t| Pos {
        speed_kmh: 0.0,
        acc: false,
        ..Pos::at(t, 22.5, 114.0)
    };
    assert_eq!(
        c.request(
            &location_frame(tid, 1, Pos::at(now - 1000, 22.49, 113.99)),
            1,
            0x0200
        ),
        0
    );
    assert_eq!(
        c.request(&location_frame(tid, 2, stop(now - 700)), 2, 0x0200),
        0
    );
    assert_eq!(
        c.request(&location_frame(tid, 3, stop(now - 20)), 3, 0x0200),
        0
    );
    let v = vehicle(&server, "VH-0009");
    assert_eq!(v["state"], "parked", "{v}");
    assert_eq!(v["parked_since"], rfc3339(now - 700));
    assert_eq!(v["online"], true);
    assert_eq!(v["offline_since"], serde_json::Value::Null);

    // Moving again.
    assert_eq!(
        c.request(
            &location_frame(tid, 4, Pos::at(now - 10, 22.5005, 114.0)),
            4,
            0x0200
        ),
        0
    );
    assert_eq!(vehicle(&server, "VH-0009")["state"], "moving");

    // No frame for longer than offline_after: offline, since last frame + offline_after.
    std::thread::sleep(Duration::from_millis(600));
    let v = vehicle(&server, "VH-0009");
    assert_eq!(v["online"], false, "{v}");
    assert!(v["offline_since"].is_string());
    // A heartbeat brings it back online.
    assert_eq!(c.request(&heartbeat_frame(tid, 5), 5, 0x0002), 0);
    assert_eq!(vehicle(&server, "VH-0009")["online"], true);
}

#[test]
fn vendor_battery_and_voltage_items_are_mapped_per_model() {
    let server = start(Some(
        "[[jt808.models]]\nname = \"TEST-1\"\nbattery_pct_item = 0xE1\nvoltage_item = 0xE2\nvoltage_unit_mv = 100\n",
    ));
    let tid = "013800000444";
    let mut c = server.connect();
    // `login` registers with model "TEST-1".
    c.login(tid);
    let mut loc = Pos::at(now_s() - 20, 22.5, 114.0).location();
    // Mileage (0x01, standard), then battery 85 % and 12.3 V in the vendor items.
    loc.extras = liengate::protocols::jt808::Extras(&[
        0x01, 4, 0, 0, 0, 10, 0xE1, 1, 85, 0xE2, 2, 0x00, 0x7B,
    ]);
    let f = frame(tid, 3, &liengate::protocols::jt808::Message::Location(loc));
    assert_eq!(c.request(&f, 3, 0x0200), 0);
    let v = device(&server, tid);
    assert_eq!(v["battery_pct"], 85);
    assert_eq!(v["voltage_mv"], 12300);

    // Another model gets no mapping: the items stay unmapped.
    let mut c = server.connect();
    c.send(&register_frame("013800000445", 1, "OTHER"));
    let code = String::from_utf8(c.recv().body[3..].to_vec()).unwrap();
    assert_eq!(c.auth("013800000445", 2, &code), 0);
    let f = frame(
        "013800000445",
        3,
        &liengate::protocols::jt808::Message::Location(loc),
    );
    assert_eq!(c.request(&f, 3, 0x0200), 0);
    let v = device(&server, "013800000445");
    assert_eq!(v["battery_pct"], serde_json::Value::Null);
}

#[test]
fn under_backpressure_every_frame_is_answered_and_stored() {
    // One shard with a one-frame queue and one unanswered frame per connection: the senders
    // constantly wait for the pipeline. Nothing may be lost or answered early.
    let server = start(Some(
        "[pipeline]\nshards = 1\nqueue_depth = 1\n[jt808]\nmax_inflight = 1\n[store]\ndurability = \"buffered\"\n",
    ));
    let devices = [
        "013800000501",
        "013800000502",
        "013800000503",
        "013800000504",
        "013800000505",
        "013800000506",
    ];
    let per_device: u16 = 150;
    let base = now_s() - 3600;
    let handles: Vec<_> = devices
        .iter()
        .map(|tid| {
            let mut c = server.connect();
            c.login(tid);
            let tid = tid.to_string();
            std::thread::spawn(move || {
                let mut burst = Vec::new();
                for i in 0..per_device {
                    let p = Pos::at(base + i as i64, 22.5 + i as f64 * 1e-5, 114.0);
                    burst.extend_from_slice(&location_frame(&tid, 100 + i, p));
                }
                c.send(&burst);
                for i in 0..per_device {
                    assert_eq!(c.recv().general(), (100 + i, 0x0200, 0));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        server.metric("positions_stored_total", &[]),
        (devices.len() * per_device as usize) as f64
    );
    for tid in devices {
        let v = device(&server, tid);
        assert_eq!(v["time"], rfc3339(base + per_device as i64 - 1));
    }
    // The connections did find the shard queue full and waited (reading nothing meanwhile):
    // the path above was the backpressure path, not a queue that always had room.
    let waits = server.metric("shard_queue_full_total", &[]);
    eprintln!("frames that waited for room in the shard queue: {waits}");
    assert!(
        waits > 0.0,
        "no frame ever found the one-slot shard queue full"
    );
    // And each connection, with a burst sent and one unanswered frame allowed, stopped reading
    // until its answer came: operators see that in /metrics.
    let held = server.metric("connection_inflight_full_total", &[]);
    assert!(
        held >= devices.len() as f64,
        "connections held back by max_inflight: {held}"
    );
}

#[test]
fn alarms_reported_without_a_fix_show_next_to_the_last_position() {
    use liengate::protocols::jt808::{Alarm, Message};
    let (server, _dir) = server_with_registry("");
    let tid = "013800138009";
    let mut c = server.connect();
    c.login(tid);
    let t = now_s() - 120;
    let f = location_frame(tid, 10, Pos::at(t, 22.5, 114.0));
    assert_eq!(c.request(&f, 10, 0x0200), 0);

    // A minute later the car is in a garage: no GNSS fix, and the power and antenna are cut —
    // the classic removal pattern. The position must stay, the alarm must show.
    let mut no_fix = Pos::at(t + 60, 0.0, 0.0);
    no_fix.fixed = false;
    no_fix.acc = false;
    let mut loc = no_fix.location();
    loc.alarm = Alarm::POWER_OFF | Alarm::GNSS_ANTENNA_CUT;
    let f = frame(tid, 11, &Message::Location(loc));
    assert_eq!(c.request(&f, 11, 0x0200), 0);

    for v in [vehicle(&server, "VH-0009"), device(&server, tid)] {
        assert_eq!(v["latitude"], 22.5, "{v}");
        assert_eq!(v["time"], rfc3339(t), "{v}");
        assert_eq!(v["alarm"], (1 << 8) | (1 << 5), "{v}");
        assert_eq!(v["acc"], false, "{v}");
        assert_eq!(v["signals_at"], rfc3339(t + 60), "{v}");
    }

    // An older report that arrives late (blind area) does not overwrite newer signals.
    let mut late = Pos::at(t - 30, 22.4, 114.1).location();
    late.alarm = Alarm::EMERGENCY;
    let f = frame(tid, 12, &Message::Location(late));
    assert_eq!(c.request(&f, 12, 0x0200), 0);
    let v = vehicle(&server, "VH-0009");
    assert_eq!(v["alarm"], (1 << 8) | (1 << 5), "{v}");
}

#[test]
fn the_gateway_drops_track_points_older_than_the_retention() {
    let server = start(Some("[store]\nretention_days = 1\n"));
    // The pass at start must be over before the old point arrives, or it drops it itself (on a
    // busy machine it can start late), and the restarted gateway finds nothing to drop.
    server.eventually("the retention pass at start", || {
        server.metric("store_retention_runs_total", &[]) >= 1.0
    });
    let tid = "013800000555";
    let mut c = server.connect();
    c.login(tid);
    // A blind-area upload three days late and one from a minute ago.
    let old = location_frame(tid, 5, Pos::at(now_s() - 3 * 86_400, 22.5, 114.0));
    assert_eq!(c.request(&old, 5, 0x0200), 0);
    let fresh = location_frame(tid, 6, Pos::at(now_s() - 60, 22.6, 114.1));
    assert_eq!(c.request(&fresh, 6, 0x0200), 0);
    drop(c);
    // Retention runs at start and then hourly: a restart makes it run now.
    let server = server.restart();
    server.eventually("retention to drop the old point", || {
        server.metric("store_retention_deleted_total", &[]) == 1.0
    });
    // The fresh point, and with it the last known position, stays.
    assert_eq!(device(&server, tid)["latitude"], 22.6);
}

#[test]
fn a_settled_vehicles_movement_data_can_be_purged() {
    let (mut server, _dir) = server_with_registry("");
    let tid = "013800138009";
    let mut c = server.connect();
    c.login(tid);
    for (serial, age) in [(5u16, 120i64), (6, 60)] {
        let f = location_frame(tid, serial, Pos::at(now_s() - age, 22.5, 114.0));
        assert_eq!(c.request(&f, serial, 0x0200), 0);
    }
    drop(c);
    assert!(server.signal_and_wait("TERM").success());

    let data_dir = server.data_dir();
    let purge = |vehicle: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_liengate"))
            .args(["registry", "purge", vehicle, "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap()
    };
    let out = purge("VH-0009");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("2 track points"), "{stdout}");
    // A mistyped id is an error, not a silent no-op.
    let out = purge("VH-9999");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no vehicle"));

    // After a restart the vehicle is still registered but has no location any more.
    let server = server.restart();
    let (status, body) = server.get_json("/v1/vehicles/VH-0009/location");
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.get_json(&format!("/v1/devices/{tid}/location"));
    assert_eq!(status, 404, "{body}");
}

#[test]
fn a_device_that_stops_reading_its_acknowledgements_is_closed_and_others_go_on() {
    // Acknowledgements of positions are written by the shard's commit stage. A device that sends
    // positions and never reads fills its socket buffers: the gateway must keep the rest it could
    // not write, stop reading from that device, and close it once the idle timeout passes without
    // the device taking its answers, while another device is served as usual.
    let server = start(Some(
        "[jt808]\nidle_timeout = \"2s\"\nmax_inflight = 64\n[store]\ndurability = \"buffered\"\n",
    ));
    let tid = "013800000601";
    let mut c = Client::connect_with_buffers(server.jt808, 4096);
    c.login(tid);
    // One device second per frame, from 40 days back: the socket buffers take a few hundred
    // thousand answers before the gateway has to hold one back.
    let base = now_s() - 40 * 86_400;
    let mut n: i64 = 0;
    let blocked = c.send_until_blocked(100 << 20, || {
        let mut burst = Vec::new();
        for _ in 0..1000 {
            let p = Pos::at(base + n, 22.5, 114.0);
            burst.extend_from_slice(&location_frame(tid, n as u16, p));
            n += 1;
        }
        burst
    });
    assert!(
        blocked,
        "the gateway kept reading without its answers being read"
    );
    // Another device is not held up by the blocked one.
    let mut other = server.connect();
    other.login("013800000602");
    let p = Pos::at(base, 22.6, 114.1);
    assert_eq!(
        other.request(&location_frame("013800000602", 7, p), 7, 0x0200),
        0
    );
    server.eventually("the non-reading device to be closed as hostile", || {
        server.metric("connections_closed_total", &[("reason", "hostile")]) >= 1.0
    });
    assert!(
        server
            .stderr()
            .contains("device stopped reading its answers"),
        "{}",
        server.stderr()
    );
}

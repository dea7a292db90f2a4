//! Start-up recovery of the last known positions, black-box: a restart replays the track only
//! from each record's newest report (its mark), not from its last valid fix, and a late fix older
//! than that mark still survives a kill -9 (the shard stores it together with its record).
mod common;

use common::*;

/// `scanned` of the newest "last known positions recovered" log line: track points the last
/// start replayed.
fn scanned_at_last_start(server: &Server) -> u64 {
    let log = server.stderr();
    let line = log
        .lines()
        .rfind(|l| l.contains("last known positions recovered from the track"))
        .expect("recovery log line");
    let value = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("scanned="))
        .unwrap_or_else(|| panic!("no scanned= in {line:?}"));
    value.parse().unwrap()
}

/// Asserts that the last start replayed at most `limit` track points.
fn assert_replayed_at_most(server: &Server, limit: u64) {
    let scanned = scanned_at_last_start(server);
    assert!(
        scanned <= limit,
        "replayed {scanned} points, expected at most {limit}"
    );
}

/// A server whose records are written only at a graceful stop (or with the change that needs
/// them at once), with a registry that makes `wired` and `wireless` the trackers of `vehicle`;
/// the wireless unit's model maps vendor item 0xE1 to its battery level. The registry file must
/// outlive the server: every start imports it.
fn start_with_pair(wired: &str, wireless: &str, vehicle: &str) -> (Server, tempfile::TempDir) {
    let registry = tempfile::tempdir().unwrap();
    let csv = registry.path().join("registry.csv");
    std::fs::write(
        &csv,
        format!(
            "terminal_id,protocol,role,sim,imei,model,skip_checksum,vehicle_id,plate,vin,loan_id,stage\n\
             {wired},jt808,wired,,,,false,{vehicle},,,,\n\
             {wireless},jt808,wireless,,,TEST-1,false,{vehicle},,,,\n"
        ),
    )
    .unwrap();
    let config = format!(
        "[state]\nlast_known_flush = \"1h\"\n\n[registry]\nimport = \"{}\"\n\n\
         [[jt808.models]]\nname = \"TEST-1\"\nbattery_pct_item = 0xE1\n",
        csv.display()
    );
    (start(Some(&config)), registry)
}

fn location_time(server: &Server, tid: &str) -> i64 {
    time_at(server, &format!("/v1/devices/{tid}/location"))
}

/// The device time (Unix s) of the location that `path` shows.
fn time_at(server: &Server, path: &str) -> i64 {
    let (status, v) = server.get_json(path);
    assert_eq!(status, 200, "{v}");
    time::OffsetDateTime::parse(
        v["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp()
}

#[test]
fn restarts_replay_from_the_newest_report_and_a_late_fix_survives_kill9() {
    // Records are written only at a graceful stop (or with the change that needs them now).
    let server = start(Some("[state]\nlast_known_flush = \"1h\"\n"));
    let tid = "013800000555";
    let mut c = server.connect();
    let code = c.login(tid);
    let t0 = now_s() - 100_000;
    let at = |t: i64, fixed: bool| Pos {
        fixed,
        ..Pos::at(t, 22.5, 114.0)
    };
    assert_eq!(
        c.request(&location_frame(tid, 3, at(t0, true)), 3, 0x0200),
        0
    );
    // A garage: 300 reports without a GNSS fix after the last valid one.
    for (serial, chunk) in (4u16..).zip(0..10) {
        let items: Vec<Pos> = (1..=30).map(|i| at(t0 + chunk * 30 + i, false)).collect();
        assert_eq!(
            c.request(&batch_frame(tid, serial, false, &items), serial, 0x0704),
            0
        );
    }
    drop(c);

    // A graceful restart writes the record (valid fix at t0, newest report at t0 + 300); the
    // next start replays from that report on, not the 300 flagged ones after t0.
    let mut server = server.restart();
    assert_eq!(location_time(&server, tid), t0);
    assert_replayed_at_most(&server, 1);

    // A blind-area fix from between the two, then kill -9 before any flush.
    let mut c = server.connect();
    assert_eq!(c.auth(tid, 20, &code), 0);
    assert_eq!(
        c.request(
            &batch_frame(tid, 21, true, &[at(t0 + 150, true)]),
            21,
            0x0704
        ),
        0
    );
    assert_eq!(location_time(&server, tid), t0 + 150);
    let status = server.signal_and_wait("KILL");
    assert!(!status.success());
    let mut server = server.restart();
    assert_eq!(
        location_time(&server, tid),
        t0 + 150,
        "the acknowledged late fix was lost by the crash"
    );
    assert_replayed_at_most(&server, 1);

    // A newer valid fix, not yet written as a record, is found by the replay after a crash.
    let mut c = server.connect();
    assert_eq!(c.auth(tid, 30, &code), 0);
    assert_eq!(
        c.request(&location_frame(tid, 31, at(t0 + 400, true)), 31, 0x0200),
        0
    );
    let status = server.signal_and_wait("KILL");
    assert!(!status.success());
    let server = server.restart();
    assert_eq!(location_time(&server, tid), t0 + 400);
}

#[test]
fn a_silent_device_does_not_make_every_restart_replay_its_vehicle_track() {
    // A vehicle with a wired and a wireless tracker; records are written only at a graceful stop
    // (or with the change that needs them now).
    let (wired, wireless) = ("013800000601", "013800000602");
    let (server, _registry) = start_with_pair(wired, wireless, "VH-601");
    let now = now_s();

    // The wireless unit reported once, 30 days ago, and went silent (its battery ran out).
    let mut l = server.connect();
    let lcode = l.login(wireless);
    let silent_at = now - 30 * 86_400;
    assert_eq!(
        l.request(
            &location_frame(wireless, 3, Pos::at(silent_at, 22.5, 114.0)),
            3,
            0x0200
        ),
        0
    );
    drop(l);
    // The wired unit has reported 300 times since.
    let mut w = server.connect();
    let wcode = w.login(wired);
    for (serial, chunk) in (4u16..).zip(0..10) {
        let items: Vec<Pos> = (0..30)
            .map(|i| Pos::at(now - 20 * 86_400 + (chunk * 30 + i) * 3_600, 22.5, 114.0))
            .collect();
        assert_eq!(
            w.request(&batch_frame(wired, serial, false, &items), serial, 0x0704),
            0
        );
    }
    drop(w);

    // Restarts do not replay the wired unit's points for the sake of the wireless unit's old
    // record (the vehicle's replay used to start at its oldest mark: 30 days back).
    let server = server.restart();
    let mut server = server.restart();
    assert_replayed_at_most(&server, 1);
    assert_eq!(location_time(&server, wireless), silent_at);

    // Back in coverage, the wireless unit uploads what it stored during the silence, far behind
    // its vehicle's newest report: its record is written with it, as the replay will not reach
    // back that far after a crash.
    let mut l = server.connect();
    assert_eq!(l.auth(wireless, 40, &lcode), 0);
    let stored_at = silent_at + 86_400;
    assert_eq!(
        l.request(
            &batch_frame(wireless, 41, true, &[Pos::at(stored_at, 22.5, 114.0)]),
            41,
            0x0704
        ),
        0
    );
    drop(l);
    let status = server.signal_and_wait("KILL");
    assert!(!status.success());
    let mut server = server.restart();
    assert_eq!(
        location_time(&server, wireless),
        stored_at,
        "the acknowledged blind-area fix of the wireless unit was lost by the crash"
    );

    // Fresh reports from both units, then kill -9 before any flush: the replay from shortly
    // before the vehicle's newest report finds them.
    let mut w = server.connect();
    assert_eq!(w.auth(wired, 50, &wcode), 0);
    assert_eq!(
        w.request(
            &location_frame(wired, 51, Pos::at(now - 5, 22.6, 114.1)),
            51,
            0x0200
        ),
        0
    );
    let mut l = server.connect();
    assert_eq!(l.auth(wireless, 60, &lcode), 0);
    assert_eq!(
        l.request(
            &location_frame(wireless, 61, Pos::at(now - 4, 22.6, 114.1)),
            61,
            0x0200
        ),
        0
    );
    let status = server.signal_and_wait("KILL");
    assert!(!status.success());
    let server = server.restart();
    assert_eq!(location_time(&server, wired), now - 5);
    assert_eq!(
        location_time(&server, wireless),
        now - 4,
        "the acknowledged fix of the wireless unit was lost by the crash"
    );
    let (status, v) = server.get_json("/v1/vehicles/VH-601/location");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["terminal_id"], wireless, "{v}");
    assert_replayed_at_most(&server, 3);
}

#[test]
fn a_vehicle_record_written_early_takes_its_devices_pending_records_along() {
    let (wired, wireless) = ("013800000611", "013800000612");
    let (server, _registry) = start_with_pair(wired, wireless, "VH-611");
    let t = now_s() - 3_000;

    // The wireless unit has a stored record (a fix at t - 100 s, written by a graceful restart),
    // so that its next fix is not its first (a first record is written at once).
    let mut l = server.connect();
    let lcode = l.login(wireless);
    assert_eq!(
        l.request(
            &location_frame(wireless, 3, Pos::at(t - 100, 22.5, 114.0)),
            3,
            0x0200
        ),
        0
    );
    drop(l);
    let mut server = server.restart();

    // Its fix at t: its record and the vehicle's wait for the flush.
    let mut l = server.connect();
    assert_eq!(l.auth(wireless, 10, &lcode), 0);
    assert_eq!(
        l.request(
            &location_frame(wireless, 11, Pos::at(t, 22.5, 114.0)),
            11,
            0x0200
        ),
        0
    );
    // The wired unit reports without a fix 20 minutes later, then sends a blind-area fix from
    // between: it moves the vehicle's record behind its newest report, so that record is written
    // at once, with a newest report 20 minutes after the wireless unit's fix.
    let mut w = server.connect();
    w.login(wired);
    let no_fix = Pos {
        fixed: false,
        ..Pos::at(t + 1_200, 22.5, 114.0)
    };
    assert_eq!(w.request(&location_frame(wired, 3, no_fix), 3, 0x0200), 0);
    assert_eq!(
        w.request(
            &batch_frame(wired, 4, true, &[Pos::at(t + 600, 22.51, 114.01)]),
            4,
            0x0704
        ),
        0
    );
    let status = server.signal_and_wait("KILL");
    assert!(!status.success());

    // The vehicle's replay starts shortly before its stored newest report, after the wireless
    // unit's fix: that fix survives because its record was written with the vehicle's.
    let server = server.restart();
    assert_eq!(
        location_time(&server, wireless),
        t,
        "the acknowledged fix of the wireless unit was lost by the crash"
    );
    let (status, v) = server.get_json("/v1/vehicles/VH-611/location");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["terminal_id"], wired, "{v}");
}

#[test]
fn a_devices_first_record_keeps_what_it_reported_before_its_first_fix_across_kill9() {
    let (wired, wireless) = ("013800000621", "013800000622");
    let (server, _registry) = start_with_pair(wired, wireless, "VH-621");
    let t = now_s() - 3_000;

    // The vehicle's record, stored by a graceful restart, has its newest report at t + 1200 s.
    let mut w = server.connect();
    w.login(wired);
    assert_eq!(
        w.request(
            &location_frame(wired, 3, Pos::at(t + 1_200, 22.5, 114.0)),
            3,
            0x0200
        ),
        0
    );
    drop(w);
    let mut server = server.restart();

    // The wireless unit, which has no record yet, reports its battery without a fix, with a
    // device time well before the vehicle's newest report (it changes no record: there is none)...
    let mut l = server.connect();
    l.login(wireless);
    let mut loc = Pos {
        fixed: false,
        ..Pos::at(t, 22.5, 114.0)
    }
    .location();
    loc.extras = liengate::protocols::jt808::Extras(&[0xE1, 1, 80]);
    let f = frame(
        wireless,
        3,
        &liengate::protocols::jt808::Message::Location(loc),
    );
    assert_eq!(l.request(&f, 3, 0x0200), 0);
    // ...and then gets its first fix, close to the vehicle's newest report: its first record
    // carries the battery level, and the replay after a crash would not reach back to t.
    assert_eq!(
        l.request(
            &location_frame(wireless, 4, Pos::at(t + 1_190, 22.5, 114.0)),
            4,
            0x0200
        ),
        0
    );
    assert_eq!(device(&server, wireless)["battery_pct"], 80);
    let status = server.signal_and_wait("KILL");
    assert!(!status.success());

    let server = server.restart();
    assert_eq!(location_time(&server, wireless), t + 1_190);
    assert_eq!(
        device(&server, wireless)["battery_pct"],
        80,
        "the battery level reported before the first fix was lost by the crash"
    );
}

fn device(server: &Server, tid: &str) -> serde_json::Value {
    let (status, v) = server.get_json(&format!("/v1/devices/{tid}/location"));
    assert_eq!(status, 200, "{v}");
    v
}

/// A tracker that never had a valid fix (a car parked underground since before its tracker was
/// installed) sends only no-GNSS reports. Its keys have no last known record, but a signals
/// record (its newest report's signals), so a start does not replay the whole track again; and
/// the battery level survives until the first fix, kill -9 included.
#[test]
fn a_tracker_without_any_fix_is_replayed_once_and_keeps_its_battery_level() {
    let (wired, wireless) = ("013800000631", "013800000632");
    let (server, _registry) = start_with_pair(wired, wireless, "VH-631");
    let t0 = now_s() - 50_000;
    // Sends the no-GNSS reports with serials `serials`, a minute apart, with a battery level.
    let send_no_fix = |l: &mut Client, serials: std::ops::Range<u16>, battery: u8| {
        let extras: &'static [u8] = match battery {
            80 => &[0xE1, 1, 80],
            _ => &[0xE1, 1, 70],
        };
        for serial in serials {
            let mut loc = Pos {
                fixed: false,
                ..Pos::at(t0 + serial as i64 * 60, 22.5, 114.0)
            }
            .location();
            loc.extras = liengate::protocols::jt808::Extras(extras);
            let f = frame(
                wireless,
                serial,
                &liengate::protocols::jt808::Message::Location(loc),
            );
            assert_eq!(l.request(&f, serial, 0x0200), 0);
        }
    };
    let mut l = server.connect();
    let code = l.login(wireless);
    // A report a minute: five hours, far more than the ten minutes a vehicle's replay reaches
    // back before its newest report for its other tracker (which has never reported).
    send_no_fix(&mut l, 3..303, 80);
    drop(l);

    // The graceful stop stored the keys' signals records: the start replays from their newest
    // report (less the ten minutes for the silent wired unit), not the 300 reports; and so does
    // the next.
    let server = server.restart();
    assert_replayed_at_most(&server, 11);
    let mut server = server.restart();
    assert_replayed_at_most(&server, 11);

    // Newer reports, then a crash: the next start replays those alone.
    let mut l = server.connect();
    assert_eq!(l.auth(wireless, 400, &code), 0);
    send_no_fix(&mut l, 401..411, 70);
    drop(l);
    let status = server.signal_and_wait("KILL");
    assert!(!status.success());
    let server = server.restart();
    assert_replayed_at_most(&server, 21);

    // The first fix, without a battery item of its own, shows the newest level reported.
    let mut l = server.connect();
    assert_eq!(l.auth(wireless, 500, &code), 0);
    assert_eq!(
        l.request(
            &location_frame(wireless, 501, Pos::at(t0 + 500 * 60, 22.5, 114.0)),
            501,
            0x0200
        ),
        0
    );
    assert_eq!(device(&server, wireless)["battery_pct"], 70);
    let (status, v) = server.get_json("/v1/vehicles/VH-631/location");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["battery_pct"], 70, "{v}");
}

/// A device moved to another vehicle by the registry imported at the restart after a crash: its
/// track points since its record was last written were stored under its old vehicle, and the
/// start replays them there before the import moves it (both by `serve`'s own import and by
/// `liengate registry import` run while the gateway is down).
#[test]
fn a_device_reassigned_at_the_restart_after_a_crash_keeps_its_newest_position() {
    for by_cli in [false, true] {
        let (wired, wireless) = ("013800000641", "013800000642");
        let (mut server, registry) = start_with_pair(wired, wireless, "VH-641");
        let t = now_s() - 5_000;
        let mut w = server.connect();
        w.login(wired);
        // The first fix makes the device's first record, written at once; the next two stay
        // pending (the flush interval is an hour).
        for (serial, dt) in [(3u16, 0), (4, 60), (5, 120)] {
            assert_eq!(
                w.request(
                    &location_frame(wired, serial, Pos::at(t + dt, 22.5, 114.0)),
                    serial,
                    0x0200
                ),
                0
            );
        }
        assert_eq!(location_time(&server, wired), t + 120);
        let status = server.signal_and_wait("KILL");
        assert!(!status.success());

        let moved = format!(
            "terminal_id,protocol,role,sim,imei,model,skip_checksum,vehicle_id,plate,vin,loan_id,stage\n\
             {wired},jt808,wired,,,,false,VH-642,,,,\n\
             {wireless},jt808,wireless,,,TEST-1,false,VH-641,,,,\n"
        );
        let csv = registry.path().join("registry.csv");
        if by_cli {
            let other = registry.path().join("moved.csv");
            std::fs::write(&other, moved).unwrap();
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_liengate"))
                .args(["registry", "import"])
                .arg(&other)
                .arg("--data-dir")
                .arg(server.data_dir())
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        } else {
            std::fs::write(&csv, moved).unwrap();
        }
        let server = server.restart();
        assert_eq!(
            location_time(&server, wired),
            t + 120,
            "the device's newest fix was lost when it moved (by {})",
            if by_cli { "registry import" } else { "serve" }
        );
        assert_eq!(
            location_time_of_vehicle(&server, "VH-641"),
            t + 120,
            "the old vehicle still shows where the car was last seen with that tracker"
        );
        drop(server);
    }
}

fn location_time_of_vehicle(server: &Server, vehicle: &str) -> i64 {
    time_at(server, &format!("/v1/vehicles/{vehicle}/location"))
}

/// A delayed no-fix report, older than the newest report of a tracker that has no fix yet, brings
/// a newer battery reading than the one its signals record holds. The shard stores that record
/// at once (the replay starts at the newest report), so the reading survives a kill -9 and a
/// graceful restart, and the car's first fix shows it.
#[test]
fn a_late_battery_reading_before_the_first_fix_survives_restarts() {
    for kill in [true, false] {
        let (wired, wireless) = ("013800000651", "013800000652");
        let (server, _registry) = start_with_pair(wired, wireless, "VH-651");
        let t0 = now_s() - 50_000;
        let no_fix = |t: i64, extras: &'static [u8]| {
            let mut loc = Pos {
                fixed: false,
                ..Pos::at(t, 22.5, 114.0)
            }
            .location();
            loc.extras = liengate::protocols::jt808::Extras(extras);
            liengate::protocols::jt808::Message::Location(loc)
        };
        let mut l = server.connect();
        let code = l.login(wireless);
        // Battery 80 at t0, then a report without a battery item an hour later: more than the
        // ten minutes the vehicle's replay reaches back for its silent wired unit.
        let f = frame(wireless, 3, &no_fix(t0, &[0xE1, 1, 80]));
        assert_eq!(l.request(&f, 3, 0x0200), 0);
        let f = frame(wireless, 4, &no_fix(t0 + 3_600, &[]));
        assert_eq!(l.request(&f, 4, 0x0200), 0);
        drop(l);
        let mut server = server.restart();

        // The delayed report from between, with a newer battery reading.
        let mut l = server.connect();
        assert_eq!(l.auth(wireless, 10, &code), 0);
        let f = frame(wireless, 11, &no_fix(t0 + 1_800, &[0xE1, 1, 30]));
        assert_eq!(l.request(&f, 11, 0x0200), 0);
        drop(l);
        if kill {
            assert!(!server.signal_and_wait("KILL").success());
        }
        let server = server.restart();

        // The first fix, without a battery item.
        let mut l = server.connect();
        assert_eq!(l.auth(wireless, 20, &code), 0);
        assert_eq!(
            l.request(
                &location_frame(wireless, 21, Pos::at(t0 + 4_000, 22.5, 114.0)),
                21,
                0x0200
            ),
            0
        );
        let what = if kill {
            "kill -9"
        } else {
            "a graceful restart"
        };
        assert_eq!(device(&server, wireless)["battery_pct"], 30, "after {what}");
        let (status, v) = server.get_json("/v1/vehicles/VH-651/location");
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["battery_pct"], 30, "after {what}: {v}");
    }
}

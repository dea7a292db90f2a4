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

fn location_time(server: &Server, tid: &str) -> i64 {
    let (status, v) = server.get_json(&format!("/v1/devices/{tid}/location"));
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
    assert!(
        scanned_at_last_start(&server) <= 1,
        "replayed {} points",
        scanned_at_last_start(&server)
    );

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
    assert!(scanned_at_last_start(&server) <= 1);

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

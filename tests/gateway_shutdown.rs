//! Graceful shutdown, black-box: SIGTERM (and SIGINT) stop the server with exit code 0 after
//! in-flight frames are answered, and everything acknowledged is there after a restart.
mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

#[test]
fn sigterm_answers_in_flight_frames_exits_zero_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let registry = write_registry(
        dir.path(),
        "terminal_id,protocol,role,vehicle_id\n013800138001,jt808,wired,VH-1\n",
    );
    let config = format!("[registry]\nimport = \"{}\"\n", registry.display());
    let mut server = start(Some(&config));
    let tid = "013800138001";
    let mut c = server.connect();
    let code = c.login(tid);
    let base = now_s() - 1000;
    // Pipelined: many frames without waiting for answers, then the signal.
    let n: u16 = 200;
    let mut burst = Vec::new();
    for i in 0..n {
        let p = Pos::at(base + i as i64, 22.5 + i as f64 * 1e-5, 114.0);
        burst.extend_from_slice(&location_frame(tid, 1000 + i, p));
    }
    c.send(&burst);
    // Wait for the first answer so that the server is busy with the burst, then stop it.
    let mut acked = HashSet::new();
    let first = c.recv().general();
    assert_eq!(first.2, 0);
    acked.insert(first.0);
    let pid = server.pid().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    while let Some(reply) = c.try_recv(Duration::from_secs(10)) {
        let (serial, id, result) = reply.general();
        assert_eq!((id, result), (0x0200, 0));
        acked.insert(serial);
    }
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    assert!(server.stderr().contains("shutdown complete"));
    assert!(!acked.is_empty());
    eprintln!(
        "acknowledged {} of {n} frames before the close",
        acked.len()
    );

    // Every acknowledged fix is in the track.
    {
        let store =
            liengate::store::Store::open(&liengate::store::StoreConfig::new(server.data_dir()))
                .unwrap();
        let track = store
            .track("VH-1", base * 1000, (base + n as i64) * 1000, 1000)
            .unwrap();
        let stored: HashSet<u16> = track
            .iter()
            .map(|f| (f.time_ms / 1000 - base) as u16 + 1000)
            .collect();
        for s in &acked {
            assert!(
                stored.contains(s),
                "acknowledged serial {s} is not in the track"
            );
        }
    }

    // After a restart the last known position is the newest stored fix, and the device's auth
    // code still works.
    let server = server.restart();
    let newest = *acked.iter().max().unwrap() as i64 - 1000;
    let (status, v) = server.get_json("/v1/vehicles/VH-1/location");
    assert_eq!(status, 200, "{v}");
    let t = time::OffsetDateTime::parse(
        v["time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert!(
        t >= base + newest,
        "last known {t} older than the newest ack {}",
        base + newest
    );
    let mut c = server.connect();
    assert_eq!(c.auth(tid, 1, &code), 0);
}

#[test]
fn sigint_also_stops_gracefully_and_restart_keeps_last_known() {
    let mut server = start(None);
    let tid = "013800000321";
    let mut c = server.connect();
    c.login(tid);
    let t = now_s() - 50;
    assert_eq!(
        c.request(
            &location_frame(tid, 5, Pos::at(t, 30.25, 120.15)),
            5,
            0x0200
        ),
        0
    );
    let status = server.signal_and_wait("INT");
    assert!(status.success(), "{status:?}");
    let server = server.restart();
    let (status, v) = server.get_json(&format!("/v1/devices/{tid}/location"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["latitude"], 30.25);
    assert_eq!(v["longitude"], 120.15);
}

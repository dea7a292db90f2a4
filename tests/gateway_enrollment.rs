//! Self-registration of unknown terminals under the `accept` policy, black-box: the rate limit
//! (`jt808.new_device_rate` / `new_device_burst`) and the cap (`jt808.max_unassigned_devices`).
mod common;

use std::time::Duration;

use common::*;

#[test]
fn new_terminals_over_the_rate_are_closed_unanswered_and_admitted_later() {
    // Two at once, then one every two seconds.
    let server = start(Some(
        "[jt808]\nnew_device_rate = 0.5\nnew_device_burst = 2\n",
    ));
    let mut a = server.connect();
    let code_a = a.login("013800000101");
    let mut b = server.connect();
    b.login("013800000102");

    let mut c = server.connect();
    c.send(&register_frame("013800000103", 7, "TEST-1"));
    assert!(
        c.try_recv(Duration::from_secs(5)).is_none(),
        "a registration over the rate must not be answered"
    );
    assert!(c.closed_within(Duration::from_secs(5)));
    assert_eq!(
        server.metric("registrations_total", &[("result", "rate_limited")]),
        1.0
    );
    assert_eq!(
        server.metric(
            "connections_closed_total",
            &[("reason", "registration_deferred")]
        ),
        1.0
    );
    assert_eq!(server.metric("unassigned_devices", &[]), 2.0);
    server.eventually("the warning in the log", || {
        let log = server.stderr();
        log.lines().any(|l| {
            l.contains("WARN")
                && l.contains("new_device_rate")
                && l.contains("013800000103")
                && l.contains("peer")
        })
    });

    // Terminals the store already knows are not limited: re-registering and authenticating work
    // while the bucket is empty.
    let mut again = server.connect();
    again.send(&register_frame("013800000101", 8, "TEST-1"));
    let reply = again.recv();
    assert_eq!(reply.header.message_id, 0x8100);
    assert_eq!(&reply.body[..3], &[0x00, 0x08, 0x00]);
    assert_eq!(String::from_utf8(reply.body[3..].to_vec()).unwrap(), code_a);

    // The device comes back after the bucket refilled and is registered.
    std::thread::sleep(Duration::from_millis(2500));
    let mut c = server.connect();
    c.login("013800000103");
    assert_eq!(
        server.metric("registrations_total", &[("result", "rate_limited")]),
        1.0
    );
    assert_eq!(server.metric("unassigned_devices", &[]), 3.0);
}

#[test]
fn unknown_terminals_beyond_the_cap_are_refused_as_no_such_terminal_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    // One registry device left unassigned (it counts against the cap) and one on a vehicle.
    let registry = write_registry(
        dir.path(),
        "terminal_id,protocol,role,vehicle_id\n013800138001,jt808,wired,VH-1\n013800138002,jt808,wireless,\n",
    );
    let config = format!(
        "[jt808]\nmax_unassigned_devices = 2\n[registry]\nimport = \"{}\"\n",
        registry.display()
    );
    let server = start(Some(&config));
    assert_eq!(server.metric("unassigned_devices", &[]), 1.0);
    let mut c = server.connect();
    c.login("013900000001");
    assert_eq!(server.metric("unassigned_devices", &[]), 2.0);

    let refused = |server: &Server| {
        let mut c = server.connect();
        c.send(&register_frame("013900000002", 5, "TEST-1"));
        let reply = c.recv();
        assert_eq!(reply.header.message_id, 0x8100, "{reply:?}");
        // Reply serial 5, result 4 "no such terminal", no auth code.
        assert_eq!(reply.body, vec![0x00, 0x05, 0x04]);
    };
    refused(&server);
    assert_eq!(
        server.metric("registrations_total", &[("result", "over_capacity")]),
        1.0
    );
    assert!(server.stderr().lines().any(|l| l.contains("WARN")
        && l.contains("max_unassigned_devices")
        && l.contains("013900000002")));
    // Devices the store knows still register: the registry's, and the one admitted before.
    let mut c = server.connect();
    c.login("013800138001");
    let mut c = server.connect();
    c.login("013800138002");
    let mut c = server.connect();
    c.login("013900000001");

    // After a restart the cap counts what the store holds.
    let server = server.restart();
    assert_eq!(server.metric("unassigned_devices", &[]), 2.0);
    refused(&server);
}

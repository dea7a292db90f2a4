//! A failing shard worker, black-box: the gateway does not go on half-working. It shuts down as on
//! SIGTERM (answering what the other shards have in flight and flushing the store), exits with a
//! failure for its supervisor to restart it, and after the restart everything acknowledged is there.
//!
//! The failure is injected with `LIENGATE_DEBUG_PANIC_TERMINAL`, a hook that only debug builds (the
//! ones `cargo test` runs) have: a position from that terminal makes its shard worker panic.
mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_panicking_shard_worker_stops_the_gateway_with_a_failure_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // Two vehicles on two shards: placement puts each new vehicle on the shard with the fewest.
    let registry = write_registry(
        dir.path(),
        "terminal_id,protocol,role,vehicle_id\n\
         013800138001,jt808,wired,VH-1\n\
         013800138002,jt808,wired,VH-2\n",
    );
    let config = format!(
        "[pipeline]\nshards = 2\n\n[registry]\nimport = \"{}\"\n",
        registry.display()
    );
    let (healthy, failing) = ("013800138001", "013800138002");
    let mut server = start_with_env(Some(&config), &[("LIENGATE_DEBUG_PANIC_TERMINAL", failing)]);
    let base = now_s() - 600;

    let mut a = server.connect();
    a.login(healthy);
    let stored = Pos::at(base, 22.5, 114.0);
    assert_eq!(
        a.request(&location_frame(healthy, 10, stored), 10, 0x0200),
        0
    );
    let (status, _) = server.get_json("/healthz");
    assert_eq!(status, 200);

    let mut b = server.connect();
    b.login(failing);
    b.send(&location_frame(failing, 10, Pos::at(base, 23.0, 113.0)));
    // Its frame is never acknowledged: the shard that had to store it is gone. The device is told
    // so (0x8001 "failure") or its connection just closes; either way it sends the frame again.
    if let Some(reply) = b.try_recv(Duration::from_secs(5)) {
        let (serial, id, result) = reply.general();
        assert_eq!((serial, id), (10, 0x0200));
        assert_ne!(result, 0, "a frame of the failing shard was acknowledged");
    }

    let status = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "exit status {status:?}");
    let log = server.stderr();
    assert!(log.contains("stopped unexpectedly"), "stderr:\n{log}");
    assert!(log.contains("a shard worker panicked"), "stderr:\n{log}");
    // The healthy device's connection was closed by the shutdown, not left hanging.
    assert!(a.closed_within(Duration::from_secs(5)));

    // Restarted without the hook: the acknowledged position is the vehicle's last known one.
    let server = server.restart();
    let (status, v) = server.get_json("/v1/vehicles/VH-1/location");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["terminal_id"], healthy);
    assert!((v["latitude"].as_f64().unwrap() - 22.5).abs() < 1e-6, "{v}");
    // And the other vehicle's devices are served again.
    let mut b = server.connect();
    b.login(failing);
    let p = Pos::at(base + 1, 23.0, 113.0);
    assert_eq!(b.request(&location_frame(failing, 11, p), 11, 0x0200), 0);
}

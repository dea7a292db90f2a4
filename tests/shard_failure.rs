//! A failing shard worker, black-box: the gateway does not go on half-working. It shuts down as on
//! SIGTERM (answering what the other shards have in flight and flushing the store), exits with a
//! failure for its supervisor to restart it, and after the restart everything acknowledged is there.
//!
//! The failure is injected with `LIENGATE_DEBUG_PANIC_TERMINAL=<stage>:<terminal>`, a hook that
//! only debug builds (the ones `cargo test` runs) have: a position from that terminal makes its
//! shard worker panic as it builds the batch (`build`), or the worker's commit stage once the batch
//! is durable (`finish`).
#![cfg(debug_assertions)]
mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_shard_worker_panicking_as_it_builds_a_batch_stops_the_gateway_with_a_failure() {
    panic_stops_the_gateway_with_a_failure_and_loses_nothing_acknowledged("build");
}

/// The worker hears of its commit stage's panic at once, not at its next batch, which a quiet
/// shard would never build: here no further frame comes.
#[test]
fn a_shard_commit_stage_panicking_after_a_commit_stops_the_gateway_with_a_failure() {
    panic_stops_the_gateway_with_a_failure_and_loses_nothing_acknowledged("finish");
}

fn panic_stops_the_gateway_with_a_failure_and_loses_nothing_acknowledged(stage: &str) {
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
    let hook = format!("{stage}:{failing}");
    let mut server = start_with_env(Some(&config), &[("LIENGATE_DEBUG_PANIC_TERMINAL", &hook)]);
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

    // The shutdown closes the healthy device's connection (it does not hang), then the process
    // exits with a failure, not a crash.
    assert!(
        a.closed_within(Duration::from_secs(30)),
        "the healthy connection stayed open"
    );
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "exit status {status:?}");
    let log = server.stderr();
    assert!(log.contains("stopped unexpectedly"), "stderr:\n{log}");
    assert!(log.contains("a shard worker panicked"), "stderr:\n{log}");
    assert!(log.contains("answering in-flight frames"), "stderr:\n{log}");

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

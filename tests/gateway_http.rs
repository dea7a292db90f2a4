//! The HTTP API, black-box: health, Prometheus metrics, bearer-token protection and JSON errors.
mod common;

use std::time::Duration;

use common::*;

#[test]
fn location_endpoints_need_the_admin_token() {
    let server = start(None);
    for path in [
        "/v1/vehicles/VH-1/location",
        "/v1/devices/013800000001/location",
    ] {
        for token in [None, Some("wrong-token")] {
            let (status, body) = http_get(server.http, path, token);
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["error"]["code"], "unauthorized");
        }
    }
}

#[test]
fn unknown_ids_are_404_with_a_json_error() {
    let server = start(None);
    let (status, body) = server.get_json("/v1/vehicles/NO-SUCH-CAR/location");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("NO-SUCH-CAR"));
    let (status, body) = server.get_json("/v1/devices/013899999999/location");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = server.get("/v1/nothing");
    assert_eq!(status, 404);
}

#[test]
fn healthz_and_metrics_are_open() {
    let server = start(None);
    let (status, body) = http_get(server.http, "/healthz", None);
    assert_eq!(status, 200);
    assert!(body.contains("ok"));
    // A fresh gateway already reports its counters and queue gauges, at zero.
    let (_, text) = http_get(server.http, "/metrics", None);
    for line in [
        "positions_stored_total 0",
        "connections_refused_total 0",
        "store_queue_depth 0",
    ] {
        assert!(
            text.contains(line),
            "{line:?} missing from /metrics:\n{text}"
        );
    }
    let mut c = server.connect();
    c.login("013800000001");
    let pos = Pos::at(now_s() - 5, 22.5, 114.0);
    assert_eq!(
        c.request(&location_frame("013800000001", 3, pos), 3, 0x0200),
        0
    );
    let (status, text) = http_get(server.http, "/metrics", None);
    assert_eq!(status, 200);
    for name in [
        "connections_open",
        "connections_accepted_total",
        "frames_total{protocol=\"jt808\",message_id=\"0x0200\"}",
        "shard_queue_depth",
        "store_commit_seconds_bucket",
        "store_fsync_seconds_bucket",
        "positions_stored_total",
        "store_queue_depth",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert_eq!(server.metric("connections_open", &[]), 1.0);
    assert_eq!(server.metric("positions_stored_total", &[]), 1.0);
}

#[test]
fn healthz_reports_each_part_and_stays_ok_under_traffic() {
    let server = start(None);
    let (status, body) = http_get(server.http, "/healthz", None);
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"status": "ok", "store": "ok", "shards": "ok"})
    );
    let tid = "013800000002";
    let mut c = server.connect();
    c.login(tid);
    for serial in 3..13u16 {
        let pos = Pos::at(now_s() - 100 + serial as i64, 22.5, 114.0);
        assert_eq!(
            c.request(&location_frame(tid, serial, pos), serial, 0x0200),
            0
        );
    }
    let (status, body) = http_get(server.http, "/healthz", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""status":"ok""#), "{body}");
}

#[test]
fn healthz_answers_503_shutting_down_while_the_gateway_drains() {
    let mut server = start(None);
    let tid = "013800000003";
    // A device that sends but never reads its answers: once the socket buffers are full, the
    // gateway's connection waits on its write and the graceful shutdown waits for it.
    let mut c = Client::connect_with_buffers(server.jt808, 4096);
    c.login(tid);
    let mut burst = Vec::new();
    for i in 0..1000u16 {
        burst.extend_from_slice(&heartbeat_frame(tid, 100 + i));
    }
    let blocked = c.send_until_blocked(256 << 20, || burst.clone());
    assert!(
        blocked,
        "the gateway kept reading 256 MiB without answers being read"
    );
    let (status, body) = http_get(server.http, "/healthz", None);
    assert_eq!(status, 200, "before the signal: {body}");

    let pid = server.pid().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut seen = None;
    server.eventually("/healthz to report the shutdown", || {
        let (status, body) = http_get(server.http, "/healthz", None);
        let draining = status == 503;
        if draining {
            seen = Some(body);
        }
        draining
    });
    let body: serde_json::Value = serde_json::from_str(&seen.unwrap()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status": "shutting_down", "store": "ok", "shards": "ok"})
    );
    // Closing the stuck device lets the drain finish; the process then exits cleanly.
    drop(c);
    let status = server.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

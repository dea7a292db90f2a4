//! The HTTP API, black-box: health, Prometheus metrics, bearer-token protection and JSON errors.
mod common;

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
        "positions_stored_total",
        "store_queue_depth",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert_eq!(server.metric("connections_open", &[]), 1.0);
    assert_eq!(server.metric("positions_stored_total", &[]), 1.0);
}

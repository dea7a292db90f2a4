//! The minimal HTTP API: health, Prometheus metrics and last known locations.
//!
//! `/healthz` probes the parts a position goes through (the shard workers and the store) and
//! answers 200 only when they work; otherwise 503 with the failing part named, and 503
//! "shutting_down" while a graceful shutdown drains the gateway, so that a load balancer or
//! orchestrator stops sending devices here.
//!
//! Location endpoints need `Authorization: Bearer <token>` with the admin token from
//! `LIENGATE_ADMIN_TOKEN`. Errors are JSON: `{"error": {"code": "...", "message": "..."}}`.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::config::StateConfig;
use crate::model::{LastKnown, Motion};
use crate::pipeline::live::LiveView;
use crate::pipeline::tracker::{motion_at, STATUS_ACC};
use crate::pipeline::{device_key, now_ms, ShardProbe, ShardsDown};
use crate::store::Store;
use tokio_util::sync::CancellationToken;

/// What the handlers share.
pub struct ApiState {
    pub store: Store,
    pub live: Arc<LiveView>,
    /// `None` when no token is configured: then every protected request is refused.
    pub admin_token: Option<String>,
    pub metrics: PrometheusHandle,
    pub state: StateConfig,
    /// Watches the shard workers for `/healthz`.
    pub shards: ShardProbe,
    /// The gateway's shutdown signal: once cancelled, `/healthz` reports "shutting_down".
    pub shutdown: CancellationToken,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/vehicles/{vehicle_id}/location", get(vehicle_location))
        .route("/v1/devices/{terminal_id}/location", get(device_location))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .with_state(state)
}

/// A JSON error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "HTTP request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        resp
    }
}

/// How long `/healthz` waits for the store probe. A store that cannot answer a point read in
/// this time is unhealthy for any client, and a health check must answer before its own caller
/// times out (load balancers typically wait 2 to 5 seconds).
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of `/healthz`. Each part is "ok", "failed" or (during shutdown only) "stopped";
/// `errors` says why for every part that is not "ok".
#[derive(Debug, Serialize)]
struct Health {
    /// "ok", "unhealthy" or "shutting_down".
    status: &'static str,
    store: &'static str,
    shards: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    errors: BTreeMap<&'static str, String>,
}

async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    let mut errors = BTreeMap::new();
    let store = match tokio::time::timeout(STORE_PROBE_TIMEOUT, state.store.check()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(err)) => {
            errors.insert("store", err.to_string());
            "failed"
        }
        Err(_) => {
            errors.insert(
                "store",
                format!(
                    "the store did not answer within {} s",
                    STORE_PROBE_TIMEOUT.as_secs()
                ),
            );
            "failed"
        }
    };
    let shutting_down = state.shutdown.is_cancelled();
    let shards = match state.shards.check() {
        Ok(()) => "ok",
        // Expected at the end of a graceful shutdown; only a failure if it happens otherwise.
        Err(ShardsDown::Drained) if shutting_down => "stopped",
        Err(err) => {
            errors.insert("shards", err.to_string());
            "failed"
        }
    };
    let status = if shutting_down {
        "shutting_down"
    } else if errors.is_empty() {
        "ok"
    } else {
        "unhealthy"
    };
    if status != "shutting_down" {
        for (part, error) in &errors {
            tracing::warn!(part, error, "health check failed");
        }
    }
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Health {
        status,
        store,
        shards,
        errors,
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Compares in time independent of where the first difference is, so that response timing does
/// not reveal how much of a guessed token was right. Hand-written because it is four lines and
/// the project has no constant-time crate.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = |msg: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", msg);
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized("missing Authorization: Bearer <token> header"));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("the Authorization header must be \"Bearer <token>\""))?;
    match &state.admin_token {
        Some(token) if same_secret(token.as_bytes(), presented.as_bytes()) => Ok(()),
        _ => Err(unauthorized("invalid token")),
    }
}

/// The JSON shape of a location answer.
#[derive(Debug, Serialize)]
pub struct LocationView {
    pub vehicle_id: Option<String>,
    /// The device the position came from.
    pub terminal_id: String,
    pub latitude: f64,
    pub longitude: f64,
    pub speed_kmh: f32,
    pub course: u16,
    pub altitude_m: i32,
    /// Device time of the fix, RFC 3339 UTC.
    pub time: String,
    /// When the gateway received the fix, RFC 3339 UTC.
    pub received_at: String,
    /// Seconds between the fix's device time and now.
    pub age_s: i64,
    /// "moving" or "parked".
    pub state: &'static str,
    pub parked_since: Option<String>,
    pub online: bool,
    pub offline_since: Option<String>,
    pub last_frame_at: String,
    /// ACC, alarm and status words from the newest report (`signals_at`), which may be newer
    /// than the position: a report without a GNSS fix still carries them.
    pub acc: bool,
    pub alarm: u32,
    pub status: u32,
    /// Device time of the report `acc`, `alarm` and `status` come from.
    pub signals_at: String,
    /// The newest battery level and car voltage any device reported (null when none did).
    pub battery_pct: Option<u8>,
    pub voltage_mv: Option<u32>,
    /// Role of the source device: "wired" or "wireless" (null when the device is not in the registry).
    pub source: Option<&'static str>,
    /// Sanitation flags of the fix (only "blind_area" can appear on a last known position).
    pub flags: Vec<String>,
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn view(
    state: &ApiState,
    lk: &LastKnown,
    vehicle_id: Option<String>,
    last_frame_ms: i64,
) -> Result<LocationView, ApiError> {
    let now = now_ms();
    let fix = &lk.fix;
    let signals = &lk.signals;
    let motion = motion_at(lk, now, &state.state);
    let offline_after = state.state.offline_after.as_millis() as i64;
    let online = now - last_frame_ms < offline_after;
    let source = state
        .store
        .device(&fix.terminal_id)
        .map_err(ApiError::internal)?
        .map(|d| match d.role {
            crate::model::DeviceRole::Wired => "wired",
            crate::model::DeviceRole::Wireless => "wireless",
        });
    Ok(LocationView {
        vehicle_id,
        terminal_id: fix.terminal_id.to_string(),
        latitude: fix.latitude,
        longitude: fix.longitude,
        speed_kmh: fix.speed_kmh,
        course: fix.course,
        altitude_m: fix.altitude_m,
        time: rfc3339(fix.time_ms),
        received_at: rfc3339(fix.received_ms),
        age_s: (now - fix.time_ms).div_euclid(1000),
        state: match motion {
            Motion::Moving => "moving",
            Motion::Parked { .. } => "parked",
        },
        parked_since: match motion {
            Motion::Parked { since_ms } => Some(rfc3339(since_ms)),
            Motion::Moving => None,
        },
        online,
        offline_since: (!online).then(|| rfc3339(last_frame_ms + offline_after)),
        last_frame_at: rfc3339(last_frame_ms),
        acc: signals.status & STATUS_ACC != 0,
        alarm: signals.alarm,
        status: signals.status,
        signals_at: rfc3339(signals.time_ms),
        battery_pct: signals.battery_pct,
        voltage_mv: signals.voltage_mv,
        source,
        flags: fix
            .flags
            .iter_names()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect(),
    })
}

async fn vehicle_location(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(vehicle_id): Path<String>,
) -> Result<Json<LocationView>, ApiError> {
    authorize(&state, &headers)?;
    let Some(lk) = state.live.vehicles.get(&vehicle_id) else {
        let known = state
            .store
            .vehicle(&vehicle_id)
            .map_err(ApiError::internal)?
            .is_some();
        return Err(if known {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_location",
                format!("vehicle {vehicle_id:?} has no valid position yet"),
            )
        } else {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown vehicle {vehicle_id:?}"),
            )
        });
    };
    let last_frame = state
        .live
        .vehicle_activity
        .get(&vehicle_id)
        .map(|a| a.get())
        .unwrap_or(lk.last_frame_ms)
        .max(lk.last_frame_ms);
    Ok(Json(view(&state, &lk, Some(vehicle_id), last_frame)?))
}

async fn device_location(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(terminal_id): Path<String>,
) -> Result<Json<LocationView>, ApiError> {
    authorize(&state, &headers)?;
    let device = state
        .store
        .device(&terminal_id)
        .map_err(ApiError::internal)?;
    let Some(lk) = state.live.devices.get(&terminal_id) else {
        return Err(if device.is_some() {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_location",
                format!("device {terminal_id:?} has no valid position yet"),
            )
        } else {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown device {terminal_id:?}"),
            )
        });
    };
    let last_frame = state
        .live
        .device_activity
        .get(&terminal_id)
        .map(|a| a.get())
        .unwrap_or(lk.last_frame_ms)
        .max(lk.last_frame_ms);
    let vehicle_id = device.and_then(|d| d.vehicle_id);
    debug_assert!(*lk.vehicle_id == *device_key(&terminal_id));
    Ok(Json(view(&state, &lk, vehicle_id, last_frame)?))
}

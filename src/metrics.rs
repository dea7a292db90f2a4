//! Metric names and the Prometheus recorder.
//!
//! Every counter the gateway bumps is named here once so that the names in code, in `/metrics` and
//! in the documentation are the same strings.
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open device connections (gauge).
pub const CONNECTIONS_OPEN: &str = "connections_open";
/// Accepted device connections since start.
pub const CONNECTIONS_ACCEPTED: &str = "connections_accepted_total";
/// Connections refused at accept because `jt808.max_connections` was reached.
pub const CONNECTIONS_REFUSED: &str = "connections_refused_total";
/// Connections closed, by `reason` (eof, idle, replaced, hostile, auth_failed,
/// registration_deferred, shutdown, io_error).
pub const CONNECTIONS_CLOSED: &str = "connections_closed_total";
/// Frames decoded, by `protocol` and `message_id` (hex, e.g. "0x0200").
pub const FRAMES: &str = "frames_total";
/// Frames rejected, by `protocol` and `kind` (the codec error kind, plus "unauthenticated").
pub const FRAMES_REJECTED: &str = "frames_rejected_total";
/// Frames whose wrong check code was accepted because the device model is configured to skip it.
pub const FRAMES_CHECKSUM_SKIPPED: &str = "frames_checksum_skipped_total";
/// Duplicate location frames answered again but not processed again.
pub const FRAMES_DUPLICATE: &str = "frames_duplicate_total";
/// Authentication results, by `result` (ok, wrong_code, locked_out, unknown).
pub const AUTH: &str = "auth_total";
/// Registrations, by `result`: ok; rejected (by the unknown-device policy); rate_limited (over
/// `jt808.new_device_rate`, connection closed unanswered); over_capacity
/// (`jt808.max_unassigned_devices` reached, answered "no such terminal").
pub const REGISTRATIONS: &str = "registrations_total";
/// Unassigned (self-registered) devices in the store, against `jt808.max_unassigned_devices`
/// (gauge).
pub const UNASSIGNED_DEVICES: &str = "unassigned_devices";
/// Fixes written to the track (counted by the store when the commit succeeds).
pub const POSITIONS_STORED: &str = "positions_stored_total";
/// Fixes flagged by sanitation, by `flag` (no_gnss, zero_coord, ...).
pub const POSITIONS_FLAGGED: &str = "positions_flagged_total";
/// Messages waiting in a shard queue, by `shard` (gauge).
pub const SHARD_QUEUE_DEPTH: &str = "shard_queue_depth";
/// Frames whose connection had to wait (and stopped reading) because their shard queue was full.
pub const SHARD_QUEUE_FULL: &str = "shard_queue_full_total";
/// Seconds per store group commit (histogram; recorded by the store).
pub const STORE_COMMIT_SECONDS: &str = "store_commit_seconds";
/// Seconds per disk sync of the store's journal (histogram; recorded by the syncer): the disk's
/// part of `store_commit_seconds`, the rest being the wait for the syncer thread and the write.
pub const STORE_FSYNC_SECONDS: &str = "store_fsync_seconds";
/// Writes per store group commit (histogram; recorded by the store): how well commits group.
pub const STORE_COMMIT_BATCH_SIZE: &str = "store_commit_batch_size";
/// Failed store commits (recorded by the store).
pub const STORE_COMMIT_ERRORS: &str = "store_commit_errors_total";
/// Commit requests waiting for the store's committer thread (gauge; recorded by the store).
pub const STORE_QUEUE_DEPTH: &str = "store_queue_depth";
/// Track points deleted by retention (recorded by the store).
pub const STORE_RETENTION_DELETED: &str = "store_retention_deleted_total";
/// Retention passes completed (at start, then hourly; recorded by the store): tells an operator,
/// or a test, that the points older than `store.retention_days` at that time are gone.
pub const STORE_RETENTION_RUNS: &str = "store_retention_runs_total";
/// Folds of the track log into per-vehicle chunks (recorded by the store).
pub const STORE_TRACK_FOLDS: &str = "store_track_folds_total";
/// Folds that failed, or were refused because one failed before (recorded by the store): their
/// positions stay in the log, read from there and folded at the next start.
pub const STORE_TRACK_FOLD_ERRORS: &str = "store_track_fold_errors_total";
/// Positions in the track log not yet folded into chunks (gauge; recorded by the store).
pub const STORE_TRACK_LOG_POINTS: &str = "store_track_log_points";
/// Seconds a shard waits for `Store::commit` of one batch, queueing included (histogram).
pub const SHARD_COMMIT_SECONDS: &str = "shard_commit_seconds";
/// Writes per shard batch, each track point counted as one (histogram).
pub const SHARD_BATCH_WRITES: &str = "shard_batch_writes";
/// Times a connection stopped reading because `jt808.max_inflight` of its frames were waiting for
/// their answers (the store or a shard is slower than the device sends).
pub const CONNECTION_INFLIGHT_FULL: &str = "connection_inflight_full_total";
/// Times a connection with data to read waited for its turn because its shard had fallen behind
/// (four times `pipeline.admission_limit` frames in flight; see `gateway::admission`).
pub const ADMISSION_WAITS: &str = "connection_admission_waits_total";
/// Turns that ended after `gateway::admission::MAX_WAIT` rather than with a turn.
pub const ADMISSION_WAIT_TIMEOUTS: &str = "connection_admission_wait_timeouts_total";
/// Streak slots in use per shard (`pipeline.admission_limit` and more while the CPU has time to
/// spare with devices waiting; see `gateway::admission`).
pub const ADMISSION_SLOTS: &str = "connection_admission_slots";
/// Reads of one streak per shard now (`pipeline.admission_streak`, fewer while the queue of
/// waiting devices is too long for streaks that long; see `gateway::admission`).
pub const ADMISSION_STREAK: &str = "connection_admission_streak";
/// Sub-package resend requests (0x8003) sent.
pub const RESEND_REQUESTS: &str = "subpackage_resend_requests_total";

/// Installs the global recorder and returns the handle `/metrics` renders from.
///
/// Histograms get explicit buckets so that Prometheus can aggregate them across instances.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(STORE_COMMIT_SECONDS.to_string()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(STORE_FSYNC_SECONDS.to_string()),
            &[
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(SHARD_COMMIT_SECONDS.to_string()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(STORE_COMMIT_BATCH_SIZE.to_string()),
            &[1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(SHARD_BATCH_WRITES.to_string()),
            &[1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0],
        )?
        .install_recorder()?;
    describe();
    zero();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(CONNECTIONS_OPEN, "Open device connections.");
    describe_counter!(CONNECTIONS_ACCEPTED, "Device connections accepted.");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Device connections refused because jt808.max_connections was reached."
    );
    describe_counter!(CONNECTIONS_CLOSED, "Device connections closed, by reason.");
    describe_counter!(FRAMES, "Frames decoded, by protocol and message id.");
    describe_counter!(
        FRAMES_REJECTED,
        "Frames rejected, by protocol and error kind."
    );
    describe_counter!(
        FRAMES_CHECKSUM_SKIPPED,
        "Frames with a wrong check code accepted because the model is configured to skip it."
    );
    describe_counter!(
        FRAMES_DUPLICATE,
        "Duplicate frames answered but not processed again."
    );
    describe_counter!(AUTH, "Terminal authentications, by result.");
    describe_counter!(REGISTRATIONS, "Terminal registrations, by result.");
    describe_gauge!(
        UNASSIGNED_DEVICES,
        "Unassigned (self-registered) devices in the store; jt808.max_unassigned_devices caps them."
    );
    describe_counter!(POSITIONS_STORED, "Fixes written to the track.");
    describe_counter!(POSITIONS_FLAGGED, "Fixes flagged by sanitation, by flag.");
    describe_gauge!(SHARD_QUEUE_DEPTH, "Messages waiting in each shard queue.");
    describe_counter!(
        SHARD_QUEUE_FULL,
        "Frames whose connection stopped reading until their shard queue had room."
    );
    describe_histogram!(
        STORE_COMMIT_SECONDS,
        Unit::Seconds,
        "Store group-commit latency."
    );
    describe_histogram!(
        STORE_FSYNC_SECONDS,
        Unit::Seconds,
        "Disk sync of the store journal (fsync durability)."
    );
    describe_histogram!(STORE_COMMIT_BATCH_SIZE, "Writes per store group commit.");
    describe_counter!(STORE_COMMIT_ERRORS, "Failed store commits.");
    describe_gauge!(
        STORE_QUEUE_DEPTH,
        "Commit requests waiting for the store's committer thread."
    );
    describe_counter!(
        STORE_RETENTION_DELETED,
        "Track points deleted because they were older than store.retention_days."
    );
    describe_counter!(
        STORE_RETENTION_RUNS,
        "Retention passes completed (at start, then hourly)."
    );
    describe_counter!(
        STORE_TRACK_FOLDS,
        "Folds of the track log into per-vehicle chunks."
    );
    describe_counter!(
        STORE_TRACK_FOLD_ERRORS,
        "Folds of the track log that failed or were refused after a failure (positions stay in the log)."
    );
    describe_gauge!(
        STORE_TRACK_LOG_POINTS,
        "Positions in the track log not yet folded into chunks."
    );
    describe_histogram!(
        SHARD_COMMIT_SECONDS,
        Unit::Seconds,
        "Time a shard waits for the commit of one batch."
    );
    describe_histogram!(SHARD_BATCH_WRITES, "Writes per shard batch.");
    describe_counter!(
        CONNECTION_INFLIGHT_FULL,
        "Times a connection stopped reading because jt808.max_inflight frames awaited their answers."
    );
    describe_counter!(
        ADMISSION_WAITS,
        "Times a connection waited for its turn to read because its shard had fallen behind (4 x pipeline.admission_limit frames in flight)."
    );
    describe_counter!(
        ADMISSION_WAIT_TIMEOUTS,
        "Waits for a turn to read that ended after the longest wait rather than with a turn."
    );
    describe_gauge!(
        ADMISSION_SLOTS,
        "Streak slots in use per shard while devices wait for their turn to read."
    );
    describe_gauge!(
        ADMISSION_STREAK,
        "Reads of one streak per shard: pipeline.admission_streak, fewer while a long queue waits."
    );
    describe_counter!(
        RESEND_REQUESTS,
        "Sub-package resend requests (0x8003) sent."
    );
}

/// Reports the unlabelled counters and gauges at zero from the start, so that a freshly started
/// gateway already shows them in `/metrics` and dashboards and alerts see 0 rather than no data.
fn zero() {
    for name in [
        CONNECTIONS_ACCEPTED,
        CONNECTIONS_REFUSED,
        FRAMES_CHECKSUM_SKIPPED,
        FRAMES_DUPLICATE,
        POSITIONS_STORED,
        STORE_COMMIT_ERRORS,
        STORE_RETENTION_DELETED,
        STORE_RETENTION_RUNS,
        STORE_TRACK_FOLDS,
        STORE_TRACK_FOLD_ERRORS,
        RESEND_REQUESTS,
        SHARD_QUEUE_FULL,
        CONNECTION_INFLIGHT_FULL,
        ADMISSION_WAITS,
        ADMISSION_WAIT_TIMEOUTS,
    ] {
        metrics::counter!(name).absolute(0);
    }
    for name in [
        CONNECTIONS_OPEN,
        STORE_QUEUE_DEPTH,
        STORE_TRACK_LOG_POINTS,
        UNASSIGNED_DEVICES,
    ] {
        metrics::gauge!(name).set(0.0);
    }
}

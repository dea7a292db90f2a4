//! Counters and latency histograms shared by all simulated terminals of one run.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Why a terminal counted an error. `is_wrong_answer` separates answers that break the protocol
/// (the run fails) from transport trouble (refused connections, timeouts) that load can cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// TCP connect failed or timed out.
    Connect,
    /// The server closed the connection (or it broke) while the terminal was running.
    Disconnected,
    /// A message got no answer within the answer timeout.
    Timeout,
    /// Messages still unanswered when the run ended and the drain grace period was over.
    UnansweredAtEnd,
    /// Registration and authentication did not finish within the registration timeout.
    RegistrationTimeout,
    /// A frame from the server failed to decode (bad check code, escape, length, ...).
    BadFrame,
    /// An answer for a serial that is not waiting for one (wrong or duplicate reply serial).
    WrongReplySerial,
    /// An answer whose reply message id differs from the id sent with that serial.
    WrongReplyId,
    /// An answer whose result is not 0 (success).
    ResultNotOk,
    /// 0x8100 with a non-zero result or without an authentication code.
    RegisterRejected,
    /// An answer addressed to another terminal id, or in another header version.
    WrongHeader,
    /// An answer of a kind the terminal did not ask for (e.g. 0x8100 after registration).
    UnexpectedMessage,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::Timeout => "timeout",
            ErrorKind::UnansweredAtEnd => "unanswered_at_end",
            ErrorKind::RegistrationTimeout => "registration_timeout",
            ErrorKind::BadFrame => "bad_frame",
            ErrorKind::WrongReplySerial => "wrong_reply_serial",
            ErrorKind::WrongReplyId => "wrong_reply_id",
            ErrorKind::ResultNotOk => "result_not_ok",
            ErrorKind::RegisterRejected => "register_rejected",
            ErrorKind::WrongHeader => "wrong_header",
            ErrorKind::UnexpectedMessage => "unexpected_message",
        }
    }

    /// True when the server answered, but not as JT/T 808 requires.
    pub fn is_wrong_answer(self) -> bool {
        matches!(
            self,
            ErrorKind::BadFrame
                | ErrorKind::WrongReplySerial
                | ErrorKind::WrongReplyId
                | ErrorKind::ResultNotOk
                | ErrorKind::RegisterRejected
                | ErrorKind::WrongHeader
                | ErrorKind::UnexpectedMessage
        )
    }
}

/// Latencies are recorded in microseconds up to one minute (longer ones saturate).
const LATENCY_MAX_US: u64 = 60_000_000;
/// Histogram shards, so that thousands of terminals on a few threads rarely wait for a lock.
const SHARDS: usize = 16;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

/// A latency histogram split into a few locked shards.
pub struct LatencyRecorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl LatencyRecorder {
    pub fn new() -> Self {
        LatencyRecorder {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        }
    }

    /// Records one latency; `key` (the terminal index) picks the shard.
    pub fn record(&self, key: usize, latency: Duration) {
        let us = (latency.as_micros() as u64).max(1);
        let mut shard = self.shards[key % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.saturating_record(us);
    }

    /// Records a value that is not a latency (e.g. a count per terminal); `key` picks the shard.
    pub fn record_value(&self, key: usize, value: u64) {
        let mut shard = self.shards[key % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        shard.saturating_record(value);
    }

    /// Merges the shards into one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            all.add(&*shard).expect("same bounds");
        }
        all
    }
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Everything the terminals of one run count.
#[derive(Default)]
pub struct Stats {
    /// TCP connections established (reconnects included).
    pub connects: AtomicU64,
    /// Authenticated connections open right now.
    pub open: AtomicU64,
    /// Terminals that finished register + authenticate (first time only).
    pub registered: AtomicU64,
    /// Terminals that gave up registering (counted once per terminal).
    pub registration_failed: AtomicU64,
    /// Location messages sent (0x0200 and 0x0704).
    pub reports_sent: AtomicU64,
    /// Positions inside the location messages sent.
    pub positions_sent: AtomicU64,
    /// Positions whose message was answered with success.
    pub positions_acked: AtomicU64,
    /// Heartbeats answered with success.
    pub heartbeats_acked: AtomicU64,
    /// Fixed-rate ticks skipped because the terminal already waited for `max_in_flight` answers.
    pub deferred: AtomicU64,
    /// Requests from the platform (e.g. 0x8103) answered by a terminal with 0x0001.
    pub platform_requests: AtomicU64,
    errors: Mutex<BTreeMap<ErrorKind, u64>>,
    /// Answer latency of location messages (send to answer).
    pub report_latency: LatencyRecorder,
    /// Time from starting to connect (after waiting for a connect slot) to the authentication
    /// answer, per terminal.
    pub registration_latency: LatencyRecorder,
    /// Positions acknowledged per terminal during the reporting phase, one value per terminal:
    /// how evenly the server served its devices.
    pub acked_per_device: LatencyRecorder,
}

impl Stats {
    pub fn error(&self, kind: ErrorKind) {
        self.errors_n(kind, 1);
    }

    pub fn errors_n(&self, kind: ErrorKind, n: u64) {
        if n == 0 {
            return;
        }
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(kind).or_default() += n;
    }

    pub fn errors(&self) -> BTreeMap<ErrorKind, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn error_total(&self) -> u64 {
        self.errors().values().sum()
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histogram_holds_all_shards() {
        let rec = LatencyRecorder::new();
        for i in 0..100 {
            rec.record(i, Duration::from_millis(i as u64 + 1));
        }
        let h = rec.merged();
        assert_eq!(h.len(), 100);
        assert!(h.max() >= 99_000 && h.max() <= 100_100);
    }

    #[test]
    fn wrong_answers_are_told_apart_from_transport_errors() {
        assert!(ErrorKind::WrongReplySerial.is_wrong_answer());
        assert!(!ErrorKind::Timeout.is_wrong_answer());
        let stats = Stats::default();
        stats.error(ErrorKind::Timeout);
        stats.errors_n(ErrorKind::Timeout, 2);
        assert_eq!(stats.errors()[&ErrorKind::Timeout], 3);
        assert_eq!(stats.error_total(), 3);
    }
}

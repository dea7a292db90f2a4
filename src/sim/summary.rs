//! The end-of-run summary: human-readable text or one JSON line for scripts.
use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::stats::Stats;
use super::{Mode, Run, Timeline};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    fn from(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency {
                count: 0,
                p50_us: 0,
                p90_us: 0,
                p99_us: 0,
                max_us: 0,
                mean_us: 0.0,
            };
        }
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            max_us: h.max(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// What one run measured. Field names are the JSON keys `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub target: String,
    pub devices: usize,
    /// "fixed", "closed_loop" or "idle".
    pub mode: &'static str,
    /// Reports per terminal and second in fixed mode (0 otherwise).
    pub rate: f64,
    pub version: &'static str,
    pub first_id: u64,
    pub registered: u64,
    pub registration_failed: u64,
    /// From the start of the run until every terminal had registered and authenticated
    /// (None when some did not within the registration timeout).
    pub registration_ms: Option<f64>,
    pub started_unix_ms: u64,
    pub registered_unix_ms: Option<u64>,
    pub registration_latency: Latency,
    /// Length of the reporting phase, seconds.
    pub duration_s: f64,
    pub connects: u64,
    pub reports_sent: u64,
    pub positions_sent: u64,
    /// Positions acknowledged (0x8001, result 0) during the reporting phase.
    pub positions_acked: u64,
    /// Including those acknowledged during the drain after the reporting phase.
    pub positions_acked_total: u64,
    /// positions_acked / duration_s.
    pub acked_positions_per_s: f64,
    pub heartbeats_acked: u64,
    pub deferred_ticks: u64,
    pub platform_requests: u64,
    /// Answer latency of location messages (0x0200 and 0x0704).
    pub latency: Latency,
    pub errors: BTreeMap<&'static str, u64>,
    pub error_total: u64,
    /// Errors where the server answered against the protocol (wrong serial, id, result, frame).
    pub wrong_answers: u64,
}

impl Summary {
    pub fn new(run: &Run, timeline: &Timeline, acked_in_window: u64) -> Self {
        let plan = &run.plan;
        let stats = &run.stats;
        let errors = stats.errors();
        let wrong_answers = errors
            .iter()
            .filter(|(kind, _)| kind.is_wrong_answer())
            .map(|(_, n)| n)
            .sum();
        let duration_s = timeline
            .reporting_ended
            .duration_since(timeline.reporting_started)
            .as_secs_f64();
        let (mode, rate) = match plan.mode {
            Mode::ClosedLoop => ("closed_loop", 0.0),
            Mode::FixedRate { per_second } if per_second > 0.0 => ("fixed", per_second),
            Mode::FixedRate { .. } => ("idle", 0.0),
        };
        Summary {
            target: plan.target.to_string(),
            devices: plan.devices,
            mode,
            rate,
            version: match plan.version {
                liengate_protocols::jt808::Version::V2011 => "2011",
                liengate_protocols::jt808::Version::V2013 => "2013",
                liengate_protocols::jt808::Version::V2019 => "2019",
            },
            first_id: plan.first_id,
            registered: Stats::get(&stats.registered),
            registration_failed: Stats::get(&stats.registration_failed),
            registration_ms: timeline
                .registered
                .filter(|_| Stats::get(&stats.registration_failed) == 0)
                .map(|at| {
                    (at.duration_since(timeline.started).as_secs_f64() * 10_000.0).round() / 10.0
                }),
            started_unix_ms: timeline.started_unix_ms,
            registered_unix_ms: timeline.registered_unix_ms,
            registration_latency: Latency::from(&stats.registration_latency.merged()),
            duration_s: (duration_s * 1000.0).round() / 1000.0,
            connects: Stats::get(&stats.connects),
            reports_sent: Stats::get(&stats.reports_sent),
            positions_sent: Stats::get(&stats.positions_sent),
            positions_acked: acked_in_window,
            positions_acked_total: Stats::get(&stats.positions_acked),
            acked_positions_per_s: if duration_s > 0.0 {
                (acked_in_window as f64 / duration_s * 10.0).round() / 10.0
            } else {
                0.0
            },
            heartbeats_acked: Stats::get(&stats.heartbeats_acked),
            deferred_ticks: Stats::get(&stats.deferred),
            platform_requests: Stats::get(&stats.platform_requests),
            latency: Latency::from(&stats.report_latency.merged()),
            error_total: errors.values().sum(),
            errors: errors.into_iter().map(|(k, v)| (k.as_str(), v)).collect(),
            wrong_answers,
        }
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = if self.mode == "fixed" {
            format!(" at {}/s per device", self.rate)
        } else {
            String::new()
        };
        writeln!(
            f,
            "sim: {} JT808 {} devices -> {}, {}{}, {:.1} s",
            self.devices, self.version, self.target, self.mode, rate, self.duration_s
        )?;
        match self.registration_ms {
            Some(ms) => writeln!(
                f,
                "  registration  all {} registered+authenticated in {:.1} ms",
                self.registered, ms
            )?,
            None => writeln!(
                f,
                "  registration  {} of {} registered ({} failed), not all in time",
                self.registered, self.devices, self.registration_failed
            )?,
        }
        let r = &self.registration_latency;
        writeln!(
            f,
            "                per device p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.max_us)
        )?;
        writeln!(
            f,
            "  throughput    {:.1} acknowledged positions/s ({} acked of {} sent in {} messages, {} after the window)",
            self.acked_positions_per_s,
            self.positions_acked,
            self.positions_sent,
            self.reports_sent,
            self.positions_acked_total - self.positions_acked
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "  latency       p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} answers)",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.count
        )?;
        writeln!(
            f,
            "  other         {} heartbeats acked, {} connects, {} deferred ticks, {} platform requests",
            self.heartbeats_acked, self.connects, self.deferred_ticks, self.platform_requests
        )?;
        if self.errors.is_empty() {
            write!(f, "  errors        none")
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(
                f,
                "  errors        {} ({} wrong answers): {}",
                self.error_total,
                self.wrong_answers,
                list.join(", ")
            )
        }
    }
}

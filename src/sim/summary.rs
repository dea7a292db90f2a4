//! The end-of-run summary: human-readable text or one JSON line for scripts.
use std::collections::BTreeMap;
use std::fmt;

use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::stats::Stats;
use super::{Mode, Run, Timeline};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

/// How evenly the server served its devices: positions acknowledged per device during the
/// reporting phase. A closed loop lets a server that favours some connections (e.g. the ones it
/// served last, whose state is still in the cache) show a higher total than one that serves all
/// devices in turn; these figures make that visible next to the throughput.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PerDevice {
    pub devices: u64,
    pub min: u64,
    pub p10: u64,
    pub p50: u64,
    pub p90: u64,
    pub max: u64,
    /// Share of all acknowledged positions that went to the busiest tenth of the devices
    /// (0.1 when every device was served equally).
    pub top_tenth_share: f64,
}

impl PerDevice {
    fn from(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return PerDevice::default();
        }
        let values: Vec<(u64, u64)> = h
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let total: u64 = values.iter().map(|(value, count)| value * count).sum();
        // Walk down from the busiest devices until a tenth of them is counted.
        let tenth = h.len().div_ceil(10);
        let (mut taken, mut top) = (0u64, 0u64);
        for &(value, count) in values.iter().rev() {
            let n = count.min(tenth - taken);
            top += value * n;
            taken += n;
            if taken == tenth {
                break;
            }
        }
        PerDevice {
            devices: h.len(),
            min: h.min(),
            p10: h.value_at_quantile(0.10),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            max: h.max(),
            top_tenth_share: if total > 0 {
                rounded(top as f64 / total as f64, 3)
            } else {
                0.0
            },
        }
    }
}

/// What one run measured. Field names are the JSON keys `--json` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub target: String,
    /// Simulator processes merged into this summary (1 for a single run).
    #[serde(default = "one")]
    pub processes: u32,
    pub devices: usize,
    /// "fixed", "closed_loop" or "idle".
    pub mode: String,
    /// Reports per terminal and second in fixed mode (0 otherwise).
    pub rate: f64,
    pub version: String,
    pub first_id: u64,
    pub registered: u64,
    pub registration_failed: u64,
    /// From the start of the run until every terminal had registered and authenticated
    /// (None when some did not within the registration timeout).
    pub registration_ms: Option<f64>,
    pub started_unix_ms: u64,
    pub registered_unix_ms: Option<u64>,
    pub registration_latency: Latency,
    /// How long the terminals reported, seconds (a paused run's pauses not counted).
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
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    /// Errors where the server answered against the protocol (wrong serial, id, result, frame).
    pub wrong_answers: u64,
    /// CPU time (user + system) of the simulator process(es) during the reporting phase,
    /// seconds; None where the platform does not tell (or a merged part did not).
    #[serde(default)]
    pub reporting_cpu_s: Option<f64>,
    /// The latency histograms, HdrHistogram V2 + deflate, hex: lets `--merge` combine the
    /// summaries of several simulator processes exactly.
    pub latency_hist: String,
    pub registration_latency_hist: String,
    /// Positions acknowledged per device (absent in summaries of older versions).
    #[serde(default)]
    pub per_device: PerDevice,
    #[serde(default)]
    pub per_device_hist: String,
}

fn one() -> u32 {
    1
}

fn histogram_hex(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut bytes) {
        Ok(_) => hex::encode(bytes),
        Err(_) => String::new(),
    }
}

/// Errors when merging summaries.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("no summaries to merge")]
    Empty,
    #[error("summary {index}: histogram does not decode: {detail}")]
    Histogram { index: usize, detail: String },
}

fn histogram_from_hex(text: &str, index: usize) -> Result<Histogram<u64>, MergeError> {
    let bytes = hex::decode(text).map_err(|e| MergeError::Histogram {
        index,
        detail: e.to_string(),
    })?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| MergeError::Histogram {
            index,
            detail: format!("{e:?}"),
        })
}

/// Adds the histogram in `hex` (from summary `index`) to `into`.
fn add_hex(into: &mut Histogram<u64>, hex: &str, index: usize) -> Result<(), MergeError> {
    into.add(histogram_from_hex(hex, index)?)
        .map_err(|e| MergeError::Histogram {
            index,
            detail: format!("{e:?}"),
        })
}

fn rounded(value: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (value * f).round() / f
}

/// Combines the summaries of simulator processes that ran at the same time against the same
/// server: counts and rates add up, histograms merge exactly, and the registration time runs
/// from the earliest start to the latest "all registered".
pub fn merge(parts: &[Summary]) -> Result<Summary, MergeError> {
    let first = parts.first().ok_or(MergeError::Empty)?;
    let mut latency = Histogram::<u64>::new(3).expect("valid precision");
    let mut registration = Histogram::<u64>::new(3).expect("valid precision");
    let mut per_device = Histogram::<u64>::new(3).expect("valid precision");
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for (index, part) in parts.iter().enumerate() {
        add_hex(&mut latency, &part.latency_hist, index)?;
        add_hex(&mut registration, &part.registration_latency_hist, index)?;
        if !part.per_device_hist.is_empty() {
            add_hex(&mut per_device, &part.per_device_hist, index)?;
        }
        for (kind, n) in &part.errors {
            *errors.entry(kind.clone()).or_default() += n;
        }
    }
    let sum = |f: fn(&Summary) -> u64| parts.iter().map(f).sum::<u64>();
    let started_unix_ms = parts.iter().map(|p| p.started_unix_ms).min().unwrap_or(0);
    let registered_unix_ms = parts
        .iter()
        .map(|p| p.registered_unix_ms)
        .collect::<Option<Vec<u64>>>()
        .and_then(|all| all.into_iter().max());
    let all_registered = parts.iter().all(|p| p.registration_ms.is_some());
    Ok(Summary {
        target: first.target.clone(),
        processes: parts.iter().map(|p| p.processes).sum(),
        devices: parts.iter().map(|p| p.devices).sum(),
        mode: first.mode.clone(),
        rate: first.rate,
        version: first.version.clone(),
        first_id: parts.iter().map(|p| p.first_id).min().unwrap_or(0),
        registered: sum(|p| p.registered),
        registration_failed: sum(|p| p.registration_failed),
        registration_ms: registered_unix_ms
            .filter(|_| all_registered)
            .map(|end| end.saturating_sub(started_unix_ms) as f64),
        started_unix_ms,
        registered_unix_ms,
        registration_latency: Latency::from(&registration),
        duration_s: parts.iter().map(|p| p.duration_s).fold(0.0, f64::max),
        connects: sum(|p| p.connects),
        reports_sent: sum(|p| p.reports_sent),
        positions_sent: sum(|p| p.positions_sent),
        positions_acked: sum(|p| p.positions_acked),
        positions_acked_total: sum(|p| p.positions_acked_total),
        acked_positions_per_s: rounded(parts.iter().map(|p| p.acked_positions_per_s).sum(), 1),
        heartbeats_acked: sum(|p| p.heartbeats_acked),
        deferred_ticks: sum(|p| p.deferred_ticks),
        platform_requests: sum(|p| p.platform_requests),
        latency: Latency::from(&latency),
        error_total: errors.values().sum(),
        wrong_answers: sum(|p| p.wrong_answers),
        reporting_cpu_s: parts
            .iter()
            .map(|p| p.reporting_cpu_s)
            .sum::<Option<f64>>()
            .map(|s| rounded(s, 3)),
        errors,
        latency_hist: histogram_hex(&latency),
        registration_latency_hist: histogram_hex(&registration),
        per_device: PerDevice::from(&per_device),
        per_device_hist: histogram_hex(&per_device),
    })
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
        let duration_s = timeline.reporting_active.as_secs_f64();
        let (mode, rate) = match plan.mode {
            Mode::ClosedLoop => ("closed_loop", 0.0),
            Mode::FixedRate { per_second } if per_second > 0.0 => ("fixed", per_second),
            Mode::FixedRate { .. } => ("idle", 0.0),
        };
        let latency = stats.report_latency.merged();
        let registration = stats.registration_latency.merged();
        let per_device = stats.acked_per_device.merged();
        Summary {
            target: plan.target.to_string(),
            processes: 1,
            devices: plan.devices,
            mode: mode.to_string(),
            rate,
            version: plan.version.as_str().to_string(),
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
            registration_latency: Latency::from(&registration),
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
            latency: Latency::from(&latency),
            error_total: errors.values().sum(),
            errors: errors
                .into_iter()
                .map(|(k, v)| (k.as_str().to_string(), v))
                .collect(),
            wrong_answers,
            reporting_cpu_s: timeline.reporting_cpu_s.map(|s| rounded(s, 3)),
            latency_hist: histogram_hex(&latency),
            registration_latency_hist: histogram_hex(&registration),
            per_device: PerDevice::from(&per_device),
            per_device_hist: histogram_hex(&per_device),
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
        let processes = if self.processes > 1 {
            format!(" ({} processes)", self.processes)
        } else {
            String::new()
        };
        writeln!(
            f,
            "sim: {} JT808 {} devices{} -> {}, {}{}, {:.1} s",
            self.devices, self.version, processes, self.target, self.mode, rate, self.duration_s
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
        let d = &self.per_device;
        if d.devices > 0 {
            writeln!(
                f,
                "  per device    positions acked min {}, p10 {}, p50 {}, p90 {}, max {}; the busiest tenth of the devices had {:.1} % of them",
                d.min,
                d.p10,
                d.p50,
                d.p90,
                d.max,
                d.top_tenth_share * 100.0
            )?;
        }
        if let (Some(cpu), true) = (self.reporting_cpu_s, self.positions_acked > 0) {
            writeln!(
                f,
                "  simulator     {cpu:.2} s of CPU while reporting, {:.2} µs per acknowledged position",
                cpu * 1e6 / self.positions_acked as f64
            )?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn part(first_id: u64, started: u64, registered: u64, latencies_us: &[u64]) -> Summary {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for &l in latencies_us {
            h.record(l).unwrap();
        }
        Summary {
            target: "127.0.0.1:1".into(),
            processes: 1,
            devices: 10,
            mode: "closed_loop".into(),
            rate: 0.0,
            version: "2013".into(),
            first_id,
            registered: 10,
            registration_failed: 0,
            registration_ms: Some((registered - started) as f64),
            started_unix_ms: started,
            registered_unix_ms: Some(registered),
            registration_latency: Latency::from(&h),
            duration_s: 10.0,
            connects: 10,
            reports_sent: 100,
            positions_sent: 120,
            positions_acked: 110,
            positions_acked_total: 120,
            acked_positions_per_s: 11.0,
            heartbeats_acked: 0,
            deferred_ticks: 0,
            platform_requests: 0,
            latency: Latency::from(&h),
            errors: BTreeMap::from([("timeout".to_string(), 2)]),
            error_total: 2,
            wrong_answers: 0,
            reporting_cpu_s: Some(1.5),
            latency_hist: histogram_hex(&h),
            registration_latency_hist: histogram_hex(&h),
            per_device: PerDevice::from(&h),
            per_device_hist: histogram_hex(&h),
        }
    }

    fn counts(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn devices_served_alike_give_the_busiest_tenth_a_tenth() {
        let d = PerDevice::from(&counts(&[50; 20]));
        assert_eq!(d.devices, 20);
        assert_eq!((d.min, d.p50, d.max), (50, 50, 50));
        assert_eq!(d.top_tenth_share, 0.1);
    }

    #[test]
    fn a_server_that_favours_a_few_devices_shows_it() {
        // Two of twenty devices got 900 positions each, the others 10 each.
        let mut values = vec![10; 18];
        values.extend([900, 900]);
        let d = PerDevice::from(&counts(&values));
        assert_eq!((d.min, d.p10, d.p50), (10, 10, 10));
        assert!(d.max >= 899 && d.max <= 901, "{d:?}");
        // 1,800 of 1,980 positions.
        assert!((d.top_tenth_share - 0.909).abs() < 0.002, "{d:?}");
        // No devices, no figures (and no division by zero).
        assert_eq!(PerDevice::from(&counts(&[])), PerDevice::default());
        assert_eq!(PerDevice::from(&counts(&[0, 0])).top_tenth_share, 0.0);
    }

    #[test]
    fn merging_adds_counts_and_merges_histograms_exactly() {
        let a = part(0, 1_000, 1_400, &[100, 200, 300]);
        let b = part(10, 1_050, 1_900, &[5_000]);
        let line = serde_json::to_string(&b).unwrap();
        let b: Summary = serde_json::from_str(&line).unwrap();
        let m = merge(&[a, b]).unwrap();
        assert_eq!(m.processes, 2);
        assert_eq!(m.devices, 20);
        assert_eq!(m.positions_acked, 220);
        assert_eq!(m.acked_positions_per_s, 22.0);
        assert_eq!(m.registration_ms, Some(900.0));
        assert_eq!(m.latency.count, 4);
        assert!(m.latency.max_us >= 4_990 && m.latency.max_us <= 5_010);
        assert!(m.latency.p50_us >= 199 && m.latency.p50_us <= 201);
        assert_eq!(m.errors["timeout"], 4);
        assert_eq!(m.error_total, 4);
        assert_eq!(m.per_device.devices, 4);
        assert_eq!(m.reporting_cpu_s, Some(3.0));
        // A summary without per-device or CPU figures (an older simulator) still merges; the
        // CPU time of the whole is then unknown.
        let mut old = serde_json::to_value(part(20, 1_000, 1_400, &[100])).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("per_device");
        fields.remove("per_device_hist");
        fields.remove("reporting_cpu_s");
        let old: Summary = serde_json::from_value(old).unwrap();
        let merged = merge(&[m, old]).unwrap();
        assert_eq!(merged.per_device.devices, 4);
        assert_eq!(merged.reporting_cpu_s, None);
    }

    #[test]
    fn registration_time_is_unknown_when_a_part_did_not_finish() {
        let a = part(0, 1_000, 1_400, &[100]);
        let mut b = part(10, 1_000, 1_500, &[100]);
        b.registration_ms = None;
        assert_eq!(merge(&[a, b]).unwrap().registration_ms, None);
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    }
}

//! The JT808 terminal simulator and load generator behind `liengate sim`, and the "ceiling"
//! server it is compared with.
//!
//! A run starts N terminals. Each connects (at most `connect_concurrency` at a time), registers
//! (0x0100), authenticates with the code it got (0x0102) and then waits until every terminal
//! has done so or the registration timeout passed: that moment gives the registration time.
//! Then all terminals report at once for the run's duration — at a fixed rate per terminal, in
//! closed loop (next report when the previous one is answered), or idle (heartbeats only) —
//! and check every answer. Finally they wait a short drain time for outstanding answers.
pub mod ceiling;
pub mod frames;
pub mod link;
pub mod route;
pub mod stats;
pub mod summary;
pub mod terminal;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use liengate_protocols::jt808::{TerminalId, Version};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use stats::{ErrorKind, Stats};
pub use summary::Summary;

use frames::Identity;
use terminal::Terminal;

/// How terminals pace their location reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `per_second` reports per terminal and second; 0 = idle (heartbeats only).
    FixedRate { per_second: f64 },
    /// Each terminal sends its next report when the previous one is answered.
    ClosedLoop,
}

/// Everything a run needs to know; built from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub target: SocketAddr,
    pub devices: usize,
    pub mode: Mode,
    pub duration: Duration,
    pub version: Version,
    pub source_ips: Vec<IpAddr>,
    /// Leading digits of every terminal phone number; the terminal number fills the rest.
    pub terminal_prefix: String,
    pub first_id: u64,
    pub heartbeat: Duration,
    pub answer_timeout: Duration,
    pub connect_timeout: Duration,
    pub registration_timeout: Duration,
    /// Time after the run for answers still outstanding.
    pub drain: Duration,
    pub max_in_flight: usize,
    pub connect_concurrency: usize,
    /// On average one coverage gap (ending in a 0x0704 blind-area batch) per this many positions; 0 = never.
    pub blind_area_every: u32,
    pub seed: u64,
    /// Reporting waits for signals: SIGUSR2 resumes it, SIGUSR1 pauses it, and `duration`
    /// counts only the time it ran, and the rate only the positions acknowledged meanwhile.
    pub paused: bool,
}

/// Shared state of a running simulation.
pub struct Run {
    pub plan: Plan,
    pub stats: Stats,
    pub connect_gate: Semaphore,
    /// True while terminals may report: from the start of the reporting phase on, except
    /// while a paused run (`Plan::paused`) is paused.
    pub start: watch::Receiver<bool>,
    pub stop: CancellationToken,
    /// Signalled each time a terminal finished (or gave up) registering.
    pub registration_done: Notify,
    /// Terminals that have not registered and authenticated by then give up.
    pub registration_deadline: Instant,
    /// Unix seconds where device clocks start. Device time runs a few hours behind the wall
    /// clock and advances one report interval per position, so that closed-loop runs (many
    /// reports per second) still send distinct, plausible times that are never in the future.
    pub device_epoch: i64,
}

/// Phase timestamps of a run.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub started: Instant,
    pub started_unix_ms: u64,
    /// When every terminal had registered or given up (None = registration timeout hit).
    pub registered: Option<Instant>,
    pub registered_unix_ms: Option<u64>,
    pub reporting_started: Instant,
    pub reporting_ended: Instant,
    /// How long reporting ran between those two: all of it, unless the run was paused.
    pub reporting_active: Duration,
    /// CPU time (user + system) the simulator process spent between those two, seconds; None
    /// where the platform does not tell.
    pub reporting_cpu_s: Option<f64>,
}

/// CPU time (user + system) this process has used so far, in seconds; None where the platform
/// does not tell. Benchmarks divide the reporting phase's share by the positions acknowledged
/// in it: how much a position costs the simulator depends on the server it talks to
/// (benches/RESULTS.md, session 16).
#[cfg(target_os = "linux")]
fn process_cpu_s() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
}

#[cfg(not(target_os = "linux"))]
fn process_cpu_s() -> Option<f64> {
    None
}

/// A progress snapshot, handed to the caller once a second and once when registration ends.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// True for the one snapshot taken when the registration phase ended.
    pub registration_ended: bool,
    pub elapsed: Duration,
    pub open: u64,
    pub registered: u64,
    pub positions_acked: u64,
    pub errors: u64,
    pub reporting: bool,
    /// A paused run's reporting phase while it is paused.
    pub paused: bool,
}

/// Why a run could not start: its parameters, or the signal handlers a paused run needs.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("terminal prefix {0:?} must be decimal digits")]
    PrefixNotDigits(String),
    #[error("terminal ids {first}..{last} do not fit in {width} digits after prefix {prefix:?}")]
    IdsTooLong {
        prefix: String,
        first: u64,
        last: u64,
        width: usize,
    },
    #[error("--devices must be at least 1")]
    NoDevices,
    #[error("cannot install the pause signal handlers: {0}")]
    Signals(std::io::Error),
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Terminal phone numbers: prefix + zero-padded number, 12 digits (2011/2013) or 20 (2019).
pub fn terminal_digits(plan: &Plan, index: usize) -> Result<String, PlanError> {
    if !plan.terminal_prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PlanError::PrefixNotDigits(plan.terminal_prefix.clone()));
    }
    let total: usize = match plan.version {
        Version::V2019 => 20,
        Version::V2011 | Version::V2013 => 12,
    };
    let width = total.saturating_sub(plan.terminal_prefix.len());
    let last = plan.first_id + plan.devices.saturating_sub(1) as u64;
    if width == 0 || last.to_string().len() > width {
        return Err(PlanError::IdsTooLong {
            prefix: plan.terminal_prefix.clone(),
            first: plan.first_id,
            last,
            width,
        });
    }
    let number = plan.first_id + index as u64;
    Ok(format!(
        "{}{:0width$}",
        plan.terminal_prefix,
        number,
        width = width
    ))
}

fn identity(plan: &Plan, index: usize) -> Result<Identity, PlanError> {
    let digits = terminal_digits(plan, index)?;
    let terminal = TerminalId::parse(&digits, plan.version)
        .map_err(|_| PlanError::PrefixNotDigits(plan.terminal_prefix.clone()))?;
    let number = plan.first_id + index as u64;
    Ok(Identity {
        terminal,
        version: plan.version,
        device_id: format!("S{:06}", number % 1_000_000),
        vin: format!("LSVM0000{:09}", number % 1_000_000_000),
        imei: format!("86{:013}", number % 10_000_000_000_000),
    })
}

/// Runs a whole simulation and returns its summary. `progress` is called about once a second.
pub async fn run(plan: Plan, mut progress: impl FnMut(&Progress)) -> Result<Summary, PlanError> {
    if plan.devices == 0 {
        return Err(PlanError::NoDevices);
    }
    let identities = (0..plan.devices)
        .map(|i| identity(&plan, i))
        .collect::<Result<Vec<_>, _>>()?;
    // Installed before any terminal registers: a benchmark signals once registration ended,
    // and a signal without a handler would end the process.
    let pause_signals = if plan.paused {
        Some(PauseSignals::install()?)
    } else {
        None
    };
    let (start_tx, start_rx) = watch::channel(false);
    let device_epoch = (unix_ms() / 1000) as i64 - 6 * 3600;
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let run = Arc::new(Run {
        registration_deadline: started + plan.registration_timeout,
        connect_gate: Semaphore::new(plan.connect_concurrency.max(1)),
        plan,
        stats: Stats::default(),
        start: start_rx,
        stop: CancellationToken::new(),
        registration_done: Notify::new(),
        device_epoch,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (index, ident) in identities.into_iter().enumerate() {
        let terminal = Terminal::new(index, ident, &run);
        tasks.spawn(terminal.run(run.clone()));
    }

    let snapshot = |run: &Run, reporting: bool| Progress {
        registration_ended: false,
        elapsed: started.elapsed(),
        open: Stats::get(&run.stats.open),
        registered: Stats::get(&run.stats.registered),
        positions_acked: Stats::get(&run.stats.positions_acked),
        errors: run.stats.error_total(),
        reporting,
        paused: false,
    };

    // Registration phase: wait until every terminal registered or gave up (each gives up at the
    // registration deadline; a little slack lets the last ones report that).
    let registration_deadline = run.registration_deadline + Duration::from_secs(1);
    let mut next_progress = started + Duration::from_secs(1);
    let mut registered_at = None;
    loop {
        let done = Stats::get(&run.stats.registered) + Stats::get(&run.stats.registration_failed);
        if done >= run.plan.devices as u64 {
            registered_at = Some(Instant::now());
            break;
        }
        if Instant::now() >= registration_deadline {
            break;
        }
        tokio::select! {
            _ = run.registration_done.notified() => {}
            _ = tokio::time::sleep_until(next_progress.min(registration_deadline)) => {
                if Instant::now() >= next_progress {
                    progress(&snapshot(&run, false));
                    next_progress += Duration::from_secs(1);
                }
            }
        }
    }
    let registered_unix_ms = registered_at.map(|_| unix_ms());

    progress(&Progress {
        registration_ended: true,
        ..snapshot(&run, false)
    });

    // Reporting phase.
    let reporting_started = Instant::now();
    let cpu_at_start = process_cpu_s();
    let paused_run = match pause_signals {
        Some(signals) => Some(
            report_when_resumed(&run, &start_tx, signals, |reporting| {
                progress(&Progress {
                    paused: !reporting,
                    ..snapshot(&run, reporting)
                })
            })
            .await,
        ),
        None => {
            let _ = start_tx.send(true);
            let end = reporting_started + run.plan.duration;
            let mut next_progress = reporting_started + Duration::from_secs(1);
            while next_progress < end {
                tokio::time::sleep_until(next_progress).await;
                progress(&snapshot(&run, true));
                next_progress += Duration::from_secs(1);
            }
            tokio::time::sleep_until(end).await;
            None
        }
    };
    let reporting_ended = Instant::now();
    let reporting_cpu_s = cpu_at_start
        .zip(process_cpu_s())
        .map(|(start, end)| end - start);
    // Positions acknowledged after this point (during the drain) are not part of the rate.
    let (reporting_active, acked_in_window) = paused_run.unwrap_or_else(|| {
        (
            reporting_ended.duration_since(reporting_started),
            Stats::get(&run.stats.positions_acked),
        )
    });
    run.stop.cancel();

    // Terminals stop within the drain time; a hard bound protects against a stuck peer.
    let bound = run.plan.drain + Duration::from_secs(5);
    let _ = tokio::time::timeout(bound, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();

    let timeline = Timeline {
        started,
        started_unix_ms,
        registered: registered_at,
        registered_unix_ms,
        reporting_started,
        reporting_ended,
        reporting_active,
        reporting_cpu_s,
    };
    debug_assert!(run.stats.open.load(Ordering::Relaxed) <= run.plan.devices as u64);
    Ok(Summary::new(&run, &timeline, acked_in_window))
}

/// SIGUSR1 (pause) and SIGUSR2 (resume) for a paused run.
struct PauseSignals {
    pause: tokio::signal::unix::Signal,
    resume: tokio::signal::unix::Signal,
}

impl PauseSignals {
    fn install() -> Result<Self, PlanError> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(PauseSignals {
            pause: signal(SignalKind::user_defined1()).map_err(PlanError::Signals)?,
            resume: signal(SignalKind::user_defined2()).map_err(PlanError::Signals)?,
        })
    }
}

/// The reporting phase of a paused run: reporting runs from each SIGUSR2 to the next SIGUSR1,
/// until it has run the plan's duration in all. Returns that time and the positions
/// acknowledged within it: answers that arrive during a pause (to the reports in flight when it
/// began) are left out, as the drain after a run is, since the server made them in another
/// server's turn. Terminals in closed loop that get an answer while paused send their next
/// report once reporting resumes. `progress` gets called about once a second with whether
/// reporting runs.
async fn report_when_resumed(
    run: &Run,
    start: &watch::Sender<bool>,
    mut signals: PauseSignals,
    mut progress: impl FnMut(bool),
) -> (Duration, u64) {
    let duration = run.plan.duration;
    let acked_now = || Stats::get(&run.stats.positions_acked);
    let mut active = Duration::ZERO;
    let mut acked = 0;
    // When reporting last resumed, and the acknowledged positions then.
    let mut resumed: Option<(Instant, u64)> = None;
    let mut next_progress = Instant::now() + Duration::from_secs(1);
    // Adds the span since the last resume to the totals.
    let close = |(at, acked_then): (Instant, u64), active: &mut Duration, acked: &mut u64| {
        *active += at.elapsed();
        *acked += acked_now() - acked_then;
    };
    loop {
        let ends_at = resumed.map(|(at, _)| at + duration.saturating_sub(active));
        if ends_at.is_some_and(|end| Instant::now() >= end) {
            break;
        }
        tokio::select! {
            Some(()) = signals.resume.recv() => {
                if resumed.is_none() {
                    resumed = Some((Instant::now(), acked_now()));
                    let _ = start.send(true);
                }
            }
            Some(()) = signals.pause.recv() => {
                if let Some(span) = resumed.take() {
                    close(span, &mut active, &mut acked);
                    let _ = start.send(false);
                }
            }
            _ = tokio::time::sleep_until(ends_at.map_or(next_progress, |end| end.min(next_progress))) => {
                if Instant::now() >= next_progress {
                    progress(resumed.is_some());
                    next_progress += Duration::from_secs(1);
                }
            }
        }
    }
    if let Some(span) = resumed {
        close(span, &mut active, &mut acked);
    }
    (active, acked)
}

//! `liengate sim`: simulated JT808 terminals against a gateway, or the ceiling server.
use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use liengate_protocols::jt808::Version;
use tokio_util::sync::CancellationToken;

use crate::sim::{self, ceiling, summary, Mode, Plan, Summary};

#[derive(clap::Args, Debug)]
#[command(
    about = "Simulate JT808 terminals against a gateway and report throughput and latency",
    after_help = "Exit status: 0 clean run, 1 wrong answers (serial, id, result, frame), \
                  2 only transport errors (connect, timeout, disconnect), 3 bad arguments."
)]
pub struct SimArgs {
    /// Gateway JT808 address, HOST:PORT (loopback only unless --allow-remote).
    #[arg(long, required_unless_present_any = ["ceiling_server", "merge"])]
    pub target: Option<String>,
    /// Number of simulated terminals.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Location reports per terminal and second (fixed-rate mode); 0 = idle, heartbeats only.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Each terminal sends its next report as soon as the previous one is answered (ignores --rate).
    #[arg(long)]
    pub closed_loop: bool,
    /// Seconds of reporting after all terminals registered.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// JT/T 808 edition the terminals speak.
    #[arg(long, default_value = "2013", value_parser = ["2013", "2019"])]
    pub version: String,
    /// Comma-separated local addresses to connect from, used round-robin (each has its own
    /// ephemeral port range, so several 127.0.0.x pass 64k connections).
    #[arg(long, value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,
    /// Print the summary as one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Leading digits of the terminal phone numbers (the rest is the terminal number).
    #[arg(long, default_value = "0139")]
    pub terminal_prefix: String,
    /// Number of the first terminal; give each sim process a disjoint range.
    #[arg(long, default_value_t = 0)]
    pub first_id: u64,
    /// Instead of simulating, run the ceiling server on ADDR: it frames, verifies and answers
    /// every message as a gateway would, storing nothing. Prints `listening jt808 IP:PORT`.
    #[arg(long, value_name = "ADDR", conflicts_with = "target")]
    pub ceiling_server: Option<SocketAddr>,
    /// Instead of simulating, merge the `--json` summaries in FILE (one per line, from sim
    /// processes that ran together; `-` = stdin) into one summary.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["target", "ceiling_server"])]
    pub merge: Option<PathBuf>,
    /// Ceiling server: most connections served at once.
    #[arg(long, default_value_t = 100_000)]
    pub ceiling_max_connections: usize,
    /// Timeouts, limits and pacing (boxed: clap flattens them into the same command line).
    #[command(flatten)]
    pub tuning: Box<SimTuning>,
}

/// Less common knobs of `liengate sim`.
#[derive(clap::Args, Debug)]
pub struct SimTuning {
    /// Heartbeat (0x0002) interval in seconds.
    #[arg(long, default_value_t = 20.0)]
    pub heartbeat: f64,
    /// Seconds to wait for each answer before counting a timeout.
    #[arg(long, default_value_t = 10.0)]
    pub answer_timeout: f64,
    /// Seconds for TCP connect.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Seconds for all terminals to register before reporting starts anyway.
    #[arg(long, default_value_t = 60.0)]
    pub registration_timeout: f64,
    /// Seconds to wait for outstanding answers after the reporting phase.
    #[arg(long, default_value_t = 3.0)]
    pub drain: f64,
    /// Most unanswered messages per terminal (fixed rate skips ticks beyond it).
    #[arg(long, default_value_t = 32)]
    pub max_in_flight: usize,
    /// Terminals connecting and registering at the same time.
    #[arg(long, default_value_t = 512)]
    pub connect_concurrency: usize,
    /// On average one coverage gap (ending in a 0x0704 blind-area batch) per this many positions; 0 = never.
    #[arg(long, default_value_t = 200)]
    pub blind_area_every: u32,
    /// Seed of the simulated routes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Allow a target outside 127.0.0.0/8 and ::1 (load tests belong on loopback).
    #[arg(long)]
    pub allow_remote: bool,
    /// After registration, wait for SIGUSR2 before reporting (the run does not end without
    /// it); SIGUSR1 pauses reporting and SIGUSR2 resumes it. --duration counts only the time
    /// reporting ran, and the rate only the positions acknowledged meanwhile. Meant for closed
    /// loop, and for signals some time apart (tokio does not keep the order of two different
    /// signals that arrive together). Lets a benchmark give several servers turns of a few
    /// seconds, so that the shared machine's slow and fast phases hit them all alike.
    #[arg(long)]
    pub paused: bool,
}

fn seconds(name: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && (0.0..=86_400.0).contains(&value)) {
        bail!("--{name} must be between 0 and 86400 seconds, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    builder.build().context("starting the async runtime")
}

fn plan(args: &SimArgs) -> anyhow::Result<Plan> {
    let target_text = args.target.as_deref().unwrap_or_default();
    let target = target_text
        .to_socket_addrs()
        .with_context(|| format!("--target {target_text:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--target {target_text:?} resolves to no address"))?;
    if !target.ip().is_loopback() && !args.tuning.allow_remote {
        bail!("--target {target} is not a loopback address; load tests run on 127.0.0.0/8 (use --allow-remote to override)");
    }
    if !(args.rate.is_finite() && (0.0..=1000.0).contains(&args.rate)) {
        bail!(
            "--rate must be between 0 and 1000 reports per second, got {}",
            args.rate
        );
    }
    if args.devices == 0 || args.devices > 1_000_000 {
        bail!(
            "--devices must be between 1 and 1000000, got {}",
            args.devices
        );
    }
    if args.tuning.max_in_flight == 0 || args.tuning.max_in_flight > 1024 {
        bail!("--max-in-flight must be between 1 and 1024");
    }
    let heartbeat = seconds("heartbeat", args.tuning.heartbeat)?;
    if heartbeat < Duration::from_millis(100) {
        bail!("--heartbeat must be at least 0.1 s");
    }
    Ok(Plan {
        target,
        devices: args.devices,
        mode: if args.closed_loop {
            Mode::ClosedLoop
        } else {
            Mode::FixedRate {
                per_second: args.rate,
            }
        },
        duration: seconds("duration", args.duration)?,
        version: if args.version == "2019" {
            Version::V2019
        } else {
            Version::V2013
        },
        source_ips: args.source_ips.clone(),
        terminal_prefix: args.terminal_prefix.clone(),
        first_id: args.first_id,
        heartbeat,
        answer_timeout: seconds("answer-timeout", args.tuning.answer_timeout)?
            .max(Duration::from_millis(10)),
        connect_timeout: seconds("connect-timeout", args.tuning.connect_timeout)?
            .max(Duration::from_millis(10)),
        registration_timeout: seconds("registration-timeout", args.tuning.registration_timeout)?,
        drain: seconds("drain", args.tuning.drain)?,
        max_in_flight: args.tuning.max_in_flight,
        connect_concurrency: args.tuning.connect_concurrency.clamp(1, 100_000),
        blind_area_every: args.tuning.blind_area_every,
        seed: args.tuning.seed,
        paused: args.tuning.paused,
    })
}

/// Open-file limit of this process (soft), read from /proc so no libc call is needed.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = args.ceiling_server {
        return run_ceiling(addr, args.ceiling_max_connections, args.tuning.threads);
    }
    if let Some(path) = &args.merge {
        return run_merge(path, args.json);
    }
    let plan = match plan(&args) {
        Ok(plan) => plan,
        Err(err) => {
            eprintln!("liengate sim: {err:#}");
            return Ok(ExitCode::from(3));
        }
    };
    if let Some(limit) = open_file_limit() {
        // One descriptor per terminal plus a few for the runtime.
        if plan.devices as u64 + 64 > limit {
            eprintln!(
                "liengate sim: {} terminals need more than the open-file limit {limit}; raise `ulimit -n` \
                 or split them over several processes with --first-id",
                plan.devices
            );
            return Ok(ExitCode::from(3));
        }
    }
    let quiet = args.quiet;
    let rt = runtime(args.tuning.threads)?;
    let mut last_acked = 0u64;
    let summary = rt.block_on(sim::run(plan, |p| {
        if p.registration_ended {
            // Always printed: scripts wait for this line before measuring idle connections.
            eprintln!(
                "sim: registration ended after {:.3} s: {} registered, {} open",
                p.elapsed.as_secs_f64(),
                p.registered,
                p.open
            );
            return;
        }
        if quiet {
            return;
        }
        let rate = p.positions_acked - last_acked;
        last_acked = p.positions_acked;
        let phase = if p.reporting {
            "reporting"
        } else if p.paused {
            "paused"
        } else {
            "registering"
        };
        eprintln!(
            "sim {:>5.1}s {phase}: open {} registered {} acked positions {} ({}/s) errors {}",
            p.elapsed.as_secs_f64(),
            p.open,
            p.registered,
            p.positions_acked,
            rate,
            p.errors
        );
    }));
    let summary = match summary {
        Ok(summary) => summary,
        Err(err) => {
            eprintln!("liengate sim: {err}");
            return Ok(ExitCode::from(3));
        }
    };
    // Terminals that never finished connecting may still hold sockets; do not wait for them.
    rt.shutdown_timeout(Duration::from_secs(1));
    print_summary(&summary, args.json)
}

fn print_summary(summary: &Summary, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let line = serde_json::to_string(summary).context("serialising the summary")?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{line}")?;
        stdout.flush()?;
    } else {
        println!("{summary}");
    }
    Ok(if summary.wrong_answers > 0 {
        ExitCode::from(1)
    } else if summary.error_total > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn run_merge(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading summaries from stdin")?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    let parts = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str::<Summary>(line).with_context(|| {
                format!(
                    "{} line {}: not a sim --json summary",
                    path.display(),
                    n + 1
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let merged = summary::merge(&parts)?;
    print_summary(&merged, json)
}

fn run_ceiling(
    addr: SocketAddr,
    max_connections: usize,
    threads: Option<usize>,
) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let rt = runtime(threads)?;
    rt.block_on(async move {
        let (listener, local) = ceiling::bind(addr)
            .await
            .with_context(|| format!("binding the ceiling server to {addr}"))?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "listening jt808 {local}")?;
            stdout.flush()?;
        }
        let stop = CancellationToken::new();
        let stats = Arc::new(ceiling::CeilingStats::default());
        let server = tokio::spawn(ceiling::serve(
            listener,
            max_connections.max(1),
            stop.clone(),
            stats.clone(),
        ));
        shutdown_signal().await;
        stop.cancel();
        let _ = server.await;
        eprintln!(
            "ceiling: {} connections ({} refused), {} frames, {} rejected",
            stats.connections.load(std::sync::atomic::Ordering::Relaxed),
            stats.refused.load(std::sync::atomic::Ordering::Relaxed),
            stats.frames.load(std::sync::atomic::Ordering::Relaxed),
            stats.rejected.load(std::sync::atomic::Ordering::Relaxed),
        );
        anyhow::Ok(())
    })?;
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

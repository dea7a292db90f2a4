//! `liengate serve`: the gateway process.
//!
//! Start-up order: config (fail fast, naming the key), logging, metrics, store, registry import,
//! last known positions into memory, shard workers, listeners. Once both listeners are bound it
//! prints `listening jt808 ADDR` and `listening http ADDR` on stdout (tests and scripts read these;
//! logs go to stderr). SIGINT/SIGTERM start a graceful shutdown: stop accepting devices, let
//! connections answer what is in flight, drain the shards, flush the store, stop the HTTP API
//! (which reports "shutting_down" on `/healthz` meanwhile), exit 0. A shard worker that fails (a
//! panic: a bug) starts the same shutdown, and the process then exits 1, for its supervisor to
//! restart it.
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::gateway::{self, Gateway};
use crate::http::{self, ApiState};
use crate::pipeline::{self, live::LiveView, Pipeline, ShardThread};
use crate::store::{Store, StoreConfig};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file (see config/liengate.example.toml). Without it, defaults apply.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// JT/T 808 listen address; overrides jt808.listen.
    #[arg(long, value_name = "ADDR")]
    pub listen_jt808: Option<SocketAddr>,
    /// HTTP API listen address; overrides http.listen.
    #[arg(long, value_name = "ADDR")]
    pub listen_http: Option<SocketAddr>,
    /// Data directory of the embedded store; overrides store.data_dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// How long connections get to answer in-flight frames after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How often track points older than `store.retention_days` are dropped.
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(addr) = args.listen_jt808 {
        config.jt808.listen = addr;
    }
    if let Some(addr) = args.listen_http {
        config.http.listen = addr;
    }
    if let Some(dir) = args.data_dir {
        config.store.data_dir = dir;
    }
    let file = args
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<command line>".into());
    config.validate(&file)?;

    init_logging();
    let metrics = crate::metrics::install().context("installing the metrics recorder")?;
    let admin_token = std::env::var("LIENGATE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty());
    if admin_token.is_none() {
        tracing::warn!("LIENGATE_ADMIN_TOKEN is not set: the location API refuses every request");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("liengate")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config, admin_token, metrics))?;
    Ok(ExitCode::SUCCESS)
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LIENGATE_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

async fn serve(
    config: Config,
    admin_token: Option<String>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let store_cfg = StoreConfig {
        data_dir: config.store.data_dir.clone(),
        durability: config.store.durability,
        retention_days: config.store.retention_days,
        ..StoreConfig::new(&config.store.data_dir)
    };
    let store = Store::open(&store_cfg)
        .with_context(|| format!("opening the store in {}", store_cfg.data_dir.display()))?;

    let live = Arc::new(LiveView::new());
    // Last known records are written on a timer, so after a crash they can be behind the
    // track: bring them up to date before anything reads them.
    let recovered = pipeline::recover::recover_last_known(&store, &config.state)
        .context("recovering the last known positions from the track")?;
    let updated = recovered
        .writes
        .iter()
        .filter(|w| {
            matches!(
                w,
                crate::store::Write::LastKnown(_) | crate::store::Write::Signals { .. }
            )
        })
        .count();
    if !recovered.writes.is_empty() {
        store
            .commit(recovered.writes)
            .await
            .context("storing the recovered last known positions")?;
    }
    tracing::info!(
        scanned = recovered.scanned,
        updated,
        "last known positions recovered from the track"
    );
    // After the recovery: it replays each device's track points under the vehicle they were
    // stored with, and an import may assign the device to another one.
    if let Some(path) = &config.registry.import {
        let report = crate::registry::import_file(&store, path)
            .context("importing the registry file (registry.import)")?;
        tracing::info!(%report, "registry imported");
    }
    let without_fix = pipeline::load_signals(&live, recovered.signals);
    let (vehicles, devices) = pipeline::load_last_known(&live, recovered.records);
    let sessions = pipeline::load_session_activity(&live, &store)?;
    tracing::info!(
        vehicles,
        devices,
        without_fix,
        sessions,
        "last known positions loaded"
    );

    let (pipe, shard_handles) = Pipeline::start(&config, store.clone(), live.clone())
        .context("starting the shard workers")?;
    tracing::info!(shards = pipe.shards(), "shard workers started");

    let jt808_listener = crate::net::bind_device_listener(config.jt808.listen)
        .with_context(|| format!("binding jt808.listen {}", config.jt808.listen))?;
    let http_listener = TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding http.listen {}", config.http.listen))?;
    let jt808_addr = jt808_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let api = Arc::new(ApiState {
        store: store.clone(),
        live: live.clone(),
        admin_token,
        metrics: metrics.clone(),
        state: config.state.clone(),
        shards: pipe.probe(),
        shutdown: shutdown.clone(),
    });
    // The HTTP API outlives the device side's drain: during it `/healthz` answers 503
    // "shutting_down" (so that load balancers stop sending devices here) and the location API
    // keeps answering. It stops once the store is flushed.
    let http_stop = CancellationToken::new();
    let http_shutdown = http_stop.clone();
    let http_task = tokio::spawn(async move {
        axum::serve(http_listener, http::router(api))
            .with_graceful_shutdown(async move { http_shutdown.cancelled().await })
            .await
    });

    let gw = Gateway::new(config.clone(), store.clone(), pipe, live, shutdown.clone());
    // The cap on unassigned devices counts the ones already stored (self-registered before, or
    // left unassigned by the registry import).
    let unassigned = store
        .devices()
        .context("counting the unassigned devices")?
        .iter()
        .filter(|d| d.vehicle_id.is_none())
        .count();
    gw.enrollment.set_unassigned(unassigned);
    if unassigned >= config.jt808.max_unassigned_devices {
        tracing::warn!(
            unassigned,
            limit = config.jt808.max_unassigned_devices,
            "jt808.max_unassigned_devices reached: unknown terminals will be refused"
        );
    }
    let gw = Arc::new(gw);
    let tasks = TaskTracker::new();
    let listener_task = tokio::spawn(gateway::serve(jt808_listener, gw.clone(), tasks.clone()));

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening jt808 {jt808_addr}")?;
        writeln!(out, "listening http {http_addr}")?;
        out.flush()?;
    }
    tracing::info!(%jt808_addr, %http_addr, "liengate serving");

    let upkeep = tokio::spawn(upkeep(store.clone(), metrics, shutdown.clone()));

    // A shard worker that stops before a shutdown has failed (it panicked): its vehicles' positions
    // can no longer be stored, and its devices' connections died with its thread. Rather than go
    // on half-working (visible only on /healthz), the gateway shuts down as on SIGTERM, so that
    // the other shards' acknowledged work is flushed, and exits with a failure for the supervisor
    // to restart it; start-up recovery rebuilds every vehicle's state from the store.
    let failed_shard = tokio::select! {
        () = signals.wait() => None,
        index = first_to_end(&shard_handles) => Some(index),
    };
    if let Some(index) = failed_shard {
        tracing::error!(
            shard = index,
            "shard worker {index} stopped unexpectedly; shutting down so that the gateway can be restarted"
        );
    }
    tracing::info!("shutting down: no new connections; answering in-flight frames");
    shutdown.cancel();

    // 1. Stop accepting.
    let _ = listener_task.await;
    // 2. Let connections answer what they have in flight and close.
    tasks.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tasks.len(),
            "connections did not finish within the grace period; closing them"
        );
        gw.hard_stop();
        tasks.wait().await;
    }
    // 3. Dropping the last pipeline handle lets the shards drain their queues and stop.
    drop(gw);
    let mut panicked = Vec::new();
    for h in shard_handles {
        let index = h.index();
        if !h.join().await {
            panicked.push(index);
        }
    }
    // 4. Make everything durable.
    store.flush().await.with_context(|| match failed_shard {
        Some(index) => {
            format!("flushing the store after shard worker {index} stopped unexpectedly")
        }
        None => "flushing the store".to_string(),
    })?;
    let _ = upkeep.await;
    http_stop.cancel();
    // HTTP clients that keep a connection open must not hold the exit up.
    if tokio::time::timeout(Duration::from_secs(5), http_task)
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open at exit");
    }
    if let Some(index) = failed_shard {
        anyhow::bail!("shard worker {index} stopped unexpectedly (see the log); everything acknowledged is stored");
    }
    if !panicked.is_empty() {
        // A worker that failed while draining: the shutdown was going to happen anyway, but the
        // exit status must still say that something went wrong.
        anyhow::bail!("shard workers {panicked:?} panicked while stopping (see the log); everything acknowledged is stored");
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// The index of the first shard worker whose thread ends.
async fn first_to_end(shards: &[ShardThread]) -> usize {
    use std::future::Future as _;
    let mut ended: Vec<_> = shards.iter().map(|s| Box::pin(s.ended())).collect();
    // With no shards this never completes, as nothing can end.
    std::future::poll_fn(|cx| {
        for (shard, end) in shards.iter().zip(ended.iter_mut()) {
            if end.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(shard.index());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Periodic chores: metric upkeep (histogram rotation) and track retention.
async fn upkeep(
    store: Store,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_retention: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        metrics.run_upkeep();
        if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_INTERVAL) {
            last_retention = Some(tokio::time::Instant::now());
            let store = store.clone();
            let now = pipeline::now_ms();
            match tokio::task::spawn_blocking(move || store.apply_retention(now)).await {
                Ok(Ok(dropped)) if dropped > 0 => {
                    tracing::info!(dropped, "track retention applied")
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::error!(error = %err, "track retention failed"),
                Err(err) => tracing::error!(error = %err, "track retention task failed"),
            }
        }
    }
}

/// SIGINT / SIGTERM handlers. Installed before the listeners are announced: a signal that arrives
/// right after the "listening" lines must start a graceful shutdown, not kill the process.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT received"),
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
        }
    }
}

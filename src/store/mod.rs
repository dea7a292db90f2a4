//! The embedded store: registry, auth codes, last known positions, track history and session
//! facts, in one fjall keyspace under `<data_dir>/store`.
//!
//! Writes go through [`Store::commit`], which hands them to a single committer thread (see
//! `committer.rs`). The committer writes everything queued at that moment as one atomic batch,
//! and one fsync (on a syncer thread, overlapping the next batch) makes it durable, so many
//! callers share one fsync (group commit). Reads go straight to the engine from the caller's
//! thread; they see every batch whose commit has returned (and possibly batches still waiting
//! for their fsync). Design, durability guarantees and measurements: docs/store.md.
//!
//! Values are encoded with postcard (compact, fast, schema from the serde derives in
//! `crate::model`). Keys are laid out in `keys.rs`.
mod committer;
mod engine;
mod fix_wire;
mod folder;
mod joined;
mod journal_sync;
mod keys;
mod track;

pub use track::TrackPoints;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::model::{Device, Fix, LastKnown, Loan, Signals, Vehicle};
use committer::Request;
use engine::Engine;

/// Where a commit is durable when `commit` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// The batch is fsynced before callers are woken: survives kill -9, OS crash and power loss.
    #[default]
    Fsync,
    /// The batch is handed to the OS (written, not fsynced) before callers are woken: survives
    /// kill -9 of the gateway, but an OS crash or power loss can lose the last few seconds.
    Buffered,
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Data directory; the store lives in `<data_dir>/store`.
    pub data_dir: PathBuf,
    pub durability: Durability,
    /// Track points older than this many days are dropped by [`Store::apply_retention`].
    pub retention_days: u32,
    /// How many positions the committer gathers before a fold writes them from the track log
    /// into per-vehicle chunks (see `track.rs`). Memory: up to three times this many positions
    /// (the ones gathering, one fold queued, one being written), about 75 bytes each as logged,
    /// plus the fold's copy of the one being written.
    pub track_fold_points: usize,
}

impl StoreConfig {
    /// Defaults: fsync group commit, 180 days of track.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            durability: Durability::Fsync,
            retention_days: 180,
            track_fold_points: DEFAULT_TRACK_FOLD_POINTS,
        }
    }
}

/// What can go wrong in the store. Cloneable because one failed group commit is reported to
/// every caller whose writes were in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    #[error("store engine failed: {0}")]
    Engine(#[source] Arc<dyn std::error::Error + Send + Sync>),
    #[error("corrupt record in keyspace {keyspace}: {source}")]
    Decode {
        keyspace: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("corrupt record in keyspace {keyspace}: {detail}")]
    Corrupt {
        keyspace: &'static str,
        detail: &'static str,
    },
    #[error("invalid {what} {id:?}: ids must be 1 to 1024 bytes")]
    InvalidId { what: &'static str, id: String },
    #[error("store format version {found} is not supported by this build (expected {expected})")]
    Format { found: u32, expected: u32 },
    #[error("the store at {path} is in use by another process (lock file held)")]
    Locked { path: PathBuf },
    #[error("the store is closed")]
    Closed,
    /// The committer thread ended while the store is open (it only does on a panic): no write
    /// can succeed any more.
    #[error("the store's committer thread has stopped")]
    CommitterStopped,
    /// The most recent commit or flush failed (a full or failing disk, typically). Cleared by
    /// the next one that succeeds.
    #[error("the last store commit failed: {0}")]
    LastCommitFailed(#[source] Box<StoreError>),
    /// A fold of the track log failed, which stops folds until the next start: positions stay
    /// in the log (nothing is lost, the next start folds them), but it grows, and purge and
    /// retention refuse to run.
    #[error("folding the track log failed; folds are stopped until the next start: {0}")]
    FoldStopped(#[source] Box<StoreError>),
    #[error("store health probe failed: {0}")]
    Probe(&'static str),
    /// Not applied because an earlier commit of the same [`Chain`] failed: it may have been
    /// built on data that is not stored.
    #[error("an earlier commit this one depends on failed")]
    ChainBroken,
}

/// Orders the commits of one writer (a shard worker) that each build on the one before.
///
/// A writer that queues several commits without waiting for each ([`Store::commit_queued`])
/// must not see a later commit applied after an earlier one failed: the later one may hold last
/// known records that refer to the failed one's track points. The committer marks the chain
/// broken (raises `broken` to `epoch`) when one of its commits fails to apply, and skips every
/// later commit of that epoch or an older one with [`StoreError::ChainBroken`]. The writer starts
/// a higher epoch once it has dropped the state built on the failure. Epochs start at 1 and only
/// grow, and `broken` only grows (0: nothing broke), so a late mark of an old failure can never
/// make a newer broken epoch look whole again.
///
/// A failed disk sync also marks the chain, but by then the committer has usually applied the
/// next commits already (that overlap is the point of the syncer thread): their outcomes are
/// failures, so nothing built on the failure is acknowledged or shown, but their writes stay in
/// the journal and become durable with the next successful sync. After a failed fsync the
/// kernel may have dropped the failed batch's pages, so a last known record among those writes
/// can name a track point that is gone; start-up recovery rebuilds records from the track.
#[derive(Clone, Debug)]
pub struct Chain {
    pub broken: Arc<std::sync::atomic::AtomicU64>,
    pub epoch: u64,
}

impl Chain {
    pub(crate) fn is_broken(&self) -> bool {
        self.epoch <= self.broken.load(Ordering::Acquire)
    }

    pub(crate) fn mark_broken(&self) {
        self.broken.fetch_max(self.epoch, Ordering::AcqRel);
    }
}

/// A commit in the committer's queue; [`QueuedCommit::outcome`] waits until it is durable at
/// the configured point. Outcomes of one writer's commits complete in the order they were
/// queued.
pub struct QueuedCommit {
    store: Store,
    wait: oneshot::Receiver<Result<(), StoreError>>,
}

impl QueuedCommit {
    pub async fn outcome(self) -> Result<(), StoreError> {
        match self.wait.await.unwrap_or(Err(StoreError::Closed)) {
            // Not a failure of the store: the failure it follows was noted already.
            Err(StoreError::ChainBroken) => Err(StoreError::ChainBroken),
            result => self.store.note(result),
        }
    }
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        StoreError::Engine(Arc::new(e))
    }
}

impl From<fjall::LsmError> for StoreError {
    fn from(e: fjall::LsmError) -> Self {
        StoreError::Engine(Arc::new(e))
    }
}

/// Facts about a terminal's last session, kept for admins and for the version-aware encoder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFacts {
    pub last_connect_ms: i64,
    pub last_peer: String,
    /// JT808 revision spoken: "2011", "2013" or "2019".
    pub version: String,
    pub last_frame_ms: i64,
    /// The platform's next outgoing message serial for this terminal, so that the terminal sees
    /// one sequence from the platform across reconnects and gateway restarts (JT/T 808-2013
    /// §4.4.3). Written at authentication and at disconnect (which a graceful shutdown goes
    /// through), so after a crash the serial resumes from where the crashed session began.
    /// Records written before this field existed read as 0.
    pub next_serial: u16,
}

/// One write. A `Vec<Write>` passed to [`Store::commit`] is applied atomically.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// A track point. Re-sending the same (vehicle, device time, terminal) overwrites it.
    Fix {
        vehicle_id: std::sync::Arc<str>,
        fix: Fix,
    },
    /// Track points, encoded by the writer (the shard's batch). The same as one `Fix` per point.
    Track(TrackPoints),
    /// The vehicle's last known position (latest write wins).
    LastKnown(LastKnown),
    /// The newest signals of a record key (vehicle id or device key) that has no last known
    /// position yet, because none of its reports had a valid fix: a tracker in an underground
    /// garage sends only no-GNSS reports. Start-up recovery writes it, so that its replay of that
    /// key starts here the next time instead of at the start of the key's track (see
    /// `pipeline::recover`). Latest write wins.
    Signals {
        key: std::sync::Arc<str>,
        signals: Signals,
    },
    AuthCode {
        terminal_id: String,
        code: String,
    },
    /// Inserts or replaces a device; the vehicle -> devices index follows `vehicle_id`.
    Device(Device),
    Vehicle(Vehicle),
    Loan(Loan),
    Session {
        terminal_id: String,
        facts: SessionFacts,
    },
    /// Whether the next start-up recovery must replay every track from each record's own mark,
    /// without the bound it normally puts on a vehicle's replay (see `pipeline::recover`). Set by
    /// the committer on every batch once a commit or sync failed; cleared by start-up recovery.
    FullReplay(bool),
}

/// Default of [`StoreConfig::track_fold_points`]: at 100,000 positions/s a fold every 0.65 s,
/// and with a thousand vehicles reporting, chunks of about 65 points.
pub const DEFAULT_TRACK_FOLD_POINTS: usize = 65_536;

/// Longest id accepted; bounds key sizes.
pub const MAX_ID_LEN: usize = 1024;

/// Bound of the committer's queue (requests, not writes). A full queue makes `commit` wait,
/// which pushes back on the shard workers and from them on the device sockets.
pub const COMMIT_QUEUE: usize = 4096;

/// Handle to the store. Cheap to clone; all clones share one engine and one committer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    cfg: StoreConfig,
    /// `None` only while dropping, to close the queue before joining the committer.
    tx: Option<mpsc::Sender<Request>>,
    committer: Option<std::thread::JoinHandle<()>>,
    /// Whether the most recent commit or flush failed, so that the health check reports a store
    /// that cannot write. Only read on the commit path while it is false (one atomic load).
    failing: AtomicBool,
    /// The error of that failed commit, for the health report.
    last_failure: Mutex<Option<StoreError>>,
    /// Exclusive lock on `<data_dir>/store.lock`, held for the life of the store. fjall does not
    /// lock its directory, and two processes writing one keyspace would corrupt it (for example
    /// `registry import` run against the data dir of a running `serve`).
    _lock: std::fs::File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the committer drain what is queued and exit; joining it means
        // the engine is persisted (its own drop flushes the journal) before we return.
        self.tx.take();
        if let Some(handle) = self.committer.take() {
            let _ = handle.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the store under `cfg.data_dir` and starts its committer thread.
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        let lock = lock_data_dir(&cfg.data_dir)?;
        let fold_points = cfg.track_fold_points.max(1);
        let engine = Engine::open(&cfg.data_dir.join("store"), fold_points)?;
        let (tx, rx) = mpsc::channel(COMMIT_QUEUE);
        let committer = committer::spawn(engine.clone(), cfg.durability, fold_points, rx)?;
        Ok(Store {
            inner: Arc::new(Inner {
                engine,
                cfg: cfg.clone(),
                tx: Some(tx),
                committer: Some(committer),
                failing: AtomicBool::new(false),
                last_failure: Mutex::new(None),
                _lock: lock,
            }),
        })
    }

    /// Benchmark hook: with `false`, stores opened afterwards fsync each batch on the committer
    /// thread instead of overlapping the fsync with the next batch (see `committer.rs`).
    #[doc(hidden)]
    pub fn set_overlap_fsync_for_bench(enabled: bool) {
        committer::set_overlap_fsync(enabled);
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.cfg
    }

    fn sender(&self) -> Result<&mpsc::Sender<Request>, StoreError> {
        self.inner.tx.as_ref().ok_or(StoreError::Closed)
    }

    /// Applies `writes` atomically. Durable at the configured point when it returns: concurrent
    /// callers are group-committed (one fsync for many).
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        match self.commit_queued(writes, None).await {
            Ok(queued) => queued.outcome().await,
            // The committer is gone: a store failure like a failed write.
            Err(StoreError::Closed) => self.note(Err(StoreError::Closed)),
            Err(invalid) => Err(invalid),
        }
    }

    /// Queues `writes` (waiting only while the committer's queue is full) and returns a handle to
    /// wait for their outcome. A writer can so keep several commits in flight, each one's disk
    /// sync overlapping the writing of the next, where awaiting [`Store::commit`] one by one
    /// would leave the disk idle while the next batch is written and the committer idle during
    /// the sync. `chain` makes later commits fail rather than apply after a failed one. Dropping
    /// the returned handle leaves the commit to complete on its own (the committer logs failures).
    pub async fn commit_queued(
        &self,
        writes: Vec<Write>,
        chain: Option<Chain>,
    ) -> Result<QueuedCommit, StoreError> {
        validate(&writes)?;
        let (done, wait) = oneshot::channel();
        let request = Request::Commit {
            writes,
            done,
            chain,
        };
        match self.sender()?.send(request).await {
            Ok(()) => Ok(QueuedCommit {
                store: self.clone(),
                wait,
            }),
            Err(_) => Err(StoreError::Closed),
        }
    }

    /// [`Store::commit`] for callers outside an async runtime (CLI tools, tests). Must not be
    /// called from inside a runtime thread.
    pub fn commit_blocking(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        validate(&writes)?;
        let (done, wait) = oneshot::channel();
        let result = match self.sender()?.blocking_send(Request::Commit {
            writes,
            done,
            chain: None,
        }) {
            Ok(()) => wait.blocking_recv().unwrap_or(Err(StoreError::Closed)),
            Err(_) => Err(StoreError::Closed),
        };
        self.note(result)
    }

    /// Makes everything committed so far durable on disk (fsync), whatever the durability mode.
    /// Call on graceful shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let result = match self.sender()?.send(Request::Flush { done }).await {
            Ok(()) => wait.await.unwrap_or(Err(StoreError::Closed)),
            Err(_) => Err(StoreError::Closed),
        };
        self.note(result)
    }

    /// Blocking form of [`Store::flush`].
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.request_blocking(|done| Request::Flush { done })
    }

    /// Sends the committer a request that answers on `done` and waits for the answer, from
    /// outside a runtime.
    fn request_blocking(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<(), StoreError>>) -> Request,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let result = match self.sender()?.blocking_send(request(done)) {
            Ok(()) => wait.blocking_recv().unwrap_or(Err(StoreError::Closed)),
            Err(_) => Err(StoreError::Closed),
        };
        self.note(result)
    }

    /// Writes every position committed so far from the track log into chunks and waits until
    /// that is done (not durable: see `Engine::fold`). Maintenance that works on the chunks
    /// (purge, retention) calls it first, so that it also covers the positions still in the log.
    /// Must not be called from inside a runtime thread.
    pub fn fold_track_blocking(&self) -> Result<(), StoreError> {
        self.request_blocking(|done| Request::Fold { done })
    }

    /// Remembers whether the store's last commit or flush worked, for [`Store::health`].
    fn note(&self, result: Result<(), StoreError>) -> Result<(), StoreError> {
        let inner = &self.inner;
        match &result {
            // The common case costs one atomic load: the flag is only written on a change.
            Ok(()) if !inner.failing.load(Ordering::Relaxed) => {}
            Ok(()) => {
                *inner.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
                inner.failing.store(false, Ordering::Relaxed);
            }
            Err(err) => {
                *inner.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.clone());
                inner.failing.store(true, Ordering::Relaxed);
            }
        }
        result
    }

    /// Whether the store can serve reads and take writes right now: its committer thread runs,
    /// its most recent commit or flush did not fail, and a read of the layout version record
    /// goes through the engine. Cheap (one point read, usually from memory): meant for a health
    /// endpoint that is polled every few seconds. It never writes, so a failed commit is only
    /// noticed once a commit has been attempted; [`Store::check`] retries such a failure.
    pub fn health(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let committer_gone = inner.committer.as_ref().is_none_or(|h| h.is_finished())
            || inner.tx.as_ref().is_none_or(|tx| tx.is_closed());
        if committer_gone {
            return Err(StoreError::CommitterStopped);
        }
        if let Some(err) = inner.engine.fold_failure() {
            return Err(StoreError::FoldStopped(Box::new(err.clone())));
        }
        if inner.failing.load(Ordering::Relaxed) {
            let last = inner
                .last_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(err) = last {
                return Err(StoreError::LastCommitFailed(Box::new(err)));
            }
        }
        inner.engine.probe()
    }

    /// [`Store::health`], but when the last commit failed it flushes (an fsync through the
    /// committer) to see whether the store writes again: a gateway without traffic would
    /// otherwise report an old failure until its next commit.
    /// The probe's read runs on a blocking thread so that a hung disk cannot stall the caller's
    /// runtime thread; the caller should still bound the whole check with a timeout.
    pub async fn check(&self) -> Result<(), StoreError> {
        let probe = |store: Store| async move {
            tokio::task::spawn_blocking(move || store.health())
                .await
                .unwrap_or(Err(StoreError::Probe("the health probe panicked")))
        };
        match probe(self.clone()).await {
            Err(StoreError::LastCommitFailed(_)) => {
                self.flush().await?;
                probe(self.clone()).await
            }
            other => other,
        }
    }

    pub fn last_known(&self, vehicle_id: &str) -> Result<Option<LastKnown>, StoreError> {
        self.inner.engine.last_known(vehicle_id)
    }

    /// Every stored last known position (startup recovery of the shard state).
    pub fn all_last_known(&self) -> Result<Vec<LastKnown>, StoreError> {
        self.inner.engine.all_last_known()
    }

    /// Every stored signals record ([`Write::Signals`]) with its record key.
    pub fn all_signals(&self) -> Result<Vec<(String, Signals)>, StoreError> {
        self.inner.engine.all_signals()
    }

    /// Whether the next start-up recovery must replay in full (see [`Write::FullReplay`]).
    pub fn full_replay(&self) -> Result<bool, StoreError> {
        self.inner.engine.full_replay()
    }

    /// Track points of a vehicle with `from_ms <= device time <= to_ms`, in device-time order
    /// (ties by terminal id), at most `limit` of them.
    pub fn track(
        &self,
        vehicle_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<Fix>, StoreError> {
        self.inner.engine.track(vehicle_id, from_ms, to_ms, limit)
    }

    /// Visits a vehicle's track points with device time `>= from_ms`, in device-time order (ties
    /// by terminal id), without collecting them. Start-up recovery of the last known positions
    /// uses it. Returns how many points were visited.
    pub fn scan_track(
        &self,
        vehicle_id: &str,
        from_ms: i64,
        mut visit: impl FnMut(Fix),
    ) -> Result<u64, StoreError> {
        self.inner
            .engine
            .scan_track(vehicle_id, from_ms, &mut visit)
    }

    pub fn auth_code(&self, terminal_id: &str) -> Result<Option<String>, StoreError> {
        self.inner.engine.auth_code(terminal_id)
    }

    pub fn device(&self, terminal_id: &str) -> Result<Option<Device>, StoreError> {
        self.inner.engine.device(terminal_id)
    }

    /// All devices, ordered by terminal id.
    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.inner.engine.devices()
    }

    /// Devices currently assigned to a vehicle, ordered by terminal id.
    pub fn devices_of_vehicle(&self, vehicle_id: &str) -> Result<Vec<Device>, StoreError> {
        self.inner.engine.devices_of_vehicle(vehicle_id)
    }

    pub fn vehicle(&self, vehicle_id: &str) -> Result<Option<Vehicle>, StoreError> {
        self.inner.engine.vehicle(vehicle_id)
    }

    /// All vehicles, ordered by vehicle id.
    pub fn vehicles(&self) -> Result<Vec<Vehicle>, StoreError> {
        self.inner.engine.vehicles()
    }

    pub fn loan(&self, loan_id: &str) -> Result<Option<Loan>, StoreError> {
        self.inner.engine.loan(loan_id)
    }

    pub fn session(&self, terminal_id: &str) -> Result<Option<SessionFacts>, StoreError> {
        self.inner.engine.session(terminal_id)
    }

    /// Deletes a vehicle's track and last known position (the registry entries stay). Returns
    /// the number of track points removed.
    /// Must not be called from inside a runtime thread.
    pub fn purge_vehicle(&self, vehicle_id: &str) -> Result<u64, StoreError> {
        self.fold_track_blocking()?;
        self.inner
            .engine
            .purge_vehicle(vehicle_id, self.inner.cfg.durability)
    }

    /// Drops track points whose device time is older than `retention_days` before `now_ms`.
    /// Returns the number removed. Must not be called from inside a runtime thread.
    pub fn apply_retention(&self, now_ms: i64) -> Result<u64, StoreError> {
        self.fold_track_blocking()?;
        let keep_ms = i64::from(self.inner.cfg.retention_days) * 86_400_000;
        let dropped = self
            .inner
            .engine
            .drop_track_before(now_ms.saturating_sub(keep_ms), self.inner.cfg.durability)?;
        metrics::counter!(crate::metrics::STORE_RETENTION_DELETED).increment(dropped);
        metrics::counter!(crate::metrics::STORE_RETENTION_RUNS).increment(1);
        Ok(dropped)
    }
}

fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, StoreError> {
    let open_err = |e: std::io::Error| StoreError::Open {
        path: dir.to_path_buf(),
        source: Arc::new(e),
    };
    std::fs::create_dir_all(dir).map_err(open_err)?;
    let path = dir.join("store.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(open_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(open_err(e)),
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(StoreError::InvalidId {
            what,
            id: id.chars().take(64).collect(),
        });
    }
    Ok(())
}

/// Rejects a request before it is queued, so one bad caller cannot fail a whole group commit.
fn validate(writes: &[Write]) -> Result<(), StoreError> {
    for w in writes {
        match w {
            Write::Fix { vehicle_id, fix } => {
                check_id("vehicle id", vehicle_id)?;
                check_id("terminal id", &fix.terminal_id)?;
            }
            Write::Track(points) => points.check()?,
            Write::LastKnown(lk) => {
                check_id("vehicle id", &lk.vehicle_id)?;
                check_id("terminal id", &lk.fix.terminal_id)?;
            }
            Write::Signals { key, .. } => check_id("record key", key)?,
            Write::AuthCode { terminal_id, .. } | Write::Session { terminal_id, .. } => {
                check_id("terminal id", terminal_id)?;
            }
            Write::Device(d) => {
                check_id("terminal id", &d.terminal_id)?;
                if let Some(v) = &d.vehicle_id {
                    check_id("vehicle id", v)?;
                }
            }
            Write::Vehicle(v) => check_id("vehicle id", &v.vehicle_id)?,
            Write::Loan(l) => {
                check_id("loan id", &l.loan_id)?;
                check_id("vehicle id", &l.vehicle_id)?;
            }
            Write::FullReplay(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl Store {
    /// The next disk sync fails (its batch stays applied, as after a real failure).
    pub(crate) fn fail_next_sync(&self) {
        self.inner
            .engine
            .faults
            .sync
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

//! The pipeline between device connections and the store.
//!
//! Connections decode frames and send the positions to one of N shard workers over bounded
//! channels. The shard is chosen by vehicle, so one worker owns all state of a vehicle, including
//! both its wired and its wireless tracker. A full shard queue makes the sending connection wait,
//! which stops it reading from its socket: TCP backpressure instead of silent drops. The shard
//! sanitises, deduplicates, updates the last known position, commits everything durably in one
//! `Store::commit` per batch (group commit across connections) and only then tells the connections
//! that they may acknowledge the frames.
use std::sync::Arc;

use tokio::sync::mpsc;
#[cfg(test)]
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::{LastKnown, Signals};
use crate::store::{Store, StoreError};

#[cfg(test)]
mod failed_sync_tests;
pub mod live;
mod placement;
pub mod recover;
pub mod sanitize;
mod shard;
mod spare;
pub mod tracker;

use live::{Activity, LiveView};

/// Track and last-known records of a device that is not assigned to a vehicle are kept under
/// this prefix plus the terminal id, as if the device were its own vehicle. Every device also has
/// its own last-known record under this key, which `GET /v1/devices/{id}/location` serves.
pub const DEVICE_KEY_PREFIX: &str = "device:";

/// The store key of a device's own records.
pub fn device_key(terminal_id: &str) -> String {
    format!("{DEVICE_KEY_PREFIX}{terminal_id}")
}

/// Where the data of one authenticated device goes. Built once per connection at authentication.
#[derive(Debug)]
pub struct DeviceRoute {
    pub terminal_id: Arc<str>,
    /// `None` for an unassigned device.
    pub vehicle_id: Option<Arc<str>>,
    /// The vehicle id, or the device key of an unassigned device: the shard and track key.
    pub vehicle_key: Arc<str>,
    pub device_key: Arc<str>,
    pub shard: usize,
    pub vehicle_activity: Arc<Activity>,
    pub device_activity: Arc<Activity>,
    /// Where the shard keeps this device's and its vehicle's state: hints that save it a hash
    /// lookup per position, checked against the key before use (see `shard::States`).
    pub hints: StateHints,
}

/// Positions in a shard's state tables, remembered per route by the shard that owns it.
#[derive(Debug, Default)]
pub struct StateHints {
    pub(crate) device: std::sync::atomic::AtomicU32,
    pub(crate) vehicle: std::sync::atomic::AtomicU32,
}

impl DeviceRoute {
    /// Records that a frame arrived from this device.
    pub fn touch(&self, now_ms: i64) {
        self.device_activity.touch(now_ms);
        self.vehicle_activity.touch(now_ms);
    }
}

/// One decoded position, before sanitation. Owned so that it can cross to the shard task.
#[derive(Debug, Clone)]
pub struct Report {
    /// Device time in Unix ms (UTC); `None` when the BCD time was invalid.
    pub time_ms: Option<i64>,
    pub latitude: f64,
    pub longitude: f64,
    pub altitude_m: i32,
    pub speed_kmh: f32,
    pub course: u16,
    pub alarm: u32,
    pub status: u32,
    /// From a 0x0704 blind-area batch: late data, stored but judged against newer positions.
    pub blind_area: bool,
    pub battery_pct: Option<u8>,
    pub voltage_mv: Option<u32>,
}

/// Identifies a frame for duplicate detection: a device that missed our answer re-sends the same
/// frame with the same serial number and the same device time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameKey {
    pub message_id: u16,
    pub serial: u16,
    pub first_time_ms: i64,
}

/// The outcome a connection waits for before it acknowledges a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The positions are durable.
    Stored,
    /// The frame was seen before; its positions were stored then.
    Duplicate,
}

/// The store could not commit the batch; the frame must not be acknowledged as successful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store could not commit the positions")]
pub struct CommitFailed;

/// Positions of one frame (one 0x0200 / 0x0201, or all items of one 0x0704).
pub struct Positions {
    pub route: Arc<DeviceRoute>,
    pub key: Option<FrameKey>,
    pub reports: Vec<Report>,
    pub received_ms: i64,
    /// Answered once the positions are durable; `None` when nobody waits (e.g. 0x0201 replies).
    pub done: Option<Ack>,
}

/// Whoever waits for the commit outcome of frames: a connection, which writes the answer.
pub trait AckSink: Send + Sync {
    /// The outcome of the frame the sink numbered `seq`.
    fn complete(&self, seq: u64, outcome: Result<Committed, CommitFailed>);
}

/// The promise to tell a frame's commit outcome to its sink, kept exactly once: a frame whose
/// `Ack` is dropped unanswered (its shard stopped, its batch was discarded) is told
/// `CommitFailed`, so that the device is never left without an answer nor told a lie.
///
/// A shared sink per connection, rather than a channel per frame, lets the shard's commit stage
/// write the answer itself: a channel woke the connection's task a second time for every frame
/// only to write one answer (benches/RESULTS.md, session 8).
pub struct Ack {
    sink: Arc<dyn AckSink>,
    seq: u64,
    told: bool,
}

impl Ack {
    pub fn new(sink: Arc<dyn AckSink>, seq: u64) -> Self {
        Ack {
            sink,
            seq,
            told: false,
        }
    }

    /// An `Ack` whose outcome arrives on a channel, for tests that wait for one frame.
    #[cfg(test)]
    pub fn channel() -> (Self, oneshot::Receiver<Result<Committed, CommitFailed>>) {
        let (tx, rx) = oneshot::channel();
        (
            Ack::new(Arc::new(ChannelSink(std::sync::Mutex::new(Some(tx)))), 0),
            rx,
        )
    }

    /// Starts loading the sink (a connection's outbox), which `complete` is about to use.
    pub fn prefetch(&self) {
        crate::prefetch::prefetch(&*self.sink);
    }

    pub fn complete(mut self, outcome: Result<Committed, CommitFailed>) {
        self.told = true;
        self.sink.complete(self.seq, outcome);
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.told {
            self.sink.complete(self.seq, Err(CommitFailed));
        }
    }
}

#[cfg(test)]
struct ChannelSink(std::sync::Mutex<Option<oneshot::Sender<Result<Committed, CommitFailed>>>>);

#[cfg(test)]
impl AckSink for ChannelSink {
    fn complete(&self, _seq: u64, outcome: Result<Committed, CommitFailed>) {
        let tx = self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            // Nobody waiting is not an error: the data is stored regardless.
            let _ = tx.send(outcome);
        }
    }
}

/// Messages a shard worker handles.
pub enum ShardMsg {
    Positions(Positions),
}

/// The shard workers have stopped (shutdown); nothing more can be accepted.
#[derive(Debug, thiserror::Error)]
#[error("the pipeline is shut down")]
pub struct PipelineClosed;

/// Why [`Pipeline::try_submit`] did not queue the positions.
pub enum TrySubmit {
    /// The shard queue is full; the positions come back to be sent with [`Pipeline::submit`].
    Full(Positions),
    /// The shard workers have stopped.
    Closed,
}

/// A shard worker running on a thread of its own.
///
/// Each shard runs its worker and commit stage on a single-threaded runtime on a dedicated OS
/// thread rather than as tasks on the connections' runtime. As tasks they waited in the same run
/// queues as hundreds of connection tasks every time a batch moved on (queued frames, a durable
/// commit), which added latency to every answer and scheduling work to every batch; on their own
/// thread the OS runs them as soon as they are woken. Measured: 7 to 8 % less server CPU per
/// position at a fixed 50,000 positions/s (benches/RESULTS.md, session 3).
pub struct ShardThread {
    index: usize,
    /// Cancelled once the worker's `block_on` has returned or a panic has unwound it (its runtime
    /// and the connection tasks on it are dropped right after).
    ended: CancellationToken,
    thread: std::thread::JoinHandle<()>,
}

/// Cancels its token when dropped: at the end of a shard thread, by a return or by a panic.
struct EndGuard(CancellationToken);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Where a shard's runtime runs the connections of its vehicles' devices (see
/// [`Pipeline::spawn_on`]).
type ShardRuntime = tokio::runtime::Handle;

impl ShardThread {
    fn spawn(
        index: usize,
        worker: shard::Shard,
        rx: mpsc::Receiver<ShardMsg>,
        batch: bool,
    ) -> std::io::Result<(ShardThread, ShardRuntime)> {
        // Built here so that a failure is reported by `Pipeline::start`, not lost in the thread.
        // With I/O: the connections of the shard's devices run on it too.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let ended = CancellationToken::new();
        let guard = EndGuard(ended.clone());
        let thread = crate::sched::spawn(&format!("shard-{index}"), batch, move || {
            let _guard = guard;
            runtime.block_on(worker.run(rx));
        })?;
        Ok((
            ShardThread {
                index,
                ended,
                thread,
            },
            handle,
        ))
    }

    /// The shard's number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Completes when the worker has stopped: after a shutdown drained it, or, before one, because
    /// it failed (a panic in the worker or its commit stage). The caller tells the two apart.
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }

    /// Waits until the worker has drained its queue, committed and stopped. The worker stops when
    /// the last [`Pipeline`] handle is dropped. Returns false if it panicked instead.
    pub async fn join(self) -> bool {
        self.ended.cancelled().await;
        let clean = self.thread.join().is_ok();
        if !clean {
            tracing::error!(shard = self.index, "a shard worker panicked");
        }
        clean
    }
}

/// Handle for sending to the shards. Cloned into every connection; when the last clone is
/// dropped, the workers drain their queues, commit and stop.
#[derive(Clone)]
pub struct Pipeline {
    senders: Arc<[mpsc::Sender<ShardMsg>]>,
    runtimes: Arc<[ShardRuntime]>,
    placement: Arc<placement::Placement>,
}

impl Pipeline {
    /// Starts the shard workers. `live` must already hold the last known positions loaded from the
    /// store: the workers pick up each vehicle's state from it the first time they see the vehicle.
    pub fn start(
        cfg: &Config,
        store: Store,
        live: Arc<LiveView>,
    ) -> std::io::Result<(Pipeline, Vec<ShardThread>)> {
        let shards = cfg.pipeline.effective_shards();
        let depth = cfg.pipeline.effective_queue_depth();
        let mut senders = Vec::with_capacity(shards);
        let mut handles = Vec::with_capacity(shards);
        let mut runtimes = Vec::with_capacity(shards);
        for index in 0..shards {
            let (tx, rx) = mpsc::channel(depth);
            senders.push(tx);
            let worker = shard::Shard::new(index, cfg, store.clone(), live.clone());
            let (thread, runtime) =
                ShardThread::spawn(index, worker, rx, cfg.pipeline.batch_scheduling)?;
            handles.push(thread);
            runtimes.push(runtime);
        }
        Ok((
            Pipeline {
                senders: senders.into(),
                runtimes: runtimes.into(),
                placement: Arc::new(placement::Placement::new(shards)),
            },
            handles,
        ))
    }

    pub fn shards(&self) -> usize {
        self.senders.len()
    }

    /// The shard that owns `vehicle_key`: the least loaded one when the vehicle is first seen,
    /// and that one for the rest of the run (see `placement.rs`).
    pub fn shard_of(&self, vehicle_key: &str) -> usize {
        self.placement.shard_of(vehicle_key)
    }

    /// Runs `task` on the thread of shard `shard`, next to the worker that owns the shard's
    /// vehicles. An authenticated connection moves there: its frames then reach the worker and
    /// its answers come back without waking a thread, where a connection on the shared runtime
    /// paid a cross-thread wake each way for every frame (benches/RESULTS.md, session 7). The
    /// shard's runtime lives as long as its worker, which outlives every `Pipeline` handle, so
    /// a connection that holds one never finds it gone.
    pub fn spawn_on<F>(&self, shard: usize, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        drop(self.runtimes[shard].spawn(task));
    }

    /// Whether shard `shard`'s worker, and so its thread, still runs.
    pub fn is_running(&self, shard: usize) -> bool {
        !self.senders[shard].is_closed()
    }

    /// A handle that watches the shard workers without keeping them running: the workers stop
    /// when the last `Pipeline` is dropped, and the health endpoint must not delay that.
    pub fn probe(&self) -> ShardProbe {
        ShardProbe {
            senders: self.senders.iter().map(mpsc::Sender::downgrade).collect(),
        }
    }

    /// Queues positions on their shard if it has room, without waiting.
    pub fn try_submit(&self, positions: Positions) -> Result<(), TrySubmit> {
        let shard = positions.route.shard;
        self.senders[shard]
            .try_send(ShardMsg::Positions(positions))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(ShardMsg::Positions(p)) => TrySubmit::Full(p),
                mpsc::error::TrySendError::Closed(_) => TrySubmit::Closed,
            })
    }

    /// Queues positions on their shard, waiting while the queue is full (backpressure).
    pub async fn submit(&self, positions: Positions) -> Result<(), PipelineClosed> {
        let shard = positions.route.shard;
        self.senders[shard]
            .send(ShardMsg::Positions(positions))
            .await
            .map_err(|_| PipelineClosed)
    }
}

/// Why the shard workers cannot take positions, as the health check sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ShardsDown {
    /// A worker ended while connections can still send to it (it only does on a panic): the
    /// positions of its vehicles can no longer be stored.
    #[error("shard worker {0} has stopped")]
    WorkerStopped(usize),
    /// Every `Pipeline` handle was dropped: the workers drained and stopped (shutdown).
    #[error("the shard workers were stopped for shutdown")]
    Drained,
}

/// See [`Pipeline::probe`].
#[derive(Clone)]
pub struct ShardProbe {
    senders: Arc<[mpsc::WeakSender<ShardMsg>]>,
}

impl ShardProbe {
    /// Whether every shard worker is still receiving.
    pub fn check(&self) -> Result<(), ShardsDown> {
        for (index, weak) in self.senders.iter().enumerate() {
            // Upgrading keeps the channel open only for this check; a shutdown that drops the
            // last `Pipeline` meanwhile is delayed by no more than that.
            let Some(sender) = weak.upgrade() else {
                return Err(ShardsDown::Drained);
            };
            if sender.is_closed() {
                return Err(ShardsDown::WorkerStopped(index));
            }
        }
        Ok(())
    }
}

/// Loads the stored last known positions into the live view (startup recovery).
pub fn load_last_known(live: &LiveView, all: Vec<LastKnown>) -> (usize, usize) {
    let (mut vehicles, mut devices) = (0, 0);
    for lk in all {
        let last_frame = lk.last_frame_ms;
        if let Some(tid) = lk.vehicle_id.strip_prefix(DEVICE_KEY_PREFIX) {
            let tid: Arc<str> = Arc::from(tid);
            live.device_activity
                .insert(tid.clone(), Arc::new(Activity::new(last_frame)));
            live.devices.insert(&tid, Arc::new(lk.clone()));
            devices += 1;
        } else {
            vehicles += 1;
        }
        // Unassigned devices are their own vehicle (key "device:ID"), so both kinds have a vehicle
        // activity entry under their record key.
        let key: Arc<str> = lk.vehicle_id.clone();
        live.vehicle_activity
            .insert(key.clone(), Arc::new(Activity::new(last_frame)));
        if !lk.vehicle_id.starts_with(DEVICE_KEY_PREFIX) {
            live.vehicles.insert(&key, Arc::new(lk));
        }
    }
    (vehicles, devices)
}

/// Loads the signals of the keys without a last known position (startup recovery).
pub fn load_signals(live: &LiveView, all: Vec<(String, Signals)>) -> usize {
    let n = all.len();
    for (key, signals) in all {
        live.signals.insert(Arc::from(key), Arc::new(signals));
    }
    n
}

/// Raises the liveness clocks to the last frame times recorded in the devices' session facts
/// (written at every disconnect, including a graceful shutdown), so that a vehicle that only sent
/// heartbeats after its last fix is not shown offline since that fix after a restart.
pub fn load_session_activity(live: &LiveView, store: &Store) -> Result<usize, StoreError> {
    let mut n = 0;
    for device in store.devices()? {
        let Some(facts) = store.session(&device.terminal_id)? else {
            continue;
        };
        let ms = facts.last_frame_ms;
        live.device_activity
            .get_or_insert_with(&device.terminal_id, || Arc::new(Activity::new(0)))
            .touch(ms);
        let key = device
            .vehicle_id
            .clone()
            .unwrap_or_else(|| device_key(&device.terminal_id));
        live.vehicle_activity
            .get_or_insert_with(&key, || Arc::new(Activity::new(0)))
            .touch(ms);
        n += 1;
    }
    Ok(n)
}

/// How far a report's device time may lag behind the newest report of its vehicle before the
/// shard stores the device's last known record together with it instead of at the next flush.
/// Start-up recovery then replays a vehicle's track from no earlier than this before the
/// vehicle's stored newest report, however long ago one of its devices went silent: see
/// `recover`. Ten minutes covers the usual skew between a car's trackers; a device that lags
/// further (a long blind-area upload after a silence) costs a record write per commit instead.
pub const LAG_BEHIND_VEHICLE_MS: i64 = 10 * 60 * 1000;

/// Wall-clock now in Unix milliseconds. Used only for receive times, liveness and the future-time
/// check; rules and derived motion use device time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

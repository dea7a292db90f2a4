//! One shard worker: owns the state of the vehicles placed on it (`placement.rs`).
//!
//! Two stages. The worker takes everything waiting in its queue (up to a bound) as one batch and
//! turns it into store writes and state changes. Its commit stage queues the batches on the
//! store in order, up to `COMMITS_IN_FLIGHT` at once, and, again in order, waits for each to be
//! durable before it answers the connections and publishes the new last known positions to the
//! live view. While one batch is being made durable the next is already written and the worker
//! builds the one after, so CPU work overlaps the disk sync. Order matters: the last known
//! record written by a later batch is never overwritten by an earlier one, and a duplicate is
//! never answered before the frame it duplicates is durable.
//!
//! Last known records are not written with every batch. A batch carries the track points (durable
//! before any answer) and the live view is updated once they are committed, but the changed last
//! known records are only remembered as pending and written, latest wins, in the first batch after
//! `state.last_known_flush` has passed (a flush-only batch when the shard is idle) and in a final
//! batch when the shard stops. Writing them every batch was a large share of the store's work per
//! position. After a crash, `recover.rs` rebuilds the records from the track points newer than the
//! stored ones, so nothing acknowledged is lost from the last known either.
//!
//! If a commit fails, every batch built on top of it is failed too (same epoch; the store skips
//! the ones already queued, see `store::Chain`) and the worker drops its in-memory state,
//! reloading it from the live view, which only ever holds committed data. A device's re-send
//! after the failure is then processed again, not taken for a duplicate.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::live::{LiveView, Records, Slot, Table};
use super::sanitize::{self, JumpDetector, Point};
use super::tracker::Tracker;
use super::{Ack, CommitFailed, Committed, FrameKey, Positions, ShardMsg};
use crate::config::{Config, SanitationConfig, StateConfig};
use crate::metrics as m;
use crate::model::{Fix, FixFlags, LastKnown, Signals};
use crate::store::{Chain, QueuedCommit, Store, StoreError, TrackPoints, Write};

/// foldhash instead of SipHash: hashing the vehicle and terminal keys was a visible share of the
/// shard's time per position. The keys come from devices and the registry, so the hasher keeps a
/// random per-process seed against crafted collisions.
type RandomState = foldhash::fast::RandomState;
type FastMap<K, V> = HashMap<K, V, RandomState>;

/// The states of one kind (devices or vehicles) of a shard, by key.
///
/// The states sit in a vector and the map holds their places, so that a route can remember where
/// its device's and vehicle's states are (`DeviceRoute::hints`) and find them without hashing the
/// key and probing the map for every position: those two lookups, with the key comparisons they
/// make, were a visible share of the shard's time per position (benches/RESULTS.md, session 8). A
/// hint is only ever a guess: the key stored beside the state is compared before the hint is used
/// (by address first, which is the same `Arc` for the route that set the hint), so a stale hint,
/// after the states were cleared or from another shard's table, just means a lookup.
struct States<S> {
    index: FastMap<Arc<str>, u32>,
    slots: Vec<(Arc<str>, S)>,
}

impl<S> Default for States<S> {
    fn default() -> Self {
        States {
            index: FastMap::default(),
            slots: Vec::new(),
        }
    }
}

impl<S> States<S> {
    fn get(&self, key: &str) -> Option<&S> {
        let &i = self.index.get(key)?;
        Some(&self.slots[i as usize].1)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut S> {
        let &i = self.index.get(key)?;
        Some(&mut self.slots[i as usize].1)
    }

    fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
    }

    /// The state `hint` points at, which may be another key's (a stale hint).
    fn hinted(&self, hint: &AtomicU32) -> Option<&S> {
        self.slots
            .get(hint.load(Ordering::Relaxed) as usize)
            .map(|(_, state)| state)
    }

    /// The state of `key`, through `hint` when it still points there, otherwise looked up (or
    /// created by `make`) and the hint set.
    fn find(&mut self, key: &Arc<str>, hint: &AtomicU32, make: impl FnOnce() -> S) -> &mut S {
        // Relaxed: only the shard that owns the route reads and writes its hints.
        let guess = hint.load(Ordering::Relaxed) as usize;
        let hit = self
            .slots
            .get(guess)
            .is_some_and(|(k, _)| Arc::ptr_eq(k, key) || **k == **key);
        let i = if hit {
            guess
        } else {
            let i = match self.index.get(&**key) {
                Some(&i) => i,
                None => {
                    let i = u32::try_from(self.slots.len()).expect("fewer than 2^32 keys a shard");
                    self.slots.push((key.clone(), make()));
                    self.index.insert(key.clone(), i);
                    i
                }
            };
            hint.store(i, Ordering::Relaxed);
            i as usize
        };
        &mut self.slots[i].1
    }
}

/// Most messages folded into one commit. Bounds the batch's memory and the latency of its first frame.
const MAX_BATCH: usize = 1024;
/// Recent frame keys remembered per device for duplicate detection.
const DEDUPE_WINDOW: usize = 16;
// `RecentFrames` counts its entries in a `u8` and matches them in a `u32` bit mask.
const _: () = assert!(DEDUPE_WINDOW < 32);

/// The last [`DEDUPE_WINDOW`] frame keys of a device, kept inline in its state (a separate queue
/// allocation was one more cache miss per position).
///
/// The keys are split into their message id and serial, packed in one word, and their device
/// times, so that the check for a duplicate scans 64 bytes of ids (one or two cache lines) and
/// reads a time only where the id and serial match: an array of whole keys took 384 bytes,
/// six lines of the device's state to bring in for every position at 10,000 terminals
/// (session 14).
#[derive(Clone, Default)]
struct RecentFrames {
    ids: [u32; DEDUPE_WINDOW],
    times: [i64; DEDUPE_WINDOW],
    /// How many entries hold a key; they fill from the front, then `next` wraps around.
    len: u8,
    next: u8,
}

impl RecentFrames {
    /// Remembers `key`; false when it was seen already (a duplicate).
    fn insert(&mut self, key: FrameKey) -> bool {
        let id = (u32::from(key.message_id) << 16) | u32::from(key.serial);
        let len = usize::from(self.len);
        // The ids matching, as a bit mask, from a branch-free pass over the whole window that
        // the compiler turns into a few vector compares; entries past `len` are masked out.
        // Taking the entries in order with an early exit cost about 200 instructions a frame.
        let mut hits = 0u32;
        for (k, &i) in self.ids.iter().enumerate() {
            hits |= u32::from(i == id) << k;
        }
        hits &= (1u32 << len) - 1;
        while hits != 0 {
            let k = hits.trailing_zeros() as usize;
            if self.times[k] == key.first_time_ms {
                return false;
            }
            hits &= hits - 1;
        }
        let at = usize::from(self.next);
        self.ids[at] = id;
        self.times[at] = key.first_time_ms;
        self.next = ((at + 1) % DEDUPE_WINDOW) as u8;
        if len < DEDUPE_WINDOW {
            self.len += 1;
        }
        true
    }
}

/// Per-device state: its own last known position, jump detector and recent frame keys.
#[derive(Clone)]
struct DeviceState {
    tracker: Tracker,
    jumps: JumpDetector,
    recent: RecentFrames,
    /// Its key is in the shard's pending list (last known changed since the last flush).
    pending: bool,
    /// Loaded from the live view after a failed commit: the store may hold a newer record (a
    /// failed sync leaves its batch in the journal), whose mark the next replay starts at, so
    /// the state's first change is written at once.
    reloaded: bool,
    /// Where its last known position is published, once it has one.
    slot: Option<Arc<Slot<LastKnown>>>,
}

/// Per-vehicle state: the fused last known position of all its devices.
#[derive(Clone)]
struct VehicleState {
    tracker: Tracker,
    pending: bool,
    /// Its devices whose records changed since the last flush. When the vehicle's record is
    /// written before the flush (a late report), theirs are written with it: start-up recovery
    /// bounds the devices' replay by the vehicle's stored newest report (see `pipeline::recover`).
    pending_devices: Vec<Arc<str>>,
    /// As `DeviceState::reloaded`.
    reloaded: bool,
    /// As `DeviceState::slot`.
    slot: Option<Arc<Slot<LastKnown>>>,
}

pub(super) struct Shard {
    index: usize,
    /// Debug builds only: a terminal whose positions make this worker panic as it builds their
    /// batch (see [`debug_panic_terminal`]). Release builds have no such hook.
    #[cfg(debug_assertions)]
    panic_terminal: Option<String>,
    store: Store,
    live: Arc<LiveView>,
    sanitation: SanitationConfig,
    state_cfg: StateConfig,
    vehicles: States<VehicleState>,
    devices: States<DeviceState>,
    label: String,
    /// Raised past every failed epoch whenever the state is dropped after a failed commit.
    epoch: u64,
    /// The highest epoch with a failed commit, 0 for none. Raised only by the commit stage's
    /// second half, which sees outcomes in order, so a batch stored before the failure is never
    /// taken for one built on it.
    failed_epoch: Arc<AtomicU64>,
    /// Vehicles and devices (by terminal id) whose last known changed since it was last written.
    pending_vehicles: Vec<Arc<str>>,
    pending_devices: Vec<Arc<str>>,
    /// When pending last known records were last written.
    last_flush: Instant,
    flush_every: Duration,
}

/// Batches a shard may have waiting for its commit stage (besides the one committing). Bounded:
/// when the store falls behind, the worker stops taking frames and the connections feel it.
const COMMIT_QUEUE: usize = 2;

/// `failed_epoch` when no commit has failed; epochs start above it.
const NO_FAILURE: u64 = 0;

/// One batch on its way to the store.
struct Batch {
    epoch: u64,
    writes: Vec<Write>,
    waiting: Vec<(Ack, Committed)>,
    publish: Publish,
}

impl Shard {
    pub(super) fn new(index: usize, cfg: &Config, store: Store, live: Arc<LiveView>) -> Self {
        Shard {
            index,
            #[cfg(debug_assertions)]
            panic_terminal: debug_panic_terminal("build"),
            store,
            live,
            sanitation: cfg.sanitation.clone(),
            state_cfg: cfg.state.clone(),
            vehicles: States::default(),
            devices: States::default(),
            label: index.to_string(),
            epoch: NO_FAILURE + 1,
            failed_epoch: Arc::new(AtomicU64::new(NO_FAILURE)),
            pending_vehicles: Vec::new(),
            pending_devices: Vec::new(),
            last_flush: Instant::now(),
            flush_every: cfg.state.last_known_flush,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<ShardMsg>) {
        let (to_commit, commits) = mpsc::channel(COMMIT_QUEUE);
        let mut stage = tokio::spawn(commit_stage(
            commits,
            self.store.clone(),
            self.live.clone(),
            self.failed_epoch.clone(),
            self.index,
        ));
        // Whether `stage` has been awaited to its end (it must not be polled again).
        let mut stage_joined = false;
        let mut msgs = Vec::with_capacity(64);
        loop {
            // Pending last known records must reach the store even when no traffic comes to
            // carry them.
            let pending = self.has_pending();
            let due = tokio::time::Instant::from_std(self.last_flush + self.flush_every);
            // Everything queued, up to a batch, at once: taking the messages one by one gave
            // each one's permit back to the channel's semaphore separately, under its lock
            // (session 13). `recv_many` waits for the first message and is cancel safe.
            let received = tokio::select! {
                biased;
                n = rx.recv_many(&mut msgs, MAX_BATCH) => n,
                // In an async block so that the timer is only made when the branch is enabled:
                // a disabled branch's expression is still evaluated, once per batch.
                () = async { tokio::time::sleep_until(due).await }, if pending => {
                    self.reset_after_failure();
                    let batch = self.build(&mut msgs, false);
                    if to_commit.send(batch).await.is_err() {
                        break;
                    }
                    continue;
                }
                // The commit stage ends before `to_commit` is dropped only if it panicked: the
                // worker fails with it at once rather than at its next batch, which a quiet
                // shard might never build.
                joined = &mut stage => {
                    stage_joined = true;
                    propagate_panic(joined);
                    break;
                }
            };
            if received == 0 {
                // The channel is closed and drained.
                break;
            }
            metrics::gauge!(m::SHARD_QUEUE_DEPTH, "shard" => self.label.clone())
                .set(rx.len() as f64);
            self.reset_after_failure();
            let batch = self.build(&mut msgs, false);
            if to_commit.send(batch).await.is_err() {
                break;
            }
        }
        // Graceful stop: write every pending last known record.
        if self.has_pending() && !stage_joined {
            let batch = self.build(&mut msgs, true);
            let _ = to_commit.send(batch).await;
        }
        drop(to_commit);
        if !stage_joined {
            propagate_panic(stage.await);
        }
        tracing::debug!(shard = self.index, "shard worker stopped");
    }

    /// Drops the state built on a failed commit, if one failed: everything built on it is
    /// failed by the commit stage, so start again from what is durable, in a higher epoch.
    fn reset_after_failure(&mut self) {
        let failed = self.failed_epoch.load(Ordering::Acquire);
        if failed >= self.epoch {
            tracing::warn!(
                shard = self.index,
                "dropping shard state after a failed commit"
            );
            self.vehicles.clear();
            self.devices.clear();
            self.epoch = failed + 1;
        }
    }

    fn has_pending(&self) -> bool {
        !(self.pending_vehicles.is_empty() && self.pending_devices.is_empty())
    }

    /// Turns queued messages into one batch of writes and the answers that wait for it. Adds the
    /// pending last known records when the flush interval has passed or `flush_all` is set.
    fn build(&mut self, msgs: &mut Vec<ShardMsg>, flush_all: bool) -> Batch {
        let now_ms = super::now_ms();
        let points: usize = msgs
            .iter()
            .map(|ShardMsg::Positions(p)| p.reports.len())
            .sum();
        // The batch's track points, encoded here (see `TrackPoints`); the other writes are the
        // few last known records that changed late or are due.
        let mut track = TrackPoints::with_capacity(points);
        let mut writes = Vec::new();
        // What moved is published to the live view once this batch's track points are durable.
        let mut publish = Publish {
            vehicles: Vec::with_capacity(msgs.len()),
            devices: Vec::with_capacity(msgs.len()),
            signals: Vec::new(),
        };
        let mut waiting = Vec::with_capacity(msgs.len());
        self.prefetch(msgs);
        for msg in msgs.drain(..) {
            let ShardMsg::Positions(p) = msg;
            #[cfg(debug_assertions)]
            if self.panic_terminal.as_deref() == Some(&*p.route.terminal_id) {
                panic!(
                    "LIENGATE_DEBUG_PANIC_TERMINAL: a position of {}",
                    p.route.terminal_id
                );
            }
            let outcome = self.apply(&p, now_ms, &mut track, &mut writes, &mut publish);
            if let Some(done) = p.done {
                waiting.push((done, outcome));
            }
        }
        if !track.is_empty() {
            writes.push(Write::Track(track));
        }
        if flush_all || self.last_flush.elapsed() >= self.flush_every {
            self.flush_pending(&mut writes);
        }
        Batch {
            epoch: self.epoch,
            writes,
            waiting,
            publish,
        }
    }

    /// Starts loading the device and vehicle states the batch's frames will use, then the last
    /// known records they will replace, so that their cache misses overlap instead of coming
    /// one frame at a time (see `crate::prefetch`). By the second pass the first states have
    /// mostly arrived.
    fn prefetch(&self, msgs: &[ShardMsg]) {
        use crate::prefetch::prefetch;
        // A stale hint prefetches some other key's state: harmless, `find` checks the key.
        let states = |p: &Positions| {
            let hints = &p.route.hints;
            let vehicle = p
                .route
                .vehicle_id
                .as_ref()
                .and(self.vehicles.hinted(&hints.vehicle));
            (self.devices.hinted(&hints.device), vehicle)
        };
        for ShardMsg::Positions(p) in msgs {
            prefetch(&*p.route.device_activity);
            prefetch(&*p.route.vehicle_activity);
            let (device, vehicle) = states(p);
            if let Some(d) = device {
                prefetch(d);
            }
            if let Some(v) = vehicle {
                prefetch(v);
            }
        }
        for ShardMsg::Positions(p) in msgs {
            let (device, vehicle) = states(p);
            if let Some(lk) = device.and_then(|d| d.tracker.last_known.as_deref()) {
                prefetch(lk);
            }
            if let Some(lk) = vehicle.and_then(|v| v.tracker.last_known.as_deref()) {
                prefetch(lk);
            }
        }
    }

    /// Adds a write of every pending last known record (its current state: latest wins). The
    /// records go into the same batch as this batch's track points, and batches commit in order,
    /// so a stored record never refers to a track point that is not stored. After a failed
    /// commit the state is reloaded from the live view, which holds only committed data.
    fn flush_pending(&mut self, writes: &mut Vec<Write>) {
        flush_records(
            &mut self.pending_vehicles,
            &mut self.vehicles,
            &self.live.vehicles,
            &self.live.signals,
            |vid| vid.clone(),
            writes,
        );
        flush_records(
            &mut self.pending_devices,
            &mut self.devices,
            &self.live.devices,
            &self.live.signals,
            |tid| Arc::from(super::device_key(tid)),
            writes,
        );
        self.last_flush = Instant::now();
    }

    /// Turns one frame's positions into writes and state changes.
    fn apply(
        &mut self,
        p: &Positions,
        now_ms: i64,
        track: &mut TrackPoints,
        writes: &mut Vec<Write>,
        publish: &mut Publish,
    ) -> Committed {
        let route = &p.route;
        let tid = &route.terminal_id;
        let Shard {
            devices,
            vehicles,
            live,
            sanitation,
            state_cfg,
            pending_devices,
            pending_vehicles,
            epoch,
            ..
        } = self;
        // Past the first epoch a commit has failed: states are loaded from the live view, which
        // may be behind the store (see `DeviceState::reloaded`).
        let reloaded = *epoch > NO_FAILURE + 1;
        // The connection leaves a position frame's activity to the shard, which prefetched it
        // with the batch's states: a frame then brings the two activity lines in once, and
        // not one frame at a time (see `crate::prefetch`).
        route.touch(p.received_ms);
        let dev = devices.find(tid, &route.hints.device, || DeviceState {
            reloaded,
            ..load_device(live, tid, state_cfg)
        });
        if let Some(key) = p.key {
            if !dev.recent.insert(key) {
                metrics::counter!(m::FRAMES_DUPLICATE).increment(1);
                return Committed::Duplicate;
            }
        }
        let mut vehicle = match route.vehicle_id.as_ref() {
            Some(vid) => {
                let v = vehicles.find(vid, &route.hints.vehicle, || VehicleState {
                    reloaded,
                    ..load_vehicle(live, vid, state_cfg)
                });
                Some((vid, v))
            }
            None => None,
        };
        let last_frame_ms = route.vehicle_activity.get().max(p.received_ms);
        let device_frame_ms = route.device_activity.get().max(p.received_ms);
        let mut device_moved = false;
        let mut vehicle_moved = false;
        let mut device_late = false;
        let mut vehicle_late = false;
        for r in &p.reports {
            let mut flags = sanitize::static_flags(
                r.time_ms,
                r.latitude,
                r.longitude,
                r.status,
                now_ms,
                sanitation,
            );
            if r.blind_area {
                flags |= FixFlags::BLIND_AREA;
            }
            let time_ms = r.time_ms.unwrap_or(p.received_ms);
            if (flags - FixFlags::BLIND_AREA).is_empty() {
                let point = Point {
                    time_ms,
                    latitude: r.latitude,
                    longitude: r.longitude,
                };
                if dev.jumps.check(point, sanitation.max_speed_kmh) {
                    flags |= FixFlags::IMPOSSIBLE_JUMP;
                }
            }
            count_flags(flags);
            let fix = Fix {
                terminal_id: tid.clone(),
                time_ms,
                received_ms: p.received_ms,
                latitude: r.latitude,
                longitude: r.longitude,
                altitude_m: r.altitude_m,
                speed_kmh: r.speed_kmh,
                course: r.course,
                alarm: r.alarm,
                status: r.status,
                flags,
                battery_pct: r.battery_pct,
                voltage_mv: r.voltage_mv,
            };
            let newest = dev.tracker.newest_report_ms();
            // A report far behind its vehicle's newest one is "late" for the device too: the
            // vehicle's replay at start-up begins shortly before the vehicle's newest report.
            let lag_limit = vehicle.as_ref().map_or(i64::MIN, |(_, v)| {
                v.tracker
                    .newest_report_ms()
                    .saturating_sub(super::LAG_BEHIND_VEHICLE_MS)
            });
            // A device's first record (its first signals, or its first position) is written at
            // once too: the replay's bound for the device may lie after the report.
            let first = !dev.tracker.has_record() || dev.reloaded;
            let moved = dev
                .tracker
                .offer(&route.device_key, &fix, device_frame_ms, state_cfg);
            device_moved |= moved;
            device_late |= moved && (fix.time_ms < newest || fix.time_ms < lag_limit || first);
            if let Some((vid, v)) = &mut vehicle {
                let newest = v.tracker.newest_report_ms();
                let moved = v.tracker.offer(vid, &fix, last_frame_ms, state_cfg);
                vehicle_moved |= moved;
                vehicle_late |= moved && (fix.time_ms < newest || v.reloaded);
            }
            track.push(&route.vehicle_key, &fix);
        }
        // Published per frame (a device rarely has two frames in one batch; the live view keeps
        // the last) and remembered for the next last known flush, the flags keeping each key
        // once in the pending lists without a set to look it up in.
        //
        // A record moved by a late report (older than the newest report the key had, or, for a
        // device, more than `LAG_BEHIND_VEHICLE_MS` older than its vehicle's newest report) is
        // also written with this batch: start-up recovery replays only the track from the stored
        // record's newest report on, and a vehicle's track from no earlier than shortly before
        // the vehicle's, so it would not find that report after a crash (see `pipeline::recover`).
        // Late changes are rare (a blind-area fix after a no-GNSS report or a long silence, a
        // wireless unit's battery level behind its wired partner's reports), so this costs few
        // writes. The key stays pending, so the flush still writes its final state.
        if device_moved {
            match &dev.tracker.last_known {
                Some(lk) => publish
                    .devices
                    .push((slot_of(&mut dev.slot, &live.devices, tid), lk.clone())),
                None => publish.signals.push((
                    route.device_key.clone(),
                    Arc::new(dev.tracker.signals().clone()),
                )),
            }
            if device_late {
                writes.extend(record_write(&dev.tracker, || route.device_key.clone()));
                dev.reloaded = false;
            }
            if !dev.pending {
                dev.pending = true;
                pending_devices.push(tid.clone());
                if let Some((_, v)) = &mut vehicle {
                    // Cleared only when the vehicle's own record is flushed: keep each device once.
                    if !v.pending_devices.contains(tid) {
                        v.pending_devices.push(tid.clone());
                    }
                }
            }
        }
        if let Some((vid, v)) = vehicle {
            if vehicle_moved {
                match &v.tracker.last_known {
                    Some(lk) => publish
                        .vehicles
                        .push((slot_of(&mut v.slot, &live.vehicles, vid), lk.clone())),
                    None => publish
                        .signals
                        .push((vid.clone(), Arc::new(v.tracker.signals().clone()))),
                }
                if vehicle_late {
                    v.reloaded = false;
                    writes.extend(record_write(&v.tracker, || vid.clone()));
                    // The stored record's newest report now bounds the replay of its devices'
                    // records after a crash: theirs must be at least as current.
                    for d in &v.pending_devices {
                        if let Some(state) = devices.get(d) {
                            writes.extend(record_write(&state.tracker, || {
                                Arc::from(super::device_key(d))
                            }));
                        }
                    }
                }
                if !v.pending {
                    v.pending = true;
                    pending_vehicles.push(vid.clone());
                }
            }
        }
        Committed::Stored
    }
}

/// The slot of a key in `records`, looked up once per state and kept in it.
fn slot_of(
    slot: &mut Option<Arc<Slot<LastKnown>>>,
    records: &Records<LastKnown>,
    key: &str,
) -> Arc<Slot<LastKnown>> {
    slot.get_or_insert_with(|| records.slot(key)).clone()
}

/// What one batch publishes to the live view once it is durable.
#[derive(Default)]
struct Publish {
    vehicles: Vec<(Arc<Slot<LastKnown>>, Arc<LastKnown>)>,
    devices: Vec<(Arc<Slot<LastKnown>>, Arc<LastKnown>)>,
    /// Signals of keys without a last known position, by record key.
    signals: Vec<(Arc<str>, Arc<Signals>)>,
}

/// The write that stores a tracker's record under its record key: its last known position, or,
/// without one, its signals (`Write::Signals`); nothing for a key that has had no report.
fn record_write(tracker: &Tracker, key: impl FnOnce() -> Arc<str>) -> Option<Write> {
    match &tracker.last_known {
        Some(lk) => Some(Write::LastKnown((**lk).clone())),
        None if tracker.has_record() => Some(Write::Signals {
            key: key(),
            signals: tracker.signals().clone(),
        }),
        None => None,
    }
}

/// The part of a device's or vehicle's state that has a record to flush.
trait Record {
    /// Clears the pending flag and returns the tracker whose record is to be written.
    fn take_pending(&mut self) -> &Tracker;
}

impl Record for DeviceState {
    fn take_pending(&mut self) -> &Tracker {
        self.pending = false;
        &self.tracker
    }
}

impl Record for VehicleState {
    fn take_pending(&mut self) -> &Tracker {
        self.pending = false;
        self.pending_devices = Vec::new();
        &self.tracker
    }
}

/// Writes the current record of every key in `pending`: from the shard's state, or from the
/// live view when the state was dropped after a failed commit. `record_key` turns a pending key
/// (vehicle id, terminal id) into its record key.
fn flush_records<S: Record>(
    pending: &mut Vec<Arc<str>>,
    states: &mut States<S>,
    live: &Records<LastKnown>,
    live_signals: &Table<Arc<Signals>>,
    record_key: impl Fn(&Arc<str>) -> Arc<str>,
    writes: &mut Vec<Write>,
) {
    for key in pending.drain(..) {
        let write = match states.get_mut(&key) {
            Some(state) => record_write(state.take_pending(), || record_key(&key)),
            None => match live.get(&key) {
                Some(lk) => Some(Write::LastKnown((*lk).clone())),
                None => {
                    let key = record_key(&key);
                    live_signals.get(&key).map(|signals| Write::Signals {
                        key,
                        signals: (*signals).clone(),
                    })
                }
            },
        };
        writes.extend(write);
    }
}

/// A device's state as the live view has it (after a start or a reset), or a fresh one.
fn load_device(live: &LiveView, tid: &Arc<str>, cfg: &StateConfig) -> DeviceState {
    let tracker = match live.devices.get(tid) {
        Some(lk) => Tracker::restore(lk, cfg),
        None => restore_signals(live, &super::device_key(tid)),
    };
    let jumps = match &tracker.last_known {
        Some(lk) => JumpDetector::with_anchor(Point {
            time_ms: lk.fix.time_ms,
            latitude: lk.fix.latitude,
            longitude: lk.fix.longitude,
        }),
        None => JumpDetector::default(),
    };
    DeviceState {
        tracker,
        jumps,
        recent: RecentFrames::default(),
        pending: false,
        reloaded: false,
        slot: None,
    }
}

/// The tracker of a key without a last known record: from its stored signals, so that its newest
/// report, the replay mark that the write-at-once rules of `Shard::apply` compare with, is where
/// start-up recovery left it (see `pipeline::recover`).
fn restore_signals(live: &LiveView, key: &str) -> Tracker {
    match live.signals.get(key) {
        Some(signals) => Tracker::with_signals((*signals).clone()),
        None => Tracker::new(),
    }
}

/// A vehicle's state as the live view has it, or a fresh one.
fn load_vehicle(live: &LiveView, vid: &Arc<str>, cfg: &StateConfig) -> VehicleState {
    let tracker = match live.vehicles.get(vid) {
        Some(lk) => Tracker::restore(lk, cfg),
        None => restore_signals(live, vid),
    };
    VehicleState {
        tracker,
        pending: false,
        pending_devices: Vec::new(),
        reloaded: false,
        slot: None,
    }
}

/// Debug builds only: the terminal whose positions make `stage` of a shard worker panic, from
/// `LIENGATE_DEBUG_PANIC_TERMINAL=<stage>:<terminal id>` (stage `build`: the worker itself, as it
/// builds the batch; `finish`: the commit stage's finisher, once the batch is durable), so that a
/// black-box test can see what the process does when a shard worker fails
/// (`tests/shard_failure.rs`).
#[cfg(debug_assertions)]
fn debug_panic_terminal(stage: &str) -> Option<String> {
    let hook = std::env::var("LIENGATE_DEBUG_PANIC_TERMINAL").ok()?;
    let (at, terminal) = hook.split_once(':')?;
    (at == stage).then(|| terminal.to_string())
}

/// Re-raises the panic of a task of the shard's own: the worker must not end as if it had drained
/// when its commit stage died, or the thread would look stopped for a shutdown (see
/// `ShardThread::ended`).
fn propagate_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(err) = joined {
        if err.is_panic() {
            std::panic::resume_unwind(err.into_panic());
        }
    }
}

/// Commits of one shard in flight at once. Queued in order, they complete in order; each one's
/// disk sync overlaps the writing of the next, where one commit at a time left the store's
/// committer waiting for every sync.
const COMMITS_IN_FLIGHT: usize = 4;

/// What a batch waits for after it was handed to the store.
enum Queued {
    /// Nothing to write (only duplicates): done once the batches before it are.
    Nothing,
    Commit(QueuedCommit),
    /// Failed before reaching the store; `Some` when the store said why.
    Failed(Option<StoreError>),
}

/// The commit stage of one shard: queues batches on the store in order, then, in the same
/// order, waits for each to be durable before answering its frames and publishing its state.
async fn commit_stage(
    mut batches: mpsc::Receiver<Batch>,
    store: Store,
    live: Arc<LiveView>,
    failed_epoch: Arc<AtomicU64>,
    shard: usize,
) {
    let (to_finish, in_flight) = mpsc::channel(COMMITS_IN_FLIGHT);
    let mut finisher = tokio::spawn(finish_commits(in_flight, live, failed_epoch.clone(), shard));
    // Whether `finisher` has been awaited to its end (it must not be polled again).
    let mut finisher_joined = false;
    // The store's own mark of this shard's broken epochs, raised by the committer the moment an
    // apply fails. Kept apart from `failed_epoch`, which follows the outcomes in order: the
    // committer may mark a failure while earlier, stored batches still wait to be answered.
    let broken = Arc::new(AtomicU64::new(NO_FAILURE));
    loop {
        let next = tokio::select! {
            biased;
            next = batches.recv() => next,
            // The finisher ends before `to_finish` is dropped only if it panicked: fail with it
            // at once (see `Shard::run`).
            joined = &mut finisher => {
                finisher_joined = true;
                propagate_panic(joined);
                break;
            }
        };
        let Some(mut batch) = next else {
            break;
        };
        let queued = if batch.epoch <= failed_epoch.load(Ordering::Acquire) {
            // Built on top of a batch that failed: its duplicates and last known positions may
            // refer to positions that are not stored.
            Queued::Failed(None)
        } else if batch.writes.is_empty() {
            Queued::Nothing
        } else {
            let writes = std::mem::take(&mut batch.writes);
            let count: u64 = writes
                .iter()
                .map(|w| match w {
                    Write::Track(points) => points.len(),
                    _ => 1,
                })
                .sum();
            metrics::histogram!(m::SHARD_BATCH_WRITES).record(count as f64);
            let chain = Chain {
                broken: broken.clone(),
                epoch: batch.epoch,
            };
            match store.commit_queued(writes, Some(chain)).await {
                Ok(commit) => Queued::Commit(commit),
                Err(err) => Queued::Failed(Some(err)),
            }
        };
        if to_finish
            .send((batch, queued, Instant::now()))
            .await
            .is_err()
        {
            break;
        }
    }
    drop(to_finish);
    if !finisher_joined {
        propagate_panic(finisher.await);
    }
}

/// Second half of the commit stage: outcomes in queue order.
async fn finish_commits(
    mut in_flight: mpsc::Receiver<(Batch, Queued, Instant)>,
    live: Arc<LiveView>,
    failed_epoch: Arc<AtomicU64>,
    shard: usize,
) {
    #[cfg(debug_assertions)]
    let panic_terminal = debug_panic_terminal("finish");
    while let Some((batch, queued, started)) = in_flight.recv().await {
        let result = match queued {
            Queued::Nothing => Ok(()),
            Queued::Failed(err) => Err(err),
            Queued::Commit(commit) => {
                let r = commit.outcome().await;
                metrics::histogram!(m::SHARD_COMMIT_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                r.map_err(Some)
            }
        };
        // A batch after a failed one of its epoch is failed even if the store took it: the shard
        // drops the state it was built on.
        let result = match result {
            Ok(()) if batch.epoch <= failed_epoch.load(Ordering::Acquire) => Err(None),
            other => other,
        };
        match result {
            Ok(()) => {
                let Publish {
                    vehicles,
                    devices,
                    signals,
                } = batch.publish;
                #[cfg(debug_assertions)]
                if let Some(t) = &panic_terminal {
                    if devices.iter().any(|(_, lk)| *lk.fix.terminal_id == **t) {
                        panic!("LIENGATE_DEBUG_PANIC_TERMINAL: finishing a position of {t}");
                    }
                }
                // The slots and the connections' outboxes were last used a report cycle ago:
                // start loading them all before going through them (see `crate::prefetch`).
                for (slot, _) in vehicles.iter().chain(&devices) {
                    crate::prefetch::prefetch(&**slot);
                }
                for (done, _) in &batch.waiting {
                    done.prefetch();
                }
                for (slot, lk) in vehicles.into_iter().chain(devices) {
                    if let Some(old) = slot.set(lk) {
                        super::spare::give_back(old);
                    }
                }
                for (key, s) in signals {
                    live.signals.insert(key, s);
                }
                for (done, outcome) in batch.waiting {
                    // The connection may have gone away meanwhile; the data is stored regardless.
                    done.complete(Ok(outcome));
                }
            }
            Err(err) => {
                if let Some(err) = err {
                    if !matches!(err, StoreError::ChainBroken) {
                        tracing::error!(shard, error = %err, "store commit failed; frames are answered with failure");
                    }
                    failed_epoch.fetch_max(batch.epoch, Ordering::AcqRel);
                }
                for (done, _) in batch.waiting {
                    done.complete(Err(CommitFailed));
                }
            }
        }
    }
}

fn count_flags(flags: FixFlags) {
    for (name, flag) in flags.iter_names() {
        metrics::counter!(m::POSITIONS_FLAGGED, "flag" => name.to_ascii_lowercase()).increment(1);
        let _ = flag;
    }
}

#[cfg(test)]
mod tests {
    use super::{RecentFrames, States, DEDUPE_WINDOW};
    use crate::pipeline::FrameKey;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_hint_is_checked_against_the_key() {
        let mut states: States<u32> = States::default();
        let (a, b): (Arc<str>, Arc<str>) = ("A".into(), "B".into());
        let (hint_a, hint_b) = (AtomicU32::new(0), AtomicU32::new(0));
        *states.find(&a, &hint_a, || 1) += 10;
        // B's hint points at A's place: B gets a state of its own, and the hint follows it.
        assert_eq!(*states.find(&b, &hint_b, || 2), 2);
        assert_eq!(hint_b.load(Ordering::Relaxed), 1);
        assert_eq!(*states.find(&a, &hint_a, || 99), 11);
        // Another `Arc` of the same key, with a wrong hint, finds the same state.
        let a2: Arc<str> = "A".into();
        assert_eq!(*states.find(&a2, &AtomicU32::new(1), || 99), 11);
        assert_eq!(states.get("B"), Some(&2));
        // After a reset every hint is stale: the states are made anew.
        states.clear();
        assert_eq!(*states.find(&b, &hint_b, || 3), 3);
        assert_eq!(*states.find(&a, &hint_a, || 4), 4);
        assert_eq!(states.get_mut("A"), Some(&mut 4));
    }

    #[test]
    fn recent_frames_remember_the_last_window_of_keys() {
        let key = |message_id, serial, first_time_ms| FrameKey {
            message_id,
            serial,
            first_time_ms,
        };
        let mut recent = RecentFrames::default();
        // An empty window holds no key, not even the all-zero one.
        assert!(recent.insert(key(0, 0, 0)));
        assert!(!recent.insert(key(0, 0, 0)));
        for serial in 1..DEDUPE_WINDOW as u16 {
            assert!(recent.insert(key(0x0200, serial, 1_000)));
        }
        // Every part of the key counts: the same serial with another time or message id is new.
        assert!(!recent.insert(key(0x0200, 5, 1_000)));
        assert!(recent.insert(key(0x0200, 5, 2_000)));
        assert!(recent.insert(key(0x0704, 6, 1_000)));
        // Those two pushed out the two oldest keys: (0, 0, 0) and serial 1 are new again.
        assert!(recent.insert(key(0, 0, 0)));
        assert!(recent.insert(key(0x0200, 1, 1_000)));
        // Serial 4 survived, 3 was pushed out by the last insert.
        assert!(!recent.insert(key(0x0200, 4, 1_000)));
        assert!(recent.insert(key(0x0200, 3, 1_000)));
    }
}

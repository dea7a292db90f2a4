//! One shard worker: owns the state of the vehicles hashed to it.
//!
//! The loop takes everything waiting in its queue (up to a bound) as one batch, turns it into
//! store writes, commits them with one `Store::commit`, and only then answers the connections and
//! publishes the new last known positions to the live view. State changes made while building a
//! batch are undone if the commit fails, so a device's re-send after the failure is processed
//! again instead of being taken for a duplicate.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::live::LiveView;
use super::sanitize::{self, JumpDetector, Point};
use super::tracker::Tracker;
use super::{CommitFailed, Committed, FrameKey, Positions, ShardMsg};
use crate::config::{Config, SanitationConfig, StateConfig};
use crate::metrics as m;
use crate::model::{Fix, FixFlags};
use crate::store::{Store, Write};

/// Most messages folded into one commit. Bounds the batch's memory and the latency of its first frame.
const MAX_BATCH: usize = 1024;
/// Recent frame keys remembered per device for duplicate detection.
const DEDUPE_WINDOW: usize = 16;

/// Per-device state: its own last known position, jump detector and recent frame keys.
#[derive(Clone)]
struct DeviceState {
    tracker: Tracker,
    jumps: JumpDetector,
    recent: VecDeque<FrameKey>,
    /// Its last known position changed in the batch being built.
    dirty: bool,
}

/// Per-vehicle state: the fused last known position of all its devices.
#[derive(Clone)]
struct VehicleState {
    tracker: Tracker,
    dirty: bool,
}

pub(super) struct Shard {
    index: usize,
    store: Store,
    live: Arc<LiveView>,
    sanitation: SanitationConfig,
    state_cfg: StateConfig,
    vehicles: HashMap<Arc<str>, VehicleState>,
    devices: HashMap<Arc<str>, DeviceState>,
    label: String,
}

/// Snapshot of the state touched by the current batch, to undo it if the commit fails.
#[derive(Default)]
struct Undo {
    vehicles: HashMap<Arc<str>, Option<VehicleState>>,
    devices: HashMap<Arc<str>, Option<DeviceState>>,
}

impl Shard {
    pub(super) fn new(index: usize, cfg: &Config, store: Store, live: Arc<LiveView>) -> Self {
        Shard {
            index,
            store,
            live,
            sanitation: cfg.sanitation.clone(),
            state_cfg: cfg.state.clone(),
            vehicles: HashMap::new(),
            devices: HashMap::new(),
            label: index.to_string(),
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<ShardMsg>) {
        let mut batch = Vec::with_capacity(64);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            metrics::gauge!(m::SHARD_QUEUE_DEPTH, "shard" => self.label.clone())
                .set(rx.len() as f64);
            self.process(&mut batch).await;
        }
        tracing::debug!(shard = self.index, "shard worker stopped");
    }

    async fn process(&mut self, batch: &mut Vec<ShardMsg>) {
        let now_ms = super::now_ms();
        let mut writes = Vec::new();
        let mut undo = Undo::default();
        let mut dirty_vehicles: Vec<Arc<str>> = Vec::new();
        let mut dirty_devices: Vec<Arc<str>> = Vec::new();
        let mut waiting: Vec<(oneshot::Sender<Result<Committed, CommitFailed>>, Committed)> =
            Vec::new();

        for msg in batch.drain(..) {
            let ShardMsg::Positions(p) = msg;
            let outcome = self.apply(
                &p,
                now_ms,
                &mut writes,
                &mut undo,
                &mut dirty_vehicles,
                &mut dirty_devices,
            );
            if let Some(done) = p.done {
                waiting.push((done, outcome));
            }
        }

        // Coalesced last-known writes: one per touched vehicle and device, in the same commit as
        // the fixes that moved them, so an acknowledged position is never ahead of its last known.
        for key in &dirty_vehicles {
            if let Some(lk) = self
                .vehicles
                .get(key)
                .and_then(|v| v.tracker.last_known.clone())
            {
                writes.push(Write::LastKnown(lk));
            }
        }
        for key in &dirty_devices {
            if let Some(lk) = self
                .devices
                .get(key)
                .and_then(|d| d.tracker.last_known.clone())
            {
                writes.push(Write::LastKnown(lk));
            }
        }

        let result = if writes.is_empty() {
            Ok(())
        } else {
            let n = writes.len();
            let started = Instant::now();
            let r = self.store.commit(writes).await;
            metrics::histogram!(m::SHARD_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
            metrics::histogram!(m::SHARD_BATCH_WRITES).record(n as f64);
            r
        };

        match result {
            Ok(()) => {
                for key in dirty_vehicles {
                    if let Some(v) = self.vehicles.get_mut(&key) {
                        v.dirty = false;
                        if let Some(lk) = v.tracker.last_known.clone() {
                            self.live.vehicles.insert(key, Arc::new(lk));
                        }
                    }
                }
                for key in dirty_devices {
                    if let Some(d) = self.devices.get_mut(&key) {
                        d.dirty = false;
                        if let Some(lk) = d.tracker.last_known.clone() {
                            self.live.devices.insert(key, Arc::new(lk));
                        }
                    }
                }
                for (done, outcome) in waiting {
                    // The connection may have gone away meanwhile; the data is stored regardless.
                    let _ = done.send(Ok(outcome));
                }
            }
            Err(err) => {
                tracing::error!(shard = self.index, error = %err, "store commit failed; frames will be answered with failure");
                for (key, before) in undo.vehicles {
                    match before {
                        Some(t) => self.vehicles.insert(key, t),
                        None => self.vehicles.remove(&key),
                    };
                }
                for (key, before) in undo.devices {
                    match before {
                        Some(d) => self.devices.insert(key, d),
                        None => self.devices.remove(&key),
                    };
                }
                for (done, _) in waiting {
                    let _ = done.send(Err(CommitFailed));
                }
            }
        }
    }

    /// Turns one frame's positions into writes and state changes.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        p: &Positions,
        now_ms: i64,
        writes: &mut Vec<Write>,
        undo: &mut Undo,
        dirty_vehicles: &mut Vec<Arc<str>>,
        dirty_devices: &mut Vec<Arc<str>>,
    ) -> Committed {
        let route = &p.route;
        let tid = &route.terminal_id;
        self.ensure_device(tid, undo);
        if let Some(key) = p.key {
            let dev = self
                .devices
                .get_mut(tid)
                .expect("device state ensured above");
            if dev.recent.contains(&key) {
                metrics::counter!(m::FRAMES_DUPLICATE).increment(1);
                return Committed::Duplicate;
            }
            if dev.recent.len() == DEDUPE_WINDOW {
                dev.recent.pop_front();
            }
            dev.recent.push_back(key);
        }
        if let Some(vid) = &route.vehicle_id {
            self.ensure_vehicle(vid, undo);
        }
        let last_frame_ms = route.vehicle_activity.get().max(p.received_ms);
        let device_frame_ms = route.device_activity.get().max(p.received_ms);
        let mut device_moved = false;
        let mut vehicle_moved = false;
        for r in &p.reports {
            let mut flags = sanitize::static_flags(
                r.time_ms,
                r.latitude,
                r.longitude,
                r.status,
                now_ms,
                &self.sanitation,
            );
            if r.blind_area {
                flags |= FixFlags::BLIND_AREA;
            }
            let time_ms = r.time_ms.unwrap_or(p.received_ms);
            let dev = self
                .devices
                .get_mut(tid)
                .expect("device state ensured above");
            if (flags - FixFlags::BLIND_AREA).is_empty() {
                let point = Point {
                    time_ms,
                    latitude: r.latitude,
                    longitude: r.longitude,
                };
                if dev.jumps.check(point, self.sanitation.max_speed_kmh) {
                    flags |= FixFlags::IMPOSSIBLE_JUMP;
                }
            }
            count_flags(flags);
            let fix = Fix {
                terminal_id: tid.to_string(),
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
            device_moved |=
                dev.tracker
                    .offer(&route.device_key, &fix, device_frame_ms, &self.state_cfg);
            if let Some(vid) = &route.vehicle_id {
                let t = self
                    .vehicles
                    .get_mut(vid)
                    .expect("vehicle state ensured above");
                vehicle_moved |= t.tracker.offer(vid, &fix, last_frame_ms, &self.state_cfg);
            }
            writes.push(Write::Fix {
                vehicle_id: route.vehicle_key.to_string(),
                fix,
            });
        }
        // The flags keep each key once in the dirty lists without searching them.
        if device_moved {
            let dev = self
                .devices
                .get_mut(tid)
                .expect("device state ensured above");
            if !dev.dirty {
                dev.dirty = true;
                dirty_devices.push(tid.clone());
            }
        }
        if vehicle_moved {
            let vid = route.vehicle_id.as_ref().expect("moved implies assigned");
            let v = self
                .vehicles
                .get_mut(vid)
                .expect("vehicle state ensured above");
            if !v.dirty {
                v.dirty = true;
                dirty_vehicles.push(vid.clone());
            }
        }
        Committed::Stored
    }

    /// Makes sure the device's state is loaded, remembering how it was before this batch.
    fn ensure_device(&mut self, tid: &Arc<str>, undo: &mut Undo) {
        if !undo.devices.contains_key(tid) {
            undo.devices
                .insert(tid.clone(), self.devices.get(tid).cloned());
        }
        if self.devices.contains_key(tid) {
            return;
        }
        let tracker = match self.live.devices.get(tid) {
            Some(lk) => Tracker::restore((*lk).clone(), &self.state_cfg),
            None => Tracker::new(),
        };
        let jumps = match &tracker.last_known {
            Some(lk) => JumpDetector::with_anchor(Point {
                time_ms: lk.fix.time_ms,
                latitude: lk.fix.latitude,
                longitude: lk.fix.longitude,
            }),
            None => JumpDetector::default(),
        };
        self.devices.insert(
            tid.clone(),
            DeviceState {
                tracker,
                jumps,
                recent: VecDeque::with_capacity(4),
                dirty: false,
            },
        );
    }

    fn ensure_vehicle(&mut self, vid: &Arc<str>, undo: &mut Undo) {
        if !undo.vehicles.contains_key(vid) {
            undo.vehicles
                .insert(vid.clone(), self.vehicles.get(vid).cloned());
        }
        if self.vehicles.contains_key(vid) {
            return;
        }
        let tracker = match self.live.vehicles.get(vid) {
            Some(lk) => Tracker::restore((*lk).clone(), &self.state_cfg),
            None => Tracker::new(),
        };
        self.vehicles.insert(
            vid.clone(),
            VehicleState {
                tracker,
                dirty: false,
            },
        );
    }
}

fn count_flags(flags: FixFlags) {
    for (name, flag) in flags.iter_names() {
        metrics::counter!(m::POSITIONS_FLAGGED, "flag" => name.to_ascii_lowercase()).increment(1);
        let _ = flag;
    }
}

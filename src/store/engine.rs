//! The fjall side of the store: one keyspace, one partition per kind of record.
//!
//! Everything engine-specific lives here so that the rest of the store (API, committer) does not
//! depend on the engine's types.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fjall::{Batch, Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::fix_wire;
use super::joined::joined;
use super::keys;
use super::track::{self, Pending, Seen};
use super::{Durability, SessionFacts, StoreError, Write};
use crate::model::{Device, Fix, LastKnown, Loan, Signals, Vehicle};

/// On-disk layout version; bumped when keys or value encodings change incompatibly. Version 3
/// stores the track as a log and chunks (`track.rs`); a version 2 store (one entry per point in
/// the `track` partition) is converted when opened.
const FORMAT_VERSION: u32 = 3;

/// The version [`Engine::open`] converts from.
const FORMAT_PER_POINT_TRACK: u32 = 2;

/// Meta key: the sequence of the newest track-log entry folded into chunks, so that sequences
/// keep growing after the log has been emptied.
const TRACK_SEQ_KEY: &str = "track_seq";

/// Memtable size of the track log. A log entry is removed by the fold that follows it within a
/// few seconds under load, and a memtable flush drops the entries already removed (it writes only
/// their small tombstones). So the memtable should hold several folds' worth of log: what is
/// still unfolded when it fills is written to disk a second time.
const LOG_MEMTABLE_BYTES: u32 = 16 * 1024 * 1024;

/// Meta key present while the next start-up recovery must replay in full (`Write::FullReplay`).
const FULL_REPLAY_KEY: &str = "full_replay";

/// Memtable size per partition. Every write is a skiplist insert on the committer thread, and
/// its cost grows with the memtable (cache misses in a deeper skiplist). Measured with
/// `STORE_BENCH_CPU=1 cargo bench --bench store -- soak` (20 s, 2 callers x 512 positions), 4 MiB
/// instead of fjall's 16 MiB default took the committer from 11.4 to 8.6 us of CPU per position
/// and the whole process from 14.7 to 13.4 us: the serial thread gets cheaper and the extra
/// flushes cost less than they save.
const MEMTABLE_BYTES: u32 = 4 * 1024 * 1024;

/// Memtable size of the track chunks. The folder writes them a few hundred large values per
/// fold, so the skiplist stays shallow whatever its size; but every memtable that fills seals
/// the shared journal (see [`MAX_JOURNALING_BYTES`]), and at 4 MiB the chunks alone sealed one
/// a second under load.
const CHUNK_MEMTABLE_BYTES: u32 = 16 * 1024 * 1024;

/// Size-tiered compaction of the track chunks: once a level holds `base * ratio^(level + 1)`
/// bytes, up to `ratio` of its segments are merged into the next level. fjall's default base
/// (64 MiB, so 256 MiB in level 0) suits 64 MiB memtables; with 16 MiB ones, whose flushed
/// segments hold about 12 MB of compressed chunks, level 0 reached fjall's cap of 20 segments
/// before its first merge, and from 20 fjall slows every write (by 1 µs) and from 32 it halts
/// them: in a 150 s closed loop at 60k positions/s that was 33-43 slowed seconds, from 90 s on
/// (session 12). A base of two memtables keeps level 0 near 128 MiB, about ten segments; a
/// point is rewritten about once more in all than with the default, and a track read looks into
/// fewer segments. fjall saves a partition's options when it creates it and uses the saved ones
/// ever after, so this (like the memtable sizes) applies to stores created since.
const CHUNK_TIER_BASE_BYTES: u32 = 2 * CHUNK_MEMTABLE_BYTES;
const CHUNK_TIER_RATIO: u8 = 4;

/// Journal bytes fjall lets accumulate before it stalls writes. fjall counts every sealed
/// journal at its preallocated length (32 MiB) rather than what it holds (a few MiB when a
/// memtable fills it quickly), and from 90 % of its default limit (512 MiB, so 15 sealed
/// journals) it sleeps half a second in the write path: in a 1,000-terminal closed loop every
/// run stalled all answers for 0.5 s about seven seconds in (session 11). Its monitor flushes
/// the partitions that pin old journals from half of the limit on, so twice the default
/// leaves it time to do so at the rates this gateway writes, while the journals on disk (which
/// a restart replays) stay a few hundred MiB at most.
const MAX_JOURNALING_BYTES: u64 = 1024 * 1024 * 1024;

/// Memtable size of the partitions written a record or two per device (registry, auth codes,
/// session facts). Their memtables hold what a fleet wrote when it registered or connected, a
/// few hundred bytes per device, until they are flushed; 1 MiB bounds that memory well below
/// the 4 MiB of the position partitions, and these partitions see too few writes for the
/// extra flushes to matter.
const SMALL_MEMTABLE_BYTES: u32 = 1024 * 1024;

/// How many deletes go into one batch when purging, so a huge purge does not build one huge
/// batch in memory.
const DELETE_CHUNK: usize = 10_000;

/// Failures a unit test can make the next apply or sync report, as a full or failing disk would:
/// the committer's and syncer's handling of them cannot be reached otherwise.
#[cfg(test)]
#[derive(Default)]
pub(super) struct Faults {
    pub apply: std::sync::atomic::AtomicBool,
    pub sync: std::sync::atomic::AtomicBool,
    pub fold: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl Faults {
    /// The injected error if `which` was armed (it is disarmed by this call).
    pub fn take(which: &std::sync::atomic::AtomicBool) -> Result<(), StoreError> {
        if which.swap(false, Ordering::AcqRel) {
            return Err(StoreError::Engine(Arc::new(std::io::Error::other(
                "injected failure",
            ))));
        }
        Ok(())
    }
}

#[derive(Clone)]
pub(super) struct Engine {
    keyspace: Keyspace,
    /// The keyspace directory (the syncer finds the journal files under it).
    path: std::path::PathBuf,
    devices: PartitionHandle,
    vehicles: PartitionHandle,
    loans: PartitionHandle,
    /// (vehicle, terminal) -> empty: which devices a vehicle has.
    vehicle_devices: PartitionHandle,
    auth_codes: PartitionHandle,
    last_known: PartitionHandle,
    /// Record key -> signals of a key without a last known position (`Write::Signals`).
    signals: PartitionHandle,
    /// (vehicle, hour of device time, fold sequence) -> the vehicle's points in that hour that
    /// one fold wrote, in commit order (see `track.rs`).
    chunks: PartitionHandle,
    /// Log sequence -> the points of one group commit (see `track.rs`).
    track_log: PartitionHandle,
    /// The next track-log sequence.
    log_seq: Arc<AtomicU64>,
    /// The lowest track-log sequence that can still be in the log: everything below was folded.
    /// Readers and the start-up fold scan the log from here, because below it lies one tombstone
    /// per folded log entry until the next `compact_log`, and walking those was the cost of every
    /// track read.
    log_floor: Arc<AtomicU64>,
    /// Set by the folder when a fold fails; folds stay stopped for the life of the process, and
    /// the health check reports it (see `committer.rs`).
    fold_failed: Arc<std::sync::OnceLock<StoreError>>,
    /// Positions committed to the log and not yet folded (for the `store_track_log_points` gauge).
    unfolded: Arc<AtomicU64>,
    /// Failures the unit tests inject, shared by every clone of this engine.
    #[cfg(test)]
    pub(super) faults: Arc<Faults>,
    sessions: PartitionHandle,
    /// Layout version; also read by the health probe.
    meta: PartitionHandle,
}

/// What one applied batch did.
pub(super) struct Applied {
    pub positions: u64,
    /// The track-log entry written with the batch, if it had positions: its sequence and its
    /// value (shared with the engine), for the fold.
    pub log: Option<(u64, fjall::Slice)>,
}

/// A piece of a group commit's track-log value: a batch's points as the shard encoded them, or a
/// single point's encoding in the commit's own buffer.
enum LogPart<'a> {
    Track(&'a [u8]),
    Fix(std::ops::Range<usize>),
}

/// A vehicle id's bytes and the start of an hour of device time: which chunk a point goes to.
type HourOf<'a> = (&'a [u8], i64);

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // postcard only fails on unsupported serde features (e.g. unknown-length sequences), which
    // our model types do not use; a failure here is a programming error.
    postcard::to_stdvec(v).expect("model types encode with postcard")
}

/// [`encode`] into a reused buffer.
fn encode_into<T: Serialize>(buf: &mut Vec<u8>, v: &T) {
    buf.clear();
    *buf = postcard::to_extend(v, std::mem::take(buf)).expect("model types encode with postcard");
}

fn decode<T: DeserializeOwned>(keyspace: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|source| StoreError::Decode { keyspace, source })
}

impl Engine {
    pub fn open(path: &Path, fold_points: usize) -> Result<Engine, StoreError> {
        let open_err = |e: fjall::Error| StoreError::Open {
            path: path.to_path_buf(),
            source: Arc::new(e),
        };
        // We persist the journal ourselves after every batch (fsync or buffered), so fjall's own
        // background persistence is not needed.
        let keyspace = Config::new(path)
            .manual_journal_persist(true)
            .max_journaling_size(MAX_JOURNALING_BYTES)
            .open()
            .map_err(open_err)?;
        let part = |name: &str| {
            let memtable = match name {
                "track_chunks" => CHUNK_MEMTABLE_BYTES,
                "last_known" => MEMTABLE_BYTES,
                "track_log" => LOG_MEMTABLE_BYTES,
                _ => SMALL_MEMTABLE_BYTES,
            };
            let mut opts = PartitionCreateOptions::default().max_memtable_size(memtable);
            if name == "track_log" {
                // The log's values live until the next fold, seconds: compressing them when their
                // memtable is flushed was CPU spent on data about to be deleted (lz4 was 2 % of the
                // gateway's user time at 10,000 terminals, session 13). New stores only: fjall
                // keeps a partition's options from its creation.
                opts = opts.compression(fjall::CompressionType::None);
            }
            if name == "track_chunks" {
                // Size-tiered rather than fjall's default leveled compaction for the track: every
                // flushed memtable holds points of all vehicles, so under leveled compaction each
                // L0 segment overlaps all of L1 and every compaction rewrites it. That was 4-5 %
                // of the gateway's CPU in a ten-second end-to-end run and grows with the level's
                // size; tiered compaction rewrites each point a few times in all. Reads are
                // per-vehicle range scans, which the extra overlapping segments cost little.
                opts = opts.compaction_strategy(fjall::compaction::Strategy::SizeTiered(
                    fjall::compaction::SizeTiered::new(CHUNK_TIER_BASE_BYTES, CHUNK_TIER_RATIO),
                ));
            }
            keyspace.open_partition(name, opts).map_err(open_err)
        };
        let meta = part("meta")?;
        let format = match meta.get("format")? {
            Some(v) => v
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX),
            None => FORMAT_VERSION,
        };
        if format != FORMAT_VERSION && format != FORMAT_PER_POINT_TRACK {
            return Err(StoreError::Format {
                found: format,
                expected: FORMAT_VERSION,
            });
        }
        let engine = Engine {
            devices: part("devices")?,
            vehicles: part("vehicles")?,
            loans: part("loans")?,
            vehicle_devices: part("vehicle_devices")?,
            auth_codes: part("auth_codes")?,
            last_known: part("last_known")?,
            signals: part("signals")?,
            chunks: part("track_chunks")?,
            track_log: part("track_log")?,
            log_seq: Arc::new(AtomicU64::new(0)),
            log_floor: Arc::new(AtomicU64::new(0)),
            fold_failed: Arc::default(),
            unfolded: Arc::new(AtomicU64::new(0)),
            #[cfg(test)]
            faults: Arc::default(),
            sessions: part("sessions")?,
            meta: meta.clone(),
            keyspace: keyspace.clone(),
            path: path.to_path_buf(),
        };
        let folded = match meta.get(TRACK_SEQ_KEY)? {
            Some(v) => v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        };
        // Folds succeed in sequence order and the first failure stops them for the rest of the
        // process (see `committer.rs`), so every log entry at or below `folded` is gone.
        let corrupt = StoreError::Corrupt {
            keyspace: "meta",
            detail: "the track fold mark is out of range",
        };
        let floor = folded.checked_add(1).ok_or(corrupt.clone())?;
        engine.log_floor.store(floor, Ordering::Relaxed);
        let logged = match engine.track_log.range(keys::log_key(floor)..).next_back() {
            Some(kv) => kv?
                .0
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .unwrap_or(0),
            None => 0,
        };
        let next = folded.max(logged).checked_add(1).ok_or(corrupt)?;
        engine.log_seq.store(next, Ordering::Relaxed);
        // Whatever a crash left in the log goes into chunks before anything reads the track, so
        // that start-up recovery, which reads every vehicle's recent track, finds a short log.
        engine.fold_log(fold_points)?;
        if format == FORMAT_PER_POINT_TRACK {
            engine.convert_per_point_track(fold_points)?;
        }
        if let Err(e) = engine.compact_log() {
            // Only the log's size and its scans' speed are at stake; the folder compacts again.
            tracing::warn!(error = %e, "compacting the track log at open failed");
        }
        if format != FORMAT_VERSION || meta.get("format")?.is_none() {
            meta.insert("format", FORMAT_VERSION.to_be_bytes())?;
        }
        keyspace.persist(PersistMode::SyncAll)?;
        Ok(engine)
    }

    /// Folds every track-log entry into chunks, `fold_points` points at a time.
    fn fold_log(&self, fold_points: usize) -> Result<(), StoreError> {
        let mut pending = Pending::default();
        for kv in self.log_from_floor() {
            let (key, value) = kv?;
            let seq = key
                .as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    keyspace: "track_log",
                    detail: "key is not a sequence",
                })?;
            // What a crash left in the log is checked point by point before the fold copies it
            // into chunks: a point that does not decode fails the open here, with the entry still
            // in the log, rather than every later read of its hour (and retention) once it sits in
            // a chunk. Live folds copy bytes this process encoded a moment before.
            let points = track::check_points(&value)?;
            pending.push_logged(seq, value, points);
            if pending.points >= fold_points {
                self.fold(std::mem::take(&mut pending))?;
            }
        }
        if !pending.is_empty() {
            self.fold(pending)?;
        }
        Ok(())
    }

    /// The log entries from the floor on (see `log_floor`).
    fn log_from_floor(&self) -> impl DoubleEndedIterator<Item = fjall::Result<fjall::KvPair>> {
        let floor = self.log_floor.load(Ordering::Acquire);
        self.track_log.range(keys::log_key(floor)..)
    }

    /// Drops the tombstones the folds left in the track log (and the log values they cover).
    ///
    /// A fold removes its log entries with ordinary tombstones, and the engine keeps a tombstone
    /// until a compaction writes the last level, which for a partition of this size practically
    /// never happens: the log would grow by a tombstone per group commit forever. fjall 2 has no
    /// public weak (single) delete that would vanish together with its value, so the folder
    /// compacts the log partition fully every `LOG_COMPACT_EVERY` folds, and the store does at
    /// open. The partition holds little more than those tombstones, so this is cheap.
    /// `major_compact` is `#[doc(hidden)]` in fjall 2.11 (pinned by Cargo.lock); re-check it when
    /// upgrading.
    ///
    /// The compaction can bring folded entries back: it drops a tombstone when it writes the last
    /// level, but keeps the older value under it when that value's sequence number is above the
    /// engine's garbage-collection watermark, which is 0 when the keyspace has just opened and
    /// trails the newest batches afterwards. Such an entry lies below the fold mark, where only
    /// revived entries can be live, so they are removed again right after; with the tombstones
    /// gone that scan is short, and a later compaction drops the new tombstones with their values.
    pub fn compact_log(&self) -> Result<(), StoreError> {
        self.track_log.major_compact()?;
        let floor = self.log_floor.load(Ordering::Acquire);
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::Buffer));
        for kv in self.track_log.range(..keys::log_key(floor)) {
            batch.remove(&self.track_log, kv?.0);
        }
        if !batch.is_empty() {
            batch.commit()?;
        }
        Ok(())
    }

    /// Converts a format 2 store's per-point track (partition `track`) into chunks and drops it.
    /// Every point is read once; the conversion is one fold per `fold_points` points, so a
    /// crash in the middle repeats it from the start at the next open (the copies it made
    /// already are superseded on read by the same points written again).
    fn convert_per_point_track(&self, fold_points: usize) -> Result<(), StoreError> {
        if !self.keyspace.partition_exists("track") {
            return Ok(());
        }
        let old = self
            .keyspace
            .open_partition("track", PartitionCreateOptions::default())?;
        // The points go to the fold in the log entry format, as if they had been logged.
        let mut value = Vec::new();
        let mut points = 0;
        let mut converted = 0u64;
        for kv in old.iter() {
            let (key, stored) = kv?;
            let Some(vehicle) = keys::vehicle_id_of(&key) else {
                continue;
            };
            let vehicle = String::from_utf8_lossy(vehicle);
            let fix: Fix = decode("track", &stored)?;
            track::append_log_entry(&mut value, &vehicle, &fix);
            points += 1;
            converted += 1;
            if points >= fold_points {
                let mut pending = Pending::default();
                pending.push_value(std::mem::take(&mut value).into(), points);
                self.fold(pending)?;
                points = 0;
            }
        }
        if points > 0 {
            let mut pending = Pending::default();
            pending.push_value(value.into(), points);
            self.fold(pending)?;
        }
        self.keyspace.persist(PersistMode::SyncAll)?;
        self.keyspace.delete_partition(old)?;
        tracing::info!(
            points = converted,
            "converted the track to format 3 (chunks)"
        );
        Ok(())
    }

    /// Writes `pending`'s points as chunks and removes the log entries they came from, in one
    /// atomic batch (see `track.rs`). Not synced: the journal's next sync makes it durable, and
    /// until then the log entries are there for a restart to fold again.
    pub fn fold(&self, pending: Pending) -> Result<(), StoreError> {
        #[cfg(test)]
        Faults::take(&self.faults.fold)?;
        let Pending { values, seqs, .. } = pending;
        // The chunks' sequence: above every chunk written before (their logs' sequences are
        // lower) and below every log entry still to come.
        let seq = match seqs.iter().max() {
            Some(max) => *max,
            None => self.log_seq.fetch_add(1, Ordering::Relaxed),
        };
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::Buffer));
        // Each vehicle's points of each hour: their encodings as they are in the log, in commit
        // order, and their total length. A chunk keeps that order: readers sort each hour's
        // points and drop re-sent copies anyway (`track::merge_sorted`), so sorting here too was
        // work done twice (a third of the fold's cost, session 13). The points are never decoded
        // and are copied once, into the chunk's value (`joined`).
        let mut hours: HashMap<HourOf<'_>, (usize, Vec<&[u8]>), foldhash::fast::RandomState> =
            HashMap::default();
        for value in &values {
            track::log_entries(value, |vehicle, time_ms, fix| {
                let (len, points) = hours
                    .entry((vehicle, keys::bucket_of(time_ms)))
                    .or_default();
                *len += fix.len();
                points.push(fix);
            })?;
        }
        let mut key = Vec::with_capacity(64);
        for ((vehicle, bucket), (len, points)) in hours {
            let vehicle =
                std::str::from_utf8(vehicle).map_err(|_| track::corrupt("vehicle id not UTF-8"))?;
            keys::write_chunk_key(&mut key, vehicle, bucket, seq);
            let prefix = fix_wire::chunk_prefix(points.len());
            let prefix = prefix.as_ref();
            let chunk = joined(
                prefix.len() + len,
                std::iter::once(prefix).chain(points.iter().copied()),
            );
            batch.insert(&self.chunks, key.as_slice(), chunk);
        }
        for s in &seqs {
            batch.remove(&self.track_log, keys::log_key(*s));
        }
        batch.insert(&self.meta, TRACK_SEQ_KEY, seq.to_be_bytes());
        batch.commit()?;
        if let Some(max) = seqs.iter().max() {
            self.log_floor
                .fetch_max(max.saturating_add(1), Ordering::AcqRel);
        }
        Ok(())
    }

    fn persist_mode(durability: Durability) -> PersistMode {
        match durability {
            // fsync of the journal file; fjall syncs the directory itself when it rotates files.
            Durability::Fsync => PersistMode::SyncAll,
            // Flushes fjall's userspace journal buffer into the page cache: the data survives
            // the death of our process, not an OS crash.
            Durability::Buffered => PersistMode::Buffer,
        }
    }

    /// Writes every request's writes as one atomic batch and persists it once.
    pub fn apply<'a>(
        &self,
        requests: impl Iterator<Item = &'a [Write]>,
        durability: Durability,
    ) -> Result<Applied, StoreError> {
        #[cfg(test)]
        Faults::take(&self.faults.apply)?;
        let mut batch = self
            .keyspace
            .batch()
            .durability(Some(Self::persist_mode(durability)));
        let mut positions = 0u64;
        // The batch's positions, as one track-log entry (see `track.rs`): the pieces it is made
        // of, in commit order, joined at the end with one copy. Single points (`Write::Fix`)
        // are encoded into `fixes` and referred to by range.
        let mut log: Vec<LogPart<'_>> = Vec::new();
        let mut fixes = Vec::new();
        // Devices written earlier in this batch: their index entries are not visible to reads
        // until the batch commits, so a second write of the same device must see the first.
        let mut devices_in_batch: HashMap<&str, Option<&str>> = HashMap::new();
        // Values of the hot writes are built in a reused buffer; fjall copies them.
        let mut value = Vec::with_capacity(256);
        for writes in requests {
            for w in writes {
                match w {
                    Write::Fix { vehicle_id, fix } => {
                        let start = fixes.len();
                        track::append_log_entry(&mut fixes, vehicle_id, fix);
                        log.push(LogPart::Fix(start..fixes.len()));
                        positions += 1;
                    }
                    Write::Track(points) => {
                        log.push(LogPart::Track(points.log_bytes()));
                        positions += points.len();
                    }
                    Write::LastKnown(lk) => {
                        encode_into(&mut value, lk);
                        batch.insert(&self.last_known, lk.vehicle_id.as_bytes(), value.as_slice());
                    }
                    Write::Signals { key, signals } => {
                        batch.insert(&self.signals, key.as_bytes(), encode(signals));
                    }
                    Write::AuthCode { terminal_id, code } => {
                        batch.insert(&self.auth_codes, terminal_id.as_bytes(), code.as_bytes());
                    }
                    Write::Device(d) => {
                        self.index_device(&mut batch, &mut devices_in_batch, d)?;
                        batch.insert(&self.devices, d.terminal_id.as_bytes(), encode(d));
                    }
                    Write::Vehicle(v) => {
                        batch.insert(&self.vehicles, v.vehicle_id.as_bytes(), encode(v));
                    }
                    Write::Loan(l) => {
                        batch.insert(&self.loans, l.loan_id.as_bytes(), encode(l));
                    }
                    Write::Session { terminal_id, facts } => {
                        batch.insert(&self.sessions, terminal_id.as_bytes(), encode(facts));
                    }
                    Write::FullReplay(true) => batch.insert(&self.meta, FULL_REPLAY_KEY, []),
                    Write::FullReplay(false) => batch.remove(&self.meta, FULL_REPLAY_KEY),
                }
            }
        }
        let parts = log.iter().map(|part| match part {
            LogPart::Track(bytes) => *bytes,
            LogPart::Fix(range) => &fixes[range.clone()],
        });
        let len: usize = parts.clone().map(<[u8]>::len).sum();
        let log = if len == 0 {
            None
        } else {
            let seq = self.log_seq.fetch_add(1, Ordering::Relaxed);
            let value = joined(len, parts);
            batch.insert(&self.track_log, keys::log_key(seq), value.clone());
            Some((seq, value))
        };
        batch.commit()?;
        Ok(Applied { positions, log })
    }

    /// Keeps the vehicle -> devices index in step when a device is (re)assigned.
    fn index_device<'a>(
        &self,
        batch: &mut Batch,
        in_batch: &mut HashMap<&'a str, Option<&'a str>>,
        d: &'a Device,
    ) -> Result<(), StoreError> {
        let old: Option<String> = match in_batch.get(d.terminal_id.as_str()) {
            Some(v) => v.map(str::to_owned),
            None => self.device(&d.terminal_id)?.and_then(|old| old.vehicle_id),
        };
        if let Some(old) = old.as_deref() {
            if Some(old) != d.vehicle_id.as_deref() {
                batch.remove(
                    &self.vehicle_devices,
                    keys::vehicle_device_key(old, &d.terminal_id),
                );
            }
        }
        if let Some(v) = &d.vehicle_id {
            batch.insert(
                &self.vehicle_devices,
                keys::vehicle_device_key(v, &d.terminal_id),
                [],
            );
        }
        in_batch.insert(&d.terminal_id, d.vehicle_id.as_deref());
        Ok(())
    }

    /// A cheap read through the whole read path (partition, memtable or block cache, decoding):
    /// the layout version record, which every open store has.
    pub fn probe(&self) -> Result<(), StoreError> {
        match self.meta.get("format")? {
            Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => Ok(()),
            Some(v) => Err(StoreError::Format {
                found: v
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .unwrap_or(u32::MAX),
                expected: FORMAT_VERSION,
            }),
            None => Err(StoreError::Probe("the layout version record is missing")),
        }
    }

    /// The error of the fold that stopped folding in this process, if one failed.
    pub fn fold_failure(&self) -> Option<&StoreError> {
        self.fold_failed.get()
    }

    /// Records the first failed fold (later ones are not attempted).
    pub fn set_fold_failure(&self, err: StoreError) {
        let _ = self.fold_failed.set(err);
    }

    /// Adds positions written to the log and subtracts folded ones; returns how many are in the
    /// log, not yet folded, now.
    pub fn count_unfolded(&self, logged: u64, folded: u64) -> u64 {
        if logged > 0 {
            self.unfolded.fetch_add(logged, Ordering::Relaxed);
        }
        if folded > 0 {
            self.unfolded.fetch_sub(folded, Ordering::Relaxed);
        }
        self.unfolded.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes everything written so far durable, whatever the configured mode.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.keyspace.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(
        part: &PartitionHandle,
        name: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match part.get(key)? {
            Some(v) => decode(name, &v).map(Some),
            None => Ok(None),
        }
    }

    fn all<T: DeserializeOwned>(
        part: &PartitionHandle,
        name: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        part.iter()
            .map(|kv| {
                let (_, v) = kv?;
                decode(name, &v)
            })
            .collect()
    }

    pub fn last_known(&self, vehicle_id: &str) -> Result<Option<LastKnown>, StoreError> {
        Self::get(&self.last_known, "last_known", vehicle_id)
    }

    pub fn all_last_known(&self) -> Result<Vec<LastKnown>, StoreError> {
        Self::all(&self.last_known, "last_known")
    }

    pub fn all_signals(&self) -> Result<Vec<(String, Signals)>, StoreError> {
        self.signals
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    decode("signals", &v)?,
                ))
            })
            .collect()
    }

    pub fn full_replay(&self) -> Result<bool, StoreError> {
        Ok(self.meta.contains_key(FULL_REPLAY_KEY)?)
    }

    pub fn track(
        &self,
        vehicle_id: &str,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<Fix>, StoreError> {
        let mut out = Vec::new();
        if from_ms > to_ms || limit == 0 {
            return Ok(out);
        }
        self.read_track(vehicle_id, from_ms, to_ms, &mut |fix| {
            out.push(fix);
            out.len() < limit
        })?;
        Ok(out)
    }

    /// Calls `visit` with every track point of a vehicle at or after `from_ms`, in device-time
    /// order, one at a time (no collected `Vec`). Returns how many were visited.
    pub fn scan_track(
        &self,
        vehicle_id: &str,
        from_ms: i64,
        visit: &mut dyn FnMut(Fix),
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        self.read_track(vehicle_id, from_ms, i64::MAX, &mut |fix| {
            visit(fix);
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// Visits a vehicle's points with `from_ms <= device time <= to_ms` in (device time,
    /// terminal) order, each once, until `visit` returns false. Reads the log before the chunks:
    /// a fold committing in between then shows its points twice rather than not at all, and the
    /// merge drops the second copy (see `track.rs`). Holds the log's points of the vehicle and
    /// one bucket's chunks in memory at a time.
    fn read_track(
        &self,
        vehicle_id: &str,
        from_ms: i64,
        to_ms: i64,
        visit: &mut dyn FnMut(Fix) -> bool,
    ) -> Result<(), StoreError> {
        let in_range = |f: &Fix| from_ms <= f.time_ms && f.time_ms <= to_ms;
        let mut logged: Vec<Seen> = Vec::new();
        for kv in self.log_from_floor() {
            let (key, value) = kv?;
            let seq = key.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0);
            track::log_points_of(&value, vehicle_id, |fix| {
                if in_range(&fix) {
                    logged.push((seq, fix));
                }
            })?;
        }
        track::merge_sorted(&mut logged);
        let mut logged = logged.into_iter().peekable();
        // Emits the points of one bucket, with the log's points before and in that bucket.
        let mut emit = |bucket: Option<i64>, mut points: Vec<Seen>| -> bool {
            while let Some(next) = logged.peek().map(|(_, f)| keys::bucket_of(f.time_ms)) {
                match bucket {
                    Some(b) if next > b => break,
                    Some(b) if next == b => points.extend(logged.next()),
                    _ => {
                        let (_, f) = logged.next().expect("peeked");
                        if !visit(f) {
                            return false;
                        }
                    }
                }
            }
            track::merge_sorted(&mut points);
            points.into_iter().all(|(_, f)| visit(f))
        };
        let lo = keys::track_lower(vehicle_id, keys::bucket_of(from_ms));
        let hi = keys::track_upper_inclusive(vehicle_id, keys::bucket_of(to_ms));
        let mut bucket: Option<i64> = None;
        let mut points: Vec<Seen> = Vec::new();
        for kv in self.chunks.range(lo..hi) {
            let (key, value) = kv?;
            let (b, seq) = keys::chunk_key_parts(&key).ok_or(StoreError::Corrupt {
                keyspace: "track_chunks",
                detail: "malformed chunk key",
            })?;
            if bucket.is_some_and(|cur| cur != b) && !emit(bucket, std::mem::take(&mut points)) {
                return Ok(());
            }
            bucket = Some(b);
            let chunk: Vec<Fix> = decode("track_chunks", &value)?;
            points.extend(chunk.into_iter().filter(in_range).map(|f| (seq, f)));
        }
        if bucket.is_some() && !emit(bucket, points) {
            return Ok(());
        }
        emit(None, Vec::new());
        Ok(())
    }

    pub fn auth_code(&self, terminal_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .auth_codes
            .get(terminal_id)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn device(&self, terminal_id: &str) -> Result<Option<Device>, StoreError> {
        Self::get(&self.devices, "devices", terminal_id)
    }

    pub fn devices(&self) -> Result<Vec<Device>, StoreError> {
        Self::all(&self.devices, "devices")
    }

    pub fn devices_of_vehicle(&self, vehicle_id: &str) -> Result<Vec<Device>, StoreError> {
        let prefix = keys::id_prefix(vehicle_id);
        let mut out = Vec::new();
        for kv in self.vehicle_devices.prefix(&prefix) {
            let (k, _) = kv?;
            let terminal = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            // The index and the device record are written in the same batch, so a missing or
            // reassigned device here would mean a torn write; skip it rather than fail reads.
            if let Some(d) = self.device(&terminal)? {
                if d.vehicle_id.as_deref() == Some(vehicle_id) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    pub fn vehicle(&self, vehicle_id: &str) -> Result<Option<Vehicle>, StoreError> {
        Self::get(&self.vehicles, "vehicles", vehicle_id)
    }

    pub fn vehicles(&self) -> Result<Vec<Vehicle>, StoreError> {
        Self::all(&self.vehicles, "vehicles")
    }

    pub fn loan(&self, loan_id: &str) -> Result<Option<Loan>, StoreError> {
        Self::get(&self.loans, "loans", loan_id)
    }

    pub fn session(&self, terminal_id: &str) -> Result<Option<SessionFacts>, StoreError> {
        Self::get(&self.sessions, "sessions", terminal_id)
    }

    /// Deletes or trims a vehicle's chunks in `lo..hi` (chunk keys), keeping the points at or
    /// after `keep_from_ms` (none with `None`). Works in batches of at most `DELETE_CHUNK` chunks
    /// so that a huge purge does not build one huge batch in memory. Returns how many distinct
    /// points were removed: a fix a device re-sent after a lost answer can be stored twice, in
    /// two chunks of the same hour, and is one point to whoever asked for the purge.
    fn drop_chunks(
        &self,
        lo: Vec<u8>,
        hi: Vec<u8>,
        keep_from_ms: Option<i64>,
        durability: Durability,
    ) -> Result<u64, StoreError> {
        let mut removed = 0u64;
        // Copies of a point share its device time, hence its hour: the set of points removed
        // is kept for the hour being walked only (chunk keys sort by hour first).
        let mut hour = None;
        let mut removed_in_hour: HashSet<(Arc<str>, i64)> = HashSet::new();
        let mut cursor = lo;
        loop {
            let mut batch = self
                .keyspace
                .batch()
                .durability(Some(Self::persist_mode(durability)));
            let mut seen = 0;
            let mut last = None;
            for kv in self
                .chunks
                .range(cursor.clone()..hi.clone())
                .take(DELETE_CHUNK)
            {
                let (key, value) = kv?;
                seen += 1;
                let chunk: Vec<Fix> = decode("track_chunks", &value)?;
                let bucket = keys::chunk_key_parts(&key).map(|(bucket, _)| bucket);
                if bucket != hour {
                    hour = bucket;
                    removed_in_hour.clear();
                }
                let (kept, gone): (Vec<&Fix>, Vec<&Fix>) = chunk
                    .iter()
                    .partition(|f| keep_from_ms.is_some_and(|keep| f.time_ms >= keep));
                for f in gone {
                    if removed_in_hour.insert((f.terminal_id.clone(), f.time_ms)) {
                        removed += 1;
                    }
                }
                if kept.is_empty() {
                    batch.remove(&self.chunks, key.clone());
                } else if kept.len() < chunk.len() {
                    batch.insert(&self.chunks, key.clone(), encode(&kept));
                }
                last = Some(key);
            }
            batch.commit()?;
            match last {
                Some(key) if seen == DELETE_CHUNK => {
                    cursor = key.to_vec();
                    cursor.push(0);
                }
                _ => return Ok(removed),
            }
        }
    }

    pub fn purge_vehicle(
        &self,
        vehicle_id: &str,
        durability: Durability,
    ) -> Result<u64, StoreError> {
        let deleted = self.drop_chunks(
            keys::track_lower(vehicle_id, i64::MIN),
            keys::track_upper_inclusive(vehicle_id, i64::MAX),
            None,
            durability,
        )?;
        let mut batch = self
            .keyspace
            .batch()
            .durability(Some(Self::persist_mode(durability)));
        batch.remove(&self.last_known, vehicle_id.as_bytes());
        batch.remove(&self.signals, vehicle_id.as_bytes());
        batch.commit()?;
        Ok(deleted)
    }

    pub fn drop_track_before(
        &self,
        cutoff_ms: i64,
        durability: Durability,
    ) -> Result<u64, StoreError> {
        // Walk the chunks vehicle by vehicle: find the first key at or after the cursor, drop or
        // trim that vehicle's chunks of the buckets up to the cutoff's, then jump past all of its
        // keys. One seek per vehicle, and no index of vehicles to keep up to date.
        let mut deleted = 0;
        let mut cursor: Vec<u8> = Vec::new();
        loop {
            let Some(kv) = self.chunks.range(cursor.clone()..).next() else {
                return Ok(deleted);
            };
            let (key, _) = kv?;
            let Some(prefix) = keys::vehicle_prefix_of(&key) else {
                // Not a key we wrote; step over it rather than loop on it.
                cursor = key.to_vec();
                cursor.push(0);
                continue;
            };
            let mut lo = prefix.to_vec();
            lo.extend_from_slice(&keys::time_bytes(i64::MIN));
            let mut hi = prefix.to_vec();
            // Every chunk of the buckets up to the one holding the cutoff.
            hi.extend_from_slice(&keys::time_bytes(keys::bucket_of(cutoff_ms) + 1));
            deleted += self.drop_chunks(lo, hi, Some(cutoff_ms), durability)?;
            cursor = keys::past_prefix(prefix);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(time_ms: i64) -> Fix {
        crate::store::track::tests::fix("1", time_ms, 1.0)
    }

    /// A log entry whose value reached a segment before its fold, and whose tombstone reached
    /// another segment after it, would come back as a live value from `compact_log` at open:
    /// fjall's garbage-collection watermark is still 0 then (its monitor raises it 250 ms after
    /// the keyspace opens), so the compaction keeps the older value, and drops the tombstone
    /// because it writes the last level. `compact_log` removes such entries again.
    #[test]
    fn compacting_the_log_does_not_bring_folded_entries_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let e = Engine::open(&path, 1_000).unwrap();
            let w = vec![Write::Fix {
                vehicle_id: "V".into(),
                fix: fix(10),
            }];
            let seq = e
                .apply(std::iter::once(w.as_slice()), Durability::Buffered)
                .unwrap()
                .log
                .unwrap()
                .0;
            // The memtable fills before the fold: the value goes to a segment.
            e.track_log.rotate_memtable_and_wait().unwrap();
            let mut value = Vec::new();
            track::append_log_entry(&mut value, "V", &fix(10));
            let mut p = Pending::default();
            p.push_logged(seq, value.into(), 1);
            e.fold(p).unwrap();
            // ... and the fold's tombstone to the next one.
            e.track_log.rotate_memtable_and_wait().unwrap();
            assert!(!e.track_log.contains_key(keys::log_key(seq)).unwrap());
            e.sync().unwrap();
        }
        // The open's compaction runs while the engine's watermark is still 0.
        let e = Engine::open(&path, 1_000).unwrap();
        let live: Vec<u64> = e
            .track_log
            .iter()
            .map(|kv| u64::from_be_bytes(kv.unwrap().0.as_ref().try_into().unwrap()))
            .collect();
        assert!(
            live.is_empty(),
            "folded log entries {live:?} are live again (floor {})",
            e.log_floor.load(Ordering::Relaxed)
        );
    }
}

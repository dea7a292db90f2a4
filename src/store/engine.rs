//! The fjall side of the store: one keyspace, one partition per kind of record.
//!
//! Everything engine-specific lives here so that the rest of the store (API, committer) does not
//! depend on the engine's types.
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use fjall::{Batch, Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys;
use super::{Durability, SessionFacts, StoreError, Write};
use crate::model::{Device, Fix, LastKnown, Loan, Vehicle};

/// On-disk layout version; bumped when keys or value encodings change incompatibly.
const FORMAT_VERSION: u32 = 2;

/// Meta key present while the next start-up recovery must replay in full (`Write::FullReplay`).
const FULL_REPLAY_KEY: &str = "full_replay";

/// Memtable size per partition. Every write is a skiplist insert on the committer thread, and
/// its cost grows with the memtable (cache misses in a deeper skiplist). Measured with
/// `STORE_BENCH_CPU=1 cargo bench --bench store -- soak` (20 s, 2 callers x 512 positions), 4 MiB
/// instead of fjall's 16 MiB default took the committer from 11.4 to 8.6 us of CPU per position
/// and the whole process from 14.7 to 13.4 us: the serial thread gets cheaper and the extra
/// flushes cost less than they save.
const MEMTABLE_BYTES: u32 = 4 * 1024 * 1024;

/// Memtable size of the partitions written a record or two per device (registry, auth codes,
/// session facts). Their memtables hold what a fleet wrote when it registered or connected, a
/// few hundred bytes per device, until they are flushed; 1 MiB bounds that memory well below
/// the 4 MiB of the position partitions, and these partitions see too few writes for the
/// extra flushes to matter.
const SMALL_MEMTABLE_BYTES: u32 = 1024 * 1024;

/// How many deletes go into one batch when purging, so a huge purge does not build one huge
/// batch in memory.
const DELETE_CHUNK: usize = 10_000;

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
    /// (vehicle, device time, terminal) -> Fix.
    track: PartitionHandle,
    sessions: PartitionHandle,
    /// Layout version; also read by the health probe.
    meta: PartitionHandle,
}

/// What one applied batch did, for metrics.
pub(super) struct Applied {
    pub positions: u64,
}

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
    pub fn open(path: &Path) -> Result<Engine, StoreError> {
        let open_err = |e: fjall::Error| StoreError::Open {
            path: path.to_path_buf(),
            source: Arc::new(e),
        };
        // We persist the journal ourselves after every batch (fsync or buffered), so fjall's own
        // background persistence is not needed.
        let keyspace = Config::new(path)
            .manual_journal_persist(true)
            .open()
            .map_err(open_err)?;
        let part = |name: &str| {
            let memtable = match name {
                "track" | "last_known" => MEMTABLE_BYTES,
                _ => SMALL_MEMTABLE_BYTES,
            };
            let mut opts = PartitionCreateOptions::default().max_memtable_size(memtable);
            if name == "track" {
                // Size-tiered rather than fjall's default leveled compaction for the track: every
                // flushed memtable holds points of all vehicles, so under leveled compaction each
                // L0 segment overlaps all of L1 and every compaction rewrites it. That was 4-5 %
                // of the gateway's CPU in a ten-second end-to-end run and grows with the level's
                // size; tiered compaction rewrites each point a few times in all. Reads are
                // per-vehicle range scans, which the extra overlapping segments cost little.
                opts = opts.compaction_strategy(fjall::compaction::Strategy::SizeTiered(
                    fjall::compaction::SizeTiered::default(),
                ));
            }
            keyspace.open_partition(name, opts).map_err(open_err)
        };
        let meta = part("meta")?;
        let engine = Engine {
            devices: part("devices")?,
            vehicles: part("vehicles")?,
            loans: part("loans")?,
            vehicle_devices: part("vehicle_devices")?,
            auth_codes: part("auth_codes")?,
            last_known: part("last_known")?,
            track: part("track")?,
            sessions: part("sessions")?,
            meta: meta.clone(),
            keyspace: keyspace.clone(),
            path: path.to_path_buf(),
        };
        match meta.get("format")? {
            Some(v) => {
                let found = v
                    .as_ref()
                    .try_into()
                    .map(u32::from_be_bytes)
                    .unwrap_or(u32::MAX);
                if found != FORMAT_VERSION {
                    return Err(StoreError::Format {
                        found,
                        expected: FORMAT_VERSION,
                    });
                }
            }
            None => {
                meta.insert("format", FORMAT_VERSION.to_be_bytes())?;
                keyspace.persist(PersistMode::SyncAll)?;
            }
        }
        Ok(engine)
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
        let mut batch = self
            .keyspace
            .batch()
            .durability(Some(Self::persist_mode(durability)));
        let mut positions = 0u64;
        // Devices written earlier in this batch: their index entries are not visible to reads
        // until the batch commits, so a second write of the same device must see the first.
        let mut devices_in_batch: HashMap<&str, Option<&str>> = HashMap::new();
        // Keys and values of the hot writes are built in reused buffers; fjall copies them.
        let mut key = Vec::with_capacity(64);
        let mut value = Vec::with_capacity(256);
        for writes in requests {
            for w in writes {
                match w {
                    Write::Fix { vehicle_id, fix } => {
                        keys::write_track_key(&mut key, vehicle_id, fix.time_ms, &fix.terminal_id);
                        encode_into(&mut value, fix);
                        batch.insert(&self.track, key.as_slice(), value.as_slice());
                        positions += 1;
                    }
                    Write::LastKnown(lk) => {
                        encode_into(&mut value, lk);
                        batch.insert(&self.last_known, lk.vehicle_id.as_bytes(), value.as_slice());
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
        batch.commit()?;
        Ok(Applied { positions })
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
        if from_ms > to_ms || limit == 0 {
            return Ok(Vec::new());
        }
        let lo = keys::track_lower(vehicle_id, from_ms);
        let hi = keys::track_upper_inclusive(vehicle_id, to_ms);
        self.track
            .range(lo..hi)
            .take(limit)
            .map(|kv| {
                let (_, v) = kv?;
                decode("track", &v)
            })
            .collect()
    }

    /// Calls `visit` with every track point of a vehicle at or after `from_ms`, in device-time
    /// order, one at a time (no collected `Vec`). Returns how many were visited.
    pub fn scan_track(
        &self,
        vehicle_id: &str,
        from_ms: i64,
        visit: &mut dyn FnMut(Fix),
    ) -> Result<u64, StoreError> {
        let lo = keys::track_lower(vehicle_id, from_ms);
        let hi = keys::track_upper_inclusive(vehicle_id, i64::MAX);
        let mut n = 0;
        for kv in self.track.range(lo..hi) {
            let (_, v) = kv?;
            visit(decode("track", &v)?);
            n += 1;
        }
        Ok(n)
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

    /// Deletes the track keys in `lo..hi` in chunks; returns how many were deleted.
    fn delete_track_range(
        &self,
        lo: Vec<u8>,
        hi: Vec<u8>,
        durability: Durability,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        loop {
            let keys: Vec<_> = self
                .track
                .range(lo.clone()..hi.clone())
                .take(DELETE_CHUNK)
                .map(|kv| kv.map(|(k, _)| k))
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                return Ok(deleted);
            }
            let n = keys.len();
            let mut batch = self
                .keyspace
                .batch()
                .durability(Some(Self::persist_mode(durability)));
            for k in keys {
                batch.remove(&self.track, k);
            }
            batch.commit()?;
            deleted += n as u64;
            if n < DELETE_CHUNK {
                return Ok(deleted);
            }
        }
    }

    pub fn purge_vehicle(
        &self,
        vehicle_id: &str,
        durability: Durability,
    ) -> Result<u64, StoreError> {
        let deleted = self.delete_track_range(
            keys::track_lower(vehicle_id, i64::MIN),
            keys::track_upper_inclusive(vehicle_id, i64::MAX),
            durability,
        )?;
        let mut batch = self
            .keyspace
            .batch()
            .durability(Some(Self::persist_mode(durability)));
        batch.remove(&self.last_known, vehicle_id.as_bytes());
        batch.commit()?;
        Ok(deleted)
    }

    pub fn drop_track_before(
        &self,
        cutoff_ms: i64,
        durability: Durability,
    ) -> Result<u64, StoreError> {
        // Walk the track vehicle by vehicle: find the first key at or after the cursor, delete
        // that vehicle's points before the cutoff, then jump past all of its keys. One seek per
        // vehicle, and no index of vehicles to keep up to date on every write.
        let mut deleted = 0;
        let mut cursor: Vec<u8> = Vec::new();
        loop {
            let Some(kv) = self.track.range(cursor.clone()..).next() else {
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
            hi.extend_from_slice(&keys::time_bytes(cutoff_ms));
            deleted += self.delete_track_range(lo, hi, durability)?;
            cursor = keys::past_prefix(prefix);
        }
    }
}

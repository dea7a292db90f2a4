//! The live view that the HTTP API reads: last known positions published by the shard workers and
//! the time of the last frame of every device and vehicle, updated by the connections.
//!
//! The shards own the state; this is a read-mostly copy. Maps are split into partitions, each
//! behind a `std::sync::RwLock` held only for a lookup or an insert (never across an `.await`),
//! so that readers and the shard writers rarely meet.
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use crate::model::{LastKnown, Signals};

const PARTITIONS: usize = 64;

/// foldhash rather than SipHash: the shards insert two records per position. Seeded per process,
/// because the keys come from devices.
type Hasher = foldhash::fast::RandomState;
type Partition<V> = RwLock<HashMap<Arc<str>, V, Hasher>>;

/// A concurrent map of string keys split into partitions.
pub struct Table<V> {
    parts: Box<[Partition<V>]>,
    hasher: Hasher,
}

impl<V: Clone> Table<V> {
    pub fn new() -> Self {
        Table {
            parts: (0..PARTITIONS)
                .map(|_| RwLock::new(HashMap::default()))
                .collect(),
            hasher: Hasher::default(),
        }
    }

    fn part(&self, key: &str) -> &Partition<V> {
        &self.parts[(self.hasher.hash_one(key) as usize) % PARTITIONS]
    }

    pub fn get(&self, key: &str) -> Option<V> {
        self.part(key)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub fn insert(&self, key: Arc<str>, value: V) {
        self.part(&key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, value);
    }

    /// Returns the value for `key`, inserting `make()` first if there is none.
    pub fn get_or_insert_with(&self, key: &str, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.get(key) {
            return v;
        }
        self.part(key)
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(Arc::from(key))
            .or_insert_with(make)
            .clone()
    }

    pub fn len(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V: Clone> Default for Table<V> {
    fn default() -> Self {
        Self::new()
    }
}

/// The published value of one key, kept where the key's owner can reach it without a map lookup.
///
/// The shards publish a new last known position with every position they commit. Through the map
/// that was a hash, a partition lock, a probe that compared key bytes, and a key to drop, all for
/// a key whose entry had long existed: the largest item of a shard's own time per position. The
/// shard now keeps its keys' slots in their state and publishes with one store into the slot.
pub struct Slot<T>(RwLock<Option<Arc<T>>>);

impl<T> Slot<T> {
    pub fn new(value: Option<Arc<T>>) -> Self {
        Slot(RwLock::new(value))
    }

    pub fn get(&self) -> Option<Arc<T>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the value and returns the old one, to be dropped by the caller after the lock is
    /// released.
    pub fn set(&self, value: Arc<T>) -> Option<Arc<T>> {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .replace(value)
    }
}

/// Published records by key: a [`Table`] of [`Slot`]s.
pub struct Records<T> {
    slots: Table<Arc<Slot<T>>>,
}

impl<T> Records<T> {
    pub fn new() -> Self {
        Records {
            slots: Table::new(),
        }
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.slots.get(key).and_then(|slot| slot.get())
    }

    /// The slot of `key`, created empty if there is none: its owner publishes through it.
    pub fn slot(&self, key: &str) -> Arc<Slot<T>> {
        self.slots
            .get_or_insert_with(key, || Arc::new(Slot::new(None)))
    }

    /// Sets the value of `key` (start-up recovery; the shards go through [`Records::slot`]).
    pub fn insert(&self, key: &str, value: Arc<T>) {
        self.slot(key).set(value);
    }
}

impl<T> Default for Records<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// How stale [`Activity`] may be (see [`Activity::touch`]).
pub const ACTIVITY_RESOLUTION_MS: i64 = 100;

/// Wall-clock time (Unix ms) of the last frame seen, shared by everyone who updates or reads it.
#[derive(Debug, Default)]
pub struct Activity(AtomicI64);

impl Activity {
    pub fn new(ms: i64) -> Self {
        Activity(AtomicI64::new(ms))
    }

    /// Records a frame at `now_ms`. Liveness is judged in minutes (`state.offline_after`), so a
    /// time less than [`ACTIVITY_RESOLUTION_MS`] newer than the recorded one is not written: the
    /// atomic read-modify-write on a line the shards read was the costliest thing a frame did on
    /// its connection, and the frames of a busy device often come that close together.
    pub fn touch(&self, now_ms: i64) {
        if now_ms - self.0.load(Ordering::Relaxed) >= ACTIVITY_RESOLUTION_MS {
            self.0.fetch_max(now_ms, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Everything the HTTP API shows about positions.
#[derive(Default)]
pub struct LiveView {
    /// Last known per vehicle (assigned devices) keyed by vehicle id.
    pub vehicles: Records<LastKnown>,
    /// Last known per device keyed by terminal id.
    pub devices: Records<LastKnown>,
    /// Signals of the record keys (vehicle id, or device key) that have reports but no last known
    /// position: what start-up recovery found, then what the shards committed. The shards start
    /// such a key's tracker from them (also after dropping their state on a failed commit);
    /// nothing else reads them yet.
    pub signals: Table<Arc<Signals>>,
    /// Last frame per vehicle key (vehicle id, or the device key of an unassigned device).
    pub vehicle_activity: Table<Arc<Activity>>,
    /// Last frame per terminal id.
    pub device_activity: Table<Arc<Activity>>,
}

impl LiveView {
    pub fn new() -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_publish_through_the_slot_the_map_holds() {
        let records: Records<u32> = Records::new();
        assert_eq!(records.get("a"), None);
        // A slot taken before any value exists is the one readers find afterwards.
        let slot = records.slot("a");
        assert_eq!(records.get("a"), None, "an empty slot is no value");
        assert_eq!(slot.set(Arc::new(1)), None);
        assert_eq!(records.get("a").as_deref(), Some(&1));
        records.insert("a", Arc::new(2));
        assert_eq!(slot.get().as_deref(), Some(&2));
        assert_eq!(slot.set(Arc::new(3)).as_deref(), Some(&2));
        assert_eq!(records.get("a").as_deref(), Some(&3));
        assert_eq!(records.get("b"), None);
    }
}

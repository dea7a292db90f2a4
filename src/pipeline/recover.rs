//! Start-up recovery of the last known positions.
//!
//! The shards commit every track point before its frame is answered, but write the last known
//! records only every `state.last_known_flush` and at a graceful shutdown (coalesced, latest
//! wins), because those writes were a large share of the store's work per position. After a
//! crash the stored records can therefore be behind the track. A stored record accounts for every
//! fix up to its own device time, so only track points with a later device time can change it:
//! for every vehicle and device in the registry we replay those points, in device-time order,
//! through the same `Tracker` the shards use, and write the records that changed back before the
//! shards start. The scan covers what arrived after the last flush (about one flush interval of
//! data per vehicle) plus fixes that never became a last known (flagged ones, late blind-area
//! ones); it streams the track and holds one vehicle's trackers at a time.
use std::collections::HashMap;

use super::tracker::Tracker;
use super::{device_key, DEVICE_KEY_PREFIX};
use crate::config::StateConfig;
use crate::model::{Fix, LastKnown};
use crate::store::{Store, StoreError, Write};

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every last known record, brought up to date with the track.
    pub records: Vec<LastKnown>,
    /// The records that the track moved on (already included in `records`); the caller commits
    /// them so that the next start does not scan the same points again.
    pub writes: Vec<Write>,
    /// Track points visited.
    pub scanned: u64,
}

/// The trackers of one track key: the vehicle's (absent for an unassigned device, whose track key
/// is its own device key) and each of its devices'.
struct Group {
    vehicle: Option<(String, Tracker)>,
    devices: HashMap<String, (String, Tracker)>,
}

fn restore(stored: &HashMap<String, LastKnown>, key: &str, cfg: &StateConfig) -> Tracker {
    match stored.get(key) {
        Some(lk) => Tracker::restore(lk.clone(), cfg),
        None => Tracker::new(),
    }
}

/// First device time a tracker has not accounted for yet.
fn scan_from(t: &Tracker) -> i64 {
    match &t.last_known {
        Some(lk) => lk.fix.time_ms.saturating_add(1),
        None => i64::MIN,
    }
}

fn offer(key: &str, t: &mut Tracker, fix: &Fix, cfg: &StateConfig) {
    let last_frame = t
        .last_known
        .as_ref()
        .map_or(fix.received_ms, |lk| lk.last_frame_ms.max(fix.received_ms));
    t.offer(key, fix, last_frame, cfg);
}

/// Reads the stored last known records and replays the track points newer than each of them.
pub fn recover_last_known(store: &Store, cfg: &StateConfig) -> Result<Recovered, StoreError> {
    let mut stored: HashMap<String, LastKnown> = store
        .all_last_known()?
        .into_iter()
        .map(|lk| (lk.vehicle_id.clone(), lk))
        .collect();
    // Every device registers (and is stored) before its first position, so the devices list
    // names every track key and every record key that positions can have moved.
    let mut groups: HashMap<String, Group> = HashMap::new();
    for d in store.devices()? {
        let dkey = device_key(&d.terminal_id);
        let track_key = d.vehicle_id.clone().unwrap_or_else(|| dkey.clone());
        let group = groups.entry(track_key).or_insert_with(|| Group {
            vehicle: d
                .vehicle_id
                .as_ref()
                .map(|v| (v.clone(), restore(&stored, v, cfg))),
            devices: HashMap::new(),
        });
        let tracker = restore(&stored, &dkey, cfg);
        group.devices.insert(d.terminal_id, (dkey, tracker));
    }
    let mut out = Recovered::default();
    for (track_key, mut g) in groups {
        debug_assert!(g.vehicle.is_some() || track_key.starts_with(DEVICE_KEY_PREFIX));
        let from = g
            .vehicle
            .iter()
            .map(|(_, t)| t)
            .chain(g.devices.values().map(|(_, t)| t))
            .map(scan_from)
            .min()
            .unwrap_or(i64::MAX);
        if from == i64::MAX {
            continue;
        }
        out.scanned += store.scan_track(&track_key, from, |fix| {
            // Each tracker ignores what is not newer than its own record, so one pass from the
            // oldest of them serves all.
            if let Some((key, t)) = &mut g.vehicle {
                offer(key, t, &fix, cfg);
            }
            if let Some((key, t)) = g.devices.get_mut(&fix.terminal_id) {
                offer(key, t, &fix, cfg);
            }
        })?;
        let trackers = g.vehicle.into_iter().chain(g.devices.into_values());
        for (key, t) in trackers {
            let Some(lk) = t.last_known else { continue };
            if stored.get(&key) != Some(&lk) {
                out.writes.push(Write::LastKnown(lk.clone()));
                stored.insert(key, lk);
            }
        }
    }
    out.records = stored.into_values().collect();
    Ok(out)
}

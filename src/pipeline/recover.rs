//! Start-up recovery of the last known positions.
//!
//! The shards commit every track point before its frame is answered, but write the last known
//! records only every `state.last_known_flush` and at a graceful shutdown (coalesced, latest
//! wins), because those writes were a large share of the store's work per position. After a
//! crash the stored records can therefore be behind the track. For every vehicle and device in
//! the registry we replay the track points that can have moved its record, in device-time order,
//! through the same `Tracker` the shards use, and write the records that changed back before the
//! shards start. The scan streams the track and holds one vehicle's trackers at a time.
//!
//! Where the replay starts: at the device time of the stored record's newest report
//! (`signals.time_ms`), its "replayed up to" mark. The record accounts for every report up to
//! then that was stored before it, and a report stored after it with an older device time can only
//! have changed it (a late blind-area fix newer than the last valid one, an older report with a
//! newer battery level) if the shard wrote the record in the same commit, which it does for
//! exactly those reports (`Shard::build`). So the scan covers about one flush interval of data
//! per key, however long ago its last valid fix was: a device in an underground garage that sends
//! no-GNSS reports for weeks is not rescanned at every start. (Starting at the newest valid fix
//! instead, as this module once did, needed no help from the shard, but rescanned all those
//! flagged reports every time.) Ties are replayed, since a report with the same device time as
//! the newest one still updates the signals.
//!
//! A vehicle's replay serves all its trackers in one pass, so it would start at the oldest of
//! their marks: a wireless unit that went silent weeks ago, or never had a record, would make
//! every start rescan weeks of its wired partner's points. Hence a second bound: the shard also
//! writes a device's record with any report more than `LAG_BEHIND_VEHICLE_MS` older than the
//! vehicle's newest report at the time, and a device's first record at once, so a report that
//! moved a device's record without it has a device time no earlier than the vehicle's newest
//! report less that lag (a report that moved no record, such as a no-GNSS report before the
//! device's first fix, reaches the record through the first record's immediate write). And
//! whenever the vehicle's record is stored (at a flush, or at once after a late report), the
//! records of its devices that changed since the last committed flush are stored with it. So a
//! device report that no stored record reflects was applied after the vehicle's stored record was
//! built, when the vehicle's newest report (which only grows) was at least that record's mark:
//! the vehicle's replay can start at its stored mark less the lag, whatever its devices' marks.
//! A shard that dropped its state after a failed commit may have lost the list of what was
//! pending, so once a commit or sync has failed the store adds `Write::FullReplay` to every batch
//! (and writes it at once after a failed sync); the next start then replays from each record's
//! own mark (and clears the flag). A failed sync leaves its batch in the journal, so a stored
//! record can then be ahead of the state the shard reloads (from the live view, which holds only
//! what was answered as stored); the shard therefore writes each reloaded key's first change at
//! once, which brings its stored mark back to what the shard has seen.
//!
//! The replay groups each device's points under the vehicle the registry assigns it to, which is
//! the vehicle they were stored with only until a registry import moves the device. So recovery
//! runs before any import: `serve` imports its registry file after it, and
//! `liengate registry import` runs it first.
//!
//! A key that has reports but no last known record (none of them had a valid fix: a tracker in
//! an underground garage since it was installed) has a signals record instead (`Write::Signals`):
//! its newest signals, whose time is the key's mark like a record's. The shards keep it like a
//! last known record (coalesced, written at once when a late report changes it, the first one at
//! once) and start such a key's tracker from it (`Tracker::with_signals`), and recovery writes it
//! for the keys it replayed. So each start replays such a key from its mark, not from the start of
//! its track. A report older than the mark can still change a signals record (a delayed battery
//! reading newer than the record's), which is why the late-write rule covers it too.
use std::collections::HashMap;
use std::sync::Arc;

use super::tracker::Tracker;
use super::{device_key, DEVICE_KEY_PREFIX, LAG_BEHIND_VEHICLE_MS};
use crate::config::StateConfig;
use crate::model::{Fix, LastKnown, Signals};
use crate::store::{Store, StoreError, Write};

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every last known record, brought up to date with the track.
    pub records: Vec<LastKnown>,
    /// The signals of every key that has reports but no last known record (no valid fix yet),
    /// by record key: the shards start such a key's tracker from them (see `Tracker::with_signals`).
    pub signals: Vec<(String, Signals)>,
    /// The records that the track moved on (already included in `records` and `signals`); the
    /// caller commits them so that the next start does not scan the same points again.
    pub writes: Vec<Write>,
    /// Track points visited.
    pub scanned: u64,
}

/// One record key's tracker during the replay.
struct Keyed {
    key: Arc<str>,
    tracker: Tracker,
    /// The device time of the stored record's newest report (see the module doc): of its last
    /// known record, or of its signals record for a key without one; `None` for a key with
    /// neither.
    mark: Option<i64>,
}

/// The trackers of one track key: the vehicle's (absent for an unassigned device, whose track key
/// is its own device key) and each of its devices' by terminal id.
struct Group {
    vehicle: Option<Keyed>,
    devices: HashMap<String, Keyed>,
}

/// The stored records: last known positions, and signals of the keys without one.
struct Stored {
    records: HashMap<String, LastKnown>,
    signals: HashMap<String, Signals>,
}

impl Stored {
    fn restore(&self, key: &str, cfg: &StateConfig) -> Keyed {
        let (tracker, mark) = match (self.records.get(key), self.signals.get(key)) {
            (Some(lk), _) => (
                Tracker::restore(Arc::new(lk.clone()), cfg),
                Some(lk.signals.time_ms),
            ),
            (None, Some(signals)) => (
                Tracker::with_signals(signals.clone()),
                Some(signals.time_ms),
            ),
            (None, None) => (Tracker::new(), None),
        };
        Keyed {
            key: Arc::from(key),
            tracker,
            mark,
        }
    }
}

/// First device time whose track points can still change a tracker's stored record: its mark, or
/// the whole track without one; but never before `floor` (see the module doc).
fn scan_from(k: &Keyed, floor: Option<i64>) -> i64 {
    let own = k.mark.unwrap_or(i64::MIN);
    floor.map_or(own, |floor| own.max(floor))
}

fn offer(k: &mut Keyed, fix: &Fix, cfg: &StateConfig) {
    let last_frame = k
        .tracker
        .last_known
        .as_ref()
        .map_or(fix.received_ms, |lk| lk.last_frame_ms.max(fix.received_ms));
    k.tracker.offer(&k.key, fix, last_frame, cfg);
}

/// Offers the points of one device time (drained from `points`) to their trackers, in the order
/// they were received.
fn offer_in_arrival_order(g: &mut Group, points: &mut Vec<Fix>, cfg: &StateConfig) {
    // Stable: points received in the same millisecond keep the track's order.
    points.sort_by_key(|f| f.received_ms);
    for fix in points.drain(..) {
        if let Some(k) = &mut g.vehicle {
            offer(k, &fix, cfg);
        }
        if let Some(k) = g.devices.get_mut(&*fix.terminal_id) {
            offer(k, &fix, cfg);
        }
    }
}

/// Reads the stored last known records and replays the track points newer than each of them.
pub fn recover_last_known(store: &Store, cfg: &StateConfig) -> Result<Recovered, StoreError> {
    let mut stored = Stored {
        records: store
            .all_last_known()?
            .into_iter()
            .map(|lk| (lk.vehicle_id.to_string(), lk))
            .collect(),
        signals: store.all_signals()?.into_iter().collect(),
    };
    // Every device registers (and is stored) before its first position, so the devices list
    // names every track key and every record key that positions can have moved.
    let mut groups: HashMap<String, Group> = HashMap::new();
    for d in store.devices()? {
        let dkey = device_key(&d.terminal_id);
        let track_key = d.vehicle_id.clone().unwrap_or_else(|| dkey.clone());
        let group = groups.entry(track_key).or_insert_with(|| Group {
            vehicle: d.vehicle_id.as_ref().map(|v| stored.restore(v, cfg)),
            devices: HashMap::new(),
        });
        group
            .devices
            .insert(d.terminal_id, stored.restore(&dkey, cfg));
    }
    // A vehicle whose devices were all moved elsewhere (a registry import before this start) can
    // still have track points newer than its record.
    let orphans: Vec<String> = stored
        .records
        .keys()
        .chain(stored.signals.keys())
        .filter(|key| !key.starts_with(DEVICE_KEY_PREFIX) && !groups.contains_key(*key))
        .cloned()
        .collect();
    for key in orphans {
        let group = Group {
            vehicle: Some(stored.restore(&key, cfg)),
            devices: HashMap::new(),
        };
        groups.insert(key, group);
    }
    // After a failed commit a shard may have lost track of pending records (see
    // `Write::FullReplay`): then the devices' own marks alone bound the replay, as they always may.
    let bounded = !store.full_replay()?;
    let mut out = Recovered::default();
    if !bounded {
        out.writes.push(Write::FullReplay(false));
    }
    for (track_key, mut g) in groups {
        debug_assert!(g.vehicle.is_some() || track_key.starts_with(DEVICE_KEY_PREFIX));
        // The vehicle's own mark bounds its devices' replays. Only the vehicle record's: it has
        // seen every report of the vehicle's devices, where a device's record may come from an
        // earlier assignment. (An unassigned device is replayed from its own mark.)
        let floor = g
            .vehicle
            .as_ref()
            .and_then(|k| k.mark)
            .map(|m| m.saturating_sub(LAG_BEHIND_VEHICLE_MS))
            .filter(|_| bounded);
        let from = g
            .vehicle
            .iter()
            .chain(g.devices.values())
            .map(|k| scan_from(k, floor))
            .min()
            .unwrap_or(i64::MAX);
        if from == i64::MAX {
            continue;
        }
        // Each tracker ignores what is not newer than its own record, so one pass from the oldest
        // of them serves all. The points of one device time are offered in the order they were
        // received, not in the track's terminal order: that is the order the shard applied them
        // in (but for two connections racing within microseconds), and of two battery or voltage
        // readings of the same second, from a car's two devices, the later one wins.
        let mut same_time: Vec<Fix> = Vec::new();
        out.scanned += store.scan_track(&track_key, from, |fix| {
            if same_time.first().is_some_and(|f| f.time_ms != fix.time_ms) {
                offer_in_arrival_order(&mut g, &mut same_time, cfg);
            }
            same_time.push(fix);
        })?;
        offer_in_arrival_order(&mut g, &mut same_time, cfg);
        for k in g.vehicle.into_iter().chain(g.devices.into_values()) {
            match k.tracker.last_known {
                Some(lk) => {
                    if stored.records.get(&*k.key) != Some(&*lk) {
                        let lk = Arc::unwrap_or_clone(lk);
                        out.writes.push(Write::LastKnown(lk.clone()));
                        stored.records.insert(k.key.to_string(), lk);
                    }
                }
                // No valid fix yet: keep what its reports said, and where this replay got to.
                None => {
                    let signals = k.tracker.signals();
                    if !signals.is_empty() && stored.signals.get(&*k.key) != Some(signals) {
                        out.writes.push(Write::Signals {
                            key: k.key.clone(),
                            signals: signals.clone(),
                        });
                        stored.signals.insert(k.key.to_string(), signals.clone());
                    }
                }
            }
        }
    }
    let Stored { records, signals } = stored;
    out.signals = signals
        .into_iter()
        .filter(|(key, _)| !records.contains_key(key))
        .collect();
    out.records = records.into_values().collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, FixFlags, Motion};
    use crate::store::StoreConfig;

    fn fix(terminal: &str, time_s: i64, flags: FixFlags) -> Fix {
        Fix {
            terminal_id: terminal.into(),
            time_ms: time_s * 1000,
            received_ms: 1_000_000 + time_s,
            latitude: 22.5 + time_s as f64 * 1e-6,
            longitude: 113.9,
            altitude_m: 0,
            speed_kmh: 40.0,
            course: 0,
            alarm: 0,
            status: 3,
            flags,
            battery_pct: None,
            voltage_mv: None,
        }
    }

    fn device(terminal: &str, vehicle: Option<&str>) -> Write {
        Write::Device(Device {
            vehicle_id: vehicle.map(Into::into),
            ..Device::unassigned(terminal)
        })
    }

    fn record(key: &str, f: Fix) -> LastKnown {
        LastKnown {
            vehicle_id: key.into(),
            fix: f,
            motion: Motion::Moving,
            acc: true,
            last_frame_ms: 0,
            signals: Default::default(),
        }
    }

    fn time_of(r: &Recovered, key: &str) -> Option<i64> {
        recovered(r, key).map(|lk| lk.fix.time_ms / 1000)
    }

    /// The recovered last known record of `key`.
    fn recovered<'a>(r: &'a Recovered, key: &str) -> Option<&'a LastKnown> {
        r.records.iter().find(|lk| &*lk.vehicle_id == key)
    }

    /// A track point of `vehicle`.
    fn point(vehicle: &str, fix: Fix) -> Write {
        Write::Fix {
            vehicle_id: vehicle.into(),
            fix,
        }
    }

    /// An empty store in a temp dir that lives as long as the returned guard.
    fn open_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        (dir, store)
    }

    /// A record whose newest report is at `mark_s`.
    fn record_at(key: &str, f: Fix, mark_s: i64) -> LastKnown {
        let mut lk = record(key, f);
        lk.signals.time_ms = mark_s * 1000;
        lk
    }

    #[test]
    fn a_vehicle_replay_starts_shortly_before_its_own_record_unless_a_full_replay_is_due() {
        let (_dir, store) = open_store();
        let ok = FixFlags::empty();
        let mut writes = vec![
            device("A", Some("V")),
            device("B", Some("V")),
            // The vehicle and A last reported at 10,000 s; B's record is from 100 s.
            Write::LastKnown(record_at("V", fix("A", 10_000, ok), 10_000)),
            Write::LastKnown(record_at("device:A", fix("A", 10_000, ok), 10_000)),
            Write::LastKnown(record_at("device:B", fix("B", 100, ok), 100)),
            point("V", fix("A", 10_000, ok)),
            point("V", fix("B", 100, ok)),
        ];
        // B's points from long before the vehicle's newest report and not in B's record: the
        // shard never leaves such a record unwritten (it lags the vehicle by far more than
        // LAG_BEHIND_VEHICLE_MS), so the bounded replay does not look for them.
        writes.extend((200..=300).map(|t| point("V", fix("B", t, ok))));
        store.commit_blocking(writes).unwrap();
        let cfg = StateConfig::default();

        let r = recover_last_known(&store, &cfg).unwrap();
        assert_eq!(
            r.scanned, 1,
            "only A's point at 10,000 s is within the bound"
        );
        assert_eq!(time_of(&r, "device:B"), Some(100));
        assert!(!r.writes.iter().any(|w| matches!(w, Write::FullReplay(_))));

        // After a failed commit or sync (the store flags every later batch), the next start
        // replays from each record's own mark and clears the flag.
        store
            .commit_blocking(vec![Write::FullReplay(true)])
            .unwrap();
        let r = recover_last_known(&store, &cfg).unwrap();
        assert_eq!(r.scanned, 103, "from B's mark at 100 s on");
        assert_eq!(time_of(&r, "device:B"), Some(300));
        store.commit_blocking(r.writes).unwrap();
        assert!(!store.full_replay().unwrap());
    }

    #[test]
    fn replays_only_valid_fixes_newer_than_each_stored_record() {
        let (_dir, store) = open_store();
        store
            .commit_blocking(vec![
                device("A", Some("V")),
                device("B", Some("V")),
                device("U", None),
                // Stored records: vehicle at 100 (from A), A at 100, B at 90.
                Write::LastKnown(record("V", fix("A", 100, FixFlags::empty()))),
                Write::LastKnown(record("device:A", fix("A", 100, FixFlags::empty()))),
                Write::LastKnown(record("device:B", fix("B", 90, FixFlags::empty()))),
                point("V", fix("A", 100, FixFlags::empty())),
                point("V", fix("B", 90, FixFlags::empty())),
                // After the records: a late blind-area fix of B (valid), a newer valid fix of
                // A, and a still newer flagged one of B, which must not count.
                point("V", fix("B", 95, FixFlags::BLIND_AREA)),
                point("V", fix("A", 150, FixFlags::empty())),
                point("V", fix("B", 200, FixFlags::NO_GNSS)),
                // A vehicle none of whose devices it still has.
                Write::LastKnown(record("W", fix("C", 10, FixFlags::empty()))),
                point("W", fix("C", 30, FixFlags::empty())),
                // An unassigned device without any record: its own track key.
                point("device:U", fix("U", 10, FixFlags::empty())),
                point("device:U", fix("U", 20, FixFlags::ZERO_COORD)),
            ])
            .unwrap();
        let cfg = StateConfig::default();
        let r = recover_last_known(&store, &cfg).unwrap();
        assert_eq!(time_of(&r, "V"), Some(150));
        assert_eq!(time_of(&r, "device:A"), Some(150));
        assert_eq!(time_of(&r, "device:B"), Some(95));
        assert_eq!(time_of(&r, "device:U"), Some(10));
        assert_eq!(time_of(&r, "W"), Some(30));
        let v = recovered(&r, "V").unwrap();
        assert_eq!(&*v.fix.terminal_id, "A");
        // The flagged fix is not a position, but its alarm and status words are the newest.
        assert_eq!(v.signals.time_ms, 200_000);
        assert_eq!(&*v.signals.terminal_id, "B");
        assert_eq!(r.writes.len(), 5, "V, A, B, U and W moved");
        // Written back, a second pass finds nothing to change.
        store.commit_blocking(r.writes).unwrap();
        let again = recover_last_known(&store, &cfg).unwrap();
        assert!(again.writes.is_empty());
        assert_eq!(time_of(&again, "V"), Some(150));
    }

    /// A record as the shards write it: its signals are those of the newest report, here a
    /// flagged one at `newest_s`, while its position is the last valid fix.
    fn record_with_newest(key: &str, valid: Fix, newest_s: i64) -> LastKnown {
        let mut lk = record(key, valid);
        lk.signals.time_ms = newest_s * 1000;
        lk.signals.terminal_id = lk.fix.terminal_id.clone();
        lk.signals.status = lk.fix.status;
        lk
    }

    #[test]
    fn replay_starts_at_the_newest_report_not_at_the_last_valid_fix() {
        let (_dir, store) = open_store();
        // A device in an underground garage: one valid fix at 100, then weeks of no-GNSS
        // reports, all of them accounted for by its stored record (newest report at 1100).
        let mut writes = vec![
            device("G", None),
            point("device:G", fix("G", 100, FixFlags::empty())),
            Write::LastKnown(record_with_newest(
                "device:G",
                fix("G", 100, FixFlags::empty()),
                1100,
            )),
        ];
        for t in 101..=1100 {
            writes.push(point("device:G", fix("G", t, FixFlags::NO_GNSS)));
        }
        // Stored after the record and not in it (a crash before the next flush): a newer
        // no-GNSS report and a newer valid fix.
        writes.push(point("device:G", fix("G", 1101, FixFlags::NO_GNSS)));
        writes.push(point("device:G", fix("G", 1102, FixFlags::empty())));
        store.commit_blocking(writes).unwrap();
        let cfg = StateConfig::default();
        let r = recover_last_known(&store, &cfg).unwrap();
        // The report at 1100 itself (ties are replayed) and the two after it.
        assert_eq!(r.scanned, 3);
        assert_eq!(time_of(&r, "device:G"), Some(1102));
        let g = recovered(&r, "device:G");
        assert_eq!(g.unwrap().signals.time_ms, 1_102_000);

        // A late blind-area fix (older than the newest report, newer than the last valid fix)
        // is stored by the shard together with the record it moved, so recovery keeps it
        // without scanning back to it.
        let late = fix("G", 1150, FixFlags::BLIND_AREA);
        let mut moved = record_with_newest("device:G", late.clone(), 1200);
        moved.fix = late.clone();
        store
            .commit_blocking(vec![
                point("device:G", fix("G", 1200, FixFlags::NO_GNSS)),
                point("device:G", late),
                Write::LastKnown(moved),
            ])
            .unwrap();
        let r = recover_last_known(&store, &cfg).unwrap();
        assert_eq!(r.scanned, 1);
        assert_eq!(time_of(&r, "device:G"), Some(1150));
        assert!(!r.writes.iter().any(|w| matches!(w, Write::FullReplay(_))));
    }

    #[test]
    fn keys_without_a_fix_get_a_signals_record_that_bounds_the_next_replay() {
        let (_dir, store) = open_store();
        let mut writes = vec![device("A", Some("V"))];
        writes.extend((1..=50).map(|t| {
            let mut f = fix("A", t * 1_000, FixFlags::NO_GNSS);
            f.battery_pct = Some(60);
            point("V", f)
        }));
        store.commit_blocking(writes).unwrap();
        let cfg = StateConfig::default();

        let r = recover_last_known(&store, &cfg).unwrap();
        assert_eq!(r.scanned, 50);
        assert!(r.records.is_empty(), "no valid fix, no last known record");
        let mut keys: Vec<&str> = r.signals.iter().map(|(k, _)| k.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["V", "device:A"]);
        for (_, s) in &r.signals {
            assert_eq!((s.time_ms, s.battery_pct), (50_000_000, Some(60)));
        }
        assert_eq!(
            r.writes
                .iter()
                .filter(|w| matches!(w, Write::Signals { .. }))
                .count(),
            2
        );
        store.commit_blocking(r.writes).unwrap();

        // From the mark on: the tie at 50,000 s only, and nothing to write.
        let r = recover_last_known(&store, &cfg).unwrap();
        assert_eq!(r.scanned, 1);
        assert!(r.writes.is_empty(), "{:?}", r.writes);
        assert_eq!(r.signals.len(), 2);

        // A first valid fix makes a last known record, which then takes the key's place.
        store
            .commit_blocking(vec![point("V", fix("A", 50_001, FixFlags::empty()))])
            .unwrap();
        let r = recover_last_known(&store, &cfg).unwrap();
        assert_eq!(time_of(&r, "V"), Some(50_001));
        let v = recovered(&r, "V").unwrap();
        assert_eq!(v.signals.battery_pct, Some(60));
        assert!(r.signals.is_empty(), "{:?}", r.signals);

        // Purging the vehicle removes its signals record too.
        store.purge_vehicle("V").unwrap();
        assert!(!store
            .all_signals()
            .unwrap()
            .iter()
            .any(|(k, _)| k.as_str() == "V"));
    }

    /// What the shard does with reports that change no stored record at once: offers each to
    /// `live` and commits its track point on vehicle V, in arrival order.
    fn apply_live(
        store: &Store,
        live: &mut Tracker,
        key: &Arc<str>,
        reports: &[&Fix],
        cfg: &StateConfig,
    ) {
        for f in reports {
            live.offer(key, f, 0, cfg);
            store
                .commit_blocking(vec![point("V", (*f).clone())])
                .unwrap();
        }
    }

    /// A device re-sends a second with another battery level: the live tracker and the store
    /// (which keeps the last copy of that second) end with the same reading.
    #[test]
    fn a_re_sent_second_gives_the_same_battery_live_and_after_a_crash() {
        let (_dir, store) = open_store();
        let cfg = StateConfig::default();
        let ok = FixFlags::empty();
        let base = fix("A", 100, ok);
        store
            .commit_blocking(vec![
                device("A", Some("V")),
                Write::LastKnown(record_at("V", base.clone(), 100)),
                Write::LastKnown(record_at("device:A", base.clone(), 100)),
                point("V", base.clone()),
            ])
            .unwrap();
        let mut low = fix("A", 200, ok);
        low.battery_pct = Some(20);
        let high = Fix {
            battery_pct: Some(80),
            ..low.clone()
        };
        // Neither report is late, so no record is written before the crash.
        let mut live = Tracker::restore(Arc::new(record_at("device:A", base, 100)), &cfg);
        apply_live(&store, &mut live, &"device:A".into(), &[&low, &high], &cfg);
        let live_battery = live.last_known.unwrap().signals.battery_pct;
        assert_eq!(live_battery, Some(80));
        let r = recover_last_known(&store, &cfg).unwrap();
        let a = recovered(&r, "device:A").unwrap();
        assert_eq!(a.signals.battery_pct, live_battery);
    }

    /// A car's two devices report the same second with different battery levels, the one with
    /// the higher terminal id first: live, the later reading wins; the replay after a crash must
    /// agree although the track holds them in terminal order.
    #[test]
    fn same_second_readings_of_two_devices_replay_in_arrival_order() {
        let (_dir, store) = open_store();
        let cfg = StateConfig::default();
        let ok = FixFlags::empty();
        let base = fix("A", 100, ok);
        store
            .commit_blocking(vec![
                device("A", Some("V")),
                device("B", Some("V")),
                Write::LastKnown(record_at("V", base.clone(), 100)),
                point("V", base.clone()),
            ])
            .unwrap();
        let mut from_b = fix("B", 200, ok);
        from_b.battery_pct = Some(20);
        from_b.received_ms = 5_000_000;
        let mut from_a = fix("A", 200, ok);
        from_a.battery_pct = Some(80);
        from_a.received_ms = 5_000_001;
        // Live: B's report arrived first, then A's.
        let mut live = Tracker::restore(Arc::new(record_at("V", base, 100)), &cfg);
        apply_live(&store, &mut live, &"V".into(), &[&from_b, &from_a], &cfg);
        assert_eq!(live.signals().battery_pct, Some(80));
        let r = recover_last_known(&store, &cfg).unwrap();
        let v = recovered(&r, "V").unwrap();
        assert_eq!(v.signals.battery_pct, Some(80));
        assert_eq!(v.signals, *live.signals());
    }
}

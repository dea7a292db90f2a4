//! The track's two shapes: a log on the commit path, chunks behind it.
//!
//! Every position used to be one engine entry, keyed (vehicle, device time, terminal), inserted
//! into the memtable on the committer thread before its frame could be answered. That insert (a
//! skiplist search among hundreds of thousands of keys), the entry's flush and its compactions
//! were the largest part of the store's cost per position (benches/RESULTS.md, session 3).
//!
//! Now a group commit writes all of its positions as **one** track-log entry (key: a sequence
//! number; value: the positions with their vehicle ids, in commit order), durable with the rest of
//! the batch, so an acknowledged position is on disk exactly as before. The committer keeps those
//! positions in memory ([`Pending`]) and, once enough have gathered, a folder thread writes them
//! as **chunks**: one entry per vehicle and hour of device time (`keys::write_chunk_key`) holding
//! that vehicle's points of that hour in commit order, and removes the log entries it covered, in
//! one atomic batch. A crash before a fold leaves the points in the log; opening the store folds
//! whatever the log holds before anything reads the track. So the engine sees about one entry per
//! commit plus one per vehicle and hour per fold, instead of one per position.
//!
//! Readers merge both shapes: chunks in bucket order, plus the log's points of the vehicle, and
//! sort each hour's points by device time. A point can be in both for a moment (read the log
//! first, the fold commits, then the chunks): like a device's re-sent point, it is dropped on
//! read, the copy written last winning.
//!
//! Log entry value format (hand-written framing rather than one postcard `Vec`, so that a reader
//! looking for one vehicle skips the other vehicles' points without decoding them): repeated
//! `[u16 LE vehicle id length][vehicle id][u16 LE fix length][postcard Fix]`.
use std::collections::HashMap;
use std::sync::Arc;

use super::StoreError;
use crate::model::Fix;

/// Appends one position to a track-log value.
pub(super) fn append_log_entry(buf: &mut Vec<u8>, vehicle_id: &str, fix: &Fix) {
    // Ids are at most MAX_ID_LEN (1024) bytes, checked before a write is queued.
    buf.extend_from_slice(&(vehicle_id.len() as u16).to_le_bytes());
    buf.extend_from_slice(vehicle_id.as_bytes());
    let len_at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    let body = buf.len();
    super::fix_wire::encode_fix(buf, fix);
    let len = u16::try_from(buf.len() - body).expect("an encoded Fix is far below 64 KiB");
    buf[len_at..body].copy_from_slice(&len.to_le_bytes());
}

fn corrupt(detail: &'static str) -> StoreError {
    StoreError::Corrupt {
        keyspace: "track_log",
        detail,
    }
}

/// Calls `visit` with each (vehicle id, encoded fix) of a track-log value, in commit order.
fn each_log_entry<'a>(
    mut value: &'a [u8],
    mut visit: impl FnMut(&'a str, &'a [u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    fn take<'b>(value: &mut &'b [u8], n: usize) -> Result<&'b [u8], StoreError> {
        if value.len() < n {
            return Err(corrupt("truncated entry"));
        }
        let (head, rest) = value.split_at(n);
        *value = rest;
        Ok(head)
    }
    while !value.is_empty() {
        let len = take(&mut value, 2)?;
        let vehicle = take(
            &mut value,
            usize::from(u16::from_le_bytes([len[0], len[1]])),
        )?;
        let vehicle = std::str::from_utf8(vehicle).map_err(|_| corrupt("vehicle id not UTF-8"))?;
        let len = take(&mut value, 2)?;
        let fix = take(
            &mut value,
            usize::from(u16::from_le_bytes([len[0], len[1]])),
        )?;
        visit(vehicle, fix)?;
    }
    Ok(())
}

fn decode_fix(bytes: &[u8]) -> Result<Fix, StoreError> {
    postcard::from_bytes(bytes).map_err(|source| StoreError::Decode {
        keyspace: "track_log",
        source,
    })
}

/// The points of `vehicle_id` in a track-log value.
pub(super) fn log_points_of(
    value: &[u8],
    vehicle_id: &str,
    mut visit: impl FnMut(Fix),
) -> Result<(), StoreError> {
    each_log_entry(value, |vehicle, fix| {
        if vehicle == vehicle_id {
            visit(decode_fix(fix)?);
        }
        Ok(())
    })
}

/// Every point of a track-log value with its vehicle id.
pub(super) fn log_points(
    value: &[u8],
    mut visit: impl FnMut(Arc<str>, Fix),
) -> Result<(), StoreError> {
    // Consecutive points of one commit usually belong to different vehicles, so the id is not
    // shared between them; one small allocation per point, off the commit path (start-up only).
    each_log_entry(value, |vehicle, fix| {
        visit(Arc::from(vehicle), decode_fix(fix)?);
        Ok(())
    })
}

/// Track points that are in the log and not yet in chunks, grouped by vehicle, and the log
/// entries they came from. Owned by the committer thread, handed whole to the folder.
#[derive(Default)]
pub(super) struct Pending {
    /// foldhash rather than SipHash: the committer pushes every position through this map.
    pub by_vehicle: HashMap<Arc<str>, Vec<Fix>, foldhash::fast::RandomState>,
    /// Sequence numbers of the log entries holding these points (removed by the fold).
    pub seqs: Vec<u64>,
    pub points: usize,
    /// Room reserved for a vehicle's points when its first one arrives: the average of the
    /// previous fold. Growing each vehicle's vector from empty moved every point several times
    /// (a fold gathers tens of points per vehicle), which was a quarter of the committer's work.
    reserve: usize,
}

impl Pending {
    pub fn push(&mut self, vehicle_id: Arc<str>, fix: Fix) {
        let reserve = self.reserve;
        self.by_vehicle
            .entry(vehicle_id)
            .or_insert_with(|| Vec::with_capacity(reserve))
            .push(fix);
        self.points += 1;
    }

    /// Takes everything gathered so far (for a fold job), leaving an empty set that reserves
    /// for each vehicle what this one gathered on average.
    pub fn take(&mut self) -> Pending {
        /// The reservation's bound: a few vehicles with many points must not make every
        /// vehicle of the next fold reserve as much.
        const MAX_RESERVE: usize = 256;
        let vehicles = self.by_vehicle.len();
        let reserve = (self.points / vehicles.max(1)).min(MAX_RESERVE);
        let taken = std::mem::take(self);
        self.reserve = reserve;
        self.by_vehicle.reserve(vehicles);
        taken
    }

    pub fn is_empty(&self) -> bool {
        self.points == 0 && self.seqs.is_empty()
    }
}

/// A point read back with the sequence of what it was read from (chunk or log entry), for
/// [`merge_sorted`].
pub(super) type Seen = (u64, Fix);

/// Sorts points read from several chunks and log entries and drops superseded copies: of the
/// points with the same device time and terminal, the one with the highest sequence wins.
pub(super) fn merge_sorted(points: &mut Vec<Seen>) {
    points.sort_by(|(sa, a), (sb, b)| {
        (a.time_ms, &*a.terminal_id, sa).cmp(&(b.time_ms, &*b.terminal_id, sb))
    });
    let mut keep: Vec<Seen> = Vec::with_capacity(points.len());
    for seen in points.drain(..).rev() {
        let same = keep.last().is_some_and(|(_, k)| {
            k.time_ms == seen.1.time_ms && k.terminal_id == seen.1.terminal_id
        });
        if !same {
            keep.push(seen);
        }
    }
    keep.reverse();
    *points = keep;
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A valid fix with what the store's tests need to tell points apart.
    pub(in crate::store) fn fix(terminal: &str, time_ms: i64, lat: f64) -> Fix {
        Fix::for_test(terminal, time_ms, lat)
    }

    #[test]
    fn log_values_round_trip_and_filter_by_vehicle() {
        let mut buf = Vec::new();
        append_log_entry(&mut buf, "V1", &fix("1", 10, 1.0));
        append_log_entry(&mut buf, "V10", &fix("2", 20, 2.0));
        append_log_entry(&mut buf, "V1", &fix("1", 5, 3.0));
        let mut of_v1 = Vec::new();
        log_points_of(&buf, "V1", |f| of_v1.push(f.latitude)).unwrap();
        assert_eq!(of_v1, vec![1.0, 3.0]);
        let mut all = Vec::new();
        log_points(&buf, |v, f| all.push((v.to_string(), f.time_ms))).unwrap();
        assert_eq!(
            all,
            vec![("V1".into(), 10), ("V10".into(), 20), ("V1".into(), 5)]
        );
        // A torn value is reported, not misread.
        assert!(log_points_of(&buf[..buf.len() - 1], "V1", |_| {}).is_err());
    }

    #[test]
    fn the_copy_written_last_wins() {
        // One chunk (one sequence) holds its points in commit order, a re-sent copy included.
        let mut fixes: Vec<Seen> = [
            fix("2", 10, 1.0),
            fix("1", 10, 2.0),
            fix("1", 5, 3.0),
            fix("1", 10, 4.0),
        ]
        .into_iter()
        .map(|f| (4, f))
        .collect();
        merge_sorted(&mut fixes);
        let got: Vec<_> = fixes
            .iter()
            .map(|(_, f)| (f.time_ms, f.terminal_id.to_string(), f.latitude))
            .collect();
        assert_eq!(
            got,
            vec![
                (5, "1".into(), 3.0),
                (10, "1".into(), 4.0),
                (10, "2".into(), 1.0)
            ]
        );
        let mut seen = vec![
            (7, fix("1", 10, 1.0)),
            (3, fix("1", 10, 2.0)),
            (3, fix("1", 1, 0.0)),
        ];
        merge_sorted(&mut seen);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].1.latitude, 1.0, "sequence 7 is newer than 3");
    }
}

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

/// Track points already in track-log form: [`super::Write::Track`].
///
/// The shard encodes its batch's points here, on its own thread, instead of handing the
/// committer one [`super::Write::Fix`] per point. A `Write` is as large as its largest variant
/// (a whole last known record), each `Fix` holds two shared ids whose reference counts the
/// committer then had to change on another core, and the committer encoded every point while
/// the shard waited for the commit; now it copies one byte string per batch (session 14).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackPoints {
    bytes: Vec<u8>,
    count: u64,
    /// The first point whose ids are out of bounds: the commit is refused, as it is for an
    /// invalid `Write::Fix`, rather than the log holding an id it cannot frame.
    invalid: Option<(&'static str, String)>,
}

impl TrackPoints {
    /// Room for about `points` points.
    pub fn with_capacity(points: usize) -> Self {
        TrackPoints {
            // A point with ids of ordinary length takes 60 to 80 bytes.
            bytes: Vec::with_capacity(points * 80),
            count: 0,
            invalid: None,
        }
    }

    /// Adds a point of `vehicle_id`'s track.
    pub fn push(&mut self, vehicle_id: &str, fix: &Fix) {
        let checked = super::check_id("vehicle id", vehicle_id)
            .and_then(|()| super::check_id("terminal id", &fix.terminal_id));
        match checked {
            Ok(()) => {
                append_log_entry(&mut self.bytes, vehicle_id, fix);
                self.count += 1;
            }
            Err(StoreError::InvalidId { what, id }) => {
                self.invalid.get_or_insert((what, id));
            }
            Err(other) => unreachable!("check_id fails only with InvalidId, not {other}"),
        }
    }

    /// How many points it holds.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Whether nothing was pushed. A point refused for its ids counts: the write that carries
    /// it must still go to the store, which refuses the whole commit.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.invalid.is_none()
    }

    /// Refuses the points if one of them had an invalid id.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        match &self.invalid {
            Some((what, id)) => Err(StoreError::InvalidId {
                what,
                id: id.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The points in track-log form.
    pub(super) fn log_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

pub(super) fn corrupt(detail: &'static str) -> StoreError {
    StoreError::Corrupt {
        keyspace: "track_log",
        detail,
    }
}

/// Calls `visit` with each (vehicle id, encoded fix) of a track-log value, in commit order. The
/// id's bytes are not checked for UTF-8 here: the fold passes them through and checks them once
/// per chunk, which was a tenth of its cost per point (session 13).
fn each_log_entry<'a>(
    mut value: &'a [u8],
    mut visit: impl FnMut(&'a [u8], &'a [u8]) -> Result<(), StoreError>,
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
        if vehicle == vehicle_id.as_bytes() {
            visit(decode_fix(fix)?);
        }
        Ok(())
    })
}

/// Track points that are in the log and not yet in chunks: the log values themselves, as the
/// engine stores them (shared, not copied), and their sequence numbers. Owned by the committer
/// thread, handed whole to the folder, which regroups the encoded points by vehicle and hour
/// without decoding them (`Engine::fold`). Keeping each point as a decoded `Fix` in a map by
/// vehicle instead cost the committer a hash insert and a move per position and the folder a
/// second encoding (session 13).
#[derive(Default)]
pub(super) struct Pending {
    pub values: Vec<fjall::Slice>,
    /// Sequence numbers of the log entries holding these points (removed by the fold); a format
    /// 2 conversion folds values that are not in the log.
    pub seqs: Vec<u64>,
    pub points: usize,
}

impl Pending {
    /// A log entry written with sequence `seq`, holding `points` points.
    pub fn push_logged(&mut self, seq: u64, value: fjall::Slice, points: usize) {
        self.seqs.push(seq);
        self.push_value(value, points);
    }

    /// A value in the log entry format that is not in the log.
    pub fn push_value(&mut self, value: fjall::Slice, points: usize) {
        self.values.push(value);
        self.points += points;
    }

    pub fn is_empty(&self) -> bool {
        self.points == 0 && self.seqs.is_empty()
    }
}

/// Calls `visit` with each (vehicle id's bytes, device time, encoded fix) of a track-log value.
pub(super) fn log_entries<'a>(
    value: &'a [u8],
    mut visit: impl FnMut(&'a [u8], i64, &'a [u8]),
) -> Result<(), StoreError> {
    each_log_entry(value, |vehicle, fix| {
        let time_ms = super::fix_wire::time_of(fix).ok_or_else(|| corrupt("fix without a time"))?;
        visit(vehicle, time_ms, fix);
        Ok(())
    })
}

/// How many points a track-log value holds, each checked to decode as a `Fix` with a UTF-8
/// vehicle id.
pub(super) fn check_points(value: &[u8]) -> Result<usize, StoreError> {
    let mut n = 0;
    each_log_entry(value, |vehicle, fix| {
        std::str::from_utf8(vehicle).map_err(|_| corrupt("vehicle id not UTF-8"))?;
        decode_fix(fix)?;
        n += 1;
        Ok(())
    })?;
    Ok(n)
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
        log_entries(&buf, |v, t, _| {
            all.push((String::from_utf8_lossy(v).into_owned(), t))
        })
        .unwrap();
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

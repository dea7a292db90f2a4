//! Key layouts. Keys are byte strings compared lexicographically by the engine, so every
//! multi-part key is built so that byte order equals the order we want to scan in.

/// Maps an `i64` to 8 bytes whose unsigned big-endian order equals the signed order, so that
/// device times before 1970 (bad clocks) still sort before later ones instead of after them.
pub fn time_bytes(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`time_bytes`].
pub fn time_from_bytes(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

/// A length-prefixed id, so that no id is a byte prefix of a composite key built from a longer
/// id (vehicle "V1" must not match the scan of "V10"), whatever bytes the ids contain.
pub fn id_prefix(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + id.len() + 8 + 16);
    // Ids are checked to be at most u16::MAX bytes before they get here (see `check_id`).
    key.extend_from_slice(&(id.len() as u16).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// A stable 32-bit hash of a vehicle id, the first four bytes of its track keys.
///
/// The memtable orders keys with a comparison that first looks at the four key bytes stored in
/// its node and reads the rest of the key through a pointer only when those are equal. Track
/// keys used to start with the id's length and its first bytes, the same for every vehicle of a
/// fleet ("VH-0..."), so every comparison of every insert followed the pointer: a cache miss
/// each, about a tenth of the gateway's CPU per position in the end-to-end benchmark. With the
/// hash first, comparisons between vehicles end in the node. Stored on disk, so it must never
/// change: FNV-1a, then MurmurHash3's finaliser so that ids differing only in their last
/// character differ in the first byte. Hand-written because it is ten lines and must stay fixed
/// whatever a hashing crate does in a later version.
pub fn vehicle_hash(id: &str) -> [u8; 4] {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h.to_be_bytes()
}

/// The vehicle part of its track keys: [`vehicle_hash`], then the length-prefixed id (see
/// [`id_prefix`]).
pub fn track_prefix(vehicle_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + 2 + vehicle_id.len() + 8 + 16);
    key.extend_from_slice(&vehicle_hash(vehicle_id));
    key.extend_from_slice(&(vehicle_id.len() as u16).to_be_bytes());
    key.extend_from_slice(vehicle_id.as_bytes());
    key
}

/// Device time covered by one track chunk: a chunk holds points of one vehicle whose device times
/// lie in one such bucket, so a time window of a track is read from the chunks of the buckets it
/// overlaps and nothing else. An hour keeps a blind-area upload of a few hours in a few chunks,
/// while under load a vehicle's points of one fold share a chunk (see `track.rs`).
pub const CHUNK_BUCKET_MS: i64 = 3_600_000;

/// Start of the bucket holding `time_ms` (rounded down, also before 1970).
pub fn bucket_of(time_ms: i64) -> i64 {
    // Saturating: the bucket of the earliest times would start before i64::MIN.
    time_ms
        .div_euclid(CHUNK_BUCKET_MS)
        .saturating_mul(CHUNK_BUCKET_MS)
}

/// Track chunk key: (vehicle, bucket start, fold sequence), written into a reused buffer. The
/// sequence is that of the newest track-log entry the fold covered: it makes every chunk key
/// unique and orders chunks by when their points were written, so a re-sent point in a later
/// chunk replaces the earlier copy on read. The vehicle part is [`track_prefix`].
pub fn write_chunk_key(buf: &mut Vec<u8>, vehicle_id: &str, bucket_ms: i64, seq: u64) {
    buf.clear();
    buf.extend_from_slice(&vehicle_hash(vehicle_id));
    buf.extend_from_slice(&(vehicle_id.len() as u16).to_be_bytes());
    buf.extend_from_slice(vehicle_id.as_bytes());
    buf.extend_from_slice(&time_bytes(bucket_ms));
    buf.extend_from_slice(&seq.to_be_bytes());
}

/// The bucket start and sequence of a chunk key written by [`write_chunk_key`].
pub fn chunk_key_parts(key: &[u8]) -> Option<(i64, u64)> {
    let prefix = vehicle_prefix_of(key)?.len();
    let time: [u8; 8] = key.get(prefix..prefix + 8)?.try_into().ok()?;
    let seq: [u8; 8] = key.get(prefix + 8..prefix + 16)?.try_into().ok()?;
    Some((time_from_bytes(time), u64::from_be_bytes(seq)))
}

/// Track-log key: the log sequence, big-endian so that the log reads back in write order.
pub fn log_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// First chunk key of a vehicle at or after bucket start `time_ms`.
pub fn track_lower(vehicle_id: &str, time_ms: i64) -> Vec<u8> {
    let mut key = track_prefix(vehicle_id);
    key.extend_from_slice(&time_bytes(time_ms));
    key
}

/// Exclusive upper bound covering every chunk key of a vehicle with bucket start `<= time_ms`.
pub fn track_upper_inclusive(vehicle_id: &str, time_ms: i64) -> Vec<u8> {
    let mut key = track_prefix(vehicle_id);
    match time_ms.checked_add(1) {
        Some(next) => key.extend_from_slice(&time_bytes(next)),
        // Past the largest time: nine 0xFF bytes sort after every bucket start and sequence
        // (sequences never reach 2^56).
        None => return past_prefix(&key),
    }
    key
}

/// The vehicle part of a chunk key ([`track_prefix`]); format 2's per-point track keys start
/// the same way.
pub fn vehicle_prefix_of(key: &[u8]) -> Option<&[u8]> {
    let len = u16::from_be_bytes([*key.get(4)?, *key.get(5)?]) as usize;
    key.get(..4 + 2 + len)
}

/// The vehicle id in a chunk key (or a format 2 per-point track key), as bytes.
pub fn vehicle_id_of(key: &[u8]) -> Option<&[u8]> {
    vehicle_prefix_of(key)?.get(4 + 2..)
}

/// A key that sorts after every chunk key starting with `prefix` (a vehicle's [`track_prefix`])
/// and before the next vehicle's keys: a bucket start and a sequence (which never reaches 2^56)
/// follow the prefix, so nine 0xFF bytes exceed them all.
pub fn past_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&[0xFF; 9]);
    key
}

/// Index key vehicle -> device.
pub fn vehicle_device_key(vehicle_id: &str, terminal_id: &str) -> Vec<u8> {
    let mut key = id_prefix(vehicle_id);
    key.extend_from_slice(terminal_id.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_order_is_preserved_across_zero() {
        let times = [i64::MIN, -5_000, -1, 0, 1, 1_700_000_000_000, i64::MAX];
        for w in times.windows(2) {
            assert!(time_bytes(w[0]) < time_bytes(w[1]), "{} vs {}", w[0], w[1]);
            assert_eq!(time_from_bytes(time_bytes(w[0])), w[0]);
        }
    }

    fn chunk_key(vehicle_id: &str, bucket_ms: i64, seq: u64) -> Vec<u8> {
        let mut key = b"left over".to_vec();
        write_chunk_key(&mut key, vehicle_id, bucket_ms, seq);
        key
    }

    proptest::proptest! {
        /// For any two chunks, byte order of the keys within one vehicle equals (bucket,
        /// sequence) order, and a vehicle's inclusive bucket window holds exactly its own keys in
        /// that window, whatever the ids look like.
        #[test]
        fn chunk_keys_sort_and_scan_like_their_fields(
            va in "[A-Za-z0-9-]{1,12}", vb in "[A-Za-z0-9-]{1,12}",
            ta in proptest::num::i64::ANY, tb in proptest::num::i64::ANY,
            sa in 0u64..1 << 56, sb in 0u64..1 << 56,
            lo in proptest::num::i64::ANY, hi in proptest::num::i64::ANY,
            same in proptest::bool::ANY,
        ) {
            // Half the cases compare two chunks of the same vehicle.
            let vb = if same { va.clone() } else { vb };
            let (ta, tb) = (bucket_of(ta), bucket_of(tb));
            let ka = chunk_key(&va, ta, sa);
            proptest::prop_assert!(ka.starts_with(&track_prefix(&va)));
            proptest::prop_assert_eq!(vehicle_prefix_of(&ka), Some(&track_prefix(&va)[..]));
            proptest::prop_assert_eq!(vehicle_id_of(&ka), Some(va.as_bytes()));
            proptest::prop_assert_eq!(chunk_key_parts(&ka), Some((ta, sa)));
            let kb = chunk_key(&vb, tb, sb);
            if va == vb {
                proptest::prop_assert_eq!(ka.cmp(&kb), (ta, sa).cmp(&(tb, sb)));
            } else {
                // Jumping past a vehicle's keys never skips another vehicle's.
                let past = past_prefix(vehicle_prefix_of(&ka).unwrap());
                proptest::prop_assert!(past > ka);
                proptest::prop_assert_eq!(past < kb, ka < kb);
            }
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let lower = track_lower(&va, bucket_of(lo));
            let upper = track_upper_inclusive(&va, bucket_of(hi));
            for (v, t, k) in [(&va, ta, &ka), (&vb, tb, &kb)] {
                let inside = lower <= *k && *k < upper;
                proptest::prop_assert_eq!(inside, *v == va && bucket_of(lo) <= t && t <= bucket_of(hi));
            }
        }

        /// Every time lies in its bucket, and buckets keep the order of the times.
        #[test]
        fn buckets_hold_their_times(t in proptest::num::i64::ANY, u in proptest::num::i64::ANY) {
            let b = bucket_of(t);
            proptest::prop_assert!(b <= t);
            proptest::prop_assert!(t - b < CHUNK_BUCKET_MS || b == i64::MIN);
            if t <= u {
                proptest::prop_assert!(b <= bucket_of(u));
            }
        }
    }

    #[test]
    fn vehicle_hash_is_fixed() {
        // Stored in every track key: a change would orphan every stored track point.
        assert_eq!(vehicle_hash(""), [0xab, 0x3e, 0x7c, 0x0b]);
        assert_eq!(vehicle_hash("VH-000001"), vehicle_hash("VH-000001"));
        let spread: std::collections::HashSet<u8> = (0..64)
            .map(|i| vehicle_hash(&format!("VH-{i:06}"))[0])
            .collect();
        assert!(
            spread.len() > 32,
            "ids differing in the last digit must differ in the first byte"
        );
    }

    #[test]
    fn vehicle_prefixes_do_not_overlap() {
        let v1 = chunk_key("V1", 0, 7);
        let lo = track_lower("V10", i64::MIN);
        let hi = track_upper_inclusive("V10", i64::MAX);
        assert!(!(lo <= v1 && v1 < hi));
    }
}

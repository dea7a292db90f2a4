//! Key layouts. Keys are byte strings compared lexicographically by the engine, so every
//! multi-part key is built so that byte order equals the order we want to scan in.

/// Maps an `i64` to 8 bytes whose unsigned big-endian order equals the signed order, so that
/// device times before 1970 (bad clocks) still sort before later ones instead of after them.
pub fn time_bytes(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`time_bytes`].
#[cfg(test)]
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

/// The track key written by [`write_track_key`], as a new vector (for tests).
#[cfg(test)]
pub fn track_key(vehicle_id: &str, time_ms: i64, terminal_id: &str) -> Vec<u8> {
    let mut key = Vec::new();
    write_track_key(&mut key, vehicle_id, time_ms, terminal_id);
    key
}

/// Track key: (vehicle, device time, terminal), written into a reused buffer (the committer
/// writes one per position, and allocation is a measurable part of its time). A device
/// re-sending the same fix writes the same key, so duplicates overwrite themselves, and a scan
/// of one vehicle comes out in device-time order whatever order the fixes arrived in
/// (blind-area batches arrive late). The vehicle part is [`track_prefix`].
pub fn write_track_key(buf: &mut Vec<u8>, vehicle_id: &str, time_ms: i64, terminal_id: &str) {
    buf.clear();
    buf.extend_from_slice(&vehicle_hash(vehicle_id));
    buf.extend_from_slice(&(vehicle_id.len() as u16).to_be_bytes());
    buf.extend_from_slice(vehicle_id.as_bytes());
    buf.extend_from_slice(&time_bytes(time_ms));
    buf.extend_from_slice(terminal_id.as_bytes());
}

/// First key of a vehicle's track at or after `time_ms`.
pub fn track_lower(vehicle_id: &str, time_ms: i64) -> Vec<u8> {
    let mut key = track_prefix(vehicle_id);
    key.extend_from_slice(&time_bytes(time_ms));
    key
}

/// Exclusive upper bound covering every key of a vehicle with device time `<= time_ms`.
pub fn track_upper_inclusive(vehicle_id: &str, time_ms: i64) -> Vec<u8> {
    let mut key = track_prefix(vehicle_id);
    match time_ms.checked_add(1) {
        Some(next) => key.extend_from_slice(&time_bytes(next)),
        // Past the largest time: one 0xFF byte more than any time encoding sorts after all of
        // them (the terminal id that follows a time is ASCII digits, never 0xFF).
        None => return past_prefix(&key),
    }
    key
}

/// The vehicle part of a track key ([`track_prefix`]).
pub fn vehicle_prefix_of(key: &[u8]) -> Option<&[u8]> {
    let len = u16::from_be_bytes([*key.get(4)?, *key.get(5)?]) as usize;
    key.get(..4 + 2 + len)
}

/// A key that sorts after every track key starting with `prefix` (a vehicle's
/// [`track_prefix`]) and before the next vehicle's keys: times are 8 bytes, so 9 bytes of 0xFF exceed them
/// all (the terminal id that follows a time is ASCII, never 0xFF).
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

    proptest::proptest! {
        /// For any two track points, byte order of the keys within one vehicle equals
        /// (device time, terminal) order, and a vehicle's inclusive time window holds exactly
        /// its own keys in that window, whatever the ids look like.
        #[test]
        fn track_keys_sort_and_scan_like_their_fields(
            va in "[A-Za-z0-9-]{1,12}", vb in "[A-Za-z0-9-]{1,12}",
            ta in proptest::num::i64::ANY, tb in proptest::num::i64::ANY,
            da in "[0-9]{12}", db in "[0-9]{12}",
            lo in proptest::num::i64::ANY, hi in proptest::num::i64::ANY,
            same in proptest::bool::ANY,
        ) {
            // Half the cases compare two points of the same vehicle.
            let vb = if same { va.clone() } else { vb };
            let ka = track_key(&va, ta, &da);
            let mut reused = b"left over".to_vec();
            write_track_key(&mut reused, &va, ta, &da);
            proptest::prop_assert_eq!(&reused, &ka);
            proptest::prop_assert!(ka.starts_with(&track_prefix(&va)));
            proptest::prop_assert_eq!(vehicle_prefix_of(&ka), Some(&track_prefix(&va)[..]));
            let kb = track_key(&vb, tb, &db);
            if va == vb {
                proptest::prop_assert_eq!(ka.cmp(&kb), (ta, &da).cmp(&(tb, &db)));
            } else {
                // Jumping past a vehicle's keys never skips another vehicle's.
                let past = past_prefix(vehicle_prefix_of(&ka).unwrap());
                proptest::prop_assert!(past > ka);
                proptest::prop_assert_eq!(past < kb, ka < kb);
            }
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let lower = track_lower(&va, lo);
            let upper = track_upper_inclusive(&va, hi);
            for (v, t, k) in [(&va, ta, &ka), (&vb, tb, &kb)] {
                let inside = lower <= *k && *k < upper;
                proptest::prop_assert_eq!(inside, *v == va && lo <= t && t <= hi);
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
        let v1 = track_key("V1", 10, "13800000000");
        let lo = track_lower("V10", i64::MIN);
        let hi = track_upper_inclusive("V10", i64::MAX);
        assert!(!(lo <= v1 && v1 < hi));
    }
}

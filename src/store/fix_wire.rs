//! A track point's stored bytes, encoded by hand: exactly the bytes postcard writes for a
//! [`Fix`], at a fraction of the cost.
//!
//! Every position is encoded on the commit path (into the track log; the fold copies those bytes
//! into its chunk), and serde's generic walk through postcard cost about 500 instructions per
//! encoding, more than decoding the frame it came in (callgrind, benches/RESULTS.md session 13).
//! The layout below is postcard's wire format for the struct's fields in declaration order:
//! LEB128 varints for unsigned integers, zigzag varints for signed ones, little-endian bytes for
//! floats, a varint length before a string, a 0/1 tag before an option's value. Because the
//! bytes are the same, stores written before and after read alike and decoding stays with
//! postcard; a test checks the two encoders against each other on arbitrary fixes, so a field
//! added to `Fix` without updating this file fails it.
use crate::model::Fix;

/// The most bytes a fix takes besides its terminal id: the id length and two i64 (10 bytes each
/// at most), two f64, one f32, one zigzag i32 (5), alarm and status (5 each), course and flags
/// (3 each), the two options (2 and 6); rounded up.
const MAX_FIXED: usize = 3 * 10 + 2 * 8 + 4 + 5 + 3 * 5 + 3 + 2 + 6;

/// Terminal ids up to this long (JT808's are 12 or 20 digits) are gathered with the rest of the
/// fix, so that a fix is appended with one copy.
const INLINE_ID: usize = 32;

/// Appends `fix` as postcard encodes it.
pub(super) fn encode_fix(out: &mut Vec<u8>, fix: &Fix) {
    let id = fix.terminal_id.as_bytes();
    let mut s = Scratch::new();
    s.varint(id.len() as u64);
    if id.len() <= INLINE_ID {
        s.raw(id);
    } else {
        out.extend_from_slice(s.bytes());
        out.extend_from_slice(id);
        s.len = 0;
    }
    s.varint(zigzag64(fix.time_ms));
    s.varint(zigzag64(fix.received_ms));
    s.raw(&fix.latitude.to_le_bytes());
    s.raw(&fix.longitude.to_le_bytes());
    s.varint(u64::from(zigzag32(fix.altitude_m)));
    s.raw(&fix.speed_kmh.to_le_bytes());
    s.varint(u64::from(fix.course));
    s.varint(u64::from(fix.alarm));
    s.varint(u64::from(fix.status));
    s.varint(u64::from(fix.flags.bits()));
    match fix.battery_pct {
        None => s.raw(&[0]),
        Some(b) => s.raw(&[1, b]),
    }
    match fix.voltage_mv {
        None => s.raw(&[0]),
        Some(v) => {
            s.raw(&[1]);
            s.varint(u64::from(v));
        }
    }
    out.extend_from_slice(s.bytes());
}

/// The start of a chunk value of `count` points (postcard's `Vec` length prefix), which their
/// encodings follow.
pub(super) fn chunk_prefix(count: usize) -> impl AsRef<[u8]> {
    let mut len = Scratch::new();
    len.varint(count as u64);
    len
}

/// The device time of an encoded fix, read without decoding the rest; `None` if the bytes end
/// before it.
pub(super) fn time_of(fix: &[u8]) -> Option<i64> {
    let (id_len, rest) = read_varint(fix)?;
    let rest = rest.get(usize::try_from(id_len).ok()?..)?;
    let (z, _) = read_varint(rest)?;
    Some(((z >> 1) as i64) ^ -((z & 1) as i64))
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, &bytes[i + 1..]));
        }
    }
    None
}

fn zigzag64(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn zigzag32(n: i32) -> u32 {
    ((n << 1) ^ (n >> 31)) as u32
}

/// Fields are gathered on the stack and appended to the output at once: one capacity check per
/// fix instead of one per byte.
struct Scratch {
    buf: [u8; MAX_FIXED + INLINE_ID],
    len: usize,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            buf: [0; MAX_FIXED + INLINE_ID],
            len: 0,
        }
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf[self.len] = (v as u8) | 0x80;
            self.len += 1;
            v >>= 7;
        }
        self.buf[self.len] = v as u8;
        self.len += 1;
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsRef<[u8]> for Scratch {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FixFlags;
    use proptest::prelude::*;

    fn any_fix() -> impl Strategy<Value = Fix> {
        (
            // Ids of any script, some long enough for a two-byte length.
            (
                prop_oneof!["[0-9A-Za-z]{0,40}", "\\PC{0,200}"],
                any::<i64>(),
                any::<i64>(),
            ),
            (any::<f64>(), any::<f64>(), any::<i32>(), any::<f32>()),
            (any::<u16>(), any::<u32>(), any::<u32>(), any::<u16>()),
            (any::<Option<u8>>(), any::<Option<u32>>()),
        )
            .prop_map(
                |(
                    (id, time_ms, received_ms),
                    (latitude, longitude, altitude_m, speed_kmh),
                    (course, alarm, status, flags),
                    (battery_pct, voltage_mv),
                )| Fix {
                    terminal_id: id.into(),
                    time_ms,
                    received_ms,
                    latitude,
                    longitude,
                    altitude_m,
                    speed_kmh,
                    course,
                    alarm,
                    status,
                    flags: FixFlags::from_bits_retain(flags),
                    battery_pct,
                    voltage_mv,
                },
            )
    }

    /// A chunk's value as the fold builds it from logged encodings.
    fn encode_fixes(fixes: &[Fix]) -> Vec<u8> {
        let mut out = chunk_prefix(fixes.len()).as_ref().to_vec();
        for fix in fixes {
            encode_fix(&mut out, fix);
        }
        out
    }

    proptest! {
        #[test]
        fn writes_what_postcard_writes(fix in any_fix()) {
            let mut ours = vec![7u8];
            encode_fix(&mut ours, &fix);
            let theirs = postcard::to_stdvec(&fix).unwrap();
            prop_assert_eq!(&ours[1..], &theirs[..]);
            let back: Fix = postcard::from_bytes(&ours[1..]).unwrap();
            // NaN coordinates compare unequal; the bytes above are the real check.
            prop_assert_eq!(back.time_ms, fix.time_ms);
            prop_assert_eq!(time_of(&ours[1..]), Some(fix.time_ms));
            prop_assert_eq!(time_of(&ours[1..ours.len().min(1 + fix.terminal_id.len())]), None);
        }

        #[test]
        fn writes_a_chunk_as_postcard_writes_a_vec(fixes in proptest::collection::vec(any_fix(), 0..20)) {
            prop_assert_eq!(encode_fixes(&fixes), postcard::to_stdvec(&fixes).unwrap());
        }
    }

    #[test]
    fn extremes_take_the_most_bytes_reserved() {
        let fix = Fix {
            terminal_id: "".into(),
            time_ms: i64::MIN,
            received_ms: i64::MAX,
            latitude: f64::MAX,
            longitude: f64::MIN,
            altitude_m: i32::MIN,
            speed_kmh: f32::MAX,
            course: u16::MAX,
            alarm: u32::MAX,
            status: u32::MAX,
            flags: FixFlags::all(),
            battery_pct: Some(u8::MAX),
            voltage_mv: Some(u32::MAX),
        };
        let mut out = Vec::new();
        encode_fix(&mut out, &fix);
        assert_eq!(out, postcard::to_stdvec(&fix).unwrap());
    }
}

//! BCD device time (JT/T 808-2013 §8.18 table 23: `BCD[6]` YYMMDDhhmmss in
//! GMT+8) converted to and from Unix seconds UTC.

use super::error::{Error, ErrorKind};

/// China Standard Time offset; every time in the standard uses it (§8.18).
const CST_OFFSET_SECS: i64 = 8 * 3600;

/// Raw BCD time as sent by the device (YY MM DD hh mm ss, UTC+8, years 2000-2099).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BcdTime(pub [u8; 6]);

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's
/// well-known civil-calendar algorithm, written out here because the crate
/// must not pull a date library into the hot path).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of `days_from_civil`.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days before the first of each month in a common year.
const DAYS_BEFORE_MONTH: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

/// 2000-01-01T00:00:00Z in Unix seconds.
const UNIX_2000: i64 = 946_684_800;

impl BcdTime {
    /// The six fields as numbers, or `None` when a nibble is not a digit.
    #[inline]
    pub fn fields(&self) -> Option<[u32; 6]> {
        let b = self.0;
        // A nibble is above 9 exactly when bit 3 is set together with bit 1
        // or bit 2; all twelve nibbles are checked at once, without branches.
        let v = u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]]);
        let hi = v & 0x8888_8888_8888;
        let mid = v & 0x6666_6666_6666;
        if hi & ((mid << 1) | (mid << 2)) != 0 {
            return None;
        }
        Some(b.map(|x| u32::from(x >> 4) * 10 + u32::from(x & 0x0f)))
    }

    /// Device time (China Standard Time) as Unix seconds UTC. Invalid BCD or
    /// an impossible date is an error: the time is reported, never guessed.
    #[inline]
    pub fn to_unix(&self) -> Result<i64, Error> {
        let Some([yy, mo, d, h, mi, s]) = self.fields() else {
            return Err(Error::new(ErrorKind::Body, 0, "time is not valid BCD"));
        };
        // Two BCD digits cover 2000-2099, where every year divisible by four
        // is a leap year (2000 included, 2100 out of range). That makes the
        // day count a few multiplications instead of the general calendar
        // algorithm's divisions; `fast_day_count_matches_the_calendar` checks
        // it against `days_from_civil` for every day of the century.
        let leap = yy % 4 == 0;
        let month_len = match mo {
            2 => 28 + u32::from(leap),
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        if !(1..=12).contains(&mo) || d == 0 || d > month_len || h > 23 || mi > 59 || s > 59 {
            return Err(Error::new(ErrorKind::Body, 0, "time is not a valid date"));
        }
        let days = 365 * yy
            + yy.div_ceil(4) // leap years from 2000 up to the year before
            + DAYS_BEFORE_MONTH[(mo - 1) as usize]
            + u32::from(leap && mo > 2)
            + d
            - 1;
        Ok(
            UNIX_2000 + i64::from(days) * 86_400 + i64::from(h * 3600 + mi * 60 + s)
                - CST_OFFSET_SECS,
        )
    }

    /// BCD time (UTC+8) for Unix seconds UTC. Years outside 2000-2099 cannot
    /// be expressed; they are clamped to that range.
    pub fn from_unix(secs: i64) -> Self {
        let lo = days_from_civil(2000, 1, 1) * 86_400 - CST_OFFSET_SECS;
        let hi = days_from_civil(2100, 1, 1) * 86_400 - CST_OFFSET_SECS - 1;
        let local = secs.clamp(lo, hi) + CST_OFFSET_SECS;
        let (y, m, d) = civil_from_days(local.div_euclid(86_400));
        let sod = local.rem_euclid(86_400) as u32;
        let bcd = |v: u32| (((v / 10) << 4) | (v % 10)) as u8;
        BcdTime([
            bcd((y - 2000) as u32),
            bcd(m),
            bcd(d),
            bcd(sod / 3600),
            bcd(sod / 60 % 60),
            bcd(sod % 60),
        ])
    }
}

/// RFC 3339 UTC rendering of Unix seconds ("2024-01-02T03:04:05Z").
pub fn rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_cst_to_utc() {
        // 2015-08-18 07:21:21 CST = 2015-08-17 23:21:21 UTC (reference frame jt808-tr-0200-a).
        let t = BcdTime([0x15, 0x08, 0x18, 0x07, 0x21, 0x21]);
        let s = t.to_unix().unwrap();
        assert_eq!(rfc3339(s), "2015-08-17T23:21:21Z");
        assert_eq!(BcdTime::from_unix(s), t);
    }

    #[test]
    fn fast_day_count_matches_the_calendar() {
        let bcd = |v: i64| (((v / 10) << 4) | (v % 10)) as u8;
        let mut day = days_from_civil(2000, 1, 1);
        while day < days_from_civil(2100, 1, 1) {
            let (y, m, d) = civil_from_days(day);
            let t = BcdTime([
                bcd(y - 2000),
                bcd(m.into()),
                bcd(d.into()),
                0x23,
                0x59,
                0x58,
            ]);
            assert_eq!(
                t.to_unix().unwrap(),
                day * 86_400 + 23 * 3600 + 59 * 60 + 58 - CST_OFFSET_SECS,
                "{y}-{m}-{d}"
            );
            day += 1;
        }
        // And exactly the dates that exist are accepted.
        for y in 2000..2100 {
            for m in 1..=12 {
                for d in 1..=31 {
                    let exists =
                        civil_from_days(days_from_civil(y, m, d)) == (y, m as u32, d as u32);
                    let t = BcdTime([bcd(y - 2000), bcd(m), bcd(d), 0, 0, 0]);
                    assert_eq!(t.to_unix().is_ok(), exists, "{y}-{m}-{d}");
                }
            }
        }
    }

    #[test]
    fn rejects_invalid_times() {
        assert!(BcdTime([0x21, 0x02, 0x29, 0, 0, 0]).to_unix().is_err());
        assert!(BcdTime([0x20, 0x02, 0x29, 0, 0, 0]).to_unix().is_ok());
        assert!(BcdTime([0x21, 0x13, 0x01, 0, 0, 0]).to_unix().is_err());
        assert!(BcdTime([0x21, 0x01, 0x01, 0x24, 0, 0]).to_unix().is_err());
        assert!(BcdTime([0x2a, 0x01, 0x01, 0, 0, 0]).to_unix().is_err());
        assert!(BcdTime([0; 6]).to_unix().is_err());
    }
}

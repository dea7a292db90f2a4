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

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl BcdTime {
    /// The six fields as numbers, or `None` when a nibble is not a digit.
    pub fn fields(&self) -> Option<[u32; 6]> {
        let mut f = [0u32; 6];
        for (i, b) in self.0.iter().enumerate() {
            let (hi, lo) = (b >> 4, b & 0x0f);
            if hi > 9 || lo > 9 {
                return None;
            }
            f[i] = (hi * 10 + lo) as u32;
        }
        Some(f)
    }

    /// Device time (China Standard Time) as Unix seconds UTC. Invalid BCD or
    /// an impossible date is an error: the time is reported, never guessed.
    pub fn to_unix(&self) -> Result<i64, Error> {
        let f = self
            .fields()
            .ok_or(Error::new(ErrorKind::Body, 0, "time is not valid BCD"))?;
        let [yy, mo, d, h, mi, s] = f;
        let y = 2000 + yy as i64;
        if !(1..=12).contains(&mo)
            || d == 0
            || d > days_in_month(y, mo)
            || h > 23
            || mi > 59
            || s > 59
        {
            return Err(Error::new(ErrorKind::Body, 0, "time is not a valid date"));
        }
        let days = days_from_civil(y, mo as i64, d as i64);
        Ok(days * 86_400 + (h * 3600 + mi * 60 + s) as i64 - CST_OFFSET_SECS)
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
    fn rejects_invalid_times() {
        assert!(BcdTime([0x21, 0x02, 0x29, 0, 0, 0]).to_unix().is_err());
        assert!(BcdTime([0x20, 0x02, 0x29, 0, 0, 0]).to_unix().is_ok());
        assert!(BcdTime([0x21, 0x13, 0x01, 0, 0, 0]).to_unix().is_err());
        assert!(BcdTime([0x21, 0x01, 0x01, 0x24, 0, 0]).to_unix().is_err());
        assert!(BcdTime([0x2a, 0x01, 0x01, 0, 0, 0]).to_unix().is_err());
        assert!(BcdTime([0; 6]).to_unix().is_err());
    }
}

//! Sanitation: deciding which fixes are trustworthy enough to become a last known position.
//!
//! Suspect fixes are normal traffic (no GNSS lock in a garage, a clock that lost its battery, a
//! multipath jump), so they are flagged, counted and stored, never dropped. Only the flags decide
//! whether a fix may move the last known position. All functions take "now" as an argument.
use crate::config::SanitationConfig;
use crate::model::FixFlags;

/// JT/T 808 status bit 1: the position is from a GNSS fix (0 = not positioned).
pub const STATUS_FIXED: u32 = 1 << 1;

/// The checks that need nothing but the fix itself and the gateway clock.
pub fn static_flags(
    time_ms: Option<i64>,
    latitude: f64,
    longitude: f64,
    status: u32,
    now_ms: i64,
    cfg: &SanitationConfig,
) -> FixFlags {
    let mut flags = FixFlags::empty();
    if status & STATUS_FIXED == 0 {
        flags |= FixFlags::NO_GNSS;
    }
    if latitude == 0.0 && longitude == 0.0 {
        flags |= FixFlags::ZERO_COORD;
    } else if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
        flags |= FixFlags::OUT_OF_RANGE;
    }
    match time_ms {
        None => flags |= FixFlags::INVALID_TIME,
        Some(t) if t > now_ms + cfg.max_future_skew.as_millis() as i64 => {
            flags |= FixFlags::FUTURE_TIME
        }
        Some(_) => {}
    }
    flags
}

/// Great-circle distance in kilometres (haversine on a spherical Earth; plenty for jump checks).
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

/// A position at a device time, the unit of the jump check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub time_ms: i64,
    pub latitude: f64,
    pub longitude: f64,
}

/// Speed in km/h needed to get from `a` to `b`. Fixes less than a second apart count as one
/// second apart so that two different positions at the same instant are not infinitely fast.
pub fn implied_speed_kmh(a: &Point, b: &Point) -> f64 {
    let dt_h = ((b.time_ms - a.time_ms).abs().max(1000)) as f64 / 3_600_000.0;
    distance_km(a.latitude, a.longitude, b.latitude, b.longitude) / dt_h
}

/// Whether getting from `a` to `b` takes more than `max_speed_kmh`.
///
/// Most fixes are a short drive from the last one, and the haversine's trigonometry was a
/// quarter of the jump check's cost per position (session 13). So the distance is first bounded
/// from above without it: going along the meridian from `a` to `b`'s latitude, then along that
/// parallel to `b`, is a path of at most R·(|Δφ| + |Δλ|), and no path is shorter than the
/// great circle. Only when that bound is over the limit is the distance computed.
pub fn too_fast(a: &Point, b: &Point, max_speed_kmh: f64) -> bool {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let dt_h = ((b.time_ms - a.time_ms).abs().max(1000)) as f64 / 3_600_000.0;
    let dlat = (b.latitude - a.latitude).abs();
    let mut dlon = (b.longitude - a.longitude).abs() % 360.0;
    if dlon > 180.0 {
        dlon = 360.0 - dlon;
    }
    // Where the bound equals the distance (a move along a meridian or the equator), rounding
    // could put the haversine a few ulps above it: the margin keeps the shortcut on the safe side.
    let bound_km = EARTH_RADIUS_KM * (dlat + dlon).to_radians() * (1.0 + 1e-9);
    // The comparison below is false for a NaN bound, which then takes the exact path.
    if bound_km <= max_speed_kmh * dt_h {
        return false;
    }
    implied_speed_kmh(a, b) > max_speed_kmh
}

/// Per-device impossible-jump detector.
///
/// A fix is compared with the device's last accepted position (the anchor). A single outlier is
/// flagged. But if the anchor itself was the outlier, every later fix would be flagged forever, so
/// when `CONFIRMATIONS` flagged fixes in a row agree with each other, the newest becomes the anchor.
#[derive(Debug, Clone, Default)]
pub struct JumpDetector {
    anchor: Option<Point>,
    candidate: Option<Point>,
    streak: u8,
}

const CONFIRMATIONS: u8 = 3;

impl JumpDetector {
    /// Starts from a known good position (the device's last known after a restart).
    pub fn with_anchor(anchor: Point) -> Self {
        JumpDetector {
            anchor: Some(anchor),
            ..Default::default()
        }
    }

    /// Checks `p` (a fix that passed the static checks) and returns whether it is an impossible jump.
    pub fn check(&mut self, p: Point, max_speed_kmh: f64) -> bool {
        let Some(anchor) = self.anchor else {
            self.anchor = Some(p);
            return false;
        };
        if p.time_ms < anchor.time_ms {
            // Late (blind-area) data: judge it against the anchor but never move the anchor back.
            return too_fast(&anchor, &p, max_speed_kmh);
        }
        if !too_fast(&anchor, &p, max_speed_kmh) {
            self.anchor = Some(p);
            self.candidate = None;
            self.streak = 0;
            return false;
        }
        match self.candidate {
            Some(c) if !too_fast(&c, &p, max_speed_kmh) => {
                self.streak += 1;
                if self.streak + 1 >= CONFIRMATIONS {
                    self.anchor = Some(p);
                    self.candidate = None;
                    self.streak = 0;
                    return false;
                }
                self.candidate = Some(p);
            }
            _ => {
                self.candidate = Some(p);
                self.streak = 0;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> SanitationConfig {
        SanitationConfig {
            max_speed_kmh: 300.0,
            max_future_skew: Duration::from_secs(600),
        }
    }

    fn pt(t_s: i64, lat: f64, lon: f64) -> Point {
        Point {
            time_ms: t_s * 1000,
            latitude: lat,
            longitude: lon,
        }
    }

    #[test]
    fn static_checks_flag_each_problem() {
        let now = 1_700_000_000_000;
        let ok = static_flags(Some(now), 22.5, 114.0, STATUS_FIXED, now, &cfg());
        assert!(ok.is_empty());
        assert_eq!(
            static_flags(Some(now), 22.5, 114.0, 0, now, &cfg()),
            FixFlags::NO_GNSS
        );
        assert_eq!(
            static_flags(Some(now), 0.0, 0.0, STATUS_FIXED, now, &cfg()),
            FixFlags::ZERO_COORD
        );
        assert_eq!(
            static_flags(Some(now), 95.0, 114.0, STATUS_FIXED, now, &cfg()),
            FixFlags::OUT_OF_RANGE
        );
        assert_eq!(
            static_flags(Some(now + 601_000), 22.5, 114.0, STATUS_FIXED, now, &cfg()),
            FixFlags::FUTURE_TIME
        );
        assert_eq!(
            static_flags(Some(now + 599_000), 22.5, 114.0, STATUS_FIXED, now, &cfg()),
            FixFlags::empty()
        );
        assert_eq!(
            static_flags(None, 22.5, 114.0, STATUS_FIXED, now, &cfg()),
            FixFlags::INVALID_TIME
        );
    }

    #[test]
    fn distance_is_about_right() {
        // One degree of latitude is about 111.2 km.
        let d = distance_km(22.0, 114.0, 23.0, 114.0);
        assert!((d - 111.2).abs() < 0.5, "{d}");
    }

    proptest::proptest! {
        /// The bound only decides when it proves the speed is within the limit: the verdict is
        /// the exact one.
        #[test]
        fn the_quick_bound_never_changes_the_verdict(
            lat1 in -90.0f64..90.0, lon1 in -180.0f64..180.0,
            dlat in -0.5f64..0.5, dlon in -0.5f64..0.5,
            dt_s in 0i64..600, max in 10.0f64..400.0,
            far in proptest::bool::ANY,
        ) {
            let a = pt(0, lat1, lon1);
            let (lat2, lon2) = if far {
                (-lat1, lon1 + 179.0 + dlon)
            } else {
                ((lat1 + dlat).clamp(-90.0, 90.0), lon1 + dlon)
            };
            let b = pt(dt_s, lat2, lon2);
            proptest::prop_assert_eq!(too_fast(&a, &b, max), implied_speed_kmh(&a, &b) > max);
        }
    }

    #[test]
    fn odd_coordinates_get_the_exact_verdict() {
        let a = pt(0, 22.5, 114.0);
        for b in [
            pt(10, f64::NAN, 114.0),
            pt(10, 22.5, f64::INFINITY),
            pt(10, 95.0, 114.0),
            pt(10, -120.0, 400.0),
            pt(10, 90.0, 114.0),
        ] {
            assert_eq!(
                too_fast(&a, &b, 300.0),
                implied_speed_kmh(&a, &b) > 300.0,
                "{b:?}"
            );
        }
    }

    #[test]
    fn the_bound_wraps_at_the_antimeridian() {
        // 0.2 degrees apart across the antimeridian: about 22 km in an hour.
        assert!(!too_fast(&pt(0, 0.0, 179.9), &pt(3600, 0.0, -179.9), 30.0));
        assert!(too_fast(&pt(0, 0.0, 179.9), &pt(3600, 0.0, -179.9), 20.0));
    }

    #[test]
    fn a_single_outlier_is_flagged_and_the_track_continues() {
        let mut j = JumpDetector::default();
        assert!(!j.check(pt(0, 22.5, 114.0), 300.0));
        assert!(!j.check(pt(10, 22.5005, 114.0), 300.0));
        // 1000 km in 10 s.
        assert!(j.check(pt(20, 31.5, 114.0), 300.0));
        assert!(!j.check(pt(30, 22.501, 114.0), 300.0));
    }

    #[test]
    fn a_wrong_anchor_is_replaced_after_consistent_fixes() {
        let mut j = JumpDetector::with_anchor(pt(0, 0.5, 0.5));
        assert!(j.check(pt(10, 22.5, 114.0), 300.0));
        assert!(j.check(pt(20, 22.5001, 114.0), 300.0));
        assert!(!j.check(pt(30, 22.5002, 114.0), 300.0));
        assert!(!j.check(pt(40, 22.5003, 114.0), 300.0));
    }

    #[test]
    fn late_fixes_are_checked_without_moving_the_anchor() {
        let mut j = JumpDetector::default();
        assert!(!j.check(pt(3600, 22.5, 114.0), 300.0));
        // An hour earlier and 50 km away: plausible.
        assert!(!j.check(pt(0, 22.05, 114.0), 300.0));
        // The anchor is still the newest fix.
        assert!(!j.check(pt(3610, 22.5001, 114.0), 300.0));
    }
}

//! The last known position of one vehicle (or one device) and the state derived from it.
//!
//! Pure logic: fixes go in, in any order, and the last known position only ever moves forward in
//! device time. Motion is derived from device time so that replaying old data gives the same state.
use std::sync::Arc;

use crate::config::StateConfig;
use crate::model::{Fix, LastKnown, Motion, Signals};

/// JT/T 808 status bit 0: ACC (ignition) on.
pub const STATUS_ACC: u32 = 1;

/// Last-known state with the bookkeeping needed to derive "parked since".
#[derive(Debug, Clone)]
pub struct Tracker {
    /// Shared with the live view once published: a new position is a new allocation, so
    /// publishing it is a reference count, not a copy.
    pub last_known: Option<Arc<LastKnown>>,
    /// Device time from which the vehicle has been below the parked speed without interruption.
    slow_since_ms: Option<i64>,
    /// Alarm, status and health from the newest reports, valid fix or not.
    signals: Signals,
}

impl Tracker {
    pub fn new() -> Self {
        Tracker {
            last_known: None,
            slow_since_ms: None,
            signals: Signals::default(),
        }
    }

    /// Restores a tracker from a stored last known position.
    pub fn restore(lk: Arc<LastKnown>, cfg: &StateConfig) -> Self {
        let slow_since_ms = match lk.motion {
            Motion::Parked { since_ms } => Some(since_ms),
            Motion::Moving if (lk.fix.speed_kmh as f64) < cfg.parked_speed_kmh => {
                Some(lk.fix.time_ms)
            }
            Motion::Moving => None,
        };
        Tracker {
            signals: lk.signals.clone(),
            last_known: Some(lk),
            slow_since_ms,
        }
    }

    /// Restores a tracker from a stored signals record: a key that had reports, none of them
    /// with a valid fix. Its newest report's time is the key's replay mark, and the shard's
    /// write-at-once rules (a late report, see `pipeline::recover`) must start from it.
    pub fn with_signals(signals: Signals) -> Self {
        Tracker {
            last_known: None,
            slow_since_ms: None,
            signals,
        }
    }

    /// Alarm, status and health from the newest reports, valid fix or not.
    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// Device time of the newest report offered so far (with a trustworthy time, fix or not):
    /// the record's `signals.time_ms`. Start-up recovery replays the track from there, so a
    /// report older than this that changes the record must be stored with the record (see
    /// `pipeline::recover`).
    pub fn newest_report_ms(&self) -> i64 {
        self.signals.time_ms
    }

    /// Whether the key has anything to store: a last known position, or at least the signals
    /// of a report (a signals record, see `Write::Signals`).
    pub fn has_record(&self) -> bool {
        self.last_known.is_some() || !self.signals.is_empty()
    }

    /// Offers a fix. Returns true when the key's record changed: the fix became the last known
    /// position (only valid fixes newer in device time than the current one qualify), or it
    /// brought newer alarm, status or health signals, which a key without a last known position
    /// keeps as its signals record.
    pub fn offer(
        &mut self,
        key: &Arc<str>,
        fix: &Fix,
        last_frame_ms: i64,
        cfg: &StateConfig,
    ) -> bool {
        let signalled = self.signals.offer(fix);
        // Ties in device time between devices go to the lower terminal id, whatever order the
        // reports came in: the start-up replay sees them in track order (by terminal id) and
        // must come to the same record. A device's own report of the same second stays.
        let replaces = fix.is_valid()
            && self
                .last_known
                .as_ref()
                .is_none_or(|lk| match fix.time_ms.cmp(&lk.fix.time_ms) {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Less => false,
                    std::cmp::Ordering::Equal => *fix.terminal_id < *lk.fix.terminal_id,
                });
        if !replaces {
            if signalled {
                if let Some(lk) = &mut self.last_known {
                    // Copies the record if the live view shares it: that one stays as published.
                    // Only here: a fix that replaces the record takes the new signals with it,
                    // and copying the old record first was a clone and a free per position.
                    Arc::make_mut(lk).signals.clone_from(&self.signals);
                }
            }
            return signalled;
        }
        let slow = (fix.speed_kmh as f64) < cfg.parked_speed_kmh;
        self.slow_since_ms = if slow {
            Some(self.slow_since_ms.unwrap_or(fix.time_ms))
        } else {
            None
        };
        let motion = match self.slow_since_ms {
            Some(since) if fix.time_ms - since >= cfg.parked_after.as_millis() as i64 => {
                Motion::Parked { since_ms: since }
            }
            _ => Motion::Moving,
        };
        self.last_known = Some(super::spare::share(LastKnown {
            // The tracker's own key, shared: comparing it with the record's (a string that may
            // be cold in the cache, or another copy after a restart) cost more than the clone.
            vehicle_id: key.clone(),
            fix: fix.clone(),
            motion,
            acc: fix.status & STATUS_ACC != 0,
            last_frame_ms,
            signals: self.signals.clone(),
        }));
        true
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

/// Motion as shown to users at `now_ms`: a vehicle that stood still at its last fix and has not
/// reported since counts as parked once the parked threshold has passed since that fix.
pub fn motion_at(lk: &LastKnown, now_ms: i64, cfg: &StateConfig) -> Motion {
    match lk.motion {
        Motion::Parked { since_ms } => Motion::Parked { since_ms },
        Motion::Moving
            if (lk.fix.speed_kmh as f64) < cfg.parked_speed_kmh
                && now_ms - lk.fix.time_ms >= cfg.parked_after.as_millis() as i64 =>
        {
            Motion::Parked {
                since_ms: lk.fix.time_ms,
            }
        }
        Motion::Moving => Motion::Moving,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FixFlags;
    use std::time::Duration;

    /// Offers `fix` to `t` under the key "v" (keys do not matter to a tracker's decisions).
    fn offer(t: &mut Tracker, fix: &Fix) -> bool {
        t.offer(&"v".into(), fix, 0, &cfg())
    }

    fn cfg() -> StateConfig {
        StateConfig {
            offline_after: Duration::from_secs(600),
            parked_speed_kmh: 5.0,
            parked_after: Duration::from_secs(600),
            last_known_flush: Duration::from_secs(2),
        }
    }

    fn fix(tid: &str, t_s: i64, speed: f32, flags: FixFlags) -> Fix {
        Fix {
            terminal_id: tid.into(),
            time_ms: t_s * 1000,
            received_ms: t_s * 1000,
            latitude: 22.5,
            longitude: 114.0,
            altitude_m: 0,
            speed_kmh: speed,
            course: 0,
            alarm: 0,
            status: 0b11,
            flags,
            battery_pct: None,
            voltage_mv: None,
        }
    }

    #[test]
    fn last_known_never_moves_back_in_device_time() {
        let mut t = Tracker::new();
        assert!(offer(&mut t, &fix("a", 100, 50.0, FixFlags::empty())));
        assert!(!offer(&mut t, &fix("a", 50, 50.0, FixFlags::BLIND_AREA)));
        assert!(!offer(&mut t, &fix("a", 100, 50.0, FixFlags::empty())));
        assert!(offer(&mut t, &fix("b", 101, 50.0, FixFlags::empty())));
        let lk = t.last_known.as_ref().unwrap();
        assert_eq!(&*lk.fix.terminal_id, "b");
        assert!(lk.acc);
    }

    #[test]
    fn reports_of_two_devices_with_the_same_device_time_give_one_record_in_any_order() {
        // The wired unit with ACC on, the wireless one with ACC off, the same second: the
        // start-up replay reads them in terminal order, the live path gets them as they come.
        let mut wired = fix("013800000731", 100, 50.0, FixFlags::empty());
        wired.status = 0b11;
        let mut wireless = fix("013800000732", 100, 50.0, FixFlags::empty());
        wireless.status = 0b10;
        let mut a = Tracker::new();
        offer(&mut a, &wired);
        offer(&mut a, &wireless);
        let mut b = Tracker::new();
        offer(&mut b, &wireless);
        offer(&mut b, &wired);
        assert_eq!(a.last_known, b.last_known);
        let lk = a.last_known.unwrap();
        assert_eq!(&*lk.fix.terminal_id, "013800000731");
        assert!(lk.acc);
        assert_eq!(&*lk.signals.terminal_id, "013800000732");
        assert_eq!(lk.signals.status, 0b10);
    }

    #[test]
    fn flagged_fixes_never_become_last_known() {
        let mut t = Tracker::new();
        assert!(!t.has_record());
        // Its signals changed (a signals record), not its position.
        assert!(offer(&mut t, &fix("a", 100, 0.0, FixFlags::NO_GNSS)));
        assert!(t.last_known.is_none());
        assert!(t.has_record());
        assert!(!offer(&mut t, &fix("a", 100, 0.0, FixFlags::NO_GNSS)));
        assert!(offer(&mut t, &fix("a", 100, 0.0, FixFlags::BLIND_AREA)));
    }

    #[test]
    fn parked_after_standing_still_for_the_threshold() {
        let mut t = Tracker::new();
        offer(&mut t, &fix("a", 0, 60.0, FixFlags::empty()));
        offer(&mut t, &fix("a", 60, 2.0, FixFlags::empty()));
        assert_eq!(t.last_known.as_ref().unwrap().motion, Motion::Moving);
        offer(&mut t, &fix("a", 659, 0.0, FixFlags::empty()));
        assert_eq!(t.last_known.as_ref().unwrap().motion, Motion::Moving);
        offer(&mut t, &fix("a", 660, 0.0, FixFlags::empty()));
        assert_eq!(
            t.last_known.as_ref().unwrap().motion,
            Motion::Parked { since_ms: 60_000 }
        );
        offer(&mut t, &fix("a", 700, 30.0, FixFlags::empty()));
        assert_eq!(t.last_known.as_ref().unwrap().motion, Motion::Moving);
    }

    #[test]
    fn a_silent_slow_vehicle_is_shown_parked() {
        let mut t = Tracker::new();
        offer(&mut t, &fix("a", 0, 1.0, FixFlags::empty()));
        let lk = t.last_known.clone().unwrap();
        assert_eq!(motion_at(&lk, 599_000, &cfg()), Motion::Moving);
        assert_eq!(
            motion_at(&lk, 600_000, &cfg()),
            Motion::Parked { since_ms: 0 }
        );
    }
}

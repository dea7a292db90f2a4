//! Domain types shared by the gateway, the store and the registry.
//!
//! These are plain data: no I/O, no clock. Times are Unix milliseconds in UTC. The store encodes
//! them with postcard, which writes a struct as its fields in order with no names or lengths: a
//! record written before a field was added ends early and does not decode, `#[serde(default)]` or
//! not. Adding or changing a field is therefore a store format change (`FORMAT_VERSION` in
//! `store/engine.rs`).
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How a tracker is installed in the car. Lenders fit a wired unit (powered by the car, reports
/// often) and a hidden wireless one (battery, reports rarely) so that removing one is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceRole {
    Wired,
    Wireless,
}

impl std::str::FromStr for DeviceRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wired" => Ok(DeviceRole::Wired),
            "wireless" => Ok(DeviceRole::Wireless),
            other => Err(format!(
                "unknown role {other:?} (expected wired or wireless)"
            )),
        }
    }
}

/// Where a loan stands; later issues drive alerting and watch rules from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoanStage {
    #[default]
    Normal,
    Watch,
    OverdueM1,
    Serious,
    Settled,
}

impl std::str::FromStr for LoanStage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "normal" => Ok(LoanStage::Normal),
            "watch" => Ok(LoanStage::Watch),
            "overdue_m1" => Ok(LoanStage::OverdueM1),
            "serious" => Ok(LoanStage::Serious),
            "settled" => Ok(LoanStage::Settled),
            other => Err(format!(
                "unknown stage {other:?} (expected normal, watch, overdue_m1, serious or settled)"
            )),
        }
    }
}

/// A tracker as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Terminal id as sent in the JT808 header (phone number / terminal number), digits only.
    pub terminal_id: String,
    /// Wire protocol; only "jt808" today.
    pub protocol: String,
    pub role: DeviceRole,
    pub sim: Option<String>,
    pub imei: Option<String>,
    /// `None` means the device is known but not fitted to any vehicle yet (unassigned).
    pub vehicle_id: Option<String>,
    pub model: Option<String>,
    /// Per-model quirk: some firmware sends wrong check codes; accept them (counted) when true.
    pub skip_checksum: bool,
}

impl Device {
    /// A JT808 tracker known only by its terminal id: not fitted to a vehicle, no SIM, IMEI or
    /// model on record, assumed wired (the common case) until the registry says otherwise.
    pub fn unassigned(terminal_id: impl Into<String>) -> Device {
        Device {
            terminal_id: terminal_id.into(),
            protocol: "jt808".into(),
            role: DeviceRole::Wired,
            sim: None,
            imei: None,
            vehicle_id: None,
            model: None,
            skip_checksum: false,
        }
    }
}

/// A financed car.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vehicle {
    pub vehicle_id: String,
    pub plate: Option<String>,
    pub vin: Option<String>,
    pub loan_id: Option<String>,
}

/// The loan a car secures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loan {
    pub loan_id: String,
    pub vehicle_id: String,
    pub stage: LoanStage,
}

bitflags::bitflags! {
    /// Why a fix is suspect. A fix with any flag other than `BLIND_AREA` is stored (flagged) in the
    /// track but never becomes the last known position.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct FixFlags: u16 {
        /// The device says it has no GNSS fix (status bit 1 clear).
        const NO_GNSS = 1 << 0;
        /// Latitude and longitude are both zero.
        const ZERO_COORD = 1 << 1;
        /// Coordinates outside ±90 / ±180.
        const OUT_OF_RANGE = 1 << 2;
        /// Device time too far ahead of the gateway clock.
        const FUTURE_TIME = 1 << 3;
        /// Device time could not be parsed (bad BCD, impossible date).
        const INVALID_TIME = 1 << 4;
        /// Implied speed from the previous valid fix exceeds the configured limit.
        const IMPOSSIBLE_JUMP = 1 << 5;
        /// Sent late from the device's blind-area buffer (0x0704 type 1). Not a defect.
        const BLIND_AREA = 1 << 6;
        /// A re-send of a fix already processed.
        const DUPLICATE = 1 << 7;
    }
}

/// One position report from one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fix {
    pub terminal_id: Arc<str>,
    /// Device time (UTC, Unix ms). Track order and "last known moves forward" use this time.
    pub time_ms: i64,
    /// Gateway wall clock when the frame arrived (Unix ms).
    pub received_ms: i64,
    pub latitude: f64,
    pub longitude: f64,
    pub altitude_m: i32,
    pub speed_kmh: f32,
    pub course: u16,
    pub alarm: u32,
    pub status: u32,
    pub flags: FixFlags,
    pub battery_pct: Option<u8>,
    pub voltage_mv: Option<u32>,
}

impl Fix {
    /// True when the fix may become a last known position: no flags except `BLIND_AREA`.
    pub fn is_valid(&self) -> bool {
        (self.flags - FixFlags::BLIND_AREA).is_empty()
    }
}

/// Derived motion state of a vehicle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Motion {
    Moving,
    Parked { since_ms: i64 },
}

/// Whether any of the vehicle's devices has been heard from recently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Online {
    Online,
    Offline { since_ms: i64 },
}

/// The freshest valid fix of a vehicle among all its devices, with derived state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastKnown {
    pub vehicle_id: Arc<str>,
    /// The source device is `fix.terminal_id`.
    pub fix: Fix,
    pub motion: Motion,
    pub acc: bool,
    /// Wall clock (Unix ms) of the last frame from any of the vehicle's devices.
    pub last_frame_ms: i64,
    /// Alarm, status and health from the newest reports, with or without a GNSS fix.
    pub signals: Signals,
}

/// What the newest reports said about the device and the car, whether or not they carried a
/// usable position. A tracker whose antenna was cut, or whose power was removed in a garage,
/// still reports its alarm bits without a fix; hiding them behind the last valid fix would hide
/// exactly the removal pattern the risk team watches for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Device time (Unix ms) of the report the alarm and status words come from.
    pub time_ms: i64,
    /// The device that sent that report.
    pub terminal_id: Arc<str>,
    pub alarm: u32,
    pub status: u32,
    /// The newest battery level any of the devices reported, and when.
    pub battery_pct: Option<u8>,
    pub battery_time_ms: i64,
    /// The newest external (car) voltage any of the devices reported, and when.
    pub voltage_mv: Option<u32>,
    pub voltage_time_ms: i64,
}

impl Signals {
    /// Whether no report was ever taken: the state of a key that has not reported. Field by
    /// field rather than against `Signals::default()`, which builds an `Arc<str>`: the shard asks
    /// for every report of a key without a position.
    pub fn is_empty(&self) -> bool {
        self.time_ms == 0
            && self.terminal_id.is_empty()
            && self.alarm == 0
            && self.status == 0
            && self.battery_pct.is_none()
            && self.voltage_mv.is_none()
    }

    /// Takes what `fix` says if it is newer in device time than what is known. Reports whose
    /// time cannot be trusted (invalid, or in the future) are skipped. Returns true on a change.
    pub fn offer(&mut self, fix: &Fix) -> bool {
        if fix
            .flags
            .intersects(FixFlags::INVALID_TIME | FixFlags::FUTURE_TIME)
        {
            return false;
        }
        let mut changed = false;
        // Ties in device time between devices go to the higher terminal id, whatever order the
        // reports came in: the start-up replay sees them in track order (by terminal id) and must
        // come to the same signals. A device's own later report of the same second replaces its
        // earlier one.
        let newer = fix.time_ms > self.time_ms
            || fix.time_ms == self.time_ms && *fix.terminal_id >= *self.terminal_id;
        if newer {
            // Usually the very same shared id (the device's route): compare pointers first.
            // Another pointer is taken over even when only the bytes are equal (a record loaded
            // at start-up has its own copy), so that the next comparison needs no bytes either.
            let shared = Arc::ptr_eq(&self.terminal_id, &fix.terminal_id);
            let other_device = !shared && self.terminal_id != fix.terminal_id;
            changed = self.time_ms != fix.time_ms
                || self.alarm != fix.alarm
                || self.status != fix.status
                || other_device;
            self.time_ms = fix.time_ms;
            self.alarm = fix.alarm;
            self.status = fix.status;
            if !shared {
                self.terminal_id = fix.terminal_id.clone();
            }
        }
        if let Some(pct) = fix.battery_pct {
            changed |= take_reading(
                &mut self.battery_pct,
                &mut self.battery_time_ms,
                pct,
                fix.time_ms,
            );
        }
        if let Some(mv) = fix.voltage_mv {
            changed |= take_reading(
                &mut self.voltage_mv,
                &mut self.voltage_time_ms,
                mv,
                fix.time_ms,
            );
        }
        changed
    }
}

/// Takes a battery or voltage reading unless the known one is newer in device time. Of two
/// readings of the same second the later to arrive wins. The start-up replay comes to the same
/// reading: the store keeps the last copy of a device's re-sent second, and the replay offers the
/// points of one second from several devices in the order they were received
/// (`pipeline::recover`). Returns true on a change.
fn take_reading<T: PartialEq + Copy>(
    value: &mut Option<T>,
    time_ms: &mut i64,
    reading: T,
    reading_ms: i64,
) -> bool {
    if reading_ms < *time_ms {
        return false;
    }
    let changed = *value != Some(reading);
    *value = Some(reading);
    *time_ms = reading_ms;
    changed
}

#[cfg(test)]
impl Fix {
    /// A valid fix without signals, at `time_ms`, with a latitude to tell points apart.
    pub(crate) fn for_test(terminal: &str, time_ms: i64, latitude: f64) -> Fix {
        Fix {
            terminal_id: terminal.into(),
            time_ms,
            received_ms: 0,
            latitude,
            longitude: 0.0,
            altitude_m: 0,
            speed_kmh: 0.0,
            course: 0,
            alarm: 0,
            status: 0,
            flags: FixFlags::empty(),
            battery_pct: None,
            voltage_mv: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_ignores_only_blind_area() {
        let mut fix = Fix::for_test("1", 0, 1.0);
        fix.longitude = 1.0;
        fix.flags = FixFlags::BLIND_AREA;
        assert!(fix.is_valid());
        fix.flags |= FixFlags::ZERO_COORD;
        assert!(!fix.is_valid());
    }

    #[test]
    fn a_reading_of_the_same_second_replaces_the_known_one_and_an_older_one_does_not() {
        let report = |terminal: &str, time_ms: i64, battery: u8, voltage: u32| Fix {
            battery_pct: Some(battery),
            voltage_mv: Some(voltage),
            ..Fix::for_test(terminal, time_ms, 1.0)
        };
        let mut s = Signals::default();
        assert!(s.offer(&report("1", 1_000, 20, 12_000)));
        // A re-send of the same second with other extras: the store keeps this copy.
        assert!(s.offer(&report("1", 1_000, 80, 12_500)));
        assert_eq!((s.battery_pct, s.voltage_mv), (Some(80), Some(12_500)));
        assert!(!s.offer(&report("1", 1_000, 80, 12_500)), "nothing new");
        // An older one does not replace them, however low.
        assert!(!s.offer(&report("2", 500, 5, 1)));
        assert_eq!((s.battery_pct, s.voltage_mv), (Some(80), Some(12_500)));
        assert_eq!(s.battery_time_ms, 1_000);
    }

    #[test]
    fn enums_use_documented_spellings() {
        assert_eq!(
            serde_json::to_string(&LoanStage::OverdueM1).unwrap(),
            "\"overdue_m1\""
        );
        assert_eq!(
            serde_json::to_string(&DeviceRole::Wireless).unwrap(),
            "\"wireless\""
        );
        assert_eq!(
            "Overdue_M1".parse::<LoanStage>().unwrap(),
            LoanStage::OverdueM1
        );
    }
}

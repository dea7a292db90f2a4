//! Alarm and status words of the location report (JT/T 808-2013 §8.18
//! tables 24 and 25; 2019 additions as listed in shared/protocols/JT808.md).

bitflags::bitflags! {
    /// Alarm flags (0x0200 offset 0). Names follow 2013; bits that 2019
    /// assigned in formerly reserved positions carry their 2019 names.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Alarm: u32 {
        /// SOS button (cleared after the platform's acknowledgement).
        const EMERGENCY = 1 << 0;
        const OVERSPEED = 1 << 1;
        const FATIGUE = 1 << 2;
        /// "Danger warning" in 2013; dangerous-driving alarm in 2019.
        const EARLY_WARNING = 1 << 3;
        const GNSS_FAULT = 1 << 4;
        const GNSS_ANTENNA_CUT = 1 << 5;
        const GNSS_ANTENNA_SHORT = 1 << 6;
        const UNDERVOLTAGE = 1 << 7;
        /// Main power lost: with silence afterwards, the classic removal pattern.
        const POWER_OFF = 1 << 8;
        const DISPLAY_FAULT = 1 << 9;
        const TTS_FAULT = 1 << 10;
        const CAMERA_FAULT = 1 << 11;
        /// 2013+ (reserved in 2011).
        const IC_CARD_FAULT = 1 << 12;
        const OVERSPEED_WARNING = 1 << 13;
        const FATIGUE_WARNING = 1 << 14;
        /// 2019: illegal driving period.
        const ILLEGAL_DRIVING_PERIOD = 1 << 15;
        /// 2019: tyre pressure warning.
        const TYRE_PRESSURE = 1 << 16;
        /// 2019: right-turn blind-spot alarm.
        const RIGHT_TURN_BLIND_SPOT = 1 << 17;
        const DRIVING_TIMEOUT = 1 << 18;
        const PARKING_TIMEOUT = 1 << 19;
        const AREA = 1 << 20;
        const ROUTE = 1 << 21;
        const ROUTE_TIME = 1 << 22;
        const ROUTE_DEVIATION = 1 << 23;
        const VSS_FAULT = 1 << 24;
        const FUEL_ABNORMAL = 1 << 25;
        const STOLEN = 1 << 26;
        const ILLEGAL_IGNITION = 1 << 27;
        /// Moved without ignition: towing.
        const ILLEGAL_DISPLACEMENT = 1 << 28;
        /// Collision warning (2013); collision/rollover alarm (2019).
        const COLLISION = 1 << 29;
        /// Rollover warning (2013; reserved in 2019 per most sources).
        const ROLLOVER = 1 << 30;
        /// Illegal door opening (2013).
        const ILLEGAL_DOOR_OPEN = 1 << 31;
    }
}

bitflags::bitflags! {
    /// Status flags (0x0200 offset 4).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Status: u32 {
        const ACC_ON = 1 << 0;
        /// The fix is valid.
        const FIXED = 1 << 1;
        const SOUTH = 1 << 2;
        const WEST = 1 << 3;
        const OUT_OF_SERVICE = 1 << 4;
        const COORDS_ENCRYPTED = 1 << 5;
        /// 2019: forward-collision warning (unverified).
        const FORWARD_COLLISION_WARNING = 1 << 6;
        /// 2019: lane departure warning (unverified).
        const LANE_DEPARTURE_WARNING = 1 << 7;
        /// Load state, two bits: 00 empty, 01 half, 11 full (2013).
        const LOAD_LOW = 1 << 8;
        const LOAD_HIGH = 1 << 9;
        const OIL_CUT = 1 << 10;
        const CIRCUIT_CUT = 1 << 11;
        const DOORS_LOCKED = 1 << 12;
        const DOOR1_OPEN = 1 << 13;
        const DOOR2_OPEN = 1 << 14;
        const DOOR3_OPEN = 1 << 15;
        const DOOR4_OPEN = 1 << 16;
        const DOOR5_OPEN = 1 << 17;
        const GPS = 1 << 18;
        const BEIDOU = 1 << 19;
        const GLONASS = 1 << 20;
        const GALILEO = 1 << 21;
        /// 2019: vehicle moving (unverified).
        const MOVING = 1 << 22;
    }
}

//! 0x0200 location report (JT/T 808-2013 §8.18 table 23: 28-byte basic
//! information, then additional items of table 27), also the body of 0x0201
//! (§8.20), of each 0x0704 item (§8.49) and the head of 0x0801 (§8.53).

use bytes::{BufMut, BytesMut};

use super::reader::Reader;
use crate::jt808::error::Error;
use crate::jt808::flags::{Alarm, Status};
use crate::jt808::time::BcdTime;

/// Length of the basic information block.
pub const BASIC_LEN: usize = 28;

/// One location fix. Coordinates are kept raw (degrees x 10^6, unsigned,
/// hemisphere in the status word) so that decoding costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location<'a> {
    pub alarm: Alarm,
    pub status: Status,
    pub lat_raw: u32,
    pub lon_raw: u32,
    pub altitude_m: u16,
    /// 1/10 km/h.
    pub speed_raw: u16,
    /// Degrees from north, clockwise.
    pub course: u16,
    pub time: BcdTime,
    pub extras: Extras<'a>,
}

impl<'a> Location<'a> {
    /// Latitude in degrees, negative in the southern hemisphere (status bit 2).
    pub fn latitude(&self) -> f64 {
        let v = self.lat_raw as f64 / 1e6;
        if self.status.contains(Status::SOUTH) {
            -v
        } else {
            v
        }
    }

    /// Longitude in degrees, negative in the western hemisphere (status bit 3).
    pub fn longitude(&self) -> f64 {
        let v = self.lon_raw as f64 / 1e6;
        if self.status.contains(Status::WEST) {
            -v
        } else {
            v
        }
    }

    /// Speed in km/h.
    pub fn speed_kmh(&self) -> f64 {
        self.speed_raw as f64 / 10.0
    }

    /// Decode a basic block plus the items that follow it in `body`.
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let loc = Self::decode_basic(&mut r)?;
        Ok(Location {
            extras: Extras(r.rest()),
            ..loc
        })
    }

    pub(crate) fn decode_basic(r: &mut Reader<'a>) -> Result<Self, Error> {
        let b = r.bytes(
            BASIC_LEN,
            "location: basic information shorter than 28 bytes",
        )?;
        let w = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let d = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Ok(Location {
            alarm: Alarm::from_bits_retain(d(0)),
            status: Status::from_bits_retain(d(4)),
            lat_raw: d(8),
            lon_raw: d(12),
            altitude_m: w(16),
            speed_raw: w(18),
            course: w(20),
            time: BcdTime([b[22], b[23], b[24], b[25], b[26], b[27]]),
            extras: Extras(&[]),
        })
    }

    /// Basic block only (0x0801 head).
    pub(crate) fn encode_basic(&self, out: &mut BytesMut) {
        out.put_u32(self.alarm.bits());
        out.put_u32(self.status.bits());
        out.put_u32(self.lat_raw);
        out.put_u32(self.lon_raw);
        out.put_u16(self.altitude_m);
        out.put_u16(self.speed_raw);
        out.put_u16(self.course);
        out.put_slice(&self.time.0);
    }

    /// Basic block plus items.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        self.encode_basic(out);
        out.put_slice(self.extras.0);
    }

    /// Length of the encoded body.
    pub fn encoded_len(&self) -> usize {
        BASIC_LEN + self.extras.0.len()
    }
}

/// One additional-information item (§8.18 table 27).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtraItem<'a> {
    pub id: u8,
    /// Length byte as sent.
    pub len: u8,
    /// Value bytes; shorter than `len` when the item overruns the body.
    pub value: &'a [u8],
    /// The item claims more bytes than the body holds (or has no length
    /// byte at all). Iteration stops after it.
    pub overrun: bool,
}

/// Raw additional-information items of a location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extras<'a>(pub &'a [u8]);

/// 0x11 overspeed detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverspeedDetail {
    /// 0 none, 1 circle, 2 rectangle, 3 polygon, 4 road section.
    pub location_type: u8,
    /// Absent when `location_type` is 0.
    pub area_id: Option<u32>,
}

/// 0x12 area/route entry-exit detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AreaDetail {
    pub location_type: u8,
    pub area_id: u32,
    /// 0 in, 1 out.
    pub direction: u8,
}

/// 0x13 section driving time detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTimeDetail {
    pub section_id: u32,
    pub time_s: u16,
    /// 0 too short, 1 too long.
    pub result: u8,
}

/// The standard additional items of one location (§8.18 table 27), read in
/// one pass. Items with a non-standard length are left out (vendors reuse
/// the ids); the first occurrence of an id wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StandardExtras {
    /// 0x01, 1/10 km.
    pub mileage_raw: Option<u32>,
    /// 0x02, 1/10 L.
    pub fuel_raw: Option<u16>,
    /// 0x03, 1/10 km/h.
    pub recorder_speed_raw: Option<u16>,
    /// 0x04.
    pub alarm_event_id: Option<u16>,
    /// 0x11.
    pub overspeed: Option<OverspeedDetail>,
    /// 0x12.
    pub area: Option<AreaDetail>,
    /// 0x13.
    pub route_time: Option<RouteTimeDetail>,
    /// 0x25.
    pub ext_status: Option<u32>,
    /// 0x2A.
    pub io_status: Option<u16>,
    /// 0x2B.
    pub analog: Option<u32>,
    /// 0x30.
    pub rssi: Option<u8>,
    /// 0x31.
    pub satellites: Option<u8>,
}

fn set<T>(slot: &mut Option<T>, v: Option<T>) {
    if slot.is_none() {
        *slot = v;
    }
}

impl<'a> Extras<'a> {
    /// All standard items in one pass (cheaper than calling each getter).
    pub fn standard(&self) -> StandardExtras {
        let mut s = StandardExtras::default();
        for it in self.iter() {
            if it.overrun {
                break;
            }
            let v = it.value;
            let w = || <[u8; 2]>::try_from(v).ok().map(u16::from_be_bytes);
            let d = || <[u8; 4]>::try_from(v).ok().map(u32::from_be_bytes);
            let b = || <[u8; 1]>::try_from(v).ok().map(|x| x[0]);
            match it.id {
                0x01 => set(&mut s.mileage_raw, d()),
                0x02 => set(&mut s.fuel_raw, w()),
                0x03 => set(&mut s.recorder_speed_raw, w()),
                0x04 => set(&mut s.alarm_event_id, w()),
                0x11 => set(&mut s.overspeed, overspeed(v)),
                0x12 => set(&mut s.area, area(v)),
                0x13 => set(&mut s.route_time, route_time(v)),
                0x25 => set(&mut s.ext_status, d()),
                0x2a => set(&mut s.io_status, w()),
                0x2b => set(&mut s.analog, d()),
                0x30 => set(&mut s.rssi, b()),
                0x31 => set(&mut s.satellites, b()),
                _ => {}
            }
        }
        s
    }

    /// Walk the items in order without allocating.
    #[inline]
    pub fn iter(&self) -> ExtraIter<'a> {
        ExtraIter { rest: self.0 }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Value of the first whole item with `id`.
    pub fn get(&self, id: u8) -> Option<&'a [u8]> {
        self.iter()
            .find(|i| i.id == id && !i.overrun)
            .map(|i| i.value)
    }

    /// Value of `id` only when it has the standard length `n`; items with a
    /// non-standard length are vendor reuse of the id and are not decoded.
    fn fixed<const N: usize>(&self, id: u8) -> Option<[u8; N]> {
        self.get(id).and_then(|v| v.try_into().ok())
    }

    /// The overrunning item, if any: (id, declared length, missing bytes).
    pub fn overrun(&self) -> Option<(u8, u8, usize)> {
        self.iter()
            .find(|i| i.overrun)
            .map(|i| (i.id, i.len, (i.len as usize).saturating_sub(i.value.len())))
    }

    /// 0x01 odometer, km (DWORD, 1/10 km).
    pub fn mileage_km(&self) -> Option<f64> {
        self.fixed::<4>(0x01)
            .map(|b| u32::from_be_bytes(b) as f64 / 10.0)
    }

    /// 0x02 fuel, litres (WORD, 1/10 L).
    pub fn fuel_l(&self) -> Option<f64> {
        self.fixed::<2>(0x02)
            .map(|b| u16::from_be_bytes(b) as f64 / 10.0)
    }

    /// 0x03 driving-recorder speed, km/h (WORD, 1/10 km/h).
    pub fn recorder_speed_kmh(&self) -> Option<f64> {
        self.fixed::<2>(0x03)
            .map(|b| u16::from_be_bytes(b) as f64 / 10.0)
    }

    /// 0x04 id of an alarm event needing manual confirmation (2013+).
    pub fn alarm_event_id(&self) -> Option<u16> {
        self.fixed::<2>(0x04).map(u16::from_be_bytes)
    }

    /// 0x11 overspeed detail (1 or 5 bytes).
    pub fn overspeed(&self) -> Option<OverspeedDetail> {
        overspeed(self.get(0x11)?)
    }

    /// 0x12 area/route entry-exit detail.
    pub fn area(&self) -> Option<AreaDetail> {
        area(self.get(0x12)?)
    }

    /// 0x13 section driving time detail.
    pub fn route_time(&self) -> Option<RouteTimeDetail> {
        route_time(self.get(0x13)?)
    }

    /// 0x25 extended vehicle signal status (DWORD).
    pub fn ext_status(&self) -> Option<u32> {
        self.fixed::<4>(0x25).map(u32::from_be_bytes)
    }

    /// 0x2A IO status (WORD: bit 0 deep sleep, bit 1 sleep).
    pub fn io_status(&self) -> Option<u16> {
        self.fixed::<2>(0x2a).map(u16::from_be_bytes)
    }

    /// 0x2B analog (DWORD: bits 0-15 AD0, bits 16-31 AD1).
    pub fn analog(&self) -> Option<u32> {
        self.fixed::<4>(0x2b).map(u32::from_be_bytes)
    }

    /// 0x30 wireless signal strength.
    pub fn rssi(&self) -> Option<u8> {
        self.fixed::<1>(0x30).map(|b| b[0])
    }

    /// 0x31 GNSS satellites in use.
    pub fn satellites(&self) -> Option<u8> {
        self.fixed::<1>(0x31).map(|b| b[0])
    }

    /// Append one item to a list being built (values over 255 bytes are truncated).
    pub fn put(out: &mut BytesMut, id: u8, value: &[u8]) {
        let n = value.len().min(255);
        out.put_u8(id);
        out.put_u8(n as u8);
        out.put_slice(&value[..n]);
    }
}

fn overspeed(v: &[u8]) -> Option<OverspeedDetail> {
    match v {
        [t] => Some(OverspeedDetail {
            location_type: *t,
            area_id: None,
        }),
        [t, a, b, c, d] => Some(OverspeedDetail {
            location_type: *t,
            area_id: Some(u32::from_be_bytes([*a, *b, *c, *d])),
        }),
        _ => None,
    }
}

fn area(v: &[u8]) -> Option<AreaDetail> {
    let b: [u8; 6] = v.try_into().ok()?;
    Some(AreaDetail {
        location_type: b[0],
        area_id: u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
        direction: b[5],
    })
}

fn route_time(v: &[u8]) -> Option<RouteTimeDetail> {
    let b: [u8; 7] = v.try_into().ok()?;
    Some(RouteTimeDetail {
        section_id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        time_s: u16::from_be_bytes([b[4], b[5]]),
        result: b[6],
    })
}

pub struct ExtraIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ExtraIter<'a> {
    type Item = ExtraItem<'a>;
    // Inlined across crates: every consumer of a location walks its items.
    #[inline]
    fn next(&mut self) -> Option<ExtraItem<'a>> {
        let r = self.rest;
        match r.len() {
            0 => None,
            1 => {
                self.rest = &[];
                Some(ExtraItem {
                    id: r[0],
                    len: 0,
                    value: &[],
                    overrun: true,
                })
            }
            _ => {
                let n = r[1] as usize;
                if 2 + n <= r.len() {
                    self.rest = &r[2 + n..];
                    Some(ExtraItem {
                        id: r[0],
                        len: r[1],
                        value: &r[2..2 + n],
                        overrun: false,
                    })
                } else {
                    // Real devices send lengths that overrun the body
                    // (JT808.md §11.3): keep what is there and stop.
                    self.rest = &[];
                    Some(ExtraItem {
                        id: r[0],
                        len: r[1],
                        value: &r[2..],
                        overrun: true,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extras_stop_at_overrun() {
        let e = Extras(&[0x30, 1, 0x17, 0xfb, 2, 0x00]);
        let items: Vec<_> = e.iter().collect();
        assert_eq!(items.len(), 2);
        assert!(items[1].overrun);
        assert_eq!(e.overrun(), Some((0xfb, 2, 1)));
        assert_eq!(e.rssi(), Some(0x17));
    }

    #[test]
    fn one_pass_matches_the_getters() {
        let e = Extras(&[
            0x01, 4, 0, 0, 0x24, 0xc7, 0x02, 2, 0, 55, 0x03, 2, 1, 0, 0x04, 2, 0, 44, 0x11, 5, 1,
            0, 0, 0, 9, 0x12, 6, 2, 0, 0, 0, 7, 1, 0x13, 7, 0, 0, 0, 3, 0, 60, 1, 0x25, 4, 0, 0, 0,
            3, 0x2a, 2, 0, 2, 0x2b, 4, 0, 1, 0, 2, 0x30, 1, 0x17, 0x31, 1, 0x1b, 0x01, 4, 9, 9, 9,
            9,
        ]);
        let s = e.standard();
        assert_eq!(s.mileage_raw.map(|m| m as f64 / 10.0), e.mileage_km());
        assert_eq!(s.fuel_raw, Some(55));
        assert_eq!(s.recorder_speed_raw, Some(256));
        assert_eq!(s.alarm_event_id, e.alarm_event_id());
        assert_eq!(s.overspeed, e.overspeed());
        assert_eq!(s.overspeed.unwrap().area_id, Some(9));
        assert_eq!(s.area, e.area());
        assert_eq!(s.area.unwrap().direction, 1);
        assert_eq!(s.route_time, e.route_time());
        assert_eq!(s.route_time.unwrap().time_s, 60);
        assert_eq!(s.ext_status, e.ext_status());
        assert_eq!(s.io_status, e.io_status());
        assert_eq!(s.analog, e.analog());
        assert_eq!(s.rssi, Some(0x17));
        assert_eq!(s.satellites, e.satellites());
    }

    #[test]
    fn nonstandard_length_not_decoded() {
        let e = Extras(&[0x01, 2, 0, 1, 0x31, 1, 9]);
        assert_eq!(e.mileage_km(), None);
        assert_eq!(e.satellites(), Some(9));
    }
}

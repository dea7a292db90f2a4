//! Uplink messages as a simulated terminal sends them.
//!
//! Bodies are laid out here (they are the "firmware" of the simulated device, JT/T 808-2013
//! §8.5, §8.8, §8.18, §8.52 and their 2019 counterparts); framing, escaping and the check code
//! come from the codec in `liengate_protocols` so the simulator exercises the same encoder the
//! gateway uses.
use bytes::{BufMut, BytesMut};
use liengate_protocols::jt808::{encode_frame, BcdTime, Header, TerminalId, Version};

use super::route::Sample;

pub const MSG_TERMINAL_RESPONSE: u16 = 0x0001;
pub const MSG_HEARTBEAT: u16 = 0x0002;
pub const MSG_REGISTER: u16 = 0x0100;
pub const MSG_AUTH: u16 = 0x0102;
pub const MSG_LOCATION: u16 = 0x0200;
pub const MSG_BATCH: u16 = 0x0704;
pub const MSG_PLATFORM_RESPONSE: u16 = 0x8001;
pub const MSG_SERVER_TIME: u16 = 0x8004;
pub const MSG_REGISTER_REPLY: u16 = 0x8100;

/// Status bit 0 (ACC on) and bit 1 (positioned), JT/T 808-2013 §8.18 table 24.
const STATUS_ACC_ON: u32 = 1 << 0;
const STATUS_FIXED: u32 = 1 << 1;

/// A location report: a route sample at a device time (Unix seconds, UTC).
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub sample: Sample,
    pub unix_secs: i64,
}

/// Identity data a terminal sends in its register message.
#[derive(Debug, Clone)]
pub struct Identity {
    pub terminal: TerminalId,
    pub version: Version,
    /// Short device id printed on the unit (upper-case letters and digits).
    pub device_id: String,
    /// Vehicle VIN, sent as the plate field with plate colour 0 (§8.5: colour 0 = VIN).
    pub vin: String,
    /// 15-digit IMEI, sent in the 2019 authentication message.
    pub imei: String,
}

/// Appends one framed message to `out`.
pub fn frame(id: &Identity, message_id: u16, serial: u16, body: &[u8], out: &mut BytesMut) {
    let header = Header::new(message_id, id.terminal, serial, id.version);
    encode_frame(&header, body, out);
}

/// Writes `text` into a fixed-width field, right-padded with 0x00 (truncated if longer).
fn put_fixed(body: &mut BytesMut, text: &[u8], width: usize) {
    let n = text.len().min(width);
    body.put_slice(&text[..n]);
    body.put_bytes(0, width - n);
}

/// 0x0100 register body (2013: 37-byte fixed part; 2019: 76 bytes), city Shanghai Pudong.
pub fn register_body(id: &Identity, body: &mut BytesMut) {
    body.put_u16(31); // province: Shanghai (GB/T 2260 "31")
    body.put_u16(115); // city/county: Pudong ("0115")
    match id.version {
        Version::V2019 => {
            put_fixed(body, b"LGSIM", 11);
            put_fixed(body, b"LG-SIM-WIRED-2019", 30);
            put_fixed(body, id.device_id.as_bytes(), 30);
        }
        Version::V2011 | Version::V2013 => {
            put_fixed(body, b"LGSIM", 5);
            put_fixed(body, b"LG-SIM-WIRED-2013", 20);
            put_fixed(body, id.device_id.as_bytes(), 7);
        }
    }
    body.put_u8(0); // plate colour 0: the plate field carries the VIN
    body.put_slice(id.vin.as_bytes());
}

/// 0x0102 authentication body: the bare code (2013) or length, code, IMEI, software version (2019).
pub fn auth_body(id: &Identity, code: &[u8], body: &mut BytesMut) {
    match id.version {
        Version::V2019 => {
            body.put_u8(code.len().min(255) as u8);
            body.put_slice(&code[..code.len().min(255)]);
            put_fixed(body, id.imei.as_bytes(), 15);
            put_fixed(body, b"LGSIM-1.0.0", 20);
        }
        Version::V2011 | Version::V2013 => body.put_slice(code),
    }
}

/// 0x0200 location body (also one item of a 0x0704 batch), with the extra items trackers
/// commonly send: mileage (0x01), extended vehicle signals (0x25), network signal (0x30) and
/// satellite count (0x31).
pub fn location_body(report: &Report, body: &mut BytesMut) {
    let s = &report.sample;
    let mut status = STATUS_FIXED;
    if s.acc_on {
        status |= STATUS_ACC_ON;
    }
    body.put_u32(0); // alarm word
    body.put_u32(status);
    // Latitude and longitude are unsigned millionths of a degree; the simulated fleet is in
    // the northern and eastern hemispheres so the SOUTH / WEST status bits stay clear.
    body.put_u32((s.latitude * 1e6).round() as u32);
    body.put_u32((s.longitude * 1e6).round() as u32);
    body.put_u16(s.altitude_m);
    body.put_u16((s.speed_kmh * 10.0).round() as u16);
    body.put_u16(s.course);
    body.put_slice(&BcdTime::from_unix(report.unix_secs).0);
    body.put_u8(0x01);
    body.put_u8(4);
    body.put_u32((s.mileage_m / 100.0) as u32);
    body.put_u8(0x25);
    body.put_u8(4);
    body.put_u32(0);
    body.put_u8(0x30);
    body.put_u8(1);
    body.put_u8(s.rssi);
    body.put_u8(0x31);
    body.put_u8(1);
    body.put_u8(s.satellites);
}

/// 0x0704 body carrying blind-area (type 1) positions, oldest first (§8.52).
pub fn blind_area_batch_body(reports: &[Report], body: &mut BytesMut) {
    body.put_u16(reports.len() as u16);
    body.put_u8(1);
    let mut item = BytesMut::with_capacity(64);
    for report in reports {
        item.clear();
        location_body(report, &mut item);
        body.put_u16(item.len() as u16);
        body.put_slice(&item);
    }
}

/// 0x0001 terminal general response body (§8.1).
pub fn terminal_response_body(reply_serial: u16, reply_id: u16, result: u8, body: &mut BytesMut) {
    body.put_u16(reply_serial);
    body.put_u16(reply_id);
    body.put_u8(result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use liengate_protocols::jt808::{decode_frame, DecodeOptions, Message, MAX_LOGICAL_FRAME};

    fn identity(version: Version) -> Identity {
        let digits = match version {
            Version::V2019 => "01390000000000000042",
            _ => "013900000042",
        };
        Identity {
            terminal: TerminalId::parse(digits, version).unwrap(),
            version,
            device_id: "SIM0042".into(),
            vin: "LSVAU2180N2000042".into(),
            imei: "860000000000042".into(),
        }
    }

    fn sample() -> Sample {
        Sample {
            latitude: 31.230416,
            longitude: 121.473701,
            altitude_m: 12,
            speed_kmh: 42.5,
            course: 270,
            acc_on: true,
            mileage_m: 123_456_700.0,
            satellites: 11,
            rssi: 25,
        }
    }

    fn decode_opts() -> DecodeOptions {
        DecodeOptions {
            skip_checksum: false,
            max_frame: liengate_protocols::jt808::DEFAULT_MAX_FRAME,
        }
    }

    #[test]
    fn location_round_trips_through_the_codec() {
        for version in [Version::V2013, Version::V2019] {
            let id = identity(version);
            let report = Report {
                sample: sample(),
                unix_secs: 1_767_225_600,
            };
            let mut body = BytesMut::new();
            location_body(&report, &mut body);
            let mut wire = BytesMut::new();
            frame(&id, MSG_LOCATION, 7, &body, &mut wire);
            let mut scratch = [0u8; MAX_LOGICAL_FRAME];
            let (packet, message) = decode_frame(&wire, &mut scratch, &decode_opts()).unwrap();
            assert_eq!(packet.header.serial, 7);
            assert_eq!(packet.header.version, version);
            assert_eq!(packet.header.terminal, id.terminal);
            let Message::Location(loc) = message else {
                panic!("not a location: {message:?}");
            };
            assert!((loc.latitude() - 31.230416).abs() < 1e-6);
            assert!((loc.longitude() - 121.473701).abs() < 1e-6);
            assert!((loc.speed_kmh() - 42.5).abs() < 0.05);
            assert_eq!(loc.course, 270);
            assert_eq!(loc.time.to_unix().unwrap(), 1_767_225_600);
            assert_eq!(loc.extras.satellites(), Some(11));
        }
    }

    #[test]
    fn register_and_auth_decode_with_the_fields_sent() {
        for version in [Version::V2013, Version::V2019] {
            let id = identity(version);
            let mut body = BytesMut::new();
            register_body(&id, &mut body);
            let mut wire = BytesMut::new();
            frame(&id, MSG_REGISTER, 0, &body, &mut wire);
            let mut scratch = [0u8; MAX_LOGICAL_FRAME];
            let (_, message) = decode_frame(&wire, &mut scratch, &decode_opts()).unwrap();
            let Message::Register(reg) = message else {
                panic!("not a register: {message:?}");
            };
            assert_eq!(reg.plate_color, 0);
            assert_eq!(reg.plate, id.vin.as_bytes());

            let mut body = BytesMut::new();
            auth_body(&id, b"A1B2C3", &mut body);
            let mut wire = BytesMut::new();
            frame(&id, MSG_AUTH, 1, &body, &mut wire);
            let (_, message) = decode_frame(&wire, &mut scratch, &decode_opts()).unwrap();
            let Message::Auth(auth) = message else {
                panic!("not an auth: {message:?}");
            };
            assert_eq!(auth.code, b"A1B2C3");
        }
    }

    #[test]
    fn blind_area_batch_keeps_every_item_in_order() {
        let id = identity(Version::V2013);
        let reports: Vec<Report> = (0..5)
            .map(|i| Report {
                sample: sample(),
                unix_secs: 1_767_225_600 + i,
            })
            .collect();
        let mut body = BytesMut::new();
        blind_area_batch_body(&reports, &mut body);
        let mut wire = BytesMut::new();
        frame(&id, MSG_BATCH, 9, &body, &mut wire);
        let mut scratch = [0u8; MAX_LOGICAL_FRAME];
        let (_, message) = decode_frame(&wire, &mut scratch, &decode_opts()).unwrap();
        let Message::Batch(batch) = message else {
            panic!("not a batch: {message:?}");
        };
        assert_eq!(batch.count, 5);
        let times: Vec<i64> = batch
            .items()
            .map(|item| item.unwrap().time.to_unix().unwrap())
            .collect();
        assert_eq!(times, (0..5).map(|i| 1_767_225_600 + i).collect::<Vec<_>>());
    }
}

//! Round trips of every message through a whole frame, and body errors.
use bytes::BytesMut;

use super::*;
use crate::jt808::flags::{Alarm, Status};
use crate::jt808::header::{Header, TerminalId};
use crate::jt808::packet::{decode_frame, encode_message, DecodeOptions};
use crate::jt808::MAX_LOGICAL_FRAME;

const EXTRAS: &[u8] = &[
    0x01, 4, 0, 0, 0x24, 0xc7, 0x30, 1, 0x17, 0x31, 1, 0x1b, 0xe1, 2, 0x7e, 0x7d,
];

fn location() -> Location<'static> {
    Location {
        alarm: Alarm::POWER_OFF | Alarm::ILLEGAL_DISPLACEMENT,
        status: Status::ACC_ON | Status::FIXED | Status::SOUTH,
        lat_raw: 22_585_732,
        lon_raw: 113_864_672,
        altitude_m: 15,
        speed_raw: 395,
        course: 292,
        time: BcdTime([0x23, 0x12, 0x07, 0x09, 0x36, 0x52]),
        extras: Extras(EXTRAS),
    }
}

/// One sample of every message the crate encodes, in the form `version`
/// expects (Auth, Text and VehicleControl differ in 2019).
fn samples(version: Version) -> Vec<Message<'static>> {
    let v19 = version == Version::V2019;
    let loc = location();
    let mut basic = loc;
    basic.extras = Extras(&[]);
    let batch_items: &'static [u8] = {
        let mut b = BytesMut::new();
        Batch::put_item(&mut b, &loc);
        Batch::put_item(&mut b, &basic);
        Box::leak(b.to_vec().into_boxed_slice())
    };
    let params: &'static [u8] = {
        let mut b = BytesMut::new();
        Params::put(&mut b, 0x0001, &30u32.to_be_bytes());
        Params::put(&mut b, 0x0013, b"10.0.0.1:7611");
        Box::leak(b.to_vec().into_boxed_slice())
    };
    vec![
        Message::GeneralResponse(GeneralResponse {
            reply_serial: 7,
            reply_id: 0x8103,
            result: 0,
        }),
        Message::Heartbeat,
        Message::Logout,
        Message::QueryServerTime,
        Message::Register(Register {
            province: 44,
            city: 303,
            maker_id: b"70111",
            model: b"BSJ-A6BD",
            device_id: b"0567872",
            plate_color: 1,
            plate: &[0xd4, 0xc1, b'B', b'8', b'8', b'8', b'8', b'8'],
        }),
        Message::Auth(Auth {
            code: b"auth-code",
            imei: v19.then_some(&b"123456789012345"[..]),
            software_version: v19.then_some(&b"3.7.15"[..]),
        }),
        Message::ParamsReply(ParamsReply {
            reply_serial: 9,
            count: 2,
            params: Params(params),
        }),
        Message::Attributes(Attributes {
            terminal_type: 0x00ff,
            maker_id: b"88888",
            model: b"CK100C",
            terminal_id: b"1000493",
            iccid: [0x89, 0x86, 0x03, 0x24, 0x94, 0x75, 0x60, 0x03, 0x29, 0x00],
            hardware_version: b"HW-V2.5",
            firmware_version: b"CK100C-JT-V024",
            gnss: 2,
            comm: 0x20,
        }),
        Message::UpgradeResult(UpgradeResult { kind: 0, result: 1 }),
        Message::Location(loc),
        Message::LocationReply {
            reply_serial: 0x1234,
            location: loc,
        },
        Message::EventReport(3),
        Message::QuestionReply {
            reply_serial: 61252,
            answer_id: 127,
        },
        Message::InfoDemand {
            info_type: 2,
            flag: 1,
        },
        Message::Batch(Batch {
            kind: BatchKind::BlindArea,
            count: 2,
            raw_items: batch_items,
        }),
        Message::MediaEvent(MediaEvent {
            media_id: 123,
            media_type: 0,
            format: 0,
            event: 7,
            channel: 1,
        }),
        Message::Media(Media {
            head: MediaEvent {
                media_id: 123,
                media_type: 1,
                format: 2,
                event: 1,
                channel: 2,
            },
            location: basic,
            data: &[0x0d, 0x7b, 0x0d, 0x7b, 0x7b],
        }),
        Message::CameraReply(CameraReply {
            reply_serial: 62656,
            result: 0,
            count: 2,
            raw_ids: &[0, 0, 0, 1, 0, 0, 0, 2],
        }),
        Message::Passthrough {
            kind: 0x41,
            data: b"serial data \x7e\x7d",
        },
        Message::PublicKey(PublicKey {
            e: 65537,
            n: &[0xab; 128],
        }),
        Message::PlatformResponse(GeneralResponse {
            reply_serial: 1,
            reply_id: 0x0200,
            result: GeneralResponse::ALARM_ACK,
        }),
        Message::ResendRequest(ResendRequest {
            original_serial: 4249,
            indices: PackageIndices::List(&[2, 5, 9]),
        }),
        Message::ServerTime(BcdTime::from_unix(1_700_000_000)),
        Message::RegisterReply(RegisterReply {
            reply_serial: 36,
            result: 0,
            auth_code: b"chwD0SE1f",
        }),
        Message::SetParams(SetParams {
            count: 2,
            params: Params(params),
        }),
        Message::QueryParams,
        Message::TerminalControl(TerminalControl {
            command: 4,
            params: b"",
        }),
        Message::QueryLocation,
        Message::TrackControl {
            interval_s: 10,
            validity_s: 3600,
        },
        Message::Text(Text {
            flag: 0x0c,
            text_type: v19.then_some(1),
            text: &[0xb2, 0xe2, 0xca, 0xd4],
        }),
        Message::VehicleControl(VehicleControl::door(true, version)),
        Message::MediaReply(MediaReply {
            media_id: 49503,
            retransmit: PackageIndices::List(&[1, 3]),
        }),
        Message::TerminalResendRequest(ResendRequest {
            original_serial: 7,
            indices: PackageIndices::List(&[1, 300]),
        }),
        Message::VehicleControlReply {
            reply_serial: 3,
            location: loc,
        },
        Message::QueryGivenParams(ParamIds {
            count: 2,
            raw_ids: &[0, 0, 0, 1, 0, 0, 0, 0x13],
        }),
        Message::QueryAttributes,
        Message::AlarmConfirm {
            alarm_serial: 0,
            types: Alarm::EMERGENCY | Alarm::ILLEGAL_DISPLACEMENT,
        },
        Message::LinkCheck,
        Message::PassthroughDown {
            kind: 0xf0,
            data: b"CUT_OIL",
        },
        Message::PlatformPublicKey(PublicKey {
            e: 3,
            n: &[0x7e; 128],
        }),
        Message::Unknown {
            id: 0x0f01,
            body: &[1, 2, 3, 0x7e],
        },
    ]
}

#[test]
fn every_message_round_trips_through_a_frame() {
    for version in [Version::V2011, Version::V2013, Version::V2019] {
        let terminal = TerminalId::parse("13912345678", version).unwrap();
        for (serial, msg) in samples(version).into_iter().enumerate() {
            let header = Header::new(0, terminal, serial as u16, version);
            let mut out = BytesMut::new();
            encode_message(&header, &msg, &mut out);
            let mut scratch = [0u8; MAX_LOGICAL_FRAME];
            let (p, m) = decode_frame(&out, &mut scratch, &DecodeOptions::default())
                .unwrap_or_else(|e| panic!("{version:?} {}: {e}", msg.name()));
            assert_eq!(m, msg, "{version:?} {}", msg.name());
            assert_eq!(p.header.message_id, msg.message_id());
            assert_eq!(p.header.serial, serial as u16);
            assert_eq!(p.header.terminal, terminal);
            // The 2011 header is the 2013 header; only a 2011 register body says 2011.
            let want = match (version, msg) {
                (Version::V2011, Message::Register(_)) => Version::V2011,
                (Version::V2011, _) => Version::V2013,
                (v, _) => v,
            };
            assert_eq!(p.header.version, want, "{}", msg.name());
        }
    }
}

#[test]
fn unknown_ids_are_not_errors() {
    let m = Message::decode(0xe001, Version::V2013, &[1, 2]).unwrap();
    assert_eq!(
        m,
        Message::Unknown {
            id: 0xe001,
            body: &[1, 2]
        }
    );
}

#[test]
fn short_bodies_are_typed_body_errors() {
    use crate::jt808::error::ErrorKind;
    for id in [
        id::TERMINAL_RESPONSE,
        id::REGISTER,
        id::LOCATION,
        id::LOCATION_REPLY,
        id::BATCH,
        id::MEDIA,
        id::PUBLIC_KEY,
        id::TRACK_CONTROL,
        id::SERVER_TIME,
    ] {
        let e = Message::decode(id, Version::V2013, &[0x00, 0x01]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Body, "{id:#06x}");
    }
}

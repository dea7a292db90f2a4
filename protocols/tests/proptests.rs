//! Property tests of the JT808 codec.
//!
//! 1. Every message type, uplink and downlink, in every header edition it
//!    exists in: `decode(encode(m)) == m`, header included.
//! 2. Arbitrary bytes never panic the splitter, the packet parser or any body
//!    decoder, and the splitter keeps its contract (progress, bounds).
//! 3. A stream of several encoded frames cut at any byte boundary, or fed in
//!    arbitrary chunks, yields exactly the messages of feeding it whole.
//! 4. A message too long for one frame, sent as sub-packages in any order
//!    with duplicates, reassembles to the original body.
//!
//! Messages borrow their byte fields, so the strategies generate an owned
//! `Spec` (plain `Vec<u8>`s) and `Spec::message` lends it out as a `Message`.
//! Specs are generated in canonical form, i.e. as the decoder itself would
//! produce them (for example no trailing 0x00 in a fixed-width text field,
//! because 0x00 is the padding the decoder strips).

use bytes::BytesMut;
use liengate_protocols::jt808::{
    decode_frame, encode_message, parse_packet, Alarm, Batch, BatchKind, BcdTime, CameraReply,
    DecodeOptions, Extras, GeneralResponse, Header, Location, Media, MediaEvent, MediaReply,
    Message, PackageIndices, ParamIds, Params, ParamsReply, PublicKey, Register, RegisterReply,
    ResendRequest, SetParams, Split, Splitter, Status, TerminalControl, TerminalId, Text,
    VehicleControl, Version, DEFAULT_MAX_FRAME, MAX_LOGICAL_FRAME,
};
use liengate_protocols::jt808::{
    encode_subpackaged, Attributes, Auth, Reassembler, Reassembly, ReassemblyLimits, UpgradeResult,
    MAX_BODY_LEN,
};
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Owned message descriptions
// ---------------------------------------------------------------------------

/// The basic block plus raw additional items of a location.
#[derive(Debug, Clone)]
struct LocSpec {
    alarm: u32,
    status: u32,
    lat: u32,
    lon: u32,
    altitude: u16,
    speed: u16,
    course: u16,
    time: [u8; 6],
    extras: Vec<u8>,
}

impl LocSpec {
    fn location(&self) -> Location<'_> {
        Location {
            alarm: Alarm::from_bits_retain(self.alarm),
            status: Status::from_bits_retain(self.status),
            lat_raw: self.lat,
            lon_raw: self.lon,
            altitude_m: self.altitude,
            speed_raw: self.speed,
            course: self.course,
            time: BcdTime(self.time),
            extras: Extras(&self.extras),
        }
    }
}

/// One message of any type, owning its bytes.
#[derive(Debug, Clone)]
enum Spec {
    GeneralResponse(u16, u16, u8),
    Heartbeat,
    Logout,
    QueryServerTime,
    TerminalResendRequest(u16, Vec<u16>),
    Register {
        province: u16,
        city: u16,
        maker: Vec<u8>,
        model: Vec<u8>,
        device: Vec<u8>,
        color: u8,
        plate: Vec<u8>,
    },
    Auth {
        code: Vec<u8>,
        imei: Option<Vec<u8>>,
        software: Option<Vec<u8>>,
    },
    ParamsReply {
        reply_serial: u16,
        count: u8,
        params: Vec<u8>,
    },
    Attributes {
        terminal_type: u16,
        maker: Vec<u8>,
        model: Vec<u8>,
        terminal: Vec<u8>,
        iccid: [u8; 10],
        hardware: Vec<u8>,
        firmware: Vec<u8>,
        gnss: u8,
        comm: u8,
    },
    UpgradeResult(u8, u8),
    Location(LocSpec),
    LocationReply(u16, LocSpec),
    EventReport(u8),
    QuestionReply(u16, u8),
    InfoDemand(u8, u8),
    VehicleControlReply(u16, LocSpec),
    Batch {
        kind: u8,
        items: Vec<LocSpec>,
        raw: Vec<u8>,
    },
    MediaEvent(u32, u8, u8, u8, u8),
    Media {
        head: (u32, u8, u8, u8, u8),
        location: LocSpec,
        data: Vec<u8>,
    },
    CameraReply {
        reply_serial: u16,
        result: u8,
        ids: Vec<u8>,
    },
    Passthrough(u8, Vec<u8>),
    PublicKey(u32, Vec<u8>),
    PlatformResponse(u16, u16, u8),
    ResendRequest {
        original_serial: u16,
        indices: Vec<u16>,
    },
    ServerTime([u8; 6]),
    RegisterReply {
        reply_serial: u16,
        result: u8,
        code: Vec<u8>,
    },
    SetParams {
        count: u8,
        params: Vec<u8>,
    },
    QueryParams,
    TerminalControl(u8, Vec<u8>),
    QueryGivenParams(Vec<u8>),
    QueryAttributes,
    QueryLocation,
    TrackControl(u16, u32),
    AlarmConfirm(u16, u32),
    LinkCheck,
    Text {
        flag: u8,
        text_type: Option<u8>,
        text: Vec<u8>,
    },
    VehicleFlag(u8),
    VehicleItems(u16, Vec<u8>),
    MediaReply {
        media_id: u32,
        indices: Vec<u16>,
    },
    PassthroughDown(u8, Vec<u8>),
    PlatformPublicKey(u32, Vec<u8>),
    Fragment {
        id: u16,
        total: u16,
        index: u16,
        body: Vec<u8>,
    },
    Unknown(u16, Vec<u8>),
}

fn media_event(
    (media_id, media_type, format, event, channel): (u32, u8, u8, u8, u8),
) -> MediaEvent {
    MediaEvent {
        media_id,
        media_type,
        format,
        event,
        channel,
    }
}

impl Spec {
    fn message(&self) -> Message<'_> {
        match self {
            Spec::GeneralResponse(reply_serial, reply_id, result) => {
                Message::GeneralResponse(GeneralResponse {
                    reply_serial: *reply_serial,
                    reply_id: *reply_id,
                    result: *result,
                })
            }
            Spec::Heartbeat => Message::Heartbeat,
            Spec::Logout => Message::Logout,
            Spec::QueryServerTime => Message::QueryServerTime,
            Spec::TerminalResendRequest(original_serial, indices) => {
                Message::TerminalResendRequest(ResendRequest {
                    original_serial: *original_serial,
                    indices: PackageIndices::List(indices),
                })
            }
            Spec::Register {
                province,
                city,
                maker,
                model,
                device,
                color,
                plate,
            } => Message::Register(Register {
                province: *province,
                city: *city,
                maker_id: maker,
                model,
                device_id: device,
                plate_color: *color,
                plate,
            }),
            Spec::Auth {
                code,
                imei,
                software,
            } => Message::Auth(Auth {
                code,
                imei: imei.as_deref(),
                software_version: software.as_deref(),
            }),
            Spec::ParamsReply {
                reply_serial,
                count,
                params,
            } => Message::ParamsReply(ParamsReply {
                reply_serial: *reply_serial,
                count: *count,
                params: Params(params),
            }),
            Spec::Attributes {
                terminal_type,
                maker,
                model,
                terminal,
                iccid,
                hardware,
                firmware,
                gnss,
                comm,
            } => Message::Attributes(Attributes {
                terminal_type: *terminal_type,
                maker_id: maker,
                model,
                terminal_id: terminal,
                iccid: *iccid,
                hardware_version: hardware,
                firmware_version: firmware,
                gnss: *gnss,
                comm: *comm,
            }),
            Spec::UpgradeResult(kind, result) => Message::UpgradeResult(UpgradeResult {
                kind: *kind,
                result: *result,
            }),
            Spec::Location(l) => Message::Location(l.location()),
            Spec::LocationReply(reply_serial, l) => Message::LocationReply {
                reply_serial: *reply_serial,
                location: l.location(),
            },
            Spec::EventReport(e) => Message::EventReport(*e),
            Spec::QuestionReply(reply_serial, answer_id) => Message::QuestionReply {
                reply_serial: *reply_serial,
                answer_id: *answer_id,
            },
            Spec::VehicleControlReply(reply_serial, l) => Message::VehicleControlReply {
                reply_serial: *reply_serial,
                location: l.location(),
            },
            Spec::InfoDemand(info_type, flag) => Message::InfoDemand {
                info_type: *info_type,
                flag: *flag,
            },
            Spec::Batch { kind, items, raw } => Message::Batch(Batch {
                kind: BatchKind::from_u8(*kind),
                count: items.len() as u16,
                raw_items: raw,
            }),
            Spec::MediaEvent(a, b, c, d, e) => {
                Message::MediaEvent(media_event((*a, *b, *c, *d, *e)))
            }
            Spec::Media {
                head,
                location,
                data,
            } => Message::Media(Media {
                head: media_event(*head),
                location: location.location(),
                data,
            }),
            Spec::CameraReply {
                reply_serial,
                result,
                ids,
            } => Message::CameraReply(CameraReply {
                reply_serial: *reply_serial,
                result: *result,
                count: (ids.len() / 4) as u16,
                raw_ids: ids,
            }),
            Spec::Passthrough(kind, data) => Message::Passthrough { kind: *kind, data },
            Spec::PublicKey(e, n) => Message::PublicKey(PublicKey { e: *e, n }),
            Spec::PlatformResponse(reply_serial, reply_id, result) => {
                Message::PlatformResponse(GeneralResponse {
                    reply_serial: *reply_serial,
                    reply_id: *reply_id,
                    result: *result,
                })
            }
            Spec::ResendRequest {
                original_serial,
                indices,
            } => Message::ResendRequest(ResendRequest {
                original_serial: *original_serial,
                indices: PackageIndices::List(indices),
            }),
            Spec::ServerTime(t) => Message::ServerTime(BcdTime(*t)),
            Spec::RegisterReply {
                reply_serial,
                result,
                code,
            } => Message::RegisterReply(RegisterReply {
                reply_serial: *reply_serial,
                result: *result,
                auth_code: code,
            }),
            Spec::SetParams { count, params } => Message::SetParams(SetParams {
                count: *count,
                params: Params(params),
            }),
            Spec::QueryParams => Message::QueryParams,
            Spec::TerminalControl(command, params) => Message::TerminalControl(TerminalControl {
                command: *command,
                params,
            }),
            Spec::QueryGivenParams(raw_ids) => Message::QueryGivenParams(ParamIds {
                count: (raw_ids.len() / 4) as u8,
                raw_ids,
            }),
            Spec::QueryAttributes => Message::QueryAttributes,
            Spec::QueryLocation => Message::QueryLocation,
            Spec::AlarmConfirm(alarm_serial, types) => Message::AlarmConfirm {
                alarm_serial: *alarm_serial,
                types: Alarm::from_bits_retain(*types),
            },
            Spec::LinkCheck => Message::LinkCheck,
            Spec::PassthroughDown(kind, data) => Message::PassthroughDown { kind: *kind, data },
            Spec::PlatformPublicKey(e, n) => Message::PlatformPublicKey(PublicKey { e: *e, n }),
            Spec::TrackControl(interval_s, validity_s) => Message::TrackControl {
                interval_s: *interval_s,
                validity_s: *validity_s,
            },
            Spec::Text {
                flag,
                text_type,
                text,
            } => Message::Text(Text {
                flag: *flag,
                text_type: *text_type,
                text,
            }),
            Spec::VehicleFlag(f) => Message::VehicleControl(VehicleControl::Flag(*f)),
            Spec::VehicleItems(count, items) => Message::VehicleControl(VehicleControl::Items {
                count: *count,
                items,
            }),
            Spec::MediaReply { media_id, indices } => Message::MediaReply(MediaReply {
                media_id: *media_id,
                retransmit: PackageIndices::List(indices),
            }),
            Spec::Fragment {
                id,
                total,
                index,
                body,
            } => Message::Fragment {
                id: *id,
                total: *total,
                index: *index,
                body,
            },
            Spec::Unknown(id, body) => Message::Unknown { id: *id, body },
        }
    }
}

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![
        Just(Version::V2011),
        Just(Version::V2013),
        Just(Version::V2019)
    ]
}

/// A fixed-width text field as the decoder returns it: at most `width` bytes
/// and no trailing 0x00 (the padding).
fn fixed_text(width: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=width).prop_map(|mut v| {
        while v.last() == Some(&0) {
            v.pop();
        }
        v
    })
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

/// Additional items: usually well formed (id, len, value), sometimes raw
/// bytes, which the codec must carry unchanged too.
fn extras() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec((any::<u8>(), bytes(12)), 0..6).prop_map(|items| {
            let mut out = BytesMut::new();
            for (id, value) in &items {
                Extras::put(&mut out, *id, value);
            }
            out.to_vec()
        }),
        1 => bytes(40),
    ]
}

fn location_with(extras: BoxedStrategy<Vec<u8>>) -> impl Strategy<Value = LocSpec> {
    (
        any::<(u32, u32, u32, u32)>(),
        any::<(u16, u16, u16)>(),
        any::<[u8; 6]>(),
        extras,
    )
        .prop_map(
            |((alarm, status, lat, lon), (altitude, speed, course), time, extras)| LocSpec {
                alarm,
                status,
                lat,
                lon,
                altitude,
                speed,
                course,
                time,
                extras,
            },
        )
}

fn location() -> impl Strategy<Value = LocSpec> {
    location_with(extras().boxed())
}

fn media_head() -> impl Strategy<Value = (u32, u8, u8, u8, u8)> {
    any::<(u32, u8, u8, u8, u8)>()
}

/// Whether the codec has a typed decoder for `id`: an id without one decodes
/// to `Message::Unknown` whatever the body, one with a decoder never does.
fn is_typed(id: u16) -> bool {
    let body = [0u8; 300];
    [Version::V2013, Version::V2019]
        .into_iter()
        .any(|v| !matches!(Message::decode(id, v, &body), Ok(Message::Unknown { .. })))
}

/// Message ids that no typed decoder claims (they decode as `Unknown`).
fn unknown_id() -> impl Strategy<Value = u16> {
    any::<u16>().prop_filter("a typed message id", |id| !is_typed(*id))
}

/// Every message type, in the canonical form for header edition `v`.
fn spec(v: Version) -> impl Strategy<Value = Spec> {
    let v2019 = v == Version::V2019;
    let register = {
        // Field widths per edition (2011 §8.4, 2013 §8.5, 2019).
        let (maker_w, model_w, device_w) = match v {
            Version::V2011 => (5, 8, 7),
            Version::V2013 => (5, 20, 7),
            Version::V2019 => (11, 30, 30),
        };
        // A 2011 body is told from a 2013 one by its length (< 37 bytes), so
        // a 2011 plate is shorter than 12 bytes, or it is the one longer 2011
        // form: colour 0 and a 17-character VIN. The 2011 model is
        // space-padded, and the decoder keeps the spaces as sent; a plate's
        // trailing 0x00 is padding some devices add, so it is not generated.
        let plate = if v == Version::V2011 {
            prop_oneof![
                3 => (any::<u8>(), fixed_text(11)).boxed(),
                1 => vec(prop_oneof![b'A'..=b'Z', b'0'..=b'9'], 17).prop_map(|vin| (0u8, vin)).boxed(),
            ]
            .boxed()
        } else {
            (any::<u8>(), fixed_text(24)).boxed()
        };
        (
            any::<(u16, u16)>(),
            fixed_text(maker_w),
            fixed_text(model_w),
            fixed_text(device_w),
            plate,
        )
            .prop_map(
                move |((province, city), maker, mut model, device, (color, plate))| {
                    if v == Version::V2011 {
                        model.resize(8, b' ');
                    }
                    Spec::Register {
                        province,
                        city,
                        maker,
                        model,
                        device,
                        color,
                        plate,
                    }
                },
            )
            // A 2013 body that happens to look like the 2011 VIN form is read
            // as 2011 by design; such a value is not a 2013 register.
            .prop_filter("2013 body ambiguous with the 2011 VIN form", move |spec| {
                let mut body = BytesMut::new();
                spec.message().encode_body(v, &mut body);
                Register::layout(&body, v) == v
            })
    };
    let auth = if v2019 {
        (bytes(40), fixed_text(15), fixed_text(20))
            .prop_map(|(code, imei, software)| Spec::Auth {
                code,
                imei: Some(imei),
                software: Some(software),
            })
            .boxed()
    } else {
        bytes(40)
            .prop_map(|code| Spec::Auth {
                code,
                imei: None,
                software: None,
            })
            .boxed()
    };
    let attributes = {
        let (model_w, terminal_w) = if v2019 { (30, 30) } else { (20, 7) };
        (
            any::<u16>(),
            fixed_text(5),
            fixed_text(model_w),
            fixed_text(terminal_w),
            any::<[u8; 10]>(),
            bytes(20),
            bytes(20),
            any::<(u8, u8)>(),
        )
            .prop_map(
                |(
                    terminal_type,
                    maker,
                    model,
                    terminal,
                    iccid,
                    hardware,
                    firmware,
                    (gnss, comm),
                )| {
                    Spec::Attributes {
                        terminal_type,
                        maker,
                        model,
                        terminal,
                        iccid,
                        hardware,
                        firmware,
                        gnss,
                        comm,
                    }
                },
            )
    };
    let batch = (any::<u8>(), vec(location(), 0..5)).prop_map(|(kind, items)| {
        let mut raw = BytesMut::new();
        for item in &items {
            Batch::put_item(&mut raw, &item.location());
        }
        Spec::Batch {
            kind,
            items,
            raw: raw.to_vec(),
        }
    });
    // 2011/2013 count indices in a BYTE, 2019 in a WORD.
    let resend = (any::<u16>(), vec(any::<u16>(), 0..40)).prop_map(|(original_serial, indices)| {
        Spec::ResendRequest {
            original_serial,
            indices,
        }
    });
    // 2019 text carries a type byte; older editions have none.
    let text = (any::<u8>(), any::<u8>(), bytes(60)).prop_map(move |(flag, t, text)| Spec::Text {
        flag,
        text_type: v2019.then_some(t),
        text,
    });
    let vehicle = if v2019 {
        (any::<u16>(), bytes(12))
            .prop_map(|(count, items)| Spec::VehicleItems(count, items))
            .boxed()
    } else {
        any::<u8>().prop_map(Spec::VehicleFlag).boxed()
    };
    // The register reply carries an auth code only on success (result 0).
    let register_reply =
        (any::<u16>(), 0u8..5, bytes(20)).prop_map(|(reply_serial, result, code)| {
            Spec::RegisterReply {
                reply_serial,
                result,
                code: if result == 0 { code } else { Vec::new() },
            }
        });
    let params_list = || {
        vec((any::<u32>(), bytes(10)), 0..6).prop_map(|items| {
            let mut out = BytesMut::new();
            for (id, value) in &items {
                Params::put(&mut out, *id, value);
            }
            out.to_vec()
        })
    };

    prop_oneof![
        any::<(u16, u16, u8)>().prop_map(|(a, b, c)| Spec::GeneralResponse(a, b, c)),
        Just(Spec::Heartbeat),
        Just(Spec::Logout),
        Just(Spec::QueryServerTime),
        (any::<u16>(), vec(any::<u16>(), 0..40))
            .prop_map(|(s, i)| Spec::TerminalResendRequest(s, i)),
        register,
        auth,
        (any::<(u16, u8)>(), params_list()).prop_map(|((reply_serial, count), params)| {
            Spec::ParamsReply {
                reply_serial,
                count,
                params,
            }
        }),
        attributes,
        any::<(u8, u8)>().prop_map(|(a, b)| Spec::UpgradeResult(a, b)),
        location().prop_map(Spec::Location),
        (any::<u16>(), location()).prop_map(|(s, l)| Spec::LocationReply(s, l)),
        any::<u8>().prop_map(Spec::EventReport),
        any::<(u16, u8)>().prop_map(|(a, b)| Spec::QuestionReply(a, b)),
        any::<(u8, u8)>().prop_map(|(a, b)| Spec::InfoDemand(a, b)),
        (any::<u16>(), location()).prop_map(|(s, l)| Spec::VehicleControlReply(s, l)),
        batch,
        media_head().prop_map(|(a, b, c, d, e)| Spec::MediaEvent(a, b, c, d, e)),
        (
            media_head(),
            location_with(Just(Vec::new()).boxed()),
            bytes(64)
        )
            .prop_map(|(head, location, data)| Spec::Media {
                head,
                location,
                data
            }),
        (any::<(u16, u8)>(), vec(any::<[u8; 4]>(), 0..8)).prop_map(
            |((reply_serial, result), ids)| {
                Spec::CameraReply {
                    reply_serial,
                    result,
                    ids: ids.concat(),
                }
            }
        ),
        (any::<u8>(), bytes(64)).prop_map(|(k, d)| Spec::Passthrough(k, d)),
        (any::<u32>(), vec(any::<u8>(), 128)).prop_map(|(e, n)| Spec::PublicKey(e, n)),
        any::<(u16, u16, u8)>().prop_map(|(a, b, c)| Spec::PlatformResponse(a, b, c)),
        resend,
        any::<[u8; 6]>().prop_map(Spec::ServerTime),
        register_reply,
        (any::<u8>(), params_list()).prop_map(|(count, params)| Spec::SetParams { count, params }),
        Just(Spec::QueryParams),
        (any::<u8>(), bytes(40)).prop_map(|(c, p)| Spec::TerminalControl(c, p)),
        vec(any::<[u8; 4]>(), 0..10).prop_map(|ids| Spec::QueryGivenParams(ids.concat())),
        Just(Spec::QueryAttributes),
        Just(Spec::QueryLocation),
        any::<(u16, u32)>().prop_map(|(i, s)| Spec::TrackControl(i, s)),
        any::<(u16, u32)>().prop_map(|(s, t)| Spec::AlarmConfirm(s, t)),
        Just(Spec::LinkCheck),
        (any::<u8>(), bytes(64)).prop_map(|(k, d)| Spec::PassthroughDown(k, d)),
        (any::<u32>(), vec(any::<u8>(), 128)).prop_map(|(e, n)| Spec::PlatformPublicKey(e, n)),
        text,
        vehicle,
        (any::<u32>(), vec(any::<u16>(), 0..20))
            .prop_map(|(media_id, indices)| Spec::MediaReply { media_id, indices }),
        (any::<u16>(), any::<u16>(), any::<u16>(), bytes(64)).prop_map(
            |(id, total, index, body)| Spec::Fragment {
                id,
                total,
                index,
                body
            }
        ),
        (unknown_id(), bytes(64)).prop_map(|(id, body)| Spec::Unknown(id, body)),
    ]
}

/// Header edition, terminal (any 6 or 10 bytes, BCD or not), serial and the
/// 2019 protocol version byte.
fn header_for(v: Version) -> impl Strategy<Value = Header> {
    let phone_len = if v == Version::V2019 { 10 } else { 6 };
    (vec(any::<u8>(), phone_len), any::<u16>(), 1u8..=255).prop_map(
        move |(phone, serial, protocol_version)| {
            let terminal = TerminalId::from_bytes(&phone).expect("6 or 10 phone bytes");
            let mut header = Header::new(0, terminal, serial, v);
            if v == Version::V2019 {
                header.protocol_version = protocol_version;
            }
            header
        },
    )
}

fn case() -> impl Strategy<Value = (Header, Spec)> {
    version().prop_flat_map(|v| (header_for(v), spec(v)))
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn encode(header: &Header, spec: &Spec) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_message(header, &spec.message(), &mut out);
    out.to_vec()
}

/// The edition a decoder reports for a header of `sent`: 2011 and 2013
/// headers are identical, and only a 0x0100 body in the 2011 layout says 2011.
fn reported_version(sent: Version, spec: &Spec) -> Version {
    match (sent, spec) {
        (Version::V2011, Spec::Register { .. }) => Version::V2011,
        (Version::V2011, _) => Version::V2013,
        (v, _) => v,
    }
}

fn strict() -> DecodeOptions {
    DecodeOptions {
        skip_checksum: false,
        max_frame: DEFAULT_MAX_FRAME,
    }
}

/// Drains every complete frame from `buf` with `splitter`, checks each
/// decoded message against `expected[*next]`, and drops what was consumed.
fn drain(
    splitter: &mut Splitter,
    buf: &mut Vec<u8>,
    scratch: &mut [u8; MAX_LOGICAL_FRAME],
    expected: &[(Header, Spec)],
    next: &mut usize,
) -> Result<(), TestCaseError> {
    loop {
        match splitter.next(buf) {
            Split::Frame { frame, consumed } => {
                let (packet, message) = decode_frame(&buf[frame], scratch, &strict())
                    .map_err(|e| TestCaseError::fail(format!("frame {next} rejected: {e:?}")))?;
                let (header, spec) = expected
                    .get(*next)
                    .ok_or_else(|| TestCaseError::fail("more frames than were sent"))?;
                prop_assert_eq!(message, spec.message());
                prop_assert_eq!(packet.header.serial, header.serial);
                *next += 1;
                buf.drain(..consumed);
            }
            Split::Incomplete { consumed } => {
                buf.drain(..consumed);
                return Ok(());
            }
            Split::Invalid { error, consumed } => {
                // Only the junk between frames may be rejected.
                prop_assert!(consumed > 0, "invalid span without progress: {:?}", error);
                buf.drain(..consumed);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// decode(encode(m)) == m for every message type and header edition.
    #[test]
    fn every_message_round_trips((header, spec) in case()) {
        let message = spec.message();
        let wire = encode(&header, &spec);
        let mut scratch = [0u8; MAX_LOGICAL_FRAME];
        let (packet, decoded) = decode_frame(&wire, &mut scratch, &strict())
            .map_err(|e| TestCaseError::fail(format!("{e:?} for {wire:02x?}")))?;
        prop_assert_eq!(decoded, message);
        prop_assert_eq!(packet.header.message_id, message.message_id());
        prop_assert_eq!(packet.header.serial, header.serial);
        prop_assert_eq!(packet.header.terminal, header.terminal);
        prop_assert_eq!(packet.header.protocol_version, header.protocol_version);
        prop_assert_eq!(packet.header.version, reported_version(header.version, &spec));
        prop_assert_eq!(usize::from(packet.header.body_len), packet.body.len());
        if let Spec::Batch { items, .. } = &spec {
            let Message::Batch(batch) = decoded else { unreachable!() };
            let got: Vec<Location<'_>> = batch.items().collect::<Result<_, _>>()
                .map_err(|e| TestCaseError::fail(format!("batch item: {e:?}")))?;
            let want: Vec<Location<'_>> = items.iter().map(LocSpec::location).collect();
            prop_assert_eq!(got, want);
        }
    }

    /// Arbitrary bytes, fed in arbitrary chunks, never panic the splitter or
    /// the decoders, and the splitter always makes progress within its bound.
    #[test]
    fn arbitrary_stream_never_panics(
        stream in vec(prop_oneof![3 => any::<u8>(), 1 => Just(0x7e_u8), 1 => Just(0x7d_u8)], 0..1500),
        chunk in 1usize..200,
        max_frame in 16usize..1200,
    ) {
        let mut splitter = Splitter::new(max_frame);
        let mut buf = Vec::new();
        let mut scratch = [0u8; MAX_LOGICAL_FRAME];
        let lenient = DecodeOptions { skip_checksum: true, max_frame };
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match splitter.next(&buf) {
                    Split::Frame { frame, consumed } => {
                        prop_assert!(frame.end <= consumed && consumed <= buf.len());
                        prop_assert_eq!(buf[frame.start], 0x7e);
                        prop_assert_eq!(buf[frame.end - 1], 0x7e);
                        let wire = &buf[frame];
                        let _ = decode_frame(wire, &mut scratch, &strict());
                        if let Ok((_, Message::Batch(batch))) = decode_frame(wire, &mut scratch, &lenient) {
                            batch.items().take(1024).for_each(drop);
                        }
                        buf.drain(..consumed);
                    }
                    Split::Incomplete { consumed } => {
                        prop_assert!(consumed <= buf.len());
                        buf.drain(..consumed);
                        break;
                    }
                    Split::Invalid { consumed, .. } => {
                        prop_assert!(consumed > 0 && consumed <= buf.len());
                        buf.drain(..consumed);
                    }
                }
            }
            prop_assert!(buf.len() <= max_frame + chunk, "kept {} bytes, limit {}", buf.len(), max_frame);
        }
    }

    /// Arbitrary bytes as a frame or as the body of every message id, in every
    /// edition: an error or a value, never a panic; lazy parts (extras, batch
    /// items, parameter lists) are walked too.
    #[test]
    fn arbitrary_bodies_never_panic(body in bytes(300), wire in bytes(300)) {
        let mut scratch = [0u8; MAX_LOGICAL_FRAME];
        for skip_checksum in [false, true] {
            let opts = DecodeOptions { skip_checksum, max_frame: DEFAULT_MAX_FRAME };
            if let Ok(packet) = parse_packet(&wire, &mut scratch, &opts) {
                let _ = packet.message();
            }
        }
        for id in [
            0x0001u16, 0x0002, 0x0003, 0x0004, 0x0100, 0x0102, 0x0104, 0x0107, 0x0108, 0x0200, 0x0201, 0x0301,
            0x0302, 0x0303, 0x0704, 0x0800, 0x0801, 0x0805, 0x0900, 0x0a00, 0x8001, 0x8003, 0x8004, 0x8100,
            0x8103, 0x8104, 0x8105, 0x8201, 0x8202, 0x8300, 0x8500, 0x8800, 0x1205,
        ] {
            for v in [Version::V2011, Version::V2013, Version::V2019] {
                match Message::decode(id, v, &body) {
                    Ok(Message::Location(l)) | Ok(Message::LocationReply { location: l, .. }) => walk(&l),
                    Ok(Message::Batch(b)) => b.items().flatten().for_each(|l| walk(&l)),
                    Ok(Message::ParamsReply(p)) => { let _ = (p.params.len(), p.params.trailing()); }
                    Ok(Message::SetParams(p)) => { let _ = (p.params.len(), p.params.trailing()); }
                    Ok(Message::CameraReply(c)) => { let _ = c.ids().count(); }
                    Ok(Message::ResendRequest(r)) => { let _ = r.indices.iter().count(); }
                    Ok(Message::MediaReply(r)) => { let _ = r.retransmit.iter().count(); }
                    Ok(other) => { let _ = other.name(); }
                    Err(e) => { let _ = e.kind.as_str(); }
                }
            }
        }
    }

    /// Several encoded frames (with junk between some of them) cut at every
    /// single byte boundary, and fed in random chunk sizes, give exactly the
    /// messages that were sent, in order.
    #[test]
    fn any_split_point_gives_the_same_messages(
        cases in vec(case(), 1..5),
        junk in vec(vec(any::<u8>().prop_filter("not a delimiter", |b| *b != 0x7e), 0..4), 5),
        chunks in vec(1usize..40, 1..20),
    ) {
        let mut stream = Vec::new();
        for (i, (header, spec)) in cases.iter().enumerate() {
            stream.extend_from_slice(&junk[i]);
            stream.extend_from_slice(&encode(header, spec));
        }
        let mut scratch = [0u8; MAX_LOGICAL_FRAME];

        // Whole stream at once.
        let mut splitter = Splitter::new(DEFAULT_MAX_FRAME);
        let mut buf = stream.clone();
        let mut next = 0;
        drain(&mut splitter, &mut buf, &mut scratch, &cases, &mut next)?;
        prop_assert_eq!(next, cases.len());

        // Every single cut point.
        for cut in 0..=stream.len() {
            let mut splitter = Splitter::new(DEFAULT_MAX_FRAME);
            let mut buf = Vec::new();
            let mut next = 0;
            for part in [&stream[..cut], &stream[cut..]] {
                buf.extend_from_slice(part);
                drain(&mut splitter, &mut buf, &mut scratch, &cases, &mut next)?;
            }
            prop_assert_eq!(next, cases.len(), "cut at {}", cut);
        }

        // Arbitrary chunk sizes, cycled over the stream.
        let mut splitter = Splitter::new(DEFAULT_MAX_FRAME);
        let mut buf = Vec::new();
        let mut next = 0;
        let mut at = 0;
        for size in chunks.iter().cycle() {
            if at >= stream.len() {
                break;
            }
            let end = (at + size).min(stream.len());
            buf.extend_from_slice(&stream[at..end]);
            at = end;
            drain(&mut splitter, &mut buf, &mut scratch, &cases, &mut next)?;
        }
        prop_assert_eq!(next, cases.len());
    }
}

/// A body longer than one frame, an arrival order of its packages, and
/// indices (0-based) of packages the device sends twice.
fn long_body_delivery() -> impl Strategy<Value = (Vec<u8>, Vec<usize>, Vec<usize>)> {
    vec(any::<u8>(), MAX_BODY_LEN + 1..5 * MAX_BODY_LEN).prop_flat_map(|body| {
        let n = body.len().div_ceil(MAX_BODY_LEN);
        (
            Just(body),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            vec(0..n, 0..4),
        )
    })
}

/// Splits an encoded stream into its frames.
fn frames_of(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut splitter = Splitter::new(DEFAULT_MAX_FRAME);
    let mut frames = Vec::new();
    let mut at = 0;
    while let Split::Frame { frame, consumed } = splitter.next(&stream[at..]) {
        frames.push(stream[at + frame.start..at + frame.end].to_vec());
        at += consumed;
    }
    assert_eq!(at, stream.len(), "the encoder wrote only whole frames");
    frames
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A message too long for one frame, sent as sub-packages with
    /// consecutive serials (any start, wrapping included), arriving in any
    /// order with duplicates while another terminal's message is pending,
    /// reassembles to exactly the original body. On the way the reassembler
    /// names exactly the packages still missing; afterwards it holds nothing
    /// of the completed message.
    #[test]
    fn subpackages_reassemble_in_any_order(
        (body, order, duplicates) in long_body_delivery(),
        serial in any::<u16>(),
        v2019 in any::<bool>(),
    ) {
        let version = if v2019 { Version::V2019 } else { Version::V2013 };
        let digits = if v2019 { "00000000013912345678" } else { "013912345678" };
        let other_digits = if v2019 { "00000000013900000000" } else { "013900000000" };
        let header = Header::new(0x0801, TerminalId::parse(digits, version).unwrap(), serial, version);
        let other = Header::new(0x0801, TerminalId::parse(other_digits, version).unwrap(), serial, version);

        let mut out = BytesMut::new();
        let total = encode_subpackaged(&header, &body, &mut out);
        let frames = frames_of(&out);
        prop_assert_eq!(usize::from(total), frames.len());
        prop_assert_eq!(frames.len(), order.len());
        out.clear();
        encode_subpackaged(&other, &body, &mut out);
        let other_first = frames_of(&out).swap_remove(0);

        let mut reassembler = Reassembler::new(ReassemblyLimits::default());
        let mut scratch = [0u8; MAX_LOGICAL_FRAME];
        let packet = parse_packet(&other_first, &mut scratch, &strict()).unwrap();
        let pending = matches!(reassembler.push(&packet, 0), Reassembly::Pending { .. });
        prop_assert!(pending);

        let mut arrivals = order.clone();
        for &d in &duplicates {
            // A resend arrives right after the original.
            let at = arrivals.iter().position(|&i| i == d).unwrap() + 1;
            arrivals.insert(at, d);
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut completed = 0;
        for (step, &i) in arrivals.iter().enumerate() {
            let packet = parse_packet(&frames[i], &mut scratch, &strict()).unwrap();
            prop_assert_eq!(
                packet.header.subpackage.map(|s| (s.total, s.index)),
                Some((total, i as u16 + 1))
            );
            seen.insert(i);
            match reassembler.push(&packet, step as u64) {
                Reassembly::Complete(whole) => {
                    prop_assert_eq!(seen.len(), frames.len(), "completed early");
                    prop_assert!(whole == body, "reassembled body differs");
                    completed += 1;
                }
                Reassembly::Pending { missing } => {
                    let want: Vec<u16> =
                        (0..frames.len()).filter(|j| !seen.contains(j)).map(|j| j as u16 + 1).collect();
                    if want.is_empty() {
                        // Only a duplicate of an already completed message
                        // can get here: it starts a new pending message.
                        prop_assert_eq!(completed, 1);
                    } else {
                        prop_assert_eq!(missing, want);
                    }
                }
                Reassembly::Rejected(e) => prop_assert!(false, "package {} rejected: {:?}", i + 1, e),
            }
        }
        prop_assert!(completed >= 1);
    }
}

/// Touches every lazily decoded part of a location.
fn walk(l: &Location<'_>) {
    let _ = (l.latitude(), l.longitude(), l.speed_kmh(), l.time.to_unix());
    for item in l.extras.iter() {
        let _ = (item.id, item.value.len());
    }
    let e = l.extras;
    let _ = (
        e.mileage_km(),
        e.fuel_l(),
        e.recorder_speed_kmh(),
        e.alarm_event_id(),
        e.overspeed(),
        e.area(),
    );
    let _ = (
        e.route_time(),
        e.ext_status(),
        e.io_status(),
        e.analog(),
        e.rssi(),
        e.satellites(),
        e.overrun(),
    );
}

/// The round-trip generator covers every message id the codec has a typed
/// decoder for, so a message type added to the codec without a generator
/// here fails this test instead of going untested.
#[test]
fn round_trip_generator_covers_every_typed_message() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use std::collections::BTreeSet;

    let typed: BTreeSet<u16> = (0..=u16::MAX).filter(|id| is_typed(*id)).collect();
    assert!(typed.len() >= 30, "only {} typed ids found", typed.len());
    let mut runner = TestRunner::deterministic();
    let mut generated = BTreeSet::new();
    for _ in 0..4000 {
        let (_, spec) = case().new_tree(&mut runner).expect("a case").current();
        generated.insert(spec.message().message_id());
    }
    let missing: Vec<String> = typed
        .difference(&generated)
        .map(|id| format!("0x{id:04x}"))
        .collect();
    assert!(
        missing.is_empty(),
        "no round-trip generator for {missing:?}"
    );
}

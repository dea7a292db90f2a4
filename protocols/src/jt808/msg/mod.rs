//! Typed message bodies, one module per message family, and the `Message`
//! enum that dispatches on the message id (JT/T 808-2013 §8).
//!
//! Decoding borrows from the unescaped frame and never allocates. Encoding
//! then decoding gives the same value back, except where the wire cannot
//! carry the difference:
//! - fixed-width text fields and the register plate lose trailing 0x00
//!   padding (values ending in 0x00 do not survive), and are truncated to
//!   their width;
//! - in 2019, `Auth::imei`/`software_version` always decode as `Some` and
//!   `Text::text_type` as `Some` (`None` is sent as 1);
//! - `VehicleControl::Flag` is the 2011/2013 form and `Items` the 2019 form;
//!   each decodes only with the matching header version;
//! - `RegisterReply::auth_code` is sent only with result 0 (§8.6);
//! - a 2011 register body of 37 bytes or more reads as 2013, except the
//!   42-byte form with a VIN (the editions
//!   differ only in the body, see `Register::layout`);
//! - 0x8003 (2013) and 0x8800 carry at most 255 indices, and lists are
//!   compared by value whether they came from the wire or from the caller.

use bytes::{BufMut, BytesMut};

mod attributes;
mod auth;
mod batch;
mod control;
mod general;
mod indices;
mod location;
mod media;
mod params;
pub(crate) mod reader;
mod register;

pub use attributes::{Attributes, UpgradeResult};
pub use auth::Auth;
pub use batch::{Batch, BatchKind};
pub use control::{PublicKey, ResendRequest, TerminalControl, Text, VehicleControl};
pub use general::GeneralResponse;
pub use indices::PackageIndices;
pub use location::{
    AreaDetail, ExtraItem, ExtraIter, Extras, Location, OverspeedDetail, RouteTimeDetail,
    StandardExtras, BASIC_LEN,
};
pub use media::{CameraReply, Media, MediaEvent, MediaReply};
pub use params::{Param, ParamIds, ParamIter, Params, ParamsReply, SetParams};
pub use register::{Register, RegisterReply};

use crate::jt808::error::Error;
use crate::jt808::flags::Alarm;
use crate::jt808::header::Version;
use crate::jt808::time::BcdTime;
use reader::Reader;

/// Message ids (JT/T 808-2013 §4, table of messages; 0x0004/0x8004 are 2019).
pub mod id {
    pub const TERMINAL_RESPONSE: u16 = 0x0001;
    pub const HEARTBEAT: u16 = 0x0002;
    pub const LOGOUT: u16 = 0x0003;
    pub const QUERY_SERVER_TIME: u16 = 0x0004;
    pub const TERMINAL_RESEND_REQUEST: u16 = 0x0005;
    pub const REGISTER: u16 = 0x0100;
    pub const AUTH: u16 = 0x0102;
    pub const PARAMS_REPLY: u16 = 0x0104;
    pub const ATTRIBUTES: u16 = 0x0107;
    pub const UPGRADE_RESULT: u16 = 0x0108;
    pub const LOCATION: u16 = 0x0200;
    pub const LOCATION_REPLY: u16 = 0x0201;
    pub const EVENT_REPORT: u16 = 0x0301;
    pub const VEHICLE_CONTROL_REPLY: u16 = 0x0500;
    pub const QUESTION_REPLY: u16 = 0x0302;
    pub const INFO_DEMAND: u16 = 0x0303;
    pub const BATCH: u16 = 0x0704;
    pub const MEDIA_EVENT: u16 = 0x0800;
    pub const MEDIA: u16 = 0x0801;
    pub const CAMERA_REPLY: u16 = 0x0805;
    pub const PASSTHROUGH: u16 = 0x0900;
    pub const PUBLIC_KEY: u16 = 0x0a00;
    pub const PLATFORM_RESPONSE: u16 = 0x8001;
    pub const RESEND_REQUEST: u16 = 0x8003;
    pub const SERVER_TIME: u16 = 0x8004;
    pub const REGISTER_REPLY: u16 = 0x8100;
    pub const SET_PARAMS: u16 = 0x8103;
    pub const QUERY_PARAMS: u16 = 0x8104;
    pub const TERMINAL_CONTROL: u16 = 0x8105;
    pub const QUERY_GIVEN_PARAMS: u16 = 0x8106;
    pub const QUERY_ATTRIBUTES: u16 = 0x8107;
    pub const QUERY_LOCATION: u16 = 0x8201;
    pub const TRACK_CONTROL: u16 = 0x8202;
    pub const ALARM_CONFIRM: u16 = 0x8203;
    pub const LINK_CHECK: u16 = 0x8204;
    pub const TEXT: u16 = 0x8300;
    pub const VEHICLE_CONTROL: u16 = 0x8500;
    pub const MEDIA_REPLY: u16 = 0x8800;
    pub const PASSTHROUGH_DOWN: u16 = 0x8900;
    pub const PLATFORM_PUBLIC_KEY: u16 = 0x8a00;
}

/// One decoded message. Uplink (terminal -> platform) first, then downlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// 0x0001
    GeneralResponse(GeneralResponse),
    /// 0x0002
    Heartbeat,
    /// 0x0003
    Logout,
    /// 0x0004 (2019)
    QueryServerTime,
    /// 0x0005 (2019) the terminal asks the platform to resend packages;
    /// same layout as the 2019 0x8003.
    TerminalResendRequest(ResendRequest<'a>),
    /// 0x0100
    Register(Register<'a>),
    /// 0x0102
    Auth(Auth<'a>),
    /// 0x0104
    ParamsReply(ParamsReply<'a>),
    /// 0x0107
    Attributes(Attributes<'a>),
    /// 0x0108
    UpgradeResult(UpgradeResult),
    /// 0x0200
    Location(Location<'a>),
    /// 0x0201
    LocationReply {
        reply_serial: u16,
        location: Location<'a>,
    },
    /// 0x0301 event id (2011/2013; removed in 2019)
    EventReport(u8),
    /// 0x0302 answer to a platform question
    QuestionReply { reply_serial: u16, answer_id: u8 },
    /// 0x0303 info-on-demand order (flag 1) / cancel (flag 0)
    InfoDemand { info_type: u8, flag: u8 },
    /// 0x0500 answer to 0x8500: reply serial + location (§8.34 table 55)
    VehicleControlReply {
        reply_serial: u16,
        location: Location<'a>,
    },
    /// 0x0704
    Batch(Batch<'a>),
    /// 0x0800
    MediaEvent(MediaEvent),
    /// 0x0801 (a whole, reassembled upload)
    Media(Media<'a>),
    /// 0x0805
    CameraReply(CameraReply<'a>),
    /// 0x0900
    Passthrough { kind: u8, data: &'a [u8] },
    /// 0x0A00
    PublicKey(PublicKey<'a>),
    /// 0x8001
    PlatformResponse(GeneralResponse),
    /// 0x8003
    ResendRequest(ResendRequest<'a>),
    /// 0x8004 (2019)
    ServerTime(BcdTime),
    /// 0x8100
    RegisterReply(RegisterReply<'a>),
    /// 0x8103
    SetParams(SetParams<'a>),
    /// 0x8104 query all parameters (empty body)
    QueryParams,
    /// 0x8105
    TerminalControl(TerminalControl<'a>),
    /// 0x8106 query the listed parameters
    QueryGivenParams(ParamIds<'a>),
    /// 0x8107 query terminal attributes (empty body)
    QueryAttributes,
    /// 0x8201
    QueryLocation,
    /// 0x8202 temporary tracking; interval 0 stops tracking
    TrackControl { interval_s: u16, validity_s: u32 },
    /// 0x8203 manual alarm confirmation (§8.22 tables 35-36): serial of the
    /// alarm message (0 = all of these types) and the alarm types confirmed.
    AlarmConfirm { alarm_serial: u16, types: Alarm },
    /// 0x8204 (2019) link check (empty body)
    LinkCheck,
    /// 0x8300
    Text(Text<'a>),
    /// 0x8500
    VehicleControl(VehicleControl<'a>),
    /// 0x8800
    MediaReply(MediaReply<'a>),
    /// 0x8900 downlink passthrough (§8.61 table 91); vendors carry their own
    /// commands (e.g. fuel cut) in it.
    PassthroughDown { kind: u8, data: &'a [u8] },
    /// 0x8A00 platform RSA public key (§8.63)
    PlatformPublicKey(PublicKey<'a>),
    /// One package of a subpackaged message (§4.4.3 table 3): feed it to
    /// `Reassembler` and decode the whole body with `Message::decode`.
    Fragment {
        id: u16,
        total: u16,
        index: u16,
        body: &'a [u8],
    },
    /// Any other message id: not an error.
    Unknown { id: u16, body: &'a [u8] },
}

impl<'a> Message<'a> {
    /// Decode a whole (not subpackaged, not encrypted) body for `message_id`
    /// with the header layout `version`.
    pub fn decode(message_id: u16, version: Version, body: &'a [u8]) -> Result<Self, Error> {
        use id::*;
        let mut r = Reader::new(body);
        Ok(match message_id {
            TERMINAL_RESPONSE => Message::GeneralResponse(GeneralResponse::decode(body)?),
            HEARTBEAT => Message::Heartbeat,
            LOGOUT => Message::Logout,
            QUERY_SERVER_TIME => Message::QueryServerTime,
            TERMINAL_RESEND_REQUEST => {
                Message::TerminalResendRequest(ResendRequest::decode(body, Version::V2019)?)
            }
            REGISTER => Message::Register(Register::decode(body, version)?),
            AUTH => Message::Auth(Auth::decode(body, version)?),
            PARAMS_REPLY => Message::ParamsReply(ParamsReply::decode(body)?),
            ATTRIBUTES => Message::Attributes(Attributes::decode(body, version)?),
            UPGRADE_RESULT => Message::UpgradeResult(UpgradeResult::decode(body)?),
            LOCATION => Message::Location(Location::decode(body)?),
            LOCATION_REPLY => {
                let reply_serial = r.u16("location reply: reply serial missing")?;
                Message::LocationReply {
                    reply_serial,
                    location: Location::decode(r.rest()).map_err(|mut e| {
                        e.offset += 2;
                        e
                    })?,
                }
            }
            EVENT_REPORT => Message::EventReport(r.u8("event report: event id missing")?),
            QUESTION_REPLY => Message::QuestionReply {
                reply_serial: r.u16("question reply: reply serial missing")?,
                answer_id: r.u8("question reply: answer id missing")?,
            },
            INFO_DEMAND => Message::InfoDemand {
                info_type: r.u8("info demand: type missing")?,
                flag: r.u8("info demand: flag missing")?,
            },
            VEHICLE_CONTROL_REPLY => {
                let reply_serial = r.u16("vehicle control reply: reply serial missing")?;
                Message::VehicleControlReply {
                    reply_serial,
                    location: Location::decode(r.rest()).map_err(|mut e| {
                        e.offset += 2;
                        e
                    })?,
                }
            }
            BATCH => Message::Batch(Batch::decode(body)?),
            MEDIA_EVENT => Message::MediaEvent(MediaEvent::decode(body)?),
            MEDIA => Message::Media(Media::decode(body)?),
            CAMERA_REPLY => Message::CameraReply(CameraReply::decode(body)?),
            PASSTHROUGH => Message::Passthrough {
                kind: r.u8("passthrough: type missing")?,
                data: r.rest(),
            },
            PUBLIC_KEY => Message::PublicKey(PublicKey::decode(body)?),
            PLATFORM_RESPONSE => Message::PlatformResponse(GeneralResponse::decode(body)?),
            RESEND_REQUEST => Message::ResendRequest(ResendRequest::decode(body, version)?),
            SERVER_TIME => {
                let b = r.bytes(6, "server time: BCD[6] missing")?;
                Message::ServerTime(BcdTime([b[0], b[1], b[2], b[3], b[4], b[5]]))
            }
            REGISTER_REPLY => Message::RegisterReply(RegisterReply::decode(body)?),
            SET_PARAMS => Message::SetParams(SetParams::decode(body)?),
            QUERY_PARAMS => Message::QueryParams,
            TERMINAL_CONTROL => Message::TerminalControl(TerminalControl::decode(body)?),
            QUERY_GIVEN_PARAMS => Message::QueryGivenParams(ParamIds::decode(body)?),
            QUERY_ATTRIBUTES => Message::QueryAttributes,
            QUERY_LOCATION => Message::QueryLocation,
            TRACK_CONTROL => {
                let interval_s = r.u16("track control: interval missing")?;
                // §8.21: with interval 0 (stop) the validity may be omitted.
                let validity_s = if interval_s == 0 && r.remaining() == 0 {
                    0
                } else {
                    r.u32("track control: validity missing")?
                };
                Message::TrackControl {
                    interval_s,
                    validity_s,
                }
            }
            ALARM_CONFIRM => Message::AlarmConfirm {
                alarm_serial: r.u16("alarm confirmation: serial missing")?,
                types: Alarm::from_bits_retain(r.u32("alarm confirmation: types missing")?),
            },
            LINK_CHECK => Message::LinkCheck,
            TEXT => Message::Text(Text::decode(body, version)?),
            VEHICLE_CONTROL => Message::VehicleControl(VehicleControl::decode(body, version)?),
            MEDIA_REPLY => Message::MediaReply(MediaReply::decode(body)?),
            PASSTHROUGH_DOWN => Message::PassthroughDown {
                kind: r.u8("passthrough: type missing")?,
                data: r.rest(),
            },
            PLATFORM_PUBLIC_KEY => Message::PlatformPublicKey(PublicKey::decode(body)?),
            other => Message::Unknown { id: other, body },
        })
    }

    /// The message id this message is sent with.
    pub fn message_id(&self) -> u16 {
        use id::*;
        match self {
            Message::GeneralResponse(_) => TERMINAL_RESPONSE,
            Message::Heartbeat => HEARTBEAT,
            Message::Logout => LOGOUT,
            Message::QueryServerTime => QUERY_SERVER_TIME,
            Message::TerminalResendRequest(_) => TERMINAL_RESEND_REQUEST,
            Message::Register(_) => REGISTER,
            Message::Auth(_) => AUTH,
            Message::ParamsReply(_) => PARAMS_REPLY,
            Message::Attributes(_) => ATTRIBUTES,
            Message::UpgradeResult(_) => UPGRADE_RESULT,
            Message::Location(_) => LOCATION,
            Message::LocationReply { .. } => LOCATION_REPLY,
            Message::EventReport(_) => EVENT_REPORT,
            Message::QuestionReply { .. } => QUESTION_REPLY,
            Message::InfoDemand { .. } => INFO_DEMAND,
            Message::VehicleControlReply { .. } => VEHICLE_CONTROL_REPLY,
            Message::Batch(_) => BATCH,
            Message::MediaEvent(_) => MEDIA_EVENT,
            Message::Media(_) => MEDIA,
            Message::CameraReply(_) => CAMERA_REPLY,
            Message::Passthrough { .. } => PASSTHROUGH,
            Message::PublicKey(_) => PUBLIC_KEY,
            Message::PlatformResponse(_) => PLATFORM_RESPONSE,
            Message::ResendRequest(_) => RESEND_REQUEST,
            Message::ServerTime(_) => SERVER_TIME,
            Message::RegisterReply(_) => REGISTER_REPLY,
            Message::SetParams(_) => SET_PARAMS,
            Message::QueryParams => QUERY_PARAMS,
            Message::TerminalControl(_) => TERMINAL_CONTROL,
            Message::QueryGivenParams(_) => QUERY_GIVEN_PARAMS,
            Message::QueryAttributes => QUERY_ATTRIBUTES,
            Message::QueryLocation => QUERY_LOCATION,
            Message::TrackControl { .. } => TRACK_CONTROL,
            Message::AlarmConfirm { .. } => ALARM_CONFIRM,
            Message::LinkCheck => LINK_CHECK,
            Message::Text(_) => TEXT,
            Message::VehicleControl(_) => VEHICLE_CONTROL,
            Message::MediaReply(_) => MEDIA_REPLY,
            Message::PassthroughDown { .. } => PASSTHROUGH_DOWN,
            Message::PlatformPublicKey(_) => PLATFORM_PUBLIC_KEY,
            Message::Fragment { id, .. } | Message::Unknown { id, .. } => *id,
        }
    }

    /// Snake-case name used in logs, metrics and the JSON view.
    pub fn name(&self) -> &'static str {
        match self {
            Message::GeneralResponse(_) => "general_response",
            Message::Heartbeat => "heartbeat",
            Message::Logout => "logout",
            Message::QueryServerTime => "query_server_time",
            Message::TerminalResendRequest(_) => "terminal_resend_request",
            Message::Register(_) => "register",
            Message::Auth(_) => "auth",
            Message::ParamsReply(_) => "params_reply",
            Message::Attributes(_) => "attributes",
            Message::UpgradeResult(_) => "upgrade_result",
            Message::Location(_) => "location",
            Message::LocationReply { .. } => "location_reply",
            Message::EventReport(_) => "event_report",
            Message::QuestionReply { .. } => "question_reply",
            Message::InfoDemand { .. } => "info_demand",
            Message::VehicleControlReply { .. } => "vehicle_control_reply",
            Message::Batch(_) => "batch",
            Message::MediaEvent(_) => "media_event",
            Message::Media(_) => "media",
            Message::CameraReply(_) => "camera_reply",
            Message::Passthrough { .. } => "passthrough",
            Message::PublicKey(_) => "public_key",
            Message::PlatformResponse(_) => "platform_response",
            Message::ResendRequest(_) => "resend_request",
            Message::ServerTime(_) => "server_time",
            Message::RegisterReply(_) => "register_reply",
            Message::SetParams(_) => "set_params",
            Message::QueryParams => "query_params",
            Message::TerminalControl(_) => "terminal_control",
            Message::QueryGivenParams(_) => "query_given_params",
            Message::QueryAttributes => "query_attributes",
            Message::QueryLocation => "query_location",
            Message::TrackControl { .. } => "track_control",
            Message::AlarmConfirm { .. } => "alarm_confirm",
            Message::LinkCheck => "link_check",
            Message::Text(_) => "text",
            Message::VehicleControl(_) => "vehicle_control",
            Message::MediaReply(_) => "media_reply",
            Message::PassthroughDown { .. } => "passthrough_down",
            Message::PlatformPublicKey(_) => "platform_public_key",
            Message::Fragment { .. } => "fragment",
            Message::Unknown { .. } => "unknown",
        }
    }

    /// Write the body for a header of `version` (`V2011` selects the 2011
    /// register layout; otherwise 2011 and 2013 bodies are the same).
    pub fn encode_body(&self, version: Version, out: &mut BytesMut) {
        match self {
            Message::GeneralResponse(g) | Message::PlatformResponse(g) => g.encode(out),
            Message::Heartbeat
            | Message::Logout
            | Message::QueryServerTime
            | Message::QueryParams
            | Message::QueryAttributes
            | Message::LinkCheck
            | Message::QueryLocation => {}
            Message::TerminalResendRequest(m) => m.encode(Version::V2019, out),
            Message::VehicleControlReply {
                reply_serial,
                location,
            } => {
                out.put_u16(*reply_serial);
                location.encode(out);
            }
            Message::QueryGivenParams(m) => m.encode(out),
            Message::AlarmConfirm {
                alarm_serial,
                types,
            } => {
                out.put_u16(*alarm_serial);
                out.put_u32(types.bits());
            }
            Message::PassthroughDown { kind, data } => {
                out.put_u8(*kind);
                out.put_slice(data);
            }
            Message::PlatformPublicKey(k) => k.encode(out),
            Message::Register(m) => m.encode(version, out),
            Message::Auth(m) => m.encode(version, out),
            Message::ParamsReply(m) => m.encode(out),
            Message::Attributes(m) => m.encode(version, out),
            Message::UpgradeResult(m) => m.encode(out),
            Message::Location(l) => l.encode(out),
            Message::LocationReply {
                reply_serial,
                location,
            } => {
                out.put_u16(*reply_serial);
                location.encode(out);
            }
            Message::EventReport(e) => out.put_u8(*e),
            Message::QuestionReply {
                reply_serial,
                answer_id,
            } => {
                out.put_u16(*reply_serial);
                out.put_u8(*answer_id);
            }
            Message::InfoDemand { info_type, flag } => {
                out.put_u8(*info_type);
                out.put_u8(*flag);
            }
            Message::Batch(b) => b.encode(out),
            Message::MediaEvent(m) => m.encode(out),
            Message::Media(m) => m.encode(out),
            Message::CameraReply(m) => m.encode(out),
            Message::Passthrough { kind, data } => {
                out.put_u8(*kind);
                out.put_slice(data);
            }
            Message::PublicKey(k) => k.encode(out),
            Message::ResendRequest(m) => m.encode(version, out),
            Message::ServerTime(t) => out.put_slice(&t.0),
            Message::RegisterReply(m) => m.encode(out),
            Message::SetParams(m) => m.encode(out),
            Message::TerminalControl(m) => m.encode(out),
            Message::TrackControl {
                interval_s,
                validity_s,
            } => {
                out.put_u16(*interval_s);
                out.put_u32(*validity_s);
            }
            Message::Text(t) => t.encode(version, out),
            Message::VehicleControl(v) => v.encode(out),
            Message::MediaReply(m) => m.encode(out),
            Message::Fragment { body, .. } | Message::Unknown { body, .. } => out.put_slice(body),
        }
    }
}

#[cfg(test)]
mod tests;

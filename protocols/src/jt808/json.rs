//! JSON view of decoded frames for `liengate decode` and the conformance
//! tests. Field names and units follow the "expect conventions" of
//! shared/reference-frames/README.md: header fields at the top level, one
//! object per message kind, degrees / km/h / RFC 3339 UTC, raw alarm and
//! status words, extras as `{id, len, hex}` plus the standard items decoded.

use serde_json::{json, Map, Value};

use super::error::Error;
use super::header::{Quirks, Version};
use super::msg::{Extras, Location, Message, Params, Register, VehicleControl};
use super::packet::Packet;
use super::time::{rfc3339, BcdTime};

/// GBK text (§4.2 STRING) as a Rust string; undecodable bytes become U+FFFD.
fn gbk(b: &[u8]) -> String {
    encoding_rs::GBK
        .decode_without_bom_handling(b)
        .0
        .into_owned()
}

/// Fields the standard defines as ASCII letters and digits (maker id,
/// model, terminal id). Other bytes become U+FFFD rather than being guessed
/// as GBK; the exact bytes are in the matching `*_hex` field.
fn ascii(b: &[u8]) -> String {
    b.iter()
        .map(|&c| if c.is_ascii() { c as char } else { '\u{fffd}' })
        .collect()
}

fn hex_prefix(b: &[u8]) -> String {
    hex::encode(&b[..b.len().min(16)])
}

/// `{"error":{"kind":"checksum","offset":N,"message":"..."}}`, with the
/// header's id, terminal and serial when they could be read.
pub fn error_json(e: &Error) -> Value {
    let mut inner = json!({
        "kind": e.kind.as_str(),
        "offset": e.offset,
        "message": e.detail,
    });
    if let Some(h) = &e.header {
        inner["message_id"] = json!(h.message_id);
        inner["terminal_id"] = json!(h.terminal.to_string());
        inner["serial"] = json!(h.serial);
    }
    json!({ "protocol": "jt808", "error": inner })
}

fn time_json(t: &BcdTime, obj: &mut Map<String, Value>) {
    match t.to_unix() {
        Ok(s) => {
            obj.insert("time".into(), json!(rfc3339(s)));
        }
        Err(e) => {
            obj.insert("time".into(), Value::Null);
            obj.insert("time_error".into(), json!(e.detail));
        }
    }
    obj.insert("time_bcd".into(), json!(hex::encode(t.0)));
}

fn extras_json(x: &Extras<'_>, quirks: &mut Vec<String>) -> (Value, Value) {
    let mut list = Vec::new();
    for it in x.iter() {
        let mut o = json!({"id": it.id, "len": it.len, "hex": hex::encode(it.value)});
        if it.overrun {
            o["overrun"] = json!(true);
        }
        list.push(o);
    }
    if let Some((id, len, by)) = x.overrun() {
        quirks.push(format!(
            "extras: item 0x{id:02x} len {len} overruns body by {by} bytes"
        ));
    }
    let mut d = Map::new();
    if let Some(v) = x.mileage_km() {
        d.insert("mileage_km".into(), json!(v));
    }
    if let Some(v) = x.fuel_l() {
        d.insert("fuel_l".into(), json!(v));
    }
    if let Some(v) = x.recorder_speed_kmh() {
        d.insert("recorder_speed_kmh".into(), json!(v));
    }
    if let Some(v) = x.alarm_event_id() {
        d.insert("manual_alarm_event_id".into(), json!(v));
    }
    if let Some(v) = x.overspeed() {
        d.insert(
            "overspeed".into(),
            json!({"location_type": v.location_type, "area_id": v.area_id}),
        );
    }
    if let Some(v) = x.area() {
        d.insert(
            "area".into(),
            json!({"location_type": v.location_type, "area_id": v.area_id, "direction": v.direction}),
        );
    }
    if let Some(v) = x.route_time() {
        d.insert(
            "route_time".into(),
            json!({"section_id": v.section_id, "time_s": v.time_s, "result": v.result}),
        );
    }
    if let Some(v) = x.ext_status() {
        d.insert("ext_vehicle_signal".into(), json!(v));
    }
    if let Some(v) = x.io_status() {
        d.insert("io_status".into(), json!(v));
    }
    if let Some(v) = x.analog() {
        d.insert("analog".into(), json!(v));
    }
    if let Some(v) = x.rssi() {
        d.insert("rssi".into(), json!(v));
    }
    if let Some(v) = x.satellites() {
        d.insert("gnss_satellites".into(), json!(v));
    }
    (Value::Array(list), Value::Object(d))
}

/// One location as an object (also used for batch items).
pub fn location_json(l: &Location<'_>, quirks: &mut Vec<String>) -> Value {
    let mut o = Map::new();
    o.insert("alarm".into(), json!(l.alarm.bits()));
    o.insert("status".into(), json!(l.status.bits()));
    o.insert("latitude".into(), json!(l.latitude()));
    o.insert("longitude".into(), json!(l.longitude()));
    o.insert("altitude_m".into(), json!(l.altitude_m));
    o.insert("speed_kmh".into(), json!(l.speed_kmh()));
    o.insert("course".into(), json!(l.course));
    time_json(&l.time, &mut o);
    o.insert(
        "alarm_flags".into(),
        json!(l.alarm.iter_names().map(|(n, _)| n).collect::<Vec<_>>()),
    );
    o.insert(
        "status_flags".into(),
        json!(l.status.iter_names().map(|(n, _)| n).collect::<Vec<_>>()),
    );
    let (list, decoded) = extras_json(&l.extras, quirks);
    o.insert("extras".into(), list);
    o.insert("extras_decoded".into(), decoded);
    Value::Object(o)
}

fn params_json(p: &Params<'_>) -> Value {
    Value::Array(
        p.iter()
            .map(|i| json!({"id": i.id, "len": i.value.len(), "hex": hex::encode(i.value)}))
            .collect(),
    )
}

fn params_quirks(id: &str, count: u8, p: &Params<'_>, quirks: &mut Vec<String>) {
    if p.len() < count as usize {
        quirks.push(format!("{id}: parameter list shorter than count"));
    }
    let t = p.trailing();
    if t > 0 {
        quirks.push(format!("{id}: {t} bytes after the last whole parameter"));
    }
}

/// The whole frame as one JSON object.
pub fn frame_json(p: &Packet<'_>, m: &Message<'_>) -> Value {
    let h = &p.header;
    let mut o = Map::new();
    let mut quirks: Vec<String> = Vec::new();
    o.insert("protocol".into(), json!("jt808"));
    o.insert("message_id".into(), json!(h.message_id));
    o.insert("message".into(), json!(m.name()));
    o.insert("version".into(), json!(h.version.as_str()));
    o.insert("terminal_id".into(), json!(h.terminal.to_string()));
    o.insert("serial".into(), json!(h.serial));
    o.insert("body_len".into(), json!(h.body_len));
    o.insert("encrypt".into(), json!(h.encryption));
    let flag =
        h.version == Version::V2019 || p.quirks.contains(Quirks::VERSION_FLAG_ON_2013_LAYOUT);
    o.insert("version_flag".into(), json!(flag));
    if h.version == Version::V2019 {
        o.insert("protocol_version".into(), json!(h.protocol_version));
    }
    if let Some(sp) = h.subpackage {
        o.insert(
            "subpackage".into(),
            json!({"total": sp.total, "index": sp.index}),
        );
    }
    if p.quirks.contains(Quirks::VERSION_FLAG_ON_2013_LAYOUT) {
        quirks.push("version flag (bit 14) set but header has 2013 layout (6-byte phone)".into());
    }
    if p.quirks.contains(Quirks::NON_BCD_PHONE) {
        quirks.push("terminal phone is not valid BCD (rendered as hex)".into());
    }
    if p.quirks.contains(Quirks::RESERVED_ATTR_BIT) {
        quirks.push("reserved attribute bit 15 set".into());
    }
    // An accepted bad check code is reported on its own, not as a quirk:
    // it is a per-device decoding choice, not something the frame's content shows.
    if p.quirks.contains(Quirks::CHECKSUM_MISMATCH_ACCEPTED) {
        o.insert("checksum_mismatch".into(), json!(true));
    }
    let mut put = |k: &str, v: Value| {
        o.insert(k.into(), v);
    };
    match m {
        Message::GeneralResponse(g) | Message::PlatformResponse(g) => put(
            "response",
            json!({"reply_serial": g.reply_serial, "reply_id": g.reply_id, "result": g.result}),
        ),
        Message::Heartbeat
        | Message::Logout
        | Message::QueryServerTime
        | Message::QueryParams
        | Message::QueryAttributes
        | Message::LinkCheck
        | Message::QueryLocation => {}
        Message::TerminalResendRequest(r) => put(
            "resend_request",
            json!({"orig_serial": r.original_serial, "count": r.indices.len(), "ids": r.indices.iter().collect::<Vec<_>>()}),
        ),
        Message::VehicleControlReply {
            reply_serial,
            location,
        } => {
            put("reply_serial", json!(reply_serial));
            let v = location_json(location, &mut quirks);
            put("location", v)
        }
        Message::QueryGivenParams(q) => put(
            "params_query",
            json!({"count": q.count, "ids": q.ids().collect::<Vec<_>>()}),
        ),
        Message::AlarmConfirm {
            alarm_serial,
            types,
        } => put(
            "alarm_confirm",
            json!({"alarm_serial": alarm_serial, "types": types.bits(),
                   "type_flags": types.iter_names().map(|(n, _)| n).collect::<Vec<_>>()}),
        ),
        Message::PassthroughDown { kind, data } => put(
            "passthrough",
            json!({"type": kind, "hex": hex::encode(data)}),
        ),
        Message::PlatformPublicKey(k) => {
            put("public_key", json!({"e": k.e, "n": hex::encode(k.n)}))
        }
        Message::Register(r) => put(
            "register",
            json!({
                "layout": Register::layout(p.body, h.version).as_str(),
                "province": r.province, "city": r.city,
                "maker_id": ascii(r.maker_id), "model": ascii(r.model), "device_id": ascii(r.device_id),
                "device_id_hex": hex::encode(r.device_id),
                "plate_color": r.plate_color, "plate": gbk(r.plate),
            }),
        ),
        Message::Auth(a) => {
            let mut v = json!({"code": gbk(a.code)});
            if let Some(i) = a.imei {
                v["imei"] = json!(gbk(i));
            }
            if let Some(s) = a.software_version {
                v["software_version"] = json!(gbk(s));
            }
            put("auth", v)
        }
        Message::ParamsReply(r) => {
            params_quirks("0x0104", r.count, &r.params, &mut quirks);
            put(
                "params_reply",
                json!({"reply_serial": r.reply_serial, "count": r.count, "params": params_json(&r.params)}),
            )
        }
        Message::Attributes(a) => put(
            "attributes",
            json!({
                "terminal_type": a.terminal_type, "maker_id": ascii(a.maker_id), "model": ascii(a.model),
                "terminal_id": ascii(a.terminal_id), "iccid": hex::encode(a.iccid),
                "hardware_version": gbk(a.hardware_version), "firmware_version": gbk(a.firmware_version),
                "gnss": a.gnss, "comm": a.comm,
            }),
        ),
        Message::UpgradeResult(u) => put(
            "upgrade_result",
            json!({"type": u.kind, "result": u.result}),
        ),
        Message::Location(l) => {
            let v = location_json(l, &mut quirks);
            put("location", v)
        }
        Message::LocationReply {
            reply_serial,
            location,
        } => {
            put("reply_serial", json!(reply_serial));
            let v = location_json(location, &mut quirks);
            put("location", v)
        }
        Message::EventReport(e) => put("event_report", json!({"event_id": e})),
        Message::QuestionReply {
            reply_serial,
            answer_id,
        } => put(
            "question_reply",
            json!({"reply_serial": reply_serial, "answer_id": answer_id}),
        ),
        Message::InfoDemand { info_type, flag } => {
            put("info_demand", json!({"info_type": info_type, "flag": flag}))
        }
        Message::Batch(b) => {
            let mut items = Vec::new();
            for it in b.items() {
                items.push(match it {
                    Ok(l) => location_json(&l, &mut quirks),
                    Err(e) => error_json(&e)["error"].clone(),
                });
            }
            if items.len() != b.count as usize {
                quirks.push(format!(
                    "0x0704: {} items but count says {}",
                    items.len(),
                    b.count
                ));
            }
            put(
                "batch",
                json!({"count": b.count, "type": b.kind.as_u8(), "items": items}),
            )
        }
        Message::MediaEvent(e) => put(
            "media_event",
            json!({"media_id": e.media_id, "type": e.media_type, "format": e.format, "event": e.event, "channel": e.channel}),
        ),
        Message::Media(md) => {
            let e = &md.head;
            put(
                "media",
                json!({"media_id": e.media_id, "type": e.media_type, "format": e.format, "event": e.event,
                       "channel": e.channel, "data_len": md.data.len(), "data_prefix": hex_prefix(md.data)}),
            );
            let v = location_json(&md.location, &mut quirks);
            put("location", v)
        }
        Message::CameraReply(c) => put(
            "camera_reply",
            json!({"reply_serial": c.reply_serial, "result": c.result, "count": c.count, "ids": c.ids().collect::<Vec<_>>()}),
        ),
        Message::Passthrough { kind, data } => put(
            "passthrough",
            json!({"type": kind, "hex": hex::encode(data)}),
        ),
        Message::PublicKey(k) => put("public_key", json!({"e": k.e, "n": hex::encode(k.n)})),
        Message::ResendRequest(r) => put(
            "resend_request",
            json!({"orig_serial": r.original_serial, "count": r.indices.len(), "ids": r.indices.iter().collect::<Vec<_>>()}),
        ),
        Message::ServerTime(t) => {
            let mut obj = Map::new();
            time_json(t, &mut obj);
            put("server_time", Value::Object(obj))
        }
        Message::RegisterReply(r) => put(
            "register_reply",
            json!({"reply_serial": r.reply_serial, "result": r.result, "auth_code": gbk(r.auth_code)}),
        ),
        Message::SetParams(s) => {
            params_quirks("0x8103", s.count, &s.params, &mut quirks);
            put(
                "params_set",
                json!({"count": s.count, "params": params_json(&s.params)}),
            )
        }
        Message::TerminalControl(t) => put(
            "terminal_control",
            json!({"command": t.command, "params": gbk(t.params)}),
        ),
        Message::TrackControl {
            interval_s,
            validity_s,
        } => put(
            "track",
            json!({"interval_s": interval_s, "validity_s": validity_s}),
        ),
        Message::Text(t) => {
            let mut v = json!({"flag": t.flag, "text": gbk(t.text)});
            if let Some(ty) = t.text_type {
                v["type"] = json!(ty);
            }
            put("text", v)
        }
        Message::VehicleControl(VehicleControl::Flag(f)) => {
            put("vehicle_control", json!({"flag": f}))
        }
        Message::VehicleControl(VehicleControl::Items { count, items }) => put(
            "vehicle_control",
            json!({"count": count, "hex": hex::encode(items)}),
        ),
        Message::MediaReply(r) => put(
            "media_reply",
            json!({"media_id": r.media_id, "count": r.retransmit.len(), "ids": r.retransmit.iter().collect::<Vec<_>>()}),
        ),
        Message::Fragment { body, .. } => put("body_hex_prefix", json!(hex_prefix(body))),
        Message::Unknown { body, .. } => {
            put("body_hex_prefix", json!(hex_prefix(body)));
            put("body_hex", json!(hex::encode(body)))
        }
    }
    o.insert("quirks".into(), json!(quirks));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::jt808::flags::{Alarm, Status};
    use crate::jt808::header::{Header, TerminalId};
    use crate::jt808::msg::{Batch, BatchKind};
    use crate::jt808::packet::{decode_frame, encode_message, DecodeOptions};
    use crate::jt808::MAX_LOGICAL_FRAME;

    fn json_of(version: Version, msg: &Message<'_>) -> Value {
        let t = TerminalId::parse("13912345678", version).unwrap();
        let mut out = BytesMut::new();
        encode_message(&Header::new(0, t, 5, version), msg, &mut out);
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        match decode_frame(&out, &mut s, &DecodeOptions::default()) {
            Ok((p, m)) => frame_json(&p, &m),
            Err(e) => error_json(&e),
        }
    }

    fn loc(time: [u8; 6]) -> Location<'static> {
        Location {
            alarm: Alarm::POWER_OFF,
            status: Status::FIXED | Status::WEST,
            lat_raw: 31_230_416,
            lon_raw: 121_473_701,
            altitude_m: 4,
            speed_raw: 0,
            course: 0,
            time: BcdTime(time),
            extras: Extras(&[0x01, 4, 0, 0, 0, 10]),
        }
    }

    #[test]
    fn location_units_and_names() {
        let v = json_of(
            Version::V2019,
            &Message::Location(loc([0x24, 0x01, 0x02, 0x11, 0x04, 0x05])),
        );
        assert_eq!(v["message"], "location");
        assert_eq!(v["version"], "2019");
        assert_eq!(v["version_flag"], true);
        assert_eq!(v["protocol_version"], 1);
        assert_eq!(v["terminal_id"], "00000000013912345678");
        let l = &v["location"];
        assert_eq!(l["latitude"], 31.230416);
        assert_eq!(l["longitude"], -121.473701);
        assert_eq!(l["time"], "2024-01-02T03:04:05Z");
        assert_eq!(l["time_bcd"], "240102110405");
        assert_eq!(l["alarm"], 256);
        assert_eq!(l["alarm_flags"], json!(["POWER_OFF"]));
        assert_eq!(l["extras_decoded"]["mileage_km"], 1.0);
        assert_eq!(v["quirks"], json!([]));
    }

    #[test]
    fn invalid_time_is_reported_not_guessed() {
        let v = json_of(
            Version::V2013,
            &Message::Location(loc([0x24, 0x02, 0x30, 0x00, 0x00, 0x00])),
        );
        assert_eq!(v["location"]["time"], Value::Null);
        assert_eq!(v["location"]["time_error"], "time is not a valid date");
        assert_eq!(v["location"]["time_bcd"], "240230000000");
    }

    #[test]
    fn batch_with_a_broken_item_keeps_the_good_ones() {
        let mut items = BytesMut::new();
        Batch::put_item(&mut items, &loc([0x24, 0x01, 0x02, 0x11, 0x04, 0x05]));
        items.extend_from_slice(&[0x00, 0x40, 1, 2, 3]); // announces 64 bytes, has 3
        let v = json_of(
            Version::V2013,
            &Message::Batch(Batch {
                kind: BatchKind::BlindArea,
                count: 2,
                raw_items: &items,
            }),
        );
        let items = v["batch"]["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["course"], 0);
        assert_eq!(items[1]["kind"], "body");
        assert_eq!(v["batch"]["type"], 1);
    }

    #[test]
    fn errors_carry_kind_offset_and_header() {
        let t = TerminalId::parse("13912345678", Version::V2013).unwrap();
        let mut h = Header::new(0x0200, t, 9, Version::V2013);
        h.encryption = 1;
        let mut out = BytesMut::new();
        crate::jt808::frame::encode_frame(&h, &[0; 28], &mut out);
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        let e = decode_frame(&out, &mut s, &DecodeOptions::default()).unwrap_err();
        let v = error_json(&e);
        assert_eq!(v["error"]["kind"], "encrypted");
        assert_eq!(v["error"]["message_id"], 512);
        assert_eq!(v["error"]["terminal_id"], "013912345678");
        assert!(v["error"]["offset"].is_u64());
    }
}

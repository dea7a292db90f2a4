//! What an uplink message asks the gateway to do, as owned data.
//!
//! Decoding borrows from a scratch buffer; this step copies out only what the session needs, so
//! that nothing borrowed lives across an `.await` (and the scratch buffer need not live in the
//! connection's state).
use liengate_protocols::jt808::{BatchKind, Error, Location, Message};

use crate::config::ModelConfig;
use crate::pipeline::Report;

/// The session-level meaning of one uplink message.
#[derive(Debug)]
pub enum Inbound {
    /// 0x0100: answer 0x8100.
    Register { model: String },
    /// 0x0102: check the code, answer 0x8001.
    Auth { code: Vec<u8> },
    /// 0x0200 / 0x0201 / 0x0704: store, then (if `ack`) answer 0x8001 once durable.
    Positions { reports: Vec<Report>, ack: bool },
    /// 0x0004: answer 0x8004.
    QueryTime,
    /// 0x0801 multimedia upload complete: answer 0x8800 (§8.52) with its media id.
    MediaComplete { media_id: u32 },
    /// Answer 0x8001 right away with this result.
    Answer(u8),
    /// A terminal's own response to a platform request; the standard wants no answer.
    NoAnswer,
}

/// Copies a message's meaning out of its borrowed form. `model` supplies vendor extra-item ids.
pub fn interpret(msg: &Message<'_>, model: Option<&ModelConfig>) -> Result<Inbound, Error> {
    use super::answer::result;
    Ok(match msg {
        Message::Register(r) => Inbound::Register {
            model: text(r.model),
        },
        Message::Auth(a) => Inbound::Auth {
            code: a.code.to_vec(),
        },
        Message::Location(loc) => Inbound::Positions {
            reports: vec![report(loc, false, model)],
            ack: true,
        },
        // 0x0201 answers our own 0x8201; it is a response and gets no answer, but its position
        // is as good as any other.
        Message::LocationReply { location, .. } => Inbound::Positions {
            reports: vec![report(location, false, model)],
            ack: false,
        },
        // 0x0500 answers our own 0x8500 (§8.34): a response, so no answer, but it carries the
        // position the vehicle was at when it executed the command.
        Message::VehicleControlReply { location, .. } => Inbound::Positions {
            reports: vec![report(location, false, model)],
            ack: false,
        },
        Message::Batch(batch) => {
            let blind = batch.kind == BatchKind::BlindArea;
            // The declared count comes from the network: never reserve more than a body can hold.
            let mut reports = Vec::with_capacity((batch.count as usize).min(64));
            for item in batch.items() {
                // One undecodable item rejects the whole batch (answered "message error"), so the
                // device keeps and re-sends it instead of the gateway storing half of it.
                reports.push(report(&item?, blind, model));
            }
            Inbound::Positions { reports, ack: true }
        }
        Message::QueryServerTime => Inbound::QueryTime,
        Message::Media(media) => Inbound::MediaComplete {
            media_id: media.head.media_id,
        },
        Message::GeneralResponse(_)
        | Message::ParamsReply(_)
        | Message::Attributes(_)
        | Message::CameraReply(_) => Inbound::NoAnswer,
        Message::Heartbeat
        | Message::Logout
        | Message::UpgradeResult(_)
        | Message::EventReport(_)
        | Message::QuestionReply { .. }
        | Message::InfoDemand { .. }
        | Message::MediaEvent(_)
        | Message::Passthrough { .. }
        | Message::PublicKey(_) => Inbound::Answer(result::OK),
        // Downlink ids sent uplink, or ids the gateway does not handle: "not supported".
        _ => Inbound::Answer(result::UNSUPPORTED),
    })
}

/// GBK/ASCII field to text: trailing NULs and spaces (padding) removed, non-UTF-8 kept lossy.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(trim_padding(bytes)).into_owned()
}

/// Drops the trailing NULs and spaces that fixed-width fields are padded with; firmware pads
/// auth codes the same way, and no code, model or plate ends in them.
pub fn trim_padding(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |p| p + 1);
    &bytes[..end]
}

/// One location body to an owned report.
pub fn report(loc: &Location<'_>, blind_area: bool, model: Option<&ModelConfig>) -> Report {
    let battery_pct = model
        .and_then(|m| m.battery_pct_item)
        .and_then(|id| loc.extras.get(id))
        .and_then(|v| v.first().copied())
        .filter(|&p| p <= 100);
    let voltage_mv = model.and_then(|m| {
        let v = loc.extras.get(m.voltage_item?)?;
        if v.is_empty() || v.len() > 4 {
            return None;
        }
        let raw = v.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32);
        raw.checked_mul(m.voltage_unit_mv)
    });
    Report {
        time_ms: loc.time.to_unix().ok().map(|s| s * 1000),
        latitude: loc.latitude(),
        longitude: loc.longitude(),
        altitude_m: loc.altitude_m as i32,
        speed_kmh: loc.speed_kmh() as f32,
        course: loc.course,
        alarm: loc.alarm.bits(),
        status: loc.status.bits(),
        blind_area,
        battery_pct,
        voltage_mv,
    }
}

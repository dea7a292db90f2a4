//! Downlink frames the gateway sends on its own: general response (0x8001), register reply
//! (0x8100), server time (0x8004) and resend request (0x8003).
//!
//! Each answer reuses the terminal id and header layout (2013 or 2019, with the device's protocol
//! version) of the frame it answers, and carries the platform's own serial number.
use bytes::BytesMut;
use liengate_protocols::jt808::{
    encode_frame, encode_message, BcdTime, Header, MediaReply, Message, PackageIndices,
    RegisterReply, ResendRequest,
};

/// 0x8001 result codes (JT/T 808-2013 §8.2).
pub mod result {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const MESSAGE_ERROR: u8 = 2;
    pub const UNSUPPORTED: u8 = 3;
}

/// 0x8100 result codes (JT/T 808-2013 §8.6).
pub mod register_result {
    pub const OK: u8 = 0;
    pub const NO_SUCH_TERMINAL: u8 = 4;
}

/// 0x8001 platform general response to the frame with header `to`.
///
/// Every position is answered with one, so its five-byte body is laid out here on the stack
/// rather than through `encode_message`, which builds any message's body in a heap buffer (an
/// allocation and a free per answer, session 13); the test below holds the two to the same bytes.
pub fn general(to: &Header, serial: u16, result: u8, out: &mut BytesMut) {
    let [s0, s1] = to.serial.to_be_bytes();
    let [i0, i1] = to.message_id.to_be_bytes();
    encode_frame(&to.reply(0x8001, serial), &[s0, s1, i0, i1, result], out);
}

/// 0x8100 register reply; `auth_code` is empty unless `result` is OK.
pub fn register(to: &Header, serial: u16, result: u8, auth_code: &[u8], out: &mut BytesMut) {
    let msg = Message::RegisterReply(RegisterReply {
        reply_serial: to.serial,
        result,
        auth_code,
    });
    encode_message(&to.reply(0x8100, serial), &msg, out);
}

/// 0x8004 server time (UTC+8 BCD per the standard) answering 0x0004.
pub fn server_time(to: &Header, serial: u16, now_unix_secs: i64, out: &mut BytesMut) {
    let msg = Message::ServerTime(BcdTime::from_unix(now_unix_secs));
    encode_message(&to.reply(0x8004, serial), &msg, out);
}

/// 0x8003 asking the terminal to resend the `missing` packages of the message whose first
/// package had serial `first_serial`.
pub fn resend(to: &Header, serial: u16, first_serial: u16, missing: &[u16], out: &mut BytesMut) {
    let msg = Message::ResendRequest(ResendRequest {
        original_serial: first_serial,
        indices: PackageIndices::List(missing),
    });
    encode_message(&to.reply(0x8003, serial), &msg, out);
}

/// 0x8800 multimedia upload reply for a complete upload (no packages to resend).
pub fn media_complete(to: &Header, serial: u16, media_id: u32, out: &mut BytesMut) {
    let msg = Message::MediaReply(MediaReply {
        media_id,
        retransmit: PackageIndices::List(&[]),
    });
    encode_message(&to.reply(0x8800, serial), &msg, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use liengate_protocols::jt808::{GeneralResponse, TerminalId, Version};

    #[test]
    fn general_response_is_what_encode_message_writes() {
        for version in [Version::V2011, Version::V2013, Version::V2019] {
            let terminal = TerminalId::parse("13800138000", version).unwrap();
            let mut to = Header::new(0x0200, terminal, 0xbeef, version);
            to.protocol_version = 1;
            for result in [result::OK, result::FAILURE, 0x7e, 0x7d] {
                let mut ours = BytesMut::new();
                general(&to, 0x7e7d, result, &mut ours);
                let mut reference = BytesMut::new();
                let msg = Message::PlatformResponse(GeneralResponse {
                    reply_serial: to.serial,
                    reply_id: to.message_id,
                    result,
                });
                encode_message(&to.reply(0x8001, 0x7e7d), &msg, &mut reference);
                assert_eq!(ours, reference, "{version:?} result {result}");
            }
        }
    }
}

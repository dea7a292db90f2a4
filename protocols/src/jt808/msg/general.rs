//! 0x0001 terminal / 0x8001 platform general response (JT/T 808-2013 §8.1
//! table 4, §8.2 table 5).

use bytes::{BufMut, BytesMut};

use super::reader::Reader;
use crate::jt808::error::Error;

/// Result codes: 0 ok, 1 failure, 2 message error, 3 unsupported, 4 alarm
/// handling confirmed (0x8001 only, 2013+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GeneralResponse {
    pub reply_serial: u16,
    pub reply_id: u16,
    pub result: u8,
}

impl GeneralResponse {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const MESSAGE_ERROR: u8 = 2;
    pub const UNSUPPORTED: u8 = 3;
    pub const ALARM_ACK: u8 = 4;

    pub(crate) fn decode(body: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        Ok(GeneralResponse {
            reply_serial: r.u16("general response: reply serial missing")?,
            reply_id: r.u16("general response: reply id missing")?,
            result: r.u8("general response: result missing")?,
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.reply_serial);
        out.put_u16(self.reply_id);
        out.put_u8(self.result);
    }
}

//! 0x0100 terminal registration (JT/T 808-2011 §8.4 table 6, 2013 §8.5
//! table 7, 2019 widths) and 0x8100 registration response (§8.6 table 8).

use bytes::{BufMut, BytesMut};

use super::reader::{put_fixed, trim_nul, Reader};
use crate::jt808::error::Error;
use crate::jt808::header::Version;

/// Registration. Text fields are borrowed without their 0x00 padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register<'a> {
    pub province: u16,
    pub city: u16,
    pub maker_id: &'a [u8],
    pub model: &'a [u8],
    pub device_id: &'a [u8],
    /// 0 no plate (then `plate` is the VIN), 1 blue, 2 yellow, 3 black, 4 white, 9 other.
    pub plate_color: u8,
    /// GBK text (trailing 0x00 padding removed).
    pub plate: &'a [u8],
}

/// Widths of (maker id, model, terminal id) per edition.
fn widths(layout: Version) -> (usize, usize, usize) {
    match layout {
        Version::V2011 => (5, 8, 7),
        Version::V2013 => (5, 20, 7),
        Version::V2019 => (11, 30, 30),
    }
}

/// Fixed part of the 2013 body (2+2+5+20+7+1).
const FIXED_2013: usize = 37;

/// 2011 layout, colour 0 (no plate) and a 17-character VIN.
fn is_2011_with_vin(body: &[u8]) -> bool {
    body.len() == 25 + 17
        && body[24] == 0
        && body[25..]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

impl<'a> Register<'a> {
    /// Which body layout a 0x0100 with this header version uses. The 2011 and
    /// 2013 headers are identical, so the edition shows only in the body:
    /// a body shorter than the 37-byte 2013 fixed part must be 2011
    /// (25-byte fixed part), as other servers also decide.
    ///
    /// One longer 2011 body is recognised as well: plate colour 0 followed
    /// by a 17-character VIN (25 + 17 = 42 bytes), which unregistered cars
    /// send. Read as 2013, its colour byte would be a VIN letter, so the
    /// 2011 reading is the only sensible one.
    pub fn layout(body: &[u8], header_version: Version) -> Version {
        match header_version {
            Version::V2019 => Version::V2019,
            _ if body.len() < FIXED_2013 => Version::V2011,
            _ if is_2011_with_vin(body) => Version::V2011,
            _ => Version::V2013,
        }
    }

    pub(crate) fn decode(body: &'a [u8], header_version: Version) -> Result<Self, Error> {
        let (mw, mo, tw) = widths(Self::layout(body, header_version));
        let mut r = Reader::new(body);
        Ok(Register {
            province: r.u16("register: province missing")?,
            city: r.u16("register: city missing")?,
            maker_id: trim_nul(r.bytes(mw, "register: maker id truncated")?),
            model: trim_nul(r.bytes(mo, "register: model truncated")?),
            device_id: trim_nul(r.bytes(tw, "register: terminal id truncated")?),
            plate_color: r.u8("register: plate colour missing")?,
            // Some devices pad the plate with 0x00 although it is a
            // variable-length STRING; the padding is not part of the plate.
            plate: trim_nul(r.rest()),
        })
    }

    /// Encode with the layout of `version` (`V2011` writes the 2011 body).
    pub(crate) fn encode(&self, version: Version, out: &mut BytesMut) {
        let (mw, mo, tw) = widths(version);
        out.put_u16(self.province);
        out.put_u16(self.city);
        put_fixed(out, self.maker_id, mw, 0);
        // 2011 pads the model with spaces (STD11 table 6).
        put_fixed(
            out,
            self.model,
            mo,
            if version == Version::V2011 { b' ' } else { 0 },
        );
        put_fixed(out, self.device_id, tw, 0);
        out.put_u8(self.plate_color);
        out.put_slice(self.plate);
    }
}

/// 0x8100 registration response. `auth_code` is present only when result = 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterReply<'a> {
    pub reply_serial: u16,
    /// 0 ok, 1 vehicle already registered, 2 no such vehicle, 3 terminal
    /// already registered, 4 no such terminal.
    pub result: u8,
    pub auth_code: &'a [u8],
}

impl<'a> RegisterReply<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        Ok(RegisterReply {
            reply_serial: r.u16("register reply: reply serial missing")?,
            result: r.u8("register reply: result missing")?,
            auth_code: r.rest(),
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.reply_serial);
        out.put_u8(self.result);
        if self.result == 0 {
            out.put_slice(self.auth_code);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_2011_registration_with_a_vin_reads_as_2011() {
        let reg = Register {
            province: 31,
            city: 115,
            maker_id: b"70111",
            model: b"BSJ-M7B ",
            device_id: b"0000001",
            plate_color: 0,
            plate: b"LSVAM4187C2184847",
        };
        let mut out = BytesMut::new();
        reg.encode(Version::V2011, &mut out);
        assert_eq!(out.len(), 42);
        assert_eq!(Register::layout(&out, Version::V2013), Version::V2011);
        assert_eq!(Register::decode(&out, Version::V2013).unwrap(), reg);
        // The same registration in the 2013 layout stays 2013.
        let mut out = BytesMut::new();
        reg.encode(Version::V2013, &mut out);
        assert_eq!(Register::layout(&out, Version::V2013), Version::V2013);
        let mut want = reg;
        want.model = b"BSJ-M7B ";
        assert_eq!(Register::decode(&out, Version::V2013).unwrap(), want);
    }
}

//! Platform commands: 0x8003 resend request (JT/T 808-2013 §8.4 table 6;
//! 2019 count is a WORD), 0x8105 terminal control (§8.13 tables 17-18),
//! 0x8300 text (§8.23 tables 37-38; 2019 adds a type byte), 0x8500 vehicle
//! control (§8.33 table 53; 2019 item list), and the 0x0A00 public key (§8.64).

use bytes::{BufMut, BytesMut};

use super::indices::PackageIndices;
use super::reader::Reader;
use crate::jt808::error::Error;
use crate::jt808::header::Version;

/// 0x8003 request to resend packages of a subpackaged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResendRequest<'a> {
    /// Serial of the first package of the original message.
    pub original_serial: u16,
    pub indices: PackageIndices<'a>,
}

impl<'a> ResendRequest<'a> {
    pub(crate) fn decode(body: &'a [u8], version: Version) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let original_serial = r.u16("resend request: original serial missing")?;
        let n = if version == Version::V2019 {
            r.u16("resend request: count missing")? as usize
        } else {
            r.u8("resend request: count missing")? as usize
        };
        let ids = r.bytes(2 * n, "resend request: fewer indices than count")?;
        Ok(ResendRequest {
            original_serial,
            indices: PackageIndices::Wire(ids),
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut BytesMut) {
        out.put_u16(self.original_serial);
        if version == Version::V2019 {
            out.put_u16(self.indices.len() as u16);
        } else {
            out.put_u8(self.indices.len().min(255) as u8);
        }
        self.indices.encode(out);
    }
}

/// 0x8105 terminal control: command word and its `;`-separated GBK parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalControl<'a> {
    /// 1 wireless upgrade, 2 connect to server, 3 power off, 4 reset,
    /// 5 factory reset, 6 close data link, 7 close all wireless links.
    pub command: u8,
    pub params: &'a [u8],
}

impl<'a> TerminalControl<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        Ok(TerminalControl {
            command: r.u8("terminal control: command missing")?,
            params: r.rest(),
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.command);
        out.put_slice(self.params);
    }
}

/// 0x8300 text message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text<'a> {
    /// Bit 0 urgent, 2 display, 3 TTS, 4 advertising screen, 5 CAN fault code.
    pub flag: u8,
    /// 2019 only: 1 notice, 2 service.
    pub text_type: Option<u8>,
    /// GBK text.
    pub text: &'a [u8],
}

impl<'a> Text<'a> {
    pub(crate) fn decode(body: &'a [u8], version: Version) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let flag = r.u8("text: flag missing")?;
        let text_type = if version == Version::V2019 {
            Some(r.u8("text: type missing")?)
        } else {
            None
        };
        Ok(Text {
            flag,
            text_type,
            text: r.rest(),
        })
    }

    pub(crate) fn encode(&self, version: Version, out: &mut BytesMut) {
        out.put_u8(self.flag);
        if version == Version::V2019 {
            out.put_u8(self.text_type.unwrap_or(1));
        }
        out.put_slice(self.text);
    }
}

/// 0x8500 vehicle control. The 2011/2013 body is one flag byte (bit 0: lock
/// doors); 2019 sends a WORD count and items of control type WORD +
/// parameter (type 0x0001 door: 0 unlock, 1 lock). The variant must match
/// the header version it is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VehicleControl<'a> {
    Flag(u8),
    Items { count: u16, items: &'a [u8] },
}

impl<'a> VehicleControl<'a> {
    /// Door lock/unlock in the form of `version`.
    pub fn door(lock: bool, version: Version) -> VehicleControl<'static> {
        if version == Version::V2019 {
            VehicleControl::Items {
                count: 1,
                items: if lock { &[0, 1, 1] } else { &[0, 1, 0] },
            }
        } else {
            VehicleControl::Flag(lock as u8)
        }
    }

    pub(crate) fn decode(body: &'a [u8], version: Version) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        if version == Version::V2019 {
            Ok(VehicleControl::Items {
                count: r.u16("vehicle control: count missing")?,
                items: r.rest(),
            })
        } else {
            Ok(VehicleControl::Flag(r.u8("vehicle control: flag missing")?))
        }
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        match self {
            VehicleControl::Flag(f) => out.put_u8(*f),
            VehicleControl::Items { count, items } => {
                out.put_u16(*count);
                out.put_slice(items);
            }
        }
    }
}

/// 0x0A00 terminal RSA public key: exponent DWORD, modulus `BYTE[128]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey<'a> {
    pub e: u32,
    pub n: &'a [u8],
}

impl<'a> PublicKey<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        Ok(PublicKey {
            e: r.u32("public key: exponent missing")?,
            n: r.bytes(128, "public key: modulus shorter than 128 bytes")?,
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u32(self.e);
        out.put_slice(self.n);
    }
}

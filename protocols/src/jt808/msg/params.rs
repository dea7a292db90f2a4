//! Terminal parameters: 0x8103 set (JT/T 808-2013 §8.9 tables 10-12),
//! 0x8104 query all (empty body), 0x0104 query reply (§8.11 table 13).
//! Item: id DWORD, length BYTE, value.

use bytes::{BufMut, BytesMut};

use super::reader::Reader;
use crate::jt808::error::Error;

/// One parameter item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    pub id: u32,
    pub value: &'a [u8],
}

/// Raw parameter list; `iter` walks it without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a>(pub &'a [u8]);

impl<'a> Params<'a> {
    /// Items up to the first one that does not fit in the remaining bytes.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { rest: self.0 }
    }

    /// Number of whole items.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes left over after the last whole item (0 for a well-formed list).
    pub fn trailing(&self) -> usize {
        let mut it = self.iter();
        for _ in it.by_ref() {}
        it.rest.len()
    }

    /// Append one item (id, length, value) to a list being built.
    /// Values longer than 255 bytes cannot be expressed and are truncated.
    pub fn put(out: &mut BytesMut, id: u32, value: &[u8]) {
        let n = value.len().min(255);
        out.put_u32(id);
        out.put_u8(n as u8);
        out.put_slice(&value[..n]);
    }
}

pub struct ParamIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;
    fn next(&mut self) -> Option<Param<'a>> {
        let r = self.rest;
        if r.len() < 5 {
            return None;
        }
        let n = r[4] as usize;
        if r.len() < 5 + n {
            return None;
        }
        self.rest = &r[5 + n..];
        Some(Param {
            id: u32::from_be_bytes([r[0], r[1], r[2], r[3]]),
            value: &r[5..5 + n],
        })
    }
}

/// 0x0104 parameter query reply. Devices may send fewer items than `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamsReply<'a> {
    pub reply_serial: u16,
    pub count: u8,
    pub params: Params<'a>,
}

impl<'a> ParamsReply<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        Ok(ParamsReply {
            reply_serial: r.u16("param reply: reply serial missing")?,
            count: r.u8("param reply: count missing")?,
            params: Params(r.rest()),
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.reply_serial);
        out.put_u8(self.count);
        out.put_slice(self.params.0);
    }
}

/// 0x8103 set parameters. (STD11 shows a second "package parameter count"
/// byte; no device is known to send it, so 2011 is treated as 2013.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetParams<'a> {
    pub count: u8,
    pub params: Params<'a>,
}

impl<'a> SetParams<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        Ok(SetParams {
            count: r.u8("set params: count missing")?,
            params: Params(r.rest()),
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.count);
        out.put_slice(self.params.0);
    }
}

/// 0x8106 query given parameters (JT/T 808-2013 §8.10 table 15): count BYTE
/// and DWORD parameter ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamIds<'a> {
    pub count: u8,
    /// Big-endian DWORD ids.
    pub raw_ids: &'a [u8],
}

impl<'a> ParamIds<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let count = r.u8("query params: count missing")?;
        let raw_ids = r.bytes(4 * count as usize, "query params: fewer ids than count")?;
        Ok(ParamIds { count, raw_ids })
    }

    pub fn ids(&self) -> impl Iterator<Item = u32> + 'a {
        self.raw_ids
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// Append one id to a list being built.
    pub fn put(out: &mut BytesMut, id: u32) {
        out.put_u32(id);
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.count);
        out.put_slice(self.raw_ids);
    }
}

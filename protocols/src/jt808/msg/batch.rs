//! 0x0704 batch location upload (JT/T 808-2013 §8.49 tables 76-77): count
//! WORD, type BYTE (0 normal, 1 blind-area supplement), then items of
//! `length` WORD + a 0x0200 body.

use bytes::{BufMut, BytesMut};

use super::location::Location;
use super::reader::Reader;
use crate::jt808::error::{Error, ErrorKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchKind {
    /// Regular batched reports.
    Normal,
    /// Positions stored while the link was down, sent late (§6.1.2.2).
    BlindArea,
    /// A type byte the standard does not define.
    Other(u8),
}

impl BatchKind {
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => BatchKind::Normal,
            1 => BatchKind::BlindArea,
            o => BatchKind::Other(o),
        }
    }

    pub fn as_u8(&self) -> u8 {
        match self {
            BatchKind::Normal => 0,
            BatchKind::BlindArea => 1,
            BatchKind::Other(o) => *o,
        }
    }
}

/// Batch upload; items are decoded lazily by `items`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    pub kind: BatchKind,
    /// Item count as declared.
    pub count: u16,
    /// Raw item bytes (length-prefixed 0x0200 bodies).
    pub raw_items: &'a [u8],
}

impl<'a> Batch<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        Ok(Batch {
            count: r.u16("batch: count missing")?,
            kind: BatchKind::from_u8(r.u8("batch: type missing")?),
            raw_items: r.rest(),
        })
    }

    /// Each item decoded within its own length, so bad extras in one item do
    /// not shift the next. An item whose length overruns the body yields one
    /// error and ends the iteration.
    #[inline]
    pub fn items(&self) -> impl Iterator<Item = Result<Location<'a>, Error>> + 'a {
        BatchIter {
            rest: self.raw_items,
            offset: 3,
            done: false,
        }
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.count);
        out.put_u8(self.kind.as_u8());
        out.put_slice(self.raw_items);
    }

    /// Append one length-prefixed item to a raw item list being built.
    pub fn put_item(out: &mut BytesMut, location: &Location<'_>) {
        out.put_u16(location.encoded_len() as u16);
        location.encode(out);
    }
}

struct BatchIter<'a> {
    rest: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<Location<'a>, Error>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.rest.is_empty() {
            return None;
        }
        let r = self.rest;
        if r.len() < 2 {
            self.done = true;
            return Some(Err(Error::new(
                ErrorKind::Body,
                self.offset,
                "batch: item length truncated",
            )));
        }
        let n = u16::from_be_bytes([r[0], r[1]]) as usize;
        if r.len() < 2 + n {
            self.done = true;
            return Some(Err(Error::new(
                ErrorKind::Body,
                self.offset,
                "batch: item length overruns the body",
            )));
        }
        let item = &r[2..2 + n];
        self.rest = &r[2 + n..];
        let at = self.offset;
        self.offset += 2 + n;
        Some(Location::decode(item).map_err(|mut e| {
            e.offset += at + 2;
            e
        }))
    }
}

//! Bounds-checked big-endian cursor over a message body (JT/T 808-2013 §4.2:
//! WORD and DWORD are network byte order). Every read failure is a typed
//! `Body` error whose offset is the position inside the body.

use bytes::{BufMut, BytesMut};

use crate::jt808::error::{Error, ErrorKind};

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if self.remaining() < n {
            return Err(Error::new(ErrorKind::Body, self.pos, what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.bytes(1, what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        let b = self.bytes(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
}

/// Fixed-width text field without its 0x00 padding (§4.2: BYTE[n] fields
/// are right-padded with 0x00). Space padding (2011 model field) is kept,
/// because it is part of what the device sent.
pub(crate) fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
    &b[..end]
}

/// Write `value` into a fixed-width field of `width` bytes, padded with
/// `pad` and truncated if longer.
pub(crate) fn put_fixed(out: &mut BytesMut, value: &[u8], width: usize, pad: u8) {
    let n = value.len().min(width);
    out.put_slice(&value[..n]);
    out.put_bytes(pad, width - n);
}

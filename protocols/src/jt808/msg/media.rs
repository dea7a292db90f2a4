//! Multimedia: 0x0800 event (JT/T 808-2013 §8.51 table 80), 0x0801 data
//! upload (§8.53 table 82), 0x8800 upload response (§8.52 table 81) and
//! 0x0805 camera command response (§8.55 table 84).

use bytes::{BufMut, BytesMut};

use super::indices::PackageIndices;
use super::location::Location;
use super::reader::Reader;
use crate::jt808::error::Error;

/// 0x0800 multimedia event; also the first 8 bytes of 0x0801.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaEvent {
    pub media_id: u32,
    /// 0 image, 1 audio, 2 video.
    pub media_type: u8,
    /// 0 JPEG, 1 TIF, 2 MP3, 3 WAV, 4 WMV.
    pub format: u8,
    /// 0 platform command, 1 timed, 2 robbery alarm, 3 collision alarm, ...
    pub event: u8,
    pub channel: u8,
}

impl MediaEvent {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, Error> {
        let b = r.bytes(8, "media: head shorter than 8 bytes")?;
        Ok(MediaEvent {
            media_id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            media_type: b[4],
            format: b[5],
            event: b[6],
            channel: b[7],
        })
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, Error> {
        Self::read(&mut Reader::new(body))
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u32(self.media_id);
        out.put_u8(self.media_type);
        out.put_u8(self.format);
        out.put_u8(self.event);
        out.put_u8(self.channel);
    }
}

/// 0x0801 multimedia data (whole message, i.e. after reassembly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Media<'a> {
    pub head: MediaEvent,
    /// Basic location block (no additional items).
    pub location: Location<'a>,
    pub data: &'a [u8],
}

impl<'a> Media<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let head = MediaEvent::read(&mut r)?;
        let location = Location::decode_basic(&mut r)?;
        Ok(Media {
            head,
            location,
            data: r.rest(),
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        self.head.encode(out);
        self.location.encode_basic(out);
        out.put_slice(self.data);
    }
}

/// 0x8800 multimedia upload response: media id, then (when packages are
/// missing) count BYTE + WORD indices to resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaReply<'a> {
    pub media_id: u32,
    /// Empty when everything arrived (then the body has no count byte).
    pub retransmit: PackageIndices<'a>,
}

impl<'a> MediaReply<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let media_id = r.u32("media reply: media id missing")?;
        if r.remaining() == 0 {
            return Ok(MediaReply {
                media_id,
                retransmit: PackageIndices::Wire(&[]),
            });
        }
        let n = r.u8("media reply: count missing")? as usize;
        let ids = r.bytes(2 * n, "media reply: fewer indices than count")?;
        Ok(MediaReply {
            media_id,
            retransmit: PackageIndices::Wire(ids),
        })
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u32(self.media_id);
        if !self.retransmit.is_empty() {
            out.put_u8(self.retransmit.len().min(255) as u8);
            self.retransmit.encode(out);
        }
    }
}

/// 0x0805 camera "take photo now" response: reply serial, result, count
/// WORD and DWORD media ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CameraReply<'a> {
    pub reply_serial: u16,
    /// 0 ok, 1 failure, 2 channel not supported.
    pub result: u8,
    pub count: u16,
    /// Big-endian DWORD media ids.
    pub raw_ids: &'a [u8],
}

impl<'a> CameraReply<'a> {
    pub(crate) fn decode(body: &'a [u8]) -> Result<Self, Error> {
        let mut r = Reader::new(body);
        let reply_serial = r.u16("camera reply: reply serial missing")?;
        let result = r.u8("camera reply: result missing")?;
        if r.remaining() == 0 {
            return Ok(CameraReply {
                reply_serial,
                result,
                count: 0,
                raw_ids: &[],
            });
        }
        let count = r.u16("camera reply: count missing")?;
        let raw_ids = r.bytes(4 * count as usize, "camera reply: fewer ids than count")?;
        Ok(CameraReply {
            reply_serial,
            result,
            count,
            raw_ids,
        })
    }

    pub fn ids(&self) -> impl Iterator<Item = u32> + 'a {
        self.raw_ids
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) {
        out.put_u16(self.reply_serial);
        out.put_u8(self.result);
        if self.count > 0 || !self.raw_ids.is_empty() {
            out.put_u16(self.count);
            out.put_slice(self.raw_ids);
        }
    }
}

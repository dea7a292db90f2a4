//! Adapters that run one frame through each crates.io JT808 crate, so the
//! benchmarks compare the same bytes in the same process.
//!
//! What the peers can and cannot do (read from their sources, v0.1.1 of both):
//!
//! * `jt808` has a tokio-util `Decoder` that finds and unescapes frames
//!   (`Jt808Codec`), a header parser (`Jt808::from`) and body parsers
//!   (`Jt0x0200::fill_new`). It never checks the XOR check code. It reads the
//!   six time bytes as binary, not BCD, and hands them to chrono's panicking
//!   `Local.ymd(..).and_hms(..)`: any time whose month is 10-12, day 20-31,
//!   hour 18-23, minute or second 40-59 panics, and every other time comes
//!   out wrong. Additional-information items go into a private `HashMap`
//!   that callers cannot read. Its 0x0704 parser exists but is not exported
//!   (module `models::location` is private), so [`jt808_crate_batch`] repeats
//!   its item loop on top of the exported `Jt0x0200` parser. Short bodies
//!   panic inside `bytes::Buf`.
//! * `jt808-rs` only unescapes a whole frame and reads the message id and the
//!   body attribute bits (`Base::try_from(Vec<u8>)`); it has no stream
//!   splitter, does not verify the check code, does not parse the terminal
//!   phone or serial and has no 0x0200 or 0x0704 decoder. It is measured as a
//!   framing-only floor, not as an equal.
#![allow(dead_code)]

use bytes::{Buf, BytesMut};
use jt808::bytes::JtBytes;
use jt808::codec::Jt808Codec;
use jt808::models::jt0x0200::Jt0x0200;
use jt808::models::Jt808BodyTrans;
use tokio_util::codec::Decoder;

/// What a peer extracted from a 0x0200, reduced to numbers so that the work
/// cannot be optimised away and results can be compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerFix {
    pub lat_raw: u32,
    pub lon_raw: u32,
    pub unix: i64,
}

/// Splits one frame out of `buf` with the `jt808` crate's codec and decodes it
/// as a 0x0200 location. Panics where that crate panics.
pub fn jt808_crate_location(codec: &mut Jt808Codec, buf: &mut BytesMut) -> Option<PeerFix> {
    let frame = codec.decode(buf).ok()??;
    if frame.id != 0x0200 {
        return None;
    }
    let location = Jt0x0200::fill_new(&mut JtBytes::from(frame.get_body()), &frame);
    Some(PeerFix {
        lat_raw: location.gps.lat,
        lon_raw: location.gps.lng,
        unix: location.gps.time.timestamp(),
    })
}

/// Splits one frame with the `jt808` crate's codec and decodes it as a 0x0704
/// batch, the way that crate's own (unexported) `Jt0x0704` does: a count, a
/// type byte, then length-prefixed 0x0200 bodies. Returns the number of items.
pub fn jt808_crate_batch(codec: &mut Jt808Codec, buf: &mut BytesMut) -> Option<usize> {
    let frame = codec.decode(buf).ok()??;
    if frame.id != 0x0704 {
        return None;
    }
    let mut body = frame.get_body();
    let count = usize::from(body.get_u16());
    let _kind = body.get_u8();
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(body.get_u16());
        let item = body.split_to(len);
        items.push(Jt0x0200::fill_new(&mut JtBytes::from(item), &frame));
    }
    Some(items.len())
}

/// Unescapes one whole frame with `jt808-rs` and returns its message id: all
/// that crate can do.
pub fn jt808_rs_frame(wire: &[u8]) -> Option<u16> {
    let base = jt808_rs::model::Base::try_from(wire.to_vec()).ok()?;
    Some(base.meta.msgtp)
}

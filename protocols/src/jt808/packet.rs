//! One received frame: unescape, verify the check code, parse the header
//! (JT/T 808-2013 §4.4), then decode the body on demand. No allocation.

use bytes::BytesMut;

use super::error::{Error, ErrorKind};
use super::frame::{encode_frame, unescape, xor};
use super::header::{parse_header, Header, Quirks, SubPackage, Version};
use super::msg::{id, Message, Register};
use super::{DEFAULT_MAX_FRAME, MAX_LOGICAL_FRAME};

/// Per-connection (or per-device-model) decoding choices.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Accept frames whose XOR check code is wrong (several real device
    /// models send them); such packets carry `Quirks::CHECKSUM_MISMATCH_ACCEPTED`
    /// so that the caller can count them.
    pub skip_checksum: bool,
    /// Largest on-wire frame accepted; 0 means `DEFAULT_MAX_FRAME`.
    pub max_frame: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            skip_checksum: false,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// A frame whose framing, check code and header are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// The body bytes (unescaped), borrowed from the scratch buffer.
    pub body: &'a [u8],
    pub quirks: Quirks,
}

impl<'a> Packet<'a> {
    /// Decode the body. Encrypted bodies are a typed error (we hold no RSA
    /// keys, §10); a subpackaged body is returned as `Message::Fragment` for
    /// the reassembler. Errors carry the header and an offset in the
    /// unescaped frame.
    #[inline]
    pub fn message(&self) -> Result<Message<'a>, Error> {
        let h = &self.header;
        if h.encryption != 0 {
            return Err(Error::new(
                ErrorKind::Encrypted,
                2,
                "body is encrypted (RSA or a reserved encryption bit)",
            )
            .with_header(*h));
        }
        if let Some(SubPackage { total, index }) = h.subpackage {
            return Ok(Message::Fragment {
                id: h.message_id,
                total,
                index,
                body: self.body,
            });
        }
        let hlen = h.wire_len();
        Message::decode(h.message_id, h.version, self.body).map_err(|mut e| {
            e.offset += hlen;
            e.header = Some(*h);
            e
        })
    }
}

/// Unescape `wire` (one frame with both delimiters) into `scratch`, verify
/// the XOR check code (§4.4.4) and parse the header (§4.4.3).
///
/// Checks run in the standard's receive order, so a frame that is wrong in
/// several ways reports the first: escape, then check code, then length.
#[inline]
pub fn parse_packet<'s>(
    wire: &[u8],
    scratch: &'s mut [u8; MAX_LOGICAL_FRAME],
    opts: &DecodeOptions,
) -> Result<Packet<'s>, Error> {
    let max = if opts.max_frame == 0 {
        DEFAULT_MAX_FRAME
    } else {
        opts.max_frame
    };
    if wire.len() > max {
        return Err(Error::new(
            ErrorKind::Oversized,
            max,
            "frame exceeds the size limit",
        ));
    }
    let n = unescape(wire, scratch)?;
    let logical: &'s [u8] = &scratch[..n];
    if n < 13 {
        return Err(Error::new(
            ErrorKind::Truncated,
            n,
            "frame shorter than the smallest header plus check byte",
        ));
    }
    let mut quirks = Quirks::empty();
    let check = logical[n - 1];
    if xor(&logical[..n - 1]) != check {
        if opts.skip_checksum {
            quirks |= Quirks::CHECKSUM_MISMATCH_ACCEPTED;
        } else {
            // Point at the check byte on the wire (escaped, it takes two bytes).
            let at = if wire.len() >= 4 && wire[wire.len() - 3] == 0x7d {
                wire.len() - 3
            } else {
                wire.len() - 2
            };
            let mut e = Error::new(ErrorKind::Checksum, at, "XOR check code does not match");
            if let Ok((h, _, _)) = parse_header(logical) {
                e.header = Some(h);
            }
            return Err(e);
        }
    }
    let (mut header, hlen, hq) = parse_header(logical)?;
    let body = &logical[hlen..n - 1];
    // The 2011 and 2013 headers are identical; a 0x0100 body in the 2011
    // layout is the only way to tell them apart (JT808.md §5.4).
    if header.message_id == id::REGISTER
        && header.subpackage.is_none()
        && Register::layout(body, header.version) == Version::V2011
    {
        header.version = Version::V2011;
    }
    Ok(Packet {
        header,
        body,
        quirks: quirks | hq,
    })
}

/// `parse_packet` followed by `Packet::message`.
///
/// Inlined into the caller so that the decoded message is built where the
/// caller matches on it: returned through memory, the large `Result` is
/// written field by field and then copied as a block, and those copies
/// stall on store-to-load forwarding (about a third of the decode time in
/// `cargo bench --bench jt808_ratio` before this). `always`, because with
/// two call sites the compiler's own heuristics decline.
#[inline(always)]
pub fn decode_frame<'s>(
    wire: &[u8],
    scratch: &'s mut [u8; MAX_LOGICAL_FRAME],
    opts: &DecodeOptions,
) -> Result<(Packet<'s>, Message<'s>), Error> {
    let p = parse_packet(wire, scratch, opts)?;
    let m = p.message()?;
    Ok((p, m))
}

/// Encode `msg` as one frame. The header's message id is taken from the
/// message; a `Message::Fragment` sets the package item.
pub fn encode_message(header: &Header, msg: &Message<'_>, out: &mut BytesMut) {
    let mut h = *header;
    h.message_id = msg.message_id();
    if let Message::Fragment { total, index, .. } = msg {
        h.subpackage = Some(SubPackage {
            total: *total,
            index: *index,
        });
    }
    let mut body = BytesMut::with_capacity(64);
    msg.encode_body(h.version, &mut body);
    encode_frame(&h, &body, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jt808::header::TerminalId;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // Reference frame jt808-sc-0002-heartbeat (SmallChi/JT808 JT808_0x0002Test.Test2).
    const HEARTBEAT: &str = "7e00020000012345678900000a817e";

    #[test]
    fn heartbeat_reference_frame() {
        let wire = unhex(HEARTBEAT);
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        let (p, m) = decode_frame(&wire, &mut s, &DecodeOptions::default()).unwrap();
        assert_eq!(m, Message::Heartbeat);
        assert_eq!(p.header.serial, 10);
        assert_eq!(p.header.terminal.to_string(), "012345678900");
        assert_eq!(p.quirks, Quirks::empty());
    }

    #[test]
    fn wrong_check_code_is_rejected_or_accepted_when_configured() {
        let mut wire = unhex(HEARTBEAT);
        let n = wire.len();
        wire[n - 2] ^= 0x01;
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        let e = parse_packet(&wire, &mut s, &DecodeOptions::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Checksum);
        assert_eq!(e.offset, n - 2);
        assert_eq!(e.header.unwrap().message_id, 2);
        let lenient = DecodeOptions {
            skip_checksum: true,
            ..DecodeOptions::default()
        };
        let p = parse_packet(&wire, &mut s, &lenient).unwrap();
        assert!(p.quirks.contains(Quirks::CHECKSUM_MISMATCH_ACCEPTED));
    }

    #[test]
    fn rsa_body_is_a_typed_error_not_a_panic() {
        let t = TerminalId::parse("12345678900", Version::V2013).unwrap();
        let mut h = Header::new(0x0200, t, 1, Version::V2013);
        h.encryption = 1;
        let mut out = BytesMut::new();
        encode_frame(&h, &[0x55; 40], &mut out);
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        let p = parse_packet(&out, &mut s, &DecodeOptions::default()).unwrap();
        let e = p.message().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Encrypted);
        assert_eq!(e.header.unwrap().message_id, 0x0200);
    }

    #[test]
    fn subpackaged_body_is_a_fragment() {
        let t = TerminalId::parse("13812345678", Version::V2019).unwrap();
        let mut h = Header::new(0x0801, t, 77, Version::V2019);
        h.subpackage = Some(SubPackage { total: 3, index: 2 });
        let mut out = BytesMut::new();
        encode_frame(&h, &[1, 2, 3], &mut out);
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        let (p, m) = decode_frame(&out, &mut s, &DecodeOptions::default()).unwrap();
        assert_eq!(p.header.subpackage, Some(SubPackage { total: 3, index: 2 }));
        assert_eq!(
            m,
            Message::Fragment {
                id: 0x0801,
                total: 3,
                index: 2,
                body: &[1, 2, 3]
            }
        );
    }

    #[test]
    fn short_and_oversized_frames() {
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        let o = DecodeOptions::default();
        assert_eq!(
            parse_packet(&[0x7e, 0x00, 0x02, 0x7e], &mut s, &o)
                .unwrap_err()
                .kind,
            ErrorKind::Truncated
        );
        assert_eq!(
            parse_packet(&[0x7e, 0x00, 0x02], &mut s, &o)
                .unwrap_err()
                .kind,
            ErrorKind::Truncated
        );
        assert_eq!(
            parse_packet(&[0x00, 0x7e], &mut s, &o).unwrap_err().kind,
            ErrorKind::Framing
        );
        let small = DecodeOptions { max_frame: 10, ..o };
        assert_eq!(
            parse_packet(&unhex(HEARTBEAT), &mut s, &small)
                .unwrap_err()
                .kind,
            ErrorKind::Oversized
        );
        // Unescaping can never write past the scratch array.
        let mut big = vec![0x7e];
        big.extend(std::iter::repeat_n(0x11, MAX_LOGICAL_FRAME + 5));
        big.push(0x7e);
        let huge = DecodeOptions {
            max_frame: usize::MAX,
            ..o
        };
        assert_eq!(
            parse_packet(&big, &mut s, &huge).unwrap_err().kind,
            ErrorKind::Oversized
        );
    }

    #[test]
    fn register_2011_layout_sets_version() {
        // Reference frame jt808-tr-0100-register-2011 (traccar Jt808ProtocolDecoderTest).
        let wire = unhex("7e01000021013345678906000f002c012f373031313142534a2d4d3742203030303030303001d4c1423838383838b47e");
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        let (p, m) = decode_frame(&wire, &mut s, &DecodeOptions::default()).unwrap();
        assert_eq!(p.header.version, Version::V2011);
        let Message::Register(r) = m else {
            panic!("{m:?}")
        };
        assert_eq!(r.model, b"BSJ-M7B ");
        assert_eq!(r.device_id, b"0000000");
        // Re-encoding with the decoded header reproduces the frame.
        let mut out = BytesMut::new();
        encode_message(&p.header, &m, &mut out);
        assert_eq!(&out[..], &wire[..]);
    }
}

//! Framing (JT/T 808-2013 §4.4.1-§4.4.4): 0x7e delimiters, 0x7d escapes and
//! the XOR check code. Receive order is unescape -> verify -> parse; send
//! order is build -> check -> escape.

use bytes::{BufMut, BytesMut};

use super::error::{Error, ErrorKind};
use super::header::{write_header, Header, SubPackage};
use super::{MAX_BODY_LEN, MAX_LOGICAL_FRAME};

/// Frame delimiter (§4.4.1).
pub const FLAG: u8 = 0x7e;
/// Escape introducer (§4.4.2).
pub const ESC: u8 = 0x7d;

/// Unescape the bytes between the delimiters of `wire` (which must start and
/// end with 0x7e) into `scratch`, returning the logical length. Offsets in
/// errors are positions in `wire`.
#[inline]
pub fn unescape(wire: &[u8], scratch: &mut [u8; MAX_LOGICAL_FRAME]) -> Result<usize, Error> {
    if wire.first() != Some(&FLAG) {
        return Err(Error::new(
            ErrorKind::Framing,
            0,
            "frame does not start with 0x7e",
        ));
    }
    if wire.len() < 2 || wire[wire.len() - 1] != FLAG {
        return Err(Error::new(
            ErrorKind::Truncated,
            wire.len(),
            "frame has no closing 0x7e",
        ));
    }
    let inner = &wire[1..wire.len() - 1];
    let mut out = 0usize;
    let mut i = 0usize;
    while i < inner.len() {
        // Copy the plain run up to the next special byte in one go; most
        // frames have no escapes at all.
        let run = memchr::memchr2(ESC, FLAG, &inner[i..]).unwrap_or(inner.len() - i);
        if out + run > MAX_LOGICAL_FRAME {
            return Err(Error::new(
                ErrorKind::Oversized,
                1 + i,
                "unescaped frame exceeds the largest standard frame",
            ));
        }
        scratch[out..out + run].copy_from_slice(&inner[i..i + run]);
        out += run;
        i += run;
        if i == inner.len() {
            break;
        }
        if inner[i] == FLAG {
            return Err(Error::new(
                ErrorKind::Escape,
                1 + i,
                "raw 0x7e inside a frame (sender did not escape it)",
            ));
        }
        let decoded = match inner.get(i + 1) {
            Some(0x01) => ESC,
            Some(0x02) => FLAG,
            _ => {
                return Err(Error::new(
                    ErrorKind::Escape,
                    1 + i,
                    "0x7d not followed by 0x01 or 0x02",
                ))
            }
        };
        if out >= MAX_LOGICAL_FRAME {
            return Err(Error::new(
                ErrorKind::Oversized,
                1 + i,
                "unescaped frame exceeds the largest standard frame",
            ));
        }
        scratch[out] = decoded;
        out += 1;
        i += 2;
    }
    Ok(out)
}

/// XOR of all bytes (§4.4.4: from the first header byte to the last body byte).
#[inline]
pub fn xor(bytes: &[u8]) -> u8 {
    // Folding 8 bytes at a time keeps this branch-free and fast; the result is
    // the same as a byte-wise fold.
    let mut chunks = bytes.chunks_exact(8);
    let mut acc = 0u64;
    for c in &mut chunks {
        acc ^= u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
    }
    let mut x = acc.to_ne_bytes().iter().fold(0u8, |a, b| a ^ b);
    for b in chunks.remainder() {
        x ^= b;
    }
    x
}

/// Whether any byte of `bytes` must be escaped (0x7d or 0x7e).
///
/// A branch-free fold that the compiler vectorises: the platform's answers are 20-30 bytes, and
/// `memchr2` on runs that short cost several hundred instructions per answer in its set-up
/// (session 18, `scripts/bench-callgrind.sh`), more than the rest of the encoding.
#[inline]
fn has_special(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |any, &b| any | is_special(b))
}

/// Whether `b` is 0x7d or 0x7e, in one compare.
#[inline]
fn is_special(b: u8) -> bool {
    b.wrapping_sub(ESC) < 2
}

/// The escaping path: most frames have nothing to escape and never come here (`has_special`).
#[cold]
fn put_escaped(out: &mut BytesMut, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let run = memchr::memchr2(ESC, FLAG, rest).unwrap_or(rest.len());
        out.put_slice(&rest[..run]);
        if run == rest.len() {
            break;
        }
        out.put_slice(if rest[run] == FLAG {
            &[ESC, 0x02]
        } else {
            &[ESC, 0x01]
        });
        rest = &rest[run + 1..];
    }
}

/// Write one whole frame: delimiters, header (with the body length and
/// attribute bits computed from `header` and `body`), body and check code,
/// escaped (§4.4). Bodies longer than the 10-bit length field can express are
/// the caller's bug; the length is masked, as the field cannot hold more.
pub fn encode_frame(header: &Header, body: &[u8], out: &mut BytesMut) {
    debug_assert!(
        body.len() <= super::MAX_BODY_LEN,
        "JT808 body over 1023 bytes"
    );
    let mut hbuf = [0u8; 21];
    let hlen = write_header(header, body.len(), &mut hbuf);
    let check = xor(&hbuf[..hlen]) ^ xor(body);
    out.reserve(2 + 2 * (hlen + body.len() + 1));
    out.put_u8(FLAG);
    let head = &hbuf[..hlen];
    if has_special(head) || has_special(body) {
        put_escaped(out, head);
        put_escaped(out, body);
    } else {
        out.put_slice(head);
        out.put_slice(body);
    }
    if is_special(check) {
        put_escaped(out, &[check]);
    } else {
        out.put_u8(check);
    }
    out.put_u8(FLAG);
}

/// Encode a body of any length as one or more frames (§4.4.3 table 3,
/// §7.12): packages of at most `MAX_BODY_LEN` bytes with consecutive
/// serials starting at `header.serial`, 1-based indices. A body that fits
/// in one frame is sent without the package item. Returns the number of
/// frames written (the caller advances its serial counter by that much).
pub fn encode_subpackaged(header: &Header, body: &[u8], out: &mut BytesMut) -> u16 {
    if body.len() <= MAX_BODY_LEN {
        let mut h = *header;
        h.subpackage = None;
        encode_frame(&h, body, out);
        return 1;
    }
    let total = body.len().div_ceil(MAX_BODY_LEN) as u16;
    for (i, chunk) in body.chunks(MAX_BODY_LEN).enumerate() {
        let mut h = *header;
        h.serial = header.serial.wrapping_add(i as u16);
        h.subpackage = Some(SubPackage {
            total,
            index: i as u16 + 1,
        });
        encode_frame(&h, chunk, out);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_example_round_trips() {
        // JT/T 808-2013 §4.4.2 example: 30 7e 08 7d 55 <-> 7e 30 7d 02 08 7d 01 55 7e.
        let wire = [0x7e, 0x30, 0x7d, 0x02, 0x08, 0x7d, 0x01, 0x55, 0x7e];
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        let n = unescape(&wire, &mut s).unwrap();
        assert_eq!(&s[..n], &[0x30, 0x7e, 0x08, 0x7d, 0x55]);
        let mut out = BytesMut::new();
        put_escaped(&mut out, &s[..n]);
        assert_eq!(&out[..], &wire[1..8]);
    }

    #[test]
    fn bad_escape_is_typed() {
        let mut s = [0u8; MAX_LOGICAL_FRAME];
        let e = unescape(&[0x7e, 0x01, 0x7d, 0x03, 0x7e], &mut s).unwrap_err();
        assert_eq!((e.kind, e.offset), (ErrorKind::Escape, 2));
        let e = unescape(&[0x7e, 0x01, 0x7d, 0x7e], &mut s).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Escape);
        let e = unescape(&[0x7e, 0x01, 0x7e, 0x02, 0x7e], &mut s).unwrap_err();
        assert_eq!((e.kind, e.offset), (ErrorKind::Escape, 2));
    }

    /// The escaping of the whole frame, byte by byte, as §4.4.2 states it.
    fn escape_bytewise(logical: &[u8]) -> Vec<u8> {
        let mut wire = vec![FLAG];
        for &b in logical {
            match b {
                FLAG => wire.extend([ESC, 0x02]),
                ESC => wire.extend([ESC, 0x01]),
                _ => wire.push(b),
            }
        }
        wire.push(FLAG);
        wire
    }

    #[test]
    fn encoding_escapes_every_special_byte_wherever_it_is() {
        // Bodies with 0x7d and 0x7e at every position of short and long runs, and serials that
        // put them in the header and make the check code one of them too.
        let terminal =
            crate::jt808::TerminalId::parse("013800138000", super::super::Version::V2013).unwrap();
        let mut checks = [false; 256];
        for len in [0usize, 1, 2, 5, 31, 32, 33, 100] {
            for at in 0..len.max(1) {
                for special in [FLAG, ESC, 0x7c, 0x7f] {
                    for serial in [0x0000u16, 0x7e7d, 0x007e, 0x7d00, 0x1234] {
                        let mut body: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
                        if let Some(b) = body.get_mut(at) {
                            *b = special;
                        }
                        let header =
                            Header::new(0x8001, terminal, serial, super::super::Version::V2013);
                        let mut hbuf = [0u8; 21];
                        let hlen = write_header(&header, body.len(), &mut hbuf);
                        let mut logical = hbuf[..hlen].to_vec();
                        logical.extend_from_slice(&body);
                        let check = xor(&logical);
                        checks[usize::from(check)] = true;
                        logical.push(check);
                        let mut out = BytesMut::new();
                        encode_frame(&header, &body, &mut out);
                        assert_eq!(
                            &out[..],
                            &escape_bytewise(&logical)[..],
                            "len {len} at {at}"
                        );
                    }
                }
            }
        }
        assert!(
            checks[usize::from(FLAG)] && checks[usize::from(ESC)],
            "check codes 0x7d and 0x7e covered"
        );
    }

    #[test]
    fn xor_matches_bytewise() {
        let data: Vec<u8> = (0..=255u8).chain(0..17).collect();
        for n in 0..data.len() {
            let a = data[..n].iter().fold(0u8, |a, b| a ^ b);
            assert_eq!(xor(&data[..n]), a);
        }
    }
}

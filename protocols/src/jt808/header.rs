//! Message header (JT/T 808-2013 §4.4.3 table 2; 2019 layout with the
//! version flag, protocol version byte and 10-byte phone).

use super::error::{Error, ErrorKind};

/// Which edition's layout a header (and, for 0x0100, a body) follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V2011,
    V2013,
    V2019,
}

impl Version {
    /// "2011" / "2013" / "2019".
    pub fn as_str(&self) -> &'static str {
        match self {
            Version::V2011 => "2011",
            Version::V2013 => "2013",
            Version::V2019 => "2019",
        }
    }

    /// Length of the terminal phone field in bytes: `BCD[6]` before 2019, `BCD[10]` in 2019.
    pub fn phone_len(&self) -> usize {
        match self {
            Version::V2019 => 10,
            _ => 6,
        }
    }

    /// Header length without the package item.
    pub fn header_len(&self) -> usize {
        match self {
            Version::V2019 => 17,
            _ => 12,
        }
    }
}

/// Package item (§4.4.3 table 3): total packages and 1-based index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubPackage {
    pub total: u16,
    pub index: u16,
}

/// Terminal phone number as sent: 6 BCD bytes (2011/2013) or 10 (2019).
/// Stored raw so that devices with non-BCD nibbles keep a stable identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TerminalId {
    raw: [u8; 10],
    len: u8,
}

impl TerminalId {
    /// Build from raw BCD bytes (6 or 10 of them; other lengths are an error).
    #[inline]
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != 6 && bytes.len() != 10 {
            return Err(Error::new(
                ErrorKind::Header,
                0,
                "terminal id must be 6 or 10 bytes",
            ));
        }
        let mut raw = [0u8; 10];
        raw[..bytes.len()].copy_from_slice(bytes);
        Ok(TerminalId {
            raw,
            len: bytes.len() as u8,
        })
    }

    /// Parse a digit string, left-padding with zeros to 12 digits (2011/2013)
    /// or 20 (2019). Hex letters are accepted so that a non-BCD identity seen
    /// on the wire can be written back unchanged.
    pub fn parse(digits: &str, version: Version) -> Result<Self, Error> {
        let n = version.phone_len();
        let d = digits.as_bytes();
        if d.is_empty() || d.len() > 2 * n {
            return Err(Error::new(
                ErrorKind::Header,
                0,
                "terminal id has too many digits",
            ));
        }
        let mut raw = [0u8; 10];
        let pad = 2 * n - d.len();
        for (i, &c) in d.iter().enumerate() {
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => {
                    return Err(Error::new(
                        ErrorKind::Header,
                        i,
                        "terminal id must be digits (or hex)",
                    ))
                }
            };
            let pos = pad + i;
            raw[pos / 2] |= if pos & 1 == 0 { v << 4 } else { v };
        }
        Ok(TerminalId { raw, len: n as u8 })
    }

    /// The raw BCD bytes (6 or 10).
    pub fn bytes(&self) -> &[u8] {
        &self.raw[..self.len as usize]
    }

    /// True when every nibble is a decimal digit.
    pub fn is_bcd(&self) -> bool {
        // A nibble is 10..=15 exactly when bit 3 is set together with bit 1
        // or bit 2. Checking all nibbles of the zero-padded array at once
        // keeps this branch-free on the hot path.
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&self.raw);
        let v = u128::from_be_bytes(b);
        let hi = v & 0x8888_8888_8888_8888_8888_8888_8888_8888;
        let mid = v & 0x6666_6666_6666_6666_6666_6666_6666_6666;
        hi & ((mid << 1) | (mid << 2)) == 0
    }
}

impl core::fmt::Display for TerminalId {
    /// BCD digits with leading zeros kept. A BCD byte printed as two hex
    /// digits is its decimal pair, and non-BCD nibbles come out as lowercase
    /// hex, which is the convention used for the reference frames.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

bitflags::bitflags! {
    /// Deviations from the standard that the decoder noticed and accepted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Quirks: u32 {
        /// Bit 14 (2019 version flag) set on a 12-byte 2013 header (real devices do this).
        const VERSION_FLAG_ON_2013_LAYOUT = 1 << 0;
        /// The terminal phone contains nibbles A-F.
        const NON_BCD_PHONE = 1 << 1;
        /// The XOR check did not match and `skip_checksum` accepted the frame anyway.
        const CHECKSUM_MISMATCH_ACCEPTED = 1 << 2;
        /// Reserved attribute bit 15 was set.
        const RESERVED_ATTR_BIT = 1 << 3;
    }
}

/// Header of one message (§4.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub message_id: u16,
    /// Layout in use. Decoded headers are `V2013` or `V2019`; `V2011` is set
    /// when a 0x0100 body turns out to follow the 2011 layout.
    pub version: Version,
    /// 2019 protocol version byte (0 for older layouts).
    pub protocol_version: u8,
    pub terminal: TerminalId,
    pub serial: u16,
    /// Encryption bits 10-12 of the body attributes (0 = plain, 1 = RSA).
    pub encryption: u8,
    /// Body length from the attributes (recomputed by the encoder).
    pub body_len: u16,
    pub subpackage: Option<SubPackage>,
}

/// Attribute masks (§4.4.3.1 / 2019 bit 14).
pub(crate) const ATTR_LEN: u16 = 0x03ff;
pub(crate) const ATTR_SUBPKG: u16 = 0x2000;
pub(crate) const ATTR_VERSION: u16 = 0x4000;
pub(crate) const ATTR_RESERVED: u16 = 0x8000;

impl Header {
    /// Header for a new outgoing message: plain body, no subpackage,
    /// protocol version 1 for 2019 (the only revision in use).
    pub fn new(message_id: u16, terminal: TerminalId, serial: u16, version: Version) -> Self {
        Header {
            message_id,
            version,
            protocol_version: if version == Version::V2019 { 1 } else { 0 },
            terminal,
            serial,
            encryption: 0,
            body_len: 0,
            subpackage: None,
        }
    }

    /// Header for a message sent back to the same terminal (e.g. 0x8001 or
    /// 0x8100): same terminal id, layout and protocol version, our own
    /// `serial`, plain body, no package item.
    pub fn reply(&self, message_id: u16, serial: u16) -> Header {
        Header {
            message_id,
            serial,
            encryption: 0,
            body_len: 0,
            subpackage: None,
            ..*self
        }
    }

    /// Header length on the wire (12/16 or 17/21 bytes).
    pub fn wire_len(&self) -> usize {
        self.version.header_len() + if self.subpackage.is_some() { 4 } else { 0 }
    }

    /// Body attributes word for the given body length.
    pub fn attributes(&self, body_len: usize) -> u16 {
        let mut a = (body_len as u16) & ATTR_LEN;
        a |= ((self.encryption as u16) & 0x7) << 10;
        if self.subpackage.is_some() {
            a |= ATTR_SUBPKG;
        }
        if self.version == Version::V2019 {
            a |= ATTR_VERSION;
        }
        a
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parse the header of an unescaped frame `logical` (header + body + check
/// byte). Returns the header, where the body starts, and the quirks noticed.
/// The declared body length must match the bytes present exactly (§4.4.3);
/// the only tolerated mismatch is the "2019 flag on a 2013 layout" quirk,
/// recognised because only the 12-byte interpretation makes the lengths agree.
#[inline(always)]
pub(crate) fn parse_header(logical: &[u8]) -> Result<(Header, usize, Quirks), Error> {
    let total = logical.len();
    if total < 13 {
        return Err(Error::new(
            ErrorKind::Truncated,
            total,
            "frame shorter than the smallest header plus check byte",
        ));
    }
    let message_id = be16(logical, 0);
    let attr = be16(logical, 2);
    let body_len = (attr & ATTR_LEN) as usize;
    let sub = if attr & ATTR_SUBPKG != 0 { 4 } else { 0 };
    let mut quirks = Quirks::empty();
    if attr & ATTR_RESERVED != 0 {
        quirks |= Quirks::RESERVED_ATTR_BIT;
    }
    let fits = |hlen: usize| hlen + sub + body_len + 1 == total;
    let version = if attr & ATTR_VERSION != 0 {
        if fits(17) || !fits(12) {
            Version::V2019
        } else {
            // JT/T 808-2019 devices in the field set bit 14 on a 2013 header;
            // only the 2013 reading makes the declared length fit.
            quirks |= Quirks::VERSION_FLAG_ON_2013_LAYOUT;
            Version::V2013
        }
    } else {
        Version::V2013
    };
    let hlen = version.header_len() + sub;
    if total < hlen + 1 {
        return Err(Error::new(
            ErrorKind::Truncated,
            total,
            "frame ends inside the header",
        ));
    }
    // One constant-length copy per layout: a variable-length copy becomes a
    // `memcpy` call whose narrow stores stall the 16-byte BCD check that
    // reads the array right after (failed store-to-load forwarding).
    let mut raw = [0u8; 10];
    let (protocol_version, phone_at) = if version == Version::V2019 {
        raw.copy_from_slice(&logical[5..15]);
        (logical[4], 5)
    } else {
        raw[..6].copy_from_slice(&logical[4..10]);
        (0, 4)
    };
    let plen = version.phone_len();
    let terminal = TerminalId {
        raw,
        len: plen as u8,
    };
    if !terminal.is_bcd() {
        quirks |= Quirks::NON_BCD_PHONE;
    }
    let serial_at = phone_at + version.phone_len();
    let serial = be16(logical, serial_at);
    let subpackage = if sub != 0 {
        Some(SubPackage {
            total: be16(logical, serial_at + 2),
            index: be16(logical, serial_at + 4),
        })
    } else {
        None
    };
    let header = Header {
        message_id,
        version,
        protocol_version,
        terminal,
        serial,
        encryption: ((attr >> 10) & 0x7) as u8,
        body_len: body_len as u16,
        subpackage,
    };
    if hlen + body_len + 1 != total {
        return Err(Error::new(
            ErrorKind::Length,
            2,
            "body-length attribute disagrees with the bytes present",
        )
        .with_header(header));
    }
    Ok((header, hlen, quirks))
}

/// Write a header (without escaping) into `out`. The layout follows
/// `h.version`; a terminal id of the other width is adapted (left-padded
/// with zeros for 2019, its last 6 bytes for 2011/2013) so that the header
/// is always well formed.
pub(crate) fn write_header(h: &Header, body_len: usize, out: &mut [u8; 21]) -> usize {
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        out[n..n + bytes.len()].copy_from_slice(bytes);
        n += bytes.len();
    };
    put(&h.message_id.to_be_bytes());
    put(&h.attributes(body_len).to_be_bytes());
    let t = h.terminal.bytes();
    if h.version == Version::V2019 {
        put(&[h.protocol_version]);
        let mut phone = [0u8; 10];
        phone[10 - t.len()..].copy_from_slice(t);
        put(&phone);
    } else {
        put(&t[t.len() - 6..]);
    }
    put(&h.serial.to_be_bytes());
    if let Some(sp) = h.subpackage {
        put(&sp.total.to_be_bytes());
        put(&sp.index.to_be_bytes());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_parse_pads_and_displays() {
        let t = TerminalId::parse("12345678900", Version::V2013).unwrap();
        assert_eq!(t.bytes(), &[0x01, 0x23, 0x45, 0x67, 0x89, 0x00]);
        assert_eq!(t.to_string(), "012345678900");
        let t = TerminalId::parse("17299841738", Version::V2019).unwrap();
        assert_eq!(t.to_string(), "00000000017299841738");
        assert!(TerminalId::parse("1234567890123", Version::V2013).is_err());
        assert!(TerminalId::parse("12x", Version::V2013).is_err());
    }

    #[test]
    fn is_bcd_matches_the_nibble_rule_for_every_byte_and_position() {
        for pos in 0..10 {
            for b in 0..=255u8 {
                let mut raw = [0x12u8; 10];
                raw[pos] = b;
                let t = TerminalId::from_bytes(&raw).unwrap();
                assert_eq!(t.is_bcd(), (b >> 4) < 10 && (b & 0x0f) < 10, "{pos} {b:#x}");
                if pos < 6 {
                    let t = TerminalId::from_bytes(&raw[..6]).unwrap();
                    assert_eq!(t.is_bcd(), (b >> 4) < 10 && (b & 0x0f) < 10);
                }
            }
        }
    }

    #[test]
    fn non_bcd_phone_renders_hex() {
        let t = TerminalId::from_bytes(&[0x4e, 0xb6, 0xfb, 0x4a, 0xf2, 0xc1]).unwrap();
        assert!(!t.is_bcd());
        assert_eq!(t.to_string(), "4eb6fb4af2c1");
    }

    #[test]
    fn version_flag_on_2013_layout_is_detected() {
        // 0x0002 with bit 14 set, 12-byte header, empty body, check byte.
        let f = [0x00, 0x02, 0x40, 0x00, 1, 2, 3, 4, 5, 6, 0, 9, 0x00];
        let (h, hl, q) = parse_header(&f).unwrap();
        assert_eq!(h.version, Version::V2013);
        assert_eq!(hl, 12);
        assert!(q.contains(Quirks::VERSION_FLAG_ON_2013_LAYOUT));
    }

    #[test]
    fn length_mismatch_keeps_header() {
        let f = [0x00, 0x02, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 0, 9, 0x00];
        let e = parse_header(&f).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Length);
        assert_eq!(e.header.unwrap().message_id, 2);
    }
}

//! Typed decode errors shared by every JT/T 808 layer (framing, header, bodies).

use super::header::Header;

/// What went wrong with a frame. `as_str` gives the stable label used in
/// metrics (`frames_rejected_total{kind}`) and in the JSON view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The XOR check code does not match (JT/T 808-2013 §4.4.4).
    Checksum,
    /// A 0x7d not followed by 0x01/0x02, or a raw 0x7e inside a frame (§4.4.2).
    Escape,
    /// The body-length attribute disagrees with the bytes present (§4.4.3).
    Length,
    /// The frame ends before its header or an announced field is complete.
    Truncated,
    /// The header cannot be understood (e.g. an unparsable terminal id).
    Header,
    /// The body does not follow the layout of its message id.
    Body,
    /// The body is RSA-encrypted (or uses a reserved encryption bit); we do not hold keys.
    Encrypted,
    /// The frame is longer than the configured limit; rejected before buffering.
    Oversized,
    /// Bytes that are not a frame at all (missing delimiters, garbage).
    Framing,
}

impl ErrorKind {
    /// Stable lower-case label ("checksum", "escape", ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Checksum => "checksum",
            ErrorKind::Escape => "escape",
            ErrorKind::Length => "length",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Header => "header",
            ErrorKind::Body => "body",
            ErrorKind::Encrypted => "encrypted",
            ErrorKind::Oversized => "oversized",
            ErrorKind::Framing => "framing",
        }
    }
}

impl core::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected frame: its kind, the byte offset where the problem was found
/// (in the on-wire frame for framing errors, in the unescaped frame for
/// header/body errors), a fixed explanation, and the header when it could be
/// read so that the gateway can answer 0x8001 with result 2 ("message error").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("jt808 {kind} error at byte {offset}: {detail}")]
pub struct Error {
    pub kind: ErrorKind,
    pub offset: usize,
    pub detail: &'static str,
    pub header: Option<Header>,
}

impl Error {
    /// Error without a known header.
    pub fn new(kind: ErrorKind, offset: usize, detail: &'static str) -> Self {
        Error {
            kind,
            offset,
            detail,
            header: None,
        }
    }

    /// Attach the header that was read before the error was found.
    pub fn with_header(mut self, header: Header) -> Self {
        self.header = Some(header);
        self
    }
}

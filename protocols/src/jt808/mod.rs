//! JT/T 808 (2011 / 2013 / 2019): framing, header, typed messages,
//! subpackage reassembly and encoders. Sans-IO: bytes and time in, values
//! and bytes out.
//!
//! Hot path: `Splitter::next` finds a frame in the connection buffer,
//! `decode_frame` unescapes it into a caller-owned scratch array and returns
//! borrowed views; nothing is allocated.

pub mod error;
pub mod flags;
pub mod frame;
pub mod header;
#[cfg(feature = "serde")]
pub mod json;
pub mod msg;
pub mod packet;
pub mod reassembly;
pub mod splitter;
pub mod time;

pub use error::{Error, ErrorKind};
pub use flags::{Alarm, Status};
pub use frame::{encode_frame, encode_subpackaged};
pub use header::{Header, Quirks, SubPackage, TerminalId, Version};
pub use msg::*;
pub use packet::{decode_frame, encode_message, parse_packet, DecodeOptions, Packet};
pub use reassembly::{Expired, Reassembler, Reassembly, ReassemblyLimits};
pub use splitter::{Split, Splitter};
pub use time::BcdTime;

/// Largest body the 10-bit length field can express (§4.4.3.1).
pub const MAX_BODY_LEN: usize = 1023;

/// Largest unescaped frame: 2019 header (17) + package item (4) + body + check.
pub const MAX_LOGICAL_FRAME: usize = 17 + 4 + MAX_BODY_LEN + 1;

/// Largest on-wire frame: both delimiters plus every logical byte escaped.
pub const DEFAULT_MAX_FRAME: usize = 2 + 2 * MAX_LOGICAL_FRAME;

//! JT/T 808 (2011 / 2013 / 2019): framing, header, typed messages,
//! subpackage reassembly and encoders. Sans-IO: bytes and time in, values
//! and bytes out.
//!
//! Hot path: `Splitter::next` finds a frame in the connection buffer,
//! `decode_frame` unescapes it into a caller-owned scratch array and returns
//! borrowed views; nothing is allocated.
//!
//! ```
//! use bytes::BytesMut;
//! use liengate_protocols::jt808::{
//!     decode_frame, encode_message, DecodeOptions, GeneralResponse, Message, Split, Splitter,
//!     MAX_LOGICAL_FRAME,
//! };
//!
//! // A heartbeat followed by half of the next frame, as one read might deliver them.
//! let buf = [0x7e, 0x00, 0x02, 0x00, 0x00, 0x01, 0x23, 0x45, 0x67, 0x89, 0x00, 0x00, 0x0a,
//!            0x81, 0x7e, 0x7e, 0x02, 0x00];
//! let mut splitter = Splitter::default();
//! let mut scratch = [0u8; MAX_LOGICAL_FRAME];
//! let mut replies = BytesMut::new();
//! let mut rest = &buf[..];
//! loop {
//!     match splitter.next(rest) {
//!         Split::Frame { frame, consumed } => {
//!             match decode_frame(&rest[frame], &mut scratch, &DecodeOptions::default()) {
//!                 Ok((packet, message)) => {
//!                     assert_eq!(message, Message::Heartbeat);
//!                     // §8.2: answer with 0x8001, our own serial, the device's serial and id.
//!                     let reply = Message::PlatformResponse(GeneralResponse {
//!                         reply_serial: packet.header.serial,
//!                         reply_id: packet.header.message_id,
//!                         result: GeneralResponse::OK,
//!                     });
//!                     encode_message(&packet.header.reply(0x8001, 1), &reply, &mut replies);
//!                 }
//!                 Err(e) => panic!("rejected: {e}"), // a gateway counts e.kind.as_str()
//!             }
//!             rest = &rest[consumed..];
//!         }
//!         Split::Invalid { error, consumed } => {
//!             let _ = error; // count it, then resynchronise
//!             rest = &rest[consumed..];
//!         }
//!         Split::Incomplete { consumed } => {
//!             rest = &rest[consumed..];
//!             break; // keep `rest`, read more bytes
//!         }
//!     }
//! }
//! assert_eq!(rest, &[0x7e, 0x02, 0x00]);
//! assert_eq!(replies[0], 0x7e);
//! ```

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
pub use reassembly::{Expired, Reassembler, Reassembly, ReassemblyLimits, Timeouts};
pub use splitter::{Split, Splitter};
pub use time::BcdTime;

/// Largest body the 10-bit length field can express (§4.4.3.1).
pub const MAX_BODY_LEN: usize = 1023;

/// Largest unescaped frame: 2019 header (17) + package item (4) + body + check.
pub const MAX_LOGICAL_FRAME: usize = 17 + 4 + MAX_BODY_LEN + 1;

/// Largest on-wire frame: both delimiters plus every logical byte escaped.
pub const DEFAULT_MAX_FRAME: usize = 2 + 2 * MAX_LOGICAL_FRAME;

//! Sans-IO decoders and encoders for the tracker protocols liengate speaks.
//!
//! Bytes in, typed messages out; encoders write into a caller's buffer.
//! No I/O, no clock, no async runtime: time is always an argument.
//!
//! # Map of `jt808` (JT/T 808-2011/2013/2019)
//!
//! | module | what lives there |
//! |---|---|
//! | `splitter` | finds 0x7e-delimited frames in a connection buffer; size limit before buffering; resynchronises after garbage |
//! | `frame` | unescaping, XOR check code, `encode_frame` / `encode_subpackaged` |
//! | `header` | header layouts, `TerminalId`, `Version`, `Quirks` (device deviations accepted) |
//! | `packet` | `parse_packet` / `decode_frame` (unescape → check → header → body) and `encode_message` |
//! | `msg` | one module per message family; `Message` dispatches on the id |
//! | `reassembly` | bounded sub-package reassembly with missing-index reports for 0x8003 |
//! | `time`, `flags` | BCD time (UTC+8) ↔ Unix seconds, alarm and status bitflags |
//! | `json` (feature `serde`) | the JSON view used by `liengate decode` and the conformance test |
//!
//! Invariants: decoding never panics and never allocates on the location
//! path (split, parse, 0x0200/0x0704 bodies, extras); every rejection is an
//! `Error` with a `kind`, a byte offset and, when it could be read, the header.
#![forbid(unsafe_code)]

pub mod jt808;

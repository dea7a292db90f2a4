//! Sans-IO decoders and encoders for the tracker protocols liengate speaks.
//!
//! Bytes in, typed messages out; encoders write into a caller's buffer.
//! No I/O, no clock, no async runtime: time is always an argument.
#![forbid(unsafe_code)]

pub mod jt808;

//! Drives `parse_packet` + `Packet::message` (every body decoder) two ways:
//! the raw input as an on-wire frame, and the input wrapped by the encoder
//! into a valid frame (so the XOR check passes and the fuzzer reaches the
//! body decoders instead of stopping at the checksum).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liengate_protocols::jt808::{
    encode_frame, parse_packet, DecodeOptions, Header, TerminalId, Version, DEFAULT_MAX_FRAME,
    MAX_BODY_LEN, MAX_LOGICAL_FRAME,
};

fuzz_target!(|data: &[u8]| {
    let mut scratch = [0u8; MAX_LOGICAL_FRAME];
    for skip_checksum in [false, true] {
        let opts = DecodeOptions { skip_checksum, max_frame: DEFAULT_MAX_FRAME };
        if let Ok(packet) = parse_packet(data, &mut scratch, &opts) {
            let _ = format!("{:?}", packet.message());
        }
    }

    // Structured path: two bytes of message id, one byte of version, the rest is the body.
    if data.len() < 3 {
        return;
    }
    let id = u16::from_be_bytes([data[0], data[1]]);
    let version = match data[2] % 3 {
        0 => Version::V2011,
        1 => Version::V2013,
        _ => Version::V2019,
    };
    let body = &data[3..data.len().min(3 + MAX_BODY_LEN)];
    let digits = if version == Version::V2019 { "00000000013912345678" } else { "013912345678" };
    let terminal = TerminalId::parse(digits, version).expect("valid terminal id");
    let header = Header::new(id, terminal, 7, version);
    let mut out = BytesMut::new();
    encode_frame(&header, body, &mut out);
    let opts = DecodeOptions { skip_checksum: false, max_frame: DEFAULT_MAX_FRAME };
    let packet = parse_packet(&out, &mut scratch, &opts).expect("an encoded frame parses");
    assert_eq!(packet.header.message_id, id);
    assert_eq!(packet.body, body);
    let _ = format!("{:?}", packet.message());
});

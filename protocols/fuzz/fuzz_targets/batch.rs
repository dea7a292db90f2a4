//! Wraps arbitrary bytes as the body of a 0x0704 batch upload and walks every
//! item the batch iterator yields; items are decoded lazily, so this is the
//! only way to reach the per-item location decoder with hostile lengths.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use liengate_protocols::jt808::{
    decode_frame, encode_frame, DecodeOptions, Header, Message, TerminalId, Version,
    DEFAULT_MAX_FRAME, MAX_BODY_LEN, MAX_LOGICAL_FRAME,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else { return };
    let body = &body[..body.len().min(MAX_BODY_LEN)];
    let version = if flags & 1 == 1 { Version::V2019 } else { Version::V2013 };
    let digits = if version == Version::V2019 { "00000000013912345678" } else { "013912345678" };
    let terminal = TerminalId::parse(digits, version).expect("valid terminal id");
    let header = Header::new(0x0704, terminal, 1, version);
    let mut out = BytesMut::new();
    encode_frame(&header, body, &mut out);

    let mut scratch = [0u8; MAX_LOGICAL_FRAME];
    let opts = DecodeOptions { skip_checksum: false, max_frame: DEFAULT_MAX_FRAME };
    if let Ok((_, Message::Batch(batch))) = decode_frame(&out, &mut scratch, &opts) {
        let mut seen = 0usize;
        for item in batch.items() {
            seen += 1;
            // A batch can't hold more items than bytes; an iterator that never
            // ends would hang the gateway.
            assert!(seen <= body.len() + 1, "batch iterator does not terminate");
            if let Ok(location) = item {
                let _ = (location.latitude(), location.longitude(), location.time.to_unix());
                for extra in location.extras.iter() {
                    let _ = (extra.id, extra.value.len());
                }
            }
        }
    }
});

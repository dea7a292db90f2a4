//! Renders whatever the decoder accepts (checksum ignored, to get deep) or
//! rejects through the JSON view that `liengate decode` prints, and checks that
//! the result always serialises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liengate_protocols::jt808::{
    decode_frame, json, DecodeOptions, DEFAULT_MAX_FRAME, MAX_LOGICAL_FRAME,
};

fuzz_target!(|data: &[u8]| {
    let mut scratch = [0u8; MAX_LOGICAL_FRAME];
    let opts = DecodeOptions { skip_checksum: true, max_frame: DEFAULT_MAX_FRAME };
    let value = match decode_frame(data, &mut scratch, &opts) {
        Ok((packet, message)) => json::frame_json(&packet, &message),
        Err(error) => json::error_json(&error),
    };
    let text = serde_json::to_string(&value).expect("JSON view serialises");
    let _: serde_json::Value = serde_json::from_str(&text).expect("JSON view round-trips");
});

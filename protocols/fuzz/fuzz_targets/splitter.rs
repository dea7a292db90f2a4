//! Feeds arbitrary bytes to the streaming `Splitter` in arbitrary chunk sizes,
//! the way a TCP connection delivers them, and decodes every frame it yields.
//!
//! Besides "never panics", the target checks the splitter's contract: every
//! `consumed` count stays inside the buffer, every frame lies inside the
//! consumed span and is delimited by 0x7e, and the buffer a connection keeps
//! never grows past the frame limit plus one read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use liengate_protocols::jt808::{decode_frame, DecodeOptions, Split, Splitter, MAX_LOGICAL_FRAME};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The first byte picks the read size, the second a frame limit between a
    // tiny one (to exercise the oversize path) and a generous one.
    let chunk = usize::from(data[0] % 64) + 1;
    let max_frame = 16 + usize::from(data[1]) * 8;
    let stream = &data[2..];

    let mut splitter = Splitter::new(max_frame);
    let mut buf: Vec<u8> = Vec::new();
    let mut scratch = [0u8; MAX_LOGICAL_FRAME];
    let lenient = DecodeOptions { skip_checksum: true, max_frame };
    let strict = DecodeOptions { skip_checksum: false, max_frame };

    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let consumed = match splitter.next(&buf) {
                Split::Frame { frame, consumed } => {
                    assert!(consumed <= buf.len(), "frame consumed past the buffer");
                    assert!(frame.end <= consumed, "frame ends after the consumed span");
                    assert!(frame.len() >= 2, "a frame has two delimiters");
                    assert_eq!(buf[frame.start], 0x7e);
                    assert_eq!(buf[frame.end - 1], 0x7e);
                    let wire = &buf[frame];
                    let _ = decode_frame(wire, &mut scratch, &strict);
                    if let Ok((packet, message)) = decode_frame(wire, &mut scratch, &lenient) {
                        let _ = (packet.header, format!("{message:?}"));
                    }
                    consumed
                }
                Split::Incomplete { consumed } => {
                    assert!(consumed <= buf.len());
                    buf.drain(..consumed);
                    break;
                }
                Split::Invalid { error, consumed } => {
                    assert!(consumed <= buf.len());
                    assert!(consumed > 0, "an invalid span must be dropped to make progress");
                    let _ = error.kind.as_str();
                    consumed
                }
            };
            buf.drain(..consumed);
        }
        // Bounded buffering: what is kept waiting for more bytes is never more
        // than one frame limit plus the read that just arrived.
        assert!(
            buf.len() <= max_frame + chunk,
            "splitter kept {} bytes with a limit of {max_frame}",
            buf.len()
        );
    }
});

//! liengate's own split + decode, doing at least the work the `jt808` peer
//! does: find the frame, unescape, check the XOR, parse the header and body,
//! convert the device time to Unix seconds and walk every extra item.
#![allow(dead_code)]

use liengate_protocols::jt808::{
    decode_frame, DecodeOptions, Message, Split, Splitter, DEFAULT_MAX_FRAME, MAX_LOGICAL_FRAME,
};

/// Numbers taken out of a decoded 0x0200 so the optimiser has to produce them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fix {
    pub lat_raw: u32,
    pub lon_raw: u32,
    pub unix: i64,
    pub extras: usize,
}

/// A connection's decoding state: splitter, scratch buffer and options.
pub struct Ours {
    splitter: Splitter,
    scratch: Box<[u8; MAX_LOGICAL_FRAME]>,
    opts: DecodeOptions,
}

impl Default for Ours {
    fn default() -> Self {
        Self {
            splitter: Splitter::new(DEFAULT_MAX_FRAME),
            scratch: Box::new([0u8; MAX_LOGICAL_FRAME]),
            opts: DecodeOptions {
                skip_checksum: false,
                max_frame: DEFAULT_MAX_FRAME,
            },
        }
    }
}

fn fix_of(location: &liengate_protocols::jt808::Location<'_>) -> Fix {
    let extras = location
        .extras
        .iter()
        .map(|item| item.value.len() + 1)
        .sum();
    Fix {
        lat_raw: location.lat_raw,
        lon_raw: location.lon_raw,
        unix: location.time.to_unix().unwrap_or(i64::MIN),
        extras,
    }
}

impl Ours {
    /// Splits the first frame out of `buf` and decodes it as a 0x0200.
    /// Returns the fix and how many bytes the caller may drop.
    pub fn location(&mut self, buf: &[u8]) -> Option<(Fix, usize)> {
        let Split::Frame { frame, consumed } = self.splitter.next(buf) else {
            return None;
        };
        let (_, message) = decode_frame(&buf[frame], &mut self.scratch, &self.opts).ok()?;
        match message {
            Message::Location(location) => Some((fix_of(&location), consumed)),
            _ => None,
        }
    }

    /// Splits the first frame out of `buf`, decodes it as a 0x0704 and
    /// decodes every item in it. Returns the item count and bytes consumed.
    pub fn batch(&mut self, buf: &[u8]) -> Option<(usize, usize)> {
        let Split::Frame { frame, consumed } = self.splitter.next(buf) else {
            return None;
        };
        let (_, message) = decode_frame(&buf[frame], &mut self.scratch, &self.opts).ok()?;
        let Message::Batch(batch) = message else {
            return None;
        };
        let mut items = 0;
        for item in batch.items() {
            let fix = fix_of(&item.ok()?);
            std::hint::black_box(fix);
            items += 1;
        }
        Some((items, consumed))
    }
}

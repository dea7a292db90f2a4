//! Feeds the sub-package `Reassembler` an arbitrary sequence of sub-packages
//! (duplicates, gaps, conflicting totals, several terminals, time jumps) and
//! checks that it stays inside its limits and never panics.
#![no_main]

use bytes::BytesMut;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use liengate_protocols::jt808::{
    encode_frame, parse_packet, DecodeOptions, Header, Reassembler, Reassembly,
    ReassemblyLimits, SubPackage, TerminalId, Version, DEFAULT_MAX_FRAME, MAX_LOGICAL_FRAME,
};

#[derive(Arbitrary, Debug)]
enum Op {
    Push { terminal: u8, message_id: u16, serial: u16, total: u16, index: u16, body_len: u8, fill: u8 },
    Advance { secs: u16 },
    Expire,
}

const LIMITS: ReassemblyLimits = ReassemblyLimits {
    max_messages: 4,
    max_packages: 16,
    max_bytes: 4096,
    timeout_secs: 30,
};

fuzz_target!(|ops: Vec<Op>| {
    let mut reassembler = Reassembler::new(LIMITS);
    let mut now = 0u64;
    let mut scratch = [0u8; MAX_LOGICAL_FRAME];
    let opts = DecodeOptions { skip_checksum: false, max_frame: DEFAULT_MAX_FRAME };
    let mut out = BytesMut::new();
    for op in ops {
        match op {
            Op::Push { terminal, message_id, serial, total, index, body_len, fill } => {
                let digits = format!("0139123456{:02}", terminal % 4);
                let terminal = TerminalId::parse(&digits, Version::V2013).expect("valid terminal id");
                let mut header = Header::new(message_id, terminal, serial, Version::V2013);
                header.subpackage = Some(SubPackage { total: total % 24, index: index % 26 });
                let body = vec![fill; usize::from(body_len)];
                out.clear();
                encode_frame(&header, &body, &mut out);
                let Ok(packet) = parse_packet(&out, &mut scratch, &opts) else { continue };
                match reassembler.push(&packet, now) {
                    Reassembly::Complete(whole) => {
                        assert!(whole.len() <= LIMITS.max_bytes, "reassembled past max_bytes");
                    }
                    Reassembly::Pending { missing } => {
                        assert!(missing.len() <= usize::from(u16::MAX));
                    }
                    Reassembly::Rejected(error) => {
                        let _ = error.kind.as_str();
                    }
                }
            }
            Op::Advance { secs } => now += u64::from(secs),
            Op::Expire => {
                let _ = reassembler.expire(now);
            }
        }
    }
    let _ = reassembler.expire(now + 1_000_000);
});

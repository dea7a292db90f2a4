//! Sans-IO reassembly of subpackaged messages (JT/T 808-2013 §4.4.3 table 3,
//! §7.12: consecutive serials, 1-based index; missing packages are asked
//! for again with 0x8003, §8.4).
//!
//! Memory is bounded by `max_messages` pending messages, `max_packages`
//! per message and `max_bytes` of stored bodies; when a bound is hit the
//! new package is rejected (the caller counts it) and what is pending stays
//! until it completes or times out. Time is an argument (`now_secs`).

use std::collections::HashMap;

use super::error::{Error, ErrorKind};
use super::header::{Header, TerminalId, Version};
use super::packet::Packet;

/// Bounds of a `Reassembler`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Messages pending at once.
    pub max_messages: usize,
    /// Largest accepted `total` packages per message.
    pub max_packages: u16,
    /// Body bytes stored across all pending messages.
    pub max_bytes: usize,
    /// A pending message with no new package for this long expires.
    pub timeout_secs: u64,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits {
            max_messages: 16,
            max_packages: 1024,
            max_bytes: 4 << 20,
            timeout_secs: 120,
        }
    }
}

/// Result of pushing one package.
#[derive(Debug, Clone, PartialEq)]
pub enum Reassembly {
    /// All packages are in: the whole body, in index order.
    Complete(Vec<u8>),
    /// Still waiting for these indices.
    Pending { missing: Vec<u16> },
    /// The package was not stored.
    Rejected(Error),
}

/// A pending message that timed out (see [`Reassembler::expire`] and
/// [`Reassembler::timeouts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub terminal: TerminalId,
    pub first_serial: u16,
    pub message_id: u16,
    pub version: Version,
    pub missing: Vec<u16>,
    /// The header of the last package received, to address a 0x8003 to.
    pub header: Header,
}

/// What [`Reassembler::timeouts`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Timed out for the first time: ask the terminal for the missing packages (0x8003); they
    /// get one more timeout to arrive.
    pub resend: Vec<Expired>,
    /// Timed out again after a resend request: dropped.
    pub dropped: Vec<Expired>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    terminal: TerminalId,
    message_id: u16,
    first_serial: u16,
}

#[derive(Debug)]
struct Pending {
    version: Version,
    parts: Vec<Option<Vec<u8>>>,
    bytes: usize,
    updated: u64,
    header: Header,
    /// A resend request went out when it timed out once.
    asked: bool,
}

impl Pending {
    fn expired(&self, k: &Key) -> Expired {
        Expired {
            terminal: k.terminal,
            first_serial: k.first_serial,
            message_id: k.message_id,
            version: self.version,
            missing: self.missing(),
            header: self.header,
        }
    }

    fn missing(&self) -> Vec<u16> {
        self.parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_none())
            .map(|(i, _)| i as u16 + 1)
            .collect()
    }
}

/// Reassembles subpackaged messages of any number of terminals.
#[derive(Debug)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    pending: HashMap<Key, Pending>,
    bytes: usize,
}

impl Reassembler {
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            pending: HashMap::new(),
            bytes: 0,
        }
    }

    /// Messages currently pending.
    pub fn pending_messages(&self) -> usize {
        self.pending.len()
    }

    /// Body bytes currently stored.
    pub fn pending_bytes(&self) -> usize {
        self.bytes
    }

    /// Add one package. Duplicates (devices resend when an answer is lost)
    /// are ignored.
    pub fn push(&mut self, packet: &Packet<'_>, now_secs: u64) -> Reassembly {
        let h = &packet.header;
        let reject =
            |kind, detail| Reassembly::Rejected(Error::new(kind, 0, detail).with_header(*h));
        let Some(sp) = h.subpackage else {
            return reject(ErrorKind::Header, "packet is not subpackaged");
        };
        if sp.total == 0 || sp.index == 0 || sp.index > sp.total {
            return reject(ErrorKind::Header, "package index outside 1..=total");
        }
        if sp.total > self.limits.max_packages {
            return reject(
                ErrorKind::Oversized,
                "more packages than the reassembly limit",
            );
        }
        let key = Key {
            terminal: h.terminal,
            message_id: h.message_id,
            first_serial: h.serial.wrapping_sub(sp.index - 1),
        };
        if !self.pending.contains_key(&key) && self.pending.len() >= self.limits.max_messages {
            return reject(ErrorKind::Oversized, "too many messages pending reassembly");
        }
        if self.bytes + packet.body.len() > self.limits.max_bytes {
            return reject(ErrorKind::Oversized, "reassembly byte limit reached");
        }
        let entry = self.pending.entry(key).or_insert_with(|| Pending {
            version: h.version,
            parts: vec![None; sp.total as usize],
            bytes: 0,
            updated: now_secs,
            header: *h,
            asked: false,
        });
        if entry.parts.len() != sp.total as usize {
            return reject(
                ErrorKind::Header,
                "package total differs from earlier packages",
            );
        }
        entry.updated = now_secs;
        entry.header = *h;
        let slot = &mut entry.parts[sp.index as usize - 1];
        if slot.is_none() {
            *slot = Some(packet.body.to_vec());
            entry.bytes += packet.body.len();
            self.bytes += packet.body.len();
        }
        if entry.parts.iter().all(Option::is_some) {
            let done = self.pending.remove(&key).expect("entry exists");
            self.bytes -= done.bytes;
            let mut body = Vec::with_capacity(done.bytes);
            for p in done.parts.into_iter().flatten() {
                body.extend_from_slice(&p);
            }
            Reassembly::Complete(body)
        } else {
            Reassembly::Pending {
                missing: entry.missing(),
            }
        }
    }

    /// When the next pending message times out (seconds, the clock of `push`).
    pub fn next_timeout(&self) -> Option<u64> {
        self.pending
            .values()
            .map(|p| p.updated.saturating_add(self.limits.timeout_secs))
            .min()
    }

    /// Messages that saw no package for `timeout_secs`. The first time, a message is reported
    /// in `resend` and gets one more timeout: a terminal whose last packages were lost never
    /// learns that they were (the 0x8003 sent when the last package arrives with gaps cannot
    /// happen), so the platform asks for everything missing (JT/T 808-2013 §8.4). The second
    /// time it is dropped and reported in `dropped`.
    pub fn timeouts(&mut self, now_secs: u64) -> Timeouts {
        let mut out = Timeouts::default();
        for k in self.timed_out(now_secs) {
            let Some(p) = self.pending.get_mut(&k) else {
                continue;
            };
            let expired = p.expired(&k);
            if p.asked {
                let p = self.pending.remove(&k).expect("looked up above");
                self.bytes -= p.bytes;
                out.dropped.push(expired);
            } else {
                p.asked = true;
                p.updated = now_secs;
                out.resend.push(expired);
            }
        }
        out.resend.sort_by_key(|e| (e.first_serial, e.message_id));
        out.dropped.sort_by_key(|e| (e.first_serial, e.message_id));
        out
    }

    /// Keys of the messages that saw no package for `timeout_secs`.
    fn timed_out(&self, now_secs: u64) -> Vec<Key> {
        let timeout = self.limits.timeout_secs;
        self.pending
            .iter()
            .filter(|(_, p)| now_secs.saturating_sub(p.updated) >= timeout)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Drop messages that saw no package for `timeout_secs`, reporting what
    /// was missing (for 0x8003 or for counting).
    pub fn expire(&mut self, now_secs: u64) -> Vec<Expired> {
        let mut out = Vec::new();
        for k in self.timed_out(now_secs) {
            if let Some(p) = self.pending.remove(&k) {
                self.bytes -= p.bytes;
                out.push(p.expired(&k));
            }
        }
        out.sort_by_key(|e| (e.first_serial, e.message_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jt808::header::{Quirks, SubPackage};

    fn header(serial: u16, total: u16, index: u16) -> Header {
        let t = TerminalId::parse("13812345678", Version::V2013).unwrap();
        let mut h = Header::new(0x0801, t, serial, Version::V2013);
        h.subpackage = Some(SubPackage { total, index });
        h
    }

    fn push(
        r: &mut Reassembler,
        serial: u16,
        total: u16,
        index: u16,
        body: &[u8],
        now: u64,
    ) -> Reassembly {
        let p = Packet {
            header: header(serial, total, index),
            body,
            quirks: Quirks::empty(),
        };
        r.push(&p, now)
    }

    #[test]
    fn completes_in_any_order_and_ignores_duplicates() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        // First serial 100: package i has serial 99 + i (§7.12 consecutive serials).
        assert_eq!(
            push(&mut r, 102, 3, 3, b"cc", 0),
            Reassembly::Pending {
                missing: vec![1, 2]
            }
        );
        assert_eq!(
            push(&mut r, 100, 3, 1, b"aa", 1),
            Reassembly::Pending { missing: vec![2] }
        );
        assert_eq!(
            push(&mut r, 100, 3, 1, b"aa", 2),
            Reassembly::Pending { missing: vec![2] }
        );
        assert_eq!(r.pending_bytes(), 4);
        assert_eq!(
            push(&mut r, 101, 3, 2, b"bb", 3),
            Reassembly::Complete(b"aabbcc".to_vec())
        );
        assert_eq!(r.pending_messages(), 0);
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn serial_wrap_keeps_one_message() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        assert!(matches!(
            push(&mut r, 0xffff, 2, 1, b"a", 0),
            Reassembly::Pending { .. }
        ));
        assert_eq!(
            push(&mut r, 0x0000, 2, 2, b"b", 0),
            Reassembly::Complete(b"ab".to_vec())
        );
    }

    #[test]
    fn expiry_reports_missing_indices() {
        let mut r = Reassembler::new(ReassemblyLimits {
            timeout_secs: 30,
            ..ReassemblyLimits::default()
        });
        push(&mut r, 10, 4, 1, b"a", 100);
        push(&mut r, 12, 4, 3, b"c", 110);
        assert!(r.expire(139).is_empty());
        let e = r.expire(140);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].first_serial, 10);
        assert_eq!(e[0].message_id, 0x0801);
        assert_eq!(e[0].missing, vec![2, 4]);
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn a_timeout_asks_once_for_the_missing_packages_then_drops() {
        let mut r = Reassembler::new(ReassemblyLimits {
            timeout_secs: 30,
            ..ReassemblyLimits::default()
        });
        // Packages 1 and 2 of 3 arrive; the last one is lost.
        push(&mut r, 10, 3, 1, b"a", 100);
        push(&mut r, 11, 3, 2, b"b", 105);
        assert_eq!(r.next_timeout(), Some(135));
        assert_eq!(r.timeouts(134), Timeouts::default());
        let t = r.timeouts(135);
        assert!(t.dropped.is_empty());
        assert_eq!(t.resend.len(), 1);
        assert_eq!(t.resend[0].first_serial, 10);
        assert_eq!(t.resend[0].missing, vec![3]);
        assert_eq!(
            t.resend[0].header.serial, 11,
            "addressed like the last package"
        );
        // One more timeout to answer the request.
        assert_eq!(r.next_timeout(), Some(165));
        assert_eq!(r.timeouts(164), Timeouts::default());
        let t = r.timeouts(165);
        assert!(t.resend.is_empty());
        assert_eq!(t.dropped.len(), 1);
        assert_eq!(r.pending_messages(), 0);
        assert_eq!(r.pending_bytes(), 0);
        assert_eq!(r.next_timeout(), None);
        // A resent package that completes the message in time is reassembled as usual.
        push(&mut r, 20, 2, 1, b"x", 200);
        assert_eq!(r.timeouts(230).resend.len(), 1);
        assert_eq!(
            push(&mut r, 21, 2, 2, b"y", 240),
            Reassembly::Complete(b"xy".to_vec())
        );
    }

    #[test]
    fn limits_reject_instead_of_growing() {
        let mut r = Reassembler::new(ReassemblyLimits {
            max_messages: 1,
            max_packages: 8,
            max_bytes: 10,
            timeout_secs: 60,
        });
        let kind = |x: Reassembly| match x {
            Reassembly::Rejected(e) => e.kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(kind(push(&mut r, 1, 9, 1, b"x", 0)), ErrorKind::Oversized);
        assert_eq!(kind(push(&mut r, 1, 2, 3, b"x", 0)), ErrorKind::Header);
        assert_eq!(kind(push(&mut r, 1, 2, 0, b"x", 0)), ErrorKind::Header);
        assert!(matches!(
            push(&mut r, 1, 2, 1, b"x", 0),
            Reassembly::Pending { .. }
        ));
        // A second message does not fit.
        assert_eq!(kind(push(&mut r, 50, 2, 1, b"y", 0)), ErrorKind::Oversized);
        // Nor do more bytes than the budget.
        assert_eq!(
            kind(push(&mut r, 2, 2, 2, &[0; 10], 0)),
            ErrorKind::Oversized
        );
        // A packet that is not subpackaged is refused.
        let mut h = header(5, 1, 1);
        h.subpackage = None;
        let p = Packet {
            header: h,
            body: b"",
            quirks: Quirks::empty(),
        };
        assert_eq!(kind(r.push(&p, 0)), ErrorKind::Header);
    }
}

#[cfg(test)]
mod wire_tests {
    use bytes::BytesMut;

    use super::*;
    use crate::jt808::frame::encode_subpackaged;
    use crate::jt808::header::Header;
    use crate::jt808::msg::Message;
    use crate::jt808::packet::{parse_packet, DecodeOptions};
    use crate::jt808::splitter::{Split, Splitter};
    use crate::jt808::MAX_LOGICAL_FRAME;

    #[test]
    fn subpackaged_upload_reassembles_from_the_wire() {
        let t = TerminalId::parse("13812345678", Version::V2013).unwrap();
        let h = Header::new(0x0801, t, 500, Version::V2013);
        let body: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let mut out = BytesMut::new();
        assert_eq!(encode_subpackaged(&h, &body, &mut out), 3);
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let mut s = Splitter::default();
        let mut scratch = [0u8; MAX_LOGICAL_FRAME];
        let mut buf = &out[..];
        let mut done = None;
        while let Split::Frame { frame, consumed } = s.next(buf) {
            let p = parse_packet(&buf[frame], &mut scratch, &DecodeOptions::default()).unwrap();
            assert!(matches!(p.message().unwrap(), Message::Fragment { .. }));
            if let Reassembly::Complete(b) = r.push(&p, 0) {
                done = Some(b);
            }
            buf = &buf[consumed..];
        }
        assert_eq!(done.unwrap(), body);
    }
}

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
use super::header::{TerminalId, Version};
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

/// A pending message dropped by `expire`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub terminal: TerminalId,
    pub first_serial: u16,
    pub message_id: u16,
    pub version: Version,
    pub missing: Vec<u16>,
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
}

impl Pending {
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
        });
        if entry.parts.len() != sp.total as usize {
            return reject(
                ErrorKind::Header,
                "package total differs from earlier packages",
            );
        }
        entry.updated = now_secs;
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

    /// Drop messages that saw no package for `timeout_secs`, reporting what
    /// was missing (for 0x8003 or for counting).
    pub fn expire(&mut self, now_secs: u64) -> Vec<Expired> {
        let timeout = self.limits.timeout_secs;
        let mut out = Vec::new();
        let keys: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| now_secs.saturating_sub(p.updated) >= timeout)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            if let Some(p) = self.pending.remove(&k) {
                self.bytes -= p.bytes;
                out.push(Expired {
                    terminal: k.terminal,
                    first_serial: k.first_serial,
                    message_id: k.message_id,
                    version: p.version,
                    missing: p.missing(),
                });
            }
        }
        out.sort_by_key(|e| (e.first_serial, e.message_id));
        out
    }
}

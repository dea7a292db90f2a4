//! Authentication failure tracking: after `max_failures` wrong codes in a row a terminal is
//! locked out for `lockout`, across reconnects, so that guessing auth codes is slow. The caller
//! chooses the key; the gateway uses terminal and source address together.
//!
//! Time is an argument (monotonic `Instant`) so the logic is testable without sleeping. The map is
//! bounded: when full, expired entries are dropped first, then the oldest.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
    last: Instant,
}

/// Outcome of recording a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Still below the limit; the device may try again on this connection.
    Retry { failures: u32 },
    /// The limit is reached: close the connection; the terminal is locked out.
    LockedOut,
}

pub struct AuthLimiter {
    max_failures: u32,
    lockout: Duration,
    capacity: usize,
    entries: Mutex<HashMap<String, Entry>>,
}

impl AuthLimiter {
    pub fn new(cfg: &AuthConfig) -> Self {
        AuthLimiter {
            max_failures: cfg.max_failures,
            lockout: cfg.lockout,
            capacity: cfg.max_tracked_terminals,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// True while the terminal is locked out.
    pub fn is_locked(&self, terminal_id: &str, now: Instant) -> bool {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(terminal_id)
            .and_then(|e| e.locked_until)
            .is_some_and(|until| now < until)
    }

    pub fn record_failure(&self, terminal_id: &str, now: Instant) -> Failure {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(terminal_id) && map.len() >= self.capacity {
            Self::evict(&mut map, now, self.capacity);
        }
        let entry = map.entry(terminal_id.to_string()).or_insert(Entry {
            failures: 0,
            locked_until: None,
            last: now,
        });
        if entry.locked_until.is_some_and(|until| now >= until) {
            // The lockout ran out: start counting afresh.
            entry.failures = 0;
            entry.locked_until = None;
        }
        entry.failures += 1;
        entry.last = now;
        if entry.failures >= self.max_failures {
            entry.locked_until = Some(now + self.lockout);
            Failure::LockedOut
        } else {
            Failure::Retry {
                failures: entry.failures,
            }
        }
    }

    pub fn record_success(&self, terminal_id: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(terminal_id);
    }

    fn evict(map: &mut HashMap<String, Entry>, now: Instant, capacity: usize) {
        map.retain(|_, e| e.locked_until.is_some_and(|until| now < until));
        if map.len() >= capacity {
            // Still full of live lockouts: forget the one touched longest ago.
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(capacity: usize) -> AuthLimiter {
        AuthLimiter::new(&AuthConfig {
            max_failures: 3,
            lockout: Duration::from_secs(60),
            max_tracked_terminals: capacity,
        })
    }

    #[test]
    fn locks_out_after_the_limit_and_unlocks_later() {
        let l = limiter(10);
        let t0 = Instant::now();
        assert_eq!(l.record_failure("a", t0), Failure::Retry { failures: 1 });
        assert_eq!(l.record_failure("a", t0), Failure::Retry { failures: 2 });
        assert_eq!(l.record_failure("a", t0), Failure::LockedOut);
        assert!(l.is_locked("a", t0 + Duration::from_secs(59)));
        assert!(!l.is_locked("a", t0 + Duration::from_secs(60)));
        assert!(!l.is_locked("b", t0));
        assert_eq!(
            l.record_failure("a", t0 + Duration::from_secs(61)),
            Failure::Retry { failures: 1 }
        );
    }

    #[test]
    fn success_resets_and_the_map_stays_bounded() {
        let l = limiter(2);
        let t0 = Instant::now();
        l.record_failure("a", t0);
        l.record_success("a");
        assert_eq!(l.record_failure("a", t0), Failure::Retry { failures: 1 });
        l.record_failure("b", t0);
        l.record_failure("c", t0);
        assert!(l.entries.lock().unwrap().len() <= 2);
    }
}

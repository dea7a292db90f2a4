//! Admission of terminals the store does not know yet (self-registration under the `accept` and
//! `allowlist` unknown-device policies).
//!
//! Every self-registered terminal becomes a device record, an auth code and, once it connects,
//! per-terminal entries in memory (its session, its liveness clocks). Left unbounded, anyone who
//! can reach the port could grow all of them by inventing terminal ids. Two limits bound that:
//! a token bucket (`jt808.new_device_rate` per second, bursts of `jt808.new_device_burst`) slows
//! a flood down, and `jt808.max_unassigned_devices` caps how many unassigned devices exist at all.
//!
//! Time is an argument (a monotonic `Instant`) so that the logic is tested without sleeping.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Jt808Config;
use crate::metrics as m;

/// What to do with the registration of an unknown terminal.
#[derive(Debug)]
pub enum Admission<'a> {
    /// Register it. The slot under the cap is held by the [`Reservation`] until it is kept.
    Admit(Reservation<'a>),
    /// Too many new terminals right now: the device should come back later.
    RateLimited,
    /// `jt808.max_unassigned_devices` unassigned devices exist already.
    Full,
}

/// A slot under `jt808.max_unassigned_devices`, given back on drop unless [`Reservation::keep`]
/// is called once the device record is stored, so that a failed store commit does not leak it.
#[derive(Debug)]
pub struct Reservation<'a> {
    count: &'a AtomicUsize,
    kept: bool,
}

impl Reservation<'_> {
    /// The device record is stored: the slot stays taken.
    pub fn keep(mut self) {
        self.kept = true;
        metrics::gauge!(m::UNASSIGNED_DEVICES).set(self.count.load(Ordering::Relaxed) as f64);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Tokens for new terminals, refilled continuously at `rate` per second up to `burst`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct Enrollment {
    rate: f64,
    burst: f64,
    max_unassigned: usize,
    bucket: Mutex<Bucket>,
    /// Unassigned devices in the store (counted at start, then one per admitted registration).
    /// Two connections that register the same new terminal at the same moment both count it, so
    /// the count can run ahead of the store by such races until the next start: the cap errs on
    /// the safe side.
    unassigned: AtomicUsize,
    /// Refusals are logged at most once per second: a flood must not become a log flood.
    log: LogGate,
}

impl Enrollment {
    pub fn new(cfg: &Jt808Config, now: Instant) -> Self {
        let burst = f64::from(cfg.new_device_burst);
        Enrollment {
            rate: cfg.new_device_rate,
            burst,
            max_unassigned: cfg.max_unassigned_devices,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                last: now,
            }),
            unassigned: AtomicUsize::new(0),
            log: LogGate::new(now, Duration::from_secs(1)),
        }
    }

    /// Sets the number of unassigned devices already in the store (at start, before any
    /// connection is accepted).
    pub fn set_unassigned(&self, n: usize) {
        self.unassigned.store(n, Ordering::Relaxed);
        metrics::gauge!(m::UNASSIGNED_DEVICES).set(n as f64);
    }

    pub fn unassigned(&self) -> usize {
        self.unassigned.load(Ordering::Relaxed)
    }

    /// Decides on one registration of an unknown terminal. The cap is checked first: a full
    /// gateway refuses for good, and such a refusal must not use up the tokens of the terminals
    /// that could still be admitted.
    pub fn admit(&self, now: Instant) -> Admission<'_> {
        let reserved = self
            .unassigned
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_unassigned).then_some(n + 1)
            });
        if reserved.is_err() {
            return Admission::Full;
        }
        let reservation = Reservation {
            count: &self.unassigned,
            kept: false,
        };
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = bucket.last.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Admission::Admit(reservation)
        } else {
            // Dropping the reservation gives the slot under the cap back.
            Admission::RateLimited
        }
    }

    /// Whether a refusal at `now` should be logged; returns how many refusals went unlogged
    /// since the last logged one.
    pub fn should_log(&self, now: Instant) -> Option<u64> {
        self.log.pass(now)
    }
}

/// Lets one event through per `interval` and counts the ones it holds back.
struct LogGate {
    base: Instant,
    interval_ms: u64,
    /// Milliseconds after `base` when the next event may pass (0 = now).
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogGate {
    fn new(base: Instant, interval: Duration) -> Self {
        LogGate {
            base,
            interval_ms: interval.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    fn pass(&self, now: Instant) -> Option<u64> {
        let now_ms = now.saturating_duration_since(self.base).as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms + self.interval_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enrollment(rate: f64, burst: u32, max: usize, now: Instant) -> Enrollment {
        let cfg = Jt808Config {
            new_device_rate: rate,
            new_device_burst: burst,
            max_unassigned_devices: max,
            ..Jt808Config::default()
        };
        Enrollment::new(&cfg, now)
    }

    fn admitted(a: Admission<'_>) -> bool {
        match a {
            Admission::Admit(r) => {
                r.keep();
                true
            }
            _ => false,
        }
    }

    #[test]
    fn a_burst_is_admitted_then_the_rate_refills_the_bucket() {
        let t0 = Instant::now();
        let e = enrollment(10.0, 5, 1000, t0);
        for _ in 0..5 {
            assert!(admitted(e.admit(t0)));
        }
        assert!(matches!(e.admit(t0), Admission::RateLimited));
        // A refused registration does not take a slot under the cap.
        assert_eq!(e.unassigned(), 5);
        // 10 per second: one token every 100 ms, never more than the burst.
        assert!(matches!(
            e.admit(t0 + Duration::from_millis(50)),
            Admission::RateLimited
        ));
        assert!(admitted(e.admit(t0 + Duration::from_millis(150))));
        let later = t0 + Duration::from_secs(60);
        let n = (0..100).filter(|_| admitted(e.admit(later))).count();
        assert_eq!(n, 5);
    }

    #[test]
    fn the_defaults_admit_a_fleet_of_10000_registering_at_once() {
        // The end-to-end benchmark self-registers 10,000 simulated terminals within a second
        // against a fresh gateway, and its terminals do not retry a refused first login.
        let t0 = Instant::now();
        let e = Enrollment::new(&Jt808Config::default(), t0);
        let n = (0..10_000).filter(|_| admitted(e.admit(t0))).count();
        assert_eq!(n, 10_000);
        assert!(matches!(e.admit(t0), Admission::RateLimited));
    }

    #[test]
    fn the_cap_refuses_for_good_and_a_dropped_reservation_frees_its_slot() {
        let t0 = Instant::now();
        let e = enrollment(1000.0, 1000, 3, t0);
        e.set_unassigned(1);
        assert!(admitted(e.admit(t0)));
        let pending = e.admit(t0);
        assert!(matches!(pending, Admission::Admit(_)));
        assert!(matches!(e.admit(t0), Admission::Full));
        // The store commit of the pending one failed: its slot is free again.
        drop(pending);
        assert_eq!(e.unassigned(), 2);
        assert!(admitted(e.admit(t0)));
        assert!(matches!(
            e.admit(t0 + Duration::from_secs(3600)),
            Admission::Full
        ));
    }

    #[test]
    fn refusals_are_logged_once_per_second_with_the_count_held_back() {
        let t0 = Instant::now();
        let e = enrollment(1.0, 1, 10, t0);
        assert_eq!(e.should_log(t0), Some(0));
        assert_eq!(e.should_log(t0 + Duration::from_millis(10)), None);
        assert_eq!(e.should_log(t0 + Duration::from_millis(999)), None);
        assert_eq!(e.should_log(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(e.should_log(t0 + Duration::from_millis(1500)), None);
    }
}

//! How much CPU time the machine leaves idle: the signal the shards' admission sizes its slot
//! sets by (see [`Admission::resize`]).
//!
//! Read from the first line of `/proc/stat`, the kernel's CPU time counters for the whole
//! machine. Parsed by hand: it is one line of numbers, and a crate such as `procfs` would bring
//! in far more than it; where the file does not exist (not Linux) the slot sets keep their
//! configured size.
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::admission::Admission;
use crate::metrics as m;

/// How often the slot sets are resized. Long enough for a resized set to show its effect (its
/// devices' frames go round in a few milliseconds), short enough to settle within a second or two.
pub const WINDOW: Duration = Duration::from_millis(100);

/// Cumulative CPU time of the machine, in the kernel's ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    idle: u64,
    total: u64,
}

impl CpuTimes {
    /// Parses the `cpu` line of `/proc/stat`: user, nice, system, idle, iowait, irq, softirq,
    /// steal (guest time is already counted in user). Idle includes iowait: a CPU waiting for
    /// the disk has nothing to run either.
    fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().next()?;
        let mut fields = line.split_ascii_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let v: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        if v.len() < 5 {
            return None;
        }
        Some(CpuTimes {
            idle: v[3] + v[4],
            total: v.iter().sum(),
        })
    }

    fn read() -> Option<CpuTimes> {
        CpuTimes::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The share of the time between `earlier` and `self` that the machine was idle.
    fn idle_since(self, earlier: CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        let idle = self.idle.checked_sub(earlier.idle)?;
        (total > 0).then(|| idle as f64 / total as f64)
    }
}

/// Reads the machine's idle share once per [`WINDOW`] and publishes it to every shard's
/// [`balance`], until shutdown. One reader for all shards: they all want the same figure. Where
/// `/proc/stat` cannot be read at start, it says so and ends, and the slot sets keep their
/// configured size.
pub async fn sample(idle: watch::Sender<f64>, shutdown: CancellationToken) {
    let Some(mut last) = CpuTimes::read() else {
        tracing::info!("no /proc/stat: admission keeps pipeline.admission_limit slots and pipeline.admission_streak reads per streak");
        return;
    };
    let mut warned = false;
    let mut tick = tokio::time::interval(WINDOW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(now) = CpuTimes::read() else {
            // Skipped, not stopped: a transient read failure must not freeze the slot sets.
            if !warned {
                tracing::warn!("cannot read /proc/stat: admission slots and streaks not resized");
                warned = true;
            }
            continue;
        };
        if let Some(share) = now.idle_since(last) {
            idle.send_replace(share);
        }
        last = now;
    }
}

/// Resizes shard `shard`'s admission slot set with every idle share [`sample`] publishes, until
/// it stops. Runs on the shard's own thread (`Pipeline::spawn_on`), like everything else that
/// changes the admission's state, and only with admission on.
///
/// The signal is the whole machine's: where the gateway is one of several busy processes, or
/// runs in a container whose CPU quota is below the machine's cores, idle time it cannot use
/// lets the slot set grow to its cap (eight times `admission_limit`), as if admission were
/// sized by hand that large.
pub async fn balance(shard: usize, admission: Arc<Admission>, mut idle: watch::Receiver<f64>) {
    let slots = metrics::gauge!(m::ADMISSION_SLOTS, "shard" => shard.to_string());
    let streak = metrics::gauge!(m::ADMISSION_STREAK, "shard" => shard.to_string());
    slots.set(admission.active_slots() as f64);
    streak.set(admission.streak_now() as f64);
    while idle.changed().await.is_ok() {
        let share = *idle.borrow_and_update();
        admission.resize(share);
        slots.set(admission.active_slots() as f64);
        streak.set(admission.streak_now() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_share_comes_from_the_cpu_line() {
        let a = CpuTimes::parse("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                idle: 850,
                total: 1000
            }
        );
        let b = CpuTimes::parse("cpu  190 0 90 850 60 5 5 0 0 0\n").unwrap();
        // 200 ticks went by, 60 of them idle or waiting for the disk.
        assert_eq!(b.idle_since(a), Some(0.3));
        assert_eq!(a.idle_since(a), None);
        assert_eq!(a.idle_since(b), None, "counters never go back");
        assert_eq!(CpuTimes::parse("intr 1 2 3\n"), None);
        assert_eq!(CpuTimes::parse("cpu 1 x 3 4 5\n"), None);
        assert_eq!(CpuTimes::parse("cpu 1 2 3\n"), None);
    }
}

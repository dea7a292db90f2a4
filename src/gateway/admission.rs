//! Which of a shard's connections read next when the shard falls behind: devices in a streak
//! first, a bounded number of them for a bounded number of frames each, then the others in turn.
//!
//! A shard serves its connections in the order their sockets become readable. While it keeps
//! up, that order does not matter: every frame is read at once. When it does not (a fleet
//! reconnecting and uploading its blind-area backlog, or a closed-loop benchmark), serving every
//! waiting device in turn means that each frame finds its connection, its socket and its
//! vehicle's state cold in the cache, and a frame costs the shard about half as much again as
//! when the devices it serves are few (benches/RESULTS.md, session 9). A server that answers a
//! device and then serves that device's next frame soon after, for a while, keeps a small
//! working set hot: tokio's own scheduler does this with its LIFO slot, and it is what lets the
//! benchmark's ceiling server stay fast at 10,000 connections.
//!
//! So a shard has `limit` streak slots. A connection that reads takes a slot if it can and
//! keeps it for up to `streak` reads (fewer while a queue too long for streaks that long waits;
//! see [`Admission::resize`]); a slot whose holder has no frame awaiting its outcome and
//! has been quiet for [`HOT_WINDOW`] is free for the taking (a clock hand finds such slots, as
//! in page replacement). The shard is *behind* from the moment four times `limit` of its
//! position frames await their commit outcome until no more than twice `limit` do (with the
//! default 256, a full shard batch of 1,024). While it is behind, a
//! connection without a slot reads only if it gets one and nobody is waiting; otherwise it
//! takes a ticket and waits, in ticket order, for a turn, which comes with a slot, or for at
//! most [`MAX_WAIT`], which bounds what the policy can cost a device. A shard that keeps up
//! makes nobody wait; once a queue has formed, it lasts while more devices are active than
//! there are slots, rotating them through the slots a streak at a time, and ends when a
//! device finds a free slot and nobody waiting.
//!
//! Hand-written because it is a scheduling policy over our own counters, not a primitive that a
//! crate offers: tokio's semaphore hands out permits in FIFO order, and its permits cannot tell
//! a shard that keeps up from one that does not, nor expire.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// A slot whose holder has had nothing in flight for this long is free: the device is not in a
/// burst, so there is nothing to keep in the cache for it. Above the time a device in a burst
/// takes to send its next frame once answered, well below any device's report interval.
pub const HOT_WINDOW: Duration = Duration::from_millis(20);

/// The longest a connection waits for its turn before it reads anyway. Devices resend after
/// their answer timeout (JT/T 808: 10 s and more by default); this stays well below it, and it
/// also makes a lost turn (a waiting connection that went away) cost a delay, never a stall.
/// Twice what it was before session 15: every streak costs a cold start on both sides of the
/// connection, and the bound sets how long streaks can be (a device's reads per turn are its
/// share of the shard's rate times the time the queue takes to go round). At 10,000 terminals
/// in a closed loop, 4 s instead of 2 s took the gateway from 0.61-0.71x of the ceiling to
/// 0.71-0.88x, with the p99 answer time where it was at 2 s before streaks were fitted (1.4 s),
/// the p90 anywhere from 0.01 to 0.9 s and the longest wait 1.6 s (benches/RESULTS.md, session
/// 15).
pub const MAX_WAIT: Duration = Duration::from_secs(4);

/// A wait this long means the waiting devices go round too slowly for the bound (see
/// [`Admission::resize`]): streaks are sized to keep waits below it, and where they cannot be
/// shortened further more slots come into use; half the bound, so that this happens before waits
/// reach it.
pub const LONG_WAIT: Duration = Duration::from_secs(2);

/// Slots the clock hand looks at for a free one before it gives up.
const PROBES: usize = 8;

/// The shortest streak that [`Admission::resize`] cuts streaks down to while devices queue for
/// turns: below it, the first read of each streak (the one that finds the device cold) is too
/// large a share of the reads for the streaks to be worth having.
const MIN_STREAK: u32 = 4;

/// The wait, as a share of [`LONG_WAIT`], that streaks are sized for while devices queue: below
/// one, so that a long wait still means that the fit fell short (a burst of newcomers, a slower
/// window), not that it worked.
const WAIT_TARGET: f64 = 0.75;

/// The most slots in use, in multiples of `limit`. At eight, the default's 2,048 slots per
/// shard let most of a 10,000-terminal closed loop through on a machine whose commits are slow.
const GROWTH: usize = 8;

/// Idle CPU (a share of the machine's time over one window) above which more slots come into
/// use while devices wait, and below which some go out of use again. Between the two the set
/// stays as it is, so that it settles rather than swings.
const GROW_ABOVE_IDLE: f64 = 0.10;
const SHRINK_BELOW_IDLE: f64 = 0.05;

/// Resize windows without a wait of [`LONG_WAIT`] before a busy machine may take slots out of
/// use again: a queue too long for the slots to go round shows only when its first waits end,
/// [`LONG_WAIT`] or more after they began, so a shorter memory would take out the slots that had
/// just caught up with it.
const CALM_WINDOWS: u32 = 30;

/// One streak slot: who holds it, and whether the holder is busy.
struct Slot {
    /// Connection id of the holder; 0 when free.
    owner: AtomicU64,
    /// Counts the takings, so that a frame counted for an earlier holder is not counted
    /// against a later one.
    generation: AtomicU32,
    /// The holder's position frames awaiting their outcome.
    busy: AtomicU32,
    /// When the holder last read or last had an outcome, in milliseconds since the epoch.
    last: AtomicU64,
}

/// A slot as one holder took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRef {
    index: u32,
    generation: u32,
}

/// The admission state of one shard, shared by its connections and its commit stage (all on
/// the shard's thread in practice, so the atomics are uncontended).
pub struct Admission {
    /// Position frames in flight at which the shard is behind; 0 turns the policy off.
    limit: usize,
    /// Most reads of one streak: `pipeline.admission_streak`.
    streak: u32,
    /// Reads of one streak now: `streak`, fewer while the queue is too long for streaks that
    /// long to go round it within [`LONG_WAIT`] (see [`Admission::resize`]).
    streak_now: AtomicU32,
    /// Position frames that entered the pipeline since the last [`Admission::resize`].
    entered: AtomicU64,
    /// When [`Admission::resize`] last ran, as [`Admission::now_ms`].
    resized_ms: AtomicU64,
    /// `limit` times [`GROWTH`] slots, of which the first `active` are in use.
    slots: Box<[Slot]>,
    /// Slots in use: `limit`, more while the machine has idle CPU with connections waiting, or
    /// long waits that shorter streaks cannot cure (see [`Admission::resize`]), back to `limit`
    /// once nobody waits.
    active: AtomicUsize,
    hand: AtomicUsize,
    epoch: Instant,
    /// Position frames of this shard's connections that await their commit outcome.
    in_flight: AtomicUsize,
    behind: AtomicBool,
    /// Waits of [`LONG_WAIT`] or more since the last [`Admission::resize`].
    long_waits: AtomicU64,
    /// Resize windows since the last wait of [`LONG_WAIT`] or more (saturating).
    calm: AtomicU32,
    /// Tickets below this number may read.
    admitted: AtomicU64,
    next_ticket: AtomicU64,
    queue: Mutex<Queue>,
}

/// Connection id that marks a slot as given to a ticket whose connection has not picked it up
/// yet.
const RESERVED: u64 = u64::MAX;

#[derive(Default)]
struct Queue {
    /// The ticket of `waiters[0]`.
    first: u64,
    /// The waiting connections' wakers, indexed by ticket from `first` on: `None` for a ticket
    /// whose connection has not registered yet or stopped waiting. Indexed rather than
    /// searched: with thousands of devices waiting, finding and removing tickets by a scan was
    /// the costliest part of admission (session 10).
    waiters: VecDeque<Option<Waker>>,
    /// Slots given with a turn, by ticket, until the connection picks them up.
    grants: Vec<(u64, SlotRef)>,
}

impl Queue {
    /// The waker entry of `ticket`, made room for; `None` for a ticket already passed.
    fn entry(&mut self, ticket: u64) -> Option<&mut Option<Waker>> {
        let at = usize::try_from(ticket.checked_sub(self.first)?).ok()?;
        if at >= self.waiters.len() {
            self.waiters.resize(at + 1, None);
        }
        self.waiters.get_mut(at)
    }

    /// Drops the entries of the tickets below `ticket`.
    fn pass(&mut self, ticket: u64) {
        while self.first < ticket {
            if self.waiters.pop_front().is_none() {
                self.first = ticket;
                return;
            }
            self.first += 1;
        }
    }

    /// Forgets `ticket`'s waker.
    fn forget(&mut self, ticket: u64) {
        if let Some(at) = ticket
            .checked_sub(self.first)
            .and_then(|at| usize::try_from(at).ok())
        {
            if let Some(w) = self.waiters.get_mut(at) {
                *w = None;
            }
        }
        // Trailing entries of tickets nobody waits with any more need no room.
        while self.waiters.back().is_some_and(Option::is_none) {
            self.waiters.pop_back();
        }
    }
}

/// A connection's place in its shard's streaks.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streak {
    /// The slot it took, if any (it may have been taken over since).
    slot: Option<SlotRef>,
    /// Reads made with the slot.
    reads: u32,
}

impl Streak {
    /// The slot to count the connection's next frame in flight against (see
    /// [`Admission::enter`]).
    pub fn slot(&self) -> Option<SlotRef> {
        self.slot
    }
}

/// What a connection does with data to read.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Read,
    /// Wait for the ticket's turn (see [`Admission::poll_turn`]).
    Wait(u64),
}

impl Admission {
    pub fn new(limit: usize, streak: u32) -> Self {
        Admission {
            limit,
            streak,
            streak_now: AtomicU32::new(streak),
            entered: AtomicU64::new(0),
            resized_ms: AtomicU64::new(0),
            slots: (0..limit * GROWTH)
                .map(|_| Slot {
                    owner: AtomicU64::new(0),
                    generation: AtomicU32::new(0),
                    busy: AtomicU32::new(0),
                    last: AtomicU64::new(0),
                })
                .collect(),
            active: AtomicUsize::new(limit),
            hand: AtomicUsize::new(0),
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            behind: AtomicBool::new(false),
            long_waits: AtomicU64::new(0),
            calm: AtomicU32::new(u32::MAX),
            admitted: AtomicU64::new(0),
            next_ticket: AtomicU64::new(0),
            queue: Mutex::new(Queue::default()),
        }
    }

    /// Whether the policy is on (`pipeline.admission_limit` > 0).
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Frames in flight from which the shard is behind: four times the slots. At twice, a
    /// shard with 540 terminals in a closed loop (1,000 terminals on two shards), each with one
    /// frame in commit, counted as behind, and its devices were served unevenly for nothing:
    /// that few fit in the cache anyway. It is behind no longer once they are down to twice.
    fn behind_at(&self) -> usize {
        4 * self.limit
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn is_free(&self, slot: &Slot, now: u64) -> bool {
        let owner = slot.owner.load(Ordering::Relaxed);
        // A slot reserved for a turn waits for its connection, which a busy shard may poll
        // only after a whole batch; it is free again only once that connection would have
        // stopped waiting anyway (it gives the slot back then, or when it closes).
        let quiet = if owner == RESERVED {
            MAX_WAIT
        } else {
            HOT_WINDOW
        };
        owner == 0
            || (slot.busy.load(Ordering::Relaxed) == 0
                && now.saturating_sub(slot.last.load(Ordering::Relaxed))
                    >= quiet.as_millis() as u64)
    }

    /// Whether `ticket` is the next to get a turn.
    pub fn is_next(&self, ticket: u64) -> bool {
        self.admitted.load(Ordering::Relaxed) == ticket
    }

    /// The slot `r` points at, if it is still that holder's.
    fn held(&self, r: SlotRef) -> Option<&Slot> {
        let slot = &self.slots[r.index as usize];
        (slot.generation.load(Ordering::Relaxed) == r.generation).then_some(slot)
    }

    /// Finds a free slot with the clock hand and takes it for `conn`.
    fn find_slot(&self, conn: u64, now: u64) -> Option<SlotRef> {
        let active = self.active.load(Ordering::Relaxed);
        let probes = PROBES.min(active);
        // The hand moves on by all the probes at once: one atomic add per search rather than
        // one per slot looked at (with a queue, every commit outcome searches).
        let start = self.hand.fetch_add(probes, Ordering::Relaxed);
        for k in 0..probes {
            let i = start.wrapping_add(k) % active;
            let slot = &self.slots[i];
            if !self.is_free(slot, now) {
                continue;
            }
            let index = i as u32;
            let seen = slot.owner.load(Ordering::Relaxed);
            if slot
                .owner
                .compare_exchange(seen, conn, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                // The probes not used go back, unless another search moved the hand meanwhile:
                // after the set grew, the next search starts at the next new slot.
                let _ = self.hand.compare_exchange(
                    start.wrapping_add(probes),
                    start.wrapping_add(k + 1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                let generation = slot.generation.fetch_add(1, Ordering::Relaxed) + 1;
                slot.busy.store(0, Ordering::Relaxed);
                slot.last.store(now, Ordering::Relaxed);
                return Some(SlotRef { index, generation });
            }
        }
        None
    }

    fn take(&self, conn: u64, s: &mut Streak, now: u64) -> bool {
        match self.find_slot(conn, now) {
            Some(i) => {
                *s = Streak {
                    slot: Some(i),
                    reads: 1,
                };
                true
            }
            None => false,
        }
    }

    /// Tickets taken and not yet given a turn.
    fn waiting(&self) -> u64 {
        self.next_ticket
            .load(Ordering::Relaxed)
            .saturating_sub(self.admitted.load(Ordering::Relaxed))
    }

    fn anyone_waiting(&self) -> bool {
        self.waiting() > 0
    }

    /// The shortest streak [`Admission::resize`] cuts streaks down to.
    fn shortest_streak(&self) -> u32 {
        MIN_STREAK.min(self.streak)
    }

    fn is_behind(&self) -> bool {
        self.behind.load(Ordering::Relaxed)
    }

    /// Decides for connection `conn` (its id, not 0), which has data to read.
    pub fn decide(&self, conn: u64, s: &mut Streak) -> Decision {
        if !self.enabled() {
            return Decision::Read;
        }
        if let Some(r) = s.slot {
            if self.held(r).is_some() {
                if s.reads < self.streak_now() {
                    s.reads += 1;
                    return Decision::Read;
                }
                self.release(conn, s);
            } else {
                // Taken over while the connection was quiet.
                *s = Streak::default();
            }
        }
        let now = self.now_ms();
        // Nobody jumps the queue: with connections waiting, a newcomer waits behind them.
        if !self.anyone_waiting() && (self.take(conn, s, now) || !self.is_behind()) {
            return Decision::Read;
        }
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        // A slot may have gone quiet since the last outcome: nothing else would notice.
        self.admit();
        Decision::Wait(ticket)
    }

    /// The connection's turn came with `ticket` (or, `None`, it waited [`MAX_WAIT`]): it reads,
    /// starting a streak with the slot given with the turn, or a free one.
    pub fn granted(&self, conn: u64, ticket: Option<u64>, s: &mut Streak) {
        if let Some(r) = ticket.and_then(|t| self.take_grant(t)) {
            if let Some(slot) = self.held(r) {
                slot.owner.store(conn, Ordering::Relaxed);
                *s = Streak {
                    slot: Some(r),
                    reads: 1,
                };
                return;
            }
        }
        self.take(conn, s, self.now_ms());
    }

    /// Gives the connection's slot back (its streak is over, or it closes).
    pub fn release(&self, conn: u64, s: &mut Streak) {
        let Some(r) = std::mem::take(s).slot else {
            return;
        };
        let freed = self.held(r).is_some_and(|slot| {
            slot.owner
                .compare_exchange(conn, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        });
        if freed {
            self.admit();
        }
    }

    /// Ready when `ticket` may read.
    pub fn poll_turn(&self, ticket: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.admitted.load(Ordering::Acquire) > ticket {
            return Poll::Ready(());
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // Checked again under the lock: `admit` takes it before waking.
        if self.admitted.load(Ordering::Acquire) > ticket {
            return Poll::Ready(());
        }
        match q.entry(ticket) {
            Some(Some(w)) => w.clone_from(cx.waker()),
            Some(w @ None) => *w = Some(cx.waker().clone()),
            // Below the first entry: admitted, which was checked above.
            None => return Poll::Ready(()),
        }
        Poll::Pending
    }

    /// A position frame of one of the shard's connections now awaits its commit outcome;
    /// `slot` is the connection's streak slot, if it holds one: the slot is busy meanwhile.
    pub fn enter(&self, slot: Option<SlotRef>) {
        if let Some(slot) = slot.and_then(|r| self.held(r)) {
            slot.busy.fetch_add(1, Ordering::Relaxed);
        }
        self.entered.fetch_add(1, Ordering::Relaxed);
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.behind_at() && !self.is_behind() {
            self.behind.store(true, Ordering::Relaxed);
        }
    }

    /// A position frame's outcome came back (or its connection dropped it); `slot` as given to
    /// [`Admission::enter`].
    pub fn leave(&self, slot: Option<SlotRef>) {
        let mut now = None;
        if let Some(slot) = slot.and_then(|r| self.held(r)) {
            let _ = slot
                .busy
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
            let ms = self.now_ms();
            slot.last.store(ms, Ordering::Relaxed);
            now = Some(ms);
        }
        // Saturating: a miscount must not leave the shard behind for ever.
        let before = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                debug_assert!(n > 0, "more outcomes than frames in flight");
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        if before <= 2 * self.limit && self.is_behind() {
            self.behind.store(false, Ordering::Relaxed);
        }
        self.admit_at(now);
    }

    /// Resizes the set of slots in use from the share of the machine's CPU time that went
    /// idle over the last window (see `gateway::headroom`), while connections wait. Idle CPU
    /// with devices waiting is throughput lost for nothing: the slot holders alone cannot keep
    /// the machine busy (their frames wait for commits that take longer than serving them), so
    /// another quarter of `limit` slots come into use, up to [`GROWTH`] times `limit`. A
    /// machine with no time to spare takes a quarter of `limit` out of use again, down to
    /// `limit`: every device beyond those that keep it busy only competes for the cache. One
    /// fixed number of slots either idled where commits are slow (a slower disk, a busier
    /// machine) or let in more devices than the cache holds where they are fast; growing on
    /// the shard thread's own waits did not work, since it waits for every commit however
    /// many devices it serves (benches/RESULTS.md, session 11).
    ///
    /// The streaks are sized too (see [`Admission::fit_streak`]): the queue moves on by one
    /// device per streak, so on a saturated machine the time it takes to go round is its length
    /// times the streak over the rate the shard serves frames at, whatever the number of slots.
    /// More slots do not shorten it: they only make each streak's reads slower, as more of them
    /// wait for the same commits, and bring more devices into the cache at once. Before
    /// session 15 long waits brought more slots into use whatever the CPU; in a 10,000-terminal
    /// closed loop the set then swung between 300 and 1,500 slots per shard, and both the
    /// gateway and the simulator beside it spent more per position the more devices were in
    /// their streaks. Streaks now shorten instead, down to [`MIN_STREAK`] reads.
    ///
    /// Long waits ([`LONG_WAIT`], half the bound, or more) still bring more slots into use, as
    /// idle CPU does, where the machine has some time to spare or the streaks are as short as
    /// they get: the bound is the policy's promise to every device. A busy machine takes slots
    /// out again only after [`CALM_WINDOWS`] windows without one (session 12: a third of the
    /// waits ended at the bound at 10,000 terminals on a machine where the slot set never
    /// grew).
    pub fn resize(&self, idle_share: f64) {
        let long = self.long_waits.swap(0, Ordering::Relaxed) > 0;
        // Only this call (on the shard's thread) writes `calm`, `streak_now` and `resized_ms`.
        let calm = if long {
            0
        } else {
            self.calm.load(Ordering::Relaxed).saturating_add(1)
        };
        self.calm.store(calm, Ordering::Relaxed);
        let entered = self.entered.swap(0, Ordering::Relaxed);
        let now = self.now_ms();
        let window_ms = now.saturating_sub(self.resized_ms.swap(now, Ordering::Relaxed));
        if !self.enabled() {
            return;
        }
        let waiting = self.waiting();
        if waiting == 0 {
            self.streak_now.store(self.streak, Ordering::Relaxed);
            return;
        }
        let streak = self.fit_streak(entered, window_ms, waiting);
        self.streak_now.store(streak, Ordering::Relaxed);
        let active = self.active.load(Ordering::Relaxed);
        let step = self.limit.div_ceil(4);
        // Long waits with streaks already at their shortest, or with CPU to spare, take more
        // slots; on a busy machine shorter streaks are the cure, more slots only make the
        // devices in a streak compete for the cache.
        let short = streak <= self.shortest_streak();
        if (long && (short || idle_share >= SHRINK_BELOW_IDLE)) || idle_share > GROW_ABOVE_IDLE {
            let grown = (active + step).min(self.slots.len());
            if grown > active {
                self.active.store(grown, Ordering::Relaxed);
                // The clock hand looks at a few slots only: point it at the new ones, which
                // are free, so that the turns come now.
                self.hand.store(active, Ordering::Relaxed);
            }
            self.admit();
        } else if idle_share < SHRINK_BELOW_IDLE && calm >= CALM_WINDOWS {
            // Holders of the slots taken out of use keep them to the end of their streaks
            // (`held` still finds them); they are not handed out again.
            let shrunk = active.saturating_sub(step).max(self.limit);
            self.active.store(shrunk, Ordering::Relaxed);
        }
    }

    /// The streak length for a queue of `waiting` devices, `entered` position frames having
    /// entered the pipeline over the last `window_ms`: the queue moves on by one device per
    /// streak, and streaks end at the rate frames enter divided by their length, so it goes
    /// round in `waiting × streak / rate`. Sized for that to be [`WAIT_TARGET`] of
    /// [`LONG_WAIT`], between [`MIN_STREAK`] and `pipeline.admission_streak`, and moved half
    /// way there per window so that one window's count does not swing it.
    fn fit_streak(&self, entered: u64, window_ms: u64, waiting: u64) -> u32 {
        let lowest = self.shortest_streak();
        let now = self.streak_now();
        if window_ms == 0 {
            return now;
        }
        let rate_per_ms = entered as f64 / window_ms as f64;
        let fit = WAIT_TARGET * LONG_WAIT.as_millis() as f64 * rate_per_ms / waiting as f64;
        let fit = (fit as u32).clamp(lowest, self.streak);
        // Half way, rounded towards the fit so that it gets there (in u64: the configured
        // streak has no upper bound).
        let (now, fit) = (u64::from(now), u64::from(fit));
        let mid = if fit < now {
            (now + fit) / 2
        } else {
            (now + fit).div_ceil(2)
        };
        u32::try_from(mid).unwrap_or(u32::MAX)
    }

    /// Reads of one streak now (see [`Admission::resize`]).
    pub fn streak_now(&self) -> u32 {
        self.streak_now.load(Ordering::Relaxed)
    }

    /// A connection waited [`LONG_WAIT`] or more for its turn, or until [`MAX_WAIT`] without
    /// one (see [`Admission::resize`]).
    pub fn long_wait(&self) {
        self.long_waits.fetch_add(1, Ordering::Relaxed);
    }

    /// Long waits reported since the last resize.
    #[cfg(test)]
    pub fn long_waits_reported(&self) -> u64 {
        self.long_waits.load(Ordering::Relaxed)
    }

    /// Slots in use now.
    pub fn active_slots(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Gives the next waiting connection its turn with a free slot, which it keeps for the
    /// connection. Turns come only with a slot: turns without one, given whenever the shard
    /// was briefly below its limit or to several waiters for one free slot, let every waiting
    /// device through in turn and brought back the cold working set this is for. Called with
    /// every outcome, every slot given back and every new wait.
    pub fn admit(&self) {
        self.admit_at(None)
    }

    /// [`Admission::admit`] with the time, if the caller has just read the clock.
    fn admit_at(&self, now: Option<u64>) {
        loop {
            if !self.anyone_waiting() {
                // The queue is gone: the slots that idle time added are not needed any more.
                // Their holders keep them to the end of their streaks (`held` still finds them).
                if self.active.load(Ordering::Relaxed) != self.limit {
                    self.active.store(self.limit, Ordering::Relaxed);
                }
                return;
            }
            // The slot first, the lock only with one: with a queue, most searches (one per
            // commit outcome) find none.
            let Some(r) = self.find_slot(RESERVED, now.unwrap_or_else(|| self.now_ms())) else {
                return;
            };
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if !self.anyone_waiting() {
                drop(q);
                self.give_back(r);
                return;
            }
            let ticket = self.admitted.fetch_add(1, Ordering::AcqRel);
            // Wakers of earlier tickets are gone already (see `cancel`); drop any left.
            q.pass(ticket);
            match q.waiters.pop_front() {
                Some(Some(waker)) => {
                    q.first += 1;
                    q.grants.push((ticket, r));
                    drop(q);
                    return waker.wake();
                }
                // The ticket's connection stopped waiting (it read after `MAX_WAIT`, or
                // closed) or has not registered yet (it reads at once when it does): the slot
                // and the turn go to the next one.
                popped => {
                    if popped.is_some() {
                        q.first += 1;
                    }
                    self.give_back(r);
                }
            }
        }
    }

    /// The slot given with `ticket`'s turn, if it was given and not yet taken.
    fn take_grant(&self, ticket: u64) -> Option<SlotRef> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let at = q.grants.iter().position(|(g, _)| *g == ticket)?;
        Some(q.grants.swap_remove(at).1)
    }

    /// Frees a slot reserved for a ticket.
    fn give_back(&self, r: SlotRef) {
        if let Some(slot) = self.held(r) {
            let _ = slot
                .owner
                .compare_exchange(RESERVED, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Forgets a ticket whose connection stopped waiting (or never picked up its turn): its
    /// waker, and the slot given with its turn.
    pub fn cancel(&self, ticket: u64) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(ticket);
        if let Some(r) = self.take_grant(ticket) {
            self.give_back(r);
            self.admit();
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn flag() -> (Arc<Flag>, Waker) {
        let f = Arc::new(Flag(false.into()));
        (f.clone(), Waker::from(f))
    }

    fn woken(f: &Flag) -> bool {
        f.0.swap(false, Ordering::SeqCst)
    }

    fn poll(a: &Admission, ticket: u64, waker: &Waker) -> Poll<()> {
        a.poll_turn(ticket, &mut Context::from_waker(waker))
    }

    /// Puts `n` frames in flight that belong to no streak.
    fn load(a: &Admission, n: usize) {
        for _ in 0..n {
            a.enter(None);
        }
    }

    /// One slot, held by connection 1 with a frame in flight, and three frames more: behind.
    fn behind_with_one_holder() -> (Admission, Streak) {
        let a = Admission::new(1, 1);
        let mut holder = Streak::default();
        assert_eq!(a.decide(1, &mut holder), Decision::Read);
        a.enter(holder.slot());
        load(&a, 3);
        (a, holder)
    }

    fn wait(d: Decision) -> u64 {
        match d {
            Decision::Wait(t) => t,
            Decision::Read => panic!("expected to wait"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_that_keeps_up_lets_everyone_read() {
        let a = Admission::new(2, 4);
        // More frames in flight than slots, but fewer than four times as many: not behind.
        load(&a, 3);
        let mut streaks = [Streak::default(); 5];
        for (conn, s) in streaks.iter_mut().enumerate() {
            assert_eq!(a.decide(conn as u64 + 1, s), Decision::Read);
        }
        // Two of them got the slots, the others read without one.
        assert_eq!(streaks.iter().filter(|s| s.slot().is_some()).count(), 2);
        // Turned off: never waits.
        let off = Admission::new(0, 4);
        assert!(!off.enabled());
        load(&off, 100);
        assert_eq!(off.decide(1, &mut Streak::default()), Decision::Read);
    }

    #[tokio::test(start_paused = true)]
    async fn behind_a_streak_goes_on_and_the_others_take_turns_that_come_with_a_slot() {
        let a = Admission::new(1, 3);
        let (mut hot, mut cold, mut late) =
            (Streak::default(), Streak::default(), Streak::default());
        // Connection 1 takes the only slot while the shard keeps up.
        assert_eq!(a.decide(1, &mut hot), Decision::Read);
        a.enter(hot.slot());
        load(&a, 3);
        // Four frames in flight with one slot: behind.
        let first = wait(a.decide(2, &mut cold));
        let (f_cold, w_cold) = flag();
        assert!(poll(&a, first, &w_cold).is_pending());
        // The streak goes on while its slot is busy, however long the commit takes.
        tokio::time::advance(HOT_WINDOW * 3).await;
        a.leave(hot.slot());
        assert!(!woken(&f_cold), "a slot in its streak is not given away");
        assert_eq!(a.decide(1, &mut hot), Decision::Read);
        a.enter(hot.slot());
        assert_eq!(a.decide(1, &mut hot), Decision::Read);
        a.enter(hot.slot());
        // A frame without a slot comes back: the shard is below its limit, but no slot is
        // free, so nobody gets a turn.
        a.leave(None);
        assert!(!woken(&f_cold));
        // The streak is used up: the slot goes to the first ticket, the hot connection queues.
        let second = wait(a.decide(1, &mut hot));
        assert!(woken(&f_cold));
        assert!(poll(&a, first, &w_cold).is_ready());
        a.granted(2, Some(first), &mut cold);
        assert!(cold.slot().is_some(), "the turn came with the slot");
        // A newcomer does not jump the queue.
        let third = wait(a.decide(3, &mut late));
        assert!(second < third);
        for _ in 0..4 {
            a.leave(None);
        }
        assert_eq!(a.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_slot_is_taken_over_and_its_old_holder_finds_out() {
        let a = Admission::new(1, 100);
        let (mut quiet, mut other) = (Streak::default(), Streak::default());
        assert_eq!(a.decide(1, &mut quiet), Decision::Read);
        a.enter(quiet.slot());
        a.leave(quiet.slot());
        load(&a, 4);
        // Behind, and the slot's holder answered but has not read since: not yet free.
        let ticket = wait(a.decide(2, &mut other));
        let (f, w) = flag();
        assert!(poll(&a, ticket, &w).is_pending());
        tokio::time::advance(HOT_WINDOW).await;
        // The next outcome finds the quiet slot and gives it to the waiting connection.
        a.leave(None);
        assert!(woken(&f));
        assert!(poll(&a, ticket, &w).is_ready());
        a.granted(2, Some(ticket), &mut other);
        assert!(other.slot().is_some());
        // The old holder's next read is no longer hot: it waits like anyone else.
        wait(a.decide(1, &mut quiet));
        assert!(quiet.slot().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn tickets_that_leave_pass_their_turn_and_their_slot_on() {
        let (a, mut holder) = behind_with_one_holder();
        let (mut s2, mut s3, mut s4) = (Streak::default(), Streak::default(), Streak::default());
        let t2 = wait(a.decide(2, &mut s2));
        let t3 = wait(a.decide(3, &mut s3));
        let t4 = wait(a.decide(4, &mut s4));
        let (f2, w2) = flag();
        let (f3, w3) = flag();
        let (f4, w4) = flag();
        for (t, w) in [(t2, &w2), (t3, &w3), (t4, &w4)] {
            assert!(poll(&a, t, w).is_pending());
        }
        // Connection 2 gives up (it read after MAX_WAIT, or closed).
        a.cancel(t2);
        // The holder closes: its slot skips the cancelled ticket and goes to connection 3.
        a.release(1, &mut holder);
        assert!(!woken(&f2));
        assert!(woken(&f3));
        // Connection 3 closes before it picks its turn up: the slot goes on to 4.
        a.cancel(t3);
        assert!(woken(&f4));
        assert!(poll(&a, t4, &w4).is_ready());
        a.granted(4, Some(t4), &mut s4);
        assert!(s4.slot().is_some());
        // A turn taken after the longest wait has no slot given with it: it takes a free one
        // if there is one (here: none).
        a.granted(2, None, &mut s2);
        assert!(s2.slot().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn many_waiters_get_their_turns_in_order_whatever_leaves_in_between() {
        let (a, holder) = behind_with_one_holder();
        let waiting: Vec<_> = (0..100u64)
            .map(|i| {
                let mut s = Streak::default();
                let t = wait(a.decide(i + 10, &mut s));
                let (f, w) = flag();
                assert!(poll(&a, t, &w).is_pending());
                // A second poll (a spurious wake) keeps the place.
                assert!(poll(&a, t, &w).is_pending());
                (i, t, f, w)
            })
            .collect();
        // Every odd one gives up, and so do the last ten, in no particular order.
        for (i, t, ..) in waiting.iter().rev() {
            if i % 2 == 1 || *i >= 90 {
                a.cancel(*t);
            }
        }
        let mut turns = Vec::new();
        let mut slot_holder = (1, holder);
        for _ in 0..45 {
            // Whoever holds the slot gives it back: the next one in line gets it.
            a.release(slot_holder.0, &mut slot_holder.1);
            let (i, t, _, w) = waiting
                .iter()
                .find(|(_, _, f, _)| woken(f))
                .expect("a turn was given");
            assert!(poll(&a, *t, w).is_ready());
            let mut s = Streak::default();
            a.granted(i + 10, Some(*t), &mut s);
            assert!(s.slot().is_some());
            turns.push(*i);
            slot_holder = (i + 10, s);
        }
        let expected: Vec<u64> = (0..90).filter(|i| i % 2 == 0).collect();
        assert_eq!(turns, expected);
        // Nobody is left: the queue holds nothing, and the next release wakes nobody.
        a.release(slot_holder.0, &mut slot_holder.1);
        assert!(waiting.iter().all(|(_, _, f, _)| !woken(f)));
        assert!(a.queue.lock().unwrap().waiters.is_empty());
    }

    /// Four slots, all held by devices (ids 1 to 4) with a frame in flight, and the shard
    /// behind; streaks of up to `streak` reads. Returns the holders' streaks too.
    fn behind_with_busy_holders(streak: u32) -> (Admission, Vec<Streak>) {
        let a = Admission::new(4, streak);
        let mut holders: Vec<Streak> = (0..4).map(|_| Streak::default()).collect();
        for (i, h) in holders.iter_mut().enumerate() {
            assert_eq!(a.decide(i as u64 + 1, h), Decision::Read);
            a.enter(h.slot());
        }
        load(&a, 12);
        (a, holders)
    }

    fn behind_with_every_slot_busy() -> Admission {
        behind_with_busy_holders(100).0
    }

    #[tokio::test(start_paused = true)]
    async fn idle_cpu_while_devices_wait_brings_more_slots_into_use_and_a_busy_one_fewer() {
        let a = behind_with_every_slot_busy();
        // Behind, every slot busy: the next two wait.
        let mut w1 = Streak::default();
        let mut w2 = Streak::default();
        let t1 = wait(a.decide(10, &mut w1));
        let t2 = wait(a.decide(11, &mut w2));
        let (f1, k1) = flag();
        let (f2, k2) = flag();
        assert!(poll(&a, t1, &k1).is_pending());
        assert!(poll(&a, t2, &k2).is_pending());
        // Idle CPU with nobody waiting changes nothing.
        let quiet = Admission::new(4, 100);
        quiet.resize(0.9);
        assert_eq!(quiet.active_slots(), 4);
        // Between the thresholds, nothing changes either.
        a.resize(0.07);
        assert_eq!(a.active_slots(), 4);
        assert!(!woken(&f1));
        // Idle CPU with two waiting: a quarter of the limit more, and a turn with it.
        a.resize(0.2);
        assert_eq!(a.active_slots(), 5);
        assert!(woken(&f1));
        assert!(!woken(&f2));
        assert!(poll(&a, t1, &k1).is_ready());
        a.granted(10, Some(t1), &mut w1);
        assert!(w1.slot().is_some());
        // A busy machine: the set shrinks, never below the limit, and the holder of a slot
        // taken out of use keeps it to the end of its streak.
        a.resize(0.01);
        assert_eq!(a.active_slots(), 4);
        a.resize(0.01);
        assert_eq!(a.active_slots(), 4);
        assert!(a.held(w1.slot().unwrap()).is_some());
        // Back in use, the fifth slot is still the first turn's: the second turn comes with
        // the sixth.
        a.resize(0.2);
        assert_eq!(a.active_slots(), 5);
        assert!(!woken(&f2));
        a.resize(0.2);
        assert_eq!(a.active_slots(), 6);
        assert!(woken(&f2));
        a.granted(11, Some(t2), &mut w2);
        assert!(w2.slot().is_some());
        // Nobody waits any more: the added slots go out of use.
        a.admit();
        assert_eq!(a.active_slots(), 4);
        // However long the machine idles with devices waiting, at most eight times the limit.
        let b = Admission::new(4, 100);
        load(&b, 16);
        for conn in 1..100 {
            let mut s = Streak::default();
            if let Decision::Wait(t) = b.decide(conn, &mut s) {
                let (_, w) = flag();
                let _ = poll(&b, t, &w);
            }
            b.resize(0.5);
        }
        assert_eq!(b.active_slots(), 32);
    }

    /// `n` connections (ids from `first` on) that take tickets and register to wait for them.
    fn queue_up(a: &Admission, first: u64, n: u64) -> Vec<(u64, Arc<Flag>)> {
        (first..first + n)
            .map(|conn| {
                let t = wait(a.decide(conn, &mut Streak::default()));
                let (f, k) = flag();
                assert!(poll(a, t, &k).is_pending());
                (t, f)
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_queue_shortens_streaks_to_go_round_within_the_long_wait() {
        let (a, holders) = behind_with_busy_holders(16);
        // 40 devices wait; 16 frames entered over the last second: streaks of 16 would take
        // the queue 40 s to go round, so they shorten, half way per window, down to the
        // shortest.
        queue_up(&a, 10, 40);
        tokio::time::advance(Duration::from_secs(1)).await;
        a.resize(0.0);
        assert_eq!(a.streak_now(), 10);
        let mut seen = vec![a.streak_now()];
        for _ in 0..4 {
            tokio::time::advance(Duration::from_millis(100)).await;
            a.resize(0.0);
            seen.push(a.streak_now());
        }
        assert_eq!(seen, [10, 7, 5, 4, 4]);
        // A holder's streak now ends after four reads (the slot it holds is still its own).
        let mut h = holders[0];
        for _ in 1..MIN_STREAK {
            assert_eq!(a.decide(1, &mut h), Decision::Read);
        }
        assert!(matches!(a.decide(1, &mut h), Decision::Wait(_)));
        // Frames entering fast enough for the queue: streaks grow back towards the limit.
        load(&a, 400);
        tokio::time::advance(Duration::from_millis(100)).await;
        a.resize(0.0);
        // 400 frames per 100 ms, 40 waiting: 1.5 s goes round in streaks of 150, capped at 16.
        assert_eq!(a.streak_now(), 10);
        // 20 frames per 100 ms: streaks of 7.5, so 7; half way from 10 is 8.
        load(&a, 20);
        tokio::time::advance(Duration::from_millis(100)).await;
        a.resize(0.0);
        assert_eq!(a.streak_now(), 8);
        load(&a, 20);
        tokio::time::advance(Duration::from_millis(100)).await;
        a.resize(0.0);
        assert_eq!(a.streak_now(), 7);
        // Nobody waiting: the configured streak at once.
        let quiet = Admission::new(4, 16);
        quiet.resize(0.0);
        assert_eq!(quiet.streak_now(), 16);
    }

    #[tokio::test(start_paused = true)]
    async fn long_waits_on_a_busy_machine_shorten_streaks_then_bring_slots_into_use() {
        let a = behind_with_every_slot_busy();
        let waiting = queue_up(&a, 10, 40);
        // No idle CPU and no long wait: the slots stay (the streaks shorten, see above).
        a.resize(0.0);
        assert_eq!(a.active_slots(), 4);
        // Long waits on a busy machine with streaks that can still shorten: no more slots,
        // which would only make more devices compete for the cache.
        tokio::time::advance(Duration::from_secs(1)).await;
        a.long_wait();
        a.resize(0.0);
        assert!(a.streak_now() > MIN_STREAK);
        assert_eq!(a.active_slots(), 4);
        while a.streak_now() > MIN_STREAK {
            tokio::time::advance(Duration::from_millis(100)).await;
            a.resize(0.0);
        }
        assert_eq!(a.active_slots(), 4);
        // At the shortest streaks, a long wait brings a quarter of the limit more, and a turn,
        // although the machine has no time to spare.
        a.long_wait();
        a.resize(0.0);
        assert_eq!(a.active_slots(), 5);
        assert!(woken(&waiting[0].1));
        // A busy machine keeps them while long waits may still be ending ...
        for _ in 1..CALM_WINDOWS {
            a.resize(0.0);
            assert_eq!(a.active_slots(), 5);
        }
        // ... and takes them out once none has for as long.
        a.resize(0.0);
        assert_eq!(a.active_slots(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_reserved_for_a_turn_waits_for_its_connection() {
        let (a, mut holder) = behind_with_one_holder();
        let mut turn = Streak::default();
        let ticket = wait(a.decide(2, &mut turn));
        assert!(a.is_next(ticket));
        let (f, w) = flag();
        assert!(poll(&a, ticket, &w).is_pending());
        // The holder's streak ends: the slot is reserved for the first ticket.
        a.release(1, &mut holder);
        assert!(woken(&f));
        assert!(!a.is_next(ticket), "the turn was given");
        // Its connection is slow to come (a busy shard): the slot is not taken from it by a
        // newcomer, although no frame is in flight on it and the hot window went by.
        tokio::time::advance(HOT_WINDOW * 2).await;
        let mut newcomer = Streak::default();
        wait(a.decide(3, &mut newcomer));
        assert!(newcomer.slot().is_none());
        assert!(poll(&a, ticket, &w).is_ready());
        a.granted(2, Some(ticket), &mut turn);
        assert!(turn.slot().is_some());
    }

    #[test]
    fn outcomes_never_count_below_zero() {
        let a = Admission::new(1, 1);
        a.enter(None);
        a.leave(None);
        // A miscount (in release builds; debug builds assert) leaves the count at zero.
        if !cfg!(debug_assertions) {
            a.leave(None);
        }
        assert_eq!(a.in_flight(), 0);
    }
}

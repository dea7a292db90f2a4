//! One simulated terminal: register, authenticate, then report positions and heartbeats while
//! checking that every answer carries the right serial, message id and result.
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use super::frames::{
    self, Identity, Report, MSG_AUTH, MSG_BATCH, MSG_HEARTBEAT, MSG_LOCATION, MSG_REGISTER,
    MSG_TERMINAL_RESPONSE,
};
use super::link::{Answer, Link};
use super::route::Route;
use super::stats::{ErrorKind, Stats};
use super::{Mode, Run};

/// Most positions one blind-area batch carries (each item is about 48 bytes; the body limit is 1023).
const MAX_BATCH: usize = 16;
/// Pause before a terminal whose connection broke connects again.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A message waiting for its answer.
#[derive(Debug, Clone, Copy)]
struct Pending {
    serial: u16,
    message_id: u16,
    sent: Instant,
    positions: u32,
}

/// State of one simulated terminal.
pub struct Terminal {
    index: usize,
    ident: Identity,
    serial: u16,
    route: Route,
    /// Device clock in Unix seconds; advances by `step_s` per position.
    device_clock: i64,
    step_s: i64,
    auth_code: Option<Vec<u8>>,
    pending: Vec<Pending>,
    /// Positions recorded during a simulated coverage gap, sent later as one 0x0704 batch.
    gap: Vec<Report>,
    gap_left: u32,
    rng: SmallRng,
    body: BytesMut,
    /// Positions acknowledged during the reporting phase (not the drain after it).
    acked: u64,
}

enum Flow {
    /// The run is over.
    Ended,
    /// The connection broke; connect again.
    Lost,
}

impl Terminal {
    pub fn new(index: usize, ident: Identity, run: &Run) -> Self {
        let mut rng =
            SmallRng::seed_from_u64(run.plan.seed.wrapping_add(index as u64).wrapping_mul(31));
        let step_s = match run.plan.mode {
            Mode::FixedRate { per_second } if per_second > 0.0 => {
                (1.0 / per_second).round().max(1.0) as i64
            }
            _ => 1,
        };
        let device_clock = run.device_epoch + rng.random_range(0..60);
        Terminal {
            index,
            ident,
            serial: 0,
            route: Route::new(run.plan.seed, index as u64),
            device_clock,
            step_s,
            auth_code: None,
            pending: Vec::new(),
            gap: Vec::new(),
            gap_left: 0,
            rng,
            body: BytesMut::with_capacity(128),
            acked: 0,
        }
    }

    fn next_serial(&mut self) -> u16 {
        let s = self.serial;
        self.serial = self.serial.wrapping_add(1);
        s
    }

    /// Frames a message with the body in `self.body` into `link.out`; returns its serial.
    fn queue(&mut self, link: &mut Link, message_id: u16) -> u16 {
        let serial = self.next_serial();
        frames::frame(&self.ident, message_id, serial, &self.body, &mut link.out);
        self.body.clear();
        serial
    }

    /// Runs the terminal until the run stops, then records its acknowledged positions.
    pub async fn run(mut self, run: Arc<Run>) {
        self.run_until_stopped(&run).await;
        run.stats
            .acked_per_device
            .record_value(self.index, self.acked);
    }

    async fn run_until_stopped(&mut self, run: &Arc<Run>) {
        let stats = &run.stats;
        let first_login = tokio::time::timeout_at(run.registration_deadline, self.login(run));
        let (mut link, took) = match first_login
            .await
            .unwrap_or(Err(ErrorKind::RegistrationTimeout))
        {
            Ok(done) => done,
            Err(kind) => {
                stats.error(kind);
                Stats::add(&stats.registration_failed, 1);
                run.registration_done.notify_one();
                return;
            }
        };
        stats.registration_latency.record(self.index, took);
        Stats::add(&stats.registered, 1);
        run.registration_done.notify_one();

        let mut start = run.start.clone();
        tokio::select! {
            _ = start.wait_for(|go| *go) => {}
            _ = run.stop.cancelled() => {
                Self::close(&mut link, stats);
                return;
            }
        }

        loop {
            match self.traffic(&mut link, run).await {
                Flow::Ended => {
                    self.drain(&mut link, run).await;
                    Self::close(&mut link, stats);
                    return;
                }
                Flow::Lost => {
                    stats.error(ErrorKind::Disconnected);
                    stats.errors_n(ErrorKind::Timeout, self.pending.len() as u64);
                    self.pending.clear();
                    Self::close(&mut link, stats);
                    tokio::select! {
                        _ = tokio::time::sleep(RECONNECT_DELAY) => {}
                        _ = run.stop.cancelled() => return,
                    }
                    link = match self.login(run).await {
                        Ok((link, _)) => link,
                        Err(kind) => {
                            stats.error(kind);
                            return;
                        }
                    };
                }
            }
        }
    }

    /// Bookkeeping when an authenticated connection ends (the socket closes on drop).
    fn close(_link: &mut Link, stats: &Stats) {
        stats
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connects and authenticates, registering first if this terminal has no code yet. At most
    /// `connect_concurrency` terminals do this at once. Returns the link and the time from
    /// starting to connect to the authentication answer.
    async fn login(&mut self, run: &Run) -> Result<(Link, Duration), ErrorKind> {
        let _permit = tokio::select! {
            permit = run.connect_gate.acquire() => permit.map_err(|_| ErrorKind::Connect)?,
            _ = run.stop.cancelled() => return Err(ErrorKind::RegistrationTimeout),
        };
        let started = Instant::now();
        let plan = &run.plan;
        let source = if plan.source_ips.is_empty() {
            None
        } else {
            Some(plan.source_ips[self.index % plan.source_ips.len()])
        };
        let mut link = tokio::select! {
            link = Link::connect(plan.target, source, plan.connect_timeout) => link.map_err(|_| ErrorKind::Connect)?,
            _ = run.stop.cancelled() => return Err(ErrorKind::RegistrationTimeout),
        };
        Stats::add(&run.stats.connects, 1);
        let result = tokio::select! {
            r = self.handshake(&mut link, run) => r,
            _ = run.stop.cancelled() => Err(ErrorKind::RegistrationTimeout),
        };
        result?;
        // Counted only once authenticated, so a login abandoned half-way leaves no trace in `open`.
        Stats::add(&run.stats.open, 1);
        Ok((link, started.elapsed()))
    }

    async fn handshake(&mut self, link: &mut Link, run: &Run) -> Result<(), ErrorKind> {
        let timeout = run.plan.answer_timeout;
        let code = match self.auth_code.clone() {
            Some(code) => code,
            None => {
                frames::register_body(&self.ident, &mut self.body);
                let serial = self.queue(link, MSG_REGISTER);
                link.flush().await?;
                match link
                    .answer_until(&self.ident, Instant::now() + timeout)
                    .await?
                {
                    Answer::Register {
                        reply_serial,
                        result,
                        code,
                    } => {
                        if reply_serial != serial {
                            return Err(ErrorKind::WrongReplySerial);
                        }
                        if result != 0 || code.is_empty() {
                            return Err(ErrorKind::RegisterRejected);
                        }
                        self.auth_code = Some(code.clone());
                        code
                    }
                    Answer::Wrong(kind) => return Err(kind),
                    _ => return Err(ErrorKind::UnexpectedMessage),
                }
            }
        };
        frames::auth_body(&self.ident, &code, &mut self.body);
        let serial = self.queue(link, MSG_AUTH);
        link.flush().await?;
        match link
            .answer_until(&self.ident, Instant::now() + timeout)
            .await?
        {
            Answer::General {
                reply_serial,
                reply_id,
                result,
            } => {
                if reply_serial != serial {
                    Err(ErrorKind::WrongReplySerial)
                } else if reply_id != MSG_AUTH {
                    Err(ErrorKind::WrongReplyId)
                } else if result != 0 {
                    Err(ErrorKind::ResultNotOk)
                } else {
                    Ok(())
                }
            }
            Answer::Wrong(kind) => Err(kind),
            _ => Err(ErrorKind::UnexpectedMessage),
        }
    }

    fn reports_in_flight(&self) -> usize {
        self.pending
            .iter()
            .filter(|p| p.message_id == MSG_LOCATION || p.message_id == MSG_BATCH)
            .count()
    }

    /// Produces the next position and queues the message that carries it: a 0x0200 report, or
    /// nothing while a simulated coverage gap lasts, then one 0x0704 blind-area batch with the
    /// positions of the gap. Returns true when a message was queued.
    fn queue_position(&mut self, link: &mut Link, run: &Run) -> bool {
        self.device_clock += self.step_s;
        let report = Report {
            sample: self.route.step(self.step_s as f64),
            unix_secs: self.device_clock,
        };
        let every = run.plan.blind_area_every;
        if self.gap_left == 0 && every > 0 && self.rng.random_range(0..every) == 0 {
            self.gap_left = self.rng.random_range(3..=MAX_BATCH as u32);
        }
        let (message_id, positions) = if self.gap_left > 0 {
            self.gap.push(report);
            self.gap_left -= 1;
            if self.gap_left > 0 {
                return false;
            }
            frames::blind_area_batch_body(&self.gap, &mut self.body);
            let n = self.gap.len() as u32;
            self.gap.clear();
            (MSG_BATCH, n)
        } else {
            frames::location_body(&report, &mut self.body);
            (MSG_LOCATION, 1)
        };
        let serial = self.queue(link, message_id);
        self.pending.push(Pending {
            serial,
            message_id,
            sent: Instant::now(),
            positions,
        });
        Stats::add(&run.stats.reports_sent, 1);
        Stats::add(&run.stats.positions_sent, positions as u64);
        true
    }

    /// Queues the next report in closed-loop mode: keep producing positions until one message
    /// goes out (a coverage gap sends nothing until it ends).
    fn queue_closed_loop_report(&mut self, link: &mut Link, run: &Run) {
        while !self.queue_position(link, run) {}
    }

    /// Queues the next closed-loop report unless a paused run is paused; returns whether the
    /// report is owed until reporting resumes.
    fn report_or_owe(
        &mut self,
        link: &mut Link,
        run: &Run,
        gate: &mut watch::Receiver<bool>,
    ) -> bool {
        if may_report(run, gate) {
            self.queue_closed_loop_report(link, run);
            false
        } else {
            true
        }
    }

    fn queue_heartbeat(&mut self, link: &mut Link) {
        let serial = self.queue(link, MSG_HEARTBEAT);
        self.pending.push(Pending {
            serial,
            message_id: MSG_HEARTBEAT,
            sent: Instant::now(),
            positions: 0,
        });
    }

    /// Checks one answer against the pending messages. Returns true when a location message
    /// got its answer (closed loop sends the next one then).
    fn settle(&mut self, answer: Answer, link: &mut Link, run: &Run) -> bool {
        let stats = &run.stats;
        match answer {
            Answer::General {
                reply_serial,
                reply_id,
                result,
            } => {
                let Some(pos) = self.pending.iter().position(|p| p.serial == reply_serial) else {
                    stats.error(ErrorKind::WrongReplySerial);
                    return false;
                };
                let p = self.pending.swap_remove(pos);
                let is_report = p.message_id == MSG_LOCATION || p.message_id == MSG_BATCH;
                if reply_id != p.message_id {
                    stats.error(ErrorKind::WrongReplyId);
                } else if result != 0 {
                    stats.error(ErrorKind::ResultNotOk);
                } else if is_report {
                    Stats::add(&stats.positions_acked, p.positions as u64);
                    // Only within the reporting window: neither the drain after it nor, in a
                    // paused run, the pauses are counted.
                    if !run.stop.is_cancelled() && (!run.plan.paused || *run.start.borrow()) {
                        self.acked += p.positions as u64;
                    }
                    stats.report_latency.record(self.index, p.sent.elapsed());
                } else if p.message_id == MSG_HEARTBEAT {
                    Stats::add(&stats.heartbeats_acked, 1);
                }
                is_report
            }
            Answer::Request { id, serial } => {
                // Terminals acknowledge platform requests (JT/T 808-2013 §8.1); the simulated
                // firmware accepts them without acting on them.
                frames::terminal_response_body(serial, id, 0, &mut self.body);
                self.queue(link, MSG_TERMINAL_RESPONSE);
                Stats::add(&stats.platform_requests, 1);
                false
            }
            Answer::Register { .. } | Answer::ServerTime => {
                stats.error(ErrorKind::UnexpectedMessage);
                false
            }
            Answer::Wrong(kind) => {
                stats.error(kind);
                false
            }
        }
    }

    /// Counts as timed out every message that waited longer than the answer timeout. Returns
    /// true when a location message was among them.
    fn expire(&mut self, run: &Run, now: Instant) -> bool {
        let timeout = run.plan.answer_timeout;
        let before = self.pending.len();
        let mut report_expired = false;
        self.pending.retain(|p| {
            let alive = now.duration_since(p.sent) < timeout;
            if !alive && (p.message_id == MSG_LOCATION || p.message_id == MSG_BATCH) {
                report_expired = true;
            }
            alive
        });
        run.stats
            .errors_n(ErrorKind::Timeout, (before - self.pending.len()) as u64);
        report_expired
    }

    async fn traffic(&mut self, link: &mut Link, run: &Run) -> Flow {
        let plan = &run.plan;
        let now = Instant::now();
        let mut next_heartbeat = now + plan.heartbeat;
        let mut next_expiry = now + Duration::from_secs(1);
        let period = match plan.mode {
            Mode::FixedRate { per_second } if per_second > 0.0 => {
                Some(Duration::from_secs_f64(1.0 / per_second))
            }
            _ => None,
        };
        // Spread the first reports of all terminals over one period so they do not arrive in lockstep.
        let mut next_report = match period {
            Some(p) => now + p.mul_f64(self.rng.random_range(0.0..1.0)),
            None => now,
        };
        let closed_loop = matches!(plan.mode, Mode::ClosedLoop);
        // A paused run (`Plan::paused`) holds reports while `run.start` is false; a closed-loop
        // terminal then owes its next report until reporting resumes (see `may_report`).
        let mut gate = run.start.clone();
        let mut owed = false;
        if closed_loop && self.reports_in_flight() == 0 {
            owed = self.report_or_owe(link, run, &mut gate);
        }
        // The stop signal and the timers are created once and re-armed, not rebuilt on every
        // message: that keeps the simulator's cost per message low, so it measures the server.
        let stop = run.stop.cancelled();
        let report_timer = sleep_until(next_report);
        let heartbeat_timer = sleep_until(next_heartbeat);
        let expiry_timer = sleep_until(next_expiry);
        tokio::pin!(stop, report_timer, heartbeat_timer, expiry_timer);
        loop {
            if link.flush().await.is_err() {
                return Flow::Lost;
            }
            tokio::select! {
                _ = &mut stop => return Flow::Ended,
                read = link.read_some(&self.ident) => {
                    if read.is_err() {
                        return Flow::Lost;
                    }
                    let mut report_answered = false;
                    while let Some(answer) = link.next_answer() {
                        report_answered |= self.settle(answer, link, run);
                    }
                    if report_answered && closed_loop && self.reports_in_flight() == 0 {
                        owed = self.report_or_owe(link, run, &mut gate);
                    }
                }
                changed = gate.changed(), if owed => {
                    if changed.is_err() || *gate.borrow_and_update() {
                        owed = false;
                        if self.reports_in_flight() == 0 {
                            self.queue_closed_loop_report(link, run);
                        }
                    }
                }
                _ = &mut report_timer, if period.is_some() => {
                    let p = period.expect("guarded by the branch condition");
                    // A paused run lets the tick pass without a report.
                    if may_report(run, &mut gate) {
                        if self.pending.len() < plan.max_in_flight {
                            self.queue_position(link, run);
                        } else {
                            Stats::add(&run.stats.deferred, 1);
                        }
                    }
                    next_report += p;
                    let now = Instant::now();
                    if next_report < now {
                        // Too far behind (an overloaded simulator): skip the missed ticks
                        // rather than bursting to catch up.
                        next_report = now + p;
                    }
                    report_timer.as_mut().reset(next_report);
                }
                _ = &mut heartbeat_timer => {
                    if self.pending.len() < plan.max_in_flight {
                        self.queue_heartbeat(link);
                    }
                    next_heartbeat += plan.heartbeat;
                    heartbeat_timer.as_mut().reset(next_heartbeat);
                }
                _ = &mut expiry_timer => {
                    let now = Instant::now();
                    next_expiry = now + Duration::from_secs(1);
                    expiry_timer.as_mut().reset(next_expiry);
                    let report_expired = self.expire(run, now);
                    if report_expired && closed_loop && self.reports_in_flight() == 0 {
                        owed = self.report_or_owe(link, run, &mut gate);
                    }
                }
            }
        }
    }

    /// After the run stops, waits up to the drain time for the answers still expected.
    async fn drain(&mut self, link: &mut Link, run: &Run) {
        let _ = link.flush().await;
        let deadline = Instant::now() + run.plan.drain;
        while !self.pending.is_empty() {
            match tokio::time::timeout_at(deadline, link.read_some(&self.ident)).await {
                Ok(Ok(())) => {
                    while let Some(answer) = link.next_answer() {
                        self.settle(answer, link, run);
                    }
                }
                Ok(Err(_)) | Err(_) => break,
            }
        }
        let _ = link.flush().await;
        run.stats
            .errors_n(ErrorKind::UnansweredAtEnd, self.pending.len() as u64);
    }
}

/// Whether a terminal may send a report now: always, except while a paused run
/// (`Plan::paused`) is paused. Other runs never read the gate, so that it costs them nothing.
fn may_report(run: &Run, gate: &mut watch::Receiver<bool>) -> bool {
    !run.plan.paused || *gate.borrow_and_update()
}

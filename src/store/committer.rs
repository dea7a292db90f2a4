//! Group commit: one thread owns all writes, a second one owns the fsyncs.
//!
//! Callers queue requests on a bounded channel. The committer takes the first request, then
//! everything else already queued (up to a bound), and writes it all as one atomic batch: into
//! fjall's journal (handed to the OS) and its memtables. With `Durability::Buffered` it then wakes
//! the callers. With `Durability::Fsync` it passes the batch's callers to the syncer thread and
//! goes on with the next batch; the syncer takes every batch handed over so far, fsyncs the
//! journal once and wakes all of their callers. So the fsync of one batch overlaps the writing
//! of the next, and the number of fsyncs per second stays near the disk's fsync rate while
//! throughput grows with the number of concurrent callers.
//!
//! A batch's positions go into one track-log entry (see `track.rs`); the committer keeps them
//! and hands them, once `fold_points` have gathered, to a third thread, the folder (`folder.rs`),
//! which writes them as per-vehicle chunks.
use crate::metrics as m;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::engine::Engine;
use super::folder::{FoldJob, Folder};
use super::journal_sync::JournalSync;
use super::track::Pending;
use super::{Chain, Durability, StoreError, Write};

/// Most requests folded into one batch; bounds the batch's memory and the latency of the first
/// caller in it.
const MAX_BATCH_REQUESTS: usize = 1024;

/// Written batches waiting for the syncer. When it is full the committer waits, which bounds
/// how far writing can run ahead of durability.
const SYNC_QUEUE: usize = 64;

type Done = oneshot::Sender<Result<(), StoreError>>;

/// Whether fsync mode uses the syncer thread (the default). Only the store benchmark turns it
/// off, to measure what the overlap gains against the committer fsyncing each batch itself in
/// the same run.
static OVERLAP_FSYNC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// See [`OVERLAP_FSYNC`]; applies to stores opened afterwards.
pub(super) fn set_overlap_fsync(enabled: bool) {
    OVERLAP_FSYNC.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

pub(super) enum Request {
    Commit {
        writes: Vec<Write>,
        done: Done,
        chain: Option<Chain>,
    },
    Flush {
        done: Done,
    },
    /// Fold every position committed so far into chunks; answered once that is written.
    Fold {
        done: Done,
    },
}

/// A written batch whose callers wait for the fsync.
struct Written {
    started: Instant,
    dones: Vec<Done>,
    /// The chains of the batch's commits, marked broken if the sync fails.
    chains: Vec<Chain>,
    /// The batch's writes, freed by the syncer after it woke the callers: freeing thousands of
    /// strings allocated on other threads is a noticeable cost, better kept off the committer.
    _garbage: Vec<Vec<Write>>,
}

pub(super) fn spawn(
    engine: Engine,
    durability: Durability,
    fold_points: usize,
    rx: mpsc::Receiver<Request>,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name("store-committer".into())
        .spawn(move || run(engine, durability, fold_points, rx))
        .map_err(|e| StoreError::Engine(std::sync::Arc::new(e)))
}

fn wake(dones: Vec<Done>, result: &Result<(), StoreError>) {
    for done in dones {
        // A caller that gave up waiting (dropped its future) is not an error.
        let _ = done.send(result.clone());
    }
}

/// The flag every batch carries once a commit or a sync has failed in this process (see
/// `Write::FullReplay`): the shards may have lost track of pending records, and batches written
/// behind a failed sync may still become durable while its own pages are gone, so the bound that
/// start-up recovery puts on a vehicle's replay no longer holds. Every batch rather than one,
/// so that the flag is durable with whatever becomes durable after the failure.
const FULL_REPLAY: [Write; 1] = [Write::FullReplay(true)];

fn run(
    engine: Engine,
    durability: Durability,
    fold_points: usize,
    mut rx: mpsc::Receiver<Request>,
) {
    let mut folder = Folder::start(engine.clone());
    // Positions in the track log that no fold job has taken yet.
    let mut logged = Pending::default();
    let overlap = OVERLAP_FSYNC.load(std::sync::atomic::Ordering::Relaxed);
    // Set by this thread when an apply fails and by the syncer when a sync fails.
    let failed = Arc::new(AtomicBool::new(false));
    let syncer = match durability {
        Durability::Fsync if overlap => {
            let (tx, srx) = std_mpsc::sync_channel::<Written>(SYNC_QUEUE);
            let engine = engine.clone();
            let failed = failed.clone();
            match std::thread::Builder::new()
                .name("store-syncer".into())
                .spawn(move || run_syncer(engine, srx, &failed))
            {
                Ok(handle) => Some((tx, handle)),
                Err(e) => {
                    // Without a syncer thread, commit with fjall's own fsync (no overlap).
                    tracing::warn!(error = %e, "cannot start the store syncer thread");
                    None
                }
            }
        }
        Durability::Fsync | Durability::Buffered => None,
    };
    // Whether this thread must fsync each batch itself (fsync mode without a syncer).
    let write_mode = match (&syncer, durability) {
        (None, Durability::Fsync) => Durability::Fsync,
        _ => Durability::Buffered,
    };

    let mut pending: Vec<Request> = Vec::with_capacity(MAX_BATCH_REQUESTS);
    while let Some(first) = rx.blocking_recv() {
        pending.push(first);
        while pending.len() < MAX_BATCH_REQUESTS {
            match rx.try_recv() {
                Ok(r) => pending.push(r),
                Err(_) => break,
            }
        }
        // Commits that build on a failed one are answered without being applied.
        pending.retain_mut(|r| match r {
            Request::Commit {
                chain: Some(chain),
                done,
                ..
            } if chain.is_broken() => {
                let (dead, _) = oneshot::channel();
                let _ = std::mem::replace(done, dead).send(Err(StoreError::ChainBroken));
                false
            }
            _ => true,
        });
        if pending.is_empty() {
            continue;
        }
        let started = Instant::now();
        let flush = pending.iter().any(|r| matches!(r, Request::Flush { .. }));
        let commits = pending.iter().filter_map(|r| match r {
            Request::Commit { writes, .. } => Some(writes.as_slice()),
            Request::Flush { .. } | Request::Fold { .. } => None,
        });
        let flag = failed.load(Ordering::Acquire).then_some(&FULL_REPLAY[..]);
        let mut log = None;
        let mut result = engine.apply(commits.chain(flag), write_mode).map(|a| {
            log = a.log.map(|(seq, value)| (seq, value, a.positions));
            a.positions
        });
        if flush && result.is_ok() {
            // A flush makes everything durable now, whatever the mode, before it returns.
            if let Err(e) = engine.sync() {
                result = Err(e);
            }
        }
        let n = pending.len();
        metrics::histogram!(m::STORE_COMMIT_BATCH_SIZE).record(n as f64);
        // Requests still waiting behind this batch: a queue that stays deep means the disk or
        // this thread cannot keep up, and callers (the shards) are being held back.
        metrics::gauge!(m::STORE_QUEUE_DEPTH).set((rx.max_capacity() - rx.capacity()) as f64);
        match &result {
            Ok(positions) => metrics::counter!(m::POSITIONS_STORED).increment(*positions),
            Err(e) => {
                failed.store(true, Ordering::Release);
                metrics::counter!(m::STORE_COMMIT_ERRORS).increment(1);
                tracing::error!(error = %e, requests = n, "store commit failed");
            }
        }
        let mut dones: Vec<Done> = Vec::with_capacity(pending.len());
        let mut garbage: Vec<Vec<Write>> = Vec::with_capacity(pending.len());
        let mut chains: Vec<Chain> = Vec::new();
        let mut folds: Vec<Done> = Vec::new();
        let logged_before = logged.points;
        // Whatever became of the sync: the entry is in the log, and the fold that covers a later
        // entry moves the log's floor past it.
        if let Some((seq, value, positions)) = log {
            logged.push_logged(seq, value, positions as usize);
        }
        for r in pending.drain(..) {
            match r {
                Request::Commit {
                    writes,
                    done,
                    chain,
                } => {
                    dones.push(done);
                    garbage.push(writes);
                    if let Some(chain) = chain {
                        if result.is_err() {
                            // Before the next request is looked at: it may be the next link.
                            chain.mark_broken();
                        }
                        chains.push(chain);
                    }
                }
                Request::Flush { done } => dones.push(done),
                Request::Fold { done } => folds.push(done),
            }
        }
        let added = (logged.points - logged_before) as u64;
        if added > 0 {
            let unfolded = engine.count_unfolded(added, 0);
            metrics::gauge!(m::STORE_TRACK_LOG_POINTS).set(unfolded as f64);
        }
        if logged.points >= fold_points {
            folder.submit(FoldJob {
                pending: std::mem::take(&mut logged),
                done: None,
            });
        }
        for done in folds {
            folder.submit(FoldJob {
                pending: std::mem::take(&mut logged),
                done: Some(done),
            });
        }

        match (&syncer, result) {
            (Some((tx, _)), Ok(_)) if !flush => {
                let written = Written {
                    started,
                    dones,
                    chains,
                    _garbage: garbage,
                };
                if let Err(std_mpsc::SendError(w)) = tx.send(written) {
                    // The syncer died (it only does on a panic): answer with an error rather
                    // than claim durability.
                    wake(w.dones, &Err(StoreError::Closed));
                }
            }
            (_, result) => {
                metrics::histogram!(m::STORE_COMMIT_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                wake(dones, &result.map(|_| ()));
                // Callers first, freeing after.
                drop(garbage);
            }
        }
    }
    // The queue is closed: every Store handle is gone. Fold what is left (so that the next start
    // finds an empty log), let the syncer finish what it has, then make the tail durable before
    // exiting.
    folder.submit(FoldJob {
        pending: logged,
        done: None,
    });
    folder.finish();
    if let Some((tx, handle)) = syncer {
        drop(tx);
        let _ = handle.join();
    }
    if let Err(e) = engine.sync() {
        tracing::error!(error = %e, "final store sync failed");
    }
}

fn run_syncer(engine: Engine, rx: std_mpsc::Receiver<Written>, failed: &AtomicBool) {
    let mut journal = JournalSync::new(engine.path().to_path_buf());
    let mut fallback_logged = false;
    let mut batch: Vec<Written> = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        batch.extend(rx.try_iter());
        // Everything in `batch` was written before this point, so one fsync from here on
        // covers all of it.
        let synced = Instant::now();
        let result = match journal.sync() {
            Ok(()) => Ok(()),
            Err(e) => {
                if !fallback_logged {
                    tracing::warn!(error = %e, "syncing the journal directly failed; using the engine's persist");
                    fallback_logged = true;
                }
                engine.sync()
            }
        };
        metrics::histogram!(m::STORE_FSYNC_SECONDS).record(synced.elapsed().as_secs_f64());
        #[cfg(test)]
        let result = result.and_then(|()| super::engine::Faults::take(&engine.faults.sync));
        if let Err(e) = &result {
            metrics::counter!(m::STORE_COMMIT_ERRORS).increment(1);
            tracing::error!(error = %e, "store fsync failed");
            // Batches already written behind the failed one carry no flag (see `FULL_REPLAY`):
            // written now, before any later sync can happen (only this thread syncs the
            // journal), it is durable whenever they are.
            failed.store(true, Ordering::Release);
            if let Err(e) = engine.apply(std::iter::once(&FULL_REPLAY[..]), Durability::Buffered) {
                tracing::error!(error = %e, "could not mark the store for a full replay");
            }
            for chain in batch.iter().flat_map(|w| &w.chains) {
                chain.mark_broken();
            }
        }
        for w in &mut batch {
            metrics::histogram!(m::STORE_COMMIT_SECONDS).record(w.started.elapsed().as_secs_f64());
            wake(std::mem::take(&mut w.dones), &result);
        }
        // Free the writes only after every caller has been answered.
        batch.clear();
    }
}

//! The folder thread: writes the positions the committer gathered from the track log into
//! per-vehicle chunks, and keeps the log compact (see `track.rs` for the design).
use crate::metrics as m;
use std::sync::mpsc as std_mpsc;

use super::engine::Engine;
use super::track::Pending;
use super::StoreError;

type Done = tokio::sync::oneshot::Sender<Result<(), StoreError>>;

/// Positions for the folder, and whom to tell when they are written.
pub(super) struct FoldJob {
    pub pending: Pending,
    pub done: Option<Done>,
}

/// How many log entries folds remove (one tombstone each, one entry per group commit) between
/// two full compactions of the track log (see `Engine::compact_log`): at 100,000 positions/s in
/// commits of about 100, one every three minutes, over a few megabytes of tombstones.
const LOG_COMPACT_TOMBSTONES: usize = 200_000;

/// The folder's state. A failed fold is recorded in the engine (`Engine::fold_failure`): folds
/// stop for the rest of the process after it. Their positions stay in the log (readers find
/// them there, and the next start folds them), `Request::Fold` and the health check report the
/// failure. Folding later positions while earlier ones stay in the log would break the order
/// start-up relies on (every log entry up to the stored fold mark is folded).
#[derive(Default)]
pub(super) struct FoldState {
    /// Log entries removed since the log was last compacted.
    tombstones: usize,
}

/// The folder thread's end of the work, or the committer itself when that thread could not be
/// started.
pub(super) enum Folder {
    Thread(std_mpsc::SyncSender<FoldJob>, std::thread::JoinHandle<()>),
    Inline(Engine, FoldState),
}

impl Folder {
    pub fn start(engine: Engine) -> Folder {
        // One job queued while another is written: the committer blocks on the third, which
        // bounds the memory of positions waiting for a fold (see `StoreConfig::track_fold_points`).
        let (tx, rx) = std_mpsc::sync_channel::<FoldJob>(1);
        let thread_engine = engine.clone();
        match std::thread::Builder::new()
            .name("store-folder".into())
            .spawn(move || {
                let mut state = FoldState::default();
                for job in rx {
                    fold(&thread_engine, &mut state, job);
                }
            }) {
            Ok(handle) => Folder::Thread(tx, handle),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the store folder thread; folding on the committer");
                Folder::Inline(engine, FoldState::default())
            }
        }
    }

    pub fn submit(&mut self, job: FoldJob) {
        match self {
            Folder::Thread(tx, _) => {
                if let Err(std_mpsc::SendError(job)) = tx.send(job) {
                    // The folder died (only on a panic). The positions stay in the log, which the
                    // next start folds.
                    if let Some(done) = job.done {
                        let _ = done.send(Err(StoreError::Closed));
                    }
                }
            }
            Folder::Inline(engine, state) => fold(engine, state, job),
        }
    }

    pub fn finish(self) {
        if let Folder::Thread(tx, handle) = self {
            drop(tx);
            let _ = handle.join();
        }
    }
}

fn fold(engine: &Engine, state: &mut FoldState, job: FoldJob) {
    let result = match engine.fold_failure() {
        Some(first) => {
            if !job.pending.is_empty() {
                metrics::counter!(m::STORE_TRACK_FOLD_ERRORS).increment(1);
            }
            Err(first.clone())
        }
        None if job.pending.is_empty() => Ok(()),
        None => {
            let (points, removed) = (job.pending.points as u64, job.pending.seqs.len());
            let result = engine.fold(job.pending);
            match &result {
                Ok(()) => {
                    metrics::counter!(m::STORE_TRACK_FOLDS).increment(1);
                    let left = engine.count_unfolded(0, points);
                    metrics::gauge!(m::STORE_TRACK_LOG_POINTS).set(left as f64);
                    state.tombstones += removed;
                    if state.tombstones >= LOG_COMPACT_TOMBSTONES {
                        state.tombstones = 0;
                        if let Err(e) = engine.compact_log() {
                            // Only space and read time are at stake; the next attempt may work.
                            tracing::warn!(error = %e, "compacting the track log failed");
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!(m::STORE_TRACK_FOLD_ERRORS).increment(1);
                    tracing::error!(error = %e, "folding the track log failed; folds stop and positions stay in the log until the next start");
                    engine.set_fold_failure(e.clone());
                }
            }
            result
        }
    };
    if let Some(done) = job.done {
        let _ = done.send(result);
    }
}

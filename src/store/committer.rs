//! Group commit: one thread owns all writes.
//!
//! Callers queue requests on a bounded channel. The committer takes the first request, then
//! everything else already queued (up to a bound), writes it all as one batch, persists once and
//! wakes every caller with the shared result. While it is fsyncing, new requests pile up and
//! become the next batch, so the number of fsyncs per second stays near the disk's fsync rate
//! while throughput grows with the number of concurrent callers.
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::engine::Engine;
use super::{Durability, StoreError, Write};

/// Most requests folded into one batch; bounds the batch's memory and the latency of the first
/// caller in it.
const MAX_BATCH_REQUESTS: usize = 1024;

pub(super) enum Request {
    Commit {
        writes: Vec<Write>,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    Flush {
        done: oneshot::Sender<Result<(), StoreError>>,
    },
}

pub(super) fn spawn(
    engine: Engine,
    durability: Durability,
    rx: mpsc::Receiver<Request>,
) -> Result<std::thread::JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name("store-committer".into())
        .spawn(move || run(engine, durability, rx))
        .map_err(|e| StoreError::Engine(std::sync::Arc::new(e)))
}

fn run(engine: Engine, durability: Durability, mut rx: mpsc::Receiver<Request>) {
    let mut pending: Vec<Request> = Vec::with_capacity(MAX_BATCH_REQUESTS);
    while let Some(first) = rx.blocking_recv() {
        pending.push(first);
        while pending.len() < MAX_BATCH_REQUESTS {
            match rx.try_recv() {
                Ok(r) => pending.push(r),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let flush = pending.iter().any(|r| matches!(r, Request::Flush { .. }));
        let commits = pending.iter().filter_map(|r| match r {
            Request::Commit { writes, .. } => Some(writes.as_slice()),
            Request::Flush { .. } => None,
        });
        let mut result = engine.apply(commits, durability).map(|a| a.positions);
        if flush && result.is_ok() {
            if let Err(e) = engine.sync() {
                result = Err(e);
            }
        }
        let n = pending.len();
        metrics::histogram!("store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("store_commit_batch_size").record(n as f64);
        match &result {
            Ok(positions) => metrics::counter!("positions_stored_total").increment(*positions),
            Err(e) => {
                metrics::counter!("store_commit_errors_total").increment(1);
                tracing::error!(error = %e, requests = n, "store commit failed");
            }
        }
        let result = result.map(|_| ());
        for r in pending.drain(..) {
            let done = match r {
                Request::Commit { done, .. } | Request::Flush { done } => done,
            };
            // A caller that gave up waiting (dropped its future) is not an error.
            let _ = done.send(result.clone());
        }
    }
    // The queue is closed: every Store handle is gone. Make the tail durable before exiting.
    if let Err(e) = engine.sync() {
        tracing::error!(error = %e, "final store sync failed");
    }
}

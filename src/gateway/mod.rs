//! The JT/T 808 device listener: accepting connections within limits and running one session
//! task per connection.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics as m;
use crate::pipeline::live::LiveView;
use crate::pipeline::Pipeline;
use crate::store::Store;

pub mod admission;
pub mod answer;
pub mod auth_limit;
mod connection;
pub mod control;
pub mod enrollment;
mod headroom;
pub mod inbound;
mod outbox;
mod read_buffer;
pub mod sessions;

/// Everything a connection task needs, shared by all of them.
pub struct Gateway {
    pub config: Config,
    pub store: Store,
    pub pipeline: Pipeline,
    pub live: Arc<LiveView>,
    pub sessions: sessions::Sessions,
    pub auth_limiter: auth_limit::AuthLimiter,
    /// Rate and cap of self-registrations of unknown terminals.
    pub enrollment: enrollment::Enrollment,
    /// Cancelled on SIGINT/SIGTERM: the listener stops accepting, and it then tells every
    /// connection (through `controls`) to answer what is in flight and close.
    pub shutdown: CancellationToken,
    /// The stop signals of every live connection.
    pub controls: control::Controls,
    frame_counters: connection::FrameCounters,
    next_conn_id: AtomicU64,
    /// Per shard: which of its connections read next when it falls behind.
    admissions: Box<[Arc<admission::Admission>]>,
}

impl Gateway {
    pub fn new(
        config: Config,
        store: Store,
        pipeline: Pipeline,
        live: Arc<LiveView>,
        shutdown: CancellationToken,
    ) -> Self {
        let auth_limiter = auth_limit::AuthLimiter::new(&config.jt808.auth);
        let enrollment = enrollment::Enrollment::new(&config.jt808, std::time::Instant::now());
        let admissions = (0..pipeline.shards())
            .map(|_| {
                Arc::new(admission::Admission::new(
                    config.pipeline.admission_limit,
                    config.pipeline.admission_streak,
                ))
            })
            .collect();
        Gateway {
            config,
            store,
            pipeline,
            live,
            sessions: sessions::Sessions::new(),
            auth_limiter,
            enrollment,
            shutdown,
            controls: control::Controls::default(),
            frame_counters: connection::FrameCounters::new(),
            next_conn_id: AtomicU64::new(1),
            admissions,
        }
    }

    /// The shutdown grace period is over: every connection closes at once.
    pub fn hard_stop(&self) {
        self.controls.broadcast(control::HARD_STOP);
    }
}

/// Accepts device connections until shutdown. Connections beyond `jt808.max_connections` are
/// closed right after accept and counted; accepting them first (rather than leaving them in the
/// kernel backlog) lets the device see a prompt close and retry elsewhere or later.
pub async fn serve(listener: TcpListener, gw: Arc<Gateway>, tasks: TaskTracker) {
    let permits = Arc::new(Semaphore::new(gw.config.jt808.max_connections));
    if gw.admissions.iter().any(|a| a.enabled()) {
        let (idle, watched) = tokio::sync::watch::channel(0.0);
        for (shard, a) in gw.admissions.iter().enumerate() {
            gw.pipeline
                .spawn_on(shard, headroom::balance(shard, a.clone(), watched.clone()));
        }
        tokio::spawn(headroom::sample(idle, gw.shutdown.clone()));
    }
    loop {
        let accepted = tokio::select! {
            _ = gw.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    metrics::counter!(m::CONNECTIONS_ACCEPTED).increment(1);
                    let id = gw.next_conn_id.fetch_add(1, Ordering::Relaxed);
                    // Tracked by the token in its lease rather than by `tasks.spawn`: after it
                    // authenticates, the connection goes on as a task on its shard's thread.
                    let lease = connection::Lease {
                        permit,
                        task: tasks.token(),
                    };
                    tokio::spawn(connection::run(stream, peer, id, gw.clone(), lease));
                }
                Err(_) => {
                    metrics::counter!(m::CONNECTIONS_REFUSED).increment(1);
                    tracing::warn!(%peer, limit = gw.config.jt808.max_connections, "connection refused: jt808.max_connections reached");
                    drop(stream);
                }
            },
            Err(err) => {
                // Typically EMFILE/ENFILE: back off briefly instead of spinning on the error.
                tracing::error!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Connections registered from here on start with the signal set.
    gw.controls.broadcast(control::SHUTDOWN);
    tracing::info!("jt808 listener stopped accepting");
}

//! Stop signals for connection tasks: replaced by a newer connection of the same terminal,
//! graceful shutdown, hard stop.
//!
//! Each connection has its own [`Control`]: an atomic word of signal bits and one waker slot.
//! Checking it costs two atomic operations. Connections used to wait on `CancellationToken`s
//! instead, two of them shared by every connection in the process; each wait registered with and
//! each poll locked the token's waiter list, so every frame on every connection went through the
//! same two mutexes, which showed in profiles at tens of thousands of frames per second. Signals
//! are rare (a reconnect, a shutdown), waiting for them is constant, so the cost belongs on the
//! signalling side: [`Controls::broadcast`] walks every live connection.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

/// A newer connection of the same terminal authenticated: stop reading, answer, close.
pub const REPLACED: u8 = 1;
/// Graceful shutdown: stop reading, answer what is in flight, close.
pub const SHUTDOWN: u8 = 2;
/// The shutdown grace period is over: close at once.
pub const HARD_STOP: u8 = 4;

/// What holds a connection's [`Control`]. A connection's control lives in its outbox's
/// allocation, which every turn of the connection's loop uses anyway: as an allocation of its
/// own it was one more cache line to bring in per frame at 10,000 terminals (session 14).
pub trait HasControl: Send + Sync {
    fn control(&self) -> &Control;
}

impl HasControl for Control {
    fn control(&self) -> &Control {
        self
    }
}

/// A shared handle to a connection's control.
pub type ControlRef = Arc<dyn HasControl>;

/// The signals of one connection.
#[derive(Default)]
pub struct Control {
    bits: AtomicU8,
    waker: AtomicWaker,
}

impl Control {
    /// Sets `bit` and wakes the connection task.
    pub fn signal(&self, bit: u8) {
        self.bits.fetch_or(bit, Ordering::AcqRel);
        self.waker.wake();
    }

    /// The signals set so far.
    pub fn bits(&self) -> u8 {
        self.bits.load(Ordering::Acquire)
    }

    /// Ready with the signal bits once any bit of `mask` is set.
    pub fn poll_any(&self, cx: &mut Context<'_>, mask: u8) -> Poll<u8> {
        let bits = self.bits();
        if bits & mask != 0 {
            return Poll::Ready(bits);
        }
        self.waker.register(cx.waker());
        // A signal set between the first check and the registration would otherwise be missed.
        let bits = self.bits();
        if bits & mask != 0 {
            Poll::Ready(bits)
        } else {
            Poll::Pending
        }
    }

    /// Drops the waiting task's waker: a connection that closed no longer waits, and its outbox,
    /// which holds this control, may outlive it (acknowledgements in flight, its session entry).
    pub fn forget_waker(&self) {
        drop(self.waker.take());
    }

    /// Waits until any bit of `mask` is set and returns the bits.
    pub async fn any(&self, mask: u8) -> u8 {
        std::future::poll_fn(|cx| self.poll_any(cx, mask)).await
    }
}

/// Every live connection's [`Control`], for broadcasting shutdown signals.
#[derive(Default)]
pub struct Controls {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    live: HashMap<u64, ControlRef>,
    /// Signals broadcast so far; a connection registered later starts with them set.
    broadcast: u8,
}

impl Controls {
    /// Registers the control of connection `id`.
    pub fn register(&self, id: u64, control: ControlRef) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.broadcast != 0 {
            control.control().signal(inner.broadcast);
        }
        inner.live.insert(id, control);
    }

    /// Forgets connection `id` (it has ended).
    pub fn remove(&self, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.live.remove(&id);
        if inner.live.is_empty() && inner.live.capacity() > 1024 {
            // A fleet that reconnected elsewhere should not leave a large table behind.
            inner.live.shrink_to_fit();
        }
    }

    /// Signals `bit` to every live connection and to every connection registered later.
    pub fn broadcast(&self, bit: u8) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.broadcast |= bit;
        for control in inner.live.values() {
            control.control().signal(bit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_wakes_the_waiting_task() {
        let control = Arc::new(Control::default());
        let waiter = {
            let control = control.clone();
            tokio::spawn(async move { control.any(REPLACED | SHUTDOWN).await })
        };
        tokio::task::yield_now().await;
        control.signal(HARD_STOP);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "a bit outside the mask must not wake the wait"
        );
        control.signal(SHUTDOWN);
        assert_eq!(waiter.await.unwrap(), HARD_STOP | SHUTDOWN);
    }

    #[test]
    fn a_connection_registered_after_a_broadcast_starts_signalled() {
        let controls = Controls::default();
        let (early, late) = (Arc::new(Control::default()), Arc::new(Control::default()));
        controls.register(1, early.clone());
        controls.broadcast(SHUTDOWN);
        controls.register(2, late.clone());
        assert_eq!(early.bits(), SHUTDOWN);
        assert_eq!(late.bits(), SHUTDOWN);
        controls.remove(1);
        controls.remove(2);
        controls.broadcast(HARD_STOP);
        assert_eq!(
            early.bits(),
            SHUTDOWN,
            "a removed connection is not signalled"
        );
    }
}

//! A connection's socket and the answers waiting to go out on it, in frame order.
//!
//! Both the connection's task and its shard's commit stage write here. The connection queues
//! answers as frames come in; a position's acknowledgement waits in the queue until its shard
//! reports the commit outcome through [`AckSink::complete`], which writes every answer that is
//! then ready at the front of the queue straight to the socket. So a position costs its
//! connection's task one poll, to read it, rather than a second one to write its answer
//! (benches/RESULTS.md, session 8).
//!
//! The socket lives here, under the same lock as the queue, so that whoever writes holds it
//! and the descriptor cannot be closed (and reused by another connection) meanwhile. The task
//! takes the socket out while it moves to another thread and puts it back there; answers
//! completed in between wait in the queue. A write the socket does not take whole leaves its
//! rest here for the task, which waits for the socket to be writable (with a deadline); nothing
//! else is written before it.
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use liengate_protocols::jt808::Header;
use tokio::net::TcpStream;

use super::admission::{Admission, SlotRef};
use super::answer::{self, result};
use super::control::{Control, HasControl};
use crate::pipeline::{AckSink, CommitFailed, Committed};

/// An answer waiting to be written.
enum Entry {
    Ready(Bytes),
    /// 0x8001 for a position frame, written once its commit outcome is known.
    Ack {
        seq: u64,
        to: Header,
        serial: u16,
        /// Counted in its shard's frames in flight (see [`Outbox::set_admission`]), and against
        /// the connection's streak slot if it held one.
        counted: bool,
        slot: Option<SlotRef>,
    },
    /// A position's commit outcome is known; encoded when written.
    Acked {
        to: Header,
        serial: u16,
        result: u8,
    },
}

/// `repr(C)` with the control first: it then shares the allocation's first cache line with the
/// reference counts and the lock, which every turn of the connection's loop touches anyway.
/// Laid out by the compiler, it sat on a line of its own, still one miss per turn at 10,000
/// terminals (session 14).
#[repr(C)]
pub(super) struct Outbox {
    /// The connection's stop signals, here to share this allocation (see `HasControl`).
    control: Control,
    inner: Mutex<Inner>,
}

impl HasControl for Outbox {
    fn control(&self) -> &Control {
        &self.control
    }
}

struct Inner {
    /// `None` while the connection moves between threads, and once it closed.
    stream: Option<TcpStream>,
    queue: VecDeque<Entry>,
    next_seq: u64,
    /// What a short write left: written before anything else, by the connection's task.
    rest: Option<Bytes>,
    /// A write error met by the commit stage, for the task to close the connection with.
    error: Option<std::io::Error>,
    /// Set by the task while it waits for the queue to drain (too many answers outstanding, or
    /// closing): the commit stage then wakes it whenever it wrote something.
    wants_progress: bool,
    /// Something the task waits for happened since it last looked.
    signalled: bool,
    waker: Option<Waker>,
    /// The admission of the connection's shard, once it runs there: acknowledgements queued
    /// from then on count as the shard's frames in flight until their outcome arrives.
    admission: Option<Arc<Admission>>,
}

/// What writing the ready answers came to.
pub(super) enum Flushed {
    /// Everything ready is written (or the socket is away, moving); `queued` answers are left
    /// in the queue, waiting for their commit (the same lock, rather than a second one for the
    /// connection loop's in-flight check).
    Done { queued: usize },
    /// The socket took only part: the task must write the rest (see [`Outbox::write_rest`]).
    Rest,
}

impl Outbox {
    pub(super) fn new(stream: TcpStream) -> Self {
        Outbox {
            inner: Mutex::new(Inner {
                stream: Some(stream),
                queue: VecDeque::new(),
                next_seq: 0,
                rest: None,
                error: None,
                wants_progress: false,
                signalled: false,
                waker: None,
                admission: None,
            }),
            control: Control::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves nothing half-done that matters more than
        // answering the device: go on with the state as it is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        let inner = self.lock();
        inner.queue.is_empty() && inner.rest.is_none()
    }

    pub(super) fn push_ready(&self, bytes: Bytes) {
        self.lock().push(Entry::Ready(bytes));
    }

    /// Queues the acknowledgement of a position frame; the number identifies it to
    /// [`AckSink::complete`].
    pub(super) fn push_ack(&self, to: Header, serial: u16, slot: Option<SlotRef>) -> u64 {
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let counted = match &inner.admission {
            Some(a) => {
                a.enter(slot);
                true
            }
            None => false,
        };
        inner.push(Entry::Ack {
            seq,
            to,
            serial,
            counted,
            slot,
        });
        seq
    }

    /// Counts the acknowledgements queued from now on in `admission`'s frames in flight.
    pub(super) fn set_admission(&self, admission: Arc<Admission>) {
        self.lock().admission = Some(admission);
    }

    /// Writes every answer at the front of the queue that is ready, in one write.
    pub(super) fn flush(&self) -> std::io::Result<Flushed> {
        let mut inner = self.lock();
        if let Some(err) = inner.error.take() {
            return Err(err);
        }
        inner.write_ready()?;
        Ok(if inner.rest.is_some() {
            Flushed::Rest
        } else {
            Flushed::Done {
                queued: inner.queue.len(),
            }
        })
    }

    /// Writes what a short write left, waiting for the socket to take it.
    pub(super) async fn write_rest(&self) -> std::io::Result<()> {
        loop {
            std::future::poll_fn(|cx| {
                let inner = self.lock();
                match (&inner.rest, &inner.stream) {
                    (Some(_), Some(stream)) => stream.poll_write_ready(cx),
                    _ => Poll::Ready(Ok(())),
                }
            })
            .await?;
            let mut inner = self.lock();
            let Inner { stream, rest, .. } = &mut *inner;
            let (Some(stream), Some(bytes)) = (stream.as_ref(), rest.as_mut()) else {
                return Ok(());
            };
            match stream.try_write(bytes) {
                Ok(n) if n == bytes.len() => {
                    *rest = None;
                    // What became ready meanwhile goes out now.
                    inner.write_ready()?;
                    if inner.rest.is_none() {
                        return Ok(());
                    }
                }
                Ok(n) => {
                    let _ = bytes.split_to(n);
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Ready when something the task waits for happened: an answer was written while it waited
    /// for the queue to drain, a write was short or failed. `wants_progress` says whether the
    /// task waits for the queue to drain.
    pub(super) fn poll_signal(&self, cx: &mut Context<'_>, wants_progress: bool) -> Poll<()> {
        let mut inner = self.lock();
        inner.wants_progress = wants_progress;
        if std::mem::take(&mut inner.signalled) {
            return Poll::Ready(());
        }
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    pub(super) fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &self.lock().stream {
            Some(stream) => stream.poll_read_ready(cx),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }

    /// Reads what the socket has (see [`crate::net::read_available`]).
    pub(super) fn read_available(&self, buf: &mut BytesMut) -> std::io::Result<usize> {
        match &mut self.lock().stream {
            Some(stream) => crate::net::read_available(stream, buf),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Takes the socket out, to move the connection to another thread.
    pub(super) fn take_stream(&self) -> Option<TcpStream> {
        self.lock().stream.take()
    }

    /// Puts the socket back after a move; the answers that became ready meanwhile are written
    /// by the task's next flush.
    pub(super) fn put_stream(&self, stream: TcpStream) {
        self.lock().stream = Some(stream);
    }

    /// Closes the socket and forgets the answers that did not go out.
    pub(super) fn close(&self) {
        let mut inner = self.lock();
        inner.stream = None;
        let queue = std::mem::take(&mut inner.queue);
        inner.rest = None;
        inner.waker = None;
        self.control.forget_waker();
        let admission = inner.admission.clone();
        drop(inner);
        // Outcomes still to come find no entry: their frames leave the count now.
        if let Some(a) = admission {
            for e in &queue {
                if let Entry::Ack {
                    counted: true,
                    slot,
                    ..
                } = e
                {
                    a.leave(*slot);
                }
            }
        }
    }
}

impl AckSink for Outbox {
    fn complete(&self, seq: u64, outcome: Result<Committed, CommitFailed>) {
        let mut inner = self.lock();
        // Outcomes mostly come in queue order: the entry is nearly always at the front.
        let Some(entry) = inner
            .queue
            .iter_mut()
            .find(|e| matches!(e, Entry::Ack { seq: s, .. } if *s == seq))
        else {
            // The connection closed and dropped its queue.
            return;
        };
        let Entry::Ack {
            to,
            serial,
            counted,
            slot,
            ..
        } = *entry
        else {
            unreachable!("matched above")
        };
        *entry = Entry::Acked {
            to,
            serial,
            result: ack_result(outcome),
        };
        let wrote = match inner.write_ready() {
            Ok(wrote) => wrote,
            Err(err) => {
                inner.error = Some(err);
                true
            }
        };
        let mut waker = None;
        if (wrote && inner.wants_progress) || inner.rest.is_some() || inner.error.is_some() {
            inner.signalled = true;
            waker = inner.waker.take();
        }
        if counted {
            // Under the lock, saving an `Arc` clone: admission takes no outbox lock.
            if let Some(a) = &inner.admission {
                a.leave(slot);
            }
        }
        drop(inner);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl Inner {
    fn push(&mut self, entry: Entry) {
        if self.queue.capacity() == 0 {
            self.queue = spare_queues::take();
        }
        self.queue.push_back(entry);
    }

    /// Writes the ready answers at the front of the queue; true when it wrote any. Writes nothing
    /// while a rest is pending (it goes first) or the socket is away. An emptied queue goes back
    /// to the thread's pool.
    fn write_ready(&mut self) -> std::io::Result<bool> {
        if self.rest.is_some() {
            return Ok(false);
        }
        // Nothing to write: the connection's loop asks after every read, and in a closed loop
        // the queue then holds only the acknowledgement waiting for its commit. Going through the
        // thread's write buffer to find that out cost over a hundred instructions a frame.
        if matches!(self.queue.front(), None | Some(Entry::Ack { .. })) {
            self.release_empty_queue();
            return Ok(false);
        }
        let Some(stream) = &self.stream else {
            return Ok(false);
        };
        let queue = &mut self.queue;
        let rest = WRITE_SCRATCH.with_borrow_mut(|out| -> std::io::Result<Option<Bytes>> {
            out.clear();
            while let Some(front) = queue.front() {
                match front {
                    Entry::Ready(bytes) => out.extend_from_slice(bytes),
                    Entry::Acked { to, serial, result } => {
                        answer::general(to, *serial, *result, out)
                    }
                    Entry::Ack { .. } => break,
                }
                queue.pop_front();
            }
            if out.is_empty() {
                return Ok(None);
            }
            let written = match stream.try_write(out) {
                Ok(n) => n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => 0,
                Err(err) => return Err(err),
            };
            let rest = (written < out.len()).then(|| Bytes::copy_from_slice(&out[written..]));
            if out.capacity() > WRITE_SCRATCH_KEEP {
                // One large burst of answers must not pin a large buffer to the thread.
                *out = BytesMut::new();
            }
            Ok(Some(rest.unwrap_or_default()))
        })?;
        self.release_empty_queue();
        match rest {
            None => Ok(false),
            Some(rest) => {
                if !rest.is_empty() {
                    self.rest = Some(rest);
                }
                Ok(true)
            }
        }
    }

    /// Gives an emptied answer queue back to the thread's pool: an idle connection should not
    /// keep its queue allocated.
    fn release_empty_queue(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            spare_queues::give_back(std::mem::take(&mut self.queue));
        }
    }
}

fn ack_result(r: Result<Committed, CommitFailed>) -> u8 {
    match r {
        Ok(_) => result::OK,
        // "Failure" makes the device keep the position and send it again.
        Err(CommitFailed) => result::FAILURE,
    }
}

/// Emptied answer queues kept for reuse on their thread.
///
/// A connection's queue is freed whenever it empties, so that the many idle connections hold
/// none; a closed loop empties and refills it for every position, which cost an allocation, a
/// free and the deque's growth each time (session 13). The queues go back to a bounded per-thread
/// pool instead, and the next connection to queue an answer on that thread takes one.
mod spare_queues {
    use super::Entry;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// Queues a thread keeps; beyond it they are freed.
    const KEEP: usize = 256;
    /// A queue that grew beyond this many entries is freed rather than kept.
    const LARGEST: usize = 4;

    thread_local! {
        static SPARE: RefCell<Vec<VecDeque<Entry>>> = const { RefCell::new(Vec::new()) };
    }

    /// A queue from the pool, or a new one without an allocation yet.
    pub(super) fn take() -> VecDeque<Entry> {
        SPARE
            .try_with(|spare| spare.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Keeps an empty queue for the next connection on this thread, if the pool has room.
    pub(super) fn give_back(queue: VecDeque<Entry>) {
        debug_assert!(queue.is_empty());
        if queue.capacity() > LARGEST {
            return;
        }
        // During thread exit the pool may be gone: the queue is then simply freed.
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < KEEP {
                spare.push(queue);
            }
        });
    }
}

thread_local! {
    /// Where answers are encoded before their write: one buffer per thread rather than one
    /// allocation per answer.
    static WRITE_SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// Largest answer scratch buffer a thread keeps between writes.
const WRITE_SCRATCH_KEEP: usize = 16 * 1024;

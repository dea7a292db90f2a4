//! The scheduling policy of the gateway's busy threads: Linux's `SCHED_BATCH`.
//!
//! Under load a shard worker wakes thousands of times a second (frames to read, a commit made
//! durable). Under the default policy each wake-up may preempt whatever runs on that core at
//! once: another gateway thread, or on a shared machine the processes the gateway shares it
//! with, and every such switch costs both sides their caches. `SCHED_BATCH` is the same fair
//! scheduler, with the same share of the CPU, except that its threads do not preempt on
//! wake-up: they run when the current thread's time slice ends or it blocks. That trades a
//! little wake-up latency (typically a few milliseconds, and only while the core is busy) for
//! fewer, longer runs. The store's committer and syncer stay on the default policy: they run
//! briefly and every acknowledgement waits for them, and with them under `SCHED_BATCH` too the
//! closed loop left the CPU idle more often. Measured in benches/RESULTS.md, session 16. Any
//! unprivileged thread may choose it for itself; `pipeline.batch_scheduling` turns it off.
//! Threads started from a thread under `SCHED_BATCH` inherit it: nothing starts threads from a
//! shard thread today (no `spawn_blocking` on the shard runtimes), and whatever does later should
//! keep that in mind.
//!
//! Written with `libc` because neither the standard library nor rustix sets a thread's
//! scheduling policy.

/// Spawns a thread named `name` that first puts itself under `SCHED_BATCH` if `batch` is set.
pub fn spawn<F, T>(name: &str, batch: bool, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let thread = name.to_string();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            if batch {
                batch_current_thread(&thread);
            }
            f()
        })
}

/// Puts the calling thread under `SCHED_BATCH`. A failure (a kernel or sandbox that refuses the
/// call) is logged and changes nothing else: the thread keeps the default policy.
fn batch_current_thread(thread: &str) {
    if let Err(err) = set_batch() {
        tracing::warn!(thread, error = %err, "cannot use SCHED_BATCH; keeping the default scheduling policy");
    }
}

#[cfg(target_os = "linux")]
fn set_batch() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads `param`, a valid, initialised struct that outlives the
    // call; pid 0 is the calling thread, as Linux applies the policy per thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> std::io::Result<()> {
    Ok(())
}

/// The calling thread's scheduling policy, for tests.
#[cfg(all(test, target_os = "linux"))]
fn current_policy() -> i32 {
    // SAFETY: no arguments besides pid 0, the calling thread.
    unsafe { libc::sched_getscheduler(0) }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_thread_runs_under_sched_batch_only_when_asked() {
        let before = current_policy();
        let inside = spawn("test-batch", true, current_policy)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(inside, libc::SCHED_BATCH);
        let plain = spawn("test-plain", false, current_policy)
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            plain, before,
            "without `batch` the thread keeps the default policy"
        );
        assert_eq!(current_policy(), before, "the policy is per thread");
    }
}

//! The shard workers' scheduling policy, black-box (Linux only): under `SCHED_BATCH` by default,
//! under the default policy with `pipeline.batch_scheduling = false`, and the store's threads
//! always under the default policy.
#![cfg(target_os = "linux")]
mod common;

use common::*;

/// Linux's numbers for the policies, as `/proc/<pid>/task/<tid>/stat` shows them.
const SCHED_OTHER: u32 = 0;
const SCHED_BATCH: u32 = 3;

/// (thread name, scheduling policy) of every thread of `pid`.
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // `comm` is in parentheses and may hold spaces: the fields after it are counted from the
        // last ')', where field 3 (the state) starts; the policy is field 41.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = rest
            .split_whitespace()
            .nth(41 - 3)
            .unwrap()
            .parse()
            .unwrap();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        out.push((name.trim().to_string(), policy));
    }
    out
}

fn policies_of(server: &Server, prefix: &str) -> Vec<u32> {
    thread_policies(server.pid())
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, policy)| policy)
        .collect()
}

#[test]
fn shard_workers_run_under_sched_batch_unless_configured_otherwise() {
    let server = start(Some("[pipeline]\nshards = 2\n"));
    // Each shard thread sets its own policy as it starts. A sandbox may refuse the call: the
    // gateway then says so and runs on, which is all this test can ask of it there.
    server.eventually("both shard threads under SCHED_BATCH", || {
        policies_of(&server, "shard-") == vec![SCHED_BATCH; 2]
            || server.stderr().contains("cannot use SCHED_BATCH")
    });
    if server.stderr().contains("cannot use SCHED_BATCH") {
        eprintln!("this system refuses SCHED_BATCH; the policy itself is not checked");
        return;
    }
    for store_thread in ["store-committer", "store-syncer"] {
        // The committer starts the syncer from its own thread.
        server.eventually(store_thread, || {
            policies_of(&server, store_thread).len() == 1
        });
        assert_eq!(policies_of(&server, store_thread), vec![SCHED_OTHER]);
    }

    let server = start(Some("[pipeline]\nshards = 2\nbatch_scheduling = false\n"));
    server.eventually("both shard threads running", || {
        policies_of(&server, "shard-").len() == 2
    });
    assert_eq!(policies_of(&server, "shard-"), vec![SCHED_OTHER; 2]);
}

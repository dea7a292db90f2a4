//! kill -9 at the store level: a child process commits positions from many concurrent tasks and
//! prints each one only after `commit` returned; the parent SIGKILLs it mid-stream, reopens the
//! store and checks that every acknowledged position is in the track and that each vehicle's last
//! known position is at least as new as its newest acknowledged one.
//!
//! The child is this same test binary re-run with `--exact child_writer --ignored` and the
//! data dir in an environment variable, so no extra binary is needed.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use liengate::model::{Fix, FixFlags, LastKnown, Motion};
use liengate::store::{Durability, Store, StoreConfig, Write};

const ENV_DIR: &str = "LIENGATE_CRASH_CHILD_DIR";
const ENV_MODE: &str = "LIENGATE_CRASH_CHILD_MODE";
const TASKS: usize = 32;
/// Positions per commit in the child.
const PER_COMMIT: usize = 16;

fn fix(terminal: &str, time_ms: i64) -> Fix {
    Fix {
        terminal_id: terminal.into(),
        time_ms,
        received_ms: time_ms,
        latitude: 22.5,
        longitude: 113.9,
        altitude_m: 0,
        speed_kmh: 30.0,
        course: 0,
        alarm: 0,
        status: 3,
        flags: FixFlags::empty(),
        battery_pct: None,
        voltage_mv: None,
    }
}

fn config(dir: &Path, mode: &str) -> StoreConfig {
    let mut cfg = StoreConfig::new(dir);
    cfg.durability = match mode {
        "buffered" => Durability::Buffered,
        _ => Durability::Fsync,
    };
    // Folds every 2,000 positions instead of 65,536, so that kills land with positions in the
    // track log, in chunks, and in folds being written, and each restart folds a log.
    cfg.track_fold_points = 2_000;
    cfg
}

/// The child: commits forever until killed. Not a test on its own (ignored), run by the parent.
#[test]
#[ignore = "child process of kill9_* tests"]
fn child_writer() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return;
    };
    let mode = std::env::var(ENV_MODE).unwrap_or_default();
    let store = Store::open(&config(Path::new(&dir), &mode)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Times continue after what a previous (killed) child stored, so every round adds new keys.
    let base = store
        .all_last_known()
        .unwrap()
        .iter()
        .map(|lk| lk.fix.time_ms)
        .max()
        .unwrap_or(0)
        + 1_000;
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let vehicle = format!("V{t}");
                let terminal = format!("0138000000{t:02}");
                let mut time_ms = base;
                loop {
                    // Several positions per commit, like a shard worker, so that each round
                    // writes enough to fill and flush memtables: kills then also land during
                    // flushes and journal rotations.
                    let mut writes = Vec::with_capacity(2 * PER_COMMIT);
                    for k in 0..PER_COMMIT as i64 {
                        let f = fix(&terminal, time_ms + k * 1_000);
                        writes.push(Write::Fix {
                            vehicle_id: vehicle.as_str().into(),
                            fix: f.clone(),
                        });
                        writes.push(Write::LastKnown(LastKnown {
                            vehicle_id: vehicle.as_str().into(),
                            fix: f,
                            motion: Motion::Moving,
                            acc: true,
                            last_frame_ms: time_ms,
                            signals: Default::default(),
                        }));
                    }
                    store.commit(writes).await.unwrap();
                    // Acknowledge only after the commit returned, as the gateway does.
                    let mut out = std::io::stdout().lock();
                    for k in 0..PER_COMMIT as i64 {
                        writeln!(out, "ack {vehicle} {}", time_ms + k * 1_000).unwrap();
                    }
                    out.flush().unwrap();
                    drop(out);
                    time_ms += PER_COMMIT as i64 * 1_000;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Runs one child until it has acknowledged at least `min_acks` positions and run for
/// `min_run`, kills it with SIGKILL and returns every acknowledgement it printed.
fn run_and_kill(dir: &Path, mode: &str, min_acks: usize, min_run: Duration) -> Vec<(String, i64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, dir)
        .env(ENV_MODE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = Vec::new();
    let started = Instant::now();
    let parse = |line: &str, acks: &mut Vec<(String, i64)>| {
        if let Some(rest) = line.strip_prefix("ack ") {
            let (v, t) = rest.split_once(' ').unwrap();
            acks.push((v.to_owned(), t.parse().unwrap()));
        }
    };
    while acks.len() < min_acks || started.elapsed() < min_run {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "child made no progress: {} acks",
            acks.len()
        );
        match lines.next() {
            Some(line) => parse(&line.unwrap(), &mut acks),
            None => panic!("child exited early after {} acks", acks.len()),
        }
    }
    // Child::kill is SIGKILL on Unix: no destructor, no flush, no fsync in the child.
    child.kill().unwrap();
    // Lines the child printed before it died are acknowledgements too.
    for line in lines {
        match line {
            Ok(line) => parse(&line, &mut acks),
            Err(_) => break,
        }
    }
    child.wait().unwrap();
    acks
}

fn verify(dir: &Path, mode: &str, acked: &[(String, i64)]) {
    let store = Store::open(&config(dir, mode)).unwrap();
    let mut newest: HashMap<&str, i64> = HashMap::new();
    for (v, t) in acked {
        let e = newest.entry(v).or_insert(i64::MIN);
        *e = (*e).max(*t);
    }
    // One scan per vehicle, then look every acknowledgement up in it.
    let mut stored: HashMap<&str, std::collections::HashSet<i64>> = HashMap::new();
    for v in newest.keys() {
        let times = store
            .track(v, i64::MIN, i64::MAX, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|f| f.time_ms)
            .collect();
        stored.insert(v, times);
    }
    let mut missing = Vec::new();
    for (v, t) in acked {
        if !stored[v.as_str()].contains(t) {
            missing.push((v.clone(), *t));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged positions lost after kill -9, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    for (v, t) in &newest {
        let lk = store
            .last_known(v)
            .unwrap()
            .unwrap_or_else(|| panic!("no last known for {v}"));
        assert!(
            lk.fix.time_ms >= *t,
            "last known of {v} is {} but {t} was acknowledged",
            lk.fix.time_ms
        );
        // The last known must be a position that is also in the track (same atomic batch).
        assert_eq!(
            store
                .track(v, lk.fix.time_ms, lk.fix.time_ms, 1)
                .unwrap()
                .len(),
            1,
            "last known of {v} not in its track"
        );
    }
}

fn kill9_rounds(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    for round in 0..3 {
        // Later rounds run longer, so kills land at different points of the engine's life
        // (first writes, memtable flushes, recovery of earlier kills).
        let acked = run_and_kill(
            dir.path(),
            mode,
            2_000 * (round + 1),
            Duration::from_millis(400 * (round as u64 + 1)),
        );
        assert!(!acked.is_empty());
        eprintln!(
            "{mode} round {round}: {} positions acknowledged before kill -9",
            acked.len()
        );
        all.extend(acked);
        // Verify after every round: recovery must also survive being killed again later.
        verify(dir.path(), mode, &all);
    }
}

#[test]
fn kill9_loses_nothing_acknowledged_with_fsync() {
    kill9_rounds("fsync");
}

#[test]
fn kill9_loses_nothing_acknowledged_with_buffered() {
    kill9_rounds("buffered");
}

//! Store micro-benchmark: fjall vs redb for the gateway's access patterns, and the liengate
//! `Store` (group commit) end to end.
//!
//! Run: `cargo bench --bench store --features bench-redb` (without the feature only fjall is
//! measured). Extra arguments after `--`: `quick` for a short smoke run, `engines` or `store`
//! for one part, `soak` for a 20 s shard-like run, `reopen` for the restart time after 1M
//! positions. `STORE_BENCH_CPU=1` prints the committer's and the process's CPU time per
//! position for every Store case. Results and the commands used are recorded in
//! benches/RESULTS.md, section "Store".
//!
//! A plain harness rather than criterion: the quantities that matter here (fsyncs per second,
//! latency percentiles of a commit, throughput under N concurrent committers) are measured over
//! a fixed wall-clock window on a real disk, which criterion's iteration model does not fit.
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use liengate::model::{Fix, FixFlags, LastKnown, Motion};
use liengate::store::{Durability, Store, StoreConfig, Write};
use rand::{Rng, SeedableRng};

fn fix(terminal: u32, time_ms: i64) -> Fix {
    Fix {
        terminal_id: format!("0138{terminal:08}").into(),
        time_ms,
        received_ms: time_ms + 800,
        latitude: 22.543 + f64::from(terminal % 1000) * 1e-4,
        longitude: 113.94 + (time_ms % 100_000) as f64 * 1e-7,
        altitude_m: 35,
        speed_kmh: 48.3,
        course: 271,
        alarm: 0,
        status: 0x0000_0003,
        flags: FixFlags::empty(),
        battery_pct: None,
        voltage_mv: Some(12_600),
    }
}

fn last_known(vehicle: &str, f: &Fix) -> LastKnown {
    LastKnown {
        vehicle_id: vehicle.into(),
        fix: f.clone(),
        motion: Motion::Moving,
        acc: true,
        last_frame_ms: f.received_ms,
        signals: Default::default(),
    }
}

fn track_key(vehicle: &str, time_ms: i64, terminal: &str) -> Vec<u8> {
    // Same layout as the store's keys.rs (length-prefixed vehicle, order-preserving time).
    let mut k = Vec::with_capacity(2 + vehicle.len() + 8 + terminal.len());
    k.extend_from_slice(&(vehicle.len() as u16).to_be_bytes());
    k.extend_from_slice(vehicle.as_bytes());
    k.extend_from_slice(&((time_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(terminal.as_bytes());
    k
}

fn vehicle_prefix(vehicle: &str) -> Vec<u8> {
    let mut k = Vec::new();
    k.extend_from_slice(&(vehicle.len() as u16).to_be_bytes());
    k.extend_from_slice(vehicle.as_bytes());
    k
}

/// One record as the gateway writes it per position: track point + last known of its vehicle.
struct Record {
    track_key: Vec<u8>,
    track_val: Vec<u8>,
    vehicle: String,
    lk_val: Vec<u8>,
}

fn records(n: usize, vehicles: u32, start_ms: i64) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let v = (i as u32) % vehicles;
            let vehicle = format!("VH-{v:06}");
            let t = start_ms + (i as i64 / i64::from(vehicles)) * 10_000;
            let f = fix(v, t);
            Record {
                track_key: track_key(&vehicle, t, &f.terminal_id),
                track_val: postcard::to_stdvec(&f).unwrap(),
                lk_val: postcard::to_stdvec(&last_known(&vehicle, &f)).unwrap(),
                vehicle,
            }
        })
        .collect()
}

trait Engine {
    fn name(&self) -> &'static str;
    fn commit(&self, batch: &[Record], fsync: bool);
    fn get_last_known(&self, vehicle: &str) -> Option<usize>;
    fn scan(&self, lo: &[u8], hi: &[u8], limit: usize) -> usize;
}

struct Fjall {
    ks: fjall::Keyspace,
    track: fjall::PartitionHandle,
    lk: fjall::PartitionHandle,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let ks = fjall::Config::new(dir)
            .manual_journal_persist(true)
            .open()
            .unwrap();
        let track = ks
            .open_partition("track", fjall::PartitionCreateOptions::default())
            .unwrap();
        let lk = ks
            .open_partition("last_known", fjall::PartitionCreateOptions::default())
            .unwrap();
        Fjall { ks, track, lk }
    }
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall"
    }
    fn commit(&self, batch: &[Record], fsync: bool) {
        let mode = if fsync {
            fjall::PersistMode::SyncAll
        } else {
            fjall::PersistMode::Buffer
        };
        let mut b = self.ks.batch().durability(Some(mode));
        for r in batch {
            b.insert(&self.track, r.track_key.as_slice(), r.track_val.as_slice());
            b.insert(&self.lk, r.vehicle.as_bytes(), r.lk_val.as_slice());
        }
        b.commit().unwrap();
    }
    fn get_last_known(&self, vehicle: &str) -> Option<usize> {
        self.lk.get(vehicle).unwrap().map(|v| v.len())
    }
    fn scan(&self, lo: &[u8], hi: &[u8], limit: usize) -> usize {
        let mut n = 0;
        for kv in self.track.range(lo.to_vec()..hi.to_vec()).take(limit) {
            let (_, v) = kv.unwrap();
            let f: Fix = postcard::from_bytes(&v).unwrap();
            std::hint::black_box(f);
            n += 1;
        }
        n
    }
}

#[cfg(feature = "bench-redb")]
const TRACK: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("track");
#[cfg(feature = "bench-redb")]
const LAST_KNOWN: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("last_known");

#[cfg(feature = "bench-redb")]
struct Redb {
    db: redb::Database,
}

#[cfg(feature = "bench-redb")]
impl Redb {
    fn open(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let db = redb::Database::create(dir.join("store.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(TRACK).unwrap();
        tx.open_table(LAST_KNOWN).unwrap();
        tx.commit().unwrap();
        Redb { db }
    }
}

#[cfg(feature = "bench-redb")]
impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn commit(&self, batch: &[Record], fsync: bool) {
        let mut tx = self.db.begin_write().unwrap();
        // Eventual writes the commit to the OS without fsync, so it survives the death of the
        // process like fjall's Buffer mode. (`None` would not survive a kill -9.)
        tx.set_durability(if fsync {
            redb::Durability::Immediate
        } else {
            redb::Durability::Eventual
        });
        {
            let mut track = tx.open_table(TRACK).unwrap();
            let mut lk = tx.open_table(LAST_KNOWN).unwrap();
            for r in batch {
                track
                    .insert(r.track_key.as_slice(), r.track_val.as_slice())
                    .unwrap();
                lk.insert(r.vehicle.as_str(), r.lk_val.as_slice()).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn get_last_known(&self, vehicle: &str) -> Option<usize> {
        let tx = self.db.begin_read().unwrap();
        let t = tx.open_table(LAST_KNOWN).unwrap();
        let v = t.get(vehicle).unwrap();
        v.map(|v| v.value().len())
    }
    fn scan(&self, lo: &[u8], hi: &[u8], limit: usize) -> usize {
        let tx = self.db.begin_read().unwrap();
        let t = tx.open_table(TRACK).unwrap();
        let mut n = 0;
        for kv in t.range(lo..hi).unwrap().take(limit) {
            let (_, v) = kv.unwrap();
            let f: Fix = postcard::from_bytes(v.value()).unwrap();
            std::hint::black_box(f);
            n += 1;
        }
        n
    }
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Throughput and latency of one measured case.
#[derive(Clone, Copy, Default)]
struct Stats {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

/// Median of each figure over the rounds, so that one round disturbed by other work on the
/// machine does not decide the comparison.
fn median(mut v: Vec<Stats>) -> Stats {
    let mid = |xs: &mut Vec<f64>| {
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        xs[xs.len() / 2]
    };
    let mut a: Vec<f64> = v.iter().map(|s| s.per_sec).collect();
    let mut b: Vec<f64> = v.iter().map(|s| s.p50_us).collect();
    let mut c: Vec<f64> = v.iter().map(|s| s.p99_us).collect();
    v.clear();
    Stats {
        per_sec: mid(&mut a),
        p50_us: mid(&mut b),
        p99_us: mid(&mut c),
    }
}

/// Single writer committing batches of `batch` records for `window`; returns records/s.
fn bench_commit(e: &dyn Engine, batch: usize, fsync: bool, window: Duration) -> Stats {
    let recs = records(200_000.max(batch * 4), 10_000, 1_700_000_000_000);
    let mut h = Histogram::<u64>::new(3).unwrap();
    let start = Instant::now();
    let mut commits = 0usize;
    let mut i = 0;
    while start.elapsed() < window {
        if i + batch > recs.len() {
            i = 0;
        }
        let t = Instant::now();
        e.commit(&recs[i..i + batch], fsync);
        h.record(t.elapsed().as_nanos() as u64).unwrap();
        commits += 1;
        i += batch;
    }
    let secs = start.elapsed().as_secs_f64();
    Stats {
        per_sec: (commits * batch) as f64 / secs,
        p50_us: us(&h, 0.5),
        p99_us: us(&h, 0.99),
    }
}

/// Loads 200 vehicles x `per_vehicle` points, then measures point reads and range scans.
fn bench_reads(e: &dyn Engine, per_vehicle: usize, reads: usize, scans: usize) {
    let vehicles = 200u32;
    let recs = records(vehicles as usize * per_vehicle, vehicles, 1_700_000_000_000);
    for chunk in recs.chunks(5_000) {
        e.commit(chunk, false);
    }
    e.commit(&recs[..1], true);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut h = Histogram::<u64>::new(3).unwrap();
    let start = Instant::now();
    for _ in 0..reads {
        let v = format!("VH-{:06}", rng.random_range(0..vehicles));
        let t = Instant::now();
        assert!(e.get_last_known(&v).is_some());
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:6} last-known get ({} vehicles)             {:>10.0} gets/s   p50={:>8.1}us p99={:>8.1}us",
        e.name(),
        vehicles,
        reads as f64 / secs,
        us(&h, 0.5),
        us(&h, 0.99)
    );
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut points = 0;
    let start = Instant::now();
    for _ in 0..scans {
        let v = format!("VH-{:06}", rng.random_range(0..vehicles));
        let from = 1_700_000_000_000 + rng.random_range(0..per_vehicle as i64 / 2) * 10_000;
        let mut lo = vehicle_prefix(&v);
        lo.extend_from_slice(&((from as u64) ^ (1 << 63)).to_be_bytes());
        let mut hi = vehicle_prefix(&v);
        hi.extend_from_slice(&[0xFF; 9]);
        let t = Instant::now();
        points += e.scan(&lo, &hi, 500);
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:6} track scan (500 points, {} pts/vehicle)  {:>10.0} points/s p50={:>8.1}us p99={:>8.1}us",
        e.name(),
        per_vehicle,
        points as f64 / secs,
        us(&h, 0.5),
        us(&h, 0.99)
    );
}

/// The liengate Store: `callers` concurrent tasks, each committing one position (track point +
/// last known) and waiting for it, as a connection does before acknowledging a frame; or, with
/// `per_call` > 1, committing that many positions per call as a shard worker does with the
/// frames it drained from its queue.
fn bench_group_commit(
    dir: &Path,
    durability: Durability,
    callers: usize,
    per_call: usize,
    window: Duration,
) -> Stats {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = StoreConfig::new(dir);
    cfg.durability = durability;
    let process_cpu_before = process_cpu_secs();
    let store = Store::open(&cfg).unwrap();
    let (done, lat) = rt.block_on(async {
        let deadline = Instant::now() + window;
        let mut tasks = Vec::new();
        for c in 0..callers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let vehicles: Vec<String> = (0..per_call)
                    .map(|j| format!("VH-{:06}", c * per_call + j))
                    .collect();
                let mut h = Histogram::<u64>::new(3).unwrap();
                let mut n = 0u64;
                let mut t_ms = 1_700_000_000_000i64;
                while Instant::now() < deadline {
                    let mut writes = Vec::with_capacity(2 * per_call);
                    for (j, vehicle) in vehicles.iter().enumerate() {
                        let f = fix((c * per_call + j) as u32, t_ms);
                        writes.push(Write::LastKnown(last_known(vehicle, &f)));
                        writes.push(Write::Fix {
                            vehicle_id: vehicle.as_str().into(),
                            fix: f,
                        });
                    }
                    let t = Instant::now();
                    store.commit(writes).await.unwrap();
                    h.record(t.elapsed().as_nanos() as u64).unwrap();
                    n += per_call as u64;
                    t_ms += 10_000;
                }
                (n, h)
            }));
        }
        let mut total = 0;
        let mut all = Histogram::<u64>::new(3).unwrap();
        for t in tasks {
            let (n, h) = t.await.unwrap();
            total += n;
            all.add(h).unwrap();
        }
        (total, all)
    });
    let committer_cpu = committer_cpu_secs();
    // Background flush and compaction threads keep working after the window; give them a
    // moment so their CPU is counted against the positions that caused it.
    if std::env::var_os("STORE_BENCH_CPU").is_some() {
        std::thread::sleep(Duration::from_secs(2));
    }
    let process_cpu = process_cpu_secs() - process_cpu_before;
    drop(store);
    if std::env::var_os("STORE_BENCH_CPU").is_some() {
        println!(
            "    {callers} x {per_call} {durability:?}: CPU per position: committer {:.2} us, whole process {:.2} us ({} positions)",
            committer_cpu * 1e6 / done.max(1) as f64,
            process_cpu * 1e6 / done.max(1) as f64,
            done
        );
    }
    Stats {
        per_sec: done as f64 / window.as_secs_f64(),
        p50_us: us(&lat, 0.5),
        p99_us: us(&lat, 0.99),
    }
}

/// CPU time (user + system) used so far by the store's committer thread, from /proc. CPU per
/// position is far less disturbed by other work on a shared machine than throughput is.
fn committer_cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "store-committer" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        return ticks / 100.0;
    }
    0.0
}

/// CPU time (user + system) of the whole process so far.
fn process_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Sum and count of a Prometheus summary in the exporter's text output.
fn summary(text: &str, name: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{suffix} ")))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap_or(0.0)
    };
    (get("_sum"), get("_count"))
}

/// The engines compared: redb only with `--features bench-redb` (it is not a dependency of
/// the gateway itself).
const ENGINES: &[&str] = if cfg!(feature = "bench-redb") {
    &["fjall", "redb"]
} else {
    &["fjall"]
};

fn open_engine(name: &str, dir: &Path) -> Box<dyn Engine> {
    match name {
        #[cfg(feature = "bench-redb")]
        "redb" => Box::new(Redb::open(dir)),
        _ => Box::new(Fjall::open(dir)),
    }
}

fn mode_name(fsync: bool) -> &'static str {
    if fsync {
        "fsync"
    } else {
        "buffered"
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `quick` selects a short smoke run.
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "quick");
    // `engines` or `store` runs only that part.
    let only = |part: &str| {
        !args.iter().any(|a| a == "engines" || a == "store") || args.iter().any(|a| a == part)
    };
    let window = Duration::from_millis(if quick { 300 } else { 1_500 });
    let rounds = if quick { 1 } else { 3 };
    // The committer's metrics go to a Prometheus recorder so the bench can report the mean
    // group-commit batch size (and shows the metrics are emitted).
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    println!(
        "store bench: {rounds} round(s) x {window:?} per case, medians shown, data in {}",
        root.path().display()
    );

    // `soak`: one shard-like case for 20 s, to see engine stalls (memtable flushes, write-buffer
    // limits) that a 1.5 s window hides.
    if args.iter().any(|a| a == "soak") {
        for durability in [Durability::Buffered, Durability::Fsync] {
            let dir = root.path().join(format!("soak-{durability:?}"));
            let m = bench_group_commit(&dir, durability, 2, 512, Duration::from_secs(20));
            println!(
                "soak {:9} 2 x 512 for 20 s: {:>10.0} positions/s p50={:.1}us p99={:.1}us",
                format!("{durability:?}").to_lowercase(),
                m.per_sec,
                m.p50_us,
                m.p99_us
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
        return;
    }

    // `reopen`: how long a restart takes after writing many positions (journal replay into
    // memtables, then loading every last known position as the gateway does at start-up).
    if args.iter().any(|a| a == "reopen") {
        let dir = root.path().join("reopen");
        let mut cfg = StoreConfig::new(&dir);
        cfg.durability = Durability::Buffered;
        let store = Store::open(&cfg).unwrap();
        let vehicles = 10_000usize;
        let total = 1_000_000usize;
        let started = Instant::now();
        let mut t_ms = 1_700_000_000_000i64;
        for chunk in 0..total / 1000 {
            let mut writes = Vec::with_capacity(2000);
            for j in 0..1000 {
                let v = (chunk * 1000 + j) % vehicles;
                let vehicle = format!("VH-{v:06}");
                let f = fix(v as u32, t_ms);
                writes.push(Write::LastKnown(last_known(&vehicle, &f)));
                writes.push(Write::Fix {
                    vehicle_id: vehicle.into(),
                    fix: f,
                });
            }
            store.commit_blocking(writes).unwrap();
            t_ms += 10_000;
        }
        println!(
            "wrote {total} positions for {vehicles} vehicles in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        drop(store);
        let started = Instant::now();
        let store = Store::open(&cfg).unwrap();
        let opened = started.elapsed();
        let lk = store.all_last_known().unwrap();
        println!(
            "reopen: open {:.0} ms, all_last_known ({} vehicles) {:.0} ms",
            opened.as_secs_f64() * 1e3,
            lk.len(),
            (started.elapsed() - opened).as_secs_f64() * 1e3
        );
        return;
    }

    if only("engines") {
        println!(
            "\n## engines: one writer, batches of N positions (track point + last known each)"
        );
        println!("engine  mode      batch     positions/s   commit p50    commit p99");
        for fsync in [true, false] {
            for batch in [1usize, 64, 512] {
                let mut results: Vec<(&str, Vec<Stats>)> =
                    vec![("fjall", vec![]), ("redb", vec![])];
                // Engines alternate within each round, so both see the same background load.
                for round in 0..rounds {
                    for (name, stats) in results.iter_mut() {
                        let dir = root.path().join(format!("{name}-{fsync}-{batch}-{round}"));
                        let e = open_engine(name, &dir);
                        stats.push(bench_commit(e.as_ref(), batch, fsync, window));
                        drop(e);
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                }
                let mut per_sec = Vec::new();
                for (name, stats) in results {
                    let m = median(stats);
                    per_sec.push(m.per_sec);
                    println!(
                        "{name:7} {:9} {batch:<5} {:>13.0} {:>10.1}us {:>10.1}us",
                        mode_name(fsync),
                        m.per_sec,
                        m.p50_us,
                        m.p99_us
                    );
                }
                if per_sec.len() == 2 {
                    println!("        fjall/redb = {:.2}x", per_sec[0] / per_sec[1]);
                }
            }
        }

        println!("\n## engines: reads (200 vehicles)");
        let per_vehicle = if quick { 500 } else { 5_000 };
        for name in ENGINES {
            let dir = root.path().join(format!("{name}-reads"));
            let e = open_engine(name, &dir);
            bench_reads(e.as_ref(), per_vehicle, 200_000, 2_000);
            drop(e);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    if only("store") {
        println!("\n## liengate Store (fjall): N concurrent callers, one position per commit call");
        println!(
            "mode          callers x positions/call   positions/s   commit p50    commit p99   mean batch (requests)"
        );
        // "fsync" overlaps each fsync with writing the next batch (the default); "fsync-serial"
        // has the committer fsync each batch itself. The three modes alternate within each
        // round so that they see the same background load.
        let modes = [
            ("fsync", Durability::Fsync, true),
            ("fsync-serial", Durability::Fsync, false),
            ("buffered", Durability::Buffered, true),
        ];
        for (callers, per_call) in [
            (1usize, 1usize),
            (16, 1),
            (256, 1),
            (2048, 1),
            (2, 64),
            (2, 512),
        ] {
            let mut stats: Vec<Vec<Stats>> = vec![Vec::new(); modes.len()];
            let mut batches = vec![(0.0, 0.0); modes.len()];
            for round in 0..rounds {
                for (i, (name, durability, overlap)) in modes.iter().enumerate() {
                    Store::set_overlap_fsync_for_bench(*overlap);
                    let dir = root
                        .path()
                        .join(format!("store-{name}-{callers}-{per_call}-{round}"));
                    let before = summary(&prometheus.render(), "store_commit_batch_size");
                    stats[i].push(bench_group_commit(
                        &dir,
                        *durability,
                        callers,
                        per_call,
                        window,
                    ));
                    let after = summary(&prometheus.render(), "store_commit_batch_size");
                    batches[i].0 += after.0 - before.0;
                    batches[i].1 += after.1 - before.1;
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            Store::set_overlap_fsync_for_bench(true);
            for (i, (name, _, _)) in modes.iter().enumerate() {
                let m = median(std::mem::take(&mut stats[i]));
                println!(
                    "{:13} {:<22} {:>13.0} {:>10.1}us {:>10.1}us {:>10.1}",
                    name,
                    format!("{callers} x {per_call}"),
                    m.per_sec,
                    m.p50_us,
                    m.p99_us,
                    batches[i].0 / batches[i].1.max(1.0)
                );
            }
        }
    }
}

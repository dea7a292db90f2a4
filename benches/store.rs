//! Store micro-benchmark: fjall vs redb for the gateway's access patterns, and the liengate
//! `Store` (group commit) end to end.
//!
//! Run: `cargo bench --bench store` (add `-- quick` for a short smoke run). Results and the
//! commands used are recorded in benches/RESULTS.md, section "Store".
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
        terminal_id: format!("0138{terminal:08}"),
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
        vehicle_id: vehicle.to_owned(),
        fix: f.clone(),
        motion: Motion::Moving,
        acc: true,
        last_frame_ms: f.received_ms,
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

const TRACK: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("track");
const LAST_KNOWN: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("last_known");

struct Redb {
    db: redb::Database,
}

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

/// Single writer committing batches of `batch` records for `window`.
fn bench_commit(e: &dyn Engine, batch: usize, fsync: bool, window: Duration) {
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
    println!(
        "{:6} commit  batch={:<5} {:8}  {:>9.0} commits/s {:>10.0} records/s  p50={:>8.1}us p99={:>8.1}us",
        e.name(),
        batch,
        if fsync { "fsync" } else { "buffered" },
        commits as f64 / secs,
        (commits * batch) as f64 / secs,
        us(&h, 0.5),
        us(&h, 0.99),
    );
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
/// last known) and waiting for it, as a connection does before acknowledging a frame.
fn bench_group_commit(dir: &Path, durability: Durability, callers: usize, window: Duration) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = StoreConfig::new(dir);
    cfg.durability = durability;
    let store = Store::open(&cfg).unwrap();
    let (done, lat) = rt.block_on(async {
        let deadline = Instant::now() + window;
        let mut tasks = Vec::new();
        for c in 0..callers {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let vehicle = format!("VH-{c:06}");
                let mut h = Histogram::<u64>::new(3).unwrap();
                let mut n = 0u64;
                let mut t_ms = 1_700_000_000_000i64;
                while Instant::now() < deadline {
                    let f = fix(c as u32, t_ms);
                    let lk = last_known(&vehicle, &f);
                    let t = Instant::now();
                    store
                        .commit(vec![
                            Write::Fix {
                                vehicle_id: vehicle.clone(),
                                fix: f,
                            },
                            Write::LastKnown(lk),
                        ])
                        .await
                        .unwrap();
                    h.record(t.elapsed().as_nanos() as u64).unwrap();
                    n += 1;
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
    let secs = window.as_secs_f64();
    println!(
        "Store  group commit callers={:<5} {:8} {:>10.0} positions/s  p50={:>8.1}us p99={:>8.1}us",
        callers,
        format!("{durability:?}").to_lowercase(),
        done as f64 / secs,
        us(&lat, 0.5),
        us(&lat, 0.99)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else selects a mode.
    let quick = std::env::args().any(|a| a == "quick");
    let window = Duration::from_millis(if quick { 300 } else { 2_000 });
    let root = tempfile::tempdir().unwrap();
    println!(
        "store bench: window {:?} per case, data in {}",
        window,
        root.path().display()
    );

    println!("\n## engines: single writer, batch of N positions (track point + last known each)");
    for engine_name in ["fjall", "redb"] {
        for fsync in [true, false] {
            for batch in [1usize, 64, 512] {
                let dir = root.path().join(format!("{engine_name}-{fsync}-{batch}"));
                let e: Box<dyn Engine> = match engine_name {
                    "fjall" => Box::new(Fjall::open(&dir)),
                    _ => Box::new(Redb::open(&dir)),
                };
                bench_commit(e.as_ref(), batch, fsync, window);
                drop(e);
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    println!("\n## engines: reads");
    let per_vehicle = if quick { 500 } else { 5_000 };
    for engine_name in ["fjall", "redb"] {
        let dir = root.path().join(format!("{engine_name}-reads"));
        let e: Box<dyn Engine> = match engine_name {
            "fjall" => Box::new(Fjall::open(&dir)),
            _ => Box::new(Redb::open(&dir)),
        };
        bench_reads(e.as_ref(), per_vehicle, 100_000, 2_000);
        drop(e);
        let _ = std::fs::remove_dir_all(&dir);
    }

    println!("\n## liengate Store: concurrent callers, one position per commit call");
    for durability in [Durability::Fsync, Durability::Buffered] {
        for callers in [1usize, 16, 256, 2048] {
            let dir = root.path().join(format!("store-{durability:?}-{callers}"));
            bench_group_commit(&dir, durability, callers, window);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

use super::*;
use crate::model::{FixFlags, LoanStage, Motion};

fn fix(terminal: &str, time_ms: i64, lat: f64) -> Fix {
    Fix {
        terminal_id: terminal.into(),
        time_ms,
        received_ms: time_ms + 500,
        latitude: lat,
        longitude: 113.9,
        altitude_m: 12,
        speed_kmh: 42.5,
        course: 90,
        alarm: 0,
        status: 3,
        flags: FixFlags::empty(),
        battery_pct: Some(80),
        voltage_mv: None,
    }
}

fn open(dir: &std::path::Path, durability: Durability) -> Store {
    let mut cfg = StoreConfig::new(dir);
    cfg.durability = durability;
    Store::open(&cfg).unwrap()
}

const DAY_MS: i64 = 86_400_000;

/// A store whose retention is one day.
fn keeping_a_day(dir: &std::path::Path, durability: Durability) -> Store {
    let mut cfg = StoreConfig::new(dir);
    cfg.durability = durability;
    cfg.retention_days = 1;
    Store::open(&cfg).unwrap()
}

/// Device times of every point in the track of `vehicle`.
fn track_times(store: &Store, vehicle: &str) -> Vec<i64> {
    store
        .track(vehicle, i64::MIN, i64::MAX, 1000)
        .unwrap()
        .iter()
        .map(|f| f.time_ms)
        .collect()
}

fn device(terminal: &str, vehicle: Option<&str>) -> Device {
    Device {
        vehicle_id: vehicle.map(Into::into),
        ..Device::unassigned(terminal)
    }
}

#[test]
fn track_comes_out_in_device_time_order_and_duplicates_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Fsync);
    // Arrival order differs from device-time order, as with a blind-area batch.
    let times = [5_000, 1_000, 3_000, 1_000, -2_000];
    for (i, t) in times.iter().enumerate() {
        store
            .commit_blocking(vec![Write::Fix {
                vehicle_id: "V1".into(),
                fix: fix("013800000001", *t, 22.0 + i as f64),
            }])
            .unwrap();
    }
    // Another vehicle whose id has V1 as prefix must not leak into V1's scan.
    store
        .commit_blocking(vec![Write::Fix {
            vehicle_id: "V10".into(),
            fix: fix("013800000002", 2_000, 1.0),
        }])
        .unwrap();
    let track = store.track("V1", i64::MIN, i64::MAX, 100).unwrap();
    let got: Vec<i64> = track.iter().map(|f| f.time_ms).collect();
    assert_eq!(got, vec![-2_000, 1_000, 3_000, 5_000]);
    // The re-sent fix at 1000 replaced the first one (latitude of the 4th write).
    assert_eq!(track[1].latitude, 25.0);
    assert_eq!(
        store.track("V1", 1_000, 3_000, 100).unwrap().len(),
        2,
        "bounds are inclusive"
    );
    assert_eq!(store.track("V1", i64::MIN, i64::MAX, 2).unwrap().len(), 2);
    assert!(store.track("V1", 10, 5, 100).unwrap().is_empty());
}

#[test]
fn everything_committed_is_there_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for durability in [Durability::Fsync, Durability::Buffered] {
        let sub = dir.path().join(format!("{durability:?}"));
        {
            let store = open(&sub, durability);
            let f = fix("013800000001", 10_000, 22.5);
            store
                .commit_blocking(vec![
                    Write::Fix {
                        vehicle_id: "V1".into(),
                        fix: f.clone(),
                    },
                    Write::LastKnown(LastKnown {
                        vehicle_id: "V1".into(),
                        fix: f,
                        motion: Motion::Parked { since_ms: 9_000 },
                        acc: true,
                        last_frame_ms: 10_500,
                        signals: Default::default(),
                    }),
                    Write::AuthCode {
                        terminal_id: "013800000001".into(),
                        code: "abc123".into(),
                    },
                    Write::Session {
                        terminal_id: "013800000001".into(),
                        facts: SessionFacts {
                            last_connect_ms: 1,
                            last_peer: "127.0.0.1:5000".into(),
                            version: "2013".into(),
                            last_frame_ms: 2,
                            next_serial: 40_000,
                        },
                    },
                ])
                .unwrap();
        }
        let store = open(&sub, durability);
        let lk = store.last_known("V1").unwrap().unwrap();
        assert_eq!(lk.motion, Motion::Parked { since_ms: 9_000 });
        assert_eq!(lk.fix.latitude, 22.5);
        assert_eq!(store.all_last_known().unwrap().len(), 1);
        assert_eq!(store.track("V1", 0, i64::MAX, 10).unwrap().len(), 1);
        assert_eq!(
            store.auth_code("013800000001").unwrap().as_deref(),
            Some("abc123")
        );
        let session = store.session("013800000001").unwrap().unwrap();
        assert_eq!(session.version, "2013");
        assert_eq!(session.next_serial, 40_000);
        assert!(store.last_known("V2").unwrap().is_none());
    }
}

#[test]
fn vehicle_index_follows_device_reassignment() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Buffered);
    store
        .commit_blocking(vec![
            Write::Device(device("1", Some("A"))),
            Write::Device(device("2", Some("A"))),
            Write::Device(device("3", None)),
        ])
        .unwrap();
    let ids = |v: &str| -> Vec<String> {
        store
            .devices_of_vehicle(v)
            .unwrap()
            .into_iter()
            .map(|d| d.terminal_id)
            .collect()
    };
    assert_eq!(ids("A"), vec!["1", "2"]);
    // Two writes of the same device in one batch: the index must reflect the last one.
    store
        .commit_blocking(vec![
            Write::Device(device("2", Some("B"))),
            Write::Device(device("2", Some("C"))),
            Write::Device(device("3", Some("C"))),
        ])
        .unwrap();
    assert_eq!(ids("A"), vec!["1"]);
    assert!(ids("B").is_empty());
    assert_eq!(ids("C"), vec!["2", "3"]);
    assert_eq!(store.devices().unwrap().len(), 3);
    store
        .commit_blocking(vec![
            Write::Vehicle(Vehicle {
                vehicle_id: "C".into(),
                plate: Some("粤B12345".into()),
                vin: None,
                loan_id: Some("L1".into()),
            }),
            Write::Loan(Loan {
                loan_id: "L1".into(),
                vehicle_id: "C".into(),
                stage: LoanStage::Watch,
            }),
        ])
        .unwrap();
    assert_eq!(
        store.vehicle("C").unwrap().unwrap().plate.as_deref(),
        Some("粤B12345")
    );
    assert_eq!(store.loan("L1").unwrap().unwrap().stage, LoanStage::Watch);
}

#[test]
fn retention_and_purge_remove_only_what_they_should() {
    let dir = tempfile::tempdir().unwrap();
    let store = keeping_a_day(dir.path(), Durability::Fsync);
    let day = DAY_MS;
    let now = 10 * day;
    let mut writes = Vec::new();
    // "C" has only old points, "A1" has "A" as a byte prefix of its id.
    for t in [now - 5 * day, now - 4 * day] {
        writes.push(Write::Fix {
            vehicle_id: "C".into(),
            fix: fix("3", t, 1.0),
        });
    }
    writes.push(Write::Fix {
        vehicle_id: "A1".into(),
        fix: fix("4", now - 2 * day, 1.0),
    });
    for v in ["A", "B"] {
        for t in [now - 3 * day, now - day - 1, now - day, now - 5] {
            writes.push(Write::Fix {
                vehicle_id: v.into(),
                fix: fix("1", t, 1.0),
            });
        }
    }
    let f = fix("1", now - 5, 1.0);
    writes.push(Write::LastKnown(LastKnown {
        vehicle_id: "A".into(),
        fix: f,
        motion: Motion::Moving,
        acc: true,
        last_frame_ms: now,
        signals: Default::default(),
    }));
    store.commit_blocking(writes).unwrap();
    assert_eq!(store.apply_retention(now).unwrap(), 4 + 2 + 1);
    assert_eq!(store.track("A", i64::MIN, i64::MAX, 100).unwrap().len(), 2);
    assert!(store
        .track("C", i64::MIN, i64::MAX, 100)
        .unwrap()
        .is_empty());
    assert!(store
        .track("A1", i64::MIN, i64::MAX, 100)
        .unwrap()
        .is_empty());
    assert_eq!(store.apply_retention(now).unwrap(), 0);
    assert_eq!(store.purge_vehicle("A").unwrap(), 2);
    assert!(store
        .track("A", i64::MIN, i64::MAX, 100)
        .unwrap()
        .is_empty());
    assert!(store.last_known("A").unwrap().is_none());
    assert_eq!(store.track("B", i64::MIN, i64::MAX, 100).unwrap().len(), 2);
}

#[test]
fn invalid_ids_are_rejected_before_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Buffered);
    let err = store
        .commit_blocking(vec![Write::Fix {
            vehicle_id: "".into(),
            fix: fix("1", 0, 0.0),
        }])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidId {
                what: "vehicle id",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn encoded_track_points_land_like_single_fixes_and_invalid_ids_refuse_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Fsync);
    // One batch of points of two vehicles, beside a single fix of the first.
    let mut points = TrackPoints::with_capacity(3);
    points.push("V1", &fix("T1", 3_000, 1.0));
    points.push("V2", &fix("T2", 1_000, 2.0));
    points.push("V1", &fix("T1", 2_000, 3.0));
    assert_eq!(points.len(), 3);
    store
        .commit_blocking(vec![
            Write::Track(points),
            Write::Fix {
                vehicle_id: "V1".into(),
                fix: fix("T1", 1_000, 4.0),
            },
        ])
        .unwrap();
    assert_eq!(track_times(&store, "V1"), vec![1_000, 2_000, 3_000]);
    assert_eq!(
        store.track("V2", 0, i64::MAX, 10).unwrap(),
        vec![fix("T2", 1_000, 2.0)]
    );
    // A point with an id out of bounds refuses the whole batch, its valid points too.
    let mut points = TrackPoints::with_capacity(2);
    points.push("V1", &fix("T1", 5_000, 1.0));
    points.push("V1", &fix(&"9".repeat(MAX_ID_LEN + 1), 6_000, 1.0));
    assert_eq!(points.len(), 1);
    let err = store
        .commit_blocking(vec![Write::Track(points)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidId {
                what: "terminal id",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(track_times(&store, "V1"), vec![1_000, 2_000, 3_000]);
    // Points that were all refused still make a write, and it fails.
    let mut points = TrackPoints::with_capacity(1);
    points.push("", &fix("T1", 7_000, 1.0));
    assert!(!points.is_empty());
    assert!(matches!(
        store.commit_blocking(vec![Write::Track(points)]),
        Err(StoreError::InvalidId {
            what: "vehicle id",
            ..
        })
    ));
    // After a restart the points are read back from the store as committed.
    drop(store);
    let store = open(dir.path(), Durability::Fsync);
    assert_eq!(track_times(&store, "V1"), vec![1_000, 2_000, 3_000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_grouped_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Fsync);
    let mut tasks = Vec::new();
    for task in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                store
                    .commit(vec![Write::Fix {
                        vehicle_id: format!("V{task}").into(),
                        fix: fix("1", i, 0.0),
                    }])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    store.flush().await.unwrap();
    for task in 0..64 {
        assert_eq!(
            store
                .track(&format!("V{task}"), i64::MIN, i64::MAX, 100)
                .unwrap()
                .len(),
            20
        );
    }
}

#[test]
fn a_second_open_of_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Buffered);
    let err = Store::open(&StoreConfig::new(dir.path())).err().unwrap();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    drop(store);
    open(dir.path(), Durability::Buffered);
}

#[test]
fn store_handles_are_send_sync_and_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Store>();
}

#[test]
fn scan_track_visits_points_from_a_time_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Buffered);
    let mut writes = Vec::new();
    for (terminal, t) in [("2", 30), ("1", 10), ("1", 30), ("1", 20), ("9", 5)] {
        writes.push(Write::Fix {
            vehicle_id: "V".into(),
            fix: fix(terminal, t, 1.0),
        });
    }
    writes.push(Write::Fix {
        vehicle_id: "V2".into(),
        fix: fix("1", 25, 1.0),
    });
    store.commit_blocking(writes).unwrap();
    let mut seen = Vec::new();
    let n = store
        .scan_track("V", 20, |f| {
            seen.push((f.time_ms, f.terminal_id.to_string()))
        })
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        seen,
        vec![
            (20, "1".to_string()),
            (30, "1".to_string()),
            (30, "2".to_string())
        ]
    );
    assert_eq!(store.scan_track("nobody", i64::MIN, |_| {}).unwrap(), 0);
}

#[tokio::test]
async fn health_reports_a_failed_commit_until_the_store_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Fsync);
    store.health().unwrap();
    store.check().await.unwrap();
    // A commit the engine refused (as with a full disk) is remembered by the handle: what a
    // failed group commit reports to its callers is what `note` sees.
    let refused = StoreError::Engine(Arc::new(std::io::Error::other("no space left on device")));
    assert!(store.note(Err(refused)).is_err());
    let err = store.health().unwrap_err();
    assert!(matches!(err, StoreError::LastCommitFailed(_)), "{err}");
    assert!(err.to_string().contains("no space left"), "{err}");
    // Every clone shares the state.
    assert!(store.clone().health().is_err());
    // `check` retries with a flush; the disk works now, so the failure clears.
    store.check().await.unwrap();
    store.health().unwrap();
}

#[tokio::test]
async fn queued_commits_of_a_broken_chain_are_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Fsync);
    let broken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let chain = |epoch| Chain {
        broken: broken.clone(),
        epoch,
    };
    let track = |vehicle: &str, t| Write::Fix {
        vehicle_id: vehicle.into(),
        fix: fix("1", t, 1.0),
    };
    // Two commits in flight at once: both apply, in order.
    let first = store
        .commit_queued(vec![track("V", 10)], Some(chain(1)))
        .await
        .unwrap();
    let second = store
        .commit_queued(vec![track("V", 20)], Some(chain(1)))
        .await
        .unwrap();
    first.outcome().await.unwrap();
    second.outcome().await.unwrap();
    // Epoch 2 broke (as the committer marks it when a commit fails): a later commit of that
    // epoch or an older one is refused and not applied, one of a higher epoch goes through, and
    // a late mark of an older failure does not lower the mark.
    chain(2).mark_broken();
    chain(1).mark_broken();
    assert_eq!(broken.load(std::sync::atomic::Ordering::Acquire), 2);
    let refused = store
        .commit_queued(vec![track("V", 30)], Some(chain(2)))
        .await
        .unwrap();
    assert!(matches!(
        refused.outcome().await,
        Err(StoreError::ChainBroken)
    ));
    store
        .commit_queued(vec![track("V", 40)], Some(chain(3)))
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let mut times = Vec::new();
    store
        .scan_track("V", i64::MIN, |f| times.push(f.time_ms))
        .unwrap();
    assert_eq!(times, vec![10, 20, 40]);
}

fn small_folds(dir: &std::path::Path, fold_points: usize) -> Store {
    let mut cfg = StoreConfig::new(dir);
    cfg.durability = Durability::Buffered;
    cfg.track_fold_points = fold_points;
    Store::open(&cfg).unwrap()
}

fn times_and_lats(track: &[Fix]) -> Vec<(i64, String, f64)> {
    track
        .iter()
        .map(|f| (f.time_ms, f.terminal_id.to_string(), f.latitude))
        .collect()
}

#[test]
fn reads_merge_the_log_and_the_chunks_and_the_last_copy_wins() {
    let dir = tempfile::tempdir().unwrap();
    // A fold after every three positions: the points below end up in several chunks of the
    // same hour, in chunks of other hours, and in the log.
    let store = small_folds(dir.path(), 3);
    let hour = 3_600_000;
    let commits: Vec<Vec<(&str, i64, f64)>> = vec![
        vec![("1", 10 * hour + 5, 1.0), ("1", 10 * hour + 1, 2.0)],
        vec![("2", 10 * hour + 5, 3.0), ("1", 9 * hour, 4.0)],
        // A re-send of the point at 10 h + 5 ms, written after the first copy was folded.
        vec![("1", 10 * hour + 5, 5.0), ("1", 11 * hour, 6.0)],
        vec![("1", -hour - 1, 7.0)],
    ];
    for commit in &commits {
        let writes = commit
            .iter()
            .map(|(terminal, t, lat)| Write::Fix {
                vehicle_id: "V".into(),
                fix: fix(terminal, *t, *lat),
            })
            .collect();
        store.commit_blocking(writes).unwrap();
    }
    let want = vec![
        (-hour - 1, "1".to_string(), 7.0),
        (9 * hour, "1".into(), 4.0),
        (10 * hour + 1, "1".into(), 2.0),
        (10 * hour + 5, "1".into(), 5.0),
        (10 * hour + 5, "2".into(), 3.0),
        (11 * hour, "1".into(), 6.0),
    ];
    let all = store.track("V", i64::MIN, i64::MAX, 100).unwrap();
    assert_eq!(times_and_lats(&all), want);
    // Windows and limits cut across buckets, chunks and the log.
    let window = store.track("V", 9 * hour, 10 * hour + 5, 100).unwrap();
    assert_eq!(times_and_lats(&window), want[1..5].to_vec());
    let first = store.track("V", 10 * hour, i64::MAX, 2).unwrap();
    assert_eq!(times_and_lats(&first), want[2..4].to_vec());
    let mut scanned = Vec::new();
    let n = store
        .scan_track("V", 10 * hour + 2, |f| scanned.push(f))
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(times_and_lats(&scanned), want[3..].to_vec());

    // Everything folded (as at a restart): the same answers.
    store.fold_track_blocking().unwrap();
    drop(store);
    let store = small_folds(dir.path(), 3);
    let all = store.track("V", i64::MIN, i64::MAX, 100).unwrap();
    assert_eq!(times_and_lats(&all), want);
    assert!(store
        .track("V10", i64::MIN, i64::MAX, 100)
        .unwrap()
        .is_empty());
}

#[test]
fn one_fold_keeps_the_last_copy_and_its_points_in_device_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = keeping_a_day(dir.path(), Durability::Fsync);
    let now = 10 * DAY_MS;
    let t = now - DAY_MS / 2;
    // One commit, so one fold and one chunk: the points come out of device-time order, and the
    // re-sent copy of `t` (other content) comes after the first.
    let writes = [(t + 2, 1.0), (t, 2.0), (t + 1, 3.0), (t, 4.0)]
        .into_iter()
        .map(|(time, lat)| Write::Fix {
            vehicle_id: "V".into(),
            fix: fix("1", time, lat),
        })
        .collect();
    store.commit_blocking(writes).unwrap();
    store.fold_track_blocking().unwrap();
    let want = vec![
        (t, "1".to_string(), 4.0),
        (t + 1, "1".into(), 3.0),
        (t + 2, "1".into(), 1.0),
    ];
    let all = store.track("V", i64::MIN, i64::MAX, 100).unwrap();
    assert_eq!(times_and_lats(&all), want);
    // Retention past all of them counts the point stored twice once.
    assert_eq!(store.apply_retention(t + 2 + DAY_MS + 1).unwrap(), 3);
    assert!(track_times(&store, "V").is_empty());
}

#[test]
fn retention_trims_a_chunk_that_straddles_the_cutoff() {
    let dir = tempfile::tempdir().unwrap();
    let store = keeping_a_day(dir.path(), Durability::Fsync);
    let day = DAY_MS;
    // The cutoff falls in the middle of an hour: one chunk holds points on both sides.
    let now = 10 * day + 1_800_000;
    let cutoff = now - day;
    let writes = [cutoff - 2, cutoff - 1, cutoff, cutoff + 1]
        .into_iter()
        .map(|t| Write::Fix {
            vehicle_id: "V".into(),
            fix: fix("1", t, 1.0),
        })
        .collect();
    store.commit_blocking(writes).unwrap();
    assert_eq!(store.apply_retention(now).unwrap(), 2);
    let left = track_times(&store, "V");
    assert_eq!(left, vec![cutoff, cutoff + 1]);
    assert_eq!(store.apply_retention(now).unwrap(), 0);
}

#[test]
fn a_format_2_store_is_converted_with_its_track() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        // What a format 2 store looked like: one `track` entry per point, keyed (vehicle hash,
        // vehicle, device time, terminal).
        let keyspace = fjall::Config::new(&path).open().unwrap();
        let meta = keyspace.open_partition("meta", Default::default()).unwrap();
        meta.insert("format", 2u32.to_be_bytes()).unwrap();
        let track = keyspace
            .open_partition("track", Default::default())
            .unwrap();
        for (vehicle, terminal, t) in [("V", "1", 20), ("V", "2", 10), ("V1", "1", 5)] {
            let mut key = keys::track_prefix(vehicle);
            key.extend_from_slice(&keys::time_bytes(t));
            key.extend_from_slice(terminal.as_bytes());
            let value = postcard::to_stdvec(&fix(terminal, t, 1.0)).unwrap();
            track.insert(key, value).unwrap();
        }
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let store = open(dir.path(), Durability::Fsync);
    let got = track_times(&store, "V");
    assert_eq!(got, vec![10, 20]);
    assert_eq!(store.track("V1", 0, 100, 100).unwrap().len(), 1);
    drop(store);
    // Converted once: the old partition is gone and the store opens as format 3.
    let store = open(dir.path(), Durability::Fsync);
    assert_eq!(store.track("V", i64::MIN, i64::MAX, 100).unwrap().len(), 2);
    store.health().unwrap();
}

#[test]
fn a_failed_apply_marks_every_later_batch_for_a_full_replay() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Fsync);
    let point = |t| Write::Fix {
        vehicle_id: "V".into(),
        fix: fix("1", t, 1.0),
    };
    store.commit_blocking(vec![point(10)]).unwrap();
    assert!(!store.full_replay().unwrap());
    // The engine refuses the next batch, as with a full disk.
    store
        .inner
        .engine
        .faults
        .apply
        .store(true, Ordering::Release);
    let err = store.commit_blocking(vec![point(20)]).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    // Nothing of the refused batch is stored; the next batch carries the flag.
    assert!(!store.full_replay().unwrap());
    store.commit_blocking(vec![point(30)]).unwrap();
    assert!(store.full_replay().unwrap());
    let times = track_times(&store, "V");
    assert_eq!(times, vec![10, 30]);
    // Every later batch carries it: one that clears it (start-up recovery's) is undone.
    store
        .commit_blocking(vec![Write::FullReplay(false)])
        .unwrap();
    assert!(store.full_replay().unwrap());
    drop(store);
    let store = open(dir.path(), Durability::Fsync);
    assert!(store.full_replay().unwrap(), "durable across a restart");
    store
        .commit_blocking(vec![Write::FullReplay(false)])
        .unwrap();
    assert!(!store.full_replay().unwrap(), "a new process starts clean");
}

#[test]
fn a_failed_sync_marks_the_store_for_a_full_replay_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Fsync);
    store
        .inner
        .engine
        .faults
        .sync
        .store(true, Ordering::Release);
    let err = store
        .commit_blocking(vec![Write::Fix {
            vehicle_id: "V".into(),
            fix: fix("1", 10, 1.0),
        }])
        .unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
    // Written by the syncer before it answered the failed commit, without waiting for the
    // next batch.
    assert!(store.full_replay().unwrap());
    assert!(matches!(
        store.health(),
        Err(StoreError::LastCommitFailed(_))
    ));
}

#[test]
fn purge_removes_every_point_whatever_its_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), Durability::Buffered);
    store
        .commit_blocking(
            [i64::MIN, 5, i64::MAX]
                .into_iter()
                .map(|t| Write::Fix {
                    vehicle_id: "V".into(),
                    fix: Fix {
                        time_ms: t,
                        ..fix("1", 0, 1.0)
                    },
                })
                .collect(),
        )
        .unwrap();
    assert_eq!(store.purge_vehicle("V").unwrap(), 3);
    assert!(store.track("V", i64::MIN, i64::MAX, 10).unwrap().is_empty());
}

#[test]
fn after_a_failed_fold_positions_stay_in_the_log_and_maintenance_refuses_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_folds(dir.path(), 1_000);
    let point = |t| Write::Fix {
        vehicle_id: "V".into(),
        fix: fix("1", t, 1.0),
    };
    store.commit_blocking(vec![point(10)]).unwrap();
    store
        .inner
        .engine
        .faults
        .fold
        .store(true, Ordering::Release);
    assert!(store.fold_track_blocking().is_err());
    // Folds stay stopped for this process, so a later fold cannot move the fold mark past
    // positions still in the log; purge and retention, which work on chunks, refuse to run.
    store.commit_blocking(vec![point(20)]).unwrap();
    assert!(store.fold_track_blocking().is_err());
    assert!(store.purge_vehicle("V").is_err());
    assert!(store.apply_retention(i64::MAX).is_err());
    assert_eq!(track_times(&store, "V"), vec![10, 20], "read from the log");
    drop(store);
    // The next start folds them.
    let store = small_folds(dir.path(), 1_000);
    assert_eq!(track_times(&store, "V"), vec![10, 20]);
    assert_eq!(store.purge_vehicle("V").unwrap(), 2);
}

#[test]
fn a_failed_fold_shows_in_the_health_check_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = small_folds(dir.path(), 1);
    let point = |t| Write::Fix {
        vehicle_id: "V".into(),
        fix: fix("1", t, 1.0),
    };
    store.health().unwrap();
    // A fold after every position; the first one fails.
    store
        .inner
        .engine
        .faults
        .fold
        .store(true, Ordering::Release);
    for t in 10..30 {
        store.commit_blocking(vec![point(t)]).unwrap();
    }
    assert!(store.fold_track_blocking().is_err());
    // Commits still work and would clear a commit failure, but not this one.
    store.commit_blocking(vec![point(40)]).unwrap();
    let err = store.health().unwrap_err();
    assert!(matches!(err, StoreError::FoldStopped(_)), "{err}");
    assert_eq!(store.track("V", i64::MIN, i64::MAX, 100).unwrap().len(), 21);
    drop(store);
    let store = small_folds(dir.path(), 1);
    store.health().unwrap();
    assert_eq!(store.track("V", i64::MIN, i64::MAX, 100).unwrap().len(), 21);
}

/// A fix re-sent after a lost answer is stored again; once the two copies sit in two chunks of
/// the same hour, purge and retention still count it as one point.
#[test]
fn purge_and_retention_count_a_re_sent_fix_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = keeping_a_day(dir.path(), Durability::Buffered);
    let day = DAY_MS;
    let now = 10 * day;
    let old = now - 2 * day;
    let write = |vehicle: &str, t: i64, terminal: &str| Write::Fix {
        vehicle_id: vehicle.into(),
        fix: fix(terminal, t, 1.0),
    };
    for vehicle in ["A", "B"] {
        // The same fix twice, each copy folded into a chunk of its own, and the same second
        // from the car's other tracker, which is a point of its own.
        store
            .commit_blocking(vec![write(vehicle, old, "1")])
            .unwrap();
        store.fold_track_blocking().unwrap();
        store
            .commit_blocking(vec![write(vehicle, old, "1"), write(vehicle, old, "2")])
            .unwrap();
        store.fold_track_blocking().unwrap();
        store
            .commit_blocking(vec![write(vehicle, now - 1_000, "1")])
            .unwrap();
    }
    assert_eq!(store.purge_vehicle("A").unwrap(), 3);
    assert!(store.track("A", i64::MIN, i64::MAX, 10).unwrap().is_empty());
    assert_eq!(store.apply_retention(now).unwrap(), 2);
    let left = track_times(&store, "B");
    assert_eq!(left, vec![now - 1_000]);
}

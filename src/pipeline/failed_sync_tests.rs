//! After a failed disk sync the failed batch's records stay in the store (durable with the next
//! sync) while the shard reloads its state from the live view, which lacks them. A key's stored
//! mark can then be ahead of the shard's newest report, so the shard writes the first change of
//! each reloaded key at once: otherwise an acknowledged report between the two would be skipped
//! by the next (full) replay, which starts at the stored mark.
use std::sync::Arc;
use std::time::Duration;

use super::live::{Activity, LiveView};
use super::recover::recover_last_known;
use super::sanitize::STATUS_FIXED;
use super::{Committed, DeviceRoute, FrameKey, Pipeline, Positions, Report};
use crate::config::Config;
use crate::model::Device;
use crate::store::{Store, StoreConfig, Write};

fn report(time_s: i64, fixed: bool, battery: Option<u8>) -> Report {
    Report {
        time_ms: Some(time_s * 1000),
        latitude: 22.5,
        longitude: 114.0,
        altitude_m: 0,
        speed_kmh: 0.0,
        course: 0,
        alarm: 0,
        status: if fixed { STATUS_FIXED } else { 0 },
        blind_area: false,
        battery_pct: battery,
        voltage_mv: None,
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    store: Store,
    pipe: Pipeline,
    route: Arc<DeviceRoute>,
    cfg: Config,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let s = store.clone();
        std::thread::spawn(move || {
            s.commit_blocking(vec![Write::Device(Device::unassigned("D"))])
                .unwrap()
        })
        .join()
        .unwrap();
        let mut cfg = Config::default();
        cfg.pipeline.shards = 1;
        cfg.state.last_known_flush = Duration::from_secs(3600);
        let live = Arc::new(LiveView::new());
        let (pipe, _threads) = Pipeline::start(&cfg, store.clone(), live).unwrap();
        let route = Arc::new(DeviceRoute {
            terminal_id: "D".into(),
            vehicle_id: None,
            vehicle_key: "device:D".into(),
            device_key: "device:D".into(),
            shard: 0,
            vehicle_activity: Arc::new(Activity::new(0)),
            device_activity: Arc::new(Activity::new(0)),
            hints: Default::default(),
        });
        Rig {
            _dir: dir,
            store,
            pipe,
            route,
            cfg,
        }
    }

    async fn send(&self, serial: u16, reports: Vec<Report>) -> bool {
        let (tx, rx) = super::Ack::channel();
        let first = reports[0].time_ms.unwrap();
        self.pipe
            .submit(Positions {
                route: self.route.clone(),
                key: Some(FrameKey {
                    message_id: 0x0200,
                    serial,
                    first_time_ms: first,
                }),
                reports,
                received_ms: super::now_ms(),
                done: Some(tx),
            })
            .await
            .unwrap();
        matches!(rx.await.unwrap(), Ok(Committed::Stored))
    }

    /// The device's record after a kill -9 now (everything acknowledged is durable).
    fn recover(&self) -> super::recover::Recovered {
        let store = self.store.clone();
        let cfg = self.cfg.state.clone();
        std::thread::spawn(move || recover_last_known(&store, &cfg).unwrap())
            .join()
            .unwrap()
    }

    /// t1: first no-fix report (its signals record is written at once). Then, with the sync
    /// failing, a frame [t3 no-fix, t0 no-fix with battery 50] (late: its record, mark t3, is
    /// written in the failed batch, which stays in the store).
    async fn prepare(&self, t1: i64, t3: i64) {
        assert!(self.send(1, vec![report(t1, false, None)]).await);
        self.store.fail_next_sync();
        let acked = self
            .send(
                2,
                vec![report(t3, false, None), report(t1 - 100, false, Some(50))],
            )
            .await;
        assert!(!acked, "the failed sync is answered with a failure");
    }
}

/// Three device times in seconds, well in the past: the stored mark, a report between, and the
/// newer report of the batch whose sync fails.
fn marks() -> (i64, i64, i64) {
    let t1 = super::now_ms() / 1000 - 50_000;
    (t1, t1 + 100, t1 + 1_000)
}

/// Device time in seconds of device D's recovered last known record.
fn device_fix_s(r: &super::recover::Recovered) -> Option<i64> {
    r.records
        .iter()
        .find(|lk| &*lk.vehicle_id == "device:D")
        .map(|lk| lk.fix.time_ms / 1000)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_fix_acknowledged_after_a_failed_sync_survives_a_crash() {
    let rig = Rig::new();
    let (t1, t2, t3) = marks();
    rig.prepare(t1, t3).await;
    // The shard dropped its state and reloaded it from the live view (mark t1). The device's
    // first valid fix, between the two marks, is acknowledged but not written at once.
    assert!(rig.send(3, vec![report(t2, true, None)]).await);
    let r = rig.recover();
    assert_eq!(
        device_fix_s(&r),
        Some(t2),
        "the acknowledged first fix was lost: {:?} {:?}",
        r.records,
        r.signals
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_battery_reading_acknowledged_after_a_failed_sync_survives_a_crash() {
    let rig = Rig::new();
    let (t1, t2, t3) = marks();
    rig.prepare(t1, t3).await;
    // Battery 70 at t2: newer than the stored reading (50 at t1 - 100).
    assert!(rig.send(3, vec![report(t2, false, Some(70))]).await);
    let r = rig.recover();
    let d = r
        .signals
        .iter()
        .find(|(k, _)| k == "device:D")
        .map(|(_, s)| s.clone());
    assert_eq!(
        d.and_then(|s| s.battery_pct),
        Some(70),
        "the acknowledged battery reading was lost: {:?}",
        r.signals
    );
}

/// The same hole for a key with a last known record (so not new with the signals records).
#[tokio::test(flavor = "multi_thread")]
async fn a_fix_acknowledged_after_a_failed_sync_survives_a_crash_with_a_record() {
    let rig = Rig::new();
    let (t1, t2, t3) = marks();
    assert!(rig.send(1, vec![report(t1, true, None)]).await);
    rig.store.fail_next_sync();
    let acked = rig
        .send(
            2,
            vec![report(t3, false, None), report(t1 + 50, true, None)],
        )
        .await;
    assert!(!acked);
    assert!(rig.send(3, vec![report(t2, true, None)]).await);
    let r = rig.recover();
    assert_eq!(device_fix_s(&r), Some(t2));
}

//! kill -9 of the real gateway: start `liengate serve` on port 0 with a temp data dir, drive
//! JT808 terminals (register, authenticate, pipelined 0x0200 reports), record which positions
//! were acknowledged (0x8001 result 0), SIGKILL the server mid-stream, restart it on the same
//! data dir and check over HTTP that every vehicle's and device's last known position is at
//! least as new as its newest acknowledged one, then kill it again and check in the store that
//! every acknowledged position is in the track. With last known writes coalesced over a long
//! interval (`state.last_known_flush`), a kill before the flush must still give exactly the newest
//! acknowledged valid fix after the restart (rebuilt from the track), and a graceful stop must
//! write the pending records itself.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use liengate::protocols::jt808::{TerminalId, Version};
use liengate::sim::frames::{self, Identity, Report};
use liengate::sim::link::{Answer, Link};
use liengate::sim::route::Sample;
use liengate::store::{Store, StoreConfig};

const TOKEN: &str = "crash-test-token";
const VEHICLES: usize = 4;
/// Reports in flight per terminal before it waits for answers.
const WINDOW: usize = 8;

struct Server {
    child: Child,
    jt808: SocketAddr,
    http: SocketAddr,
}

fn spawn_server(data_dir: &Path, config: &Path, log: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_liengate"))
        .args([
            "serve",
            "--listen-jt808",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--config")
        .arg(config)
        .env("LIENGATE_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keep draining stdout for the server's whole life so it can never block on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let (mut jt808, mut http) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    while jt808.is_none() || http.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "server did not print its listening lines; stderr:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
        if let Some(a) = line.strip_prefix("listening jt808 ") {
            jt808 = Some(a.trim().parse().unwrap());
        } else if let Some(a) = line.strip_prefix("listening http ") {
            http = Some(a.trim().parse().unwrap());
        }
    }
    Server {
        child,
        jt808: jt808.unwrap(),
        http: http.unwrap(),
    }
}

fn terminal_id(i: usize) -> String {
    format!("0139000000{i:02}")
}

fn vehicle_of(i: usize) -> String {
    format!("VH-CRASH-{}", i % VEHICLES)
}

fn identity(i: usize) -> Identity {
    Identity {
        terminal: TerminalId::parse(&terminal_id(i), Version::V2013).unwrap(),
        version: Version::V2013,
        device_id: format!("CR{i:05}"),
        vin: format!("LSVAU2180N2{i:06}"),
        imei: format!("8600000000000{i:02}"),
    }
}

/// Writes the registry: two devices (wired + wireless) per vehicle.
fn import_registry(dir: &Path, data_dir: &Path, terminals: usize) {
    let mut csv = String::from("terminal_id,role,vehicle_id\n");
    for i in 0..terminals {
        let role = if i < VEHICLES { "wired" } else { "wireless" };
        csv.push_str(&format!("{},{role},{}\n", terminal_id(i), vehicle_of(i)));
    }
    let file = dir.join("registry.csv");
    std::fs::write(&file, csv).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_liengate"))
        .args(["registry", "import"])
        .arg(&file)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "registry import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What one terminal sent and got acknowledged (device times in Unix seconds).
#[derive(Default)]
struct Tally {
    acked: Vec<i64>,
    max_sent: i64,
    /// The auth code the server gave at registration.
    code: Vec<u8>,
}

fn sample(n: i64) -> Sample {
    Sample {
        // About 1 m per report at one report per device second: never an impossible jump.
        latitude: 31.2 + n as f64 * 1e-5,
        longitude: 121.4,
        altitude_m: 10,
        speed_kmh: 36.0,
        course: 0,
        acc_on: true,
        mileage_m: 1000.0 + n as f64,
        satellites: 9,
        rssi: 20,
    }
}

/// Sends terminal `i`'s 0x0100 with `serial` and returns the auth code of its 0x8100.
async fn register(link: &mut Link, me: &Identity, i: usize, serial: u16) -> Vec<u8> {
    let mut body = BytesMut::new();
    frames::register_body(me, &mut body);
    frames::frame(me, frames::MSG_REGISTER, serial, &body, &mut link.out);
    link.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    match link.answer_until(me, deadline).await.unwrap() {
        Answer::Register {
            result: 0, code, ..
        } => code,
        other => panic!("terminal {i}: register answered {other:?}"),
    }
}

/// Registers, authenticates and then streams reports until the connection dies.
async fn drive(addr: SocketAddr, i: usize, first_secs: i64, tally: Arc<Mutex<Tally>>) {
    let me = identity(i);
    let mut link = Link::connect(addr, None, Duration::from_secs(10))
        .await
        .unwrap();
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(20);
    let mut serial: u16 = 0;
    let mut body = BytesMut::new();
    let code = register(&mut link, &me, i, serial).await;
    tally.lock().unwrap().code = code.clone();
    serial += 1;
    body.clear();
    frames::auth_body(&me, &code, &mut body);
    frames::frame(&me, frames::MSG_AUTH, serial, &body, &mut link.out);
    link.flush().await.unwrap();
    match link.answer_until(&me, deadline()).await.unwrap() {
        Answer::General { result: 0, .. } => {}
        other => panic!("terminal {i}: auth answered {other:?}"),
    }

    let mut in_flight: HashMap<u16, i64> = HashMap::new();
    let mut n = 0i64;
    loop {
        while in_flight.len() < WINDOW {
            serial = serial.wrapping_add(1);
            let secs = first_secs + n;
            body.clear();
            frames::location_body(
                &Report {
                    sample: sample(n),
                    unix_secs: secs,
                },
                &mut body,
            );
            frames::frame(&me, frames::MSG_LOCATION, serial, &body, &mut link.out);
            in_flight.insert(serial, secs);
            tally.lock().unwrap().max_sent = secs;
            n += 1;
        }
        if link.flush().await.is_err() {
            return;
        }
        match link.answer_until(&me, deadline()).await {
            Ok(Answer::General {
                reply_serial,
                reply_id: frames::MSG_LOCATION,
                result,
            }) => {
                let secs = in_flight.remove(&reply_serial).unwrap_or_else(|| {
                    panic!("terminal {i}: answer to unknown serial {reply_serial}")
                });
                assert_eq!(result, 0, "terminal {i}: report at {secs} refused");
                tally.lock().unwrap().acked.push(secs);
            }
            Ok(other) => panic!("terminal {i}: unexpected answer {other:?}"),
            // The server was killed.
            Err(_) => return,
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    // A minimal HTTP/1.1 client: the test needs one GET with a header, which does not justify
    // an HTTP client dependency.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn location_secs(http: SocketAddr, path: &str) -> i64 {
    let (status, json) = http_get(http, path);
    assert_eq!(status, 200, "GET {path}: {json}");
    let t = json["time"]
        .as_str()
        .unwrap_or_else(|| panic!("no time in {json}"));
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[test]
fn kill9_mid_stream_loses_no_acknowledged_position_with_fsync() {
    kill9_mid_stream("fsync");
}

/// Buffered commits are not fsynced, but the kernel keeps them when only the process dies.
#[test]
fn kill9_mid_stream_loses_no_acknowledged_position_with_buffered() {
    kill9_mid_stream("buffered");
}

fn kill9_mid_stream(durability: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("liengate.toml");
    std::fs::write(&config, format!("[store]\ndurability = \"{durability}\"\n")).unwrap();
    let terminals = VEHICLES * 2;
    import_registry(dir.path(), &data, terminals);

    let mut server = spawn_server(&data, &config, &dir.path().join("serve-1.log"));
    // Device times a day in the past, one second apart per terminal: valid and in order. Each
    // terminal keeps several frames in flight and can send thousands a second, so an hour of
    // device time was used up in about a second on a fast run: the later reports were then
    // "too far in the future", rightly flagged and kept out of the last known position.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let first_secs = now - 86_400;
    let tallies: Vec<_> = (0..terminals)
        .map(|_| Arc::new(Mutex::new(Tally::default())))
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..terminals)
        .map(|i| rt.spawn(drive(server.jt808, i, first_secs, tallies[i].clone())))
        .collect();
    // Let traffic flow until a good number of positions are acknowledged, then kill -9.
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let acked: usize = tallies.iter().map(|t| t.lock().unwrap().acked.len()).sum();
        if acked >= 400 && started.elapsed() > Duration::from_millis(500) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {acked} positions acknowledged in 60 s"
        );
        for t in &tasks {
            assert!(!t.is_finished() || acked >= 400, "a terminal stopped early");
        }
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for t in tasks {
        rt.block_on(t).unwrap();
    }

    let total: usize = tallies.iter().map(|t| t.lock().unwrap().acked.len()).sum();
    let sent: i64 = tallies
        .iter()
        .map(|t| t.lock().unwrap().max_sent - first_secs + 1)
        .sum();
    eprintln!(
        "{durability}: killed the server after {total} acknowledged of {sent} sent positions"
    );
    assert!(total >= 400);

    // Restart on the same data dir: the last known positions must be there at once.
    let mut server = spawn_server(&data, &config, &dir.path().join("serve-2.log"));
    let mut newest_by_vehicle: HashMap<String, (i64, i64)> = HashMap::new();
    let mut last_known_seen: Vec<(usize, i64)> = Vec::new();
    for (i, tally) in tallies.iter().enumerate() {
        let t = tally.lock().unwrap();
        let Some(&newest) = t.acked.iter().max() else {
            continue;
        };
        let got = location_secs(
            server.http,
            &format!("/v1/devices/{}/location", terminal_id(i)),
        );
        last_known_seen.push((i, got));
        assert!(
            newest <= got && got <= t.max_sent,
            "device {}: last known {got}, newest acknowledged {newest}, newest sent {}",
            terminal_id(i),
            t.max_sent
        );
        let e = newest_by_vehicle
            .entry(vehicle_of(i))
            .or_insert((i64::MIN, i64::MIN));
        e.0 = e.0.max(newest);
        e.1 = e.1.max(t.max_sent);
    }
    for (vehicle, (newest, max_sent)) in &newest_by_vehicle {
        let got = location_secs(server.http, &format!("/v1/vehicles/{vehicle}/location"));
        assert!(
            *newest <= got && got <= *max_sent,
            "vehicle {vehicle}: last known {got}, newest acknowledged {newest}"
        );
    }
    // The auth code handed out before the crash still authenticates (it was persisted).
    rt.block_on(async {
        let me = identity(0);
        let mut link = Link::connect(server.jt808, None, Duration::from_secs(10))
            .await
            .unwrap();
        let mut body = BytesMut::new();
        let code = tallies[0].lock().unwrap().code.clone();
        frames::auth_body(&me, &code, &mut body);
        frames::frame(&me, frames::MSG_AUTH, 1, &body, &mut link.out);
        link.flush().await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        match link.answer_until(&me, deadline).await.unwrap() {
            Answer::General { result: 0, .. } => {}
            other => panic!("auth with the pre-crash code answered {other:?}"),
        }
    });
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // Every acknowledged position is in the track, read straight from the store.
    let store = Store::open(&StoreConfig::new(&data)).unwrap();
    // Each vehicle's whole track read once: (terminal, device time in ms) of every point.
    let mut stored: std::collections::HashSet<(String, i64)> = std::collections::HashSet::new();
    for vehicle in (0..terminals)
        .map(vehicle_of)
        .collect::<std::collections::BTreeSet<_>>()
    {
        for f in store
            .track(&vehicle, i64::MIN, i64::MAX, usize::MAX)
            .unwrap()
        {
            stored.insert((f.terminal_id.to_string(), f.time_ms));
        }
    }
    let mut missing = Vec::new();
    for (i, tally) in tallies.iter().enumerate() {
        for &secs in &tally.lock().unwrap().acked {
            if !stored.contains(&(terminal_id(i).to_string(), secs * 1000)) {
                missing.push((terminal_id(i), secs));
            }
        }
    }
    // A last known position reported after the restart is a stored track point, not a
    // position that was only in memory.
    assert_eq!(last_known_seen.len(), 2 * VEHICLES);
    for (i, secs) in last_known_seen {
        assert!(
            stored.contains(&(terminal_id(i).to_string(), secs * 1000)),
            "last known of {} at {secs} is not in the track",
            terminal_id(i)
        );
    }
    assert!(
        missing.is_empty(),
        "{} of {total} acknowledged positions missing from the track, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Sends `count` valid reports one device second apart from `first_secs`, then one report with
/// zero coordinates (stored flagged, never a last known) one second later, waits until every
/// report is answered and returns the device time of the newest acknowledged valid report.
async fn send_and_settle(addr: SocketAddr, i: usize, first_secs: i64, count: i64) -> i64 {
    let me = identity(i);
    let mut link = Link::connect(addr, None, Duration::from_secs(10))
        .await
        .unwrap();
    let deadline = || tokio::time::Instant::now() + Duration::from_secs(20);
    let mut body = BytesMut::new();
    let code = register(&mut link, &me, i, 0).await;
    body.clear();
    frames::auth_body(&me, &code, &mut body);
    frames::frame(&me, frames::MSG_AUTH, 1, &body, &mut link.out);
    link.flush().await.unwrap();
    match link.answer_until(&me, deadline()).await.unwrap() {
        Answer::General { result: 0, .. } => {}
        other => panic!("terminal {i}: auth answered {other:?}"),
    }
    let mut serial: u16 = 1;
    let mut newest_valid = i64::MIN;
    let mut n = 0i64;
    while n <= count {
        let mut in_flight = 0;
        while in_flight < WINDOW && n <= count {
            serial += 1;
            let mut s = sample(n);
            if n == count {
                s.latitude = 0.0;
                s.longitude = 0.0;
            }
            body.clear();
            frames::location_body(
                &Report {
                    sample: s,
                    unix_secs: first_secs + n,
                },
                &mut body,
            );
            frames::frame(&me, frames::MSG_LOCATION, serial, &body, &mut link.out);
            in_flight += 1;
            n += 1;
        }
        link.flush().await.unwrap();
        for _ in 0..in_flight {
            match link.answer_until(&me, deadline()).await.unwrap() {
                Answer::General {
                    reply_id: frames::MSG_LOCATION,
                    result: 0,
                    ..
                } => {}
                other => panic!("terminal {i}: report answered {other:?}"),
            }
        }
        newest_valid = first_secs + (n - 1).min(count - 1);
    }
    newest_valid
}

/// A server with `last_known_flush = "1h"` whose terminals have sent, and got acknowledged,
/// reports over different stretches of device time (wired and wireless trackers of a vehicle, so
/// the vehicle's last known comes from one device and each device's own differs from it).
/// Returns the newest acknowledged valid device time (seconds) per terminal.
fn settled_server_with_a_long_flush(dir: &Path, data: &Path, config: &Path) -> (Server, Vec<i64>) {
    std::fs::write(
        config,
        "[state]\nlast_known_flush = \"1h\"\n[store]\ndurability = \"fsync\"\n",
    )
    .unwrap();
    let terminals = VEHICLES * 2;
    import_registry(dir, data, terminals);
    let server = spawn_server(data, config, &dir.join("serve-1.log"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let newest: Vec<i64> = rt.block_on(async {
        let tasks: Vec<_> = (0..terminals)
            .map(|i| {
                let first = now - 3_600 + (i as i64) * 7;
                let count = 20 + (i as i64) * 5;
                tokio::spawn(send_and_settle(server.jt808, i, first, count))
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    (server, newest)
}

/// The newest of each vehicle's devices' times.
fn newest_by_vehicle(newest: &[i64]) -> HashMap<String, i64> {
    let mut by_vehicle: HashMap<String, i64> = HashMap::new();
    for (i, &secs) in newest.iter().enumerate() {
        let e = by_vehicle.entry(vehicle_of(i)).or_insert(i64::MIN);
        *e = (*e).max(secs);
    }
    assert_eq!(by_vehicle.len(), VEHICLES);
    by_vehicle
}

/// A graceful stop writes the pending last known records, so they are in the store as they are,
/// without any help from the start-up recovery.
#[test]
fn sigterm_writes_the_pending_last_known_records() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("liengate.toml");
    let (mut server, newest) = settled_server_with_a_long_flush(dir.path(), &data, &config);
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "graceful stop exited with {exit}");
    let store = Store::open(&StoreConfig::new(&data)).unwrap();
    for (i, secs) in newest.iter().enumerate() {
        let key = format!("device:{}", terminal_id(i));
        let lk = store.last_known(&key).unwrap().expect("stored record");
        assert_eq!(lk.fix.time_ms, secs * 1000, "stored record of {key}");
    }
    for (vehicle, secs) in newest_by_vehicle(&newest) {
        let lk = store.last_known(&vehicle).unwrap().expect("stored record");
        assert_eq!(lk.fix.time_ms, secs * 1000, "stored record of {vehicle}");
    }
}

/// With last known writes coalesced over a long interval, the stored last known records are
/// stale when the server is killed; the restarted server must rebuild them from the track: the
/// newest acknowledged valid fix of every device and vehicle, not the flagged fix sent after it.
#[test]
fn kill9_before_the_last_known_flush_recovers_the_newest_acknowledged_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("liengate.toml");
    let (mut server, newest) = settled_server_with_a_long_flush(dir.path(), &data, &config);
    server.child.kill().unwrap(); // SIGKILL, long before the 1 h flush
    server.child.wait().unwrap();

    // The stored records are behind (none was written yet): what follows tests the recovery.
    {
        let store = Store::open(&StoreConfig::new(&data)).unwrap();
        for (i, secs) in newest.iter().enumerate() {
            let stored = store
                .last_known(&format!("device:{}", terminal_id(i)))
                .unwrap();
            assert!(
                stored.is_none_or(|lk| lk.fix.time_ms < secs * 1000),
                "device {}: the last known was already written",
                terminal_id(i)
            );
        }
    }

    let mut server = spawn_server(&data, &config, &dir.path().join("serve-2.log"));
    for (i, &secs) in newest.iter().enumerate() {
        let got = location_secs(
            server.http,
            &format!("/v1/devices/{}/location", terminal_id(i)),
        );
        assert_eq!(got, secs, "device {}", terminal_id(i));
    }
    let by_vehicle = newest_by_vehicle(&newest);
    for (vehicle, secs) in &by_vehicle {
        let got = location_secs(server.http, &format!("/v1/vehicles/{vehicle}/location"));
        assert_eq!(got, *secs, "vehicle {vehicle}");
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // Recovery wrote the rebuilt records back, so the next start need not scan again.
    let store = Store::open(&StoreConfig::new(&data)).unwrap();
    for (vehicle, secs) in &by_vehicle {
        let lk = store.last_known(vehicle).unwrap().expect("stored record");
        assert_eq!(lk.fix.time_ms, secs * 1000, "stored record of {vehicle}");
    }
}

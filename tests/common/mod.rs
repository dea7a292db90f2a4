//! Shared helpers for black-box tests: start the real `liengate serve` binary on 127.0.0.1 port 0
//! with a temporary data directory, read the bound ports from its stdout, and talk to it over
//! real TCP (a small JT808 terminal client and a minimal HTTP/1.1 GET client).
//!
//! Every test binary includes this module but uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use liengate::protocols::jt808::{
    decode_frame, encode_frame, encode_message, Alarm, Auth, Batch, BatchKind, BcdTime,
    DecodeOptions, Extras, GeneralResponse, Header, Location, Message, Register, Split, Splitter,
    Status, TerminalId, Version, MAX_LOGICAL_FRAME,
};

pub const TOKEN: &str = "test-admin-token";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `liengate serve` with its own data directory.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub jt808: SocketAddr,
    pub http: SocketAddr,
    config: Option<String>,
}

/// Starts the binary and waits for both "listening" lines. `config` is TOML written to
/// `<tmp>/liengate.toml` (data_dir is always the temp dir via `--data-dir`).
pub fn start(config: Option<&str>) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    start_in(dir, config.map(str::to_string), &[])
}

/// [`start`] with extra environment variables for this run only (a restart goes without them).
pub fn start_with_env(config: Option<&str>, env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    start_in(dir, config.map(str::to_string), env)
}

fn start_in(dir: tempfile::TempDir, config: Option<String>, env: &[(&str, &str)]) -> Server {
    let (child, jt808, http) = spawn(dir.path(), config.as_deref(), env);
    Server {
        child: Some(child),
        dir,
        jt808,
        http,
        config,
    }
}

fn spawn(
    dir: &Path,
    config: Option<&str>,
    env: &[(&str, &str)],
) -> (Child, SocketAddr, SocketAddr) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_liengate"));
    cmd.arg("serve")
        .arg("--listen-jt808")
        .arg("127.0.0.1:0")
        .arg("--listen-http")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.join("data"));
    if let Some(text) = config {
        let path = dir.join("liengate.toml");
        std::fs::write(&path, text).expect("write config");
        cmd.arg("--config").arg(&path);
    }
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stderr.log"))
        .expect("stderr log");
    cmd.env("LIENGATE_ADMIN_TOKEN", TOKEN)
        .env("LIENGATE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr));
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn liengate");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let _ = tx.send(line.trim().to_string());
            line.clear();
        }
    });
    let (mut jt808, mut http) = (None, None);
    let deadline = Instant::now() + START_TIMEOUT;
    while jt808.is_none() || http.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                panic!("liengate did not report its listeners; stderr:\n{log}");
            }
        };
        if let Some(addr) = line.strip_prefix("listening jt808 ") {
            jt808 = Some(addr.parse().expect("jt808 addr"));
        } else if let Some(addr) = line.strip_prefix("listening http ") {
            http = Some(addr.parse().expect("http addr"));
        }
    }
    (child, jt808.unwrap(), http.unwrap())
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Sends `signal` (e.g. "TERM") and waits for the exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        send_signal(self.pid(), signal);
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("liengate did not exit in time; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops gracefully (SIGTERM) if still running and starts again on the same data directory
    /// and config.
    pub fn restart(mut self) -> Server {
        if self.child.is_some() {
            let status = self.signal_and_wait("TERM");
            assert!(status.success(), "graceful stop failed: {status:?}");
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let config = self.config.take();
        start_in(dir, config, &[])
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.jt808)
    }

    /// GET with the admin token.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path, Some(TOKEN))
    }

    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let (status, body) = self.get(path);
        let json = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"));
        (status, json)
    }

    /// Value of a Prometheus sample (summed over every label set matching all `labels`).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let (_, text) = http_get(self.http, "/metrics", None);
        let mut total = 0.0;
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                continue;
            }
            if labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            {
                total += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        total
    }

    /// Polls until `f` is true (for effects that become visible asynchronously).
    pub fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Minimal HTTP/1.1 GET (the tests need nothing more; avoids an HTTP client dependency).
/// Sends `signal` (a name such as "TERM" or "USR1") to process `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{signal} {pid} failed");
}

pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("http connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("http read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("http response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A decoded downlink frame, owned.
#[derive(Debug, Clone)]
pub struct Reply {
    pub raw: Vec<u8>,
    pub header: Header,
    pub body: Vec<u8>,
}

impl Reply {
    /// (reply_serial, reply_id, result) of a 0x8001.
    pub fn general(&self) -> (u16, u16, u8) {
        assert_eq!(self.header.message_id, 0x8001, "not a 0x8001: {self:?}");
        let b = &self.body;
        (
            u16::from_be_bytes([b[0], b[1]]),
            u16::from_be_bytes([b[2], b[3]]),
            b[4],
        )
    }
}

/// A JT808 terminal speaking to the gateway over TCP.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    splitter: Splitter,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::over(TcpStream::connect(addr).expect("jt808 connect"))
    }

    /// A client on an already connected stream.
    fn over(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
            splitter: Splitter::new(4096),
        }
    }

    /// Connects from a chosen loopback source address (e.g. 127.0.0.2), like a second device.
    pub fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind source address");
        socket.connect(&addr.into()).expect("jt808 connect");
        Client::over(socket.into())
    }

    /// Connects with small socket buffers (`bytes` each way, before the kernel's own rounding),
    /// so that a test can make the gateway's writes block by not reading.
    pub fn connect_with_buffers(addr: SocketAddr, bytes: usize) -> Client {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        // Set before connecting so that the window offered in the handshake is already small.
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        socket.set_send_buffer_size(bytes).expect("SO_SNDBUF");
        socket.connect(&addr.into()).expect("jt808 connect");
        Client::over(socket.into())
    }

    /// Sends bursts from `next` until a write blocks for half a second (the gateway stopped
    /// reading: true) or `limit` bytes went out (false). The device reads nothing meanwhile.
    pub fn send_until_blocked(&mut self, limit: usize, mut next: impl FnMut() -> Vec<u8>) -> bool {
        self.stream
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut sent = 0usize;
        while sent <= limit {
            let burst = next();
            match std::io::Write::write_all(&mut self.stream, &burst) {
                Ok(()) => sent += burst.len(),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return true
                }
                Err(e) => panic!("send failed: {e}"),
            }
        }
        false
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Next whole frame from the gateway, decoded; panics on timeout.
    pub fn recv(&mut self) -> Reply {
        self.try_recv(IO_TIMEOUT)
            .expect("expected a frame from the gateway")
    }

    /// Next frame, or None if the connection closed or nothing came within `timeout`.
    pub fn try_recv(&mut self, timeout: Duration) -> Option<Reply> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        loop {
            match self.splitter.next(&self.buf) {
                Split::Frame { frame, consumed } => {
                    let raw = self.buf[frame].to_vec();
                    self.buf.drain(..consumed);
                    let mut scratch = [0u8; MAX_LOGICAL_FRAME];
                    let (packet, _) = decode_frame(&raw, &mut scratch, &DecodeOptions::default())
                        .unwrap_or_else(|e| {
                            panic!("gateway sent an invalid frame {raw:02x?}: {e}")
                        });
                    return Some(Reply {
                        header: packet.header,
                        body: packet.body.to_vec(),
                        raw,
                    });
                }
                Split::Incomplete { consumed } => {
                    self.buf.drain(..consumed);
                }
                Split::Invalid { error, .. } => panic!("gateway sent garbage: {error}"),
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                // A read timeout, a reset or any other error: no answer came.
                Err(_) => return None,
            }
        }
    }

    /// True when the gateway closed the connection (EOF or reset) within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut chunk = [0u8; 4096];
        while Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return true,
            }
        }
        false
    }

    /// Registers and authenticates `terminal`; returns the auth code.
    pub fn login(&mut self, terminal: &str) -> String {
        self.send(&register_frame(terminal, 1, "TEST-1"));
        let reply = self.recv();
        assert_eq!(reply.header.message_id, 0x8100, "{reply:?}");
        assert_eq!(reply.body[2], 0, "registration refused: {reply:?}");
        let code = String::from_utf8(reply.body[3..].to_vec()).unwrap();
        self.send(&auth_frame(terminal, 2, &code));
        let reply = self.recv();
        assert_eq!(reply.general(), (2, 0x0102, 0), "auth failed: {reply:?}");
        code
    }

    /// Authenticates with a known code (no registration).
    pub fn auth(&mut self, terminal: &str, serial: u16, code: &str) -> u8 {
        self.send(&auth_frame(terminal, serial, code));
        self.recv().general().2
    }

    /// Sends a frame and returns the 0x8001 result for it (checking serial and id).
    pub fn request(&mut self, frame: &[u8], serial: u16, message_id: u16) -> u8 {
        self.send(frame);
        let reply = self.recv();
        let (rs, rid, result) = reply.general();
        assert_eq!(
            (rs, rid),
            (serial, message_id),
            "answer to the wrong frame: {reply:?}"
        );
        result
    }
}

pub fn terminal(id: &str) -> TerminalId {
    TerminalId::parse(id, Version::V2013).expect("terminal id")
}

/// Encodes `msg` as a 2013 frame from `terminal` with `serial`.
pub fn frame(terminal_id: &str, serial: u16, msg: &Message<'_>) -> Vec<u8> {
    let header = Header::new(
        msg.message_id(),
        terminal(terminal_id),
        serial,
        Version::V2013,
    );
    let mut out = BytesMut::new();
    encode_message(&header, msg, &mut out);
    out.to_vec()
}

/// A frame with an arbitrary body (for malformed-body tests).
pub fn raw_frame(terminal_id: &str, serial: u16, message_id: u16, body: &[u8]) -> Vec<u8> {
    let header = Header::new(message_id, terminal(terminal_id), serial, Version::V2013);
    let mut out = BytesMut::new();
    encode_frame(&header, body, &mut out);
    out.to_vec()
}

pub fn register_frame(terminal_id: &str, serial: u16, model: &str) -> Vec<u8> {
    frame(
        terminal_id,
        serial,
        &Message::Register(Register {
            province: 44,
            city: 300,
            maker_id: b"LIENG",
            model: model.as_bytes(),
            device_id: b"TESTDEV",
            plate_color: 1,
            plate: b"TEST123",
        }),
    )
}

pub fn auth_frame(terminal_id: &str, serial: u16, code: &str) -> Vec<u8> {
    frame(
        terminal_id,
        serial,
        &Message::Auth(Auth {
            code: code.as_bytes(),
            imei: None,
            software_version: None,
        }),
    )
}

pub fn heartbeat_frame(terminal_id: &str, serial: u16) -> Vec<u8> {
    frame(terminal_id, serial, &Message::Heartbeat)
}

/// A position fix for tests: device time in Unix seconds, degrees, km/h.
#[derive(Debug, Clone, Copy)]
pub struct Pos {
    pub time: i64,
    pub lat: f64,
    pub lon: f64,
    pub speed_kmh: f64,
    pub fixed: bool,
    pub acc: bool,
}

impl Pos {
    pub fn at(time: i64, lat: f64, lon: f64) -> Pos {
        Pos {
            time,
            lat,
            lon,
            speed_kmh: 40.0,
            fixed: true,
            acc: true,
        }
    }

    pub fn location(&self) -> Location<'static> {
        let mut status = Status::empty();
        if self.acc {
            status |= Status::ACC_ON;
        }
        if self.fixed {
            status |= Status::FIXED;
        }
        if self.lat < 0.0 {
            status |= Status::SOUTH;
        }
        if self.lon < 0.0 {
            status |= Status::WEST;
        }
        Location {
            alarm: Alarm::empty(),
            status,
            lat_raw: (self.lat.abs() * 1e6).round() as u32,
            lon_raw: (self.lon.abs() * 1e6).round() as u32,
            altitude_m: 12,
            speed_raw: (self.speed_kmh * 10.0).round() as u16,
            course: 90,
            time: BcdTime::from_unix(self.time),
            extras: Extras(&[]),
        }
    }
}

pub fn location_frame(terminal_id: &str, serial: u16, pos: Pos) -> Vec<u8> {
    frame(terminal_id, serial, &Message::Location(pos.location()))
}

pub fn batch_frame(terminal_id: &str, serial: u16, blind_area: bool, items: &[Pos]) -> Vec<u8> {
    let mut raw = BytesMut::new();
    for p in items {
        Batch::put_item(&mut raw, &p.location());
    }
    frame(
        terminal_id,
        serial,
        &Message::Batch(Batch {
            kind: if blind_area {
                BatchKind::BlindArea
            } else {
                BatchKind::Normal
            },
            count: items.len() as u16,
            raw_items: &raw,
        }),
    )
}

/// The terminal's general response (0x0001), which the gateway must not answer.
pub fn terminal_response_frame(terminal_id: &str, serial: u16) -> Vec<u8> {
    frame(
        terminal_id,
        serial,
        &Message::GeneralResponse(GeneralResponse {
            reply_serial: 0,
            reply_id: 0x8001,
            result: 0,
        }),
    )
}

/// Now in Unix seconds.
pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Writes a registry CSV into the server's temp dir and returns its path. Columns follow
/// config/registry.example.csv.
pub fn write_registry(dir: &Path, csv: &str) -> PathBuf {
    let path = dir.join("registry.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// On-wire bytes of a reference frame from fixtures/jt808/frames.jsonl (copied from
/// shared/reference-frames, each line keeps its id and source).
pub fn fixture(id: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/jt808/frames.jsonl");
    let text = std::fs::read_to_string(&path).expect("fixtures/jt808/frames.jsonl");
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("fixture line");
        if v["id"] == id {
            return hex::decode(v["hex"].as_str().expect("hex")).expect("hex");
        }
    }
    panic!("no fixture {id}");
}

/// Frames logical bytes (header + body) the way JT/T 808 §4.4 describes: XOR check code, 0x7d
/// escapes, 0x7e delimiters. Written independently of the codec so that tests can compare the
/// gateway's answers byte for byte with values derived from the standard.
pub fn wire(logical: &[u8]) -> Vec<u8> {
    let check = logical.iter().fold(0u8, |acc, b| acc ^ b);
    let mut out = vec![0x7e];
    for &b in logical.iter().chain(std::iter::once(&check)) {
        match b {
            0x7e => out.extend_from_slice(&[0x7d, 0x02]),
            0x7d => out.extend_from_slice(&[0x7d, 0x01]),
            b => out.push(b),
        }
    }
    out.push(0x7e);
    out
}

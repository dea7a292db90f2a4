//! `liengate serve` configuration: one typed struct tree read from TOML.
//!
//! Every struct denies unknown fields so that a misspelt key is an error at start-up instead of a
//! silently ignored setting. Defaults live in the `Default` impls below and are documented key by
//! key in `config/liengate.example.toml`; a test parses that file so the two cannot drift apart.
//! After parsing, [`Config::validate`] checks the values and names the offending key.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod duration;

pub use crate::store::Durability;

/// A configuration problem, reported with the file (if any) and the key it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The I/O error is the source: the error chain prints it once, after this.
    #[error("config error in {file}: cannot read file")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, unknown keys and wrong types: toml's own message carries the line, column and key.
    #[error("config error in {file}: {message}")]
    Parse { file: String, message: String },
    #[error("config error in {file}: key {key}: {problem}")]
    Invalid {
        file: String,
        key: &'static str,
        problem: String,
    },
}

/// The whole configuration of `liengate serve`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub jt808: Jt808Config,
    pub http: HttpConfig,
    pub pipeline: PipelineConfig,
    pub sanitation: SanitationConfig,
    pub state: StateConfig,
    pub store: StoreSection,
    pub registry: RegistrySection,
}

/// What to do with a terminal that is not in the registry when it registers (0x0100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownDevicePolicy {
    /// Register it as an unassigned device that admins can see and later assign to a vehicle.
    #[default]
    Accept,
    /// Answer 0x8100 with result 4 ("no such terminal").
    Reject,
    /// Accept only terminal ids matching `jt808.allowlist`; reject the rest.
    Allowlist,
}

/// The JT/T 808 device listener and its per-connection limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jt808Config {
    pub listen: SocketAddr,
    pub max_connections: usize,
    /// Largest on-wire frame (both 0x7e delimiters and escapes included).
    pub max_frame: usize,
    /// Upper bound of the per-connection read buffer.
    pub read_buffer: usize,
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// `None` means 3 × `heartbeat_interval`.
    #[serde(with = "duration::option")]
    pub idle_timeout: Option<Duration>,
    /// Frames a connection may have sent but not yet had answered (waiting for the store).
    pub max_inflight: usize,
    /// Consecutive rejected frames after which the stream is treated as hostile and closed.
    pub max_bad_frames: u32,
    pub unknown_device: UnknownDevicePolicy,
    /// Terminal ids (exact, or a prefix ending in `*`) accepted under `unknown_device = "allowlist"`.
    pub allowlist: Vec<String>,
    /// Registrations of terminals the store does not know yet, per second on average (the
    /// token bucket's refill rate). Over it the connection is closed unanswered.
    pub new_device_rate: f64,
    /// How many such registrations may come at once (the token bucket's size).
    pub new_device_burst: u32,
    /// Unassigned devices (self-registered, not in the registry) the store may hold; more
    /// registrations are answered 0x8100 result 4.
    pub max_unassigned_devices: usize,
    pub auth: AuthConfig,
    pub subpackage: SubpackageConfig,
    pub models: Vec<ModelConfig>,
}

impl Default for Jt808Config {
    fn default() -> Self {
        Jt808Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 6808)),
            max_connections: 10_000,
            max_frame: liengate_protocols::jt808::DEFAULT_MAX_FRAME,
            read_buffer: 8 * 1024,
            heartbeat_interval: Duration::from_secs(60),
            idle_timeout: None,
            max_inflight: 64,
            max_bad_frames: 16,
            unknown_device: UnknownDevicePolicy::Accept,
            allowlist: Vec::new(),
            // A fresh gateway that a whole fleet of 10,000 self-registering trackers connects to
            // at once registers all of them within the burst; after that, 1,000 a second.
            new_device_rate: 1000.0,
            new_device_burst: 10_000,
            max_unassigned_devices: 100_000,
            auth: AuthConfig::default(),
            subpackage: SubpackageConfig::default(),
            models: Vec::new(),
        }
    }
}

impl Jt808Config {
    /// The idle timeout in force: the configured one, or three heartbeat intervals.
    pub fn effective_idle_timeout(&self) -> Duration {
        self.idle_timeout.unwrap_or(self.heartbeat_interval * 3)
    }

    /// The model settings for a device model name, if configured.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Whether `terminal_id` is on the allowlist (exact match or `prefix*`).
    pub fn allowlisted(&self, terminal_id: &str) -> bool {
        self.allowlist
            .iter()
            .any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => terminal_id.starts_with(prefix),
                None => entry == terminal_id,
            })
    }
}

/// Authentication (0x0102) failure handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Wrong auth codes in a row after which the connection is closed and the terminal locked out.
    pub max_failures: u32,
    #[serde(with = "duration")]
    pub lockout: Duration,
    /// Bound on the number of terminals remembered by the failure tracker.
    pub max_tracked_terminals: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_failures: 5,
            lockout: Duration::from_secs(300),
            max_tracked_terminals: 100_000,
        }
    }
}

/// Bounds of sub-package reassembly per connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubpackageConfig {
    pub max_messages: usize,
    pub max_packages: u16,
    pub max_bytes: usize,
    #[serde(with = "duration")]
    pub timeout: Duration,
}

impl Default for SubpackageConfig {
    fn default() -> Self {
        SubpackageConfig {
            max_messages: 4,
            max_packages: 256,
            max_bytes: 256 * 1024,
            timeout: Duration::from_secs(60),
        }
    }
}

/// Firmware-specific settings, matched by the model name of the device record or its 0x0100 body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    /// Accept frames with a wrong check code from this model (counted separately).
    #[serde(default)]
    pub skip_checksum: bool,
    /// Extra-item id carrying the battery percentage (one byte, 0-100).
    #[serde(default)]
    pub battery_pct_item: Option<u8>,
    /// Extra-item id carrying the external (car) voltage as a big-endian integer.
    #[serde(default)]
    pub voltage_item: Option<u8>,
    /// Millivolts per unit of `voltage_item` (100 when the device reports 0.1 V steps).
    #[serde(default = "default_voltage_unit_mv")]
    pub voltage_unit_mv: u32,
}

fn default_voltage_unit_mv() -> u32 {
    100
}

/// The HTTP API listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

/// Shard workers between the connections and the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Number of shard workers; 0 (the default) means one per CPU core.
    pub shards: usize,
    /// Bounded queue per shard, in messages; 0 means the built-in default (4096).
    pub queue_depth: usize,
    /// Streak slots per shard: when a shard falls behind (four times this many position frames
    /// await their commit outcome), the devices holding a slot read on and the others take
    /// turns (`gateway::admission`), with more slots in use while the machine's CPU has time
    /// to spare; 0 turns it off. Default 256 (benches/RESULTS.md, sessions 9 to 11).
    pub admission_limit: usize,
    /// Most reads a device makes with one slot before it gives the slot back. Default 16: at
    /// 10,000 terminals in a closed loop, 8 served 106k positions/s with a p99 answer time of
    /// 0.9 s, 16 served 113-118k at 1.4-1.7 s with every device served as evenly, and 32 starved
    /// most devices (benches/RESULTS.md, session 11). A queue too long for streaks this long
    /// to go round it within a second cuts them shorter (session 15).
    pub admission_streak: u32,
    /// Run the shard workers under Linux's `SCHED_BATCH` policy: they keep their share of the CPU
    /// but do not preempt other threads when they wake, so a busy gateway switches context less
    /// often (`crate::sched`, benches/RESULTS.md session 16). Default on; ignored on other systems.
    pub batch_scheduling: bool,
}

/// Largest `pipeline.admission_limit`: far above any useful number of streak slots, and small
/// enough that the slot table (eight times as many, a few dozen bytes each) stays bounded.
const MAX_ADMISSION_LIMIT: usize = 16_384;

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            shards: 0,
            queue_depth: 0,
            admission_limit: 256,
            admission_streak: 16,
            batch_scheduling: true,
        }
    }
}

impl PipelineConfig {
    pub fn effective_shards(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.shards
        }
    }

    pub fn effective_queue_depth(&self) -> usize {
        if self.queue_depth == 0 {
            4096
        } else {
            self.queue_depth
        }
    }
}

/// Rules that flag suspect fixes (stored, counted, never the last known position).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SanitationConfig {
    /// Implied speed between two fixes of one device above which the later one is an impossible jump.
    pub max_speed_kmh: f64,
    /// How far a device time may run ahead of the gateway clock.
    #[serde(with = "duration")]
    pub max_future_skew: Duration,
}

impl Default for SanitationConfig {
    fn default() -> Self {
        SanitationConfig {
            max_speed_kmh: 300.0,
            max_future_skew: Duration::from_secs(600),
        }
    }
}

/// Derived vehicle state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// No frame from any of a vehicle's devices for this long marks it offline.
    #[serde(with = "duration")]
    pub offline_after: Duration,
    /// Below this speed the vehicle counts as standing still.
    pub parked_speed_kmh: f64,
    /// Standing still for this long (device time) makes the vehicle parked.
    #[serde(with = "duration")]
    pub parked_after: Duration,
    /// Changed last known positions are written to the store at most this often (and at a
    /// graceful shutdown), latest wins. Track points are still committed before every answer;
    /// after a crash the last known positions are rebuilt from the track points newer than the
    /// stored records, so a longer interval only lengthens that scan at start-up.
    #[serde(with = "duration")]
    pub last_known_flush: Duration,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            offline_after: Duration::from_secs(600),
            parked_speed_kmh: 5.0,
            parked_after: Duration::from_secs(600),
            last_known_flush: Duration::from_secs(2),
        }
    }
}

/// The embedded store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub retention_days: u32,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            data_dir: PathBuf::from("./data"),
            durability: Durability::Fsync,
            retention_days: 180,
        }
    }
}

/// The device / vehicle / loan registry.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// CSV or JSON file imported at every start (relative paths are relative to the config file).
    pub import: Option<PathBuf>,
}

impl Config {
    /// Reads and validates `path`, or returns the validated defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            let cfg = Config::default();
            cfg.validate("<defaults>")?;
            return Ok(cfg);
        };
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let mut cfg = Config::parse(&text, &file)?;
        // Relative paths inside the file mean "next to the file", not "next to the working directory".
        if let Some(dir) = path.parent() {
            if let Some(import) = cfg.registry.import.as_mut() {
                if import.is_relative() {
                    *import = dir.join(&*import);
                }
            }
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text; `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|err| ConfigError::Parse {
            file: file.to_string(),
            message: err.to_string().trim_end().to_string(),
        })?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Checks value ranges that types alone cannot express.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, problem: &str| {
            Err(ConfigError::Invalid {
                file: file.to_string(),
                key,
                problem: problem.to_string(),
            })
        };
        let j = &self.jt808;
        let min_frame = 2 + 12 + 1; // delimiters, the shortest (2011/2013) header and the check code
        if j.max_connections == 0 {
            return invalid("jt808.max_connections", "must be > 0");
        }
        if j.max_frame < min_frame {
            return invalid(
                "jt808.max_frame",
                &format!("must be >= {min_frame} bytes (the smallest JT808 frame)"),
            );
        }
        if j.read_buffer < j.max_frame {
            return invalid(
                "jt808.read_buffer",
                &format!(
                    "must be >= jt808.max_frame ({}) so that one whole frame fits",
                    j.max_frame
                ),
            );
        }
        if j.heartbeat_interval.is_zero() {
            return invalid("jt808.heartbeat_interval", "must be > 0");
        }
        if j.idle_timeout.is_some_and(|d| d.is_zero()) {
            return invalid("jt808.idle_timeout", "must be > 0");
        }
        if j.max_inflight == 0 {
            return invalid("jt808.max_inflight", "must be > 0");
        }
        if self.pipeline.admission_limit > MAX_ADMISSION_LIMIT {
            return invalid(
                "pipeline.admission_limit",
                &format!(
                    "must be at most {MAX_ADMISSION_LIMIT} (slots per shard; 0 turns admission off)"
                ),
            );
        }
        if self.pipeline.admission_limit > 0 && self.pipeline.admission_streak == 0 {
            return invalid(
                "pipeline.admission_streak",
                "must be > 0 while pipeline.admission_limit is set (0 turns admission off)",
            );
        }
        if j.max_bad_frames == 0 {
            return invalid("jt808.max_bad_frames", "must be > 0");
        }
        if j.unknown_device == UnknownDevicePolicy::Allowlist && j.allowlist.is_empty() {
            return invalid(
                "jt808.allowlist",
                "must list at least one terminal id when jt808.unknown_device = \"allowlist\"",
            );
        }
        if let Some(bad) = j
            .allowlist
            .iter()
            .find(|e| e.trim_end_matches('*').is_empty() && *e != "*")
        {
            return invalid("jt808.allowlist", &format!("empty entry {bad:?}"));
        }
        if !(j.new_device_rate.is_finite() && j.new_device_rate > 0.0) {
            return invalid("jt808.new_device_rate", "must be a number > 0");
        }
        if j.new_device_burst == 0 {
            return invalid("jt808.new_device_burst", "must be >= 1");
        }
        if j.max_unassigned_devices == 0 {
            return invalid(
                "jt808.max_unassigned_devices",
                "must be >= 1 (to refuse every unknown terminal, set jt808.unknown_device = \"reject\")",
            );
        }
        if j.auth.max_failures == 0 {
            return invalid("jt808.auth.max_failures", "must be > 0");
        }
        if j.auth.max_tracked_terminals == 0 {
            return invalid("jt808.auth.max_tracked_terminals", "must be > 0");
        }
        if j.subpackage.max_messages == 0 {
            return invalid("jt808.subpackage.max_messages", "must be > 0");
        }
        if j.subpackage.max_packages < 2 {
            return invalid("jt808.subpackage.max_packages", "must be >= 2");
        }
        if j.subpackage.max_bytes == 0 {
            return invalid("jt808.subpackage.max_bytes", "must be > 0");
        }
        if j.subpackage.timeout.is_zero() {
            return invalid("jt808.subpackage.timeout", "must be > 0");
        }
        let mut names = std::collections::HashSet::new();
        for m in &j.models {
            if m.name.trim().is_empty() {
                return invalid("jt808.models.name", "must not be empty");
            }
            if !names.insert(m.name.as_str()) {
                return invalid(
                    "jt808.models.name",
                    &format!("model {:?} is listed twice", m.name),
                );
            }
            if m.voltage_unit_mv == 0 {
                return invalid("jt808.models.voltage_unit_mv", "must be > 0");
            }
        }
        if self.pipeline.shards > 1024 {
            return invalid("pipeline.shards", "must be <= 1024");
        }
        if self.pipeline.queue_depth > 1_000_000 {
            return invalid("pipeline.queue_depth", "must be <= 1000000");
        }
        let s = &self.sanitation;
        if !(s.max_speed_kmh.is_finite() && s.max_speed_kmh > 0.0) {
            return invalid("sanitation.max_speed_kmh", "must be a number > 0");
        }
        let st = &self.state;
        if st.offline_after.is_zero() {
            return invalid("state.offline_after", "must be > 0");
        }
        if !(st.parked_speed_kmh.is_finite() && st.parked_speed_kmh >= 0.0) {
            return invalid("state.parked_speed_kmh", "must be a number >= 0");
        }
        if st.last_known_flush.is_zero() || st.last_known_flush > Duration::from_secs(86_400) {
            return invalid("state.last_known_flush", "must be > 0 and <= 24h");
        }
        if self.store.data_dir.as_os_str().is_empty() {
            return invalid("store.data_dir", "must not be empty");
        }
        if self.store.retention_days == 0 {
            return invalid("store.retention_days", "must be >= 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let cfg = Config::load(None).unwrap();
        assert_eq!(cfg.jt808.listen.to_string(), "0.0.0.0:6808");
        assert_eq!(cfg.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(cfg.store.data_dir, PathBuf::from("./data"));
        assert_eq!(cfg.jt808.effective_idle_timeout(), Duration::from_secs(180));
        assert_eq!(cfg.state.offline_after, Duration::from_secs(600));
        assert_eq!(cfg.state.last_known_flush, Duration::from_secs(2));
        assert_eq!(cfg.store.durability, Durability::Fsync);
        assert!(cfg.pipeline.effective_shards() >= 1);
    }

    #[test]
    fn last_known_flush_is_parsed_and_bounded() {
        let cfg = Config::parse("[state]\nlast_known_flush = \"1h\"\n", "x.toml").unwrap();
        assert_eq!(cfg.state.last_known_flush, Duration::from_secs(3600));
        for bad in ["0s", "2days"] {
            let text = format!("[state]\nlast_known_flush = \"{bad}\"\n");
            let err = Config::parse(&text, "x.toml").unwrap_err();
            assert!(err.to_string().contains("state.last_known_flush"), "{err}");
        }
    }

    #[test]
    fn the_example_file_parses_and_matches_defaults_where_it_says_so() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/liengate.example.toml");
        let cfg = Config::load(Some(&path)).unwrap();
        let def = Config::default();
        assert_eq!(cfg.jt808.listen, def.jt808.listen);
        assert_eq!(cfg.jt808.max_frame, def.jt808.max_frame);
        assert_eq!(cfg.jt808.new_device_rate, def.jt808.new_device_rate);
        assert_eq!(cfg.jt808.new_device_burst, def.jt808.new_device_burst);
        assert_eq!(
            cfg.jt808.max_unassigned_devices,
            def.jt808.max_unassigned_devices
        );
        assert_eq!(cfg.state.offline_after, def.state.offline_after);
        assert_eq!(cfg.jt808.models.len(), 1);
    }

    #[test]
    fn invalid_values_name_file_and_key() {
        let err = Config::parse("[jt808]\nmax_connections = 0\n", "x.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config error in x.toml: key jt808.max_connections: must be > 0"
        );
        let err = Config::parse("[pipeline]\nadmission_limit = 100000\n", "x.toml").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "config error in x.toml: key pipeline.admission_limit: must be at most 16384 "
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::parse("[jt808]\nmax_conections = 5\n", "x.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.toml"), "{msg}");
        assert!(msg.contains("max_conections"), "{msg}");
    }

    #[test]
    fn durations_accept_human_units() {
        let cfg = Config::parse(
            "[jt808]\nheartbeat_interval = \"250ms\"\n[state]\noffline_after = \"2m\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(cfg.jt808.heartbeat_interval, Duration::from_millis(250));
        assert_eq!(
            cfg.jt808.effective_idle_timeout(),
            Duration::from_millis(750)
        );
        assert_eq!(cfg.state.offline_after, Duration::from_secs(120));
        let err = Config::parse("[state]\noffline_after = \"soon\"\n", "x.toml").unwrap_err();
        assert!(err.to_string().contains("offline_after"), "{err}");
    }

    #[test]
    fn new_device_limits_are_parsed_and_bounded() {
        let cfg = Config::parse(
            "[jt808]\nnew_device_rate = 2.5\nnew_device_burst = 3\nmax_unassigned_devices = 7\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(cfg.jt808.new_device_rate, 2.5);
        assert_eq!(cfg.jt808.new_device_burst, 3);
        assert_eq!(cfg.jt808.max_unassigned_devices, 7);
        for (text, key) in [
            ("new_device_rate = 0", "jt808.new_device_rate"),
            ("new_device_rate = -1.0", "jt808.new_device_rate"),
            ("new_device_rate = nan", "jt808.new_device_rate"),
            ("new_device_burst = 0", "jt808.new_device_burst"),
            ("max_unassigned_devices = 0", "jt808.max_unassigned_devices"),
        ] {
            let err = Config::parse(&format!("[jt808]\n{text}\n"), "x.toml").unwrap_err();
            assert!(
                err.to_string().contains(&format!("x.toml: key {key}")),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn allowlist_matches_exact_ids_and_prefixes() {
        let cfg = Config::parse(
            "[jt808]\nunknown_device = \"allowlist\"\nallowlist = [\"0138*\", \"013900000001\"]\n",
            "x.toml",
        )
        .unwrap();
        assert!(cfg.jt808.allowlisted("013812345678"));
        assert!(cfg.jt808.allowlisted("013900000001"));
        assert!(!cfg.jt808.allowlisted("013900000002"));
        let err = Config::parse("[jt808]\nunknown_device = \"allowlist\"\n", "x.toml").unwrap_err();
        assert!(err.to_string().contains("key jt808.allowlist"), "{err}");
    }
}

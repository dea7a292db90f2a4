//! Configuration errors, black-box: `liengate serve --config FILE` refuses to start with a
//! message naming the file, the key and the problem; the documented example file works.
mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn serve_with(config: &str) -> (Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("liengate.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_liengate"))
        .args(["serve", "--config"])
        .arg(&path)
        .args([
            "--listen-jt808",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out, path.display().to_string())
}

fn assert_refused(config: &str, needles: &[&str]) {
    let (out, file) = serve_with(config);
    assert!(!out.status.success(), "started with a bad config: {config}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("config error in {file}")),
        "no file name in: {stderr}"
    );
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing in: {stderr}");
    }
    assert!(out.stdout.is_empty(), "printed listening lines");
}

#[test]
fn invalid_values_name_the_key() {
    assert_refused(
        "[jt808]\nmax_connections = 0\n",
        &["key jt808.max_connections: must be > 0"],
    );
    assert_refused(
        "[jt808]\nmax_frame = 4096\nread_buffer = 1024\n",
        &["key jt808.read_buffer: must be >= jt808.max_frame (4096)"],
    );
    assert_refused(
        "[jt808]\nunknown_device = \"allowlist\"\n",
        &["key jt808.allowlist"],
    );
    assert_refused(
        "[store]\nretention_days = 0\n",
        &["key store.retention_days"],
    );
    assert_refused(
        "[sanitation]\nmax_speed_kmh = -1.0\n",
        &["key sanitation.max_speed_kmh"],
    );
}

#[test]
fn unknown_keys_wrong_types_and_bad_enums_name_the_key() {
    assert_refused("[jt808]\nmax_conections = 5\n", &["max_conections"]);
    assert_refused("[jt8088]\n", &["jt8088"]);
    assert_refused(
        "[jt808]\nmax_connections = \"many\"\n",
        &["max_connections"],
    );
    assert_refused(
        "[jt808]\nunknown_device = \"maybe\"\n",
        &["unknown_device", "maybe"],
    );
    assert_refused(
        "[store]\ndurability = \"sometimes\"\n",
        &["durability", "sometimes"],
    );
    assert_refused(
        "[state]\noffline_after = \"soon\"\n",
        &["offline_after", "soon"],
    );
    assert_refused("[jt808\nlisten = 1\n", &["line 1"]);
}

#[test]
fn a_missing_file_is_reported() {
    let out = Command::new(env!("CARGO_BIN_EXE_liengate"))
        .args(["serve", "--config", "/nonexistent/liengate.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config error in /nonexistent/liengate.toml: cannot read file: "),
        "{stderr}"
    );
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}

#[test]
fn the_example_config_starts_the_server() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/liengate.example.toml");
    let text = std::fs::read_to_string(example).unwrap();
    let mut server = common::start(Some(&text));
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
    assert!(server.signal_and_wait("TERM").success());
}

/// A registry file that cannot be read stops the start with one message that names the config
/// key, the file and the operating system's reason, each once.
#[test]
fn a_missing_registry_file_is_reported_once() {
    let (out, _) = serve_with("[registry]\nimport = \"/nonexistent/registry.csv\"\n");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("liengate: "))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"));
    assert!(
        line.contains(
            "importing the registry file (registry.import): /nonexistent/registry.csv: cannot read: "
        ),
        "{line}"
    );
    assert_eq!(
        line.matches("/nonexistent/registry.csv").count(),
        1,
        "{line}"
    );
    assert_eq!(line.matches("No such file").count(), 1, "{line}");
}

//! `liengate registry` as a user runs it: import the example files, list, and see errors that
//! name the file, line and field; a running store refuses a second opener.
use std::process::{Command, Output};

mod common;

fn liengate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_liengate"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn import_then_list_shows_devices_with_vehicle_and_loan() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/registry.example.csv");
    let out = liengate(&["registry", "import", example, "--data-dir", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("4 devices, 2 vehicles, 2 loans"),
        "{}",
        text(&out.stdout)
    );

    // Importing the JSON twin again is idempotent: same records, nothing duplicated.
    let example_json = concat!(env!("CARGO_MANIFEST_DIR"), "/config/registry.example.json");
    let out = liengate(&["registry", "import", example_json, "--data-dir", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = liengate(&["registry", "list", "--data-dir", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let d3 = lines
        .iter()
        .find(|l| l["device"]["terminal_id"] == "013800138003")
        .unwrap();
    assert_eq!(d3["device"]["skip_checksum"], true);
    assert_eq!(d3["vehicle"]["plate"], "京A88888");
    assert_eq!(d3["loan"]["stage"], "overdue_m1");
    let unassigned = lines
        .iter()
        .find(|l| l["device"]["terminal_id"] == "013800138004")
        .unwrap();
    assert!(unassigned["vehicle"].is_null());
}

#[test]
fn a_bad_file_fails_naming_file_line_and_field_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let file = dir.path().join("fleet.csv");
    std::fs::write(
        &file,
        "terminal_id,role,vehicle_id,stage\n013900000001,wired,V1,\n013900000002,wireles,V1,\n",
    )
    .unwrap();
    let out = liengate(&[
        "registry",
        "import",
        file.to_str().unwrap(),
        "--data-dir",
        data,
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("fleet.csv"), "{err}");
    assert!(err.contains("line 3, field role"), "{err}");
    // An empty stage column is "not given", not an error.
    assert!(!err.contains("field stage"), "{err}");

    let out = liengate(&["registry", "list", "--data-dir", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).is_empty(),
        "nothing may be imported from a bad file"
    );

    let out = liengate(&["registry", "check", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("line 3, field role"));
}

#[test]
fn unsupported_extension_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.xlsx");
    std::fs::write(&file, "x").unwrap();
    let out = liengate(&["registry", "check", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("expected .csv or .json"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_data_dir_can_come_from_the_gateway_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-config");
    let config = dir.path().join("liengate.toml");
    std::fs::write(
        &config,
        format!("[store]\ndata_dir = {:?}\n", data.to_str().unwrap()),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/registry.example.json");
    let out = liengate(&["registry", "import", example, "--config", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        data.join("store").is_dir(),
        "the store must be under store.data_dir"
    );
    let out = liengate(&["registry", "list", "--config", config]);
    assert_eq!(
        text(&out.stdout).lines().count(),
        4,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_import_while_the_gateway_runs_says_what_to_do_and_changes_nothing() {
    let mut server = common::start(None);
    let data = server.data_dir();
    let data = data.to_str().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/registry.example.csv");
    let out = liengate(&["registry", "import", example, "--data-dir", data]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    assert!(err.contains("a running `liengate serve` holds it"), "{err}");
    assert!(err.contains("[registry] import"), "{err}");
    // The gateway goes on undisturbed, and the refused import left nothing behind.
    assert_eq!(server.get("/healthz").0, 200);
    assert!(server.signal_and_wait("TERM").success());
    let out = liengate(&["registry", "list", "--data-dir", data]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        0,
        "{}",
        text(&out.stdout)
    );
}

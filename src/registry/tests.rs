use super::*;
use crate::store::StoreConfig;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn problems(err: RegistryError) -> Vec<RowError> {
    match err {
        RegistryError::Invalid { errors, .. } => errors,
        other => panic!("expected validation errors, got {other}"),
    }
}

const HEADER: &str =
    "terminal_id,protocol,role,sim,imei,model,skip_checksum,vehicle_id,plate,vin,loan_id,stage\n";

#[test]
fn example_files_load_and_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let csv = load_file(&root.join("registry.example.csv")).unwrap();
    let json = load_file(&root.join("registry.example.json")).unwrap();
    assert_eq!(csv, json);
    assert_eq!(csv.devices.len(), 4);
    assert_eq!(csv.vehicles.len(), 2);
    assert_eq!(csv.loans.len(), 2);
    let d3 = csv
        .devices
        .iter()
        .find(|d| d.terminal_id == "013800138003")
        .unwrap();
    assert!(d3.skip_checksum);
    assert_eq!(csv.loans[1].stage, LoanStage::OverdueM1);
    assert!(csv.devices[3].vehicle_id.is_none());
}

#[test]
fn csv_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEADER}\
         013800000001,jt808,wired,,,,,V1,,,,\n\
         013800000002,jt808,flying,,,,,V1,,,,\n\
         013800000001,jt808,wired,,,,,V2,,,,\n\
         abc-1,jt808,wired,,,,maybe,,P1,,,\n"
    );
    let path = write(dir.path(), "reg.csv", &text);
    let err = load_file(&path).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("reg.csv"), "{shown}");
    let p = problems(err);
    let at = |line: u64, field: &str| {
        p.iter()
            .any(|e| e.at == Location::Line(line) && e.field.as_deref() == Some(field))
    };
    assert!(at(3, "role"), "{p:?}");
    assert!(at(4, "terminal_id"), "{p:?}");
    assert!(at(5, "terminal_id"), "{p:?}");
    assert!(!at(2, "role"));
    assert!(shown.contains("line 3, field role"), "{shown}");
}

#[test]
fn csv_rejects_unknown_columns() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "r.csv",
        "terminal_id,role,vehicleid\n1,wired,V\n",
    );
    let p = problems(load_file(&path).unwrap_err());
    assert_eq!(p[0].field.as_deref(), Some("vehicleid"));
    assert_eq!(p[0].at, Location::Line(1));
}

#[test]
fn json_errors_name_row_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "r.json",
        r#"[{"terminal_id":"1","role":"wired"},
            {"terminal_id":"2","role":"wired","colour":"red"},
            {"terminal_id":"3","role":"wired","vehicle_id":"V","vin":"SHORT"},
            {"terminal_id":"4","role":"wired","stage":"watch"}]"#,
    );
    let p = problems(load_file(&path).unwrap_err());
    // Rows that cannot be read stop the import before validation, so only row 2 is reported.
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        (p[0].at, p[0].field.as_deref()),
        (Location::Row(2), Some("colour"))
    );
    let path = write(
        dir.path(),
        "r.json",
        r#"[{"terminal_id":"3","role":"wired","vehicle_id":"V","vin":"SHORT"},
            {"terminal_id":"4","role":"wired","stage":"watch"}]"#,
    );
    let p = problems(load_file(&path).unwrap_err());
    assert_eq!(
        (p[0].at, p[0].field.as_deref()),
        (Location::Row(1), Some("vin"))
    );
    assert_eq!(
        (p[1].at, p[1].field.as_deref()),
        (Location::Row(2), Some("stage"))
    );
}

#[test]
fn conflicting_vehicle_attributes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{HEADER}\
         1,jt808,wired,,,,,V1,P-1,,L1,watch\n\
         2,jt808,wireless,,,,,V1,P-2,,,\n\
         3,jt808,wired,,,,,V2,,,L1,\n"
    );
    let path = write(dir.path(), "c.csv", &text);
    let p = problems(load_file(&path).unwrap_err());
    assert!(p
        .iter()
        .any(|e| e.at == Location::Line(3) && e.field.as_deref() == Some("plate")));
    assert!(p
        .iter()
        .any(|e| e.at == Location::Line(4) && e.field.as_deref() == Some("loan_id")));
}

#[test]
fn import_stores_devices_vehicles_and_loans() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig::new(dir.path().join("data"))).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/registry.example.json");
    let report = import_file(&store, &example).unwrap();
    assert_eq!((report.devices, report.vehicles, report.loans), (4, 2, 2));
    let fitted: Vec<_> = store
        .devices_of_vehicle("VH-0001")
        .unwrap()
        .into_iter()
        .map(|d| (d.terminal_id, d.role))
        .collect();
    assert_eq!(
        fitted,
        vec![
            ("013800138001".to_string(), DeviceRole::Wired),
            ("013800138002".to_string(), DeviceRole::Wireless)
        ]
    );
    assert_eq!(
        store.vehicle("VH-0002").unwrap().unwrap().vin.as_deref(),
        Some("LSVAU2A37N2123456")
    );
    assert_eq!(
        store.loan("LN-2024-0002").unwrap().unwrap().stage,
        LoanStage::OverdueM1
    );
    // A failing file writes nothing.
    let bad = write(
        dir.path(),
        "bad.csv",
        "terminal_id,role\n9,wired\n10,nope\n",
    );
    assert!(import_file(&store, &bad).is_err());
    assert!(store.device("9").unwrap().is_none());
}

proptest::proptest! {
    /// Whatever bytes a registry file holds, loading it returns a registry or errors; it never
    /// panics (the parsers and validators index into rows and strings).
    #[test]
    fn arbitrary_files_never_panic(text in "(?s).{0,400}", header in proptest::bool::ANY) {
        let dir = tempfile::tempdir().unwrap();
        let csv = if header { format!("{HEADER}{text}") } else { text.clone() };
        let _ = load_file(&write(dir.path(), "f.csv", &csv));
        let _ = load_file(&write(dir.path(), "f.json", &text));
        let json = format!(r#"[{{"terminal_id":{text:?},"role":"wired","vin":{text:?},"vehicle_id":"V"}}]"#);
        let _ = load_file(&write(dir.path(), "g.json", &json));
    }
}

#[test]
fn import_works_inside_any_runtime_flavour() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/registry.example.csv");
    for multi in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let rt = if multi {
            tokio::runtime::Builder::new_multi_thread().build().unwrap()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        let store = Store::open(&StoreConfig::new(dir.path())).unwrap();
        let report = rt
            .block_on(async { import_file(&store, &example) })
            .unwrap();
        assert_eq!(report.devices, 4);
        assert_eq!(store.devices().unwrap().len(), 4);
    }
}

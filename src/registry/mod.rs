//! The device registry file: devices, the vehicles they are fitted to and the loans on those
//! vehicles, imported into the store from CSV or JSON.
//!
//! One row per device. Columns (CSV header / JSON keys), documented with examples in
//! `config/registry.example.csv` and `config/registry.example.json`:
//!
//! | column | required | meaning |
//! |---|---|---|
//! | terminal_id | yes | terminal id as in the JT808 header, digits (leading zeros kept) |
//! | protocol | no (jt808) | wire protocol; only `jt808` today |
//! | role | yes | `wired` or `wireless` |
//! | sim, imei, model | no | SIM number, IMEI (14-16 digits), tracker model |
//! | skip_checksum | no (false) | accept wrong check codes from this device (firmware quirk) |
//! | vehicle_id | no | vehicle the device is fitted to; empty = unassigned |
//! | plate, vin | no | vehicle attributes (need vehicle_id) |
//! | loan_id, stage | no | the loan on the vehicle (need vehicle_id); stage defaults to `normal` |
//!
//! A file is validated completely before anything is written, and every problem is reported
//! with the file, line (CSV) or row (JSON, counted from 1) and field. The import is one atomic
//! commit: either the whole file is in the store or none of it.
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Device, DeviceRole, Loan, LoanStage, Vehicle};
use crate::store::{Store, Write, MAX_ID_LEN};

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub file: PathBuf,
    pub devices: usize,
    pub vehicles: usize,
    pub loans: usize,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "imported {}: {} devices, {} vehicles, {} loans",
            self.file.display(),
            self.devices,
            self.vehicles,
            self.loans
        )
    }
}

/// Where in the file a row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// CSV line number (1 = header).
    Line(u64),
    /// JSON array index counted from 1.
    Row(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
        }
    }
}

/// One problem in one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub at: Location,
    /// The column, or `None` when the row as a whole could not be read.
    pub field: Option<String>,
    pub message: String,
}

/// Why a registry file was not imported.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    // The I/O error is the source: the error chain prints it once, after this.
    #[error("{file}: cannot read")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: unsupported extension (expected .csv or .json)")]
    Extension { file: PathBuf },
    #[error("{file}: {}", list(.errors))]
    Invalid {
        file: PathBuf,
        errors: Vec<RowError>,
    },
    #[error("{file}: storing the registry failed")]
    Store {
        file: PathBuf,
        #[source]
        source: crate::store::StoreError,
    },
}

fn list(errors: &[RowError]) -> String {
    const SHOWN: usize = 20;
    let mut out = format!("{} problem(s)", errors.len());
    for e in errors.iter().take(SHOWN) {
        match &e.field {
            Some(field) => out.push_str(&format!("\n  {}, field {field}: {}", e.at, e.message)),
            None => out.push_str(&format!("\n  {}: {}", e.at, e.message)),
        }
    }
    if errors.len() > SHOWN {
        out.push_str(&format!("\n  ... and {} more", errors.len() - SHOWN));
    }
    out
}

/// A row as written in the file, before validation. Unknown columns are an error so that a
/// typo (`vehicleid`) is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    terminal_id: Option<String>,
    protocol: Option<String>,
    role: Option<String>,
    sim: Option<String>,
    imei: Option<String>,
    model: Option<String>,
    skip_checksum: Option<serde_json::Value>,
    vehicle_id: Option<String>,
    plate: Option<String>,
    vin: Option<String>,
    loan_id: Option<String>,
    stage: Option<String>,
}

const COLUMNS: &[&str] = &[
    "terminal_id",
    "protocol",
    "role",
    "sim",
    "imei",
    "model",
    "skip_checksum",
    "vehicle_id",
    "plate",
    "vin",
    "loan_id",
    "stage",
];

/// Parsed and validated contents of a registry file.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Registry {
    pub devices: Vec<Device>,
    pub vehicles: Vec<Vehicle>,
    pub loans: Vec<Loan>,
}

impl Registry {
    /// The writes that put this registry into the store.
    pub fn writes(&self) -> Vec<Write> {
        let mut w = Vec::with_capacity(self.devices.len() + self.vehicles.len() + self.loans.len());
        w.extend(self.vehicles.iter().cloned().map(Write::Vehicle));
        w.extend(self.loans.iter().cloned().map(Write::Loan));
        w.extend(self.devices.iter().cloned().map(Write::Device));
        w
    }
}

/// Reads, validates and stores a registry file (CSV or JSON by extension) in one atomic commit.
/// Rows for devices already in the store replace them; nothing is deleted.
pub fn import_file(store: &Store, path: &Path) -> anyhow::Result<ImportReport> {
    let registry = load_file(path)?;
    let report = ImportReport {
        file: path.to_path_buf(),
        devices: registry.devices.len(),
        vehicles: registry.vehicles.len(),
        loans: registry.loans.len(),
    };
    let writes = registry.writes();
    // An import runs from the CLI (no async runtime) or during `serve` start-up (inside one,
    // where blocking calls on a runtime thread panic). A short-lived thread of our own can always
    // wait for the committer, which is a plain thread and needs no runtime.
    let result = std::thread::scope(|s| {
        s.spawn(|| store.commit_blocking(writes))
            .join()
            .unwrap_or(Err(crate::store::StoreError::Closed))
    });
    result.map_err(|source| RegistryError::Store {
        file: path.to_path_buf(),
        source,
    })?;
    Ok(report)
}

/// Reads and validates a registry file without touching the store.
pub fn load_file(path: &Path) -> Result<Registry, RegistryError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let text = std::fs::read_to_string(path).map_err(|source| RegistryError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let rows = match ext.as_deref() {
        Some("csv") => parse_csv(&text),
        Some("json") => parse_json(&text),
        _ => {
            return Err(RegistryError::Extension {
                file: path.to_path_buf(),
            })
        }
    };
    let result = rows.and_then(validate);
    result.map_err(|errors| RegistryError::Invalid {
        file: path.to_path_buf(),
        errors,
    })
}

fn parse_csv(text: &str) -> Result<Vec<(Location, RawRow)>, Vec<RowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| {
            vec![RowError {
                at: Location::Line(1),
                field: None,
                message: format!("cannot read the header: {e}"),
            }]
        })?
        .clone();
    let mut errors = Vec::new();
    for h in headers.iter() {
        if !COLUMNS.contains(&h) {
            errors.push(RowError {
                at: Location::Line(1),
                field: Some(h.to_owned()),
                message: format!("unknown column (known: {})", COLUMNS.join(", ")),
            });
        }
    }
    if !headers.iter().any(|h| h == "terminal_id") {
        errors.push(RowError {
            at: Location::Line(1),
            field: Some("terminal_id".into()),
            message: "missing required column".into(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                errors.push(RowError {
                    at: Location::Line(line),
                    field: None,
                    message: e.to_string(),
                });
                continue;
            }
        };
        let at = Location::Line(record.position().map(|p| p.line()).unwrap_or(0));
        // Build the row by column name: every value is text in CSV, so no type guessing.
        let mut row = RawRow::default();
        for (name, value) in headers.iter().zip(record.iter()) {
            let v = (!value.is_empty()).then(|| value.to_owned());
            match name {
                "terminal_id" => row.terminal_id = v,
                "protocol" => row.protocol = v,
                "role" => row.role = v,
                "sim" => row.sim = v,
                "imei" => row.imei = v,
                "model" => row.model = v,
                "skip_checksum" => row.skip_checksum = v.map(serde_json::Value::String),
                "vehicle_id" => row.vehicle_id = v,
                "plate" => row.plate = v,
                "vin" => row.vin = v,
                "loan_id" => row.loan_id = v,
                "stage" => row.stage = v,
                _ => unreachable!("columns were checked above"),
            }
        }
        rows.push((at, row));
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

fn parse_json(text: &str) -> Result<Vec<(Location, RawRow)>, Vec<RowError>> {
    let whole_file = |message: String| {
        vec![RowError {
            at: Location::Row(0),
            field: None,
            message,
        }]
    };
    let values: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| whole_file(format!("expected a JSON array of device objects: {e}")))?;
    let mut rows = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let at = Location::Row(i + 1);
        // Name unknown keys ourselves so the error carries the field, not just serde's prose.
        if let Some(obj) = value.as_object() {
            let unknown: Vec<_> = obj
                .keys()
                .filter(|k| !COLUMNS.contains(&k.as_str()))
                .collect();
            if !unknown.is_empty() {
                for k in unknown {
                    errors.push(RowError {
                        at,
                        field: Some(k.clone()),
                        message: format!("unknown field (known: {})", COLUMNS.join(", ")),
                    });
                }
                continue;
            }
        }
        match serde_json::from_value::<RawRow>(value) {
            Ok(row) => rows.push((at, row)),
            Err(e) => {
                // serde's message names the offending field ("unknown field `x`", "invalid type
                // ... for field"), so pass it through.
                errors.push(RowError {
                    at,
                    field: None,
                    message: e.to_string(),
                });
            }
        }
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

fn is_terminal_id(s: &str) -> bool {
    // Header phone numbers are BCD: 12 digits (2011/2013) or 20 (2019). Some firmware puts
    // non-BCD nibbles there, which the codec renders as lowercase hex, so accept those too.
    !s.is_empty()
        && s.len() <= 20
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate(rows: Vec<(Location, RawRow)>) -> Result<Registry, Vec<RowError>> {
    let mut errors = Vec::new();
    let mut devices: BTreeMap<String, (Location, Device)> = BTreeMap::new();
    let mut vehicles: BTreeMap<String, (Location, Vehicle)> = BTreeMap::new();
    let mut loans: BTreeMap<String, (Location, Loan)> = BTreeMap::new();

    for (at, row) in rows {
        let mut err = |field: &str, message: String| {
            errors.push(RowError {
                at,
                field: Some(field.to_owned()),
                message,
            })
        };
        let id_ok = |field: &str, v: &str, err: &mut dyn FnMut(&str, String)| {
            if v.len() > MAX_ID_LEN {
                err(field, format!("longer than {MAX_ID_LEN} bytes"));
            }
        };

        let terminal_id = match row.terminal_id.as_deref().map(str::trim) {
            Some(t) if is_terminal_id(t) => t.to_owned(),
            Some(t) => {
                err(
                    "terminal_id",
                    format!("{t:?} is not a terminal id (1-20 digits as in the JT808 header)"),
                );
                continue;
            }
            None => {
                err("terminal_id", "required".into());
                continue;
            }
        };
        let protocol = row
            .protocol
            .unwrap_or_else(|| "jt808".into())
            .to_ascii_lowercase();
        if protocol != "jt808" {
            err(
                "protocol",
                format!("{protocol:?} is not supported (expected jt808)"),
            );
        }
        let role = match row.role.as_deref() {
            Some(r) => r.parse::<DeviceRole>().map_err(|m| err("role", m)).ok(),
            None => {
                err("role", "required (wired or wireless)".into());
                None
            }
        };
        if let Some(imei) = &row.imei {
            if !(14..=16).contains(&imei.len()) || !imei.bytes().all(|b| b.is_ascii_digit()) {
                err("imei", format!("{imei:?} is not an IMEI (14-16 digits)"));
            }
        }
        if let Some(sim) = &row.sim {
            if sim.len() > 32 {
                err("sim", "longer than 32 characters".into());
            }
        }
        let skip_checksum = match &row.skip_checksum {
            None => false,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" | "" => false,
                other => {
                    err("skip_checksum", format!("{other:?} is not true or false"));
                    false
                }
            },
            Some(other) => {
                err("skip_checksum", format!("{other} is not true or false"));
                false
            }
        };
        if let Some(vin) = &row.vin {
            // ISO 3779: 17 characters, letters I, O and Q are not used.
            if vin.len() != 17
                || !vin
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"IOQ".contains(&b)))
            {
                err(
                    "vin",
                    format!("{vin:?} is not a VIN (17 characters, A-Z without I/O/Q, 0-9)"),
                );
            }
        }
        let vehicle_id = row.vehicle_id.clone();
        if let Some(v) = &vehicle_id {
            id_ok("vehicle_id", v, &mut err);
        } else {
            for (field, present) in [
                ("plate", row.plate.is_some()),
                ("vin", row.vin.is_some()),
                ("loan_id", row.loan_id.is_some()),
            ] {
                if present {
                    err(field, "given without vehicle_id".into());
                }
            }
        }
        if row.stage.is_some() && row.loan_id.is_none() {
            err("stage", "given without loan_id".into());
        }
        let stage = match row.stage.as_deref() {
            Some(s) => s
                .parse::<LoanStage>()
                .map_err(|m| err("stage", m))
                .unwrap_or_default(),
            None => LoanStage::Normal,
        };
        if let Some(l) = &row.loan_id {
            id_ok("loan_id", l, &mut err);
        }

        if let Some((first, _)) = devices.get(&terminal_id) {
            err(
                "terminal_id",
                format!("{terminal_id} is listed twice (first at {first})"),
            );
            continue;
        }
        if let Some(vid) = &vehicle_id {
            let vehicle = Vehicle {
                vehicle_id: vid.clone(),
                plate: row.plate.clone(),
                vin: row.vin.clone(),
                loan_id: row.loan_id.clone(),
            };
            match vehicles.get_mut(vid) {
                None => {
                    vehicles.insert(vid.clone(), (at, vehicle));
                }
                Some((first, known)) => {
                    // Rows of the second device of a car may leave the vehicle columns empty;
                    // when both give a value it must be the same one.
                    for (field, mine, theirs) in [
                        ("plate", &vehicle.plate, &mut known.plate),
                        ("vin", &vehicle.vin, &mut known.vin),
                        ("loan_id", &vehicle.loan_id, &mut known.loan_id),
                    ] {
                        match (mine, theirs.as_ref()) {
                            (Some(a), Some(b)) if a != b => err(
                                field,
                                format!("{a:?} conflicts with {b:?} for vehicle {vid} at {first}"),
                            ),
                            (Some(a), None) => *theirs = Some(a.clone()),
                            _ => {}
                        }
                    }
                }
            }
            if let Some(lid) = &row.loan_id {
                let loan = Loan {
                    loan_id: lid.clone(),
                    vehicle_id: vid.clone(),
                    stage,
                };
                match loans.get(lid) {
                    None => {
                        loans.insert(lid.clone(), (at, loan));
                    }
                    Some((first, known)) => {
                        if known.vehicle_id != loan.vehicle_id {
                            err(
                                "loan_id",
                                format!(
                                    "{lid} is on vehicle {} at {first}, here on {vid}",
                                    known.vehicle_id
                                ),
                            );
                        } else if row.stage.is_some() && known.stage != stage {
                            err(
                                "stage",
                                format!("conflicts with the stage given at {first}"),
                            );
                        }
                    }
                }
            }
        }
        if let Some(role) = role {
            devices.insert(
                terminal_id.clone(),
                (
                    at,
                    Device {
                        terminal_id,
                        protocol,
                        role,
                        sim: row.sim,
                        imei: row.imei,
                        vehicle_id,
                        model: row.model,
                        skip_checksum,
                    },
                ),
            );
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Registry {
        devices: devices.into_values().map(|(_, d)| d).collect(),
        vehicles: vehicles.into_values().map(|(_, v)| v).collect(),
        loans: loans.into_values().map(|(_, l)| l).collect(),
    })
}

#[cfg(test)]
mod tests;

//! `liengate registry`: import the device registry file into the store and look at it.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::registry;
use crate::store::{Store, StoreConfig, StoreError};

#[derive(clap::Args, Debug)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(clap::Subcommand, Debug)]
enum RegistryCommand {
    /// Validate a registry file (CSV or JSON, by extension) and store it in one atomic commit.
    /// First brings the last known positions up to date with the track, as a start of the
    /// gateway does (it may have stopped without writing them), using the `[state]` settings of
    /// `--config`: pass the gateway's.
    Import {
        /// The registry file: one row per device (see config/registry.example.csv).
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Validate a registry file without touching the store.
    Check { file: PathBuf },
    /// Print the devices in the store, one JSON object per line, with vehicle and loan.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a vehicle's track history and last known position (after settlement, or when a
    /// borrower's data must go). Registry entries stay. The gateway must be stopped.
    Purge {
        /// The vehicle id whose movement data is deleted.
        vehicle_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Which store to open: the gateway's, found the same way `liengate serve` finds it.
#[derive(clap::Args, Debug)]
struct StoreArgs {
    /// The gateway's TOML configuration; its `store.data_dir` is used unless `--data-dir` is given.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory of the store; overrides store.data_dir (default ./data). The gateway must
    /// not be running on it: the store is opened exclusively.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl StoreArgs {
    /// Opens the store, creating it when `create` (an import into a fresh data dir) and
    /// refusing otherwise, so that a mistyped `--data-dir` is an error, not an empty listing.
    fn open(&self, create: bool) -> anyhow::Result<Store> {
        self.open_with_config(create).map(|(store, _)| store)
    }

    /// [`StoreArgs::open`], also returning the configuration it read.
    fn open_with_config(&self, create: bool) -> anyhow::Result<(Store, Config)> {
        let config = Config::load(self.config.as_deref())?;
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| config.store.data_dir.clone());
        if !create && !data_dir.join("store").is_dir() {
            anyhow::bail!("no store in {} (wrong --data-dir?)", data_dir.display());
        }
        let mut store_cfg = StoreConfig::new(&data_dir);
        store_cfg.durability = config.store.durability;
        store_cfg.retention_days = config.store.retention_days;
        let store = match Store::open(&store_cfg) {
            Ok(store) => store,
            // The usual cause: the gateway runs on this data directory. Say what to do about it.
            Err(e @ StoreError::Locked { .. }) => anyhow::bail!(
                "opening the store in {}: {e}; a running `liengate serve` holds it: stop it \
                 (SIGTERM lets it finish its work) and run this again, or name the file in its \
                 config as [registry] import and restart it",
                data_dir.display()
            ),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("opening the store in {}", data_dir.display()))
            }
        };
        Ok((store, config))
    }
}

pub fn run(args: RegistryArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        RegistryCommand::Import { file, store } => {
            let (store, config) = store.open_with_config(true)?;
            // The records of a gateway that crashed are behind its track until its next start
            // replays the track, device by device under the vehicle each point was stored with:
            // replay it now, before the import can assign a device to another vehicle.
            let recovered = crate::pipeline::recover::recover_last_known(&store, &config.state)
                .context("recovering the last known positions before the import")?;
            if !recovered.writes.is_empty() {
                store
                    .commit_blocking(recovered.writes)
                    .context("storing the recovered last known positions")?;
            }
            let report = registry::import_file(&store, &file)?;
            println!("{report}");
        }
        RegistryCommand::Check { file } => {
            let reg = registry::load_file(&file)?;
            println!(
                "{}: ok, {} devices, {} vehicles, {} loans",
                file.display(),
                reg.devices.len(),
                reg.vehicles.len(),
                reg.loans.len()
            );
        }
        RegistryCommand::Purge { vehicle_id, store } => {
            let store = store.open(false)?;
            if store.vehicle(&vehicle_id)?.is_none() && store.last_known(&vehicle_id)?.is_none() {
                anyhow::bail!("no vehicle {vehicle_id:?} in the store");
            }
            let mut removed = store.purge_vehicle(&vehicle_id)?;
            // Each device also keeps its own last known position (and, before it was assigned,
            // its own track): those are the same car's movements.
            for device in store.devices_of_vehicle(&vehicle_id)? {
                removed +=
                    store.purge_vehicle(&crate::pipeline::device_key(&device.terminal_id))?;
            }
            println!(
                "purged vehicle {vehicle_id}: {removed} track points and the last known positions of the vehicle and its devices"
            );
        }
        RegistryCommand::List { store } => {
            let store = store.open(false)?;
            for device in store.devices()? {
                let vehicle = match &device.vehicle_id {
                    Some(v) => store.vehicle(v)?,
                    None => None,
                };
                let loan = match vehicle.as_ref().and_then(|v| v.loan_id.as_deref()) {
                    Some(l) => store.loan(l)?,
                    None => None,
                };
                let line =
                    serde_json::json!({ "device": device, "vehicle": vehicle, "loan": loan });
                println!("{line}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

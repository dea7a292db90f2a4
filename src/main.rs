//! The `liengate` command: one binary for the gateway, its tools and its simulator.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "liengate",
    version,
    about = "GPS-tracker gateway for car lenders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode tracker frames (hex, file or stdin) and print one JSON object per frame.
    Decode(liengate::cli::decode::DecodeArgs),
    /// Run the gateway: device listeners, shard workers, store and HTTP API.
    Serve(liengate::cli::serve::ServeArgs),
    /// Simulate JT808 terminals against a gateway and report throughput and latency.
    Sim(liengate::cli::sim::SimArgs),
    /// Manage the device / vehicle / loan registry in the store.
    Registry(liengate::cli::registry::RegistryArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Decode(args) => liengate::cli::decode::run(args),
        Command::Serve(args) => liengate::cli::serve::run(args),
        Command::Sim(args) => liengate::cli::sim::run(args),
        Command::Registry(args) => liengate::cli::registry::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("liengate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

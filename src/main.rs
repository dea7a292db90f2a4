//! The `liengate` command: one binary for the gateway, its tools and its simulator.
use std::process::ExitCode;

/// jemalloc instead of glibc's allocator. Batches are built on the shard workers and freed on the
/// store threads; glibc spent a tenth of the gateway's time per position in malloc, free and
/// `malloc_consolidate` (freeing a large batch vector consolidates every fastbin). jemalloc cut
/// the gateway's CPU per acknowledged position by about 10 % in the end-to-end benchmark and kept
/// the memory of idle connections where glibc had it; mimalloc saved as much CPU but held
/// about 1.9 KB more per idle self-registered connection (benches/RESULTS.md, "Allocator").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (read before `main`, hence a symbol). Freed pages go back to the
/// OS after about a second instead of jemalloc's default ten, so that the resident size an
/// operator sees follows what the gateway holds: after a fleet reconnects, the memory of the
/// registration burst no longer lingers as if it belonged to the idle connections.
#[export_name = "_rjem_malloc_conf"]
#[used]
static JEMALLOC_CONF: Option<&u8> = Some(&b"dirty_decay_ms:1000,muzzy_decay_ms:1000\0"[0]);

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

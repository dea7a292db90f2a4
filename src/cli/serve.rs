//! `liengate serve` (placeholder until its owner fills it in).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`liengate serve` is not built yet")
}

//! `liengate sim` (placeholder until its owner fills it in).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct SimArgs {}

pub fn run(_args: SimArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`liengate sim` is not built yet")
}

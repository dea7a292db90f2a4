//! `liengate decode` (placeholder until its owner fills it in).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct DecodeArgs {}

pub fn run(_args: DecodeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`liengate decode` is not built yet")
}

//! `liengate registry` (placeholder until its owner fills it in).
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct RegistryArgs {}

pub fn run(_args: RegistryArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`liengate registry` is not built yet")
}

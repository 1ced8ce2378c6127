//! `spliceway bench` (to be written).

/// Arguments of `spliceway bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench is not written yet")
}

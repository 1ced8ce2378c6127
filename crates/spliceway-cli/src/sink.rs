//! `spliceway sink` (to be written).

/// Arguments of `spliceway sink`.
#[derive(Debug, clap::Args)]
pub struct SinkArgs {}

pub fn run(_args: SinkArgs) -> anyhow::Result<()> {
    anyhow::bail!("sink is not written yet")
}

//! `forecourt bench …`: performance targets live here, not in tests.
//!
//! - `ledger`: transfers per second and latency under N concurrent clients.
//! - `workflows`: workflow state transitions per second and step latency over N workers.

pub mod ledger;
pub mod workflows;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// N concurrent clients post two-leg transfers for a fixed time in three workloads.
    Ledger(ledger::Args),
    /// W canary workflows of K no-op steps over N workers: transitions/s and step latency.
    Workflows(workflows::Args),
}

impl Bench {
    pub async fn run(self, database_url: &str) -> anyhow::Result<()> {
        match self {
            Bench::Ledger(args) => ledger::run(args, database_url).await,
            Bench::Workflows(args) => workflows::run(args, database_url).await,
        }
    }
}

/// The `q`-quantile of sorted samples.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

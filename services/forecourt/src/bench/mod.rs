//! `forecourt bench …`: performance targets live here, not in tests.
//!
//! - `ledger`: transfers per second and latency under N concurrent clients.
//! - `workflows`: workflow state transitions per second and step latency over N workers.
//! - `payments`: till payments through the HTTP API to the channel simulators and the
//!   ledger: latency at a fixed offered load, and payments per second at saturation.

pub mod ledger;
pub mod payments;
pub mod workflows;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Bench {
    /// N concurrent clients post two-leg transfers for a fixed time in three workloads.
    Ledger(ledger::Args),
    /// W canary workflows of K no-op steps over N workers: transitions/s and step latency.
    Workflows(workflows::Args),
    /// N terminals pay through the HTTP API into the ledger: latency at a fixed rate, then
    /// payments/s at saturation; every payment checked against the books and the channels.
    Payments(payments::Args),
}

impl Bench {
    pub async fn run(self, database_url: &str) -> anyhow::Result<()> {
        match self {
            Bench::Ledger(args) => ledger::run(args, database_url).await,
            Bench::Workflows(args) => workflows::run(args, database_url).await,
            Bench::Payments(args) => payments::run(args, database_url).await,
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

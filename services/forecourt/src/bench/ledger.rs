//! `forecourt bench ledger`: N concurrent clients post two-leg transfers for a fixed time.
//!
//! Workloads:
//! - `spread`: random pairs of 50 accounts;
//! - `contended`: random pairs of 10 accounts;
//! - `hot`: every transfer credits the same account (a station's sales receivable) and debits
//!   one of 50.
//!
//! Each client sends one transfer, waits for its receipt, and sends the next, like a POS
//! gateway thread. Every transfer has its own idempotency key and is committed durably before
//! its receipt returns. Accounts are fresh for each run, so runs do not disturb each other.

use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use ledger::{Currency, Ledger, LedgerConfig, NewAccount, NewEntry, Side};
use rand::Rng;
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use entities::db::PoolSettings;

#[derive(Parser)]
pub struct Args {
    /// Concurrent clients.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Seconds each workload runs, after a one-second warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Workloads to run (default: all three).
    #[arg(long, value_enum)]
    workload: Vec<Workload>,
    /// Most entries per group commit.
    #[arg(long, default_value_t = 1_000)]
    max_batch: usize,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    Spread,
    Contended,
    Hot,
}

#[derive(Debug, Serialize)]
struct Report {
    workload: Workload,
    backend: String,
    clients: usize,
    seconds: f64,
    transfers: u64,
    errors: u64,
    transfers_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

pub async fn run(args: Args, database_url: &str) -> anyhow::Result<()> {
    let pool = PoolSettings {
        max_connections: 8,
        ..PoolSettings::default()
    };
    let db = crate::open_migrated(database_url, pool).await?;
    let backend = format!("{:?}", db.get_database_backend()).to_lowercase();
    let ledger = Ledger::start(
        db,
        LedgerConfig {
            max_batch: args.max_batch,
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );
    let workloads = if args.workload.is_empty() {
        vec![Workload::Spread, Workload::Contended, Workload::Hot]
    } else {
        args.workload.clone()
    };
    let mut reports = Vec::new();
    for workload in workloads {
        let report = run_workload(&ledger, workload, &args, &backend).await?;
        if !args.json {
            println!(
                "{:<10} {:>8} clients {:>10.0} transfers/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} transfers, {} errors, {})",
                format!("{:?}", report.workload).to_lowercase(),
                report.clients,
                report.transfers_per_s,
                report.p50_ms,
                report.p99_ms,
                report.max_ms,
                report.transfers,
                report.errors,
                report.backend,
            );
        }
        reports.push(report);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

async fn open_accounts(ledger: &Ledger, n: usize, label: &str) -> anyhow::Result<Vec<Uuid>> {
    let run = Uuid::now_v7();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let account = NewAccount::new(
            format!("bench-{run}"),
            format!("bench.{label}.{i}"),
            format!("{label} {i}"),
            Currency::CNY,
            Side::Debit,
        );
        ids.push(ledger.create_account(account).await?.id);
    }
    Ok(ids)
}

async fn run_workload(
    ledger: &Ledger,
    workload: Workload,
    args: &Args,
    backend: &str,
) -> anyhow::Result<Report> {
    let (accounts, hot) = match workload {
        Workload::Spread => (open_accounts(ledger, 50, "spread").await?, None),
        Workload::Contended => (open_accounts(ledger, 10, "contended").await?, None),
        Workload::Hot => (
            open_accounts(ledger, 50, "payer").await?,
            Some(open_accounts(ledger, 1, "receivable").await?[0]),
        ),
    };
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs(args.seconds);
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + measure;
    let mut tasks = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let ledger = ledger.clone();
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::with_capacity(65_536);
            let mut errors = 0u64;
            loop {
                let (debit, credit) = pick(&accounts, hot);
                let amount = Decimal::new(rand::rng().random_range(1..100_000), 2);
                let entry = NewEntry::transfer(
                    Uuid::now_v7().to_string(),
                    "bench",
                    debit,
                    credit,
                    amount,
                    Currency::CNY,
                );
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let result = ledger.post_entry(entry).await;
                if sent >= measure_from {
                    match result {
                        Ok(_) => latencies_us.push(sent.elapsed().as_micros() as u64),
                        Err(_) => errors += 1,
                    }
                }
            }
            (latencies_us, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, err) = t.await?;
        all.extend(lat);
        errors += err;
    }
    let elapsed = Instant::now()
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    all.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Report {
        workload,
        backend: backend.to_owned(),
        clients: args.clients,
        seconds: elapsed,
        transfers: all.len() as u64,
        errors,
        transfers_per_s: all.len() as f64 / elapsed,
        p50_ms: ms(super::quantile(&all, 0.50)),
        p99_ms: ms(super::quantile(&all, 0.99)),
        max_ms: ms(all.last().copied().unwrap_or(0)),
    })
}

fn pick(accounts: &[Uuid], hot: Option<Uuid>) -> (Uuid, Uuid) {
    let mut rng = rand::rng();
    let a = accounts[rng.random_range(0..accounts.len())];
    match hot {
        Some(hot) => (a, hot),
        None => loop {
            let b = accounts[rng.random_range(0..accounts.len())];
            if b != a {
                break (a, b);
            }
        },
    }
}

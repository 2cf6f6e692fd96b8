//! `forecourt bench workflows`: W canary workflows of K steps with no-op activities, run by
//! N workers; reports state transitions per second and step latency.
//!
//! With `AMQP_URL` set, the bench process runs the relay and N consumers per queue over
//! RabbitMQ (a fresh queue prefix per run, deleted afterwards); without it, N in-process
//! workers per kind. A transition is a committed history row of kind `started` or `event`;
//! step latency is the time between consecutive transitions of one instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use entities::{wf_history, wf_instances};
use futures_util::{StreamExt, TryStreamExt};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;
use workflows::amqp::{self, Broker};
use workflows::canary::{Canary, CanaryInput};
use workflows::{Engine, Status, Workers, Workflow};

use entities::db::PoolSettings;

/// Workflows started concurrently.
const STARTERS: usize = 16;

#[derive(Parser)]
pub struct Args {
    /// Workflows to run.
    #[arg(long, default_value_t = 200)]
    workflows: usize,
    /// Steps (activities) per workflow.
    #[arg(long, default_value_t = 5)]
    steps: u32,
    /// Worker counts to measure, one run each (consumers per queue with RabbitMQ).
    #[arg(long, default_values_t = vec![1, 2, 4])]
    workers: Vec<usize>,
    /// Unacknowledged deliveries per consumer (RabbitMQ); also the most messages one
    /// transaction takes.
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
    /// Outbox relays (RabbitMQ).
    #[arg(long, default_value_t = 2)]
    relays: usize,
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    transport: &'static str,
    workers: usize,
    workflows: usize,
    steps: u32,
    transitions: usize,
    seconds: f64,
    transitions_per_s: f64,
    step_p50_ms: f64,
    step_p99_ms: f64,
}

pub async fn run(args: Args, database_url: &str) -> anyhow::Result<()> {
    let db = crate::open_migrated(
        database_url,
        PoolSettings {
            max_connections: 32,
            ..PoolSettings::default()
        },
    )
    .await?;
    let mut reports = Vec::new();
    for &workers in &args.workers {
        let engine = Engine::new(db.clone(), crate::run::registry(&db));
        let report = measure(&engine, &args, workers).await?;
        if !args.json {
            println!(
                "{:<10} {:>2} workers  {:>8.0} transitions/s  step p50 {:>7.2} ms  p99 {:>7.2} ms  ({} workflows x {} steps, {} transitions in {:.1} s)",
                report.transport,
                report.workers,
                report.transitions_per_s,
                report.step_p50_ms,
                report.step_p99_ms,
                report.workflows,
                report.steps,
                report.transitions,
                report.seconds,
            );
        }
        reports.push(report);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

async fn measure(engine: &Engine, args: &Args, workers: usize) -> anyhow::Result<Report> {
    let run = Uuid::new_v4().simple().to_string();
    let (stop, stopped) = watch::channel(false);
    let mut broker = None;
    let mut tasks = Vec::new();
    let mut in_process = None;
    match &args.amqp_url {
        Some(url) => {
            let b =
                Arc::new(Broker::connect(url, &format!("bench{run}"), "forecourt bench").await?);
            b.declare(&engine.destinations()).await?;
            tasks.push(tokio::spawn(amqp::run_relays(
                engine.clone(),
                b.clone(),
                args.relays,
                stopped.clone(),
            )));
            tasks.push(tokio::spawn(amqp::run_consumers(
                engine.clone(),
                b.clone(),
                workers,
                args.prefetch,
                stopped.clone(),
            )));
            broker = Some(b);
        }
        None => in_process = Some(Workers::spawn(engine, workers, workers)),
    }
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    // Workflows are started the way callers start them: many at once (bounded).
    let ids: Vec<Uuid> = futures_util::stream::iter(0..args.workflows)
        .map(|i| {
            let input = CanaryInput {
                steps: args.steps,
                record_effects: false,
            };
            let key = format!("bench-{run}-{i}");
            async move { engine.start::<Canary>(&key, input).await }
        })
        .buffer_unordered(STARTERS)
        .try_collect()
        .await?;
    let deadline = started + Duration::from_secs(600);
    // Polls for any unfinished workflow of this run (one index probe), not the whole list:
    // the bench should not load the database it measures.
    let unfinished = format!("bench-{run}-%");
    loop {
        let any_running = wf_instances::Entity::find()
            .select_only()
            .column(wf_instances::Column::Id)
            .filter(wf_instances::Column::WorkflowType.eq(Canary::NAME))
            .filter(wf_instances::Column::Status.eq(Status::Running.as_str()))
            .filter(wf_instances::Column::BusinessKey.like(&unfinished))
            .into_tuple::<Uuid>()
            .one(engine.db())
            .await?;
        if any_running.is_none() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "workflows did not finish in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = started.elapsed();
    let _ = stop.send(true);
    for task in tasks {
        task.await??;
    }
    if let Some(workers) = in_process {
        workers.shutdown().await;
    }
    if let Some(b) = broker {
        b.delete(&engine.destinations()).await?;
        b.close().await?;
    }
    let history = wf_history::Entity::find()
        .filter(wf_history::Column::InstanceId.is_in(ids.clone()))
        .filter(wf_history::Column::Kind.is_in(["started", "event"]))
        .order_by_asc(wf_history::Column::InstanceId)
        .order_by_asc(wf_history::Column::Seq)
        .all(engine.db())
        .await?;
    let mut gaps_us: Vec<u64> = history
        .windows(2)
        .filter(|w| w[0].instance_id == w[1].instance_id)
        .map(|w| {
            (w[1].recorded_at - w[0].recorded_at)
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as u64
        })
        .collect();
    gaps_us.sort_unstable();
    // From the first start to the last transition's commit: the poll's granularity does not
    // count.
    let last = history.iter().map(|h| h.recorded_at).max();
    let seconds = match last {
        Some(last) => (last - started_at).num_microseconds().unwrap_or(0) as f64 / 1e6,
        None => waited.as_secs_f64(),
    };
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Report {
        transport: if args.amqp_url.is_some() {
            "rabbitmq"
        } else {
            "in-process"
        },
        workers,
        workflows: args.workflows,
        steps: args.steps,
        transitions: history.len(),
        seconds,
        transitions_per_s: history.len() as f64 / seconds,
        step_p50_ms: ms(super::quantile(&gaps_us, 0.50)),
        step_p99_ms: ms(super::quantile(&gaps_us, 0.99)),
    })
}

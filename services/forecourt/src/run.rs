//! `forecourt worker` and `forecourt scheduler`: the workflow engine's processes.
//!
//! With `AMQP_URL` set (production), `worker` consumes the engine's RabbitMQ queues and
//! `scheduler` runs the outbox relay, which also fires durable timers, and the cron schedules; `worker --scheduler`
//! runs both in one process. Without it (embedded), `worker` runs in-process workers that
//! take messages straight from the outbox, timers included. Both stop cleanly on SIGTERM or
//! Ctrl-C: work in hand finishes, unacknowledged messages go back to the broker, channels
//! close.

use std::sync::Arc;

use clap::Args;
use sea_orm::DatabaseConnection;
use tokio::sync::watch;
use workflows::amqp::{self, Broker};
use workflows::{Engine, Registry, Workers};

#[derive(Args, Clone)]
pub struct Transport {
    /// RabbitMQ; absent: the in-process transport of the embedded mode.
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
    /// Prefix of the exchange and queue names (one per deployment or test).
    #[arg(long, env = "AMQP_QUEUE_PREFIX", default_value = "forecourt")]
    queue_prefix: String,
}

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    transport: Transport,
    #[command(flatten)]
    treasury: crate::custodian::TreasuryArgs,
    #[command(flatten)]
    payments: crate::tills::PaymentsArgs,
    /// Also run the scheduler (relays, timers and cron) in this process.
    #[arg(long)]
    scheduler: bool,
    /// Relays with `--scheduler`.
    #[arg(long, default_value_t = 2)]
    relays: usize,
    /// Consumers per queue (RabbitMQ) or workers per kind (embedded).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Unacknowledged messages a consumer may hold; also the most one transaction takes.
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
}

#[derive(Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    transport: Transport,
    /// The payment channels, whose statements are reconciled every morning.
    #[command(flatten)]
    payments: crate::tills::PaymentsArgs,
    /// Outbox relays, each on its own channel. Any number may run, in this process and in
    /// others: messages of one instance still reach each queue in order.
    #[arg(long, default_value_t = 2)]
    relays: usize,
}

/// The workflows and activities this binary runs. The treasury's activities need the bank
/// and the payments' the channels: they are added where those are configured
/// ([`with_treasury`], [`with_payments`]).
pub fn registry(db: &DatabaseConnection) -> Registry {
    let registry = workflows::canary::register(Registry::default(), db.clone())
        .workflow::<workflows::bank_instruction::BankInstruction>()
        .workflow::<workflows::pos_payment::PosPayment>()
        .workflow::<workflows::refund_approval::RefundApproval>()
        .workflow::<workflows::reconciliation::Reconciliation>();
    // The daily close needs only the database.
    workflows::daily_close::register_daily_close(registry, db.clone())
}

/// Puts the cron schedules of the retail day's end: every station's daily close, and the
/// T+1 reconciliation of every channel given. Putting them again changes nothing.
pub async fn put_retail_schedules(
    engine: &Engine,
    db: &DatabaseConnection,
    channels: &[payments::model::ChannelId],
) -> anyhow::Result<()> {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
    let stations: Vec<uuid::Uuid> = entities::organisations::Entity::find()
        .select_only()
        .column(entities::organisations::Column::Id)
        .filter(entities::organisations::Column::Kind.eq("station"))
        .into_tuple()
        .all(db)
        .await?;
    workflows::daily_close::put_daily_close_schedules(engine, &stations, None).await?;
    workflows::reconciliation::put_reconciliation_schedules(engine, channels, None).await?;
    Ok(())
}

/// The registry with the payments' activities: the channel adapters, the store and the
/// ledger.
pub fn with_payments(
    registry: Registry,
    ledger: ledger::Ledger,
    channels: Arc<workflows::pos_payment::Channels>,
) -> Registry {
    let registry = workflows::pos_payment::register_channel_activities(registry, channels.clone());
    let registry = workflows::pos_payment::register_store_activities(registry, ledger.clone());
    let registry = workflows::reconciliation::register_reconciliation(
        registry,
        ledger.clone(),
        channels.clone(),
    );
    workflows::refund_approval::register_refund_activities(registry, ledger, channels)
}

/// The registry with the treasury's activities over `executor`.
pub fn with_treasury(registry: Registry, executor: Arc<treasury::execution::Executor>) -> Registry {
    workflows::bank_instruction::register_activities(registry, executor)
}

async fn until_stopped(stop: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install the SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("stopping: finishing work in hand");
    let _ = stop.send(true);
}

pub async fn worker(args: WorkerArgs, db: DatabaseConnection) -> anyhow::Result<()> {
    // Holds are swept by the workers' processes.
    let ledger = ledger::Ledger::start(db.clone(), ledger::LedgerConfig::default());
    let registry = match args.treasury.executor(&ledger)? {
        Some((executor, _)) => with_treasury(registry(&db), executor),
        None => registry(&db),
    };
    let registry = match args.payments.configured()? {
        Some(configured) => with_payments(registry, ledger.clone(), configured.channels),
        None => registry,
    };
    let engine = Engine::new(db.clone(), registry);
    let (stop, stopped) = watch::channel(false);
    match &args.transport.amqp_url {
        None => {
            let workers = Workers::spawn(&engine, args.concurrency, args.concurrency);
            eprintln!("worker: embedded mode (no AMQP_URL), in-process transport");
            until_stopped(stop).await;
            workers.shutdown().await;
        }
        Some(url) => {
            let broker = Arc::new(
                Broker::connect(url, &args.transport.queue_prefix, "forecourt worker").await?,
            );
            broker.declare(&engine.destinations()).await?;
            let relay = args.scheduler.then(|| {
                tokio::spawn(amqp::run_relays(
                    engine.clone(),
                    broker.clone(),
                    args.relays,
                    stopped.clone(),
                ))
            });
            let consumers = tokio::spawn(amqp::run_consumers(
                engine.clone(),
                broker.clone(),
                args.concurrency,
                args.prefetch,
                stopped,
            ));
            eprintln!("worker: consuming {} queues", engine.destinations().len());
            tokio::select! {
                _ = until_stopped(stop) => {}
                result = consumers => { result??; anyhow::bail!("the consumers stopped on their own"); }
            }
            if let Some(relay) = relay {
                relay.await??;
            }
            broker.close().await?;
        }
    }
    Ok(())
}

pub async fn scheduler(args: SchedulerArgs, db: DatabaseConnection) -> anyhow::Result<()> {
    let Some(url) = &args.transport.amqp_url else {
        anyhow::bail!(
            "the scheduler relays to RabbitMQ: set AMQP_URL (the embedded worker schedules itself)"
        );
    };
    let engine = Engine::new(db.clone(), registry(&db));
    let channels: Vec<payments::model::ChannelId> = match args.payments.configured()? {
        Some(configured) => configured.channels.keys().cloned().collect(),
        None => Vec::new(),
    };
    put_retail_schedules(&engine, &db, &channels).await?;
    let broker =
        Arc::new(Broker::connect(url, &args.transport.queue_prefix, "forecourt scheduler").await?);
    broker.declare(&engine.destinations()).await?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(workflows::schedule::run_schedules(
        engine.clone(),
        stopped.clone(),
    ));
    let relay = tokio::spawn(amqp::run_relays(
        engine,
        broker.clone(),
        args.relays,
        stopped,
    ));
    eprintln!("scheduler: relaying the outbox");
    tokio::select! {
        _ = until_stopped(stop) => {}
        result = relay => { result??; anyhow::bail!("the relay stopped on its own"); }
    }
    broker.close().await?;
    Ok(())
}

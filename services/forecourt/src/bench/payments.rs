//! `forecourt bench payments`: N terminals pay concurrently through the HTTP API, to the six
//! channel simulators (no added latency), into the ledger.
//!
//! The bench prepares its own world on the database it is given: a platform operator, a
//! brand, one station company with S stations of T terminals each (N = S × T), a cashier per
//! station with a session, every station signed to the six simulated channels on their
//! default terms, and one shift per terminal opened through the API. It then serves the API
//! on a local port in this process, with the workflow workers in process too: in-process
//! workers without `--amqp-url`, RabbitMQ consumers and outbox relays with it (a fresh queue
//! prefix per run, deleted afterwards).
//!
//! Phases (each `--seconds` long):
//! - `fixed`: an offered load of `--rate` payments/s spread round-robin over the terminals,
//!   open loop: each payment is sent at its scheduled time whether or not earlier ones have
//!   answered, and its latency counts from the scheduled time (so queueing in the client
//!   counts against the platform, not for it);
//! - `saturation`: every terminal sends its next payment as soon as the last one answered.
//!
//! A payment counts when the API answered `201` with status `succeeded`; any other answer
//! (another status, `pending` after the API's bounded wait, an HTTP error) is an error.
//!
//! The mix of methods is fixed: 40% WeChat Pay payment code, 30% Alipay payment code, 20%
//! bank card, 10% cash; amounts are 50.00–500.00 CNY, one fuel line each. The simulators
//! send no notifications (payment-code and card charges answer synchronously).
//!
//! After each phase, outside the timed part, the bench waits for every payment to be final
//! and checks the run so far: every succeeded payment has exactly one ledger entry with
//! reference `payment:<no>` and no other payment has one; the ledger's audit finds nothing;
//! and the charges the simulators took are exactly the succeeded channel payments (order
//! number and amount), so nothing was charged twice or charged without being booked.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use api::directory::{self, NewOrganisation, NewUser};
use api::policy::{OrgKind, Role};
use api::routes::payments::PaymentsContext;
use api::{ApiConfig, AppState, KeyEncryption};
use clap::{Parser, ValueEnum};
use entities::db::PoolSettings;
use entities::{ledger_entries, pos_payments};
use ledger::{Ledger, LedgerConfig};
use rand::Rng;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;
use workflows::amqp::{self, Broker};
use workflows::{Engine, Workers};

#[derive(Parser)]
pub struct Args {
    /// Stations of the one station company.
    #[arg(long, default_value_t = 10)]
    stations: usize,
    /// Terminals per station.
    #[arg(long, default_value_t = 10)]
    terminals: usize,
    /// Offered load of the `fixed` phase, payments per second over all terminals.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds each phase runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Phases to run (default: both).
    #[arg(long, value_enum)]
    phase: Vec<Phase>,
    /// Workers per kind (in-process) or consumers per queue (RabbitMQ).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Unacknowledged deliveries per consumer (RabbitMQ).
    #[arg(long, default_value_t = 64)]
    prefetch: u16,
    /// Outbox relays (RabbitMQ).
    #[arg(long, default_value_t = 2)]
    relays: usize,
    /// Database connections of the process (API, ledger and workers share them).
    #[arg(long, default_value_t = 32)]
    pool: u32,
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Fixed,
    Saturation,
}

#[derive(Debug, Serialize)]
struct Report {
    phase: Phase,
    transport: &'static str,
    backend: String,
    terminals: usize,
    /// Offered payments/s (`fixed`); none at saturation.
    offered_per_s: Option<u32>,
    seconds: f64,
    succeeded: u64,
    errors: u64,
    /// Errors by what the API answered (`<http status> <payment status>`).
    error_kinds: BTreeMap<String, u64>,
    payments_per_s: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// By method: succeeded payments.
    by_method: BTreeMap<&'static str, u64>,
    /// The checks after the phase, over every payment of the run so far.
    verified: Verified,
}

#[derive(Debug, Default, Serialize)]
struct Verified {
    payments: usize,
    succeeded: usize,
    ledger_entries: usize,
    channel_charges: usize,
    audit_accounts: usize,
    audit_postings: usize,
}

/// Methods in the mix, with their weights out of 100.
const MIX: &[(&str, u32)] = &[
    ("wechat_pay_code", 40),
    ("alipay_code", 30),
    ("bank_card", 20),
    ("cash", 10),
];

fn pick_method(rng: &mut impl Rng) -> &'static str {
    let mut roll = rng.random_range(0..100);
    for (method, weight) in MIX {
        if roll < *weight {
            return method;
        }
        roll -= weight;
    }
    "cash"
}

fn payment_body(order_no: &str, method: &str, rng: &mut impl Rng) -> Value {
    let fen: i64 = rng.random_range(5_000..=50_000);
    let amount = rust_decimal::Decimal::new(fen, 2).to_string();
    let litres = rust_decimal::Decimal::new(fen * 1000 / 755, 3).to_string();
    let mut body = json!({
        "order_no": order_no,
        "method": method,
        "amount": amount,
        "lines": [{"kind": "fuel", "grade": "92", "litres": litres, "nozzle": 3, "amount": amount}],
    });
    let code = match method {
        "wechat_pay_code" => Some(format!("13{:016}", rng.random_range(0..10_u64.pow(16)))),
        "alipay_code" => Some(format!("28{:016}", rng.random_range(0..10_u64.pow(16)))),
        "bank_card" => Some(format!("6222{:015}", rng.random_range(0..10_u64.pow(15)))),
        _ => None,
    };
    if let Some(code) = code {
        body["payer_code"] = json!(code);
    }
    body
}

/// A till as the bench drives it.
#[derive(Clone)]
struct Till {
    id: Uuid,
    key: String,
    token: String,
}

/// The running platform: API, workers, simulators.
struct Platform {
    base: String,
    client: reqwest::Client,
    state: AppState,
    retail: sim::retail::Retail,
    tills: Vec<Till>,
    stations: Vec<Uuid>,
}

pub async fn run(args: Args, database_url: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.stations > 0 && args.terminals > 0,
        "at least one station with one terminal"
    );
    let db = crate::open_migrated(
        database_url,
        PoolSettings {
            max_connections: args.pool,
            ..PoolSettings::default()
        },
    )
    .await?;
    let backend = format!("{:?}", db.get_database_backend()).to_lowercase();
    let ledger = Ledger::start(
        db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );
    let retail = sim::retail::start(payments::channels::Timeouts {
        connect_ms: 1_000,
        request_ms: 5_000,
    })
    .await
    .context("cannot start the channel simulators")?;
    let channels = Arc::new(retail.adapters());
    let registry = crate::run::registry(&db)
        .workflow::<workflows::pos_payment::PosPayment>()
        .workflow::<workflows::refund_approval::RefundApproval>();
    let registry = workflows::pos_payment::register_channel_activities(registry, channels.clone());
    let registry = workflows::pos_payment::register_store_activities(registry, ledger.clone());
    let registry = workflows::refund_approval::register_refund_activities(
        registry,
        ledger.clone(),
        channels.clone(),
    );
    let engine = Engine::new(db.clone(), registry);
    let context = PaymentsContext {
        engine: engine.clone(),
        channels,
        parties: retail.parties(),
        flow: payments::flow::FlowPolicy {
            first_query_ms: 500,
            max_query_ms: 2_000,
            max_queries: 10,
            max_reversals: 5,
            reversal_retry_ms: 1_000,
            max_attempts: 2,
        },
        wait: Duration::from_secs(10),
        activity_timeout_ms: 5_000,
        approval_deadline: Duration::from_secs(600),
        health: payments::health::HealthBook::new(api::routes::payments::BREAKER).into(),
    };
    let state = AppState::new(
        db.clone(),
        ledger,
        ApiConfig::default(),
        KeyEncryption::generate(),
    )
    .with_payments(context);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let served = state.clone();
    let api_task = tokio::spawn(async move {
        api::serve(listener, served, async move {
            let _ = api_stopped.await;
        })
        .await
    });

    // Workers: in process, or RabbitMQ consumers and relays.
    let run_id = Uuid::new_v4().simple().to_string();
    let (stop, stopped) = watch::channel(false);
    let mut broker = None;
    let mut tasks = Vec::new();
    let mut in_process = None;
    match &args.amqp_url {
        Some(url) => {
            let b = Arc::new(
                Broker::connect(url, &format!("paybench{run_id}"), "forecourt bench").await?,
            );
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
                args.workers,
                args.prefetch,
                stopped.clone(),
            )));
            broker = Some(b);
        }
        None => in_process = Some(Workers::spawn(&engine, args.workers, args.workers)),
    }

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.stations * args.terminals + 16)
        .build()?;
    let (stations, tills) = seed(&state, &retail, &args).await?;
    let platform = Arc::new(Platform {
        base,
        client,
        state,
        retail,
        tills,
        stations,
    });
    open_shifts(&platform).await?;

    let transport = if args.amqp_url.is_some() {
        "rabbitmq"
    } else {
        "in-process"
    };
    let phases = if args.phase.is_empty() {
        vec![Phase::Fixed, Phase::Saturation]
    } else {
        args.phase.clone()
    };
    let mut reports = Vec::new();
    let mut outcome = Ok(());
    for phase in phases {
        let measured = match phase {
            Phase::Fixed => fixed(&platform, &args).await,
            Phase::Saturation => saturation(&platform, &args).await,
        };
        let (latencies, errors, by_method, seconds) = match measured {
            Ok(m) => m,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        let verified = match verify(&platform).await {
            Ok(v) => v,
            Err(e) => {
                outcome = Err(e.context(format!("verification after the {phase:?} phase")));
                break;
            }
        };
        let report = report(
            phase, transport, &backend, &args, latencies, errors, by_method, seconds, verified,
        );
        if !args.json {
            print_row(&report);
        }
        reports.push(report);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }

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
    let _ = stop_api.send(());
    api_task.await??;
    outcome
}

#[allow(clippy::too_many_arguments)]
fn report(
    phase: Phase,
    transport: &'static str,
    backend: &str,
    args: &Args,
    mut latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    by_method: BTreeMap<&'static str, u64>,
    seconds: f64,
    verified: Verified,
) -> Report {
    latencies_us.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    Report {
        phase,
        transport,
        backend: backend.to_owned(),
        terminals: args.stations * args.terminals,
        offered_per_s: (phase == Phase::Fixed).then_some(args.rate),
        seconds,
        succeeded: latencies_us.len() as u64,
        errors: errors.values().sum(),
        error_kinds: errors,
        payments_per_s: latencies_us.len() as f64 / seconds,
        p50_ms: ms(super::quantile(&latencies_us, 0.50)),
        p95_ms: ms(super::quantile(&latencies_us, 0.95)),
        p99_ms: ms(super::quantile(&latencies_us, 0.99)),
        max_ms: ms(latencies_us.last().copied().unwrap_or(0)),
        by_method,
        verified,
    }
}

fn print_row(r: &Report) {
    let offered = match r.offered_per_s {
        Some(rate) => format!("{rate}/s offered"),
        None => "saturation".to_owned(),
    };
    println!(
        "{:<10} {:<10} {:>4} terminals {:>15}  {:>7.0} payments/s  p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  ({} succeeded, {} errors in {:.1} s, {})",
        format!("{:?}", r.phase).to_lowercase(),
        r.transport,
        r.terminals,
        offered,
        r.payments_per_s,
        r.p50_ms,
        r.p95_ms,
        r.p99_ms,
        r.max_ms,
        r.succeeded,
        r.errors,
        r.seconds,
        r.backend,
    );
    if !r.error_kinds.is_empty() {
        println!("           errors: {:?}", r.error_kinds);
    }
    let v = &r.verified;
    println!(
        "           verified: {} payments, {} succeeded, each with one ledger entry ({} entries); {} channel charges = succeeded channel payments; audit clean ({} accounts, {} postings)",
        v.payments,
        v.succeeded,
        v.ledger_entries,
        v.channel_charges,
        v.audit_accounts,
        v.audit_postings,
    );
}

/// The world of the run: one company, its stations, a cashier per station, the terminals.
async fn seed(
    state: &AppState,
    retail: &sim::retail::Retail,
    args: &Args,
) -> anyhow::Result<(Vec<Uuid>, Vec<Till>)> {
    let db = &state.db;
    let run = Uuid::now_v7().simple().to_string();
    let org = |parent: Option<Uuid>, kind: OrgKind, name: String| NewOrganisation {
        id: Uuid::now_v7(),
        parent_id: parent,
        kind,
        name,
        ledger_owner: None,
    };
    // There is one platform operator: an earlier run's, or this run's.
    let existing = entities::organisations::Entity::find()
        .filter(entities::organisations::Column::ParentId.is_null())
        .one(db)
        .await?;
    let root = match existing {
        Some(root) => root,
        None => directory::create_organisation(
            db,
            org(None, OrgKind::PlatformOperator, "Bench platform".into()),
        )
        .await
        .map_err(api_err)?,
    };
    let brand = directory::create_organisation(
        db,
        org(Some(root.id), OrgKind::Brand, format!("Bench brand {run}")),
    )
    .await
    .map_err(api_err)?;
    let company = directory::create_organisation(
        db,
        org(
            Some(brand.id),
            OrgKind::StationCompany,
            "Bench stations".into(),
        ),
    )
    .await
    .map_err(api_err)?;
    let hash = api::crypto::hash_password(&Uuid::new_v4().to_string())?;
    let mut stations = Vec::new();
    let mut tills = Vec::new();
    for s in 0..args.stations {
        let station = directory::create_organisation(
            db,
            org(
                Some(company.id),
                OrgKind::Station,
                format!("Bench station {s}"),
            ),
        )
        .await
        .map_err(api_err)?;
        for channel in &retail.channels {
            payments::stations::set_channel(
                &state.ledger,
                station.id,
                &station.ledger_owner,
                sim::retail::default_terms(channel),
                chrono::Utc::now(),
            )
            .await?;
        }
        let cashier = directory::create_user(
            db,
            NewUser {
                id: Uuid::now_v7(),
                organisation_id: station.id,
                username: format!("bench-{run}-cashier-{s}"),
                display_name: format!("Cashier {s}"),
                role: Role::Cashier,
            },
            hash.clone(),
        )
        .await
        .map_err(api_err)?;
        let session = api::auth::open_session(db, cashier.id, Duration::from_secs(24 * 3600))
            .await
            .map_err(api_err)?;
        for t in 0..args.terminals {
            let registered = payments::stations::register_terminal(
                db,
                station.id,
                &format!("till-{t}"),
                &format!("Till {t}"),
                chrono::Utc::now(),
            )
            .await?;
            tills.push(Till {
                id: registered.terminal.id,
                key: registered.key,
                token: session.token.clone(),
            });
        }
        stations.push(station.id);
    }
    Ok((stations, tills))
}

fn api_err(err: api::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

impl Platform {
    fn post(&self, till: &Till, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&till.token)
            .header(api::routes::payments::TERMINAL_KEY, &till.key)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(body)
    }
}

async fn open_shifts(platform: &Platform) -> anyhow::Result<()> {
    for till in &platform.tills {
        let response = platform
            .post(
                till,
                &format!("/v1/terminals/{}/shifts", till.id),
                &json!({ "opening_float": "500.00" }),
            )
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(
            status.as_u16() == 201,
            "opening a shift: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// What one payment came to: its method and latency when it succeeded, else the error.
type Sent = (&'static str, Result<u64, String>);

/// Sends one payment; the latency counts from `from`.
async fn pay(platform: &Platform, till: &Till, order_no: String, from: Instant) -> Sent {
    let (method, body) = {
        let mut rng = rand::rng();
        let method = pick_method(&mut rng);
        (method, payment_body(&order_no, method, &mut rng))
    };
    let sent = platform
        .post(till, &format!("/v1/terminals/{}/payments", till.id), &body)
        .send()
        .await;
    let result = match sent {
        Err(e) => Err(format!(
            "transport {}",
            if e.is_timeout() { "timeout" } else { "error" }
        )),
        Ok(response) => {
            let status = response.status().as_u16();
            let payment: Value = response.json().await.unwrap_or(Value::Null);
            let outcome = payment["status"].as_str().unwrap_or("-");
            if status == 201 && outcome == "succeeded" {
                Ok(from.elapsed().as_micros() as u64)
            } else {
                Err(format!("{status} {outcome}"))
            }
        }
    };
    (method, result)
}

type Measured = (
    Vec<u64>,
    BTreeMap<String, u64>,
    BTreeMap<&'static str, u64>,
    f64,
);

fn tally(results: impl IntoIterator<Item = Sent>, seconds: f64) -> Measured {
    let mut latencies = Vec::new();
    let mut errors = BTreeMap::new();
    let mut by_method = BTreeMap::new();
    for (method, result) in results {
        match result {
            Ok(us) => {
                latencies.push(us);
                *by_method.entry(method).or_insert(0) += 1;
            }
            Err(kind) => *errors.entry(kind).or_insert(0) += 1,
        }
    }
    (latencies, errors, by_method, seconds)
}

/// Open loop: payment `i` is due at `start + i / rate` on terminal `i mod N`.
async fn fixed(platform: &Arc<Platform>, args: &Args) -> anyhow::Result<Measured> {
    anyhow::ensure!(args.rate > 0, "--rate must be positive");
    let total = args.rate as u64 * args.seconds;
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let prefix = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let platform = platform.clone();
        let till = (i % platform.tills.len() as u64) as usize;
        let order_no = format!("F{prefix}-{i}");
        tasks.spawn(async move { pay(&platform, &platform.tills[till], order_no, due).await });
    }
    let mut results = Vec::with_capacity(total as usize);
    while let Some(r) = tasks.join_next().await {
        results.push(r?);
    }
    let seconds = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64();
    Ok(tally(results, seconds))
}

/// Closed loop: every terminal sends its next payment as soon as the last one answered.
async fn saturation(platform: &Arc<Platform>, args: &Args) -> anyhow::Result<Measured> {
    let prefix = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..platform.tills.len() {
        let platform = platform.clone();
        let prefix = prefix.clone();
        tasks.spawn(async move {
            let p = &platform;
            let mut results = Vec::new();
            let mut n = 0u64;
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                n += 1;
                results.push(pay(p, &p.tills[t], format!("S{prefix}-{t}-{n}"), sent).await);
            }
            results
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.extend(r?);
    }
    let seconds = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64();
    Ok(tally(results, seconds))
}

/// Waits until no payment of the run is pending, then checks books and channels.
async fn verify(platform: &Platform) -> anyhow::Result<Verified> {
    let db: &DatabaseConnection = &platform.state.db;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = pos_payments::Entity::find()
            .select_only()
            .column(pos_payments::Column::Id)
            .filter(pos_payments::Column::StationId.is_in(platform.stations.clone()))
            .filter(pos_payments::Column::Status.eq("pending"))
            .into_tuple::<Uuid>()
            .one(db)
            .await?;
        if pending.is_none() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "payments still pending two minutes after the phase"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let payments = pos_payments::Entity::find()
        .filter(pos_payments::Column::StationId.is_in(platform.stations.clone()))
        .all(db)
        .await?;
    let references: Vec<String> = ledger_entries::Entity::find()
        .select_only()
        .column(ledger_entries::Column::Reference)
        .filter(ledger_entries::Column::Reference.like("payment:%"))
        .into_tuple::<String>()
        .all(db)
        .await?;
    let mut entries: HashMap<&str, usize> = HashMap::new();
    for reference in &references {
        *entries.entry(reference.as_str()).or_insert(0) += 1;
    }
    let mut verified = Verified {
        payments: payments.len(),
        ..Verified::default()
    };
    let mut problems = Vec::new();
    // Charges the simulators took, by order number: amount.
    let mut taken: HashMap<String, i64> = HashMap::new();
    for channel in &platform.retail.channels {
        for record in channel.sim.taken() {
            if taken
                .insert(record.out_trade_no.clone(), record.amount_fen)
                .is_some()
            {
                problems.push(format!("order {} charged twice", record.out_trade_no));
            }
        }
    }
    let mut channel_payments = 0;
    for p in &payments {
        let reference = format!("payment:{}", p.payment_no);
        let booked = entries.get(reference.as_str()).copied().unwrap_or(0);
        let succeeded = p.status == "succeeded";
        if succeeded {
            verified.succeeded += 1;
        }
        match (succeeded, booked) {
            (true, 1) => verified.ledger_entries += 1,
            (false, 0) => {}
            _ => problems.push(format!(
                "payment {} is {} with {booked} ledger entries",
                p.payment_no, p.status
            )),
        }
        if succeeded && p.method != "cash" {
            channel_payments += 1;
            match p.out_trade_no.as_deref().map(|no| taken.get(no)) {
                Some(Some(&fen)) if fen == p.amount_minor => {}
                other => problems.push(format!(
                    "payment {} succeeded but the channel holds {other:?}",
                    p.payment_no
                )),
            }
        }
    }
    if taken.len() != channel_payments {
        problems.push(format!(
            "the channels took {} charges for {channel_payments} succeeded channel payments",
            taken.len()
        ));
    }
    verified.channel_charges = taken.len();
    let audit = platform.state.ledger.audit().await?;
    verified.audit_accounts = audit.accounts;
    verified.audit_postings = audit.postings;
    problems.extend(audit.problems.into_iter().map(|p| format!("audit: {p}")));
    if !problems.is_empty() {
        let shown = problems.len().min(20);
        anyhow::bail!(
            "{} problems, the first {shown}:\n{}",
            problems.len(),
            problems[..shown].join("\n")
        );
    }
    Ok(verified)
}

//! `forecourt serve`: the HTTP API.
//!
//! Without `DATABASE_URL` it is the embedded default: everything in one process on a SQLite
//! file under `./data` (created and migrated), with the in-process workflow workers and
//! scheduler, and a demo world seeded once ([`crate::seed`]) whose credentials are printed at
//! every start. With `DATABASE_URL` (and `AMQP_URL`) it is the production API process only:
//! workers and the scheduler run as their own commands, `/readyz` checks the database and
//! RabbitMQ. Either way it stops cleanly on SIGTERM or Ctrl-C: requests in flight finish,
//! then workers finish what they hold.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use api::{ApiConfig, AppState, KeyEncryption};
use clap::Args;
use entities::db::PoolSettings;
use ledger::{Ledger, LedgerConfig};
use workflows::{Engine, Workers};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where the embedded mode keeps its database, key and demo credentials.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// RabbitMQ, for `/readyz` (production mode).
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
    /// Key that encrypts partner API key secrets at rest: 32 bytes, base64
    /// (`openssl rand -base64 32`). Required with DATABASE_URL; the embedded mode keeps one
    /// in the data directory.
    #[arg(long, env = "API_KEY_ENCRYPTION_KEY", hide_env_values = true)]
    api_key_encryption_key: Option<String>,
    /// Origins allowed to call the API from a browser, comma-separated; none by default.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
    /// Lifetime of a bearer token from login.
    #[arg(long, env = "SESSION_TTL_SECONDS", default_value_t = 30 * 60)]
    session_ttl_seconds: u64,
    /// How long an Idempotency-Key and its response are kept.
    #[arg(long, env = "IDEMPOTENCY_TTL_SECONDS", default_value_t = 24 * 60 * 60)]
    idempotency_ttl_seconds: u64,
    /// Longest time a request may take.
    #[arg(long, env = "REQUEST_TIMEOUT_SECONDS", default_value_t = 30)]
    request_timeout_seconds: u64,
    /// Largest request body.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    max_body_bytes: usize,
    /// The custodial bank (production mode; the embedded mode runs a simulator).
    #[command(flatten)]
    treasury: crate::custodian::TreasuryArgs,
    /// The payment channels (production mode; the embedded mode runs simulators).
    #[command(flatten)]
    payments: crate::tills::PaymentsArgs,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<ApiConfig> {
        let cors_origins = self
            .cors_origins
            .iter()
            .filter(|o| !o.trim().is_empty())
            .map(|o| {
                o.trim()
                    .parse()
                    .with_context(|| format!("CORS origin {o:?} is not a header value"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(ApiConfig {
            session_ttl: Duration::from_secs(self.session_ttl_seconds),
            idempotency_ttl: Duration::from_secs(self.idempotency_ttl_seconds),
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            max_body_bytes: self.max_body_bytes,
            cors_origins,
            ..ApiConfig::default()
        })
    }
}

/// Resolves when SIGTERM or Ctrl-C arrives. The handlers are installed when this is called,
/// not when the future is first polled, so a signal that comes right after the server
/// announced itself is not lost to the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("install the SIGTERM handler");
        let mut interrupt = signal(SignalKind::interrupt()).expect("install the SIGINT handler");
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
            eprintln!("serve: stopping; letting requests in flight finish");
        }
    }
    #[cfg(not(unix))]
    async move {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("serve: stopping; letting requests in flight finish");
    }
}

/// Reads the embedded mode's key-encryption key, or creates it (readable by the owner only).
fn embedded_key(dir: &Path) -> anyhow::Result<KeyEncryption> {
    let path = dir.join("api-key-encryption.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        return KeyEncryption::from_base64(&text);
    }
    let key = KeyEncryption::generate();
    crate::seed::write_private(&path, &format!("{}\n", key.to_base64()))?;
    Ok(key)
}

pub async fn run(args: ServeArgs, database_url: Option<String>) -> anyhow::Result<()> {
    let config = args.config()?;
    match database_url {
        None => embedded(args, config).await,
        Some(url) => production(args, config, &url).await,
    }
}

async fn embedded(args: ServeArgs, config: ApiConfig) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        args.data_dir.join("forecourt.db").display()
    );
    let db = crate::open_migrated(&url, PoolSettings::default()).await?;
    let keys = embedded_key(&args.data_dir)?;
    let ledger = Ledger::start(db.clone(), LedgerConfig::default());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let custodian = crate::custodian::embedded(
        &db,
        &ledger,
        &args.data_dir,
        &format!("http://{addr}"),
        &args.treasury,
    )
    .await?;
    // The payment channels' simulators, in process; their notifications come to this API.
    let retail = sim::retail::start(payments::channels::Timeouts {
        connect_ms: 1_000,
        request_ms: 5_000,
    })
    .await
    .context("cannot start the payment channel simulators")?;
    retail.notify_to(&format!("http://{addr}/v1/payments/notifications"));
    // The demo's customers scan a till's dynamic code two seconds after it is shown.
    retail.customers_scan_after(Some(2_000));
    let channels = std::sync::Arc::new(retail.adapters());
    let registry = crate::run::with_treasury(crate::run::registry(&db), custodian.executor.clone());
    let registry = crate::run::with_payments(registry, ledger.clone(), channels.clone());
    let engine = Engine::new(db.clone(), registry);
    let credentials = crate::seed::seed(&db, &ledger, &engine, &args.data_dir).await?;
    let till = crate::seed::seed_retail(&ledger, &retail, &args.data_dir).await?;
    let channel_ids: Vec<_> = retail.channels.iter().map(|c| c.id.clone()).collect();
    crate::run::put_retail_schedules(&engine, &db, &channel_ids).await?;
    let workers = Workers::spawn(&engine, 2, 2);
    let state = AppState::new(db, ledger, config, keys)
        .with_treasury(api::routes::treasury::TreasuryContext {
            executor: custodian.executor.clone(),
            engine: engine.clone(),
            bank: custodian.bank_key.clone(),
            timing: workflows::bank_instruction::Timing {
                // A demo: a checker's decision and the bank's answer show within seconds.
                approval_poll_ms: 5_000,
                status_poll_ms: 1_000,
                status_poll_max_ms: 30_000,
                ..Default::default()
            },
        })
        .with_payments(api::routes::payments::PaymentsContext {
            engine: engine.clone(),
            channels,
            parties: retail.parties(),
            flow: payments::flow::FlowPolicy {
                first_query_ms: 1_000,
                max_query_ms: 10_000,
                max_queries: 30,
                max_reversals: 10,
                reversal_retry_ms: 2_000,
                max_attempts: 3,
            },
            wait: Duration::from_secs(10),
            activity_timeout_ms: 10_000,
            approval_deadline: Duration::from_secs(24 * 60 * 60),
            health: payments::health::HealthBook::new(api::routes::payments::BREAKER).into(),
        });
    let shutdown = shutdown_signal();
    println!("Forecourt (embedded: SQLite at {url}, in-process workflow workers and scheduler)");
    println!();
    println!("{credentials}");
    println!("{till}");
    println!("Payment channel simulators (two per method):");
    for channel in &retail.channels {
        println!("- {:<22} {}", channel.id.as_str(), channel.sim.base_url());
    }
    println!();
    println!(
        "Custodial bank simulator: {} (treasury keys in {})",
        custodian.bank.base_url(),
        args.data_dir.join("treasury-keys").display()
    );
    println!("API docs:   http://{addr}/docs");
    println!("OpenAPI:    http://{addr}/openapi.json");
    println!(
        "Log in:     curl -s -X POST http://{addr}/v1/auth/login -H 'Content-Type: application/json' -d '{{\"username\": \"station-owner\", \"password\": \"<password above>\"}}'"
    );
    println!();
    println!("Ctrl-C stops the server.");
    let served = api::serve(listener, state, shutdown).await;
    workers.shutdown().await;
    drop(custodian);
    drop(retail);
    served.context("the HTTP server failed")
}

async fn production(args: ServeArgs, config: ApiConfig, url: &str) -> anyhow::Result<()> {
    let Some(key) = &args.api_key_encryption_key else {
        anyhow::bail!(
            "set API_KEY_ENCRYPTION_KEY (32 bytes, base64, e.g. `openssl rand -base64 32`): it encrypts partner API key secrets at rest"
        );
    };
    let keys = KeyEncryption::from_base64(key)?;
    let db = crate::open_migrated(url, PoolSettings::default()).await?;
    // Holds are swept by the workers' processes; the API process only reads the ledger.
    let ledger = Ledger::start(
        db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );
    let treasury = args.treasury.executor(&ledger)?;
    let channels = args.payments.configured()?;
    let engine = Engine::new(db.clone(), crate::run::registry(&db));
    let mut state = AppState::new(db, ledger, config, keys);
    if let Some(channels) = &channels {
        state = state.with_payments(args.payments.context(engine.clone(), channels));
    } else {
        eprintln!("serve: no PAYMENTS_CHANNELS: the payments routes answer 503");
    }
    if let Some((executor, bank)) = treasury {
        state = state.with_treasury(api::routes::treasury::TreasuryContext {
            executor,
            engine,
            bank,
            timing: workflows::bank_instruction::Timing {
                activity_timeout_ms: args.treasury.activity_timeout_ms,
                ..Default::default()
            },
        });
    } else {
        eprintln!("serve: no TREASURY_BANK_URL: the treasury routes answer 503");
    }
    if let Some(amqp) = &args.amqp_url {
        state = state.with_broker(amqp);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = shutdown_signal();
    eprintln!(
        "serve: API on http://{addr} (docs at /docs) for {}",
        crate::redact(url)
    );
    api::serve(listener, state, shutdown)
        .await
        .context("the HTTP server failed")
}

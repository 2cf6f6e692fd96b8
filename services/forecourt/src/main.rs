//! `forecourt`: the platform's one binary.
//!
//! # Layout
//! - `serve` ([`serve`]): the HTTP API; without `DATABASE_URL`, the whole platform in one
//!   process on SQLite under `./data`, with demo data ([`seed`]).
//! - `openapi`: writes the API's OpenAPI document (`openapi/openapi.json` is checked in).
//! - `migrate`: brings the schema of `DATABASE_URL` up to date.
//! - `demo` ([`demo`]): a day of a fleet, two stations and a depot on the ledger, printed.
//! - `worker`, `scheduler` ([`run`]): the workflow engine's processes.
//! - `bench ledger` ([`bench::ledger`]): ledger throughput and latency under concurrent clients.
//! - `bench payments` ([`bench::payments`]): till payments through the API, channels and ledger.
//! - `sim payments`, `sim bank` ([`simulate`]): the payment parties' simulators (WeChat Pay,
//!   Alipay, an acquirer) and the custodial bank's.
//!
//! `DATABASE_URL` chooses the storage (`postgres://…` or `sqlite://…`); without it the binary
//! runs embedded on a SQLite file (`./data/forecourt.db` for `serve`, `./forecourt.db` for
//! the others) and migrates it itself.

// The request path allocates many small, short-lived values (JSON, SQL, HTTP headers):
// under load glibc's malloc and free took about a sixth of the process's own CPU, and
// mimalloc's thread-local free lists take much less (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod custodian;
mod demo;
mod run;
mod seed;
mod serve;
mod simulate;
mod tills;

use clap::{Parser, Subcommand};
use entities::db::{EMBEDDED_URL, PoolSettings};
use sea_orm::DatabaseConnection;

#[derive(Parser)]
#[command(
    name = "forecourt",
    version,
    about = "Money movements of the fuel business on one double-entry ledger"
)]
struct Cli {
    /// Where the data lives: postgres://… or sqlite://…; the embedded SQLite file when absent.
    #[arg(long, env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (embedded: with workers, scheduler and demo data, on ./data).
    Serve(serve::ServeArgs),
    /// Write the OpenAPI document of the API.
    Openapi {
        /// Where to write it; `-` for standard output.
        #[arg(long, default_value = "openapi/openapi.json")]
        out: String,
    },
    /// Bring the database schema up to date.
    Migrate,
    /// Post a day of sample flows for a fleet, two stations and a depot; print balances and
    /// statements. Running it again on the same day replays the same entries.
    Demo,
    /// Run workflow workers (and, with --scheduler, the relay and timers).
    Worker(run::WorkerArgs),
    /// Run the outbox relay and durable timers (RabbitMQ mode).
    Scheduler(run::SchedulerArgs),
    /// Measure throughput and latency.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Run the outside parties' simulators: `payments` (WeChat Pay v3, Alipay, a card
    /// acquirer) or `bank` (the custodial bank).
    #[command(subcommand)]
    Sim(simulate::Sim),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let database_url = cli
        .database_url
        .clone()
        .unwrap_or_else(|| EMBEDDED_URL.to_owned());
    match cli.command {
        Command::Serve(args) => serve::run(args, cli.database_url).await?,
        Command::Openapi { out } => {
            let json = api::openapi_json();
            if out == "-" {
                print!("{json}");
            } else {
                if let Some(dir) = std::path::Path::new(&out).parent()
                    && !dir.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(&out, json)?;
                eprintln!("wrote {out}");
            }
        }
        Command::Migrate => {
            let db = open(&database_url, PoolSettings::default()).await?;
            migration::migrate(&db).await?;
            println!("schema of {} is up to date", redact(&database_url));
        }
        Command::Demo => {
            let db = open_migrated(&database_url, PoolSettings::default()).await?;
            demo::run(db).await?;
        }
        Command::Worker(args) => {
            let db = open_migrated(&database_url, PoolSettings::default()).await?;
            run::worker(args, db).await?;
        }
        Command::Scheduler(args) => {
            let db = open_migrated(&database_url, PoolSettings::default()).await?;
            run::scheduler(args, db).await?;
        }
        Command::Bench(bench) => bench.run(&database_url).await?,
        Command::Sim(sim) => sim.run().await?,
    }
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn open(url: &str, pool: PoolSettings) -> anyhow::Result<DatabaseConnection> {
    entities::db::connect(url, pool)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", redact(url)))
}

/// Opens the database and migrates it. The embedded mode needs no separate `migrate` step,
/// and migrating an up-to-date schema changes nothing.
async fn open_migrated(url: &str, pool: PoolSettings) -> anyhow::Result<DatabaseConnection> {
    let db = open(url, pool).await?;
    migration::migrate(&db).await?;
    Ok(db)
}

/// Hides a password in a URL before it is printed.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn every_subcommand_has_well_formed_arguments() {
        // clap checks names, ids and defaults only when a subcommand is parsed: check all.
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn passwords_never_reach_the_terminal() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(redact("sqlite://forecourt.db"), "sqlite://forecourt.db");
    }
}

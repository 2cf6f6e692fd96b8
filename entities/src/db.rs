//! Connections, with every pool and storage setting stated instead of left to defaults.
//!
//! `DATABASE_URL` chooses the backend: `postgres://…` or `sqlite://…`. A PostgreSQL URL may
//! carry a schema as `?options=-csearch_path%3Dname`; tests use that to give each test its own
//! schema.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbErr};

/// Where the embedded mode keeps its data when `DATABASE_URL` is not set.
pub const EMBEDDED_URL: &str = "sqlite://forecourt.db?mode=rwc";

/// Pool settings.
#[derive(Clone, Copy, Debug)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub min_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// Opens a pool on `url` with explicit settings.
///
/// SQLite: WAL (readers do not block the writer), `synchronous = FULL` (a committed entry
/// survives a power cut, not only a process crash), a 10 s busy timeout (writers from other
/// processes wait for the lock instead of failing), foreign keys on.
pub async fn connect(url: &str, pool: PoolSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(pool.max_connections)
        .min_connections(pool.min_connections)
        .acquire_timeout(pool.acquire_timeout)
        .connect_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    if url.starts_with("sqlite:") {
        options.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                .create_if_missing(true)
        });
    }
    Database::connect(options).await
}

//! The test harness: a fresh database per test, on PostgreSQL or SQLite.
//!
//! # Layout
//! - [`TestDb::fresh`]: a new PostgreSQL schema (in the `forecourt_test` database) or a new
//!   SQLite file, migrated, with the `DATABASE_URL` that reaches it, so that a test can hand
//!   the URL to a child process.
//! - [`scenarios!`]: runs one async scenario function on both backends, as two tests.
//! - `scenarios/`: end-to-end scenarios that cross crates (the CLI, the demo).
//!
//! PostgreSQL is found at `TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/forecourt_test`); the database is created on first use.

use std::path::PathBuf;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use uuid::Uuid;

pub use entities::db::PoolSettings;

/// Which storage a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A database of a test's own.
pub struct TestDb {
    pub backend: Backend,
    /// The `DATABASE_URL` of this database.
    pub url: String,
    pub db: DatabaseConnection,
    file: Option<PathBuf>,
}

fn postgres_base() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/forecourt_test".to_owned())
}

async fn ensure_postgres_database(base: &str) -> Result<(), DbErr> {
    let (server, name) = base
        .rsplit_once('/')
        .ok_or_else(|| DbErr::Custom(format!("no database name in {base}")))?;
    let admin = sea_orm::Database::connect(format!("{server}/postgres")).await?;
    let exists = admin
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        ))
        .await?
        .is_some();
    if !exists {
        // Several test processes may race to create it; the losers see "already exists".
        if let Err(err) = admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            && !err.to_string().contains("already exists")
            && !err.to_string().contains("duplicate key")
        {
            return Err(err);
        }
    }
    admin.close().await
}

impl TestDb {
    /// A new, migrated database for one test.
    pub async fn fresh(backend: Backend) -> TestDb {
        Self::fresh_with(backend, PoolSettings::default()).await
    }

    pub async fn fresh_with(backend: Backend, pool: PoolSettings) -> TestDb {
        let tag = Uuid::new_v4().simple().to_string();
        let (url, file) = match backend {
            Backend::Postgres => {
                let base = postgres_base();
                ensure_postgres_database(&base)
                    .await
                    .expect("PostgreSQL must be reachable for the test suite (see README)");
                let schema = format!("t_{tag}");
                let admin = sea_orm::Database::connect(base.clone())
                    .await
                    .expect("connect");
                admin
                    .execute_unprepared(&format!("CREATE SCHEMA {schema}"))
                    .await
                    .expect("create schema");
                admin.close().await.expect("close");
                (format!("{base}?options=-csearch_path%3D{schema}"), None)
            }
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join("forecourt-tests");
                std::fs::create_dir_all(&dir).expect("temp dir");
                let file = dir.join(format!("{tag}.db"));
                (format!("sqlite://{}?mode=rwc", file.display()), Some(file))
            }
        };
        let db = entities::db::connect(&url, pool).await.expect("connect");
        migration::migrate(&db).await.expect("migrate");
        TestDb {
            backend,
            url,
            db,
            file,
        }
    }

    /// Another pool on the same database, as a second process would open.
    pub async fn connect_again(&self) -> DatabaseConnection {
        entities::db::connect(&self.url, PoolSettings::default())
            .await
            .expect("connect")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
    }
}

/// Runs each named async scenario `fn(Backend)` as two tests, `on_postgres` and `on_sqlite`.
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn on_postgres() {
                    super::$name($crate::Backend::Postgres).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn on_sqlite() {
                    super::$name($crate::Backend::Sqlite).await
                }
            }
        )*
    };
}

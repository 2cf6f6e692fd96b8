//! Connections, with every pool and storage setting stated instead of left to defaults.
//!
//! `DATABASE_URL` chooses the backend: `postgres://…` or `sqlite://…`. A PostgreSQL URL may
//! carry a schema as `?options=-csearch_path%3Dname`; tests use that to give each test its own
//! schema.

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

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
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        options.map_sqlx_postgres_pool_opts(|pool| {
            pool.after_connect(|_conn, _meta| {
                Box::pin(async {
                    tcp_nodelay_on_every_socket();
                    Ok(())
                })
            })
        });
    }
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

/// Turns Nagle's algorithm off on every TCP socket of the process.
///
/// sqlx 0.9 leaves `TCP_NODELAY` unset on its PostgreSQL connections. A request written in
/// more than one segment then waits for the server's delayed acknowledgement: 40 ms stalls
/// that cut the ledger's group commit to a few hundred batches per second. sqlx offers no
/// handle on its socket, so each new connection sets the option on the process's TCP
/// sockets by descriptor. Setting it on a socket that already has it, or that is not TCP
/// (the call then fails and is ignored), changes nothing.
#[cfg(target_os = "linux")]
fn tcp_nodelay_on_every_socket() {
    use std::mem::ManuallyDrop;
    use std::os::fd::FromRawFd;

    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for fd in fds.flatten() {
        let is_socket = std::fs::read_link(fd.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Ok(number) = fd.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if is_socket {
            // SAFETY: the descriptor is borrowed for one setsockopt call and never closed:
            // ManuallyDrop keeps the TcpStream from closing what it does not own.
            let stream = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(number) });
            let _ = stream.set_nodelay(true);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn tcp_nodelay_on_every_socket() {}

/// Opens a transaction that is going to write. On SQLite it is `IMMEDIATE`: the database's
/// write lock is taken before the first read, which is what makes read-check-write race-free
/// there (SQLite has no row locks; `FOR UPDATE` is dropped).
///
/// Every transaction of the platform begins here, and this is safe to abandon: a caller
/// dropped while it waits (a client that went away, a timed-out request, a stopped worker)
/// leaves no transaction open on the pooled connection. On PostgreSQL that takes a task of
/// its own: sqlx 0.9.0 counts a transaction only once the server has answered its `BEGIN`,
/// so a caller dropped in between left the connection inside a transaction that nothing
/// rolled back, and the next borrower's writes never committed (sqlx issue 4393). On its own
/// task the `BEGIN` finishes whatever the caller does; a transaction nobody waits for any
/// more is dropped there and rolled back as usual.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            db.begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
        }
        _ => {
            let db = db.clone();
            tokio::spawn(async move { db.begin().await })
                .await
                .map_err(|err| DbErr::Custom(format!("beginning a transaction: {err}")))?
        }
    }
}

/// Calls `on_note` with the payload of every PostgreSQL notification on a channel, until
/// `stop`; returns at once on SQLite, which is one process. The channel is named per
/// connection from the connection's schema (`channel_of(schema)`), so that deployments or
/// tests sharing a database in schemas of their own can keep apart. Holds one connection of
/// the pool; a lost connection is opened again after a second, and what was notified
/// meanwhile is lost: callers poll besides.
pub async fn listen(
    db: &DatabaseConnection,
    channel_of: impl Fn(&str) -> String,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut on_note: impl FnMut(&str, &mut sea_orm::sqlx::postgres::PgListener),
) {
    use sea_orm::sqlx::postgres::PgListener;
    if db.get_database_backend() != DbBackend::Postgres {
        return;
    }
    let pool = db.get_postgres_connection_pool().clone();
    let mut listen = async || -> Result<(), sea_orm::sqlx::Error> {
        let schema: String = sea_orm::sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(&pool)
            .await?;
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen(&channel_of(&schema)).await?;
        loop {
            let note = listener.recv().await?;
            on_note(note.payload(), &mut listener);
        }
    };
    while !*stop.borrow() {
        tokio::select! {
            result = listen() => {
                if let Err(err) = result {
                    tracing::warn!(error = %err, "notifications lost; listening again");
                }
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

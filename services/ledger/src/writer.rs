//! Group commit: one task per process takes every write queued while the previous batch was
//! committing and commits them together, in one transaction with one update per account.
//!
//! Throughput then grows with load instead of collapsing under it: under 20 concurrent
//! clients a batch holds about 20 entries and costs one commit. Isolation between the
//! operations of a batch is the planner's job (each is applied to the balances the earlier
//! ones left, and refused ones leave no trace); isolation between processes is the database's
//! (row locks on PostgreSQL, the write lock on SQLite), so any number of processes can run a
//! writer against the same ledger.

use std::time::Duration;

use sea_orm::{
    DatabaseConnection, DbBackend, DbErr, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use crate::Clock;
use crate::error::LedgerError;
use crate::model::to_micros;
use crate::plan::{self, Op, Outcome, Snapshot};
use crate::store;

/// How many times a batch is retried after a transient failure (deadlock, serialization
/// failure, a racing writer taking the same idempotency key, SQLite busy).
const MAX_ATTEMPTS: u32 = 8;

pub(crate) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Outcome, LedgerError>>,
}

/// Runs until every sender is gone.
pub(crate) async fn run(
    db: DatabaseConnection,
    mut rx: mpsc::Receiver<Request>,
    clock: Clock,
    max_batch: usize,
) {
    let mut requests = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut requests, max_batch).await > 0 {
        let (ops, replies): (Vec<Op>, Vec<_>) = requests.drain(..).map(|r| (r.op, r.reply)).unzip();
        let outcomes = commit(&db, &ops, &clock).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The caller may have gone away; its entry is committed (or not) all the same, and
            // a retry with the same idempotency key finds it.
            let _ = reply.send(outcome);
        }
    }
}

/// Commits a batch, retrying transient failures. If the batch fails for another reason, each
/// operation is tried alone so that one bad operation cannot fail its neighbours.
async fn commit(
    db: &DatabaseConnection,
    ops: &[Op],
    clock: &Clock,
) -> Vec<Result<Outcome, LedgerError>> {
    match commit_with_retry(db, ops, clock).await {
        Ok(outcomes) => outcomes,
        Err(err) if ops.len() > 1 => {
            tracing::warn!(error = %err, batch = ops.len(), "batch failed; retrying its operations one by one");
            let mut outcomes = Vec::with_capacity(ops.len());
            for op in ops {
                let single = commit_with_retry(db, std::slice::from_ref(op), clock).await;
                outcomes.push(single.map_or_else(
                    |e| Err(LedgerError::Storage(e.to_string())),
                    |mut o| o.remove(0),
                ));
            }
            outcomes
        }
        Err(err) => vec![Err(LedgerError::Storage(err.to_string()))],
    }
}

async fn commit_with_retry(
    db: &DatabaseConnection,
    ops: &[Op],
    clock: &Clock,
) -> Result<Vec<Result<Outcome, LedgerError>>, BatchError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match commit_once(db, ops, clock).await {
            Ok(outcomes) => return Ok(outcomes),
            Err(err) if err.is_transient() && attempt < MAX_ATTEMPTS => {
                tracing::debug!(error = %err, attempt, "transient batch failure; retrying");
                let backoff_ms = (1u64 << attempt.min(6)) + u64::from(fastrand_jitter(attempt));
                tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// A little jitter so that two processes that collided do not collide again in step.
fn fastrand_jitter(attempt: u32) -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    ((nanos ^ attempt.wrapping_mul(2_654_435_761)) % 4) as u8
}

async fn commit_once(
    db: &DatabaseConnection,
    ops: &[Op],
    clock: &Clock,
) -> Result<Vec<Result<Outcome, LedgerError>>, BatchError> {
    let txn = begin_write(db).await?;
    let keys: Vec<&str> = ops.iter().filter_map(Op::key).collect();
    let existing = store::existing(&txn, &keys).await?;
    let mut hold_ids: Vec<_> = ops.iter().filter_map(Op::hold_id).collect();
    hold_ids.sort_unstable();
    hold_ids.dedup();
    let holds = store::lock_holds(&txn, &hold_ids).await?;
    let account_ids = plan::accounts_to_lock(ops, &holds);
    let accounts = store::lock_accounts(&txn, &account_ids).await?;
    // The batch's time is read once the locks are held, so that recorded times follow the
    // order in which writers got the accounts.
    let now = to_micros(clock());
    let mut snapshot = Snapshot {
        existing,
        holds,
        accounts,
    };
    let plan = plan::plan(ops, &mut snapshot, now);
    store::write(&txn, &plan, now).await?;
    txn.commit().await.map_err(BatchError::Db)?;
    Ok(plan.outcomes)
}

/// Opens the transaction a batch writes in. On SQLite it is `IMMEDIATE`: the write lock is
/// taken before the first read, which is what makes the read-check-write race-free there.
pub(crate) async fn begin_write(
    db: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    match db.get_database_backend() {
        DbBackend::Sqlite => {
            db.begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
        }
        _ => db.begin().await,
    }
}

#[derive(Debug)]
enum BatchError {
    Db(DbErr),
    Ledger(LedgerError),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Db(e) => write!(f, "{e}"),
            BatchError::Ledger(e) => write!(f, "{e}"),
        }
    }
}

impl From<DbErr> for BatchError {
    fn from(err: DbErr) -> Self {
        BatchError::Db(err)
    }
}

impl From<LedgerError> for BatchError {
    fn from(err: LedgerError) -> Self {
        BatchError::Ledger(err)
    }
}

impl BatchError {
    fn is_transient(&self) -> bool {
        let text = self.to_string();
        is_transient_text(&text)
    }
}

/// Failures that a retry of the whole batch can cure. Matched on the database's own words
/// and codes, which is all `DbErr` keeps of them.
pub(crate) fn is_transient_text(text: &str) -> bool {
    const MARKERS: [&str; 8] = [
        "deadlock detected",
        "could not serialize access",
        "duplicate key value violates unique constraint \"ledger_entries_idempotency_key_key\"",
        "UNIQUE constraint failed: ledger_entries.idempotency_key",
        "database is locked",
        "database table is locked",
        "another writer changed",
        "connection",
    ];
    MARKERS.iter().any(|m| text.contains(m))
}

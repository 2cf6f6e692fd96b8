//! Group commit: one task per process takes every write queued while the previous batch was
//! committing and commits them together, with one update per account.
//!
//! Throughput then grows with load instead of collapsing under it: under 20 concurrent
//! clients a batch holds about 20 entries and costs one commit. Isolation between the
//! operations of a batch is the planner's job (each is applied to the balances the earlier
//! ones left, and refused ones leave no trace); isolation between processes is the database's,
//! so any number of processes can run a writer against the same ledger.
//!
//! Two paths commit a batch:
//! - **Locked** (SQLite always; PostgreSQL for holds, closings and retries): one transaction
//!   that reads the used idempotency keys, locks the holds and accounts it touches (SQLite:
//!   `BEGIN IMMEDIATE`; PostgreSQL: `SELECT … ORDER BY id FOR UPDATE`), plans, writes, commits.
//! - **Conditional** (PostgreSQL, batches of new entries): the writer keeps the state of the
//!   accounts it wrote last, plans against it, and sends one self-guarding statement that
//!   updates each account only if its posting sequence and closed flag are still what the plan
//!   assumed, inserts the entries (the unique index refuses a used key), and aborts as a whole
//!   otherwise. One round trip and one commit per batch. Any abort sends the batch down the
//!   locked path, which reads everything afresh and refreshes the cache.

use std::collections::HashMap;
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbBackend, DbErr};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::Clock;
use crate::error::LedgerError;
use crate::model::to_micros;
use crate::plan::{self, AccountState, Op, Outcome, Snapshot};
use crate::store;

/// How many times a batch is retried after a transient failure (deadlock, serialization
/// failure, a racing writer taking the same idempotency key, SQLite busy).
const MAX_ATTEMPTS: u32 = 8;

/// Most accounts the writer remembers; past it the cache starts over.
const CACHE_CAPACITY: usize = 100_000;

pub(crate) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Outcome, LedgerError>>,
}

struct Writer {
    db: DatabaseConnection,
    clock: Clock,
    /// Accounts as this writer last wrote or read them. Only a hint: every use is guarded.
    cache: HashMap<Uuid, AccountState>,
}

/// Runs until every sender is gone.
pub(crate) async fn run(
    db: DatabaseConnection,
    mut rx: mpsc::Receiver<Request>,
    clock: Clock,
    max_batch: usize,
) {
    let mut writer = Writer {
        db,
        clock,
        cache: HashMap::new(),
    };
    let mut requests = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut requests, max_batch).await > 0 {
        linger(&mut rx, &mut requests, max_batch).await;
        let (ops, replies): (Vec<Op>, Vec<_>) = requests.drain(..).map(|r| (r.op, r.reply)).unzip();
        let outcomes = writer.commit(&ops).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // The caller may have gone away; its entry is committed (or not) all the same, and
            // a retry with the same idempotency key finds it.
            let _ = reply.send(outcome);
        }
    }
}

/// Lets callers that were answered a moment ago join the batch before it commits.
///
/// Without it, batches alternate between most of the clients and the few whose requests
/// arrived while the previous batch was being written (17 and 3 of 20, measured), and the
/// small batch costs a whole commit. Yielding to the runtime costs microseconds; it stops as
/// soon as a yield brings no new request, so an idle ledger does not wait.
async fn linger(rx: &mut mpsc::Receiver<Request>, requests: &mut Vec<Request>, max_batch: usize) {
    for _ in 0..LINGER_YIELDS {
        if requests.len() >= max_batch {
            return;
        }
        tokio::task::yield_now().await;
        let before = requests.len();
        while requests.len() < max_batch {
            match rx.try_recv() {
                Ok(request) => requests.push(request),
                Err(_) => break,
            }
        }
        if requests.len() == before {
            return;
        }
    }
}

/// Most yields one batch waits for late joiners.
const LINGER_YIELDS: usize = 32;

impl Writer {
    /// Commits a batch, retrying transient failures. If the batch fails for another reason,
    /// each operation is tried alone so that one bad operation cannot fail its neighbours.
    async fn commit(&mut self, ops: &[Op]) -> Vec<Result<Outcome, LedgerError>> {
        match self.commit_with_retry(ops).await {
            Ok(outcomes) => outcomes,
            Err(err) if ops.len() > 1 => {
                tracing::warn!(error = %err, batch = ops.len(), "batch failed; retrying its operations one by one");
                let mut outcomes = Vec::with_capacity(ops.len());
                for op in ops {
                    let single = self.commit_with_retry(std::slice::from_ref(op)).await;
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
        &mut self,
        ops: &[Op],
    ) -> Result<Vec<Result<Outcome, LedgerError>>, BatchError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let conditional = attempt == 1 && self.conditional_path_applies(ops);
            let result = if conditional {
                self.commit_conditional(ops).await
            } else {
                self.commit_locked(ops).await
            };
            match result {
                Ok(outcomes) => return Ok(outcomes),
                Err(err) if err.is_transient() && attempt < MAX_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt, conditional, "batch aborted; retrying under locks");
                    if !conditional {
                        let backoff_ms = (1u64 << attempt.min(6)) + u64::from(jitter_ms(attempt));
                        tokio::time::sleep(Duration::from_millis(backoff_ms)).await;
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    fn conditional_path_applies(&self, ops: &[Op]) -> bool {
        self.db.get_database_backend() == DbBackend::Postgres
            && ops.iter().all(|op| matches!(op, Op::Entry(_)))
    }

    /// Remembers the accounts of a committed batch, as the batch left them.
    fn remember(&mut self, accounts: HashMap<Uuid, AccountState>) {
        if self.cache.len() + accounts.len() > CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.extend(accounts);
    }

    async fn commit_conditional(
        &mut self,
        ops: &[Op],
    ) -> Result<Vec<Result<Outcome, LedgerError>>, BatchError> {
        let holds = HashMap::new();
        let ids = plan::accounts_to_lock(ops, &holds);
        let missing: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !self.cache.contains_key(id))
            .collect();
        if !missing.is_empty() {
            let read = store::read_accounts(&self.db, &missing).await?;
            self.remember(read);
        }
        let accounts = ids
            .iter()
            .filter_map(|id| self.cache.get(id).map(|a| (*id, a.clone())))
            .collect();
        let now = to_micros((self.clock)());
        // Keys are not read: a used key makes the insert fail and the batch take the locked
        // path, which reads them. New keys, the common case, cost nothing.
        let mut snapshot = Snapshot {
            existing: HashMap::new(),
            holds,
            accounts,
        };
        let plan = plan::plan(ops, &mut snapshot, now);
        if plan.outcomes.iter().any(Result::is_err) {
            // A refusal may really be the replay of a key this path did not read: only the
            // locked path, which reads the keys, may answer it.
            return Err(BatchError::NeedsKeys);
        }
        if let Err(err) = store::write(&self.db, &plan, now).await {
            for id in &ids {
                self.cache.remove(id);
            }
            return Err(err.into());
        }
        self.remember(snapshot.accounts);
        Ok(plan.outcomes)
    }

    async fn commit_locked(
        &mut self,
        ops: &[Op],
    ) -> Result<Vec<Result<Outcome, LedgerError>>, BatchError> {
        let txn = entities::db::begin_write(&self.db).await?;
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
        let now = to_micros((self.clock)());
        let mut snapshot = Snapshot {
            existing,
            holds,
            accounts,
        };
        let plan = plan::plan(ops, &mut snapshot, now);
        store::write(&txn, &plan, now).await?;
        txn.commit().await.map_err(BatchError::Db)?;
        if self.db.get_database_backend() == DbBackend::Postgres {
            self.remember(snapshot.accounts);
        }
        Ok(plan.outcomes)
    }
}

/// A little jitter so that two processes that collided do not collide again in step.
fn jitter_ms(attempt: u32) -> u8 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    ((nanos ^ attempt.wrapping_mul(2_654_435_761)) % 4) as u8
}

#[derive(Debug)]
enum BatchError {
    Db(DbErr),
    Ledger(LedgerError),
    /// The conditional path cannot decide the batch without reading its keys.
    NeedsKeys,
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Db(e) => write!(f, "{e}"),
            BatchError::Ledger(e) => write!(f, "{e}"),
            BatchError::NeedsKeys => write!(f, "the batch refuses an entry; its key must be read"),
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
        matches!(self, BatchError::NeedsKeys) || is_transient_text(&self.to_string())
    }
}

/// Failures that a retry of the whole batch can cure. Matched on the database's own words
/// and codes, which is all `DbErr` keeps of them.
pub(crate) fn is_transient_text(text: &str) -> bool {
    const MARKERS: [&str; 11] = [
        "deadlock detected",
        "could not serialize access",
        "duplicate key value violates unique constraint \"ledger_entries_idempotency_key_key\"",
        "UNIQUE constraint failed: ledger_entries.idempotency_key",
        // Another writer took the account's next posting sequence first: the conditional
        // statement can meet it in the postings insert before its own guard aborts it.
        "duplicate key value violates unique constraint \"ledger_postings_account_id_account_seq_key\"",
        "UNIQUE constraint failed: ledger_postings.account_id, ledger_postings.account_seq",
        "database is locked",
        "database table is locked",
        "another writer changed",
        "could not serialize",
        "connection",
    ];
    MARKERS.iter().any(|m| text.contains(m))
}

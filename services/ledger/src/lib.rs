//! The shared double-entry ledger of Forecourt.
//!
//! Every flow of the platform moves money through this crate: retail sales, fleet
//! prepayments and card authorisations, depot purchase reservations, franchise settlements
//! and bank instructions. The model is TigerBeetle's (accounts with posted and pending
//! debits and credits, balance constraints as account flags, two-phase holds) on top of
//! PostgreSQL or SQLite, with multi-leg journal entries.
//!
//! # Guarantees
//! - Every entry is balanced per currency, checked when it is validated and again when it is
//!   written; entries and postings are immutable (the schema refuses updates and deletes).
//! - An idempotency key writes at most once: the same key with the same content returns the
//!   original receipt, with other content it is [`LedgerError::IdempotencyConflict`].
//! - A constrained account never crosses its limit under any concurrency: the check runs on
//!   balances read under lock inside the writing transaction, and the schema checks it again.
//! - A refused request writes nothing.
//!
//! # Layout
//! - [`money`]: `Money`, currencies, the one rounding rule and the one allocation rule.
//! - [`model`]: requests and results.
//! - [`error`]: [`LedgerError`], one variant per reason for refusal.
//! - `plan`: the pure batch planner that validates and applies operations in memory.
//! - `store`: reads under lock and the one-statement batch write, per backend.
//! - `writer`: group commit; one task per process batches concurrent writes.
//! - `query`: balances, balances as of a time, statements, entries by reference, audit.

pub mod error;
pub mod model;
pub mod money;
mod plan;
mod query;
mod store;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use entities::{ledger_accounts, ledger_holds};

pub use error::LedgerError;
pub use model::*;
pub use money::{Currency, Money, MoneyError, allocate, round_half_up};
pub use query::{AuditReport, StatementQuery};

use plan::{Op, Outcome};

/// The ledger's source of time. Tests pass a clock they can move.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How the ledger runs. Every field is explicit; [`LedgerConfig::default`] states the values
/// used in production.
#[derive(Clone)]
pub struct LedgerConfig {
    /// Most operations committed in one transaction.
    pub max_batch: usize,
    /// Most operations waiting for the writer; callers wait for room beyond it.
    pub queue_capacity: usize,
    pub clock: Clock,
    /// How often a background task releases expired holds; `None` leaves it to the caller
    /// ([`Ledger::expire_due_holds`]).
    pub hold_sweep_every: Option<Duration>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            max_batch: 1_000,
            queue_capacity: 10_000,
            clock: Arc::new(Utc::now),
            hold_sweep_every: Some(Duration::from_secs(1)),
        }
    }
}

/// A handle on the ledger. Cheap to clone; all clones share one group-commit writer.
#[derive(Clone)]
pub struct Ledger {
    db: DatabaseConnection,
    writer: mpsc::Sender<writer::Request>,
    clock: Clock,
}

/// Most due holds one sweep releases.
const SWEEP_LIMIT: u64 = 500;

impl Ledger {
    /// Starts the ledger's writer (and hold sweeper, if configured) on the current runtime.
    /// The schema must be migrated.
    pub fn start(db: DatabaseConnection, config: LedgerConfig) -> Ledger {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        tokio::spawn(writer::run(
            db.clone(),
            rx,
            config.clock.clone(),
            config.max_batch,
        ));
        let ledger = Ledger {
            db,
            writer: tx,
            clock: config.clock,
        };
        if let Some(every) = config.hold_sweep_every {
            let sweeper = ledger.clone();
            tokio::spawn(async move { sweeper.sweep_holds(every).await });
        }
        ledger
    }

    /// The database the ledger writes to.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    async fn sweep_holds(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.writer.is_closed() {
                return;
            }
            if let Err(err) = self.expire_due_holds().await {
                tracing::warn!(error = %err, "hold sweep failed; retrying on the next tick");
            }
        }
    }

    async fn submit(&self, op: Op) -> Result<Outcome, LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(writer::Request { op, reply })
            .await
            .map_err(|_| LedgerError::ShuttingDown)?;
        rx.await.map_err(|_| LedgerError::ShuttingDown)?
    }

    async fn submit_entry(&self, op: Op) -> Result<Receipt, LedgerError> {
        match self.submit(op).await? {
            Outcome::Entry(receipt) => Ok(receipt),
            Outcome::Closed => unreachable!("entry operations return receipts"),
        }
    }

    /// Opens an account, or returns it if the same request opened it before.
    #[tracing::instrument(skip(self, new), fields(account = %new.id, code = %new.code))]
    pub async fn create_account(&self, new: NewAccount) -> Result<Account, LedgerError> {
        query::create_account(&self.db, new, to_micros((self.clock)())).await
    }

    /// Writes a journal entry: posted, or a hold when `entry.hold` is set.
    pub async fn post_entry(&self, entry: NewEntry) -> Result<Receipt, LedgerError> {
        let valid = plan::validate_entry(entry)?;
        self.submit_entry(Op::Entry(Box::new(valid))).await
    }

    /// Writes many entries; each succeeds or fails on its own, in order.
    pub async fn post_entries(&self, entries: Vec<NewEntry>) -> Vec<Result<Receipt, LedgerError>> {
        let mut pending = Vec::with_capacity(entries.len());
        for entry in entries {
            let (reply, rx) = oneshot::channel();
            let queued = match plan::validate_entry(entry) {
                Ok(valid) => self
                    .writer
                    .send(writer::Request {
                        op: Op::Entry(Box::new(valid)),
                        reply,
                    })
                    .await
                    .map_err(|_| LedgerError::ShuttingDown)
                    .map(|_| rx),
                Err(err) => Err(err),
            };
            pending.push(queued);
        }
        let mut out = Vec::with_capacity(pending.len());
        for queued in pending {
            out.push(match queued {
                Ok(rx) => match rx.await {
                    Ok(Ok(Outcome::Entry(receipt))) => Ok(receipt),
                    Ok(Ok(Outcome::Closed)) => unreachable!("entry operations return receipts"),
                    Ok(Err(err)) => Err(err),
                    Err(_) => Err(LedgerError::ShuttingDown),
                },
                Err(err) => Err(err),
            });
        }
        out
    }

    /// Posts a hold in full or in part; the rest of the reservation is released.
    pub async fn post_hold(&self, post: PostHold) -> Result<Receipt, LedgerError> {
        self.submit_entry(plan::validate_post(post)?).await
    }

    /// Voids a hold, releasing its reservation.
    pub async fn void_hold(&self, void: VoidHold) -> Result<Receipt, LedgerError> {
        self.submit_entry(plan::validate_void(void)?).await
    }

    /// Releases every hold whose expiry has passed (at most a few hundred per call) and
    /// returns how many it released.
    pub async fn expire_due_holds(&self) -> Result<usize, LedgerError> {
        let now = to_micros((self.clock)());
        let due: Vec<Uuid> = ledger_holds::Entity::find()
            .select_only()
            .column(ledger_holds::Column::EntryId)
            .filter(ledger_holds::Column::Status.eq(HoldStatus::Pending.as_str()))
            .filter(ledger_holds::Column::ExpiresAt.lte(now))
            .order_by_asc(ledger_holds::Column::ExpiresAt)
            .limit(SWEEP_LIMIT)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut released = 0;
        for hold_id in due {
            match self.submit_entry(plan::expire_op(hold_id)).await {
                Ok(receipt) if !receipt.replayed => released += 1,
                Ok(_) | Err(LedgerError::HoldNotPending { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(released)
    }

    /// Closes an account: no posting can reach it afterwards. Only a settled account (no
    /// pending holds, posted debits equal to posted credits) can be closed.
    pub async fn close_account(&self, account_id: Uuid) -> Result<(), LedgerError> {
        self.submit(Op::CloseAccount { account_id })
            .await
            .map(|_| ())
    }

    pub async fn account(&self, id: Uuid) -> Result<Account, LedgerError> {
        query::account(&self.db, id).await
    }

    /// Posted, pending and available balance now.
    pub async fn balance(&self, id: Uuid) -> Result<Balance, LedgerError> {
        Ok(self.account(id).await?.balance)
    }

    /// The balance from every posting effective at or before `at`.
    pub async fn balance_as_of(&self, id: Uuid, at: DateTime<Utc>) -> Result<Balance, LedgerError> {
        query::balance_as_of(&self.db, id, to_micros(at)).await
    }

    /// A page of the account's statement, with the running balance after each line.
    pub async fn statement(&self, q: StatementQuery) -> Result<StatementPage, LedgerError> {
        query::statement(&self.db, q).await
    }

    pub async fn entry(&self, id: Uuid) -> Result<Option<Entry>, LedgerError> {
        Ok(query::entries(&self.db, query::EntryFilter::Id(id))
            .await?
            .pop())
    }

    /// Every entry caused by a document or workflow, oldest first.
    pub async fn entries_by_reference(&self, reference: &str) -> Result<Vec<Entry>, LedgerError> {
        query::entries(
            &self.db,
            query::EntryFilter::Reference(reference.to_owned()),
        )
        .await
    }

    pub async fn hold(&self, id: Uuid) -> Result<Option<Hold>, LedgerError> {
        query::hold(&self.db, id).await
    }

    /// Sums over all accounts, per currency.
    pub async fn trial_balance(&self) -> Result<Vec<TrialBalance>, LedgerError> {
        query::trial_balance(&self.db).await
    }

    /// Recomputes every account's balances from its postings and checks them against the
    /// stored balances, the posting sequence, the account limits and the trial balance.
    pub async fn audit(&self) -> Result<AuditReport, LedgerError> {
        query::audit(&self.db).await
    }
}

/// Builds the active model of a new account; used by account creation.
fn account_model(
    new: &NewAccount,
    credit_limit_minor: Option<i64>,
    hash: String,
    now: DateTime<Utc>,
) -> ledger_accounts::ActiveModel {
    ledger_accounts::ActiveModel {
        id: Set(new.id),
        owner_org: Set(new.owner_org.clone()),
        code: Set(new.code.clone()),
        name: Set(new.name.clone()),
        currency: Set(new.currency.code().to_owned()),
        normal_side: Set(new.normal_side.as_str().to_owned()),
        debits_must_not_exceed_credits: Set(new.debits_must_not_exceed_credits),
        credits_must_not_exceed_debits: Set(new.credits_must_not_exceed_debits),
        credit_limit_minor: Set(credit_limit_minor),
        parent_id: Set(new.parent_id),
        closed: Set(false),
        metadata: Set(new.metadata.clone()),
        debits_posted: Set(0),
        credits_posted: Set(0),
        debits_pending: Set(0),
        credits_pending: Set(0),
        posting_seq: Set(0),
        content_hash: Set(hash),
        created_at: Set(now),
        updated_at: Set(now),
    }
}

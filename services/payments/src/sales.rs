//! Till payments and refunds in storage.
//!
//! A payment row is written once per terminal order number, before any channel is called:
//! a retried request finds it (the same content is a replay, other content a conflict) and
//! never makes a second payment. Its outcome is recorded once, by the payment's workflow,
//! with a conditional update from `pending`.
//!
//! Refunds reserve what they take back with one conditional update of the payment
//! (`refund_reserved + refunded + amount <= amount`, also a check constraint), so that
//! concurrent partial refunds can never give back more than was paid.

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use ledger::Ledger;
use ledger::money::{Currency, Money};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Alias, Expr, Func, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entities::{pos_channel_day_totals, pos_payments, pos_refunds, pos_shifts, pos_terminals};

use crate::model::{ChannelId, Method};
use crate::routing::{PayerToken, RouteDecision};
use crate::stations::{StoreError, digest_hex};

/// The time zone of stations' business days.
pub const BUSINESS_TZ: Tz = chrono_tz::Asia::Shanghai;

/// The station's local date of an instant, `YYYY-MM-DD`.
pub fn business_day(at: DateTime<Utc>) -> String {
    business_date(at).format("%Y-%m-%d").to_string()
}

/// The calendar date in the business time zone at `at`.
pub fn business_date(at: DateTime<Utc>) -> chrono::NaiveDate {
    at.with_timezone(&BUSINESS_TZ).date_naive()
}

/// The fuel grades a station sells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FuelGrade {
    /// 92# petrol.
    #[serde(rename = "92")]
    Petrol92,
    /// 95# petrol.
    #[serde(rename = "95")]
    Petrol95,
    /// 98# petrol.
    #[serde(rename = "98")]
    Petrol98,
    /// 0# diesel.
    #[serde(rename = "0")]
    Diesel0,
}

impl FuelGrade {
    pub fn label(self) -> &'static str {
        match self {
            FuelGrade::Petrol92 => "92#",
            FuelGrade::Petrol95 => "95#",
            FuelGrade::Petrol98 => "98#",
            FuelGrade::Diesel0 => "0# diesel",
        }
    }
}

/// One line of a sale: fuel from a nozzle, or a shop item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SaleLine {
    Fuel {
        grade: FuelGrade,
        /// Litres dispensed, at most three decimals.
        litres: Decimal,
        nozzle: u32,
        amount: Decimal,
    },
    Item {
        name: String,
        quantity: u32,
        amount: Decimal,
    },
}

impl SaleLine {
    pub fn amount(&self) -> Decimal {
        match self {
            SaleLine::Fuel { amount, .. } | SaleLine::Item { amount, .. } => *amount,
        }
    }
}

/// What a sale is, derived from its lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleKind {
    Fuel,
    NonFuel,
    Mixed,
}

/// What was sold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    pub lines: Vec<SaleLine>,
}

impl Sale {
    pub fn kind(&self) -> SaleKind {
        let fuel = self
            .lines
            .iter()
            .any(|l| matches!(l, SaleLine::Fuel { .. }));
        let item = self
            .lines
            .iter()
            .any(|l| matches!(l, SaleLine::Item { .. }));
        match (fuel, item) {
            (true, true) => SaleKind::Mixed,
            (true, false) => SaleKind::Fuel,
            _ => SaleKind::NonFuel,
        }
    }

    /// Checks the lines: at least one, each positive and exact to the fen, litres positive
    /// with at most three decimals, names present, and the lines summing to `amount`.
    pub fn validate(&self, amount: Money) -> Result<(), String> {
        if self.lines.is_empty() {
            return Err("a sale has at least one line".into());
        }
        if self.lines.len() > 50 {
            return Err("a sale has at most 50 lines".into());
        }
        let mut total = Decimal::ZERO;
        for (i, line) in self.lines.iter().enumerate() {
            let value = line.amount();
            if value <= Decimal::ZERO || value.normalize().scale() > 2 {
                return Err(format!("line {i}: the amount must be positive, to the fen"));
            }
            match line {
                SaleLine::Fuel { litres, nozzle, .. } => {
                    if *litres <= Decimal::ZERO || litres.normalize().scale() > 3 {
                        return Err(format!(
                            "line {i}: litres must be positive, with at most three decimals"
                        ));
                    }
                    if *nozzle == 0 || *nozzle > 64 {
                        return Err(format!("line {i}: nozzle must be 1 to 64"));
                    }
                }
                SaleLine::Item { name, quantity, .. } => {
                    if name.trim().is_empty() || name.chars().count() > 64 {
                        return Err(format!(
                            "line {i}: an item has a name of 1 to 64 characters"
                        ));
                    }
                    if *quantity == 0 {
                        return Err(format!("line {i}: quantity must be at least 1"));
                    }
                }
            }
            total += value;
        }
        if total != amount.amount() {
            return Err(format!(
                "the lines sum to {total}, not to the amount {}",
                amount.amount()
            ));
        }
        Ok(())
    }
}

/// A payment the till asks for.
#[derive(Clone, Debug)]
pub struct NewPayment {
    pub terminal_order_no: String,
    pub method: Method,
    pub amount: Money,
    pub sale: Sale,
    /// The customer's payment code or card token, when the terminal read one. Never stored:
    /// only its fingerprint enters the request digest.
    pub payer_code: Option<String>,
}

impl NewPayment {
    /// Digest of everything that makes the request what it is.
    pub fn request_hash(&self) -> String {
        let payer = self.payer_code.as_deref().map(PayerToken::of);
        let canonical = serde_json::json!({
            "order": self.terminal_order_no,
            "method": self.method,
            "amount": self.amount,
            "sale": self.sale,
            "payer": payer,
        });
        digest_hex(canonical.to_string().as_bytes())
    }
}

/// The stored text of a method.
pub fn method_text(method: Method) -> String {
    serde_json::to_value(method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("methods serialise to strings")
}

pub fn parse_method(text: &str) -> Result<Method, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| StoreError::Invalid(format!("unknown method {text:?}")))
}

/// A new payment number: 24 hex digits, time-ordered. Channel order numbers append
/// `-<attempt>` and stay within every party's 32-character limit.
pub fn new_payment_no() -> String {
    let id = Uuid::now_v7().simple().to_string();
    // 12 digits of milliseconds and 12 of the random part.
    format!("{}{}", &id[..12], &id[20..])
}

/// What [`create_payment`] found or made.
#[derive(Clone, Debug)]
pub enum Created {
    New(pos_payments::Model),
    /// The same request came before: its payment.
    Replay(pos_payments::Model),
}

impl Created {
    pub fn payment(&self) -> &pos_payments::Model {
        match self {
            Created::New(p) | Created::Replay(p) => p,
        }
    }
}

/// The payment a terminal order number already made, if any: the same request is a replay,
/// another one under the same number a conflict.
pub async fn existing_payment(
    db: &impl ConnectionTrait,
    terminal_id: Uuid,
    new: &NewPayment,
) -> Result<Option<pos_payments::Model>, StoreError> {
    let found = pos_payments::Entity::find()
        .filter(pos_payments::Column::TerminalId.eq(terminal_id))
        .filter(pos_payments::Column::TerminalOrderNo.eq(new.terminal_order_no.as_str()))
        .one(db)
        .await?;
    match found {
        Some(p) if p.request_hash == new.request_hash() => Ok(Some(p)),
        Some(_) => Err(StoreError::Conflict(format!(
            "order {} was already used for a different payment",
            new.terminal_order_no
        ))),
        None => Ok(None),
    }
}

/// Writes the payment, pending, in the terminal's open shift, with its routing decision;
/// or finds the one the same order number made.
pub async fn create_payment(
    db: &impl ConnectionTrait,
    terminal: &pos_terminals::Model,
    shift: &pos_shifts::Model,
    new: &NewPayment,
    route: Option<&RouteDecision>,
    now: DateTime<Utc>,
) -> Result<Created, StoreError> {
    // No read first: the unique key decides. A new payment is the row as written; only a
    // replay or a conflict reads what is there.
    let model = pos_payments::Model {
        id: Uuid::now_v7(),
        payment_no: new_payment_no(),
        station_id: terminal.station_id,
        terminal_id: terminal.id,
        shift_id: shift.id,
        terminal_order_no: new.terminal_order_no.clone(),
        request_hash: new.request_hash(),
        method: method_text(new.method),
        amount_minor: new
            .amount
            .minor_units()
            .map_err(|e| StoreError::Invalid(e.to_string()))?,
        currency: new.amount.currency().to_string(),
        sale: serde_json::to_string(&new.sale).expect("sales serialise"),
        status: "pending".into(),
        // The channel about to be tried, so that the daily limits count the payment at once;
        // the outcome records the channel that took it.
        channel_id: route
            .and_then(|r| r.candidates.first())
            .map(|c| c.channel.to_string()),
        channel_txn_id: None,
        out_trade_no: None,
        fee_minor: None,
        route: route.map(|r| serde_json::to_string(r).expect("decisions serialise")),
        reason: "created".into(),
        refund_reserved_minor: 0,
        refunded_minor: 0,
        business_day: business_day(now),
        // As stored (PostgreSQL keeps microseconds), so the row answered equals the row read.
        created_at: now.trunc_subsecs(6),
        finished_at: None,
        card_id: None,
    };
    let inserted =
        pos_payments::Entity::insert(pos_payments::ActiveModel::from(model.clone()).reset_all())
            .on_conflict(
                OnConflict::columns([
                    pos_payments::Column::TerminalId,
                    pos_payments::Column::TerminalOrderNo,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    if inserted == 1 {
        return Ok(Created::New(model));
    }
    // A concurrent request with the same number won: read what is there.
    let stored = existing_payment(db, terminal.id, new)
        .await?
        .ok_or(StoreError::NotFound("payment"))?;
    Ok(Created::Replay(stored))
}

pub async fn payment_by_no(
    db: &impl ConnectionTrait,
    payment_no: &str,
) -> Result<Option<pos_payments::Model>, StoreError> {
    Ok(pos_payments::Entity::find()
        .filter(pos_payments::Column::PaymentNo.eq(payment_no))
        .one(db)
        .await?)
}

pub async fn payment_by_order(
    db: &impl ConnectionTrait,
    terminal_id: Uuid,
    terminal_order_no: &str,
) -> Result<Option<pos_payments::Model>, StoreError> {
    Ok(pos_payments::Entity::find()
        .filter(pos_payments::Column::TerminalId.eq(terminal_id))
        .filter(pos_payments::Column::TerminalOrderNo.eq(terminal_order_no))
        .one(db)
        .await?)
}

/// What a channel has taken for the station today, per channel, counting payments still
/// pending (they may yet be charged) — the daily limits' view.
pub async fn used_today(
    db: &impl ConnectionTrait,
    station_id: Uuid,
    day: &str,
) -> Result<std::collections::BTreeMap<ChannelId, Money>, StoreError> {
    // Kept by a trigger on `pos_payments` in the transaction of every write to a payment: the
    // same sums as over the day's payments, from one row per till and channel.
    let rows: Vec<(String, i64)> = pos_channel_day_totals::Entity::find()
        .select_only()
        .column(pos_channel_day_totals::Column::ChannelId)
        // SUM of a bigint is numeric on PostgreSQL: cast back to read an i64 on both backends.
        .column_as(
            Expr::expr(Func::sum(Expr::col(
                pos_channel_day_totals::Column::AmountMinor,
            )))
            .cast_as(Alias::new("BIGINT")),
            "total",
        )
        .filter(pos_channel_day_totals::Column::StationId.eq(station_id))
        .filter(pos_channel_day_totals::Column::BusinessDay.eq(day))
        .group_by(pos_channel_day_totals::Column::ChannelId)
        .into_tuple()
        .all(db)
        .await?;
    let mut out = std::collections::BTreeMap::new();
    for (channel, total) in rows {
        if let Ok(id) = ChannelId::new(channel) {
            out.insert(id, Money::from_minor(total, Currency::CNY));
        }
    }
    Ok(out)
}

/// A payment's final outcome, recorded once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `succeeded`, `failed`, `reversed` or `needs_attention`.
    pub status: String,
    pub channel: Option<ChannelId>,
    pub channel_txn_id: Option<String>,
    pub out_trade_no: Option<String>,
    pub fee_minor: Option<i64>,
    pub reason: String,
}

/// Records the outcome of a pending payment. A payment already final is left as it is
/// (a repeated activity); returns whether this call recorded it.
pub async fn record_outcome(
    db: &impl ConnectionTrait,
    payment_no: &str,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    if !matches!(
        outcome.status.as_str(),
        "succeeded" | "failed" | "reversed" | "needs_attention"
    ) {
        return Err(StoreError::Invalid(format!(
            "{} is not a final status",
            outcome.status
        )));
    }
    let mut update = pos_payments::Entity::update_many()
        .col_expr(
            pos_payments::Column::Status,
            Expr::value(outcome.status.clone()),
        )
        .col_expr(
            pos_payments::Column::Reason,
            Expr::value(outcome.reason.clone()),
        )
        .col_expr(pos_payments::Column::FinishedAt, Expr::value(now));
    if let Some(channel) = &outcome.channel {
        update = update.col_expr(
            pos_payments::Column::ChannelId,
            Expr::value(channel.to_string()),
        );
    }
    if let Some(txn) = &outcome.channel_txn_id {
        update = update.col_expr(pos_payments::Column::ChannelTxnId, Expr::value(txn.clone()));
    }
    if let Some(no) = &outcome.out_trade_no {
        update = update.col_expr(pos_payments::Column::OutTradeNo, Expr::value(no.clone()));
    }
    if let Some(fee) = outcome.fee_minor {
        update = update.col_expr(pos_payments::Column::FeeMinor, Expr::value(fee));
    }
    let result = update
        .filter(pos_payments::Column::PaymentNo.eq(payment_no))
        .filter(pos_payments::Column::Status.eq("pending"))
        .exec(db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// Recorded outcomes, for requests waiting on them: a request that waits for its payment's
/// outcome is woken as soon as the outcome is recorded, instead of at its next poll of the
/// row. An outcome recorded in this process is announced here directly; on PostgreSQL the
/// recording transaction also sends a notification ([`notify`]) that [`listen`] turns into
/// the same announcement in every other process. A notification can be lost (while the
/// listening connection is re-established), so waiting still polls the row, rarely; the row
/// stays the only truth.
pub mod outcomes {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, LazyLock, Mutex, Weak};

    use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
    use tokio::sync::{Notify, watch};

    /// The PostgreSQL notification channel of recorded outcomes; the payload is the payment
    /// number.
    pub const CHANNEL: &str = "pos_payment_outcomes";

    /// One payment's waiters: woken when its outcome is announced, and the announcement kept,
    /// so that a waiter that registered before the outcome but started waiting after it still
    /// sees it.
    #[derive(Default)]
    struct Interest {
        notify: Notify,
        recorded: AtomicBool,
    }

    static WAITING: LazyLock<Mutex<HashMap<String, Weak<Interest>>>> =
        LazyLock::new(Default::default);

    fn waiting() -> std::sync::MutexGuard<'static, HashMap<String, Weak<Interest>>> {
        WAITING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Interest in one payment's outcome, for as long as it is held. Take it before the
    /// outcome can be recorded (for a new payment, before its transaction commits): every
    /// announcement from then on is seen.
    pub struct Watch {
        payment_no: String,
        interest: Arc<Interest>,
    }

    /// Starts watching a payment.
    pub fn watch(payment_no: &str) -> Watch {
        let mut map = waiting();
        let interest = match map.get(payment_no).and_then(Weak::upgrade) {
            Some(interest) => interest,
            None => {
                let interest = Arc::new(Interest::default());
                map.insert(payment_no.to_owned(), Arc::downgrade(&interest));
                interest
            }
        };
        Watch {
            payment_no: payment_no.to_owned(),
            interest,
        }
    }

    impl Watch {
        /// Resolves once the payment's outcome has been announced since the watch began: at
        /// once if it was already.
        pub async fn recorded(&self) {
            loop {
                let notified = self.interest.notify.notified();
                if self.interest.recorded.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            let mut map = waiting();
            // The last watcher removes the entry (its own reference is the one left).
            if Arc::strong_count(&self.interest) == 1 {
                map.remove(&self.payment_no);
            }
        }
    }

    /// Tells this process's watchers that the payment's outcome is recorded (committed).
    pub fn announce(payment_no: &str) {
        let interest = waiting().get(payment_no).and_then(Weak::upgrade);
        if let Some(interest) = interest {
            interest.recorded.store(true, Ordering::Release);
            interest.notify.notify_waiters();
        }
    }

    /// Tells the listeners of other processes that the payment's outcome is recorded, when
    /// the caller's transaction commits (PostgreSQL delivers notifications at commit and
    /// drops them on rollback). Nothing on SQLite, which is one process.
    pub async fn notify(db: &impl ConnectionTrait, payment_no: &str) -> Result<(), DbErr> {
        if db.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        db.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, $2)",
            [CHANNEL.into(), payment_no.into()],
        ))
        .await?;
        Ok(())
    }

    /// Announces in this process the outcomes other processes record (PostgreSQL; returns at
    /// once on SQLite), until `stop`. Holds one connection of the pool; what is notified
    /// while it is opened again is found by the waiting requests' polls.
    pub async fn listen(db: DatabaseConnection, stop: watch::Receiver<bool>) {
        entities::db::listen(
            &db,
            |_| CHANNEL.to_owned(),
            stop,
            |payment_no, _| announce(payment_no),
        )
        .await
    }

    #[cfg(test)]
    mod tests {
        use std::time::Duration;

        use super::*;

        /// The till's request takes its watch before the payment's transaction commits and
        /// starts waiting only after: a worker that records the outcome in between must not
        /// leave it waiting for a poll.
        #[tokio::test]
        async fn an_outcome_announced_before_the_wait_begins_is_still_seen() {
            let watch = watch("P-announced-early");
            announce("P-announced-early");
            tokio::time::timeout(Duration::from_secs(5), watch.recorded())
                .await
                .expect("seen at once");
            // Another payment's announcement is not this one's.
            let other = super::watch("P-not-yet");
            announce("P-announced-early");
            let waited = tokio::time::timeout(Duration::from_millis(50), other.recorded()).await;
            assert!(waited.is_err());
            // And once every watcher is gone, nothing is kept.
            drop((watch, other));
            assert!(waiting().get("P-announced-early").is_none());
        }
    }
}

/// Payments of a shift, oldest first.
pub async fn shift_payments(
    db: &impl ConnectionTrait,
    shift_id: Uuid,
) -> Result<Vec<pos_payments::Model>, StoreError> {
    Ok(pos_payments::Entity::find()
        .filter(pos_payments::Column::ShiftId.eq(shift_id))
        .order_by_asc(pos_payments::Column::CreatedAt)
        .all(db)
        .await?)
}

// ---------------------------------------------------------------------------------------
// Refunds
// ---------------------------------------------------------------------------------------

/// A refund someone asks for.
#[derive(Clone, Debug)]
pub struct NewRefund {
    pub terminal_refund_no: String,
    pub amount: Money,
    pub reason: String,
    pub requested_by: String,
}

impl NewRefund {
    fn request_hash(&self, payment_id: Uuid) -> String {
        let canonical = serde_json::json!({
            "payment": payment_id,
            "no": self.terminal_refund_no,
            "amount": self.amount,
            "reason": self.reason,
        });
        digest_hex(canonical.to_string().as_bytes())
    }
}

/// Why a refund cannot be made.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefundRefusal {
    #[error("only a succeeded payment can be refunded; this one is {0}")]
    NotRefundable(String),
    #[error("the refund exceeds what remains refundable ({remaining} of {paid})")]
    Exceeds { remaining: Money, paid: Money },
    #[error("the refund is in {refund} but the payment in {payment}")]
    Currency { refund: String, payment: String },
}

/// What [`request_refund`] did.
#[derive(Clone, Debug)]
pub enum RefundCreated {
    New(pos_refunds::Model),
    Replay(pos_refunds::Model),
    Refused(RefundRefusal),
}

fn remaining(payment: &pos_payments::Model) -> i64 {
    payment.amount_minor - payment.refund_reserved_minor - payment.refunded_minor
}

/// Reserves and writes a refund of `payment` in the caller's transaction (which also starts
/// the refund's workflow); or finds the refund the same number made before.
pub async fn request_refund(
    txn: &sea_orm::DatabaseTransaction,
    payment: &pos_payments::Model,
    new: &NewRefund,
    shift_id: Option<Uuid>,
    needs_approval: bool,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<RefundCreated, StoreError> {
    let hash = new.request_hash(payment.id);
    let found = pos_refunds::Entity::find()
        .filter(pos_refunds::Column::PaymentId.eq(payment.id))
        .filter(pos_refunds::Column::TerminalRefundNo.eq(new.terminal_refund_no.as_str()))
        .one(txn)
        .await?;
    if let Some(found) = found {
        return if found.request_hash == hash {
            Ok(RefundCreated::Replay(found))
        } else {
            Err(StoreError::Conflict(format!(
                "refund number {} was already used for a different refund",
                new.terminal_refund_no
            )))
        };
    }
    if new.amount.currency().to_string() != payment.currency {
        return Ok(RefundCreated::Refused(RefundRefusal::Currency {
            refund: new.amount.currency().to_string(),
            payment: payment.currency.clone(),
        }));
    }
    let amount = new
        .amount
        .minor_units()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let reserved = pos_payments::Entity::update_many()
        .col_expr(
            pos_payments::Column::RefundReservedMinor,
            Expr::col(pos_payments::Column::RefundReservedMinor).add(amount),
        )
        .filter(pos_payments::Column::Id.eq(payment.id))
        .filter(pos_payments::Column::Status.eq("succeeded"))
        .filter(
            Expr::col(pos_payments::Column::RefundReservedMinor)
                .add(Expr::col(pos_payments::Column::RefundedMinor))
                .add(amount)
                .lte(Expr::col(pos_payments::Column::AmountMinor)),
        )
        .exec(txn)
        .await?;
    if reserved.rows_affected != 1 {
        // The same refund, written meanwhile by a retry that held the payment first, is a
        // replay, not a refusal.
        if let Some(found) = pos_refunds::Entity::find()
            .filter(pos_refunds::Column::PaymentId.eq(payment.id))
            .filter(pos_refunds::Column::TerminalRefundNo.eq(new.terminal_refund_no.as_str()))
            .one(txn)
            .await?
        {
            return if found.request_hash == hash {
                Ok(RefundCreated::Replay(found))
            } else {
                Err(StoreError::Conflict(format!(
                    "refund number {} was already used for a different refund",
                    new.terminal_refund_no
                )))
            };
        }
        let current = pos_payments::Entity::find_by_id(payment.id)
            .one(txn)
            .await?
            .ok_or(StoreError::NotFound("payment"))?;
        let currency: Currency = current
            .currency
            .parse()
            .map_err(|_| StoreError::Invalid("stored currency".into()))?;
        let refusal = if current.status != "succeeded" {
            RefundRefusal::NotRefundable(current.status)
        } else {
            RefundRefusal::Exceeds {
                remaining: Money::from_minor(remaining(&current), currency),
                paid: Money::from_minor(current.amount_minor, currency),
            }
        };
        return Ok(RefundCreated::Refused(refusal));
    }
    let row = pos_refunds::Model {
        id: Uuid::now_v7(),
        refund_no: format!("R{}", new_payment_no()),
        payment_id: payment.id,
        station_id: payment.station_id,
        terminal_refund_no: new.terminal_refund_no.clone(),
        request_hash: hash,
        shift_id,
        amount_minor: amount,
        currency: payment.currency.clone(),
        reason: new.reason.clone(),
        status: if needs_approval {
            "pending_approval"
        } else {
            "refunding"
        }
        .into(),
        needs_approval,
        requested_by: new.requested_by.clone(),
        decided_by: None,
        decision_note: None,
        channel_refund_id: None,
        status_reason: if needs_approval {
            "the sale belongs to another shift: waiting for the station manager"
        } else {
            "refunding"
        }
        .into(),
        business_day: business_day(now),
        created_at: now,
        expires_at,
        finished_at: None,
    };
    pos_refunds::Entity::insert(pos_refunds::ActiveModel {
        id: Set(row.id),
        refund_no: Set(row.refund_no.clone()),
        payment_id: Set(row.payment_id),
        station_id: Set(row.station_id),
        terminal_refund_no: Set(row.terminal_refund_no.clone()),
        request_hash: Set(row.request_hash.clone()),
        shift_id: Set(row.shift_id),
        amount_minor: Set(row.amount_minor),
        currency: Set(row.currency.clone()),
        reason: Set(row.reason.clone()),
        status: Set(row.status.clone()),
        needs_approval: Set(row.needs_approval),
        requested_by: Set(row.requested_by.clone()),
        decided_by: Set(None),
        decision_note: Set(None),
        channel_refund_id: Set(None),
        status_reason: Set(row.status_reason.clone()),
        business_day: Set(row.business_day.clone()),
        created_at: Set(row.created_at),
        expires_at: Set(row.expires_at),
        finished_at: Set(None),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(RefundCreated::New(row))
}

pub async fn refund_by_no(
    db: &impl ConnectionTrait,
    refund_no: &str,
) -> Result<Option<pos_refunds::Model>, StoreError> {
    Ok(pos_refunds::Entity::find()
        .filter(pos_refunds::Column::RefundNo.eq(refund_no))
        .one(db)
        .await?)
}

pub async fn refund(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<pos_refunds::Model>, StoreError> {
    Ok(pos_refunds::Entity::find_by_id(id).one(db).await?)
}

/// The refunds of a payment, oldest first.
pub async fn payment_refunds(
    db: &impl ConnectionTrait,
    payment_id: Uuid,
) -> Result<Vec<pos_refunds::Model>, StoreError> {
    Ok(pos_refunds::Entity::find()
        .filter(pos_refunds::Column::PaymentId.eq(payment_id))
        .order_by_asc(pos_refunds::Column::CreatedAt)
        .all(db)
        .await?)
}

/// The manager's decision on a refund waiting for approval, in the caller's transaction
/// (which also signals the refund's workflow). Returns the refund as decided, or `None` when
/// it was no longer waiting (decided before, or expired).
pub async fn decide_refund(
    txn: &sea_orm::DatabaseTransaction,
    refund_id: Uuid,
    approve: bool,
    decided_by: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<Option<pos_refunds::Model>, StoreError> {
    let (status, reason) = if approve {
        ("refunding", format!("approved by {decided_by}"))
    } else {
        ("rejected", format!("rejected by {decided_by}: {note}"))
    };
    let mut update = pos_refunds::Entity::update_many()
        .col_expr(pos_refunds::Column::Status, Expr::value(status))
        .col_expr(pos_refunds::Column::StatusReason, Expr::value(reason))
        .col_expr(pos_refunds::Column::DecidedBy, Expr::value(decided_by))
        .col_expr(pos_refunds::Column::DecisionNote, Expr::value(note));
    if !approve {
        update = update.col_expr(pos_refunds::Column::FinishedAt, Expr::value(now));
    }
    let changed = update
        .filter(pos_refunds::Column::Id.eq(refund_id))
        .filter(pos_refunds::Column::Status.eq("pending_approval"))
        .exec(txn)
        .await?;
    if changed.rows_affected != 1 {
        return Ok(None);
    }
    let row = pos_refunds::Entity::find_by_id(refund_id)
        .one(txn)
        .await?
        .ok_or(StoreError::NotFound("refund"))?;
    if !approve {
        release(txn, &row, false).await?;
    }
    Ok(Some(row))
}

/// Moves the refund's reservation on the payment: into `refunded` when it was paid back,
/// back to what remains otherwise.
async fn release(
    db: &impl ConnectionTrait,
    refund: &pos_refunds::Model,
    paid: bool,
) -> Result<(), StoreError> {
    let mut update = pos_payments::Entity::update_many().col_expr(
        pos_payments::Column::RefundReservedMinor,
        Expr::col(pos_payments::Column::RefundReservedMinor).sub(refund.amount_minor),
    );
    if paid {
        update = update.col_expr(
            pos_payments::Column::RefundedMinor,
            Expr::col(pos_payments::Column::RefundedMinor).add(refund.amount_minor),
        );
    }
    update
        .filter(pos_payments::Column::Id.eq(refund.payment_id))
        .exec(db)
        .await?;
    Ok(())
}

/// The end of a refund: `succeeded`, `failed`, `expired` or `needs_attention`, from
/// `refunding` (or, for `expired`, from `pending_approval`). Applied once; returns the
/// refund as it now stands.
pub async fn finish_refund(
    db: &DatabaseConnection,
    refund_no: &str,
    status: &str,
    channel_refund_id: Option<&str>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<pos_refunds::Model, StoreError> {
    let from = match status {
        "succeeded" | "failed" | "needs_attention" => "refunding",
        "expired" => "pending_approval",
        other => {
            return Err(StoreError::Invalid(format!(
                "{other} does not end a refund"
            )));
        }
    };
    let txn = entities::db::begin_write(db).await?;
    let mut update = pos_refunds::Entity::update_many()
        .col_expr(pos_refunds::Column::Status, Expr::value(status))
        .col_expr(pos_refunds::Column::StatusReason, Expr::value(reason))
        .col_expr(pos_refunds::Column::FinishedAt, Expr::value(now));
    if let Some(id) = channel_refund_id {
        update = update.col_expr(pos_refunds::Column::ChannelRefundId, Expr::value(id));
    }
    let changed = update
        .filter(pos_refunds::Column::RefundNo.eq(refund_no))
        .filter(pos_refunds::Column::Status.eq(from))
        .exec(&txn)
        .await?;
    let row = pos_refunds::Entity::find()
        .filter(pos_refunds::Column::RefundNo.eq(refund_no))
        .one(&txn)
        .await?
        .ok_or(StoreError::NotFound("refund"))?;
    if changed.rows_affected == 1 && status != "needs_attention" {
        release(&txn, &row, status == "succeeded").await?;
    }
    txn.commit().await?;
    Ok(row)
}

/// Books a finished channel sale in the ledger (idempotent by the payment number).
pub async fn book_channel_sale(
    ledger: &Ledger,
    payment: &pos_payments::Model,
    channel: &crate::stations::StationChannel,
) -> Result<Money, StoreError> {
    let amount = stored_money(payment.amount_minor, &payment.currency)?;
    let station = crate::stations::station_account_ids(payment.station_id);
    let accounts = crate::stations::channel_accounts(&station, channel.clearing_account_id);
    let entry = crate::postings::channel_sale(
        &payment.payment_no,
        &accounts,
        amount,
        channel.terms.fee_rate,
        channel.terms.fee_mode,
    )
    .map_err(|e| StoreError::Invalid(e.to_string()))?;
    // The same entry posted again is a replay: the ledger returns the first receipt.
    ledger.post_entry(entry).await?;
    channel
        .terms
        .fee_rate
        .fee_on(amount)
        .map_err(|e| StoreError::Invalid(e.to_string()))
}

/// Books a cash sale: the drawer takes the money (idempotent by the payment number).
pub async fn book_cash_sale(
    ledger: &Ledger,
    payment: &pos_payments::Model,
) -> Result<(), StoreError> {
    let amount = stored_money(payment.amount_minor, &payment.currency)?;
    let station = crate::stations::station_account_ids(payment.station_id);
    let entry =
        crate::postings::cash_sale(&payment.payment_no, station.cash, station.sales, amount);
    ledger.post_entry(entry).await?;
    Ok(())
}

/// Books a refund paid back: through the channel's clearing account for a channel payment,
/// out of the drawer for cash (idempotent by the refund number).
pub async fn book_refund(
    ledger: &Ledger,
    payment: &pos_payments::Model,
    refund: &pos_refunds::Model,
    clearing: Option<Uuid>,
) -> Result<(), StoreError> {
    let amount = stored_money(refund.amount_minor, &refund.currency)?;
    let station = crate::stations::station_account_ids(payment.station_id);
    let entry = match clearing {
        Some(clearing) => crate::postings::channel_refund(
            &payment.payment_no,
            &refund.refund_no,
            &crate::stations::channel_accounts(&station, clearing),
            amount,
        ),
        None => crate::postings::cash_refund(
            &payment.payment_no,
            &refund.refund_no,
            station.cash,
            station.sales,
            amount,
        ),
    };
    ledger.post_entry(entry).await?;
    Ok(())
}

/// Minor units and a stored currency code as money.
pub fn stored_money(minor: i64, currency: &str) -> Result<Money, StoreError> {
    let currency: Currency = currency
        .parse()
        .map_err(|_| StoreError::Invalid(format!("stored currency {currency:?}")))?;
    Ok(Money::from_minor(minor, currency))
}

/// Why paying a refund back did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RefundError {
    /// Try again later (the channel's answer is unknown, or storage is down); the channel
    /// is idempotent on the refund number, so a retry never pays twice.
    #[error("retry: {0}")]
    Retry(String),
    /// Cannot be done as configured.
    #[error("{0}")]
    Permanent(String),
}

impl From<StoreError> for RefundError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Db(_) | StoreError::Ledger(_) => RefundError::Retry(error.to_string()),
            other => RefundError::Permanent(other.to_string()),
        }
    }
}

/// The channel the refunded payment was charged on, if it went through one.
pub async fn payment_channel(
    db: &impl ConnectionTrait,
    refund: &pos_refunds::Model,
) -> Result<Option<ChannelId>, StoreError> {
    let payment = pos_payments::Entity::find_by_id(refund.payment_id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("payment"))?;
    Ok(payment.channel_id.and_then(|c| ChannelId::new(c).ok()))
}

/// Pays back a refund that is `refunding`: through the payment's channel (the adapter given),
/// or out of the drawer for cash; books it and records it. A refund already finished is
/// returned as it is. Returns the refund's final row.
pub async fn execute_refund(
    ledger: &Ledger,
    refund_no: &str,
    channel: Option<&dyn crate::channels::Channel>,
    now: DateTime<Utc>,
) -> Result<pos_refunds::Model, RefundError> {
    use crate::channels::{ChannelError, RefundRequest, RefundResult};
    let db = ledger.db();
    let refund = refund_by_no(db, refund_no)
        .await?
        .ok_or(StoreError::NotFound("refund"))?;
    if refund.status != "refunding" {
        return Ok(refund);
    }
    let payment = pos_payments::Entity::find_by_id(refund.payment_id)
        .one(db)
        .await
        .map_err(StoreError::from)?
        .ok_or(StoreError::NotFound("payment"))?;
    let method = parse_method(&payment.method)?;
    if method == Method::MemberCard {
        let (status, reason) = match crate::cards::refund_to_card(ledger, &payment, &refund).await?
        {
            Ok(()) => ("succeeded", "paid back onto the member card".to_owned()),
            Err(reason) => ("failed", reason),
        };
        return Ok(finish_refund(db, refund_no, status, None, &reason, now).await?);
    }
    if method == Method::PartnerApp {
        // The driver paid the partner: the partner refunds its driver and owes that much
        // less. Nothing leaves the drawer.
        crate::partners::book_refund(ledger, &payment, &refund).await?;
        return Ok(finish_refund(
            db,
            refund_no,
            "succeeded",
            None,
            "deducted from what the partner owes; the partner refunds its driver",
            now,
        )
        .await?);
    }
    if !method.uses_channel() {
        book_refund(ledger, &payment, &refund, None).await?;
        return Ok(finish_refund(
            db,
            refund_no,
            "succeeded",
            None,
            "paid back from the drawer",
            now,
        )
        .await?);
    }
    let (Some(channel_id), Some(out_trade_no)) = (&payment.channel_id, &payment.out_trade_no)
    else {
        return Err(RefundError::Permanent(
            "the payment has no charged channel order to refund".into(),
        ));
    };
    let channel = channel
        .ok_or_else(|| RefundError::Permanent(format!("no adapter for channel {channel_id}")))?;
    let request = RefundRequest {
        out_trade_no: out_trade_no.clone(),
        out_refund_no: refund.refund_no.clone(),
        refund: stored_money(refund.amount_minor, &refund.currency)?,
        total: stored_money(payment.amount_minor, &payment.currency)?,
        reason: refund.reason.clone(),
    };
    match channel.refund(&request).await {
        Ok(RefundResult::Accepted { channel_refund_id }) => {
            let id = ChannelId::new(channel_id.clone())
                .map_err(|e| RefundError::Permanent(e.to_string()))?;
            let terms = crate::stations::channel(db, payment.station_id, &id)
                .await?
                .ok_or(StoreError::NotFound("station channel"))?;
            book_refund(ledger, &payment, &refund, Some(terms.clearing_account_id)).await?;
            Ok(finish_refund(
                db,
                refund_no,
                "succeeded",
                Some(&channel_refund_id),
                &format!("refunded by {channel_id} as {channel_refund_id}"),
                now,
            )
            .await?)
        }
        Ok(RefundResult::Refused { code, message }) => Ok(finish_refund(
            db,
            refund_no,
            "failed",
            None,
            &format!("{channel_id} refused the refund: {code} {message}"),
            now,
        )
        .await?),
        Err(ChannelError::Local { reason }) => Err(RefundError::Permanent(reason)),
        Err(e @ (ChannelError::NotSent { .. } | ChannelError::Unknown { .. })) => {
            Err(RefundError::Retry(e.to_string()))
        }
    }
}

//! Cashiers' shifts: open one per terminal, close it with totals that reconcile.
//!
//! Closing computes, from the shift's own payments and refunds: totals by method and by
//! fuel grade, counts, refunds, the cash the drawer should hold (opening float + cash sales
//! − cash refunds) against what the cashier counted, and the variance. A shift with a
//! payment or refund still unresolved does not close unless a station manager overrides,
//! which is recorded with the reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ledger::money::Money;
use rust_decimal::Decimal;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entities::{pos_card_top_ups, pos_payments, pos_refunds, pos_shifts, pos_terminals};

use crate::model::Method;
use crate::sales::{Sale, SaleLine, parse_method, stored_money};
use crate::stations::StoreError;

/// Opens a shift on the terminal for the cashier. A terminal has one open shift at most:
/// a second open is a conflict (the schema's partial unique index decides under races).
pub async fn open_shift(
    db: &impl ConnectionTrait,
    terminal: &pos_terminals::Model,
    cashier_id: Uuid,
    cashier_name: &str,
    opening_float: Money,
    now: DateTime<Utc>,
) -> Result<pos_shifts::Model, StoreError> {
    if opening_float.amount() < Decimal::ZERO {
        return Err(StoreError::Invalid(
            "the opening float cannot be negative".into(),
        ));
    }
    if let Some(open) = current_shift(db, terminal.id).await? {
        return Err(StoreError::Conflict(format!(
            "the terminal already has an open shift ({}, opened by {})",
            open.id, open.cashier_name
        )));
    }
    let row = pos_shifts::Model {
        id: Uuid::now_v7(),
        station_id: terminal.station_id,
        terminal_id: terminal.id,
        cashier_id,
        cashier_name: cashier_name.to_owned(),
        status: "open".into(),
        currency: opening_float.currency().to_string(),
        opening_float_minor: opening_float
            .minor_units()
            .map_err(|e| StoreError::Invalid(e.to_string()))?,
        opened_at: now,
        closed_at: None,
        declared_cash_minor: None,
        expected_cash_minor: None,
        override_by: None,
        override_reason: None,
        summary: None,
    };
    let inserted = pos_shifts::Entity::insert(pos_shifts::ActiveModel {
        id: Set(row.id),
        station_id: Set(row.station_id),
        terminal_id: Set(row.terminal_id),
        cashier_id: Set(row.cashier_id),
        cashier_name: Set(row.cashier_name.clone()),
        status: Set(row.status.clone()),
        currency: Set(row.currency.clone()),
        opening_float_minor: Set(row.opening_float_minor),
        opened_at: Set(row.opened_at),
        closed_at: Set(None),
        declared_cash_minor: Set(None),
        expected_cash_minor: Set(None),
        override_by: Set(None),
        override_reason: Set(None),
        summary: Set(None),
    })
    .exec_without_returning(db)
    .await;
    match inserted {
        Ok(_) => Ok(row),
        Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(
            "the terminal already has an open shift".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

fn is_unique_violation(error: &sea_orm::DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// The terminal's open shift, if any.
pub async fn current_shift(
    db: &impl ConnectionTrait,
    terminal_id: Uuid,
) -> Result<Option<pos_shifts::Model>, StoreError> {
    Ok(pos_shifts::Entity::find()
        .filter(pos_shifts::Column::TerminalId.eq(terminal_id))
        .filter(pos_shifts::Column::Status.eq("open"))
        .one(db)
        .await?)
}

/// The terminal's open shift, read inside a writing transaction so that a close cannot
/// slip in between: on PostgreSQL the row is locked for share (a close waits for the payment
/// or refund to commit, and then counts it); SQLite's writing transactions are serial anyway.
pub async fn open_shift_in(
    txn: &impl ConnectionTrait,
    terminal_id: Uuid,
) -> Result<Option<pos_shifts::Model>, StoreError> {
    let select = pos_shifts::Entity::find()
        .filter(pos_shifts::Column::TerminalId.eq(terminal_id))
        .filter(pos_shifts::Column::Status.eq("open"));
    let select = if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        select.lock_shared()
    } else {
        select
    };
    Ok(select.one(txn).await?)
}

pub async fn shift(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<pos_shifts::Model>, StoreError> {
    Ok(pos_shifts::Entity::find_by_id(id).one(db).await?)
}

/// A station's shifts opened in `[from, until)`, newest first, at most `limit`.
pub async fn station_shifts(
    db: &impl ConnectionTrait,
    station_id: Uuid,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<pos_shifts::Model>, StoreError> {
    Ok(pos_shifts::Entity::find()
        .filter(pos_shifts::Column::StationId.eq(station_id))
        .filter(pos_shifts::Column::OpenedAt.gte(from))
        .filter(pos_shifts::Column::OpenedAt.lt(until))
        .order_by_desc(pos_shifts::Column::OpenedAt)
        .limit(limit)
        .all(db)
        .await?)
}

/// Count and amount.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub count: u32,
    pub amount: Decimal,
}

impl Tally {
    fn add(&mut self, amount: Decimal) {
        self.count += 1;
        self.amount += amount;
    }
}

/// Fuel sold of one grade.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FuelTally {
    pub count: u32,
    pub litres: Decimal,
    pub amount: Decimal,
}

/// A shift's totals, as closed (or as they stand for an open shift).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShiftSummary {
    pub shift_id: Uuid,
    pub terminal_id: Uuid,
    pub cashier: String,
    pub opened_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub currency: String,
    /// Succeeded payments.
    pub sales: Tally,
    pub by_method: BTreeMap<Method, Tally>,
    /// Fuel lines of succeeded payments by grade (`92`, `95`, `98`, `0`).
    pub by_fuel_grade: BTreeMap<String, FuelTally>,
    /// Shop items of succeeded payments.
    pub non_fuel: Tally,
    /// Refunds paid back in this shift (of this or earlier shifts' sales).
    pub refunds: Tally,
    pub refunds_by_method: BTreeMap<Method, Tally>,
    /// Sales less refunds.
    pub net: Decimal,
    /// Payments that failed or were reversed (nothing taken).
    pub not_taken: Tally,
    /// Payments and refunds whose outcome is still open.
    pub unresolved: u32,
    pub opening_float: Decimal,
    pub cash_sales: Decimal,
    pub cash_refunds: Decimal,
    /// Member-card top-ups taken in cash (money into the drawer that is not a sale).
    #[serde(default)]
    pub card_top_ups: Tally,
    /// Opening float + cash sales + cash top-ups − cash refunds.
    pub expected_cash: Decimal,
    pub declared_cash: Option<Decimal>,
    /// Declared − expected.
    pub variance: Option<Decimal>,
    pub override_by: Option<String>,
    pub override_reason: Option<String>,
}

/// A refund of the shift with the method of the payment it gives back.
pub struct ShiftRefund<'a> {
    pub refund: &'a pos_refunds::Model,
    pub method: Method,
}

/// The pure computation of a shift's totals.
pub fn summarise(
    shift: &pos_shifts::Model,
    payments: &[pos_payments::Model],
    refunds: &[ShiftRefund<'_>],
    top_ups: &[pos_card_top_ups::Model],
    declared_cash: Option<Money>,
) -> Result<ShiftSummary, StoreError> {
    let mut sales = Tally::default();
    let mut by_method: BTreeMap<Method, Tally> = BTreeMap::new();
    let mut by_fuel_grade: BTreeMap<String, FuelTally> = BTreeMap::new();
    let mut non_fuel = Tally::default();
    let mut not_taken = Tally::default();
    let mut unresolved = 0u32;
    let mut cash_sales = Decimal::ZERO;
    for payment in payments {
        let amount = stored_money(payment.amount_minor, &payment.currency)?.amount();
        let method = parse_method(&payment.method)?;
        match payment.status.as_str() {
            "succeeded" => {
                sales.add(amount);
                by_method.entry(method).or_default().add(amount);
                if method == Method::Cash {
                    cash_sales += amount;
                }
                let sale: Sale = serde_json::from_str(&payment.sale)
                    .map_err(|e| StoreError::Invalid(format!("stored sale: {e}")))?;
                for line in &sale.lines {
                    match line {
                        SaleLine::Fuel {
                            grade,
                            litres,
                            amount,
                            ..
                        } => {
                            let key = serde_json::to_value(grade)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_default();
                            let tally = by_fuel_grade.entry(key).or_default();
                            tally.count += 1;
                            tally.litres += *litres;
                            tally.amount += *amount;
                        }
                        SaleLine::Item { amount, .. } => non_fuel.add(*amount),
                    }
                }
            }
            "failed" | "reversed" => not_taken.add(amount),
            _ => unresolved += 1,
        }
    }
    let mut refund_tally = Tally::default();
    let mut refunds_by_method: BTreeMap<Method, Tally> = BTreeMap::new();
    let mut cash_refunds = Decimal::ZERO;
    for ShiftRefund { refund, method } in refunds {
        let amount = stored_money(refund.amount_minor, &refund.currency)?.amount();
        match refund.status.as_str() {
            "succeeded" => {
                refund_tally.add(amount);
                refunds_by_method.entry(*method).or_default().add(amount);
                if *method == Method::Cash {
                    cash_refunds += amount;
                }
            }
            "refunding" | "needs_attention" | "pending_approval" => unresolved += 1,
            _ => {}
        }
    }
    let mut card_top_ups = Tally::default();
    for top_up in top_ups {
        match top_up.status.as_str() {
            "succeeded" => {
                card_top_ups.add(stored_money(top_up.amount_minor, &top_up.currency)?.amount())
            }
            "pending" => unresolved += 1,
            _ => {}
        }
    }
    let opening_float = stored_money(shift.opening_float_minor, &shift.currency)?.amount();
    let expected_cash = opening_float + cash_sales + card_top_ups.amount - cash_refunds;
    let declared = declared_cash.map(|m| m.amount()).or_else(|| {
        shift
            .declared_cash_minor
            .map(|minor| Money::from_minor(minor, ledger::Currency::CNY).amount())
    });
    Ok(ShiftSummary {
        shift_id: shift.id,
        terminal_id: shift.terminal_id,
        cashier: shift.cashier_name.clone(),
        opened_at: shift.opened_at,
        closed_at: shift.closed_at,
        currency: shift.currency.clone(),
        net: sales.amount - refund_tally.amount,
        sales,
        by_method,
        by_fuel_grade,
        non_fuel,
        refunds: refund_tally,
        refunds_by_method,
        not_taken,
        unresolved,
        opening_float,
        cash_sales,
        cash_refunds,
        card_top_ups,
        expected_cash,
        declared_cash: declared,
        variance: declared.map(|d| d - expected_cash),
        override_by: shift.override_by.clone(),
        override_reason: shift.override_reason.clone(),
    })
}

/// Loads what a shift's summary needs and computes it.
pub async fn shift_summary(
    db: &impl ConnectionTrait,
    shift: &pos_shifts::Model,
    declared_cash: Option<Money>,
) -> Result<ShiftSummary, StoreError> {
    let payments = crate::sales::shift_payments(db, shift.id).await?;
    let refunds = pos_refunds::Entity::find()
        .filter(pos_refunds::Column::ShiftId.eq(shift.id))
        .order_by_asc(pos_refunds::Column::CreatedAt)
        .all(db)
        .await?;
    let payment_ids: Vec<Uuid> = refunds.iter().map(|r| r.payment_id).collect();
    let methods: BTreeMap<Uuid, String> = if payment_ids.is_empty() {
        BTreeMap::new()
    } else {
        pos_payments::Entity::find()
            .select_only()
            .column(pos_payments::Column::Id)
            .column(pos_payments::Column::Method)
            .filter(pos_payments::Column::Id.is_in(payment_ids))
            .into_tuple::<(Uuid, String)>()
            .all(db)
            .await?
            .into_iter()
            .collect()
    };
    let mut with_methods = Vec::with_capacity(refunds.len());
    for refund in &refunds {
        let method = methods
            .get(&refund.payment_id)
            .ok_or(StoreError::NotFound("refunded payment"))?;
        with_methods.push(ShiftRefund {
            refund,
            method: parse_method(method)?,
        });
    }
    let top_ups = crate::cards::shift_top_ups(db, shift.id).await?;
    summarise(shift, &payments, &with_methods, &top_ups, declared_cash)
}

/// Why a shift did not close.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CloseRefusal {
    #[error("the shift is already closed")]
    AlreadyClosed,
    #[error(
        "{0} payment(s) or refund(s) of this shift are unresolved; a station manager can close it with an override and a reason"
    )]
    Unresolved(u32),
}

/// A manager's override of unresolved payments at close.
#[derive(Clone, Debug)]
pub struct CloseOverride {
    pub by: String,
    pub reason: String,
}

/// Closes the shift with the cash the cashier counted. Refused while payments or refunds
/// are unresolved, unless overridden; the override is kept on the shift.
pub async fn close_shift(
    db: &impl ConnectionTrait,
    shift: &pos_shifts::Model,
    declared_cash: Money,
    override_: Option<CloseOverride>,
    now: DateTime<Utc>,
) -> Result<Result<ShiftSummary, CloseRefusal>, StoreError> {
    if shift.status != "open" {
        return Ok(Err(CloseRefusal::AlreadyClosed));
    }
    // Lock the shift before counting: payments and refunds being written in it hold it for
    // share, so the count starts once they have committed, and later ones find it closed.
    let locking =
        pos_shifts::Entity::find_by_id(shift.id).filter(pos_shifts::Column::Status.eq("open"));
    let locking = if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        locking.lock_exclusive()
    } else {
        locking
    };
    if locking.one(db).await?.is_none() {
        return Ok(Err(CloseRefusal::AlreadyClosed));
    }
    let mut summary = shift_summary(db, shift, Some(declared_cash)).await?;
    if summary.unresolved > 0 && override_.is_none() {
        return Ok(Err(CloseRefusal::Unresolved(summary.unresolved)));
    }
    summary.closed_at = Some(now);
    summary.override_by = override_.as_ref().map(|o| o.by.clone());
    summary.override_reason = override_.as_ref().map(|o| o.reason.clone());
    let declared = declared_cash
        .minor_units()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let expected = Money::new(summary.expected_cash, declared_cash.currency())
        .and_then(|m| m.minor_units())
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let closed = pos_shifts::Entity::update_many()
        .col_expr(pos_shifts::Column::Status, Expr::value("closed"))
        .col_expr(pos_shifts::Column::ClosedAt, Expr::value(now))
        .col_expr(pos_shifts::Column::DeclaredCashMinor, Expr::value(declared))
        .col_expr(pos_shifts::Column::ExpectedCashMinor, Expr::value(expected))
        .col_expr(
            pos_shifts::Column::OverrideBy,
            Expr::value(summary.override_by.clone()),
        )
        .col_expr(
            pos_shifts::Column::OverrideReason,
            Expr::value(summary.override_reason.clone()),
        )
        .col_expr(
            pos_shifts::Column::Summary,
            Expr::value(serde_json::to_string(&summary).expect("summaries serialise")),
        )
        .filter(pos_shifts::Column::Id.eq(shift.id))
        .filter(pos_shifts::Column::Status.eq("open"))
        .exec(db)
        .await?;
    if closed.rows_affected != 1 {
        return Ok(Err(CloseRefusal::AlreadyClosed));
    }
    Ok(Ok(summary))
}

/// The printable receipt of a shift close, fixed-width for a till printer.
pub fn receipt(summary: &ShiftSummary, station: &str, terminal: &str) -> String {
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: String| {
        out.push_str(&format!("{label:<22}{value:>18}\n"));
    };
    out.push_str(&format!("{:^40}\n", "SHIFT CLOSE"));
    out.push_str(&format!("{station}\n"));
    line(&mut out, "Terminal", terminal.to_owned());
    line(&mut out, "Cashier", summary.cashier.clone());
    line(
        &mut out,
        "Opened",
        summary.opened_at.format("%Y-%m-%d %H:%M").to_string(),
    );
    if let Some(closed) = summary.closed_at {
        line(
            &mut out,
            "Closed",
            closed.format("%Y-%m-%d %H:%M").to_string(),
        );
    }
    out.push_str(&"-".repeat(40));
    out.push('\n');
    line(
        &mut out,
        &format!("Sales ({})", summary.sales.count),
        summary.sales.amount.to_string(),
    );
    for (method, tally) in &summary.by_method {
        let name = crate::sales::method_text(*method);
        line(
            &mut out,
            &format!("  {name} ({})", tally.count),
            tally.amount.to_string(),
        );
    }
    for (grade, tally) in &summary.by_fuel_grade {
        line(
            &mut out,
            &format!("  {grade}# {} L", tally.litres),
            tally.amount.to_string(),
        );
    }
    if summary.non_fuel.count > 0 {
        line(
            &mut out,
            &format!("  shop ({})", summary.non_fuel.count),
            summary.non_fuel.amount.to_string(),
        );
    }
    line(
        &mut out,
        &format!("Refunds ({})", summary.refunds.count),
        format!("-{}", summary.refunds.amount),
    );
    line(&mut out, "Net", summary.net.to_string());
    if summary.card_top_ups.count > 0 {
        line(
            &mut out,
            &format!("Card top-ups ({})", summary.card_top_ups.count),
            summary.card_top_ups.amount.to_string(),
        );
    }
    out.push_str(&"-".repeat(40));
    out.push('\n');
    line(&mut out, "Opening float", summary.opening_float.to_string());
    line(&mut out, "Cash expected", summary.expected_cash.to_string());
    if let Some(declared) = summary.declared_cash {
        line(&mut out, "Cash declared", declared.to_string());
    }
    if let Some(variance) = summary.variance {
        line(&mut out, "Variance", variance.to_string());
    }
    if let (Some(by), Some(reason)) = (&summary.override_by, &summary.override_reason) {
        out.push_str(&format!(
            "Closed by {by} over {} unresolved: {reason}\n",
            summary.unresolved
        ));
    }
    out
}

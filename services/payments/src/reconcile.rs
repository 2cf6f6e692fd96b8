//! T+1 reconciliation of one channel's statement of one day with our payments, the ledger
//! entries it settles, and the exception queue it leaves for people.
//!
//! A run ([`reconcile_day`]) downloads the statement through the channel's adapter, matches
//! it by order number with our payments on that channel (the pure
//! [`crate::statements::reconcile`]), and asks the channel about every order that does not
//! match. The channel's answer settles only what needs nobody: an order both sides now say
//! took nothing (the statement was written before a reversal). Everything else is a real
//! difference and is queued as an exception, with what the statement, our books and the
//! query said; in particular a payment we recorded as failed that the channel took is raised,
//! never booked quietly.
//!
//! The statement's refunds are matched the same way with our refunds, by refund number.
//!
//! Matched orders settle per station: the statement's fees replace our rounding of them
//! (fees deducted at payment) or are booked as owed (fees billed later), the matched
//! refunds of the day are netted, and the net moves from the channel's clearing account to
//! the station's bank. Every entry's idempotency key names the channel, day and station, and
//! exceptions are unique per channel, day and order, so a second run of the same day posts
//! nothing twice and raises nothing twice; it updates the run's row.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use ledger::money::{Currency, Money};
use ledger::{Ledger, LedgerError};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, ExprTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entities::{pos_payments, pos_recon_exceptions, pos_recon_runs, pos_refunds};

use crate::channels::{Channel, ChannelError, QueryResult};
use crate::model::{ChannelId, FeeMode};
use crate::statements::{
    BookedPayment, BookedRefund, Match, RefundMatch, StatementLine, StatementRefund,
};
use crate::stations::StoreError;

/// Why a run did not finish. The statement download and the channel's answers are worth
/// retrying; the run writes nothing until it has the statement.
#[derive(Debug, thiserror::Error)]
pub enum ReconError {
    #[error("the channel: {0}")]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for ReconError {
    fn from(error: sea_orm::DbErr) -> Self {
        ReconError::Store(StoreError::Db(error))
    }
}

impl From<LedgerError> for ReconError {
    fn from(error: LedgerError) -> Self {
        ReconError::Store(StoreError::Ledger(error))
    }
}

/// What kind of difference an exception is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    /// The channel took money on an order we have no payment for.
    MissingHere,
    /// We booked a sale the channel's statement does not have.
    MissingThere,
    AmountMismatch,
    /// One side says paid, the other not.
    StatusMismatch,
}

impl ExceptionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionKind::MissingHere => "missing_here",
            ExceptionKind::MissingThere => "missing_there",
            ExceptionKind::AmountMismatch => "amount_mismatch",
            ExceptionKind::StatusMismatch => "status_mismatch",
        }
    }
}

/// The statement day of a business day `YYYY-MM-DD`.
pub fn parse_day(day: &str) -> Result<NaiveDate, StoreError> {
    NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|_| StoreError::Invalid(format!("{day:?} is not a day (YYYY-MM-DD)")))
}

fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

fn fen(money: Money) -> i64 {
    money.minor_units().expect("channel amounts fit in fen")
}

/// One station's settlement of the day on the channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationSettlement {
    pub station_id: Uuid,
    pub matched: u32,
    pub gross_minor: i64,
    /// Fees as the statement charged them.
    pub fees_minor: i64,
    /// Our fees booked with the sales (zero for fees billed later).
    pub booked_fees_minor: i64,
    /// The station's channel refunds of the day, netted by the channel.
    pub refunds_minor: i64,
    /// What moved from clearing to the bank (negative: from the bank to the channel).
    pub net_minor: i64,
    /// Set when an entry of the day was posted before with other amounts: the first one
    /// stands and finance must look.
    pub warning: Option<String>,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct ReconReport {
    pub run: pos_recon_runs::Model,
    /// Every comparison of the run, sorted by order number.
    pub matches: Vec<Match>,
    pub settlements: Vec<StationSettlement>,
    /// The day's exceptions as they stand after the run (open and resolved; the first
    /// [`EXCEPTION_PAGE_MAX`], the run's row counts them all).
    pub exceptions: Vec<pos_recon_exceptions::Model>,
}

/// One difference to store.
struct Draft {
    /// Empty for a payment's difference.
    refund_no: String,
    kind: ExceptionKind,
    station_id: Option<Uuid>,
    out_trade_no: String,
    payment_no: Option<String>,
    channel_txn_id: Option<String>,
    ours_minor: Option<i64>,
    theirs_minor: Option<i64>,
    detail: String,
    /// Set when the channel's answer explains the difference.
    resolved: Option<String>,
}

/// Our payments on the channel that the statement is matched with: those of the business
/// day, and those of any day whose order numbers the statement lists (a charge taken just
/// after midnight is on the next day's statement).
async fn our_payments(
    db: &impl ConnectionTrait,
    channel: &ChannelId,
    day: &str,
    statement: &[StatementLine],
) -> Result<BTreeMap<String, pos_payments::Model>, StoreError> {
    let mut out = BTreeMap::new();
    let of_day = pos_payments::Entity::find()
        .filter(pos_payments::Column::ChannelId.eq(channel.as_str()))
        .filter(pos_payments::Column::BusinessDay.eq(day))
        .filter(pos_payments::Column::OutTradeNo.is_not_null())
        .all(db)
        .await?;
    for p in of_day {
        let no = p.out_trade_no.clone().expect("filtered on not null");
        out.insert(no, p);
    }
    let listed: Vec<String> = statement
        .iter()
        .map(|l| l.out_trade_no.clone())
        .filter(|no| !out.contains_key(no))
        .collect();
    for chunk in listed.chunks(500) {
        let found = pos_payments::Entity::find()
            .filter(pos_payments::Column::ChannelId.eq(channel.as_str()))
            .filter(pos_payments::Column::OutTradeNo.is_in(chunk.iter().cloned()))
            .all(db)
            .await?;
        for p in found {
            let no = p.out_trade_no.clone().expect("matched on the order number");
            out.insert(no, p);
        }
    }
    Ok(out)
}

fn booked(
    payments: &BTreeMap<String, pos_payments::Model>,
) -> Result<Vec<BookedPayment>, StoreError> {
    payments
        .iter()
        .map(|(no, p)| {
            Ok(BookedPayment {
                out_trade_no: no.clone(),
                amount: crate::sales::stored_money(p.amount_minor, &p.currency)?,
                succeeded: p.status == "succeeded",
            })
        })
        .collect()
}

fn query_text(answer: &Result<QueryResult, ChannelError>) -> String {
    match answer {
        Ok(QueryResult::Succeeded {
            channel_txn_id,
            amount,
        }) => format!("the channel's query says paid ({amount}, {channel_txn_id})"),
        Ok(QueryResult::Pending) => "the channel's query says not paid yet".into(),
        Ok(QueryResult::NotCharged { reason }) => {
            format!("the channel's query says nothing was taken ({reason})")
        }
        Ok(QueryResult::Reversed) => "the channel's query says reversed".into(),
        Err(e) => format!("the channel could not be queried: {e}"),
    }
}

fn nothing_taken(answer: &Result<QueryResult, ChannelError>) -> bool {
    matches!(
        answer,
        Ok(QueryResult::NotCharged { .. } | QueryResult::Reversed)
    )
}

/// Turns a difference into an exception, with the channel's answer to a query on it.
async fn draft(
    channel: &dyn Channel,
    m: &Match,
    ours: &BTreeMap<String, pos_payments::Model>,
    theirs: &BTreeMap<&str, &StatementLine>,
) -> Option<Draft> {
    let (kind, no) = match m {
        Match::Matched { .. } => return None,
        Match::MissingHere { out_trade_no, .. } => (ExceptionKind::MissingHere, out_trade_no),
        Match::MissingThere { out_trade_no, .. } => (ExceptionKind::MissingThere, out_trade_no),
        Match::AmountMismatch { out_trade_no, .. } => (ExceptionKind::AmountMismatch, out_trade_no),
        Match::StatusMismatch { out_trade_no, .. } => (ExceptionKind::StatusMismatch, out_trade_no),
    };
    let payment = ours.get(no.as_str());
    let line = theirs.get(no.as_str());
    let answer = channel.query(no).await;
    let ours_text = match payment {
        Some(p) => format!(
            "our payment {} is {} for {} fen",
            p.payment_no, p.status, p.amount_minor
        ),
        None => "we have no payment for the order".into(),
    };
    let theirs_text = match line {
        Some(l) if l.paid => format!("the statement has it paid for {}", l.amount),
        Some(l) => format!("the statement has it not paid ({})", l.amount),
        None => "the statement does not have it".into(),
    };
    let ours_paid = payment.is_some_and(|p| p.status == "succeeded");
    // Only a difference on which both sides now agree that nothing was taken needs nobody.
    let resolved = (!ours_paid && nothing_taken(&answer)).then(|| {
        "the channel has since reversed or closed the order and our books took nothing".into()
    });
    let consequence = match (kind, ours_paid, &answer) {
        (_, false, Ok(QueryResult::Succeeded { .. })) => {
            "; the channel holds the customer's money on an order our books do not count as a sale: refund the customer or book the sale"
        }
        (_, true, Ok(QueryResult::NotCharged { .. } | QueryResult::Reversed)) => {
            "; we booked a sale the channel does not have: the customer may not have paid"
        }
        (ExceptionKind::MissingThere, true, Ok(QueryResult::Succeeded { .. })) => {
            "; taken but not on this statement: expect it on another day's settlement"
        }
        _ => "",
    };
    Some(Draft {
        refund_no: String::new(),
        kind,
        station_id: payment.map(|p| p.station_id),
        out_trade_no: no.clone(),
        payment_no: payment.map(|p| p.payment_no.clone()),
        channel_txn_id: line
            .map(|l| l.channel_txn_id.clone())
            .filter(|t| !t.is_empty())
            .or_else(|| payment.and_then(|p| p.channel_txn_id.clone())),
        ours_minor: payment.map(|p| p.amount_minor),
        theirs_minor: line.map(|l| fen(l.amount)),
        detail: format!(
            "{ours_text}; {theirs_text}; {}{consequence}",
            query_text(&answer)
        ),
        resolved,
    })
}

async fn store_exception(
    db: &impl ConnectionTrait,
    channel: &ChannelId,
    day: &str,
    d: &Draft,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let resolved = d.resolved.is_some();
    pos_recon_exceptions::Entity::insert(pos_recon_exceptions::ActiveModel {
        id: Set(Uuid::now_v7()),
        channel_id: Set(channel.to_string()),
        statement_day: Set(day.to_owned()),
        subject: Set(if d.refund_no.is_empty() {
            "payment"
        } else {
            "refund"
        }
        .to_owned()),
        kind: Set(d.kind.as_str().to_owned()),
        station_id: Set(d.station_id),
        out_trade_no: Set(d.out_trade_no.clone()),
        refund_no: Set(d.refund_no.clone()),
        payment_no: Set(d.payment_no.clone()),
        channel_txn_id: Set(d.channel_txn_id.clone()),
        our_amount_minor: Set(d.ours_minor),
        their_amount_minor: Set(d.theirs_minor),
        currency: Set(Currency::CNY.to_string()),
        detail: Set(d.detail.clone()),
        status: Set(if resolved { "resolved" } else { "open" }.to_owned()),
        resolution_note: Set(d.resolved.clone()),
        resolved_by: Set(resolved.then(|| "reconciliation".to_owned())),
        created_at: Set(now),
        updated_at: Set(now),
        resolved_at: Set(resolved.then_some(now)),
    })
    .on_conflict(
        OnConflict::columns([
            pos_recon_exceptions::Column::ChannelId,
            pos_recon_exceptions::Column::StatementDay,
            pos_recon_exceptions::Column::OutTradeNo,
            pos_recon_exceptions::Column::RefundNo,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// Posts one entry; an entry of the same key with other content was posted by an earlier
/// run and stands, reported back as a warning.
async fn post(ledger: &Ledger, entry: ledger::NewEntry) -> Result<Option<String>, ReconError> {
    match ledger.post_entry(entry).await {
        Ok(_) => Ok(None),
        Err(LedgerError::IdempotencyConflict { key }) => Ok(Some(format!(
            "{key} was posted before with other amounts; the first posting stands"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Settles one station's matched orders of the day on the channel.
async fn settle_station(
    ledger: &Ledger,
    channel: &ChannelId,
    day: &str,
    station_id: Uuid,
    matched: &[(&pos_payments::Model, &StatementLine)],
    refunds: i64,
) -> Result<StationSettlement, ReconError> {
    let db = ledger.db();
    let terms = crate::stations::channel(db, station_id, channel)
        .await?
        .ok_or(StoreError::NotFound("station channel"))?;
    let station = crate::stations::station_account_ids(station_id);
    let accounts = crate::stations::channel_accounts(&station, terms.clearing_account_id);
    let mut gross = 0i64;
    let mut fees = 0i64;
    let mut booked_fees = 0i64;
    for (payment, line) in matched {
        let amount = crate::sales::stored_money(payment.amount_minor, &payment.currency)?;
        gross += payment.amount_minor;
        fees += fen(line.fee);
        if terms.terms.fee_mode == FeeMode::DeductedAtPayment {
            // The same rounding the sale's entry used.
            let fee = terms
                .terms
                .fee_rate
                .fee_on(amount)
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            booked_fees += fen(fee);
        }
    }
    let mut warnings = Vec::new();
    let cny = |minor: i64| Money::from_minor(minor, Currency::CNY);
    let net = match terms.terms.fee_mode {
        FeeMode::DeductedAtPayment => {
            let entry = crate::postings::fee_adjustment(
                channel.as_str(),
                day,
                station_id,
                &accounts,
                cny(booked_fees),
                cny(fees),
            )
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
            if let Some(entry) = entry {
                warnings.extend(post(ledger, entry).await?);
            }
            gross - fees - refunds
        }
        FeeMode::BilledLater => {
            if fees > 0 {
                let owner = ledger.account(accounts.clearing).await?.owner_org;
                let payable =
                    crate::stations::fees_payable_account(ledger, station_id, &owner, channel)
                        .await?;
                let entry = crate::postings::fees_billed(
                    channel.as_str(),
                    day,
                    station_id,
                    accounts.fees,
                    payable,
                    cny(fees),
                );
                if let Some(entry) = entry {
                    warnings.extend(post(ledger, entry).await?);
                }
            }
            gross - refunds
        }
    };
    if let Some(entry) =
        crate::postings::station_settlement(channel.as_str(), day, station_id, &accounts, cny(net))
    {
        warnings.extend(post(ledger, entry).await?);
    }
    Ok(StationSettlement {
        station_id,
        matched: u32::try_from(matched.len()).expect("a day's orders fit in u32"),
        gross_minor: gross,
        fees_minor: fees,
        booked_fees_minor: booked_fees,
        refunds_minor: refunds,
        net_minor: net,
        warning: (!warnings.is_empty()).then(|| warnings.join("; ")),
    })
}

/// One of our refunds with the payment it gives back.
struct OurRefund {
    refund: pos_refunds::Model,
    payment: pos_payments::Model,
}

/// Our refunds through the channel that the statement's refunds are matched with: those
/// paid back during the day, those of the day still in flight, and those of any day whose
/// numbers the statement lists.
async fn our_refunds(
    db: &impl ConnectionTrait,
    channel: &ChannelId,
    day: &str,
    statement: &[StatementRefund],
) -> Result<BTreeMap<String, OurRefund>, StoreError> {
    let (start, end) = crate::daily::day_bounds(day)?;
    let of_day = Condition::any()
        .add(
            Condition::all()
                .add(pos_refunds::Column::FinishedAt.gte(start))
                .add(pos_refunds::Column::FinishedAt.lt(end)),
        )
        .add(
            Condition::all()
                .add(pos_refunds::Column::BusinessDay.eq(day))
                .add(pos_refunds::Column::Status.is_in(["refunding", "needs_attention"])),
        );
    let mut refunds = pos_refunds::Entity::find().filter(of_day).all(db).await?;
    let listed: Vec<String> = statement.iter().map(|r| r.out_refund_no.clone()).collect();
    for chunk in listed.chunks(500) {
        refunds.extend(
            pos_refunds::Entity::find()
                .filter(pos_refunds::Column::RefundNo.is_in(chunk.iter().cloned()))
                .all(db)
                .await?,
        );
    }
    let ids: Vec<Uuid> = refunds
        .iter()
        .map(|r| r.payment_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut payments = BTreeMap::new();
    for chunk in ids.chunks(500) {
        let found = pos_payments::Entity::find()
            .filter(pos_payments::Column::Id.is_in(chunk.iter().copied()))
            .filter(pos_payments::Column::ChannelId.eq(channel.as_str()))
            .filter(pos_payments::Column::OutTradeNo.is_not_null())
            .all(db)
            .await?;
        payments.extend(found.into_iter().map(|p| (p.id, p)));
    }
    Ok(refunds
        .into_iter()
        .filter_map(|refund| {
            let payment = payments.get(&refund.payment_id)?.clone();
            Some((refund.refund_no.clone(), OurRefund { refund, payment }))
        })
        .collect())
}

fn booked_refunds(ours: &BTreeMap<String, OurRefund>) -> Result<Vec<BookedRefund>, StoreError> {
    ours.iter()
        .map(|(no, r)| {
            Ok(BookedRefund {
                out_refund_no: no.clone(),
                out_trade_no: r.payment.out_trade_no.clone().unwrap_or_default(),
                amount: crate::sales::stored_money(r.refund.amount_minor, &r.refund.currency)?,
                succeeded: r.refund.status == "succeeded",
            })
        })
        .collect()
}

/// Turns a refund's difference into an exception. The channels answer no query on refunds
/// here, so every one goes to a person.
fn refund_draft(
    m: &RefundMatch,
    ours: &BTreeMap<String, OurRefund>,
    theirs: &BTreeMap<&str, &StatementRefund>,
) -> Option<Draft> {
    let (kind, no) = match m {
        RefundMatch::Matched { .. } => return None,
        RefundMatch::MissingHere { out_refund_no, .. } => {
            (ExceptionKind::MissingHere, out_refund_no)
        }
        RefundMatch::MissingThere { out_refund_no, .. } => {
            (ExceptionKind::MissingThere, out_refund_no)
        }
        RefundMatch::AmountMismatch { out_refund_no, .. } => {
            (ExceptionKind::AmountMismatch, out_refund_no)
        }
        RefundMatch::StatusMismatch { out_refund_no, .. } => {
            (ExceptionKind::StatusMismatch, out_refund_no)
        }
    };
    let mine = ours.get(no.as_str());
    let line = theirs.get(no.as_str());
    let ours_text = match mine {
        Some(r) => format!(
            "our refund {} of payment {} is {} for {} fen",
            r.refund.refund_no, r.payment.payment_no, r.refund.status, r.refund.amount_minor
        ),
        None => "we have no refund under this number".into(),
    };
    let theirs_text = match line {
        Some(l) if l.succeeded => format!("the statement has it paid back: {}", l.amount),
        Some(l) => format!("the statement has it not paid back ({})", l.amount),
        None => "the statement does not have it".into(),
    };
    Some(Draft {
        refund_no: no.clone(),
        kind,
        station_id: mine.map(|r| r.refund.station_id),
        out_trade_no: mine
            .and_then(|r| r.payment.out_trade_no.clone())
            .or_else(|| line.map(|l| l.out_trade_no.clone()))
            .unwrap_or_default(),
        payment_no: mine.map(|r| r.payment.payment_no.clone()),
        channel_txn_id: line
            .map(|l| l.channel_refund_id.clone())
            .filter(|t| !t.is_empty())
            .or_else(|| mine.and_then(|r| r.refund.channel_refund_id.clone())),
        ours_minor: mine.map(|r| r.refund.amount_minor),
        theirs_minor: line.map(|l| fen(l.amount)),
        detail: format!("refund: {ours_text}; {theirs_text}"),
        resolved: None,
    })
}

/// Reconciles the channel's statement of `day` with our books: matches, queries what does
/// not match, queues the exceptions, settles the matched orders per station and records the
/// run. Safe to run again for the same channel and day.
pub async fn reconcile_day(
    ledger: &Ledger,
    channel_id: &ChannelId,
    channel: &dyn Channel,
    day: NaiveDate,
    now: DateTime<Utc>,
) -> Result<ReconReport, ReconError> {
    let db = ledger.db();
    let day_str = day_text(day);
    let file = channel.statement(day).await?;
    let statement = &file.lines;
    let ours = our_payments(db, channel_id, &day_str, statement).await?;
    let matches = crate::statements::reconcile(&booked(&ours)?, statement);
    let theirs: BTreeMap<&str, &StatementLine> = statement
        .iter()
        .map(|l| (l.out_trade_no.as_str(), l))
        .collect();

    let mut resolved_by_query = 0i64;
    for m in &matches {
        if let Some(d) = draft(channel, m, &ours, &theirs).await {
            resolved_by_query += i64::from(d.resolved.is_some());
            store_exception(db, channel_id, &day_str, &d, now).await?;
        }
    }

    let mut by_station: BTreeMap<Uuid, Vec<(&pos_payments::Model, &StatementLine)>> =
        BTreeMap::new();
    let mut matched_nos = Vec::new();
    for m in &matches {
        if let Match::Matched { out_trade_no, .. } = m {
            let payment = &ours[out_trade_no];
            let line = theirs[out_trade_no.as_str()];
            by_station
                .entry(payment.station_id)
                .or_default()
                .push((payment, line));
            matched_nos.push(out_trade_no.clone());
        }
    }
    // Refunds: matched ones are netted from the station's settlement (a station with only
    // refunds on the day settles too); the others are queued.
    let our_refunds = our_refunds(db, channel_id, &day_str, &file.refunds).await?;
    let refund_matches =
        crate::statements::reconcile_refunds(&booked_refunds(&our_refunds)?, &file.refunds);
    let their_refunds: BTreeMap<&str, &StatementRefund> = file
        .refunds
        .iter()
        .map(|r| (r.out_refund_no.as_str(), r))
        .collect();
    let mut refunds: BTreeMap<Uuid, i64> = BTreeMap::new();
    let mut refunds_matched = 0i64;
    for m in &refund_matches {
        match m {
            RefundMatch::Matched {
                out_refund_no,
                amount,
            } => {
                let station = our_refunds[out_refund_no].refund.station_id;
                *refunds.entry(station).or_insert(0) += fen(*amount);
                refunds_matched += 1;
            }
            other => {
                if let Some(d) = refund_draft(other, &our_refunds, &their_refunds) {
                    store_exception(db, channel_id, &day_str, &d, now).await?;
                }
            }
        }
    }
    for station_id in refunds.keys() {
        by_station.entry(*station_id).or_default();
    }
    let mut settlements = Vec::with_capacity(by_station.len());
    for (station_id, matched) in &by_station {
        let refunded = refunds.get(station_id).copied().unwrap_or(0);
        settlements.push(
            settle_station(ledger, channel_id, &day_str, *station_id, matched, refunded).await?,
        );
    }
    // An order another day's run could not find is matched here: that exception is answered.
    for chunk in matched_nos.chunks(500) {
        pos_recon_exceptions::Entity::update_many()
            .col_expr(
                pos_recon_exceptions::Column::Status,
                Expr::value("resolved"),
            )
            .col_expr(
                pos_recon_exceptions::Column::ResolutionNote,
                Expr::value(format!("matched on the statement of {day_str}")),
            )
            .col_expr(
                pos_recon_exceptions::Column::ResolvedBy,
                Expr::value("reconciliation"),
            )
            .col_expr(pos_recon_exceptions::Column::ResolvedAt, Expr::value(now))
            .col_expr(pos_recon_exceptions::Column::UpdatedAt, Expr::value(now))
            .filter(pos_recon_exceptions::Column::ChannelId.eq(channel_id.as_str()))
            .filter(pos_recon_exceptions::Column::StatementDay.ne(day_str.as_str()))
            .filter(pos_recon_exceptions::Column::Kind.eq("missing_there"))
            .filter(pos_recon_exceptions::Column::RefundNo.eq(""))
            .filter(pos_recon_exceptions::Column::Status.eq("open"))
            .filter(pos_recon_exceptions::Column::OutTradeNo.is_in(chunk.iter().cloned()))
            .exec(db)
            .await?;
    }

    let exceptions = list_exceptions(
        db,
        &ExceptionFilter {
            channel: Some(channel_id.clone()),
            day: Some(day_str.clone()),
            ..ExceptionFilter::default()
        },
    )
    .await?;
    let open = pos_recon_exceptions::Entity::find()
        .filter(pos_recon_exceptions::Column::ChannelId.eq(channel_id.as_str()))
        .filter(pos_recon_exceptions::Column::StatementDay.eq(day_str.as_str()))
        .filter(pos_recon_exceptions::Column::Status.eq("open"))
        .count(db)
        .await? as i64;
    let matched = matched_nos.len() as i64 + refunds_matched;
    let lines = (statement.len() + file.refunds.len()) as i64;
    let statement_total: i64 = statement
        .iter()
        .filter(|l| l.paid)
        .map(|l| fen(l.amount))
        .sum();
    let statement_fees: i64 = statement
        .iter()
        .filter(|l| l.paid)
        .map(|l| fen(l.fee))
        .sum();
    let settled: i64 = settlements.iter().map(|s| s.net_minor).sum();
    let detail = serde_json::json!({
        "settlements": settlements,
        "refunds_matched": refunds_matched,
    })
    .to_string();
    let status = if open == 0 { "balanced" } else { "exceptions" };
    let row = pos_recon_runs::ActiveModel {
        id: Set(Uuid::now_v7()),
        channel_id: Set(channel_id.to_string()),
        statement_day: Set(day_str.clone()),
        status: Set(status.to_owned()),
        statement_lines: Set(lines),
        matched: Set(matched),
        exceptions: Set(open),
        resolved_by_query: Set(resolved_by_query),
        statement_total_minor: Set(statement_total),
        statement_fees_minor: Set(statement_fees),
        settled_minor: Set(settled),
        runs: Set(1),
        detail: Set(detail.clone()),
        started_at: Set(now),
        finished_at: Set(now),
    };
    let inserted = pos_recon_runs::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                pos_recon_runs::Column::ChannelId,
                pos_recon_runs::Column::StatementDay,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    if inserted == 0 {
        use pos_recon_runs::Column as C;
        pos_recon_runs::Entity::update_many()
            .col_expr(C::Status, Expr::value(status))
            .col_expr(C::StatementLines, Expr::value(lines))
            .col_expr(C::Matched, Expr::value(matched))
            .col_expr(C::Exceptions, Expr::value(open))
            .col_expr(C::ResolvedByQuery, Expr::value(resolved_by_query))
            .col_expr(C::StatementTotalMinor, Expr::value(statement_total))
            .col_expr(C::StatementFeesMinor, Expr::value(statement_fees))
            .col_expr(C::SettledMinor, Expr::value(settled))
            .col_expr(C::Runs, Expr::col(C::Runs).add(1))
            .col_expr(C::Detail, Expr::value(detail))
            .col_expr(C::StartedAt, Expr::value(now))
            .col_expr(C::FinishedAt, Expr::value(now))
            .filter(C::ChannelId.eq(channel_id.as_str()))
            .filter(C::StatementDay.eq(day_str.as_str()))
            .exec(db)
            .await?;
    }
    let run = recon_run(db, channel_id, &day_str)
        .await?
        .ok_or(StoreError::NotFound("reconciliation run"))?;
    Ok(ReconReport {
        run,
        matches,
        settlements,
        exceptions,
    })
}

/// The run of a channel's statement day, if it ran.
pub async fn recon_run(
    db: &impl ConnectionTrait,
    channel: &ChannelId,
    day: &str,
) -> Result<Option<pos_recon_runs::Model>, StoreError> {
    Ok(pos_recon_runs::Entity::find()
        .filter(pos_recon_runs::Column::ChannelId.eq(channel.as_str()))
        .filter(pos_recon_runs::Column::StatementDay.eq(day))
        .one(db)
        .await?)
}

/// The runs of a statement day, every channel, by channel.
pub async fn recon_runs(
    db: &impl ConnectionTrait,
    day: &str,
) -> Result<Vec<pos_recon_runs::Model>, StoreError> {
    Ok(pos_recon_runs::Entity::find()
        .filter(pos_recon_runs::Column::StatementDay.eq(day))
        .order_by_asc(pos_recon_runs::Column::ChannelId)
        .limit(1_000)
        .all(db)
        .await?)
}

/// Which exceptions to list. Every field narrows; the default lists the first page of all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionFilter {
    pub channel: Option<ChannelId>,
    /// Statement day `YYYY-MM-DD`.
    pub day: Option<String>,
    /// `open` or `resolved`.
    pub status: Option<String>,
    pub station_id: Option<Uuid>,
    /// Rows to skip, for paging.
    pub offset: u64,
    /// At most this many (default and cap 500).
    pub limit: Option<u64>,
}

/// The most exceptions one page lists.
pub const EXCEPTION_PAGE_MAX: u64 = 500;

/// The exception queue, oldest day first, then by channel and order number.
pub async fn list_exceptions(
    db: &impl ConnectionTrait,
    filter: &ExceptionFilter,
) -> Result<Vec<pos_recon_exceptions::Model>, StoreError> {
    use pos_recon_exceptions::Column as C;
    let mut condition = Condition::all();
    if let Some(channel) = &filter.channel {
        condition = condition.add(C::ChannelId.eq(channel.as_str()));
    }
    if let Some(day) = &filter.day {
        condition = condition.add(C::StatementDay.eq(day.as_str()));
    }
    if let Some(status) = &filter.status {
        if !matches!(status.as_str(), "open" | "resolved") {
            return Err(StoreError::Invalid(format!(
                "{status:?} is not an exception status (open, resolved)"
            )));
        }
        condition = condition.add(C::Status.eq(status.as_str()));
    }
    if let Some(station) = filter.station_id {
        condition = condition.add(C::StationId.eq(station));
    }
    Ok(pos_recon_exceptions::Entity::find()
        .filter(condition)
        .order_by_asc(C::StatementDay)
        .order_by_asc(C::ChannelId)
        .order_by_asc(C::OutTradeNo)
        .offset(filter.offset)
        .limit(Ord::min(
            filter.limit.unwrap_or(EXCEPTION_PAGE_MAX),
            EXCEPTION_PAGE_MAX,
        ))
        .all(db)
        .await?)
}

pub async fn exception(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<pos_recon_exceptions::Model>, StoreError> {
    Ok(pos_recon_exceptions::Entity::find_by_id(id).one(db).await?)
}

/// Resolves an open exception with a note saying what was done (a refund to the customer, a
/// sale booked by hand, the channel's confirmation). Idempotent: an exception already
/// resolved is returned as it stands, with its first resolution.
pub async fn resolve_exception(
    db: &impl ConnectionTrait,
    id: Uuid,
    resolved_by: &str,
    note: &str,
    now: DateTime<Utc>,
) -> Result<pos_recon_exceptions::Model, StoreError> {
    let note = note.trim();
    let resolved_by = resolved_by.trim();
    if note.is_empty() || note.chars().count() > 1_000 {
        return Err(StoreError::Invalid(
            "a resolution needs a note of 1 to 1000 characters".into(),
        ));
    }
    if resolved_by.is_empty() {
        return Err(StoreError::Invalid(
            "a resolution needs who resolved it".into(),
        ));
    }
    use pos_recon_exceptions::Column as C;
    pos_recon_exceptions::Entity::update_many()
        .col_expr(C::Status, Expr::value("resolved"))
        .col_expr(C::ResolutionNote, Expr::value(note))
        .col_expr(C::ResolvedBy, Expr::value(resolved_by))
        .col_expr(C::ResolvedAt, Expr::value(now))
        .col_expr(C::UpdatedAt, Expr::value(now))
        .filter(C::Id.eq(id))
        .filter(C::Status.eq("open"))
        .exec(db)
        .await?;
    exception(db, id)
        .await?
        .ok_or(StoreError::NotFound("reconciliation exception"))
}

/// Records that a channel's statement day could not be reconciled (the file never came, the
/// party never answered) so that finance sees the gap. A day reconciled before keeps its
/// run as it was; the failure stays in the workflow's history.
pub async fn record_failed_run(
    db: &impl ConnectionTrait,
    channel: &ChannelId,
    day: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<pos_recon_runs::Model, StoreError> {
    use pos_recon_runs::Column as C;
    let detail = serde_json::json!({ "failure": reason }).to_string();
    let inserted = pos_recon_runs::Entity::insert(pos_recon_runs::ActiveModel {
        id: Set(Uuid::now_v7()),
        channel_id: Set(channel.to_string()),
        statement_day: Set(day.to_owned()),
        status: Set("failed".into()),
        statement_lines: Set(0),
        matched: Set(0),
        exceptions: Set(0),
        resolved_by_query: Set(0),
        statement_total_minor: Set(0),
        statement_fees_minor: Set(0),
        settled_minor: Set(0),
        runs: Set(1),
        detail: Set(detail.clone()),
        started_at: Set(now),
        finished_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([C::ChannelId, C::StatementDay])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    if inserted == 0 {
        pos_recon_runs::Entity::update_many()
            .col_expr(C::Runs, Expr::col(C::Runs).add(1))
            .col_expr(C::Detail, Expr::value(detail))
            .col_expr(C::FinishedAt, Expr::value(now))
            .filter(C::ChannelId.eq(channel.as_str()))
            .filter(C::StatementDay.eq(day))
            .filter(C::Status.eq("failed"))
            .exec(db)
            .await?;
    }
    recon_run(db, channel, day)
        .await?
        .ok_or(StoreError::NotFound("reconciliation run"))
}

/// The most statement days one scheduled reconciliation catches up after downtime.
pub const CATCH_UP_DAYS_MAX: usize = 7;

/// The statement days a scheduled run aimed at `day` reconciles: every day after the
/// channel's last run up to `day` (the latest [`CATCH_UP_DAYS_MAX`] of them), so that ticks
/// missed while no scheduler ran leave no statement unread; just `day` for a channel never
/// reconciled before or already up to date.
pub async fn days_to_reconcile(
    db: &impl ConnectionTrait,
    channel: &ChannelId,
    day: NaiveDate,
) -> Result<Vec<NaiveDate>, StoreError> {
    let last = pos_recon_runs::Entity::find()
        .filter(pos_recon_runs::Column::ChannelId.eq(channel.as_str()))
        .order_by_desc(pos_recon_runs::Column::StatementDay)
        .one(db)
        .await?
        .and_then(|r| parse_day(&r.statement_day).ok());
    let Some(last) = last.filter(|last| *last < day) else {
        return Ok(vec![day]);
    };
    let mut days: Vec<NaiveDate> = last.iter_days().skip(1).take_while(|d| *d <= day).collect();
    let skip = days.len().saturating_sub(CATCH_UP_DAYS_MAX);
    days.drain(..skip);
    Ok(days)
}

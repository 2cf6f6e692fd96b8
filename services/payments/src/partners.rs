//! Partner-app orders (合作方订单): a partner (a freight or fleet platform whose drivers pay
//! in its app) pushes an order its driver already paid to one of a station's terminals; the
//! till prints the ticket and the order counts in the shift like any sale.
//!
//! **Contracts.** A partner pushes only to stations that signed it on
//! ([`sign_contract`], one contract per partner and station, enabled or disabled). The terms
//! are the partner's commission (a rate, deducted from what the partner owes), the
//! settlement cycle (the partner pays a business day's orders within N days) and the largest
//! order it may push. Signing opens two ledger accounts of the station, with ids derived
//! from the station and the partner: what the partner owes the station (an asset) and the
//! partner's commissions (an expense).
//!
//! **Money.** The driver paid the partner, so the money is the partner's to hand over: an
//! order debits the partner's receivable and credits the station's sales; a commission moves
//! from the receivable to the commission expense in the same entry, so the receivable holds
//! exactly what the partner will pay. Nothing passes through an account of the platform. A
//! refund at the till gives the sale back against the receivable (the partner refunds its
//! driver, and is told by a webhook event); it never pays out of the drawer. The commission
//! is the partner's for bringing the customer and, like the channels' fees here, is not
//! given back by a refund.
//!
//! **Writes.** An order is a till payment (`pos_payments`, method `partner_app`) in the
//! terminal's open shift plus a `partner_orders` row, written in one transaction that holds
//! the shift open; the partner's order number is unique per partner, so a retried push finds
//! its order (the same content is the same order, other content a conflict). The ledger
//! entry follows, idempotent by the payment number, and then the payment is recorded as
//! succeeded; a push interrupted between the two is completed by its retry, by the partner's
//! query or by the till's list ([`complete`]).
//!
//! **Settlements.** When a partner's transfer reaches the station's bank account, the station
//! company records it against the contract ([`settlement_entry`], [`record_settlement`]): the
//! station's bank account is debited and the receivable credited, once per bank reference of
//! the transfer (at most one standing settlement per reference; the ledger entry is keyed by
//! the contract, the reference and the attempt, and refuses other content under it). The
//! entry is booked first and the row written after: a request cut short between the two has
//! booked the money, and its retry writes the row. A transfer larger than what is owed is
//! booked in full and leaves the partner in credit; refusing it would leave money in the bank
//! that the books do not show. A settlement recorded by mistake (a wrong amount, the wrong
//! contract) is reversed by an entry of its own ([`reversal_entry`], [`mark_reversed`]) and
//! stays listed; its reference may then be recorded again, as the next attempt.

use chrono::{DateTime, Utc};
use ledger::model::{NewEntry, PostingInput};
use ledger::money::{Currency, Money, MoneyError};
use ledger::{Ledger, Side};
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use entities::{
    organisations, partner_contracts, partner_orders, partner_settlements, pos_payments,
    pos_refunds, pos_shifts, pos_terminals,
};

use crate::model::{FeeRate, Method};
use crate::sales::{Sale, SaleLine, business_day, method_text, new_payment_no, stored_money};
use crate::stations::{StoreError, digest_hex};

/// Parts per million: commission rates are stored as integers of this scale.
const PPM: i64 = 1_000_000;

/// The topic of the event a partner is told a refund of its order by.
pub const REFUNDED_TOPIC: &str = "partner_orders.refunded";

/// The terms a partner and a station agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContractTerms {
    /// The partner's commission on each order, deducted from what it owes.
    pub commission_rate: FeeRate,
    /// The partner pays a business day's orders within this many days (0 to 90).
    pub settlement_days: u32,
    /// The largest order the partner may push.
    pub single_limit: Money,
}

/// Invalid contract terms.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TermsError {
    #[error("the commission rate must be at least 0 and below 1, with at most six decimals")]
    CommissionRate,
    #[error("the settlement cycle is 0 to 90 days")]
    SettlementDays,
    #[error("the single-order limit must be a positive amount in CNY, to the fen")]
    SingleLimit,
}

impl ContractTerms {
    pub fn new(
        commission_rate: Decimal,
        settlement_days: u32,
        single_limit: Decimal,
    ) -> Result<ContractTerms, TermsError> {
        if commission_rate.normalize().scale() > 6 {
            return Err(TermsError::CommissionRate);
        }
        let commission_rate =
            FeeRate::new(commission_rate).map_err(|_| TermsError::CommissionRate)?;
        if settlement_days > 90 {
            return Err(TermsError::SettlementDays);
        }
        let single_limit = Money::new(single_limit, Currency::CNY)
            .ok()
            .filter(Money::is_positive)
            .ok_or(TermsError::SingleLimit)?;
        Ok(ContractTerms {
            commission_rate,
            settlement_days,
            single_limit,
        })
    }

    /// The terms a stored contract states.
    pub fn of(row: &partner_contracts::Model) -> Result<ContractTerms, StoreError> {
        let invalid =
            |e: TermsError| StoreError::Invalid(format!("stored contract {}: {e}", row.id));
        let rate = FeeRate::new(Decimal::new(row.commission_ppm, 6))
            .map_err(|_| invalid(TermsError::CommissionRate))?;
        Ok(ContractTerms {
            commission_rate: rate,
            settlement_days: u32::try_from(row.settlement_days)
                .map_err(|_| invalid(TermsError::SettlementDays))?,
            single_limit: stored_money(row.single_limit_minor, &row.currency)?,
        })
    }

    fn commission_ppm(&self) -> i64 {
        let ppm = self.commission_rate.rate() * Decimal::from(PPM);
        debug_assert!(ppm.fract().is_zero(), "rates have at most six decimals");
        i64::try_from(ppm.trunc()).expect("a rate below 1 is below a million ppm")
    }

    /// The commission on an order of `amount`, half-up to the fen.
    pub fn commission_on(&self, amount: Money) -> Result<Money, MoneyError> {
        self.commission_rate.fee_on(amount)
    }
}

// ---------------------------------------------------------------------------------------
// Ledger accounts and entries
// ---------------------------------------------------------------------------------------

/// A station's ledger accounts for one partner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartnerAccounts {
    /// What the partner owes the station (asset, debit-normal).
    pub receivable: Uuid,
    /// The partner's commissions (expense, debit-normal).
    pub commission: Uuid,
}

fn receivable_code(partner_id: Uuid) -> String {
    format!("pos:partner-receivable:{partner_id}")
}

fn commission_code(partner_id: Uuid) -> String {
    format!("pos:partner-commission:{partner_id}")
}

/// The ids of the station's accounts for the partner, without opening them.
pub fn partner_account_ids(station_id: Uuid, partner_id: Uuid) -> PartnerAccounts {
    PartnerAccounts {
        receivable: crate::stations::account_id(station_id, &receivable_code(partner_id)),
        commission: crate::stations::account_id(station_id, &commission_code(partner_id)),
    }
}

/// Opens (or finds) the station's accounts for the partner, and the station's own retail
/// accounts, under the station's ledger owner `owner`.
pub async fn open_partner_accounts(
    ledger: &Ledger,
    station_id: Uuid,
    owner: &str,
    partner_id: Uuid,
) -> Result<PartnerAccounts, StoreError> {
    crate::stations::station_accounts(ledger, station_id, owner).await?;
    let receivable = crate::stations::open(
        ledger,
        station_id,
        owner,
        &receivable_code(partner_id),
        &format!("Owed by partner {partner_id}"),
        Side::Debit,
    )
    .await?;
    let commission = crate::stations::open(
        ledger,
        station_id,
        owner,
        &commission_code(partner_id),
        &format!("Commission of partner {partner_id}"),
        Side::Debit,
    )
    .await?;
    let accounts = PartnerAccounts {
        receivable,
        commission,
    };
    debug_assert_eq!(accounts, partner_account_ids(station_id, partner_id));
    Ok(accounts)
}

fn assert_balanced(entry: &NewEntry) {
    let (debits, credits) =
        entry
            .postings
            .iter()
            .fold((Decimal::ZERO, Decimal::ZERO), |(d, c), p| match p.side {
                Side::Debit => (d + p.amount, c),
                Side::Credit => (d, c + p.amount),
            });
    assert_eq!(
        debits, credits,
        "entry {} is not balanced",
        entry.idempotency_key
    );
}

/// The entry of a partner order: the partner owes the amount and the station has sold it;
/// the commission leaves the receivable for the commission expense.
pub fn order_entry(
    payment_no: &str,
    accounts: &PartnerAccounts,
    sales: Uuid,
    amount: Money,
    commission: Money,
) -> NewEntry {
    let currency = amount.currency();
    let mut entry = NewEntry::transfer(
        format!("payment:{payment_no}:sale"),
        format!("payment:{payment_no}"),
        accounts.receivable,
        sales,
        amount.amount(),
        currency,
    )
    .description("partner order");
    if commission.is_positive() {
        entry.postings.push(PostingInput::debit(
            accounts.commission,
            commission.amount(),
            currency,
        ));
        entry.postings.push(PostingInput::credit(
            accounts.receivable,
            commission.amount(),
            currency,
        ));
    }
    assert_balanced(&entry);
    entry
}

/// The entry of a refund of a partner order: the sale is given back and the partner owes
/// that much less (it refunds its driver itself).
pub fn refund_entry(
    payment_no: &str,
    refund_no: &str,
    accounts: &PartnerAccounts,
    sales: Uuid,
    refund: Money,
) -> NewEntry {
    let entry = NewEntry::transfer(
        format!("payment:{payment_no}:refund:{refund_no}"),
        format!("payment:{payment_no}"),
        sales,
        accounts.receivable,
        refund.amount(),
        refund.currency(),
    )
    .description("partner order refund");
    assert_balanced(&entry);
    entry
}

// ---------------------------------------------------------------------------------------
// Contracts
// ---------------------------------------------------------------------------------------

/// What [`sign_contract`] did.
#[derive(Clone, Debug)]
pub struct Signed {
    pub contract: partner_contracts::Model,
    /// A new contract, or the terms of an existing one amended.
    pub created: bool,
}

/// Signs the partner onto the station with `terms` (active), or replaces the terms of the
/// contract they have (its status unchanged: the new terms apply to orders pushed from now
/// on). The partner's accounts must be open ([`open_partner_accounts`]).
pub async fn sign_contract(
    txn: &impl ConnectionTrait,
    station_id: Uuid,
    partner_id: Uuid,
    terms: &ContractTerms,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Signed, StoreError> {
    let accounts = partner_account_ids(station_id, partner_id);
    let limit = terms
        .single_limit
        .minor_units()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let inserted = partner_contracts::Entity::insert(partner_contracts::ActiveModel {
        id: Set(Uuid::now_v7()),
        partner_id: Set(partner_id),
        station_id: Set(station_id),
        status: Set("active".into()),
        commission_ppm: Set(terms.commission_ppm()),
        settlement_days: Set(terms.settlement_days as i32),
        single_limit_minor: Set(limit),
        currency: Set(terms.single_limit.currency().to_string()),
        receivable_account_id: Set(accounts.receivable),
        commission_account_id: Set(accounts.commission),
        signed_by: Set(by.to_owned()),
        status_changed_by: Set(by.to_owned()),
        status_reason: Set("signed".into()),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::columns([
            partner_contracts::Column::PartnerId,
            partner_contracts::Column::StationId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    if inserted == 0 {
        partner_contracts::Entity::update_many()
            .col_expr(
                partner_contracts::Column::CommissionPpm,
                Expr::value(terms.commission_ppm()),
            )
            .col_expr(
                partner_contracts::Column::SettlementDays,
                Expr::value(terms.settlement_days as i32),
            )
            .col_expr(
                partner_contracts::Column::SingleLimitMinor,
                Expr::value(limit),
            )
            .col_expr(partner_contracts::Column::UpdatedAt, Expr::value(now))
            .filter(partner_contracts::Column::PartnerId.eq(partner_id))
            .filter(partner_contracts::Column::StationId.eq(station_id))
            .exec(txn)
            .await?;
        // The amendment is recorded as the contract's last change, unless the contract is
        // disabled: the partner keeps being shown why.
        partner_contracts::Entity::update_many()
            .col_expr(partner_contracts::Column::StatusChangedBy, Expr::value(by))
            .col_expr(
                partner_contracts::Column::StatusReason,
                Expr::value("terms amended"),
            )
            .filter(partner_contracts::Column::PartnerId.eq(partner_id))
            .filter(partner_contracts::Column::StationId.eq(station_id))
            .filter(partner_contracts::Column::Status.eq("active"))
            .exec(txn)
            .await?;
    }
    let contract = contract_between(txn, partner_id, station_id)
        .await?
        .ok_or(StoreError::NotFound("contract"))?;
    Ok(Signed {
        contract,
        created: inserted == 1,
    })
}

/// Enables or disables one of the station's contracts. Setting the status it already has
/// changes nothing (the first change's author and reason stay). `None` when the station has
/// no such contract.
pub async fn set_contract_status(
    txn: &impl ConnectionTrait,
    station_id: Uuid,
    contract_id: Uuid,
    active: bool,
    by: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<partner_contracts::Model>, StoreError> {
    let (to, from) = if active {
        ("active", "disabled")
    } else {
        ("disabled", "active")
    };
    partner_contracts::Entity::update_many()
        .col_expr(partner_contracts::Column::Status, Expr::value(to))
        .col_expr(partner_contracts::Column::StatusChangedBy, Expr::value(by))
        .col_expr(partner_contracts::Column::StatusReason, Expr::value(reason))
        .col_expr(partner_contracts::Column::UpdatedAt, Expr::value(now))
        .filter(partner_contracts::Column::Id.eq(contract_id))
        .filter(partner_contracts::Column::StationId.eq(station_id))
        .filter(partner_contracts::Column::Status.eq(from))
        .exec(txn)
        .await?;
    Ok(partner_contracts::Entity::find_by_id(contract_id)
        .filter(partner_contracts::Column::StationId.eq(station_id))
        .one(txn)
        .await?)
}

/// The contract between a partner and a station, whatever its status.
pub async fn contract_between(
    db: &impl ConnectionTrait,
    partner_id: Uuid,
    station_id: Uuid,
) -> Result<Option<partner_contracts::Model>, StoreError> {
    Ok(partner_contracts::Entity::find()
        .filter(partner_contracts::Column::PartnerId.eq(partner_id))
        .filter(partner_contracts::Column::StationId.eq(station_id))
        .one(db)
        .await?)
}

/// The contract between a partner and a station, read inside the writing transaction of an
/// order so that a status change cannot slip in between: on PostgreSQL the row is locked for
/// share (disabling waits for the order to commit, and later orders find it disabled);
/// SQLite's writing transactions are serial anyway.
pub async fn contract_between_in(
    txn: &impl ConnectionTrait,
    partner_id: Uuid,
    station_id: Uuid,
) -> Result<Option<partner_contracts::Model>, StoreError> {
    let select = partner_contracts::Entity::find()
        .filter(partner_contracts::Column::PartnerId.eq(partner_id))
        .filter(partner_contracts::Column::StationId.eq(station_id));
    let select = if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        select.lock_shared()
    } else {
        select
    };
    Ok(select.one(txn).await?)
}

/// Most contracts a list returns: a station signs a handful of partners.
pub const CONTRACTS_MAX: u64 = 500;

/// The station's contracts, oldest first.
pub async fn station_contracts(
    db: &impl ConnectionTrait,
    station_id: Uuid,
) -> Result<Vec<partner_contracts::Model>, StoreError> {
    Ok(partner_contracts::Entity::find()
        .filter(partner_contracts::Column::StationId.eq(station_id))
        .order_by_asc(partner_contracts::Column::CreatedAt)
        .order_by_asc(partner_contracts::Column::Id)
        .limit(CONTRACTS_MAX)
        .all(db)
        .await?)
}

/// The partner's active contracts: the stations it may push orders to, oldest first.
pub async fn active_contracts_of(
    db: &impl ConnectionTrait,
    partner_id: Uuid,
) -> Result<Vec<partner_contracts::Model>, StoreError> {
    Ok(partner_contracts::Entity::find()
        .filter(partner_contracts::Column::PartnerId.eq(partner_id))
        .filter(partner_contracts::Column::Status.eq("active"))
        .order_by_asc(partner_contracts::Column::CreatedAt)
        .order_by_asc(partner_contracts::Column::Id)
        .limit(CONTRACTS_MAX)
        .all(db)
        .await?)
}

// ---------------------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------------------

/// An order a partner pushes.
#[derive(Clone, Debug)]
pub struct NewPartnerOrder {
    /// The partner's own order number.
    pub partner_order_no: String,
    pub terminal_id: Uuid,
    pub amount: Money,
    pub sale: Sale,
    /// The partner's reference of the driver who paid.
    pub driver_ref: String,
    pub vehicle_plate: Option<String>,
}

impl NewPartnerOrder {
    /// Digest of everything that makes the order what it is.
    pub fn request_hash(&self) -> String {
        let canonical = serde_json::json!({
            "order": self.partner_order_no,
            "terminal": self.terminal_id,
            "amount": self.amount,
            "sale": self.sale,
            "driver": self.driver_ref,
            "vehicle": self.vehicle_plate,
        });
        digest_hex(canonical.to_string().as_bytes())
    }
}

/// Why a partner's order is not taken.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushRefusal {
    /// The station never signed the partner: its terminals are not the partner's to see.
    #[error("terminal not found")]
    NoContract,
    #[error("the station has disabled its contract with this partner: {reason}")]
    ContractDisabled { reason: String },
    #[error("the terminal is disabled: push the order to another of the station's terminals")]
    TerminalDisabled,
    #[error("the order exceeds the contract's single-order limit of {limit}")]
    OverLimit { limit: Money },
    #[error(
        "the terminal has no open shift: the order is taken once a cashier opens one, or push it to another terminal"
    )]
    NoOpenShift,
}

/// Whether the partner may push an order of `amount` to `terminal` under `contract`, before
/// anything is written. Returns the terms the order is taken under.
pub fn check_push(
    contract: Option<&partner_contracts::Model>,
    terminal: &pos_terminals::Model,
    amount: Money,
) -> Result<Result<ContractTerms, PushRefusal>, StoreError> {
    let Some(contract) = contract else {
        return Ok(Err(PushRefusal::NoContract));
    };
    debug_assert_eq!(contract.station_id, terminal.station_id);
    if contract.status != "active" {
        return Ok(Err(PushRefusal::ContractDisabled {
            reason: contract.status_reason.clone(),
        }));
    }
    if terminal.disabled_at.is_some() {
        return Ok(Err(PushRefusal::TerminalDisabled));
    }
    let terms = ContractTerms::of(contract)?;
    let over = amount.currency() != terms.single_limit.currency()
        || amount.amount() > terms.single_limit.amount();
    if over {
        return Ok(Err(PushRefusal::OverLimit {
            limit: terms.single_limit,
        }));
    }
    Ok(Ok(terms))
}

/// The order a partner's order number already made, if any: the same content is a replay,
/// other content under the same number a conflict.
pub async fn existing_order(
    db: &impl ConnectionTrait,
    partner_id: Uuid,
    new: &NewPartnerOrder,
) -> Result<Option<partner_orders::Model>, StoreError> {
    match order_by_partner_no(db, partner_id, &new.partner_order_no).await? {
        Some(found) if found.request_hash == new.request_hash() => Ok(Some(found)),
        Some(_) => Err(StoreError::Conflict(format!(
            "order {} was already pushed with other content (terminal, amount, lines, driver or vehicle)",
            new.partner_order_no
        ))),
        None => Ok(None),
    }
}

/// The partner's order by its own number.
pub async fn order_by_partner_no(
    db: &impl ConnectionTrait,
    partner_id: Uuid,
    partner_order_no: &str,
) -> Result<Option<partner_orders::Model>, StoreError> {
    Ok(partner_orders::Entity::find()
        .filter(partner_orders::Column::PartnerId.eq(partner_id))
        .filter(partner_orders::Column::PartnerOrderNo.eq(partner_order_no))
        .one(db)
        .await?)
}

/// The partner order a till payment is, if it is one.
pub async fn order_of_payment(
    db: &impl ConnectionTrait,
    payment_id: Uuid,
) -> Result<Option<partner_orders::Model>, StoreError> {
    Ok(partner_orders::Entity::find()
        .filter(partner_orders::Column::PaymentId.eq(payment_id))
        .one(db)
        .await?)
}

/// What [`push_order`] wrote.
#[derive(Clone, Debug)]
pub enum Pushed {
    /// The order written (its payment pending until [`complete`] books it).
    New(Box<partner_orders::Model>),
    /// The partner's order number was taken meanwhile (a concurrent push): nothing of this
    /// push may commit; roll back and read the order that is there.
    Taken,
}

/// The terminal's own order number of a partner order: unique per terminal, whatever
/// partners' numbers look like (two partners may use the same).
fn terminal_order_no(payment_no: &str) -> String {
    format!("PA-{payment_no}")
}

/// Writes the order into the terminal's open shift, in the caller's transaction, which must
/// hold the shift open ([`crate::shifts::open_shift_in`]): the till payment (pending until
/// booked) and the partner order row.
#[allow(clippy::too_many_arguments)]
pub async fn push_order(
    txn: &impl ConnectionTrait,
    contract: &partner_contracts::Model,
    terms: &ContractTerms,
    terminal: &pos_terminals::Model,
    shift: &pos_shifts::Model,
    new: &NewPartnerOrder,
    partner_name: &str,
    now: DateTime<Utc>,
) -> Result<Pushed, StoreError> {
    if shift.terminal_id != terminal.id || shift.status != "open" {
        return Err(StoreError::Invalid(
            "an order goes into the terminal's open shift".into(),
        ));
    }
    let invalid = |e: MoneyError| StoreError::Invalid(e.to_string());
    let amount_minor = new.amount.minor_units().map_err(invalid)?;
    let commission = terms.commission_on(new.amount).map_err(invalid)?;
    let commission_minor = commission.minor_units().map_err(invalid)?;
    let hash = new.request_hash();
    let payment_no = new_payment_no();
    let payment = pos_payments::Model {
        id: Uuid::now_v7(),
        payment_no: payment_no.clone(),
        station_id: terminal.station_id,
        terminal_id: terminal.id,
        shift_id: shift.id,
        terminal_order_no: terminal_order_no(&payment_no),
        request_hash: hash.clone(),
        method: method_text(Method::PartnerApp),
        amount_minor,
        currency: new.amount.currency().to_string(),
        sale: serde_json::to_string(&new.sale).expect("sales serialise"),
        status: "pending".into(),
        channel_id: None,
        channel_txn_id: None,
        out_trade_no: None,
        fee_minor: Some(commission_minor),
        route: None,
        reason: format!(
            "pushed by {partner_name} as order {}: paid in the partner's app",
            new.partner_order_no
        ),
        refund_reserved_minor: 0,
        refunded_minor: 0,
        business_day: business_day(now),
        created_at: now,
        finished_at: None,
        card_id: None,
    };
    pos_payments::Entity::insert(pos_payments::ActiveModel::from(payment.clone()))
        .exec_without_returning(txn)
        .await?;
    let order = partner_orders::Model {
        id: Uuid::now_v7(),
        partner_id: contract.partner_id,
        partner_order_no: new.partner_order_no.clone(),
        request_hash: hash,
        contract_id: contract.id,
        station_id: terminal.station_id,
        terminal_id: terminal.id,
        payment_id: payment.id,
        driver_ref: new.driver_ref.clone(),
        vehicle_plate: new.vehicle_plate.clone(),
        commission_minor,
        printed_at: None,
        printed_by: None,
        created_at: now,
    };
    // The partner's order number decides: a concurrent push of the same number waits for
    // ours (PostgreSQL) or is serialised behind it (SQLite), and then finds it taken.
    let inserted = partner_orders::Entity::insert(partner_orders::ActiveModel::from(order.clone()))
        .on_conflict(
            OnConflict::columns([
                partner_orders::Column::PartnerId,
                partner_orders::Column::PartnerOrderNo,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    if inserted == 0 {
        return Ok(Pushed::Taken);
    }
    Ok(Pushed::New(Box::new(order)))
}

/// Books a pushed order in the ledger and records its payment as succeeded; an order already
/// booked is returned as it stands. Idempotent (the entry by the payment number, the outcome
/// by a conditional update), so any reader may finish an interrupted push.
pub async fn complete(
    ledger: &Ledger,
    order: &partner_orders::Model,
) -> Result<pos_payments::Model, StoreError> {
    let db = ledger.db();
    let payment = pos_payments::Entity::find_by_id(order.payment_id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("payment"))?;
    if payment.status != "pending" {
        return Ok(payment);
    }
    let amount = stored_money(payment.amount_minor, &payment.currency)?;
    let commission = stored_money(order.commission_minor, &payment.currency)?;
    let accounts = partner_account_ids(payment.station_id, order.partner_id);
    let sales = crate::stations::station_account_ids(payment.station_id).sales;
    ledger
        .post_entry(order_entry(
            &payment.payment_no,
            &accounts,
            sales,
            amount,
            commission,
        ))
        .await?;
    crate::sales::record_outcome(
        db,
        &payment.payment_no,
        &crate::sales::Outcome {
            status: "succeeded".into(),
            channel: None,
            channel_txn_id: None,
            out_trade_no: None,
            fee_minor: Some(order.commission_minor),
            reason: format!(
                "paid in the partner's app (order {}); owed by the partner",
                order.partner_order_no
            ),
        },
        Utc::now(),
    )
    .await?;
    crate::sales::outcomes::announce(&payment.payment_no);
    pos_payments::Entity::find_by_id(order.payment_id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("payment"))
}

/// Books the refund of a partner order paid back: the sale is given back against what the
/// partner owes (idempotent by the refund number).
pub async fn book_refund(
    ledger: &Ledger,
    payment: &pos_payments::Model,
    refund: &pos_refunds::Model,
) -> Result<(), StoreError> {
    let order = order_of_payment(ledger.db(), payment.id)
        .await?
        .ok_or(StoreError::NotFound("partner order"))?;
    let amount = stored_money(refund.amount_minor, &refund.currency)?;
    let accounts = partner_account_ids(payment.station_id, order.partner_id);
    let sales = crate::stations::station_account_ids(payment.station_id).sales;
    ledger
        .post_entry(refund_entry(
            &payment.payment_no,
            &refund.refund_no,
            &accounts,
            sales,
            amount,
        ))
        .await?;
    Ok(())
}

/// The event that tells a partner a refund of its order was made, for a refund that
/// succeeded; `None` for other refunds. Its `audience` names the partner, so the partner's
/// webhook subscriptions receive it (and no other organisation's but the platform
/// operator's).
pub async fn refund_event(
    db: &impl ConnectionTrait,
    refund: &pos_refunds::Model,
) -> Result<Option<(String, serde_json::Value)>, StoreError> {
    if refund.status != "succeeded" {
        return Ok(None);
    }
    let Some(order) = order_of_payment(db, refund.payment_id).await? else {
        return Ok(None);
    };
    let payment = pos_payments::Entity::find_by_id(refund.payment_id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("payment"))?;
    let amount = stored_money(refund.amount_minor, &refund.currency)?;
    let refunded = stored_money(payment.refunded_minor, &payment.currency)?;
    let paid = stored_money(payment.amount_minor, &payment.currency)?;
    Ok(Some((
        REFUNDED_TOPIC.to_owned(),
        serde_json::json!({
            "audience": [order.partner_id],
            "partner_id": order.partner_id,
            "order_no": order.partner_order_no,
            "payment_no": payment.payment_no,
            "refund_no": refund.refund_no,
            "station_id": payment.station_id,
            "terminal_id": payment.terminal_id,
            "driver_ref": order.driver_ref,
            "amount": amount.amount(),
            "currency": refund.currency,
            "refunded": refunded.amount(),
            "paid": paid.amount(),
            "reason": refund.reason,
            "refunded_at": refund.finished_at,
        }),
    )))
}

// ---------------------------------------------------------------------------------------
// Settlements: what the partner paid
// ---------------------------------------------------------------------------------------

/// A transfer a station received from a partner against its contract, as its bank
/// statement shows it.
#[derive(Clone, Debug)]
pub struct NewSettlement {
    /// The bank's reference of the transfer: one settlement per reference and contract.
    pub reference: String,
    pub amount: Money,
    /// The value date on the station's bank statement.
    pub received_on: chrono::NaiveDate,
}

impl NewSettlement {
    /// The digest that tells a retry (the same transfer) from other content under the same
    /// reference.
    pub fn request_hash(&self) -> Result<String, StoreError> {
        let minor = self
            .amount
            .minor_units()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        Ok(digest_hex(
            format!("{}|{}|{}", minor, self.amount.currency(), self.received_on).as_bytes(),
        ))
    }
}

/// The ledger entry of a settlement: the money is in the station's bank account and the
/// partner owes that much less. Keyed by the contract, the bank's reference and the attempt
/// (the n-th recording of the reference, the earlier ones reversed), so that a transfer is
/// booked once, and other content under the same key is refused by the ledger. More than the
/// partner owes leaves it in credit (the receivable below zero): the money did arrive, and
/// the books say so.
pub fn settlement_entry(
    contract: &partner_contracts::Model,
    settlement: &NewSettlement,
    attempt: i32,
) -> NewEntry {
    let bank = crate::stations::account_id(contract.station_id, "pos:bank");
    let entry = NewEntry::transfer(
        format!(
            "partner-settlement:{}:{}:{attempt}",
            contract.id, settlement.reference
        ),
        format!("partner-contract:{}", contract.id),
        bank,
        contract.receivable_account_id,
        settlement.amount.amount(),
        settlement.amount.currency(),
    )
    .description(format!(
        "settlement from partner {}, bank reference {}, value date {}",
        contract.partner_id, settlement.reference, settlement.received_on
    ));
    assert_balanced(&entry);
    entry
}

/// The entry that takes a settlement recorded by mistake back out of the bank account and
/// puts it back on what the partner owes.
pub fn reversal_entry(
    contract: &partner_contracts::Model,
    row: &partner_settlements::Model,
) -> Result<NewEntry, StoreError> {
    let amount = stored_money(row.amount_minor, &row.currency)?;
    let bank = crate::stations::account_id(contract.station_id, "pos:bank");
    let entry = NewEntry::transfer(
        format!(
            "partner-settlement:{}:{}:{}:reversal",
            contract.id, row.reference, row.attempt
        ),
        format!("partner-contract:{}", contract.id),
        contract.receivable_account_id,
        bank,
        amount.amount(),
        amount.currency(),
    )
    .description(format!(
        "reversal of the settlement recorded under bank reference {}",
        row.reference
    ));
    assert_balanced(&entry);
    Ok(entry)
}

/// What [`record_settlement`] found.
#[derive(Clone, Debug)]
pub enum Recorded {
    /// Written now.
    New(partner_settlements::Model),
    /// The same transfer, recorded before.
    Existing(partner_settlements::Model),
}

/// The standing (not reversed) settlement recorded under `reference` on the contract, if any.
pub async fn standing_settlement(
    db: &impl ConnectionTrait,
    contract_id: Uuid,
    reference: &str,
) -> Result<Option<partner_settlements::Model>, StoreError> {
    Ok(partner_settlements::Entity::find()
        .filter(partner_settlements::Column::ContractId.eq(contract_id))
        .filter(partner_settlements::Column::Reference.eq(reference))
        .filter(partner_settlements::Column::ReversedAt.is_null())
        .one(db)
        .await?)
}

/// The attempt a new recording of `reference` takes: one more than its reversed recordings.
/// Reversed ones only: a request that lost a race to an identical one, and counts after the
/// winner's row committed, must take the winner's attempt (and so the winner's ledger entry,
/// answered again) and not book the transfer a second time under the next. The same until a
/// reversal commits, so a request cut short after its booking books nothing new when it is
/// retried.
pub async fn next_attempt(
    db: &impl ConnectionTrait,
    contract_id: Uuid,
    reference: &str,
) -> Result<i32, StoreError> {
    let reversed = partner_settlements::Entity::find()
        .filter(partner_settlements::Column::ContractId.eq(contract_id))
        .filter(partner_settlements::Column::Reference.eq(reference))
        .filter(partner_settlements::Column::ReversedAt.is_not_null())
        .count(db)
        .await?;
    i32::try_from(reversed + 1)
        .map_err(|_| StoreError::Invalid(format!("bank reference {reference} reversed too often")))
}

/// The earlier settlement under the same reference: the same transfer, or a conflict when
/// its content differs.
pub fn same_settlement(
    existing: partner_settlements::Model,
    request_hash: &str,
) -> Result<partner_settlements::Model, StoreError> {
    if existing.request_hash == request_hash {
        Ok(existing)
    } else {
        Err(StoreError::Conflict(format!(
            "bank reference {} was recorded on {} with another amount or value date: reverse \
             that settlement first if it was wrong",
            existing.reference, existing.created_at
        )))
    }
}

/// Writes the row of a settlement whose ledger entry `entry_id` (of `attempt`) is booked. A
/// concurrent request for the same reference finds the row the other wrote.
pub async fn record_settlement(
    db: &impl ConnectionTrait,
    contract: &partner_contracts::Model,
    settlement: &NewSettlement,
    attempt: i32,
    entry_id: Uuid,
    by: &str,
    at: DateTime<Utc>,
) -> Result<Recorded, StoreError> {
    let request_hash = settlement.request_hash()?;
    let row = partner_settlements::ActiveModel {
        id: Set(Uuid::now_v7()),
        contract_id: Set(contract.id),
        partner_id: Set(contract.partner_id),
        station_id: Set(contract.station_id),
        reference: Set(settlement.reference.clone()),
        request_hash: Set(request_hash.clone()),
        amount_minor: Set(settlement
            .amount
            .minor_units()
            .map_err(|e| StoreError::Invalid(e.to_string()))?),
        currency: Set(settlement.amount.currency().to_string()),
        received_on: Set(settlement.received_on.to_string()),
        entry_id: Set(entry_id),
        recorded_by: Set(by.to_owned()),
        created_at: Set(at),
        attempt: Set(attempt),
        reversed_at: Set(None),
        reversed_by: Set(None),
        reversal_reason: Set(None),
        reversal_entry_id: Set(None),
    };
    let inserted = partner_settlements::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                partner_settlements::Column::ContractId,
                partner_settlements::Column::Reference,
                partner_settlements::Column::Attempt,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    let stored = partner_settlements::Entity::find()
        .filter(partner_settlements::Column::ContractId.eq(contract.id))
        .filter(partner_settlements::Column::Reference.eq(&settlement.reference))
        .filter(partner_settlements::Column::Attempt.eq(attempt))
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("settlement"))?;
    if inserted == 1 {
        Ok(Recorded::New(stored))
    } else {
        same_settlement(stored, &request_hash).map(Recorded::Existing)
    }
}

/// The contract's settlement `id`.
pub async fn settlement(
    db: &impl ConnectionTrait,
    contract_id: Uuid,
    id: Uuid,
) -> Result<Option<partner_settlements::Model>, StoreError> {
    Ok(partner_settlements::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|s| s.contract_id == contract_id))
}

/// Marks a settlement reversed whose reversal entry `entry_id` is booked; a settlement
/// reversed meanwhile is answered as it stands.
pub async fn mark_reversed(
    db: &impl ConnectionTrait,
    id: Uuid,
    entry_id: Uuid,
    by: &str,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<partner_settlements::Model, StoreError> {
    partner_settlements::Entity::update_many()
        .col_expr(partner_settlements::Column::ReversedAt, Expr::value(at))
        .col_expr(partner_settlements::Column::ReversedBy, Expr::value(by))
        .col_expr(
            partner_settlements::Column::ReversalReason,
            Expr::value(reason),
        )
        .col_expr(
            partner_settlements::Column::ReversalEntryId,
            Expr::value(entry_id),
        )
        .filter(partner_settlements::Column::Id.eq(id))
        .filter(partner_settlements::Column::ReversedAt.is_null())
        .exec(db)
        .await?;
    partner_settlements::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("settlement"))
}

/// Most settlements one page holds.
pub const SETTLEMENTS_PAGE_MAX: u64 = 200;

/// The contract's settlements, oldest first, after the settlement `after`.
pub async fn contract_settlements(
    db: &impl ConnectionTrait,
    contract_id: Uuid,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<partner_settlements::Model>, StoreError> {
    let mut query = partner_settlements::Entity::find()
        .filter(partner_settlements::Column::ContractId.eq(contract_id));
    if let Some(after) = after {
        query = query.filter(partner_settlements::Column::Id.gt(after));
    }
    Ok(query
        .order_by_asc(partner_settlements::Column::Id)
        .limit(limit.min(SETTLEMENTS_PAGE_MAX))
        .all(db)
        .await?)
}

/// Most orders one page of a till's list holds.
pub const ORDERS_PAGE_MAX: u64 = 200;

/// The orders pushed to a terminal, printed or not, oldest first, after the order `after`.
pub async fn terminal_orders(
    db: &impl ConnectionTrait,
    terminal_id: Uuid,
    printed: bool,
    after: Option<Uuid>,
    limit: u64,
) -> Result<Vec<partner_orders::Model>, StoreError> {
    let mut select = partner_orders::Entity::find()
        .filter(partner_orders::Column::TerminalId.eq(terminal_id))
        .order_by_asc(partner_orders::Column::Id)
        .limit(limit.min(ORDERS_PAGE_MAX + 1));
    select = if printed {
        select.filter(partner_orders::Column::PrintedAt.is_not_null())
    } else {
        select.filter(partner_orders::Column::PrintedAt.is_null())
    };
    if let Some(after) = after {
        select = select.filter(partner_orders::Column::Id.gt(after));
    }
    Ok(select.all(db).await?)
}

/// Why the till cannot acknowledge a ticket.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrintRefusal {
    #[error("the order is {0}: only a booked order's ticket is handed out")]
    NotBooked(String),
}

/// Records that the till printed the order's ticket. Printing again changes nothing: the
/// first print's time and person stay. `None` when the terminal has no such order.
pub async fn mark_printed(
    db: &impl ConnectionTrait,
    terminal_id: Uuid,
    payment_no: &str,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Option<Result<partner_orders::Model, PrintRefusal>>, StoreError> {
    let Some(payment) = crate::sales::payment_by_no(db, payment_no)
        .await?
        .filter(|p| p.terminal_id == terminal_id)
    else {
        return Ok(None);
    };
    let Some(order) = order_of_payment(db, payment.id).await? else {
        return Ok(None);
    };
    if payment.status != "succeeded" {
        return Ok(Some(Err(PrintRefusal::NotBooked(payment.status))));
    }
    partner_orders::Entity::update_many()
        .col_expr(partner_orders::Column::PrintedAt, Expr::value(now))
        .col_expr(partner_orders::Column::PrintedBy, Expr::value(by))
        .filter(partner_orders::Column::Id.eq(order.id))
        .filter(partner_orders::Column::PrintedAt.is_null())
        .exec(db)
        .await?;
    Ok(partner_orders::Entity::find_by_id(order.id)
        .one(db)
        .await?
        .map(Ok))
}

/// The name of an organisation, for tickets and messages.
pub async fn organisation_name(db: &impl ConnectionTrait, id: Uuid) -> Result<String, StoreError> {
    Ok(organisations::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(|o| o.name)
        .unwrap_or_else(|| id.to_string()))
}

/// What a ticket says about its order.
pub struct TicketInput<'a> {
    pub station: &'a str,
    pub terminal: &'a str,
    pub partner: &'a str,
    pub order: &'a partner_orders::Model,
    pub payment: &'a pos_payments::Model,
}

/// The printable ticket of a partner order, fixed-width for a till printer (40 columns).
pub fn ticket(input: &TicketInput<'_>) -> Result<String, StoreError> {
    let TicketInput {
        station,
        terminal,
        partner,
        order,
        payment,
    } = input;
    let sale: Sale = serde_json::from_str(&payment.sale)
        .map_err(|e| StoreError::Invalid(format!("stored sale: {e}")))?;
    let amount = stored_money(payment.amount_minor, &payment.currency)?;
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: &str| {
        out.push_str(&format!("{label:<16}{value:>24}\n"));
    };
    out.push_str(&format!("{:^40}\n", "PARTNER ORDER"));
    out.push_str(&format!("{station}\n"));
    line(&mut out, "Terminal", terminal);
    line(&mut out, "Partner", partner);
    line(&mut out, "Order", &order.partner_order_no);
    line(&mut out, "Payment", &payment.payment_no);
    line(&mut out, "Driver", &order.driver_ref);
    if let Some(plate) = &order.vehicle_plate {
        line(&mut out, "Vehicle", plate);
    }
    line(
        &mut out,
        "Time",
        &payment
            .created_at
            .with_timezone(&crate::sales::BUSINESS_TZ)
            .format("%Y-%m-%d %H:%M")
            .to_string(),
    );
    out.push_str(&"-".repeat(40));
    out.push('\n');
    for sold in &sale.lines {
        match sold {
            SaleLine::Fuel {
                grade,
                litres,
                nozzle,
                amount,
            } => line(
                &mut out,
                &format!("{} {litres} L", grade.label()),
                &format!("#{nozzle} {amount}"),
            ),
            SaleLine::Item {
                name,
                quantity,
                amount,
            } => line(
                &mut out,
                &format!("{quantity} x {name}"),
                &amount.to_string(),
            ),
        }
    }
    out.push_str(&"-".repeat(40));
    out.push('\n');
    line(
        &mut out,
        "Total",
        &format!("{} {}", amount.amount(), payment.currency),
    );
    out.push_str("Paid in the partner's app.\nNothing to collect at the till.\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn accounts() -> PartnerAccounts {
        partner_account_ids(Uuid::from_u128(1), Uuid::from_u128(2))
    }

    fn cny(amount: Decimal) -> Money {
        Money::new(amount, Currency::CNY).unwrap()
    }

    #[test]
    fn a_settlement_moves_the_transfer_from_the_receivable_to_the_bank_once_per_reference() {
        let station = Uuid::from_u128(1);
        let a = partner_account_ids(station, Uuid::from_u128(2));
        let now = Utc::now();
        let contract = partner_contracts::Model {
            id: Uuid::from_u128(9),
            partner_id: Uuid::from_u128(2),
            station_id: station,
            status: "active".into(),
            commission_ppm: 5_000,
            settlement_days: 1,
            single_limit_minor: 300_000,
            currency: "CNY".into(),
            receivable_account_id: a.receivable,
            commission_account_id: a.commission,
            signed_by: "owner".into(),
            status_changed_by: "owner".into(),
            status_reason: "signed".into(),
            created_at: now,
            updated_at: now,
        };
        let transfer = |amount: Decimal, day: u32| NewSettlement {
            reference: "CMB-1".into(),
            amount: cny(amount),
            received_on: chrono::NaiveDate::from_ymd_opt(2026, 11, day).unwrap(),
        };
        let entry = settlement_entry(&contract, &transfer(dec!(600.00), 20), 1);
        assert_eq!(
            entry.idempotency_key,
            format!("partner-settlement:{}:CMB-1:1", contract.id)
        );
        assert_eq!(entry.postings[0].side, Side::Debit);
        assert_eq!(
            entry.postings[0].account_id,
            crate::stations::account_id(station, "pos:bank")
        );
        assert_eq!(entry.postings[1].side, Side::Credit);
        assert_eq!(entry.postings[1].account_id, a.receivable);
        assert_eq!(entry.postings[1].amount, dec!(600.00));
        // Its reversal takes the same amount back the other way, under a key of its own.
        let row = partner_settlements::Model {
            id: Uuid::from_u128(10),
            contract_id: contract.id,
            partner_id: contract.partner_id,
            station_id: station,
            reference: "CMB-1".into(),
            request_hash: String::new(),
            amount_minor: 60_000,
            currency: "CNY".into(),
            received_on: "2026-11-20".into(),
            entry_id: Uuid::from_u128(11),
            recorded_by: "owner".into(),
            created_at: now,
            attempt: 1,
            reversed_at: None,
            reversed_by: None,
            reversal_reason: None,
            reversal_entry_id: None,
        };
        let reversal = reversal_entry(&contract, &row).unwrap();
        assert_eq!(
            reversal.idempotency_key,
            format!("partner-settlement:{}:CMB-1:1:reversal", contract.id)
        );
        assert_eq!(reversal.postings[0].side, Side::Debit);
        assert_eq!(reversal.postings[0].account_id, a.receivable);
        assert_eq!(
            reversal.postings[1].account_id,
            entry.postings[0].account_id
        );
        assert_eq!(reversal.postings[1].amount, dec!(600.00));
        // The same transfer however the amount is written; another amount or day differs.
        let hash = |t: NewSettlement| t.request_hash().unwrap();
        assert_eq!(
            hash(transfer(dec!(600), 20)),
            hash(transfer(dec!(600.00), 20))
        );
        assert_ne!(
            hash(transfer(dec!(600.00), 20)),
            hash(transfer(dec!(600.01), 20))
        );
        assert_ne!(
            hash(transfer(dec!(600.00), 20)),
            hash(transfer(dec!(600.00), 21))
        );
    }

    #[test]
    fn an_order_leaves_the_partner_owing_the_amount_less_its_commission() {
        let sales = Uuid::from_u128(3);
        let a = accounts();
        let entry = order_entry("P1", &a, sales, cny(dec!(300.00)), cny(dec!(3.00)));
        assert_eq!(entry.idempotency_key, "payment:P1:sale");
        let net = |account: Uuid| {
            entry
                .postings
                .iter()
                .filter(|p| p.account_id == account)
                .map(|p| match p.side {
                    Side::Debit => p.amount,
                    Side::Credit => -p.amount,
                })
                .sum::<Decimal>()
        };
        assert_eq!(net(a.receivable), dec!(297.00));
        assert_eq!(net(a.commission), dec!(3.00));
        assert_eq!(net(sales), dec!(-300.00));
        // Without a commission the entry has two legs.
        let plain = order_entry("P2", &a, sales, cny(dec!(10.00)), cny(dec!(0)));
        assert_eq!(plain.postings.len(), 2);
        let refund = refund_entry("P1", "R1", &a, sales, cny(dec!(50.00)));
        assert_eq!(refund.idempotency_key, "payment:P1:refund:R1");
        assert_eq!(refund.postings[0].account_id, sales);
        assert_eq!(refund.postings[1].account_id, a.receivable);
    }

    #[test]
    fn accounts_are_the_same_for_the_same_station_and_partner_and_differ_per_partner() {
        let station = Uuid::from_u128(1);
        assert_eq!(
            partner_account_ids(station, Uuid::from_u128(2)),
            partner_account_ids(station, Uuid::from_u128(2))
        );
        let other = partner_account_ids(station, Uuid::from_u128(9));
        assert_ne!(other.receivable, accounts().receivable);
        assert_ne!(other.receivable, other.commission);
    }

    #[test]
    fn terms_take_rates_to_the_millionth_and_limits_to_the_fen() {
        let terms = ContractTerms::new(dec!(0.0125), 7, dec!(2000.00)).unwrap();
        assert_eq!(terms.commission_ppm(), 12_500);
        assert_eq!(
            terms.commission_on(cny(dec!(300.00))).unwrap().amount(),
            dec!(3.75)
        );
        // 12.34 * 0.0125 = 0.15425 -> 0.15 (half-up to the fen).
        assert_eq!(
            terms.commission_on(cny(dec!(12.34))).unwrap().amount(),
            dec!(0.15)
        );
        assert_eq!(
            ContractTerms::new(dec!(0.0000001), 1, dec!(1)),
            Err(TermsError::CommissionRate)
        );
        assert_eq!(
            ContractTerms::new(dec!(1), 1, dec!(1)),
            Err(TermsError::CommissionRate)
        );
        assert_eq!(
            ContractTerms::new(dec!(0), 91, dec!(1)),
            Err(TermsError::SettlementDays)
        );
        assert_eq!(
            ContractTerms::new(dec!(0), 1, dec!(0.001)),
            Err(TermsError::SingleLimit)
        );
        assert_eq!(
            ContractTerms::new(dec!(0), 1, dec!(0)),
            Err(TermsError::SingleLimit)
        );
    }
}

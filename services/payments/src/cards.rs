//! The station company's stored-value member cards (储值卡): issued and topped up at the
//! till, spent at any of the company's stations, refunded onto the card.
//!
//! The money is in the ledger, and so is the cap. Each card has two accounts that cannot go
//! negative: its **balance** (what the issuer owes the holder) and its **headroom** (what may
//! still be loaded). Issuing the card gives the headroom its cap, from the issuer's
//! **capacity** memorandum account; every top-up moves money onto the balance *and* the same
//! amount off the headroom in one entry, and every payment the reverse. So balance +
//! headroom = cap always, and two tills loading one card at once cannot pass the cap, nor
//! two tills spending it overdraw it: the ledger refuses the entry that would take either
//! account below zero, under its own locking.
//!
//! Caps follow the rules for single-purpose prepaid cards: an anonymous card holds at most
//! 1,000 CNY, a card registered to a named holder at most 5,000 CNY. A card is the issuer's
//! (the station company above the station that issued it) and is found by its number within
//! that issuer, so another company's tills cannot see or spend it.

use chrono::{DateTime, Utc};
use ledger::model::NewAccount;
use ledger::money::{Currency, Money};
use ledger::{Ledger, LedgerError, Side};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entities::{pos_card_top_ups, pos_member_cards, pos_payments, pos_shifts, pos_terminals};

use crate::postings::CardAccounts;
use crate::sales::{business_day, stored_money};
use crate::stations::{StoreError, digest_hex};

/// The most an anonymous card may hold, in fen.
pub const ANONYMOUS_CAP_MINOR: i64 = 100_000;
/// The most a card registered to a named holder may hold, in fen.
pub const NAMED_CAP_MINOR: i64 = 500_000;

/// Whether the card is registered to a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardKind {
    Anonymous,
    Named,
}

impl CardKind {
    pub fn cap(self) -> Money {
        Money::from_minor(
            match self {
                CardKind::Anonymous => ANONYMOUS_CAP_MINOR,
                CardKind::Named => NAMED_CAP_MINOR,
            },
            Currency::CNY,
        )
    }

    pub fn text(self) -> &'static str {
        match self {
            CardKind::Anonymous => "anonymous",
            CardKind::Named => "named",
        }
    }

    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "anonymous" => Ok(CardKind::Anonymous),
            "named" => Ok(CardKind::Named),
            other => Err(StoreError::Invalid(format!("stored card kind {other:?}"))),
        }
    }
}

/// A card number as printed: 8 to 19 digits.
pub fn valid_card_no(card_no: &str) -> bool {
    (8..=19).contains(&card_no.len()) && card_no.bytes().all(|b| b.is_ascii_digit())
}

/// A card the till issues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCard {
    pub card_no: String,
    pub kind: CardKind,
    /// Required for a named card, absent for an anonymous one.
    pub holder_name: Option<String>,
    pub holder_phone: Option<String>,
}

impl NewCard {
    /// What is wrong with the request, field by field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !valid_card_no(&self.card_no) {
            out.push(("card_no", "8 to 19 digits".to_owned()));
        }
        let name_ok = |n: &Option<String>| {
            n.as_deref()
                .is_some_and(|n| !n.trim().is_empty() && n.chars().count() <= 64)
        };
        let phone_ok = |p: &Option<String>| {
            p.as_deref().is_some_and(|p| {
                (5..=20).contains(&p.len())
                    && p.bytes()
                        .all(|b| b.is_ascii_digit() || b == b'+' || b == b'-')
            })
        };
        match self.kind {
            CardKind::Named => {
                if !name_ok(&self.holder_name) {
                    out.push((
                        "holder_name",
                        "a named card needs its holder's name (1 to 64 characters)".to_owned(),
                    ));
                }
                if !phone_ok(&self.holder_phone) {
                    out.push((
                        "holder_phone",
                        "a named card needs its holder's phone (5 to 20 digits, + or -)".to_owned(),
                    ));
                }
            }
            CardKind::Anonymous => {
                if self.holder_name.is_some() || self.holder_phone.is_some() {
                    out.push((
                        "kind",
                        "an anonymous card has no holder: issue it as named".to_owned(),
                    ));
                }
            }
        }
        out
    }

    fn request_hash(&self) -> String {
        let canonical = serde_json::json!({
            "card_no": self.card_no,
            "kind": self.kind,
            "holder_name": self.holder_name.as_deref().map(str::trim),
            "holder_phone": self.holder_phone,
        });
        digest_hex(canonical.to_string().as_bytes())
    }
}

/// The ledger accounts of the card `card_no` of `issuer`: the same card, the same ids, so
/// they can be opened before the card's row is written and found again after a crash.
pub fn card_accounts(issuer: Uuid, card_no: &str) -> CardAccounts {
    CardAccounts {
        balance: Uuid::new_v5(&issuer, format!("member-card:{card_no}:balance").as_bytes()),
        headroom: Uuid::new_v5(
            &issuer,
            format!("member-card:{card_no}:headroom").as_bytes(),
        ),
        capacity: Uuid::new_v5(&issuer, b"member-cards:capacity"),
    }
}

/// The accounts of a stored card.
pub fn accounts_of(card: &pos_member_cards::Model) -> CardAccounts {
    CardAccounts {
        balance: card.balance_account_id,
        headroom: card.headroom_account_id,
        capacity: card_accounts(card.issuer_org_id, &card.card_no).capacity,
    }
}

/// What [`issue_card`] found or made.
#[derive(Clone, Debug)]
pub enum Issued {
    New(pos_member_cards::Model),
    /// The same request came before: its card.
    Replay(pos_member_cards::Model),
}

/// The card with `card_no` of `issuer`, if any.
pub async fn card_by_no(
    db: &impl ConnectionTrait,
    issuer: Uuid,
    card_no: &str,
) -> Result<Option<pos_member_cards::Model>, StoreError> {
    Ok(pos_member_cards::Entity::find()
        .filter(pos_member_cards::Column::IssuerOrgId.eq(issuer))
        .filter(pos_member_cards::Column::CardNo.eq(card_no))
        .one(db)
        .await?)
}

pub async fn card(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<Option<pos_member_cards::Model>, StoreError> {
    Ok(pos_member_cards::Entity::find_by_id(id).one(db).await?)
}

fn same_or_conflict(
    card: pos_member_cards::Model,
    new: &NewCard,
    replay: bool,
) -> Result<Issued, StoreError> {
    if card.request_hash != new.request_hash() {
        return Err(StoreError::Conflict(format!(
            "card {} was already issued with other details",
            new.card_no
        )));
    }
    Ok(if replay {
        Issued::Replay(card)
    } else {
        Issued::New(card)
    })
}

/// Issues a card at a till: opens its accounts under the issuer's ledger owner, gives it
/// its cap, then writes its row. Every step is idempotent, so a retry after a crash finishes
/// the issue; the same number with other details is a conflict.
pub async fn issue_card(
    ledger: &Ledger,
    issuer: Uuid,
    issuer_owner: &str,
    terminal: &pos_terminals::Model,
    issued_by: &str,
    new: &NewCard,
    now: DateTime<Utc>,
) -> Result<Issued, StoreError> {
    let db = ledger.db();
    if let Some(card) = card_by_no(db, issuer, &new.card_no).await? {
        return same_or_conflict(card, new, true);
    }
    let accounts = card_accounts(issuer, &new.card_no);
    let open = |id: Uuid, code: String, name: String, side: Side| {
        NewAccount::new(issuer_owner, code, name, Currency::CNY, side).with_id(id)
    };
    ledger
        .create_account(open(
            accounts.capacity,
            "member-cards:capacity".into(),
            "Member cards' capacity (memorandum)".into(),
            Side::Debit,
        ))
        .await?;
    for (id, part, name) in [
        (accounts.balance, "balance", "balance"),
        (accounts.headroom, "headroom", "room to load (memorandum)"),
    ] {
        ledger
            .create_account(
                open(
                    id,
                    format!("member-card:{}:{part}", new.card_no),
                    format!("Member card {} {name}", new.card_no),
                    Side::Credit,
                )
                .debits_must_not_exceed_credits(),
            )
            .await?;
    }
    // The cap as first issued; a later registration to a name adds the difference under
    // its own key.
    let entry = crate::postings::card_capacity(
        format!("member-card:{issuer}:{}:capacity", new.card_no),
        &accounts,
        new.kind.cap(),
    );
    match ledger.post_entry(entry).await {
        Ok(_) => {}
        // A concurrent issue of the same number as the other kind gave it another cap.
        Err(LedgerError::IdempotencyConflict { .. }) => {
            return Err(StoreError::Conflict(format!(
                "card {} was already issued with other details",
                new.card_no
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let row = pos_member_cards::ActiveModel {
        id: Set(Uuid::now_v7()),
        issuer_org_id: Set(issuer),
        card_no: Set(new.card_no.clone()),
        kind: Set(new.kind.text().into()),
        holder_name: Set(new.holder_name.as_deref().map(|n| n.trim().to_owned())),
        holder_phone: Set(new.holder_phone.clone()),
        status: Set("active".into()),
        status_reason: Set(None),
        cap_minor: Set(new
            .kind
            .cap()
            .minor_units()
            .map_err(|e| StoreError::Invalid(e.to_string()))?),
        currency: Set(Currency::CNY.to_string()),
        balance_account_id: Set(accounts.balance),
        headroom_account_id: Set(accounts.headroom),
        issued_station_id: Set(terminal.station_id),
        issued_terminal_id: Set(terminal.id),
        issued_by: Set(issued_by.to_owned()),
        request_hash: Set(new.request_hash()),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let inserted = pos_member_cards::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                pos_member_cards::Column::IssuerOrgId,
                pos_member_cards::Column::CardNo,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    let card = card_by_no(db, issuer, &new.card_no)
        .await?
        .ok_or(StoreError::NotFound("member card"))?;
    same_or_conflict(card, new, inserted != 1)
}

/// A card's money as the ledger has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CardFunds {
    /// What the holder can spend.
    pub balance: Money,
    /// What may still be loaded before the cap.
    pub loadable: Money,
    pub cap: Money,
}

pub async fn funds(
    ledger: &Ledger,
    card: &pos_member_cards::Model,
) -> Result<CardFunds, StoreError> {
    let balance = ledger.balance(card.balance_account_id).await?;
    let headroom = ledger.balance(card.headroom_account_id).await?;
    Ok(CardFunds {
        balance: balance.available,
        loadable: headroom.available,
        cap: stored_money(card.cap_minor, &card.currency)?,
    })
}

/// Blocks a card (lost, or stopped by the issuer): it can neither pay nor be loaded until
/// unblocked. Its balance stays the holder's. Idempotent; returns the card as it stands.
pub async fn set_blocked(
    db: &impl ConnectionTrait,
    card: &pos_member_cards::Model,
    blocked: bool,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<pos_member_cards::Model, StoreError> {
    let (from, to) = if blocked {
        ("active", "blocked")
    } else {
        ("blocked", "active")
    };
    pos_member_cards::Entity::update_many()
        .col_expr(pos_member_cards::Column::Status, Expr::value(to))
        .col_expr(
            pos_member_cards::Column::StatusReason,
            Expr::value(reason.to_owned()),
        )
        .col_expr(pos_member_cards::Column::UpdatedAt, Expr::value(now))
        .filter(pos_member_cards::Column::Id.eq(card.id))
        .filter(pos_member_cards::Column::Status.eq(from))
        .exec(db)
        .await?;
    card_of(db, card.id).await
}

async fn card_of(
    db: &impl ConnectionTrait,
    id: Uuid,
) -> Result<pos_member_cards::Model, StoreError> {
    card(db, id)
        .await?
        .ok_or(StoreError::NotFound("member card"))
}

/// Registers an anonymous card to its holder: the cap rises to the named cap, the headroom
/// by the difference (one entry, idempotent per card). A named card registered again with
/// the same holder is a replay; with another holder a conflict.
pub async fn register_holder(
    ledger: &Ledger,
    card: &pos_member_cards::Model,
    holder_name: &str,
    holder_phone: &str,
    now: DateTime<Utc>,
) -> Result<pos_member_cards::Model, StoreError> {
    let db = ledger.db();
    if CardKind::parse(&card.kind)? == CardKind::Named {
        let same = card.holder_name.as_deref() == Some(holder_name.trim())
            && card.holder_phone.as_deref() == Some(holder_phone);
        return if same {
            Ok(card.clone())
        } else {
            Err(StoreError::Conflict(format!(
                "card {} is already registered to a holder",
                card.card_no
            )))
        };
    }
    let room = Money::from_minor(NAMED_CAP_MINOR - card.cap_minor, Currency::CNY);
    ledger
        .post_entry(crate::postings::card_capacity(
            format!(
                "member-card:{}:{}:registered",
                card.issuer_org_id, card.card_no
            ),
            &accounts_of(card),
            room,
        ))
        .await?;
    let registered = pos_member_cards::Entity::update_many()
        .col_expr(pos_member_cards::Column::Kind, Expr::value("named"))
        .col_expr(
            pos_member_cards::Column::CapMinor,
            Expr::value(NAMED_CAP_MINOR),
        )
        .col_expr(
            pos_member_cards::Column::HolderName,
            Expr::value(holder_name.trim().to_owned()),
        )
        .col_expr(
            pos_member_cards::Column::HolderPhone,
            Expr::value(holder_phone.to_owned()),
        )
        .col_expr(pos_member_cards::Column::UpdatedAt, Expr::value(now))
        .filter(pos_member_cards::Column::Id.eq(card.id))
        .filter(pos_member_cards::Column::Kind.eq("anonymous"))
        .exec(db)
        .await?;
    let card = card_of(db, card.id).await?;
    // A concurrent registration to another holder came first.
    let holder = (card.holder_name.as_deref(), card.holder_phone.as_deref());
    if registered.rows_affected == 0 && holder != (Some(holder_name.trim()), Some(holder_phone)) {
        return Err(StoreError::Conflict(format!(
            "card {} is already registered to a holder",
            card.card_no
        )));
    }
    Ok(card)
}

// ---------------------------------------------------------------------------------------
// Top-ups
// ---------------------------------------------------------------------------------------

/// Money the till loads onto a card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTopUp {
    pub terminal_order_no: String,
    pub amount: Money,
}

impl NewTopUp {
    fn request_hash(&self, card: &pos_member_cards::Model) -> String {
        let canonical = serde_json::json!({
            "order": self.terminal_order_no,
            "card": card.id,
            "amount": self.amount,
            "method": "cash",
        });
        digest_hex(canonical.to_string().as_bytes())
    }
}

/// What [`create_top_up`] found or made.
#[derive(Clone, Debug)]
pub enum TopUpCreated {
    New(pos_card_top_ups::Model),
    Replay(pos_card_top_ups::Model),
}

impl TopUpCreated {
    pub fn top_up(&self) -> &pos_card_top_ups::Model {
        match self {
            TopUpCreated::New(t) | TopUpCreated::Replay(t) => t,
        }
    }
}

async fn top_up_by_order(
    db: &impl ConnectionTrait,
    terminal_id: Uuid,
    order_no: &str,
) -> Result<Option<pos_card_top_ups::Model>, StoreError> {
    Ok(pos_card_top_ups::Entity::find()
        .filter(pos_card_top_ups::Column::TerminalId.eq(terminal_id))
        .filter(pos_card_top_ups::Column::TerminalOrderNo.eq(order_no))
        .one(db)
        .await?)
}

/// The top-up a terminal order number already made, if any: the same request is a replay,
/// another one under the number a conflict.
pub async fn existing_top_up(
    db: &impl ConnectionTrait,
    terminal_id: Uuid,
    card: &pos_member_cards::Model,
    new: &NewTopUp,
) -> Result<Option<pos_card_top_ups::Model>, StoreError> {
    match top_up_by_order(db, terminal_id, &new.terminal_order_no).await? {
        Some(t) if t.request_hash == new.request_hash(card) => Ok(Some(t)),
        Some(_) => Err(StoreError::Conflict(format!(
            "order {} was already used for a different top-up",
            new.terminal_order_no
        ))),
        None => Ok(None),
    }
}

/// Writes the top-up, pending, in the terminal's open shift (the caller re-checks the shift
/// in the same transaction); or finds the one the same order number made.
pub async fn create_top_up(
    db: &impl ConnectionTrait,
    terminal: &pos_terminals::Model,
    shift: &pos_shifts::Model,
    card: &pos_member_cards::Model,
    new: &NewTopUp,
    created_by: &str,
    now: DateTime<Utc>,
) -> Result<TopUpCreated, StoreError> {
    let row = pos_card_top_ups::ActiveModel {
        id: Set(Uuid::now_v7()),
        top_up_no: Set(crate::sales::new_payment_no()),
        card_id: Set(card.id),
        station_id: Set(terminal.station_id),
        terminal_id: Set(terminal.id),
        shift_id: Set(shift.id),
        terminal_order_no: Set(new.terminal_order_no.clone()),
        request_hash: Set(new.request_hash(card)),
        method: Set("cash".into()),
        amount_minor: Set(new
            .amount
            .minor_units()
            .map_err(|e| StoreError::Invalid(e.to_string()))?),
        currency: Set(new.amount.currency().to_string()),
        status: Set("pending".into()),
        reason: Set("created".into()),
        business_day: Set(business_day(now)),
        created_by: Set(created_by.to_owned()),
        created_at: Set(now),
        finished_at: Set(None),
    };
    let inserted = pos_card_top_ups::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([
                pos_card_top_ups::Column::TerminalId,
                pos_card_top_ups::Column::TerminalOrderNo,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    let stored = existing_top_up(db, terminal.id, card, new)
        .await?
        .ok_or(StoreError::NotFound("top-up"))?;
    Ok(if inserted == 1 {
        TopUpCreated::New(stored)
    } else {
        TopUpCreated::Replay(stored)
    })
}

async fn finish_top_up(
    db: &impl ConnectionTrait,
    top_up: &pos_card_top_ups::Model,
    status: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<pos_card_top_ups::Model, StoreError> {
    pos_card_top_ups::Entity::update_many()
        .col_expr(pos_card_top_ups::Column::Status, Expr::value(status))
        .col_expr(pos_card_top_ups::Column::Reason, Expr::value(reason))
        .col_expr(pos_card_top_ups::Column::FinishedAt, Expr::value(now))
        .filter(pos_card_top_ups::Column::Id.eq(top_up.id))
        .filter(pos_card_top_ups::Column::Status.eq("pending"))
        .exec(db)
        .await?;
    pos_card_top_ups::Entity::find_by_id(top_up.id)
        .one(db)
        .await?
        .ok_or(StoreError::NotFound("top-up"))
}

/// Books a pending top-up: the drawer takes the cash and the card holds it, unless the card
/// is blocked or the cap would be passed, in which case the top-up fails and nothing moves.
/// Idempotent by the top-up number (a retry after a crash finishes it). Returns the top-up
/// as it ends.
pub async fn book_top_up(
    ledger: &Ledger,
    top_up: &pos_card_top_ups::Model,
    card: &pos_member_cards::Model,
    now: DateTime<Utc>,
) -> Result<pos_card_top_ups::Model, StoreError> {
    let db = ledger.db();
    if top_up.status != "pending" {
        return Ok(top_up.clone());
    }
    let amount = stored_money(top_up.amount_minor, &top_up.currency)?;
    let key = format!("top-up:{}", top_up.top_up_no);
    // A booking that landed before a crash is finished, whatever the card's state now (only
    // a blocked card makes that worth a look).
    if card.status != "active" && ledger.entries_by_reference(&key).await?.is_empty() {
        return finish_top_up(db, top_up, "failed", "the card is blocked", now).await;
    }
    let drawer = crate::stations::station_account_ids(top_up.station_id).cash;
    let entry = crate::postings::card_top_up(&top_up.top_up_no, &accounts_of(card), drawer, amount);
    match ledger.post_entry(entry).await {
        Ok(_) => {
            finish_top_up(
                db,
                top_up,
                "succeeded",
                "cash into the drawer, onto the card",
                now,
            )
            .await
        }
        Err(LedgerError::ExceedsCredits { account }) if account == card.headroom_account_id => {
            let loadable = ledger.balance(card.headroom_account_id).await?.available;
            let cap = stored_money(card.cap_minor, &card.currency)?;
            let reason = format!(
                "the card may hold at most {} CNY: at most {} CNY more can be loaded",
                cap.amount(),
                loadable.amount()
            );
            finish_top_up(db, top_up, "failed", &reason, now).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The top-ups taken in a shift.
pub async fn shift_top_ups(
    db: &impl ConnectionTrait,
    shift_id: Uuid,
) -> Result<Vec<pos_card_top_ups::Model>, StoreError> {
    Ok(pos_card_top_ups::Entity::find()
        .filter(pos_card_top_ups::Column::ShiftId.eq(shift_id))
        .order_by_asc(pos_card_top_ups::Column::CreatedAt)
        .all(db)
        .await?)
}

// ---------------------------------------------------------------------------------------
// Paying and refunding by card
// ---------------------------------------------------------------------------------------

/// Names the card a member-card payment is paid from, in the payment's own transaction.
pub async fn attach_card(
    db: &impl ConnectionTrait,
    payment: &pos_payments::Model,
    card: &pos_member_cards::Model,
) -> Result<(), StoreError> {
    pos_payments::Entity::update_many()
        .col_expr(pos_payments::Column::CardId, Expr::value(card.id))
        .filter(pos_payments::Column::Id.eq(payment.id))
        .filter(pos_payments::Column::CardId.is_null())
        .exec(db)
        .await?;
    Ok(())
}

impl crate::stored_value::StoredValue for pos_member_cards::Model {
    fn label(&self) -> String {
        format!("member card {}", self.card_no)
    }

    fn accounts(&self) -> crate::postings::PayingAccounts {
        accounts_of(self).paying()
    }

    fn refusal(&self, _payment: &pos_payments::Model) -> Option<String> {
        (self.status != "active").then(|| "the card is blocked".to_owned())
    }
}

/// Books a sale paid by card: the card's balance pays the station's sales, and cannot go
/// below zero under any concurrency. Idempotent by the payment number.
pub async fn charge_card(
    ledger: &Ledger,
    payment: &pos_payments::Model,
    card: &pos_member_cards::Model,
) -> Result<crate::stored_value::Charge, StoreError> {
    crate::stored_value::charge(ledger, payment, card).await
}

/// Pays a refund of a card payment back onto the card. `Ok(Err(reason))` when the card
/// cannot take it back (its cap, with what was loaded since).
pub async fn refund_to_card(
    ledger: &Ledger,
    payment: &pos_payments::Model,
    refund: &entities::pos_refunds::Model,
) -> Result<Result<(), String>, StoreError> {
    let card_id = payment
        .card_id
        .ok_or(StoreError::NotFound("the payment's member card"))?;
    let card = card_of(ledger.db(), card_id).await?;
    crate::stored_value::give_back(ledger, payment, refund, &card).await
}

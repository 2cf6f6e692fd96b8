//! The ledger's domain types: what callers send and what they get back.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Currency, Money};

/// The side of a posting, or an account's normal side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Debit,
    Credit,
}

/// What a posting does to its account's balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Moves the posted balance.
    Post,
    /// Adds to the pending balance (a hold's reservation).
    Reserve,
    /// Takes a reservation off the pending balance (a hold posted, voided or expired).
    Release,
}

/// What kind of journal entry a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Posted,
    Pending,
    PostPending,
    VoidPending,
    ExpirePending,
}

/// Where a hold is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Pending,
    Posted,
    Voided,
    Expired,
}

macro_rules! text_enum {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The stored text of the value.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($ty))),
                }
            }
        }
    };
}

text_enum!(Side { Debit => "debit", Credit => "credit" });
text_enum!(Effect { Post => "post", Reserve => "reserve", Release => "release" });
text_enum!(EntryKind {
    Posted => "posted",
    Pending => "pending",
    PostPending => "post_pending",
    VoidPending => "void_pending",
    ExpirePending => "expire_pending",
});
text_enum!(HoldStatus { Pending => "pending", Posted => "posted", Voided => "voided", Expired => "expired" });

/// Timestamps are kept to the microsecond, the precision PostgreSQL stores.
pub(crate) fn to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// A request to open an account. Creating the same account twice (same id, same content)
/// returns the existing account; the same id with other content is a conflict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewAccount {
    pub id: Uuid,
    pub owner_org: String,
    pub code: String,
    pub name: String,
    pub currency: Currency,
    pub normal_side: Side,
    pub debits_must_not_exceed_credits: bool,
    pub credits_must_not_exceed_debits: bool,
    /// How far the constrained side may go past the other side.
    pub credit_limit: Option<Decimal>,
    pub parent_id: Option<Uuid>,
    pub metadata: serde_json::Value,
}

impl NewAccount {
    /// An unconstrained account with a fresh id.
    pub fn new(
        owner_org: impl Into<String>,
        code: impl Into<String>,
        name: impl Into<String>,
        currency: Currency,
        normal_side: Side,
    ) -> Self {
        NewAccount {
            id: Uuid::now_v7(),
            owner_org: owner_org.into(),
            code: code.into(),
            name: name.into(),
            currency,
            normal_side,
            debits_must_not_exceed_credits: false,
            credits_must_not_exceed_debits: false,
            credit_limit: None,
            parent_id: None,
            metadata: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = id;
        self
    }

    /// A balance that must not go negative: a prepaid wallet, a fleet sub-account.
    pub fn debits_must_not_exceed_credits(mut self) -> Self {
        self.debits_must_not_exceed_credits = true;
        self
    }

    pub fn credits_must_not_exceed_debits(mut self) -> Self {
        self.credits_must_not_exceed_debits = true;
        self
    }

    pub fn credit_limit(mut self, limit: Decimal) -> Self {
        self.credit_limit = Some(limit);
        self
    }

    pub fn parent(mut self, parent_id: Uuid) -> Self {
        self.parent_id = Some(parent_id);
        self
    }

    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// An account as stored, with its balances.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Account {
    pub id: Uuid,
    pub owner_org: String,
    pub code: String,
    pub name: String,
    pub currency: Currency,
    pub normal_side: Side,
    pub debits_must_not_exceed_credits: bool,
    pub credits_must_not_exceed_debits: bool,
    pub credit_limit: Option<Money>,
    pub parent_id: Option<Uuid>,
    pub closed: bool,
    pub metadata: serde_json::Value,
    pub balance: Balance,
    pub created_at: DateTime<Utc>,
}

/// An account's balances. `posted` and `available` are signed on the account's normal side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub debits_posted: Money,
    pub credits_posted: Money,
    pub debits_pending: Money,
    pub credits_pending: Money,
    /// Posted balance on the normal side (debits − credits for a debit-normal account).
    pub posted: Money,
    /// What can still be spent: posted, less pending reservations against the normal side,
    /// plus any credit limit.
    pub available: Money,
}

impl Balance {
    pub(crate) fn from_minor(
        currency: Currency,
        normal_side: Side,
        credit_limit_minor: i64,
        [dp, cp, dpe, cpe]: [i64; 4],
    ) -> Self {
        let (posted, reserved_against) = match normal_side {
            Side::Debit => (dp - cp, cpe),
            Side::Credit => (cp - dp, dpe),
        };
        let m = |minor| Money::from_minor(minor, currency);
        Balance {
            debits_posted: m(dp),
            credits_posted: m(cp),
            debits_pending: m(dpe),
            credits_pending: m(cpe),
            posted: m(posted),
            available: m(posted - reserved_against + credit_limit_minor),
        }
    }
}

/// One leg of a new entry, as the caller sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostingInput {
    pub account_id: Uuid,
    pub side: Side,
    pub amount: Decimal,
    pub currency: Currency,
}

impl PostingInput {
    pub fn debit(account_id: Uuid, amount: Decimal, currency: Currency) -> Self {
        PostingInput {
            account_id,
            side: Side::Debit,
            amount,
            currency,
        }
    }

    pub fn credit(account_id: Uuid, amount: Decimal, currency: Currency) -> Self {
        PostingInput {
            account_id,
            side: Side::Credit,
            amount,
            currency,
        }
    }
}

/// Makes a new entry a hold (two-phase): it reserves instead of posting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldTerms {
    /// After this time the hold cannot be posted and its reservation is released.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A journal entry to write: posted at once, or pending when `hold` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    pub idempotency_key: String,
    /// The document or workflow that caused the entry.
    pub reference: String,
    pub description: String,
    /// When the entry takes effect in the books; the time it is written when absent.
    pub effective_at: Option<DateTime<Utc>>,
    pub postings: Vec<PostingInput>,
    pub hold: Option<HoldTerms>,
    pub metadata: serde_json::Value,
}

impl NewEntry {
    /// A two-leg posted transfer: debit one account, credit another.
    pub fn transfer(
        idempotency_key: impl Into<String>,
        reference: impl Into<String>,
        debit: Uuid,
        credit: Uuid,
        amount: Decimal,
        currency: Currency,
    ) -> Self {
        NewEntry {
            idempotency_key: idempotency_key.into(),
            reference: reference.into(),
            description: String::new(),
            effective_at: None,
            postings: vec![
                PostingInput::debit(debit, amount, currency),
                PostingInput::credit(credit, amount, currency),
            ],
            hold: None,
            metadata: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    pub fn effective_at(mut self, at: DateTime<Utc>) -> Self {
        self.effective_at = Some(at);
        self
    }

    /// Turns the entry into a hold, optionally expiring.
    pub fn as_hold(mut self, expires_at: Option<DateTime<Utc>>) -> Self {
        self.hold = Some(HoldTerms { expires_at });
        self
    }

    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// Posts a hold in full (`amount: None`) or in part, releasing the rest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PostHold {
    pub idempotency_key: String,
    pub hold_id: Uuid,
    /// For a partial post of a single-currency hold: the amount to post. Each side's legs
    /// take their share by largest remainder, so the posted entry stays balanced.
    pub amount: Option<Decimal>,
    /// When the post takes effect in the books (the moment the pump stopped, the depot
    /// confirmed); the time it is written when absent.
    pub effective_at: Option<DateTime<Utc>>,
    /// For a post leg by leg (a hold that reserves several payments at once, some of which
    /// happened): the amount to post of each leg of the hold, in the hold's leg order, from
    /// zero (the leg is released) to the leg's amount; debits must equal credits in each
    /// currency. Excludes `amount`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legs: Option<Vec<Decimal>>,
}

impl PostHold {
    /// Posts the whole hold, effective when written.
    pub fn full(idempotency_key: impl Into<String>, hold_id: Uuid) -> Self {
        PostHold {
            idempotency_key: idempotency_key.into(),
            hold_id,
            amount: None,
            effective_at: None,
            legs: None,
        }
    }

    /// Posts each leg of the hold for the amount given (in the hold's leg order) and
    /// releases the rest, effective when written.
    pub fn by_legs(idempotency_key: impl Into<String>, hold_id: Uuid, legs: Vec<Decimal>) -> Self {
        PostHold {
            legs: Some(legs),
            ..PostHold::full(idempotency_key, hold_id)
        }
    }

    /// Posts `amount` of the hold and releases the rest, effective when written.
    pub fn partial(idempotency_key: impl Into<String>, hold_id: Uuid, amount: Decimal) -> Self {
        PostHold {
            amount: Some(amount),
            ..PostHold::full(idempotency_key, hold_id)
        }
    }

    pub fn effective_at(mut self, at: DateTime<Utc>) -> Self {
        self.effective_at = Some(at);
        self
    }
}

/// Voids a hold: its whole reservation is released.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VoidHold {
    pub idempotency_key: String,
    pub hold_id: Uuid,
}

/// What a write returns. A replay of an idempotency key returns the original entry's receipt
/// with `replayed` set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub entry_id: Uuid,
    pub kind: EntryKind,
    pub recorded_at: DateTime<Utc>,
    pub replayed: bool,
}

/// A posting as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Posting {
    pub leg: i32,
    pub account_id: Uuid,
    pub side: Side,
    pub effect: Effect,
    pub amount: Money,
}

/// A journal entry as stored, with its postings.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub id: Uuid,
    pub idempotency_key: String,
    pub kind: EntryKind,
    pub hold_id: Option<Uuid>,
    pub reference: String,
    pub description: String,
    pub effective_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub metadata: serde_json::Value,
    pub postings: Vec<Posting>,
}

/// A hold as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub entry_id: Uuid,
    pub status: HoldStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub resolved_entry_id: Option<Uuid>,
    pub resolved_at: Option<DateTime<Utc>>,
}

/// One line of an account statement: a posting and the account's balance after it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    /// The account's posting sequence number; pages continue after it.
    pub seq: i64,
    pub entry_id: Uuid,
    pub reference: String,
    pub description: String,
    pub side: Side,
    pub effect: Effect,
    pub amount: Money,
    pub effective_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// Posted balance on the account's normal side after this line.
    pub running_balance: Money,
    pub debits_pending_after: Money,
    pub credits_pending_after: Money,
}

/// A page of a statement. `next_cursor` is absent on the last page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatementPage {
    pub lines: Vec<StatementLine>,
    pub next_cursor: Option<i64>,
}

/// Sums over the whole ledger, per currency: the books balance when debits equal credits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TrialBalance {
    pub currency: Currency,
    pub debits_posted: Money,
    pub credits_posted: Money,
    pub debits_pending: Money,
    pub credits_pending: Money,
}

impl TrialBalance {
    pub fn is_balanced(&self) -> bool {
        self.debits_posted == self.credits_posted && self.debits_pending == self.credits_pending
    }
}

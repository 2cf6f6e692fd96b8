//! The ledger's one error type: every refusal is a distinct variant a caller can match on.

use uuid::Uuid;

use crate::model::HoldStatus;
use crate::money::{Currency, MoneyError};

/// Why the ledger refused a request. Nothing is written when any of these is returned.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("an entry needs at least two postings, this one has {0}")]
    TooFewPostings(usize),
    #[error("an entry may have at most {max} postings, this one has {count}")]
    TooManyPostings { count: usize, max: usize },
    #[error(
        "debits and credits differ in {currency}: {debits_minor} vs {credits_minor} minor units"
    )]
    Unbalanced {
        currency: Currency,
        debits_minor: i64,
        credits_minor: i64,
    },
    #[error("posting {leg}: {currency} posted to account {account} kept in {account_currency}")]
    CurrencyMismatch {
        leg: usize,
        account: Uuid,
        currency: Currency,
        account_currency: Currency,
    },
    #[error("posting {leg}: {source}")]
    InvalidAmount { leg: usize, source: MoneyError },
    #[error("posting {leg}: amounts must be positive")]
    NonPositiveAmount { leg: usize },
    #[error("account {0} does not exist")]
    UnknownAccount(Uuid),
    #[error("account {0} is closed")]
    AccountClosed(Uuid),
    #[error("account {account}: debits would exceed credits (plus any credit limit)")]
    ExceedsCredits { account: Uuid },
    #[error("account {account}: credits would exceed debits (plus any credit limit)")]
    ExceedsDebits { account: Uuid },
    #[error("idempotency key {key:?} was used before for a different request")]
    IdempotencyConflict { key: String },
    #[error("account {0} was created before with different content")]
    AccountConflict(Uuid),
    #[error("hold {0} does not exist")]
    UnknownHold(Uuid),
    #[error("hold {hold} is {status} already")]
    HoldNotPending { hold: Uuid, status: HoldStatus },
    #[error("hold {0} expired and can no longer be posted")]
    HoldExpired(Uuid),
    #[error("hold {hold}: cannot post {requested_minor} minor units of a {held_minor} hold")]
    ExceedsHold {
        hold: Uuid,
        requested_minor: i64,
        held_minor: i64,
    },
    #[error("hold {0} holds several currencies: only a full post is possible")]
    PartialPostOfMultiCurrencyHold(Uuid),
    #[error("account {0} still has pending holds or a non-zero balance and cannot be closed")]
    AccountNotSettled(Uuid),
    #[error("parent account {0} does not exist or is kept in another currency")]
    InvalidParent(Uuid),
    #[error("account may not forbid both debits over credits and credits over debits")]
    ConflictingFlags,
    #[error("{field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("a balance would leave the 64-bit range of the ledger")]
    Overflow,
    #[error("the ledger is shutting down")]
    ShuttingDown,
    #[error("storage error: {0}")]
    Storage(String),
}

impl LedgerError {
    /// A short stable code for logs and, later, problem+json responses.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::TooFewPostings(_) => "too_few_postings",
            LedgerError::TooManyPostings { .. } => "too_many_postings",
            LedgerError::Unbalanced { .. } => "unbalanced_entry",
            LedgerError::CurrencyMismatch { .. } => "currency_mismatch",
            LedgerError::InvalidAmount { .. } => "invalid_amount",
            LedgerError::NonPositiveAmount { .. } => "non_positive_amount",
            LedgerError::UnknownAccount(_) => "unknown_account",
            LedgerError::AccountClosed(_) => "account_closed",
            LedgerError::ExceedsCredits { .. } => "exceeds_credits",
            LedgerError::ExceedsDebits { .. } => "exceeds_debits",
            LedgerError::IdempotencyConflict { .. } => "idempotency_conflict",
            LedgerError::AccountConflict(_) => "account_conflict",
            LedgerError::UnknownHold(_) => "unknown_hold",
            LedgerError::HoldNotPending { .. } => "hold_not_pending",
            LedgerError::HoldExpired(_) => "hold_expired",
            LedgerError::ExceedsHold { .. } => "exceeds_hold",
            LedgerError::PartialPostOfMultiCurrencyHold(_) => "partial_post_multi_currency",
            LedgerError::AccountNotSettled(_) => "account_not_settled",
            LedgerError::InvalidParent(_) => "invalid_parent",
            LedgerError::ConflictingFlags => "conflicting_flags",
            LedgerError::InvalidField { .. } => "invalid_field",
            LedgerError::Overflow => "overflow",
            LedgerError::ShuttingDown => "shutting_down",
            LedgerError::Storage(_) => "storage",
        }
    }
}

impl From<sea_orm::DbErr> for LedgerError {
    fn from(err: sea_orm::DbErr) -> Self {
        LedgerError::Storage(err.to_string())
    }
}

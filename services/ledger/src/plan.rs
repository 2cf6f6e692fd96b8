//! The batch planner: pure, deterministic, shared by both storage backends.
//!
//! A batch of operations is validated and applied, in order, to a snapshot of the accounts
//! and holds it touches, read under lock inside the writing transaction. Each operation either
//! succeeds (its rows join the plan) or is refused with a typed error (it leaves no trace,
//! not even on the in-memory balances the later operations of the batch see). The storage
//! layer then writes the plan in one transaction with one balance update per account.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::LedgerError;
use crate::model::{
    Effect, EntryKind, HoldStatus, NewEntry, PostHold, Receipt, Side, VoidHold, to_micros,
};
use crate::money::{Currency, Money, allocate};

/// At most this many postings in one entry.
pub const MAX_POSTINGS: usize = 64;
/// Idempotency keys and references are at most this long.
pub const MAX_KEY_LEN: usize = 200;

/// A leg with its amount in minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leg {
    pub account_id: Uuid,
    pub side: Side,
    pub currency: Currency,
    pub amount_minor: i64,
}

/// A validated operation, ready for the writer.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Entry(Box<ValidEntry>),
    PostHold {
        key: String,
        hash: String,
        hold_id: Uuid,
        /// Checked against the hold's currency by the planner.
        amount: Option<Decimal>,
        effective_at: Option<DateTime<Utc>>,
        /// Checked against the hold's legs by the planner.
        legs: Option<Vec<Decimal>>,
    },
    VoidHold {
        key: String,
        hash: String,
        hold_id: Uuid,
    },
    ExpireHold {
        key: String,
        hash: String,
        hold_id: Uuid,
    },
    CloseAccount {
        account_id: Uuid,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct ValidEntry {
    pub key: String,
    pub hash: String,
    pub reference: String,
    pub description: String,
    pub effective_at: Option<DateTime<Utc>>,
    pub legs: Vec<Leg>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub metadata: serde_json::Value,
}

impl Op {
    pub fn key(&self) -> Option<&str> {
        match self {
            Op::Entry(e) => Some(&e.key),
            Op::PostHold { key, .. } | Op::VoidHold { key, .. } | Op::ExpireHold { key, .. } => {
                Some(key)
            }
            Op::CloseAccount { .. } => None,
        }
    }

    pub fn hold_id(&self) -> Option<Uuid> {
        match self {
            Op::PostHold { hold_id, .. }
            | Op::VoidHold { hold_id, .. }
            | Op::ExpireHold { hold_id, .. } => Some(*hold_id),
            Op::Entry(_) | Op::CloseAccount { .. } => None,
        }
    }
}

fn content_hash(value: &serde_json::Value) -> String {
    let bytes = serde_json::to_vec(value).expect("JSON values always serialise");
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_text(field: &'static str, value: &str, allow_empty: bool) -> Result<(), LedgerError> {
    if (!allow_empty && value.trim().is_empty()) || value.len() > MAX_KEY_LEN {
        return Err(LedgerError::InvalidField {
            field,
            reason: format!("must be 1 to {MAX_KEY_LEN} characters"),
        });
    }
    Ok(())
}

/// Checks everything about an entry that needs no stored state.
pub(crate) fn validate_entry(entry: NewEntry) -> Result<ValidEntry, LedgerError> {
    check_text("idempotency_key", &entry.idempotency_key, false)?;
    check_text("reference", &entry.reference, true)?;
    if entry.postings.len() < 2 {
        return Err(LedgerError::TooFewPostings(entry.postings.len()));
    }
    if entry.postings.len() > MAX_POSTINGS {
        return Err(LedgerError::TooManyPostings {
            count: entry.postings.len(),
            max: MAX_POSTINGS,
        });
    }
    let mut legs = Vec::with_capacity(entry.postings.len());
    for (leg, p) in entry.postings.iter().enumerate() {
        let money = Money::new(p.amount, p.currency)
            .map_err(|source| LedgerError::InvalidAmount { leg, source })?;
        if !money.is_positive() {
            return Err(LedgerError::NonPositiveAmount { leg });
        }
        let amount_minor = money
            .minor_units()
            .map_err(|source| LedgerError::InvalidAmount { leg, source })?;
        legs.push(Leg {
            account_id: p.account_id,
            side: p.side,
            currency: p.currency,
            amount_minor,
        });
    }
    check_balanced(&legs)?;
    let expires_at = entry.hold.as_ref().map(|h| h.expires_at.map(to_micros));
    let effective_at = entry.effective_at.map(to_micros);
    let hash = content_hash(&serde_json::json!({
        "op": "entry",
        "reference": entry.reference,
        "description": entry.description,
        "effective_at": effective_at,
        "legs": legs.iter().map(|l| (l.account_id, l.side, l.currency, l.amount_minor)).collect::<Vec<_>>(),
        "hold": expires_at.map(|e| serde_json::json!({ "expires_at": e })),
        "metadata": entry.metadata,
    }));
    Ok(ValidEntry {
        key: entry.idempotency_key,
        hash,
        reference: entry.reference,
        description: entry.description,
        effective_at,
        legs,
        expires_at,
        metadata: entry.metadata,
    })
}

pub(crate) fn validate_post(post: PostHold) -> Result<Op, LedgerError> {
    check_text("idempotency_key", &post.idempotency_key, false)?;
    if post.amount.is_some_and(|a| a <= Decimal::ZERO) {
        return Err(LedgerError::NonPositiveAmount { leg: 0 });
    }
    if let Some(legs) = &post.legs {
        if post.amount.is_some() {
            return Err(LedgerError::InvalidField {
                field: "legs",
                reason: "post by amount or by legs, not both".into(),
            });
        }
        if let Some(leg) = legs.iter().position(|a| a.is_sign_negative()) {
            return Err(LedgerError::NonPositiveAmount { leg });
        }
        if legs.iter().all(|a| a.is_zero()) {
            return Err(LedgerError::InvalidField {
                field: "legs",
                reason: "nothing to post: void the hold instead".into(),
            });
        }
    }
    let effective_at = post.effective_at.map(to_micros);
    let mut fields = serde_json::json!({
        "op": "post_hold",
        "hold_id": post.hold_id,
        "amount": post.amount.map(|a| a.normalize().to_string()),
        "effective_at": effective_at,
    });
    if let Some(legs) = &post.legs {
        fields["legs"] = legs.iter().map(|a| a.normalize().to_string()).collect();
    }
    let hash = content_hash(&fields);
    Ok(Op::PostHold {
        key: post.idempotency_key,
        hash,
        hold_id: post.hold_id,
        amount: post.amount,
        effective_at,
        legs: post.legs,
    })
}

pub(crate) fn validate_void(void: VoidHold) -> Result<Op, LedgerError> {
    check_text("idempotency_key", &void.idempotency_key, false)?;
    let hash = content_hash(&serde_json::json!({ "op": "void_hold", "hold_id": void.hold_id }));
    Ok(Op::VoidHold {
        key: void.idempotency_key,
        hash,
        hold_id: void.hold_id,
    })
}

/// The expiry of a hold has a key of its own, so that two sweepers expire it once.
pub(crate) fn expire_op(hold_id: Uuid) -> Op {
    let hash = content_hash(&serde_json::json!({ "op": "expire_hold", "hold_id": hold_id }));
    Op::ExpireHold {
        key: format!("ledger:expire-hold:{hold_id}"),
        hash,
        hold_id,
    }
}

/// Debits equal credits in every currency, for each effect separately.
pub(crate) fn check_balanced(legs: &[Leg]) -> Result<(), LedgerError> {
    let mut sums: BTreeMap<Currency, (i64, i64)> = BTreeMap::new();
    for leg in legs {
        let sum = sums.entry(leg.currency).or_default();
        let slot = match leg.side {
            Side::Debit => &mut sum.0,
            Side::Credit => &mut sum.1,
        };
        *slot = slot
            .checked_add(leg.amount_minor)
            .ok_or(LedgerError::Overflow)?;
    }
    match sums.into_iter().find(|(_, (d, c))| d != c) {
        Some((currency, (debits_minor, credits_minor))) => Err(LedgerError::Unbalanced {
            currency,
            debits_minor,
            credits_minor,
        }),
        None => Ok(()),
    }
}

/// An account as read under lock at the start of a batch, and as the batch changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccountState {
    pub id: Uuid,
    pub currency: Currency,
    pub debits_must_not_exceed_credits: bool,
    pub credits_must_not_exceed_debits: bool,
    pub credit_limit_minor: i64,
    pub closed: bool,
    pub debits_posted: i64,
    pub credits_posted: i64,
    pub debits_pending: i64,
    pub credits_pending: i64,
    pub posting_seq: i64,
}

impl AccountState {
    fn apply(&mut self, side: Side, effect: Effect, amount: i64) -> Result<(), LedgerError> {
        let slot = match (side, effect) {
            (Side::Debit, Effect::Post) => &mut self.debits_posted,
            (Side::Credit, Effect::Post) => &mut self.credits_posted,
            (Side::Debit, Effect::Reserve | Effect::Release) => &mut self.debits_pending,
            (Side::Credit, Effect::Reserve | Effect::Release) => &mut self.credits_pending,
        };
        let next = match effect {
            Effect::Post | Effect::Reserve => slot.checked_add(amount),
            Effect::Release => slot.checked_sub(amount),
        };
        *slot = next.filter(|v| *v >= 0).ok_or(LedgerError::Overflow)?;
        Ok(())
    }

    fn check_limits(&self) -> Result<(), LedgerError> {
        let over = |side: i64, other: i64| {
            i128::from(side) > i128::from(other) + i128::from(self.credit_limit_minor)
        };
        if self.debits_must_not_exceed_credits
            && over(
                self.debits_posted + self.debits_pending,
                self.credits_posted,
            )
        {
            return Err(LedgerError::ExceedsCredits { account: self.id });
        }
        if self.credits_must_not_exceed_debits
            && over(
                self.credits_posted + self.credits_pending,
                self.debits_posted,
            )
        {
            return Err(LedgerError::ExceedsDebits { account: self.id });
        }
        Ok(())
    }
}

/// A hold as read under lock, with the legs of its pending entry.
#[derive(Clone, Debug)]
pub(crate) struct HoldState {
    pub status: HoldStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub reference: String,
    pub legs: Vec<Leg>,
}

/// An entry that already holds an idempotency key.
#[derive(Clone, Debug)]
pub(crate) struct ExistingEntry {
    pub id: Uuid,
    pub hash: String,
    pub kind: EntryKind,
    pub recorded_at: DateTime<Utc>,
}

/// Everything a batch reads before it decides.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub existing: HashMap<String, ExistingEntry>,
    pub holds: HashMap<Uuid, HoldState>,
    pub accounts: HashMap<Uuid, AccountState>,
}

#[derive(Clone, Debug)]
pub(crate) struct EntryRow {
    pub id: Uuid,
    pub key: String,
    pub hash: String,
    pub kind: EntryKind,
    pub hold_id: Option<Uuid>,
    pub reference: String,
    pub description: String,
    pub effective_at: DateTime<Utc>,
    pub metadata: serde_json::Value,
}

#[derive(Clone, Debug)]
pub(crate) struct PostingRow {
    pub entry_id: Uuid,
    pub leg: i32,
    pub account_id: Uuid,
    pub currency: Currency,
    pub side: Side,
    pub effect: Effect,
    pub amount_minor: i64,
    pub account_seq: i64,
    pub after: [i64; 4],
    pub effective_at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub(crate) struct HoldRow {
    pub entry_id: Uuid,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
pub(crate) struct HoldResolution {
    pub hold_id: Uuid,
    pub status: HoldStatus,
    pub resolved_entry_id: Uuid,
}

/// The final state of an account the batch changed, and the sequence number it was read at.
#[derive(Clone, Debug)]
pub(crate) struct AccountUpdate {
    pub state: AccountState,
    pub read_seq: i64,
    pub read_closed: bool,
}

/// What a successful operation returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Entry(Receipt),
    Closed,
}

/// The rows a batch writes, and each operation's outcome, in order.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub outcomes: Vec<Result<Outcome, LedgerError>>,
    pub entries: Vec<EntryRow>,
    pub postings: Vec<PostingRow>,
    pub new_holds: Vec<HoldRow>,
    pub resolutions: Vec<HoldResolution>,
    pub accounts: Vec<AccountUpdate>,
}

impl Plan {
    pub fn writes_nothing(&self) -> bool {
        self.entries.is_empty() && self.accounts.is_empty()
    }
}

/// Accounts the batch must lock: every leg's account, including those of the holds it
/// resolves, and every account it closes. Sorted, so that lock order is the same everywhere.
pub(crate) fn accounts_to_lock(ops: &[Op], holds: &HashMap<Uuid, HoldState>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = Vec::new();
    for op in ops {
        match op {
            Op::Entry(e) => ids.extend(e.legs.iter().map(|l| l.account_id)),
            Op::CloseAccount { account_id } => ids.push(*account_id),
            other => {
                if let Some(hold) = other.hold_id().and_then(|id| holds.get(&id)) {
                    ids.extend(hold.legs.iter().map(|l| l.account_id));
                }
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// How a hold is resolved.
struct Resolution<'a> {
    key: &'a str,
    hash: &'a str,
    hold_id: Uuid,
    kind: EntryKind,
    effective_at: DateTime<Utc>,
}

struct Planner<'a> {
    snapshot: &'a mut Snapshot,
    now: DateTime<Utc>,
    plan: Plan,
    /// Sequence number and closed flag of each account as read.
    read: HashMap<Uuid, (i64, bool)>,
    /// Keys written earlier in this batch.
    written: HashMap<String, ExistingEntry>,
}

/// Applies `ops` in order to `snapshot`. Pure: the same inputs give the same plan.
pub(crate) fn plan(ops: &[Op], snapshot: &mut Snapshot, now: DateTime<Utc>) -> Plan {
    let read = snapshot
        .accounts
        .values()
        .map(|a| (a.id, (a.posting_seq, a.closed)))
        .collect();
    let mut planner = Planner {
        snapshot,
        now,
        plan: Plan::default(),
        read,
        written: HashMap::new(),
    };
    for op in ops {
        let outcome = planner.apply(op);
        planner.plan.outcomes.push(outcome);
    }
    let mut plan = planner.plan;
    let mut changed: Vec<AccountUpdate> = planner
        .snapshot
        .accounts
        .values()
        .filter_map(|state| {
            let (read_seq, read_closed) = planner.read[&state.id];
            (state.posting_seq != read_seq || state.closed != read_closed).then(|| AccountUpdate {
                state: state.clone(),
                read_seq,
                read_closed,
            })
        })
        .collect();
    changed.sort_by_key(|u| u.state.id);
    plan.accounts = changed;
    plan
}

impl Planner<'_> {
    fn apply(&mut self, op: &Op) -> Result<Outcome, LedgerError> {
        if let Some(key) = op.key() {
            let hash = match op {
                Op::Entry(e) => &e.hash,
                Op::PostHold { hash, .. }
                | Op::VoidHold { hash, .. }
                | Op::ExpireHold { hash, .. } => hash,
                Op::CloseAccount { .. } => unreachable!("close has no key"),
            };
            let earlier = self
                .written
                .get(key)
                .or_else(|| self.snapshot.existing.get(key));
            if let Some(earlier) = earlier {
                if &earlier.hash != hash {
                    return Err(LedgerError::IdempotencyConflict {
                        key: key.to_owned(),
                    });
                }
                return Ok(Outcome::Entry(Receipt {
                    entry_id: earlier.id,
                    kind: earlier.kind,
                    recorded_at: earlier.recorded_at,
                    replayed: true,
                }));
            }
        }
        match op {
            Op::Entry(entry) => self.new_entry(entry),
            Op::PostHold {
                key,
                hash,
                hold_id,
                amount,
                effective_at,
                legs,
            } => {
                let hold = self.pending_hold(*hold_id)?;
                if hold.expires_at.is_some_and(|at| at <= self.now) {
                    return Err(LedgerError::HoldExpired(*hold_id));
                }
                let posted = match legs {
                    Some(amounts) => post_by_legs(*hold_id, &hold.legs, amounts)?,
                    None => post_legs(*hold_id, &hold.legs, *amount)?,
                };
                let effective_at = effective_at.unwrap_or(self.now);
                let resolution = Resolution {
                    key,
                    hash,
                    hold_id: *hold_id,
                    kind: EntryKind::PostPending,
                    effective_at,
                };
                self.resolve(resolution, hold, posted)
            }
            Op::VoidHold { key, hash, hold_id } => {
                let hold = self.pending_hold(*hold_id)?;
                let resolution = Resolution {
                    key,
                    hash,
                    hold_id: *hold_id,
                    kind: EntryKind::VoidPending,
                    effective_at: self.now,
                };
                self.resolve(resolution, hold, Vec::new())
            }
            Op::ExpireHold { key, hash, hold_id } => {
                let hold = self.pending_hold(*hold_id)?;
                if hold.expires_at.is_none_or(|at| at > self.now) {
                    return Err(LedgerError::InvalidField {
                        field: "hold_id",
                        reason: format!("hold {hold_id} is not due to expire"),
                    });
                }
                let resolution = Resolution {
                    key,
                    hash,
                    hold_id: *hold_id,
                    kind: EntryKind::ExpirePending,
                    effective_at: self.now,
                };
                self.resolve(resolution, hold, Vec::new())
            }
            Op::CloseAccount { account_id } => self.close(*account_id),
        }
    }

    fn pending_hold(&self, hold_id: Uuid) -> Result<HoldState, LedgerError> {
        let hold = self
            .snapshot
            .holds
            .get(&hold_id)
            .ok_or(LedgerError::UnknownHold(hold_id))?;
        if hold.status != HoldStatus::Pending {
            return Err(LedgerError::HoldNotPending {
                hold: hold_id,
                status: hold.status,
            });
        }
        Ok(hold.clone())
    }

    fn new_entry(&mut self, entry: &ValidEntry) -> Result<Outcome, LedgerError> {
        let effect = if entry.expires_at.is_some() {
            Effect::Reserve
        } else {
            Effect::Post
        };
        let kind = if entry.expires_at.is_some() {
            EntryKind::Pending
        } else {
            EntryKind::Posted
        };
        for (index, leg) in entry.legs.iter().enumerate() {
            let account = self
                .snapshot
                .accounts
                .get(&leg.account_id)
                .ok_or(LedgerError::UnknownAccount(leg.account_id))?;
            if account.closed {
                return Err(LedgerError::AccountClosed(leg.account_id));
            }
            if account.currency != leg.currency {
                return Err(LedgerError::CurrencyMismatch {
                    leg: index,
                    account: leg.account_id,
                    currency: leg.currency,
                    account_currency: account.currency,
                });
            }
        }
        let legs: Vec<(Leg, Effect)> = entry.legs.iter().map(|l| (l.clone(), effect)).collect();
        let row = EntryRow {
            id: Uuid::now_v7(),
            key: entry.key.clone(),
            hash: entry.hash.clone(),
            kind,
            hold_id: None,
            reference: entry.reference.clone(),
            description: entry.description.clone(),
            effective_at: entry.effective_at.unwrap_or(self.now),
            metadata: entry.metadata.clone(),
        };
        let receipt = self.write(row, &legs)?;
        if let Some(expires_at) = entry.expires_at {
            self.snapshot.holds.insert(
                receipt.entry_id,
                HoldState {
                    status: HoldStatus::Pending,
                    expires_at,
                    reference: entry.reference.clone(),
                    legs: entry.legs.clone(),
                },
            );
            self.plan.new_holds.push(HoldRow {
                entry_id: receipt.entry_id,
                expires_at,
            });
        }
        Ok(Outcome::Entry(receipt))
    }

    fn resolve(
        &mut self,
        resolution: Resolution<'_>,
        hold: HoldState,
        posted: Vec<Leg>,
    ) -> Result<Outcome, LedgerError> {
        let Resolution {
            key,
            hash,
            hold_id,
            kind,
            effective_at,
        } = resolution;
        let mut legs: Vec<(Leg, Effect)> = hold
            .legs
            .iter()
            .map(|l| (l.clone(), Effect::Release))
            .collect();
        legs.extend(posted.into_iter().map(|l| (l, Effect::Post)));
        let row = EntryRow {
            id: Uuid::now_v7(),
            key: key.to_owned(),
            hash: hash.to_owned(),
            kind,
            hold_id: Some(hold_id),
            reference: hold.reference.clone(),
            description: String::new(),
            effective_at,
            metadata: serde_json::Value::Object(Default::default()),
        };
        let receipt = self.write(row, &legs)?;
        let status = match kind {
            EntryKind::PostPending => HoldStatus::Posted,
            EntryKind::VoidPending => HoldStatus::Voided,
            EntryKind::ExpirePending => HoldStatus::Expired,
            EntryKind::Posted | EntryKind::Pending => unreachable!("not a resolution"),
        };
        if let Some(state) = self.snapshot.holds.get_mut(&hold_id) {
            state.status = status;
        }
        self.plan.resolutions.push(HoldResolution {
            hold_id,
            status,
            resolved_entry_id: receipt.entry_id,
        });
        Ok(Outcome::Entry(receipt))
    }

    /// Applies the legs to copies of their accounts, checks every limit, and only then makes
    /// the change visible to the rest of the batch and adds the rows to the plan.
    fn write(&mut self, row: EntryRow, legs: &[(Leg, Effect)]) -> Result<Receipt, LedgerError> {
        for effect in [Effect::Post, Effect::Reserve, Effect::Release] {
            let group: Vec<Leg> = legs
                .iter()
                .filter(|(_, e)| *e == effect)
                .map(|(l, _)| l.clone())
                .collect();
            // The second check of balance (the first ran at validation): TIGER_STYLE's two paths.
            check_balanced(&group)?;
        }
        let mut scratch: BTreeMap<Uuid, AccountState> = BTreeMap::new();
        let mut postings = Vec::with_capacity(legs.len());
        for (index, (leg, effect)) in legs.iter().enumerate() {
            let account = match scratch.get_mut(&leg.account_id) {
                Some(a) => a,
                None => {
                    let current = self
                        .snapshot
                        .accounts
                        .get(&leg.account_id)
                        .ok_or(LedgerError::UnknownAccount(leg.account_id))?
                        .clone();
                    scratch.entry(leg.account_id).or_insert(current)
                }
            };
            account.apply(leg.side, *effect, leg.amount_minor)?;
            account.posting_seq += 1;
            postings.push(PostingRow {
                entry_id: row.id,
                leg: i32::try_from(index).expect("entries have at most MAX_POSTINGS legs"),
                account_id: leg.account_id,
                currency: leg.currency,
                side: leg.side,
                effect: *effect,
                amount_minor: leg.amount_minor,
                account_seq: account.posting_seq,
                after: [
                    account.debits_posted,
                    account.credits_posted,
                    account.debits_pending,
                    account.credits_pending,
                ],
                effective_at: row.effective_at,
            });
        }
        for account in scratch.values() {
            account.check_limits()?;
        }
        for (id, account) in scratch {
            self.snapshot.accounts.insert(id, account);
        }
        let receipt = Receipt {
            entry_id: row.id,
            kind: row.kind,
            recorded_at: self.now,
            replayed: false,
        };
        self.written.insert(
            row.key.clone(),
            ExistingEntry {
                id: row.id,
                hash: row.hash.clone(),
                kind: row.kind,
                recorded_at: self.now,
            },
        );
        self.plan.entries.push(row);
        self.plan.postings.extend(postings);
        Ok(receipt)
    }

    fn close(&mut self, account_id: Uuid) -> Result<Outcome, LedgerError> {
        let account = self
            .snapshot
            .accounts
            .get_mut(&account_id)
            .ok_or(LedgerError::UnknownAccount(account_id))?;
        if account.closed {
            return Ok(Outcome::Closed);
        }
        if account.debits_pending != 0
            || account.credits_pending != 0
            || account.debits_posted != account.credits_posted
        {
            return Err(LedgerError::AccountNotSettled(account_id));
        }
        account.closed = true;
        Ok(Outcome::Closed)
    }
}

/// The legs a post of `hold` leg by leg writes: each leg for its amount (none for zero),
/// never above the leg, debits equal to credits in each currency.
fn post_by_legs(hold_id: Uuid, legs: &[Leg], amounts: &[Decimal]) -> Result<Vec<Leg>, LedgerError> {
    if amounts.len() != legs.len() {
        return Err(LedgerError::InvalidField {
            field: "legs",
            reason: format!(
                "hold {hold_id} has {} legs, {} amounts given",
                legs.len(),
                amounts.len()
            ),
        });
    }
    let mut out = Vec::with_capacity(legs.len());
    for (n, (leg, amount)) in legs.iter().zip(amounts).enumerate() {
        let money = Money::new(*amount, leg.currency)
            .map_err(|source| LedgerError::InvalidAmount { leg: n, source })?;
        let amount_minor = money
            .minor_units()
            .map_err(|source| LedgerError::InvalidAmount { leg: n, source })?;
        if amount_minor > leg.amount_minor {
            return Err(LedgerError::ExceedsHold {
                hold: hold_id,
                requested_minor: amount_minor,
                held_minor: leg.amount_minor,
            });
        }
        if amount_minor > 0 {
            out.push(Leg {
                amount_minor,
                ..leg.clone()
            });
        }
    }
    check_balanced(&out)?;
    Ok(out)
}

/// The legs a post of `hold` writes: all of them, or `amount` shared out by largest remainder
/// over the debit legs and, separately, over the credit legs.
fn post_legs(
    hold_id: Uuid,
    legs: &[Leg],
    amount: Option<Decimal>,
) -> Result<Vec<Leg>, LedgerError> {
    let Some(amount) = amount else {
        return Ok(legs.to_vec());
    };
    let currency = legs[0].currency;
    if legs.iter().any(|l| l.currency != currency) {
        return Err(LedgerError::PartialPostOfMultiCurrencyHold(hold_id));
    }
    let money = Money::new(amount, currency)
        .map_err(|source| LedgerError::InvalidAmount { leg: 0, source })?;
    let requested_minor = money
        .minor_units()
        .map_err(|source| LedgerError::InvalidAmount { leg: 0, source })?;
    let held_minor: i64 = legs
        .iter()
        .filter(|l| l.side == Side::Debit)
        .map(|l| l.amount_minor)
        .sum();
    if requested_minor > held_minor {
        return Err(LedgerError::ExceedsHold {
            hold: hold_id,
            requested_minor,
            held_minor,
        });
    }
    let mut out = Vec::with_capacity(legs.len());
    for side in [Side::Debit, Side::Credit] {
        let side_legs: Vec<&Leg> = legs.iter().filter(|l| l.side == side).collect();
        let weights: Vec<Decimal> = side_legs
            .iter()
            .map(|l| Decimal::from(l.amount_minor))
            .collect();
        let shares = allocate(money, &weights)
            .map_err(|source| LedgerError::InvalidAmount { leg: 0, source })?;
        for (leg, share) in side_legs.into_iter().zip(shares) {
            let amount_minor = share
                .minor_units()
                .map_err(|source| LedgerError::InvalidAmount { leg: 0, source })?;
            if amount_minor > 0 {
                out.push(Leg {
                    amount_minor,
                    ..leg.clone()
                });
            }
        }
    }
    Ok(out)
}

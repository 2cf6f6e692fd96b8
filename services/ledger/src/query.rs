//! The read side: accounts, balances, statements, entries, holds, and the audit.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, ExprTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, Value,
};
use serde::Serialize;
use uuid::Uuid;

use entities::{ledger_accounts, ledger_entries, ledger_holds, ledger_postings};

use crate::error::LedgerError;
use crate::model::{
    Account, Balance, Entry, Hold, NewAccount, Posting, Side, StatementLine, StatementPage,
    TrialBalance,
};
use crate::money::{Currency, Money};
use crate::store;

/// Longest statement page.
pub const MAX_PAGE: u64 = 1_000;

pub(crate) async fn create_account(
    db: &DatabaseConnection,
    new: NewAccount,
    now: DateTime<Utc>,
) -> Result<Account, LedgerError> {
    for (field, value) in [
        ("owner_org", &new.owner_org),
        ("code", &new.code),
        ("name", &new.name),
    ] {
        if value.trim().is_empty() || value.len() > 200 {
            return Err(LedgerError::InvalidField {
                field,
                reason: "must be 1 to 200 characters".into(),
            });
        }
    }
    if new.debits_must_not_exceed_credits && new.credits_must_not_exceed_debits {
        return Err(LedgerError::ConflictingFlags);
    }
    let credit_limit_minor = match new.credit_limit {
        None => None,
        Some(limit) => {
            let money = Money::new(limit, new.currency)
                .map_err(|source| LedgerError::InvalidAmount { leg: 0, source })?;
            if limit.is_sign_negative() {
                return Err(LedgerError::NonPositiveAmount { leg: 0 });
            }
            Some(
                money
                    .minor_units()
                    .map_err(|source| LedgerError::InvalidAmount { leg: 0, source })?,
            )
        }
    };
    if let Some(parent_id) = new.parent_id {
        let parent = ledger_accounts::Entity::find_by_id(parent_id)
            .one(db)
            .await?;
        if parent.is_none_or(|p| p.currency != new.currency.code()) {
            return Err(LedgerError::InvalidParent(parent_id));
        }
    }
    let hash = {
        use sha2::{Digest, Sha256};
        let bytes = serde_json::to_vec(&new).expect("accounts serialise");
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    if let Some(existing) = ledger_accounts::Entity::find_by_id(new.id).one(db).await? {
        return same_account(existing, &hash);
    }
    let model = crate::account_model(&new, credit_limit_minor, hash.clone(), now);
    match ledger_accounts::Entity::insert(model)
        .exec_without_returning(db)
        .await
    {
        Ok(_) => {}
        // A concurrent creation of the same id won the race: compare with what it wrote.
        Err(err)
            if err.to_string().to_lowercase().contains("unique")
                || err.to_string().contains("duplicate key") => {}
        Err(err) => return Err(err.into()),
    }
    let stored = ledger_accounts::Entity::find_by_id(new.id)
        .one(db)
        .await?
        .ok_or(LedgerError::UnknownAccount(new.id))?;
    same_account(stored, &hash)
}

fn same_account(stored: ledger_accounts::Model, hash: &str) -> Result<Account, LedgerError> {
    if stored.content_hash != hash {
        return Err(LedgerError::AccountConflict(stored.id));
    }
    to_account(stored)
}

/// Reads an account row as selected by a caller's own query (the API lists the accounts of an
/// organisation subtree with one query of its own); the balances are computed as everywhere
/// else in the ledger.
impl TryFrom<ledger_accounts::Model> for Account {
    type Error = LedgerError;

    fn try_from(m: ledger_accounts::Model) -> Result<Account, LedgerError> {
        to_account(m)
    }
}

fn to_account(m: ledger_accounts::Model) -> Result<Account, LedgerError> {
    let currency = store::currency(&m.currency)?;
    let normal_side: Side = m.normal_side.parse().map_err(LedgerError::Storage)?;
    let limit = m.credit_limit_minor.unwrap_or(0);
    let balance = Balance::from_minor(
        currency,
        normal_side,
        limit,
        [
            m.debits_posted,
            m.credits_posted,
            m.debits_pending,
            m.credits_pending,
        ],
    );
    Ok(Account {
        id: m.id,
        owner_org: m.owner_org,
        code: m.code,
        name: m.name,
        currency,
        normal_side,
        debits_must_not_exceed_credits: m.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits: m.credits_must_not_exceed_debits,
        credit_limit: m.credit_limit_minor.map(|l| Money::from_minor(l, currency)),
        parent_id: m.parent_id,
        closed: m.closed,
        metadata: m.metadata,
        balance,
        created_at: m.created_at,
    })
}

pub(crate) async fn account(db: &DatabaseConnection, id: Uuid) -> Result<Account, LedgerError> {
    let model = ledger_accounts::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(LedgerError::UnknownAccount(id))?;
    to_account(model)
}

/// Rewrites `$n` placeholders as SQLite's `?n`.
fn sql(backend: DbBackend, text: &str) -> String {
    match backend {
        DbBackend::Sqlite => text.replace('$', "?"),
        _ => text.to_owned(),
    }
}

const SUMS_AS_OF: &str = "SELECT \
    CAST(COALESCE(SUM(CASE WHEN effect = 'post' AND side = 'debit' THEN amount_minor END), 0) AS BIGINT), \
    CAST(COALESCE(SUM(CASE WHEN effect = 'post' AND side = 'credit' THEN amount_minor END), 0) AS BIGINT), \
    CAST(COALESCE(SUM(CASE WHEN effect <> 'post' AND side = 'debit' THEN \
        CASE WHEN effect = 'reserve' THEN amount_minor ELSE -amount_minor END END), 0) AS BIGINT), \
    CAST(COALESCE(SUM(CASE WHEN effect <> 'post' AND side = 'credit' THEN \
        CASE WHEN effect = 'reserve' THEN amount_minor ELSE -amount_minor END END), 0) AS BIGINT) \
    FROM ledger_postings WHERE account_id = $1 AND effective_at <= $2";

pub(crate) async fn balance_as_of(
    db: &DatabaseConnection,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Balance, LedgerError> {
    let account = account(db, id).await?;
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql(backend, SUMS_AS_OF),
            [Value::from(id), Value::from(at)],
        ))
        .await?
        .ok_or_else(|| LedgerError::Storage("balance query returned no row".into()))?;
    let sums: [i64; 4] = [
        row.try_get_by_index(0)?,
        row.try_get_by_index(1)?,
        row.try_get_by_index(2)?,
        row.try_get_by_index(3)?,
    ];
    let limit = account
        .credit_limit
        .map(|l| l.minor_units().unwrap_or(0))
        .unwrap_or(0);
    Ok(Balance::from_minor(
        account.currency,
        account.normal_side,
        limit,
        sums,
    ))
}

/// Which page of which account's statement.
#[derive(Clone, Debug)]
pub struct StatementQuery {
    pub account_id: Uuid,
    /// The `seq` of the last line already seen; the first page when absent.
    pub after: Option<i64>,
    /// Lines per page, at most [`MAX_PAGE`].
    pub limit: u64,
}

pub(crate) async fn statement(
    db: &DatabaseConnection,
    q: StatementQuery,
) -> Result<StatementPage, LedgerError> {
    let account = account(db, q.account_id).await?;
    let limit = q.limit.clamp(1, MAX_PAGE);
    let postings = ledger_postings::Entity::find()
        .filter(ledger_postings::Column::AccountId.eq(q.account_id))
        .filter(ledger_postings::Column::AccountSeq.gt(q.after.unwrap_or(0)))
        .order_by_asc(ledger_postings::Column::AccountSeq)
        .limit(limit + 1)
        .all(db)
        .await?;
    let has_more = postings.len() as u64 > limit;
    let postings: Vec<_> = postings.into_iter().take(limit as usize).collect();
    let entry_ids: Vec<Uuid> = postings.iter().map(|p| p.entry_id).collect();
    let entries: HashMap<Uuid, ledger_entries::Model> = ledger_entries::Entity::find()
        .filter(ledger_entries::Column::Id.is_in(entry_ids))
        .all(db)
        .await?
        .into_iter()
        .map(|e| (e.id, e))
        .collect();
    let currency = account.currency;
    let m = |minor| Money::from_minor(minor, currency);
    let mut lines = Vec::with_capacity(postings.len());
    for p in postings {
        let entry = entries
            .get(&p.entry_id)
            .ok_or_else(|| LedgerError::Storage(format!("posting without entry {}", p.entry_id)))?;
        let (side, effect) = store::posting_parts(&p.side, &p.effect)?;
        let running = match account.normal_side {
            Side::Debit => p.debits_posted_after - p.credits_posted_after,
            Side::Credit => p.credits_posted_after - p.debits_posted_after,
        };
        lines.push(StatementLine {
            seq: p.account_seq,
            entry_id: p.entry_id,
            reference: entry.reference.clone(),
            description: entry.description.clone(),
            side,
            effect,
            amount: m(p.amount_minor),
            effective_at: p.effective_at,
            recorded_at: entry.recorded_at,
            running_balance: m(running),
            debits_pending_after: m(p.debits_pending_after),
            credits_pending_after: m(p.credits_pending_after),
        });
    }
    let next_cursor = if has_more {
        lines.last().map(|l| l.seq)
    } else {
        None
    };
    Ok(StatementPage { lines, next_cursor })
}

pub(crate) enum EntryFilter {
    Id(Uuid),
    Reference(String),
}

/// Most entries one reference query returns.
const MAX_ENTRIES_BY_REFERENCE: u64 = 10_000;

pub(crate) async fn entries(
    db: &DatabaseConnection,
    filter: EntryFilter,
) -> Result<Vec<Entry>, LedgerError> {
    let select = match filter {
        EntryFilter::Id(id) => ledger_entries::Entity::find_by_id(id),
        EntryFilter::Reference(r) => {
            ledger_entries::Entity::find().filter(ledger_entries::Column::Reference.eq(r))
        }
    };
    let models = select
        .order_by_asc(ledger_entries::Column::RecordedAt)
        .order_by_asc(ledger_entries::Column::Id)
        .limit(MAX_ENTRIES_BY_REFERENCE)
        .all(db)
        .await?;
    let ids: Vec<Uuid> = models.iter().map(|e| e.id).collect();
    let mut postings: HashMap<Uuid, Vec<Posting>> = HashMap::new();
    for p in ledger_postings::Entity::find()
        .filter(ledger_postings::Column::EntryId.is_in(ids))
        .order_by_asc(ledger_postings::Column::EntryId)
        .order_by_asc(ledger_postings::Column::Leg)
        .all(db)
        .await?
    {
        let (side, effect) = store::posting_parts(&p.side, &p.effect)?;
        let currency = store::currency(&p.currency)?;
        postings.entry(p.entry_id).or_default().push(Posting {
            leg: p.leg,
            account_id: p.account_id,
            side,
            effect,
            amount: Money::from_minor(p.amount_minor, currency),
        });
    }
    models
        .into_iter()
        .map(|e| {
            Ok(Entry {
                kind: store::entry_kind(&e.kind)?,
                postings: postings.remove(&e.id).unwrap_or_default(),
                id: e.id,
                idempotency_key: e.idempotency_key,
                hold_id: e.hold_id,
                reference: e.reference,
                description: e.description,
                effective_at: e.effective_at,
                recorded_at: e.recorded_at,
                metadata: e.metadata,
            })
        })
        .collect()
}

pub(crate) async fn hold(db: &DatabaseConnection, id: Uuid) -> Result<Option<Hold>, LedgerError> {
    let Some(h) = ledger_holds::Entity::find_by_id(id).one(db).await? else {
        return Ok(None);
    };
    Ok(Some(Hold {
        entry_id: h.entry_id,
        status: h.status.parse().map_err(LedgerError::Storage)?,
        expires_at: h.expires_at,
        resolved_entry_id: h.resolved_entry_id,
        resolved_at: h.resolved_at,
    }))
}

pub(crate) async fn trial_balance(
    db: &DatabaseConnection,
) -> Result<Vec<TrialBalance>, LedgerError> {
    let accounts = all_accounts(db).await?;
    let mut sums: BTreeMap<Currency, [i128; 4]> = BTreeMap::new();
    for a in &accounts {
        let s = sums.entry(store::currency(&a.currency)?).or_default();
        for (slot, v) in s.iter_mut().zip([
            a.debits_posted,
            a.credits_posted,
            a.debits_pending,
            a.credits_pending,
        ]) {
            *slot += i128::from(v);
        }
    }
    sums.into_iter()
        .map(|(currency, s)| {
            let m = |v: i128| {
                i64::try_from(v)
                    .map(|minor| Money::from_minor(minor, currency))
                    .map_err(|_| LedgerError::Overflow)
            };
            Ok(TrialBalance {
                currency,
                debits_posted: m(s[0])?,
                credits_posted: m(s[1])?,
                debits_pending: m(s[2])?,
                credits_pending: m(s[3])?,
            })
        })
        .collect()
}

async fn all_accounts(db: &DatabaseConnection) -> Result<Vec<ledger_accounts::Model>, LedgerError> {
    Ok(ledger_accounts::Entity::find().all(db).await?)
}

/// What the audit found. Empty `problems` means the books are consistent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditReport {
    pub accounts: usize,
    pub postings: usize,
    pub problems: Vec<String>,
}

/// Postings are read in pages of this many rows.
const AUDIT_PAGE: u64 = 10_000;

pub(crate) async fn audit(db: &DatabaseConnection) -> Result<AuditReport, LedgerError> {
    let accounts = all_accounts(db).await?;
    // Per account: recomputed balances, highest sequence seen, and postings counted.
    let mut seen: HashMap<Uuid, ([i64; 4], i64, i64)> = HashMap::new();
    let mut report = AuditReport {
        accounts: accounts.len(),
        ..Default::default()
    };
    let limits: HashMap<Uuid, (bool, bool, i64)> = accounts
        .iter()
        .map(|a| {
            let limit = a.credit_limit_minor.unwrap_or(0);
            (
                a.id,
                (
                    a.debits_must_not_exceed_credits,
                    a.credits_must_not_exceed_debits,
                    limit,
                ),
            )
        })
        .collect();
    let mut last: Option<(Uuid, i32)> = None;
    let mut entry_legs: Vec<(Uuid, Uuid, [i64; 4])> = Vec::new();
    // Balances recorded on each posting, by (account, sequence).
    let mut latest: HashMap<(Uuid, i64), [i64; 4]> = HashMap::new();
    loop {
        let mut select = ledger_postings::Entity::find()
            .order_by_asc(ledger_postings::Column::EntryId)
            .order_by_asc(ledger_postings::Column::Leg)
            .limit(AUDIT_PAGE);
        if let Some((entry, leg)) = last {
            select = select.filter(
                ledger_postings::Column::EntryId
                    .gt(entry)
                    .or(ledger_postings::Column::EntryId
                        .eq(entry)
                        .and(ledger_postings::Column::Leg.gt(leg))),
            );
        }
        let page = select.all(db).await?;
        let Some(tail) = page.last() else { break };
        last = Some((tail.entry_id, tail.leg));
        for p in &page {
            report.postings += 1;
            let (side, effect) = store::posting_parts(&p.side, &p.effect)?;
            let slot = seen.entry(p.account_id).or_default();
            let index = match (side, effect) {
                (Side::Debit, crate::Effect::Post) => 0,
                (Side::Credit, crate::Effect::Post) => 1,
                (Side::Debit, _) => 2,
                (Side::Credit, _) => 3,
            };
            let delta = if effect == crate::Effect::Release {
                -p.amount_minor
            } else {
                p.amount_minor
            };
            slot.0[index] += delta;
            slot.1 = std::cmp::max(slot.1, p.account_seq);
            slot.2 += 1;
            // An entry's legs apply one after another, but limits bind on what the whole
            // entry leaves: check each account's last posting of each entry.
            if entry_legs
                .first()
                .is_some_and(|(entry, _, _)| *entry != p.entry_id)
            {
                check_entry_limits(&entry_legs, &limits, &mut report);
                entry_legs.clear();
            }
            entry_legs.push((
                p.entry_id,
                p.account_id,
                [
                    p.debits_posted_after,
                    p.credits_posted_after,
                    p.debits_pending_after,
                    p.credits_pending_after,
                ],
            ));
            latest.insert(
                (p.account_id, p.account_seq),
                [
                    p.debits_posted_after,
                    p.credits_posted_after,
                    p.debits_pending_after,
                    p.credits_pending_after,
                ],
            );
        }
    }
    check_entry_limits(&entry_legs, &limits, &mut report);
    for a in &accounts {
        let stored = [
            a.debits_posted,
            a.credits_posted,
            a.debits_pending,
            a.credits_pending,
        ];
        let (sums, max_seq, count) = seen.remove(&a.id).unwrap_or_default();
        if sums != stored {
            report.problems.push(format!(
                "account {} ({}): stored balances {stored:?} but postings sum to {sums:?}",
                a.id, a.code
            ));
        }
        if a.posting_seq > 0 && latest.get(&(a.id, a.posting_seq)) != Some(&stored) {
            report.problems.push(format!(
                "account {} ({}): its last posting does not record its current balances",
                a.id, a.code
            ));
        }
        // Sequence numbers are unique per account (the schema says so), so a count equal to
        // the highest number means they run 1..=n without a gap.
        if max_seq != a.posting_seq || count != a.posting_seq {
            report.problems.push(format!(
                "account {} ({}): posting_seq {} but {count} postings up to seq {max_seq}",
                a.id, a.code, a.posting_seq
            ));
        }
        let limit = a.credit_limit_minor.unwrap_or(0);
        if a.debits_must_not_exceed_credits
            && a.debits_posted + a.debits_pending > a.credits_posted + limit
        {
            report.problems.push(format!(
                "account {} ({}): debits exceed credits",
                a.id, a.code
            ));
        }
        if a.credits_must_not_exceed_debits
            && a.credits_posted + a.credits_pending > a.debits_posted + limit
        {
            report.problems.push(format!(
                "account {} ({}): credits exceed debits",
                a.id, a.code
            ));
        }
    }
    for orphan in seen.keys() {
        report
            .problems
            .push(format!("postings reference unknown account {orphan}"));
    }
    let backend = db.get_database_backend();
    let orphans = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT CAST((SELECT count(*) FROM ledger_postings p WHERE NOT EXISTS \
             (SELECT 1 FROM ledger_entries e WHERE e.id = p.entry_id)) AS BIGINT), \
             CAST((SELECT count(*) FROM ledger_entries e WHERE NOT EXISTS \
             (SELECT 1 FROM ledger_postings p WHERE p.entry_id = e.id)) AS BIGINT)",
        ))
        .await?
        .ok_or_else(|| LedgerError::Storage("audit query returned no row".into()))?;
    let (postings_without_entry, entries_without_postings): (i64, i64) =
        (orphans.try_get_by_index(0)?, orphans.try_get_by_index(1)?);
    if postings_without_entry > 0 || entries_without_postings > 0 {
        report.problems.push(format!(
            "{postings_without_entry} postings without an entry, {entries_without_postings} entries without postings"
        ));
    }
    for tb in trial_balance(db).await? {
        if !tb.is_balanced() {
            report.problems.push(format!(
                "trial balance in {} does not balance: {tb:?}",
                tb.currency
            ));
        }
    }
    Ok(report)
}

/// Checks the balances each account was left with by one entry against its limits.
fn check_entry_limits(
    legs: &[(Uuid, Uuid, [i64; 4])],
    limits: &HashMap<Uuid, (bool, bool, i64)>,
    report: &mut AuditReport,
) {
    let mut last: HashMap<Uuid, [i64; 4]> = HashMap::new();
    for (_, account, after) in legs {
        last.insert(*account, *after);
    }
    for (account, [dp, cp, dpe, cpe]) in last {
        if let Some(&(debit_limited, credit_limited, limit)) = limits.get(&account)
            && ((debit_limited && dp + dpe > cp + limit)
                || (credit_limited && cp + cpe > dp + limit))
        {
            let entry = legs[0].0;
            report.problems.push(format!(
                "entry {entry} took account {account} past its limit"
            ));
        }
    }
}

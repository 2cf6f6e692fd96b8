//! Storage of a batch: reads under lock, then one write of the whole plan.
//!
//! PostgreSQL runs a batch in five round trips whatever its size: `BEGIN`, the idempotency
//! lookup, the account lock (`SELECT … ORDER BY id FOR UPDATE`), one statement that inserts
//! every entry, posting and hold and updates every account once (data-modifying CTEs fed by
//! `jsonb_to_recordset`, so the statement text never changes and stays prepared), and
//! `COMMIT`. SQLite, in process, runs the same plan through sea-orm inside an `IMMEDIATE`
//! transaction, which takes the database's write lock before the first read.
//!
//! Both guard every account update with the posting sequence the batch read
//! (`WHERE posting_seq = read_seq`) and fail the batch if any row did not match: a second,
//! independent check that no other writer slipped in between read and write.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QuerySelect, Statement, Value,
};
use uuid::Uuid;

use entities::{ledger_accounts, ledger_entries, ledger_holds, ledger_postings};

use crate::error::LedgerError;
use crate::model::{Effect, EntryKind, HoldStatus, Side};
use crate::money::Currency;
use crate::plan::{AccountState, ExistingEntry, HoldState, Leg, Plan};

fn corrupt(what: impl std::fmt::Display) -> LedgerError {
    LedgerError::Storage(format!("unreadable ledger row: {what}"))
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, LedgerError>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(corrupt)
}

/// Entries that already hold one of `keys`.
pub(crate) async fn existing(
    txn: &DatabaseTransaction,
    keys: &[&str],
) -> Result<HashMap<String, ExistingEntry>, LedgerError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, Uuid, String, String, DateTime<Utc>)> = match txn.get_database_backend()
    {
        DbBackend::Postgres => {
            let stmt = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT idempotency_key, id, content_hash, kind, recorded_at FROM ledger_entries \
                     WHERE idempotency_key = ANY($1::text[])",
                [text_array(keys)],
            );
            txn.query_all_raw(stmt)
                .await?
                .into_iter()
                .map(|r| {
                    Ok((
                        r.try_get_by_index(0)?,
                        r.try_get_by_index(1)?,
                        r.try_get_by_index(2)?,
                        r.try_get_by_index(3)?,
                        r.try_get_by_index(4)?,
                    ))
                })
                .collect::<Result<_, sea_orm::DbErr>>()?
        }
        _ => ledger_entries::Entity::find()
            .filter(ledger_entries::Column::IdempotencyKey.is_in(keys.iter().copied()))
            .all(txn)
            .await?
            .into_iter()
            .map(|e| {
                (
                    e.idempotency_key,
                    e.id,
                    e.content_hash,
                    e.kind,
                    e.recorded_at,
                )
            })
            .collect(),
    };
    rows.into_iter()
        .map(|(key, id, hash, kind, recorded_at)| {
            Ok((
                key,
                ExistingEntry {
                    id,
                    hash,
                    kind: parse(&kind)?,
                    recorded_at,
                },
            ))
        })
        .collect()
}

/// Locks the holds in `ids` (sorted) and reads the legs of their pending entries.
pub(crate) async fn lock_holds(
    txn: &DatabaseTransaction,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, HoldState>, LedgerError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let holds = ledger_holds::Entity::find()
        .filter(ledger_holds::Column::EntryId.is_in(ids.iter().copied()))
        .order_by_id_asc()
        .lock_exclusive()
        .all(txn)
        .await?;
    let entries: HashMap<Uuid, String> = ledger_entries::Entity::find()
        .filter(ledger_entries::Column::Id.is_in(ids.iter().copied()))
        .all(txn)
        .await?
        .into_iter()
        .map(|e| (e.id, e.reference))
        .collect();
    let mut legs: HashMap<Uuid, Vec<(i32, Leg)>> = HashMap::new();
    for p in ledger_postings::Entity::find()
        .filter(ledger_postings::Column::EntryId.is_in(ids.iter().copied()))
        .filter(ledger_postings::Column::Effect.eq(Effect::Reserve.as_str()))
        .all(txn)
        .await?
    {
        legs.entry(p.entry_id).or_default().push((
            p.leg,
            Leg {
                account_id: p.account_id,
                side: parse(&p.side)?,
                currency: parse(&p.currency)?,
                amount_minor: p.amount_minor,
            },
        ));
    }
    let mut out = HashMap::with_capacity(holds.len());
    for hold in holds {
        let mut hold_legs = legs.remove(&hold.entry_id).unwrap_or_default();
        hold_legs.sort_by_key(|(leg, _)| *leg);
        out.insert(
            hold.entry_id,
            HoldState {
                status: parse(&hold.status)?,
                expires_at: hold.expires_at,
                reference: entries.get(&hold.entry_id).cloned().unwrap_or_default(),
                legs: hold_legs.into_iter().map(|(_, l)| l).collect(),
            },
        );
    }
    Ok(out)
}

const PG_LOCK_ACCOUNTS: &str = "SELECT id, currency, debits_must_not_exceed_credits, \
    credits_must_not_exceed_debits, credit_limit_minor, closed, debits_posted, credits_posted, \
    debits_pending, credits_pending, posting_seq FROM ledger_accounts \
    WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE";

/// Locks the accounts in `ids` (sorted, so that every writer locks in the same order).
pub(crate) async fn lock_accounts(
    txn: &DatabaseTransaction,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, AccountState>, LedgerError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let models: Vec<AccountState> = match txn.get_database_backend() {
        DbBackend::Postgres => {
            let stmt = Statement::from_sql_and_values(
                DbBackend::Postgres,
                PG_LOCK_ACCOUNTS,
                [Value::from(ids.to_vec())],
            );
            txn.query_all_raw(stmt)
                .await?
                .iter()
                .map(pg_account)
                .collect::<Result<_, _>>()?
        }
        _ => ledger_accounts::Entity::find()
            .filter(ledger_accounts::Column::Id.is_in(ids.iter().copied()))
            .all(txn)
            .await?
            .into_iter()
            .map(account_state)
            .collect::<Result<_, _>>()?,
    };
    Ok(models.into_iter().map(|a| (a.id, a)).collect())
}

/// Decodes a row of [`PG_LOCK_ACCOUNTS`] or [`PG_READ_ACCOUNTS`].
fn pg_account(r: &sea_orm::QueryResult) -> Result<AccountState, LedgerError> {
    let currency: String = r.try_get_by_index(1)?;
    let limit: Option<i64> = r.try_get_by_index(4)?;
    Ok(AccountState {
        id: r.try_get_by_index(0)?,
        currency: parse(&currency)?,
        debits_must_not_exceed_credits: r.try_get_by_index(2)?,
        credits_must_not_exceed_debits: r.try_get_by_index(3)?,
        credit_limit_minor: limit.unwrap_or(0),
        closed: r.try_get_by_index(5)?,
        debits_posted: r.try_get_by_index(6)?,
        credits_posted: r.try_get_by_index(7)?,
        debits_pending: r.try_get_by_index(8)?,
        credits_pending: r.try_get_by_index(9)?,
        posting_seq: r.try_get_by_index(10)?,
    })
}

pub(crate) fn account_state(m: ledger_accounts::Model) -> Result<AccountState, LedgerError> {
    Ok(AccountState {
        id: m.id,
        currency: parse::<Currency>(&m.currency)?,
        debits_must_not_exceed_credits: m.debits_must_not_exceed_credits,
        credits_must_not_exceed_debits: m.credits_must_not_exceed_debits,
        credit_limit_minor: m.credit_limit_minor.unwrap_or(0),
        closed: m.closed,
        debits_posted: m.debits_posted,
        credits_posted: m.credits_posted,
        debits_pending: m.debits_pending,
        credits_pending: m.credits_pending,
        posting_seq: m.posting_seq,
    })
}

/// Writes the plan. Fails (and the caller rolls back) if any guarded row did not match.
///
/// On PostgreSQL the write is one statement that checks its own guards and aborts as a whole
/// if one failed, so it can also run outside an explicit transaction (see
/// [`read_unlocked`]).
pub(crate) async fn write<C: ConnectionTrait>(
    txn: &C,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    if plan.writes_nothing() {
        return Ok(());
    }
    let written = match txn.get_database_backend() {
        DbBackend::Postgres => write_postgres(txn, plan, now).await?,
        _ => write_sqlite(txn, plan, now).await?,
    };
    let expected = [
        plan.entries.len(),
        plan.postings.len(),
        plan.new_holds.len(),
        plan.resolutions.len(),
        plan.accounts.len(),
    ];
    if written != expected {
        return Err(LedgerError::Storage(format!(
            "batch wrote {written:?} rows where {expected:?} were planned; another writer changed \
             an account or a hold under the batch"
        )));
    }
    Ok(())
}

/// The whole batch in one statement. Entries, postings and account updates come as typed
/// arrays (sent in binary, unnested in the server); the rare holds rows come as JSON.
const PG_WRITE: &str = r#"
WITH e AS (
    INSERT INTO ledger_entries (id, idempotency_key, content_hash, kind, hold_id, reference,
                                description, effective_at, recorded_at, metadata)
    SELECT x.id, x.k, x.h, x.kind, NULLIF(x.hold, '00000000-0000-0000-0000-000000000000'::uuid),
           x.ref, x.descr, x.eff, $9::timestamptz, x.meta::jsonb
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[],
                $7::text[], $8::timestamptz[], $10::text[])
         AS x(id, k, h, kind, hold, ref, descr, eff, meta)
    RETURNING 1
), p AS (
    INSERT INTO ledger_postings (entry_id, leg, account_id, currency, side, effect, amount_minor,
                                 account_seq, debits_posted_after, credits_posted_after,
                                 debits_pending_after, credits_pending_after, effective_at)
    SELECT * FROM unnest($11::uuid[], $12::int4[], $13::uuid[], $14::text[], $15::text[],
                         $16::text[], $17::int8[], $18::int8[], $19::int8[], $20::int8[],
                         $21::int8[], $22::int8[], $23::timestamptz[])
    RETURNING 1
), nh AS (
    INSERT INTO ledger_holds (entry_id, status, expires_at)
    SELECT x.id, 'pending', x.exp FROM jsonb_to_recordset($24::jsonb) AS x(id uuid, exp timestamptz)
    RETURNING 1
), rh AS (
    UPDATE ledger_holds h SET status = x.status, resolved_entry_id = x.by, resolved_at = $9::timestamptz
    FROM jsonb_to_recordset($25::jsonb) AS x(id uuid, status text, by uuid)
    WHERE h.entry_id = x.id AND h.status = 'pending'
    RETURNING 1
), a AS (
    UPDATE ledger_accounts t SET debits_posted = x.dp, credits_posted = x.cp,
        debits_pending = x.dpe, credits_pending = x.cpe, posting_seq = x.seq, closed = x.closed,
        updated_at = $9::timestamptz
    FROM unnest($26::uuid[], $27::int8[], $28::int8[], $29::int8[], $30::int8[], $31::int8[],
                $32::bool[], $33::int8[], $36::bool[]) AS x(id, dp, cp, dpe, cpe, seq, closed, rseq, rclosed)
    WHERE t.id = ANY($26::uuid[]) AND t.id = x.id AND t.posting_seq = x.rseq
      AND t.closed = x.rclosed
    RETURNING 1
)
SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM p), (SELECT count(*) FROM nh),
       (SELECT count(*) FROM rh), (SELECT count(*) FROM a),
       ledger_assert((SELECT count(*) FROM rh) = $34 AND (SELECT count(*) FROM a) = $35,
                     'ledger: another writer changed an account or a hold under the batch')
"#;

fn text_array<S: AsRef<str>>(items: &[S]) -> Value {
    Value::from(
        items
            .iter()
            .map(|s| s.as_ref().to_owned())
            .collect::<Vec<String>>(),
    )
}

fn column<T, U>(rows: &[T], f: impl Fn(&T) -> U) -> Value
where
    Value: From<Vec<U>>,
{
    Value::from(rows.iter().map(f).collect::<Vec<U>>())
}

async fn write_postgres<C: ConnectionTrait>(
    txn: &C,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<[usize; 5], LedgerError> {
    use serde_json::json;
    let (e, p, a) = (&plan.entries, &plan.postings, &plan.accounts);
    let holds: Vec<_> = plan
        .new_holds
        .iter()
        .map(|h| json!({"id": h.entry_id, "exp": h.expires_at}))
        .collect();
    let resolutions: Vec<_> = plan
        .resolutions
        .iter()
        .map(|r| json!({"id": r.hold_id, "status": r.status.as_str(), "by": r.resolved_entry_id}))
        .collect();
    let values = vec![
        column(e, |r| r.id),
        column(e, |r| r.key.clone()),
        column(e, |r| r.hash.clone()),
        column(e, |r| r.kind.as_str().to_owned()),
        column(e, |r| r.hold_id.unwrap_or(Uuid::nil())),
        column(e, |r| r.reference.clone()),
        column(e, |r| r.description.clone()),
        column(e, |r| r.effective_at),
        Value::from(now),
        column(e, |r| r.metadata.to_string()),
        column(p, |r| r.entry_id),
        column(p, |r| r.leg),
        column(p, |r| r.account_id),
        column(p, |r| r.currency.code().to_owned()),
        column(p, |r| r.side.as_str().to_owned()),
        column(p, |r| r.effect.as_str().to_owned()),
        column(p, |r| r.amount_minor),
        column(p, |r| r.account_seq),
        column(p, |r| r.after[0]),
        column(p, |r| r.after[1]),
        column(p, |r| r.after[2]),
        column(p, |r| r.after[3]),
        column(p, |r| r.effective_at),
        Value::from(serde_json::Value::Array(holds).to_string()),
        Value::from(serde_json::Value::Array(resolutions).to_string()),
        column(a, |u| u.state.id),
        column(a, |u| u.state.debits_posted),
        column(a, |u| u.state.credits_posted),
        column(a, |u| u.state.debits_pending),
        column(a, |u| u.state.credits_pending),
        column(a, |u| u.state.posting_seq),
        column(a, |u| u.state.closed),
        column(a, |u| u.read_seq),
        Value::from(plan.resolutions.len() as i64),
        Value::from(plan.accounts.len() as i64),
        column(a, |u| u.read_closed),
    ];
    let stmt = Statement::from_sql_and_values(DbBackend::Postgres, PG_WRITE, values);
    let row = txn
        .query_one_raw(stmt)
        .await?
        .ok_or_else(|| LedgerError::Storage("batch write returned no row".into()))?;
    let mut counts = [0usize; 5];
    for (i, slot) in counts.iter_mut().enumerate() {
        let n: i64 = row.try_get_by_index(i)?;
        *slot = usize::try_from(n).map_err(corrupt)?;
    }
    Ok(counts)
}

/// Rows per multi-row insert on SQLite, well under its limit of bound variables.
const SQLITE_CHUNK: usize = 500;

async fn write_sqlite<C: ConnectionTrait>(
    txn: &C,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<[usize; 5], LedgerError> {
    for chunk in plan.entries.chunks(SQLITE_CHUNK) {
        ledger_entries::Entity::insert_many(chunk.iter().map(|e| ledger_entries::ActiveModel {
            id: Set(e.id),
            idempotency_key: Set(e.key.clone()),
            content_hash: Set(e.hash.clone()),
            kind: Set(e.kind.as_str().to_owned()),
            hold_id: Set(e.hold_id),
            reference: Set(e.reference.clone()),
            description: Set(e.description.clone()),
            effective_at: Set(e.effective_at),
            recorded_at: Set(now),
            metadata: Set(e.metadata.clone()),
        }))
        .exec_without_returning(txn)
        .await?;
    }
    for chunk in plan.postings.chunks(SQLITE_CHUNK) {
        ledger_postings::Entity::insert_many(chunk.iter().map(|p| ledger_postings::ActiveModel {
            entry_id: Set(p.entry_id),
            leg: Set(p.leg),
            account_id: Set(p.account_id),
            currency: Set(p.currency.code().to_owned()),
            side: Set(p.side.as_str().to_owned()),
            effect: Set(p.effect.as_str().to_owned()),
            amount_minor: Set(p.amount_minor),
            account_seq: Set(p.account_seq),
            debits_posted_after: Set(p.after[0]),
            credits_posted_after: Set(p.after[1]),
            debits_pending_after: Set(p.after[2]),
            credits_pending_after: Set(p.after[3]),
            effective_at: Set(p.effective_at),
        }))
        .exec_without_returning(txn)
        .await?;
    }
    for chunk in plan.new_holds.chunks(SQLITE_CHUNK) {
        ledger_holds::Entity::insert_many(chunk.iter().map(|h| ledger_holds::ActiveModel {
            entry_id: Set(h.entry_id),
            status: Set(HoldStatus::Pending.as_str().to_owned()),
            expires_at: Set(h.expires_at),
            resolved_entry_id: Set(None),
            resolved_at: Set(None),
        }))
        .exec_without_returning(txn)
        .await?;
    }
    let mut resolved = 0;
    for r in &plan.resolutions {
        let result = ledger_holds::Entity::update_many()
            .col_expr(ledger_holds::Column::Status, Expr::value(r.status.as_str()))
            .col_expr(
                ledger_holds::Column::ResolvedEntryId,
                Expr::value(r.resolved_entry_id),
            )
            .col_expr(ledger_holds::Column::ResolvedAt, Expr::value(now))
            .filter(ledger_holds::Column::EntryId.eq(r.hold_id))
            .filter(ledger_holds::Column::Status.eq(HoldStatus::Pending.as_str()))
            .exec(txn)
            .await?;
        resolved += result.rows_affected as usize;
    }
    let mut updated = 0;
    for u in &plan.accounts {
        let s = &u.state;
        let result = ledger_accounts::Entity::update_many()
            .col_expr(
                ledger_accounts::Column::DebitsPosted,
                Expr::value(s.debits_posted),
            )
            .col_expr(
                ledger_accounts::Column::CreditsPosted,
                Expr::value(s.credits_posted),
            )
            .col_expr(
                ledger_accounts::Column::DebitsPending,
                Expr::value(s.debits_pending),
            )
            .col_expr(
                ledger_accounts::Column::CreditsPending,
                Expr::value(s.credits_pending),
            )
            .col_expr(
                ledger_accounts::Column::PostingSeq,
                Expr::value(s.posting_seq),
            )
            .col_expr(ledger_accounts::Column::Closed, Expr::value(s.closed))
            .col_expr(ledger_accounts::Column::UpdatedAt, Expr::value(now))
            .filter(ledger_accounts::Column::Id.eq(s.id))
            .filter(ledger_accounts::Column::PostingSeq.eq(u.read_seq))
            .filter(ledger_accounts::Column::Closed.eq(u.read_closed))
            .exec(txn)
            .await?;
        updated += result.rows_affected as usize;
    }
    Ok([
        plan.entries.len(),
        plan.postings.len(),
        plan.new_holds.len(),
        resolved,
        updated,
    ])
}

/// Reads a stored side/effect/kind pair of texts; used by the query side.
pub(crate) fn posting_parts(side: &str, effect: &str) -> Result<(Side, Effect), LedgerError> {
    Ok((parse(side)?, parse(effect)?))
}

pub(crate) fn entry_kind(kind: &str) -> Result<EntryKind, LedgerError> {
    parse(kind)
}

pub(crate) fn currency(code: &str) -> Result<Currency, LedgerError> {
    parse(code)
}

const PG_READ_ACCOUNTS: &str = "SELECT id, currency, debits_must_not_exceed_credits, \
    credits_must_not_exceed_debits, credit_limit_minor, closed, debits_posted, credits_posted, \
    debits_pending, credits_pending, posting_seq FROM ledger_accounts WHERE id = ANY($1::uuid[])";

/// Reads accounts without locking them, for the writer's cache on PostgreSQL. What is read
/// here is only ever written back through the guarded batch statement.
pub(crate) async fn read_accounts(
    db: &sea_orm::DatabaseConnection,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, AccountState>, LedgerError> {
    let stmt = Statement::from_sql_and_values(
        DbBackend::Postgres,
        PG_READ_ACCOUNTS,
        [Value::from(ids.to_vec())],
    );
    db.query_all_raw(stmt)
        .await?
        .iter()
        .map(|r| pg_account(r).map(|a| (a.id, a)))
        .collect()
}

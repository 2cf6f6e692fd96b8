//! Statement import: a camt.053 end-of-day statement of a sub-account, fetched from the bank
//! (signature verified) or uploaded by treasury staff, matched against what the platform's
//! instructions say happened on that account that day. Every difference is stored as an open
//! exception until someone resolves it with a note; nothing is corrected silently.
//!
//! What the platform expects on account A for day D (Shanghai time): for every instruction
//! settled on D, a debit on its debtor's account and, for a transfer between sub-accounts, a
//! credit on its creditor's; for every instruction returned on D, the reversals of both.
//! Bookings no instruction explains (a deposit from outside, a fee) are exceptions too.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder,
};
use uuid::Uuid;

use entities::{
    treasury_events, treasury_exceptions, treasury_instruction_lines, treasury_instructions,
    treasury_message_transactions, treasury_statements, treasury_sub_accounts,
};

use crate::domain::{AccountNumber, EndToEndId};
use crate::iso20022::camt053::{Direction, Statement};
use crate::rails::TZ;
use crate::reconcile::{ExpectedMovement, ReconException, reconcile};

/// Where a statement came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Fetched from the bank, its signature verified.
    Bank,
    /// Uploaded by a user.
    Upload,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Bank => "bank",
            Source::Upload => "upload",
        }
    }
}

/// A statement as imported, with the exceptions it raised.
#[derive(Clone, Debug)]
pub struct Imported {
    pub statement: treasury_statements::Model,
    pub exceptions: Vec<treasury_exceptions::Model>,
    /// The statement had been imported before: this is that import.
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    #[error("account {0} is not a sub-account at the custodial bank")]
    UnknownAccount(String),
    #[error("exception {0} does not exist")]
    UnknownException(Uuid),
    #[error("exception {0} is resolved already")]
    AlreadyResolved(Uuid),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("storage: {0}")]
    Storage(#[from] DbErr),
}

fn kind(exception: &ReconException) -> (&'static str, Option<&EndToEndId>) {
    match exception {
        ReconException::MissingFromStatement { end_to_end_id, .. } => {
            ("missing_from_statement", Some(end_to_end_id))
        }
        ReconException::UnknownEntry { end_to_end_id, .. } => {
            ("unknown_entry", end_to_end_id.as_ref())
        }
        ReconException::AmountMismatch { end_to_end_id, .. } => {
            ("amount_mismatch", Some(end_to_end_id))
        }
        ReconException::DirectionMismatch { end_to_end_id, .. } => {
            ("direction_mismatch", Some(end_to_end_id))
        }
        ReconException::DuplicateBooking { end_to_end_id, .. } => {
            ("duplicate_booking", Some(end_to_end_id))
        }
        ReconException::BalanceMismatch { .. } => ("balance_mismatch", None),
    }
}

/// Imports a statement and stores the exceptions of its reconciliation. Importing the same
/// statement (account and bank statement id) again returns the first import.
pub async fn import(
    db: &DatabaseConnection,
    statement: &Statement,
    xml: &str,
    source: Source,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Imported, StatementError> {
    if let Some(existing) = find(db, &statement.account, &statement.statement_id).await? {
        let exceptions = exceptions_of(db, existing.id).await?;
        return Ok(Imported {
            statement: existing,
            exceptions,
            replayed: true,
        });
    }
    let known = treasury_sub_accounts::Entity::find()
        .filter(treasury_sub_accounts::Column::AccountNumber.eq(statement.account.as_str()))
        .one(db)
        .await?;
    if known.is_none() {
        return Err(StatementError::UnknownAccount(
            statement.account.to_string(),
        ));
    }
    let expected = expected_movements(db, &statement.account, statement.date).await?;
    let result = reconcile(statement, &expected);
    let minor = |m: ledger::Money| {
        m.minor_units()
            .map_err(|e| StatementError::Corrupt(format!("statement balance: {e}")))
    };
    let (opening, closing) = (minor(statement.opening)?, minor(statement.closing)?);
    let id = Uuid::now_v7();
    let txn = entities::db::begin_write(db).await?;
    let row = treasury_statements::ActiveModel {
        id: Set(id),
        account_number: Set(statement.account.as_str().to_owned()),
        statement_id: Set(statement.statement_id.clone()),
        statement_date: Set(statement.date.to_string()),
        source: Set(source.as_str().to_owned()),
        opening_minor: Set(opening),
        closing_minor: Set(closing),
        currency: Set(statement.opening.currency().code().to_owned()),
        entries: Set(i32::try_from(statement.entries.len()).unwrap_or(i32::MAX)),
        matched: Set(i32::try_from(result.matched.len()).unwrap_or(i32::MAX)),
        xml: Set(xml.to_owned()),
        imported_by: Set(by.to_owned()),
        imported_at: Set(now),
    }
    .insert(&txn)
    .await;
    let row = match row {
        Ok(row) => row,
        Err(err)
            if matches!(
                err.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ) =>
        {
            // Imported at the same moment by someone else: theirs stands.
            txn.rollback().await?;
            let existing = find(db, &statement.account, &statement.statement_id)
                .await?
                .ok_or_else(|| StatementError::Corrupt("statement vanished".into()))?;
            let exceptions = exceptions_of(db, existing.id).await?;
            return Ok(Imported {
                statement: existing,
                exceptions,
                replayed: true,
            });
        }
        Err(err) => return Err(err.into()),
    };
    let mut exceptions = Vec::with_capacity(result.exceptions.len());
    for exception in &result.exceptions {
        let (kind, e2e) = kind(exception);
        let stored = treasury_exceptions::ActiveModel {
            id: Set(Uuid::now_v7()),
            statement_id: Set(id),
            account_number: Set(statement.account.as_str().to_owned()),
            kind: Set(kind.to_owned()),
            end_to_end_id: Set(e2e.map(|e| e.as_str().to_owned())),
            detail: Set(serde_json::to_string(exception)
                .map_err(|e| StatementError::Corrupt(e.to_string()))?),
            status: Set("open".into()),
            resolution: Set(None),
            resolved_by: Set(None),
            resolved_at: Set(None),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        exceptions.push(stored);
    }
    txn.commit().await?;
    Ok(Imported {
        statement: row,
        exceptions,
        replayed: false,
    })
}

async fn find(
    db: &DatabaseConnection,
    account: &AccountNumber,
    statement_id: &str,
) -> Result<Option<treasury_statements::Model>, DbErr> {
    treasury_statements::Entity::find()
        .filter(treasury_statements::Column::AccountNumber.eq(account.as_str()))
        .filter(treasury_statements::Column::StatementId.eq(statement_id))
        .one(db)
        .await
}

async fn exceptions_of(
    db: &DatabaseConnection,
    statement: Uuid,
) -> Result<Vec<treasury_exceptions::Model>, DbErr> {
    treasury_exceptions::Entity::find()
        .filter(treasury_exceptions::Column::StatementId.eq(statement))
        .order_by_asc(treasury_exceptions::Column::Id)
        .all(db)
        .await
}

/// What the platform's instructions say happened on `account` on `date` (Shanghai): one
/// movement per transaction the bank carried out (an instruction's own, each tranche, each
/// payment of a batch), on the day its settlement was recorded, and a reversal on the day
/// a returned transaction was reversed. A freeze moves nothing.
pub async fn expected_movements(
    db: &DatabaseConnection,
    account: &AccountNumber,
    date: NaiveDate,
) -> Result<Vec<ExpectedMovement>, StatementError> {
    use treasury_instructions::Column as I;
    let paid_in_batches = sea_orm::sea_query::Query::select()
        .column(treasury_instruction_lines::Column::InstructionId)
        .from(treasury_instruction_lines::Entity)
        .and_where(treasury_instruction_lines::Column::CreditorAccount.eq(account.as_str()))
        .to_owned();
    let instructions = treasury_instructions::Entity::find()
        .filter(
            Condition::any()
                .add(I::DebtorAccount.eq(account.as_str()))
                .add(I::CreditorAccount.eq(account.as_str()))
                .add(I::Id.in_subquery(paid_in_batches)),
        )
        .filter(I::Status.is_in(["settled", "returned"]))
        .filter(I::Kind.is_in(["sub_account_transfer", "payout"]))
        .all(db)
        .await?;
    let on_the_day = |at: DateTime<Utc>| at.with_timezone(&TZ).date_naive() == date;
    let corrupt = |e: &dyn std::fmt::Display| StatementError::Corrupt(e.to_string());
    let mut out = Vec::new();
    for i in instructions {
        let events = treasury_events::Entity::find()
            .filter(treasury_events::Column::InstructionId.eq(i.id))
            .filter(treasury_events::Column::Event.is_in([
                "settled",
                "settled_in_part",
                "returned",
                "transaction_returned",
            ]))
            .all(db)
            .await?;
        let currency: ledger::Currency = i
            .currency
            .parse()
            .map_err(|e| StatementError::Corrupt(format!("{e:?}")))?;
        let lines = treasury_instruction_lines::Entity::find()
            .filter(treasury_instruction_lines::Column::InstructionId.eq(i.id))
            .all(db)
            .await?;
        let transactions = treasury_message_transactions::Entity::find()
            .filter(treasury_message_transactions::Column::InstructionId.eq(i.id))
            .all(db)
            .await?;
        // Which side of each transaction `account` is on.
        let debtor = i.debtor_account == account.as_str();
        let credited = |e2e: &str| {
            lines
                .iter()
                .find(|l| l.end_to_end_id == e2e)
                .map(|l| l.creditor_account == account.as_str())
                .unwrap_or(i.creditor_account == account.as_str())
        };
        let movement = |e2e: &str, minor: i64, reversal: bool| -> Result<_, StatementError> {
            // The debtor's account is debited on settlement and credited back on a
            // return; the creditor's the other way round.
            let direction = match (debtor, reversal) {
                (true, false) | (false, true) => Direction::Debit,
                (true, true) | (false, false) => Direction::Credit,
            };
            Ok(ExpectedMovement {
                end_to_end_id: EndToEndId::new(e2e.to_owned()).map_err(|e| corrupt(&e))?,
                amount: ledger::Money::from_minor(minor, currency),
                direction,
                reversal,
            })
        };
        if transactions.is_empty() {
            // Sent before transactions were recorded: the instruction is its transaction.
            for event in events.iter().filter(|e| on_the_day(e.at)) {
                let reversal = event.event == "returned";
                out.push(movement(&i.end_to_end_id, i.amount_minor, reversal)?);
            }
            continue;
        }
        let settled_on_the_day = events
            .iter()
            .any(|e| matches!(e.event.as_str(), "settled" | "settled_in_part") && on_the_day(e.at));
        for t in &transactions {
            if !(debtor || credited(&t.end_to_end_id)) {
                continue;
            }
            if settled_on_the_day && matches!(t.status.as_str(), "settled" | "returned") {
                out.push(movement(&t.end_to_end_id, t.amount_minor, false)?);
            }
            let returned_on_the_day = events.iter().any(|e| {
                e.event == "transaction_returned"
                    && on_the_day(e.at)
                    && serde_json::from_str::<serde_json::Value>(&e.detail)
                        .ok()
                        .is_some_and(|d| d["end_to_end_id"] == t.end_to_end_id.as_str())
            });
            if returned_on_the_day {
                out.push(movement(&t.end_to_end_id, t.amount_minor, true)?);
            }
        }
    }
    Ok(out)
}

/// Resolves an open exception with a note.
pub async fn resolve(
    db: &DatabaseConnection,
    id: Uuid,
    by: &str,
    resolution: &str,
    now: DateTime<Utc>,
) -> Result<treasury_exceptions::Model, StatementError> {
    let updated = treasury_exceptions::Entity::update_many()
        .set(treasury_exceptions::ActiveModel {
            status: Set("resolved".into()),
            resolution: Set(Some(resolution.to_owned())),
            resolved_by: Set(Some(by.to_owned())),
            resolved_at: Set(Some(now)),
            ..Default::default()
        })
        .filter(treasury_exceptions::Column::Id.eq(id))
        .filter(treasury_exceptions::Column::Status.eq("open"))
        .exec(db)
        .await?;
    let row = treasury_exceptions::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or(StatementError::UnknownException(id))?;
    if updated.rows_affected == 0 {
        return Err(StatementError::AlreadyResolved(id));
    }
    Ok(row)
}

//! External bank accounts: where a legal entity's payouts go (name, number, bank and
//! branch). Registration is idempotent: the same account with the same details registers
//! once; the same number at the same bank with other details is a conflict.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    SqlErr,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entities::treasury_external_accounts as table;

use crate::domain::{AccountNumber, BankCode};

/// An account to register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewExternalAccount {
    pub owner_org: String,
    pub holder_name: String,
    pub account: AccountNumber,
    pub bank: BankCode,
    pub branch_name: String,
}

/// A registered account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExternalAccount {
    pub id: Uuid,
    pub details: NewExternalAccount,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("account {account} at bank {bank} is registered with other details")]
    Conflict { account: String, bank: String },
    #[error("the holder's name must be 1 to 140 characters")]
    InvalidName,
    #[error("stored account is inconsistent: {0}")]
    Corrupt(String),
    #[error("storage: {0}")]
    Storage(#[from] DbErr),
}

/// Registers an account for its owner, or returns it if registered with the same details.
pub async fn register(
    db: &DatabaseConnection,
    new: NewExternalAccount,
    by: &str,
    now: DateTime<Utc>,
) -> Result<ExternalAccount, AccountError> {
    let len = new.holder_name.chars().count();
    if len == 0 || len > 140 {
        return Err(AccountError::InvalidName);
    }
    let inserted = table::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_org: Set(new.owner_org.clone()),
        holder_name: Set(new.holder_name.clone()),
        account_number: Set(new.account.to_string()),
        bank_code: Set(new.bank.to_string()),
        branch_name: Set(new.branch_name.clone()),
        created_by: Set(by.to_owned()),
        created_at: Set(now.trunc_subsecs(6)),
    }
    .insert(db)
    .await;
    match inserted {
        Ok(row) => to_account(row),
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            let row = table::Entity::find()
                .filter(table::Column::OwnerOrg.eq(&new.owner_org))
                .filter(table::Column::BankCode.eq(new.bank.as_str()))
                .filter(table::Column::AccountNumber.eq(new.account.as_str()))
                .one(db)
                .await?
                .ok_or_else(|| AccountError::Corrupt("unique row vanished".into()))?;
            let existing = to_account(row)?;
            if existing.details == new {
                Ok(existing)
            } else {
                Err(AccountError::Conflict {
                    account: new.account.masked(),
                    bank: new.bank.to_string(),
                })
            }
        }
        Err(err) => Err(err.into()),
    }
}

/// An owner's accounts, oldest first.
pub async fn of_owner(
    db: &DatabaseConnection,
    owner_org: &str,
) -> Result<Vec<ExternalAccount>, AccountError> {
    table::Entity::find()
        .filter(table::Column::OwnerOrg.eq(owner_org))
        .order_by_asc(table::Column::CreatedAt)
        .order_by_asc(table::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(to_account)
        .collect()
}

fn to_account(row: table::Model) -> Result<ExternalAccount, AccountError> {
    let corrupt = |e: crate::domain::InvalidValue| AccountError::Corrupt(e.to_string());
    Ok(ExternalAccount {
        id: row.id,
        details: NewExternalAccount {
            owner_org: row.owner_org,
            holder_name: row.holder_name,
            account: AccountNumber::new(row.account_number).map_err(corrupt)?,
            bank: BankCode::new(row.bank_code).map_err(corrupt)?,
            branch_name: row.branch_name,
        },
        created_by: row.created_by,
        created_at: row.created_at,
    })
}

/// A sub-account (or the master account) at the custodial bank to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSubAccount {
    /// The ledger owner of the legal entity.
    pub owner_org: String,
    pub holder_name: String,
    pub account: AccountNumber,
    pub bank: BankCode,
    pub currency: ledger::Currency,
    pub is_master: bool,
}

/// Opens a sub-account: its mirror in the ledger (a liability to the entity, that must not
/// go below zero; the master account is the asset they add up to) and its row. Opening the
/// same account again returns the one opened before.
pub async fn open_sub_account(
    ledger: &ledger::Ledger,
    new: NewSubAccount,
    now: DateTime<Utc>,
) -> Result<entities::treasury_sub_accounts::Model, AccountError> {
    use entities::treasury_sub_accounts as subs;
    let db = ledger.db();
    let existing = subs::Entity::find()
        .filter(subs::Column::BankCode.eq(new.bank.as_str()))
        .filter(subs::Column::AccountNumber.eq(new.account.as_str()))
        .one(db)
        .await?;
    if let Some(row) = existing {
        return if row.owner_org == new.owner_org && row.is_master == new.is_master {
            Ok(row)
        } else {
            Err(AccountError::Conflict {
                account: new.account.to_string(),
                bank: new.bank.to_string(),
            })
        };
    }
    let code = if new.is_master {
        format!("bank:master:{}", new.account)
    } else {
        format!("bank:sub:{}", new.account)
    };
    let name = format!(
        "{} at the custodial bank ({})",
        new.holder_name, new.account
    );
    let account = if new.is_master {
        ledger::NewAccount::new(
            new.owner_org.clone(),
            code,
            name,
            new.currency,
            ledger::Side::Debit,
        )
    } else {
        ledger::NewAccount::new(
            new.owner_org.clone(),
            code,
            name,
            new.currency,
            ledger::Side::Credit,
        )
        .debits_must_not_exceed_credits()
    };
    let mirror = ledger
        .create_account(account)
        .await
        .map_err(|e| AccountError::Corrupt(format!("ledger account: {e}")))?;
    let row = subs::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_org: Set(new.owner_org),
        holder_name: Set(new.holder_name),
        account_number: Set(new.account.as_str().to_owned()),
        bank_code: Set(new.bank.as_str().to_owned()),
        currency: Set(new.currency.code().to_owned()),
        ledger_account_id: Set(mirror.id),
        is_master: Set(new.is_master),
        created_at: Set(now.trunc_subsecs(6)),
    };
    match row.insert(db).await {
        Ok(row) => Ok(row),
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            subs::Entity::find()
                .filter(subs::Column::LedgerAccountId.eq(mirror.id))
                .one(db)
                .await?
                .ok_or_else(|| AccountError::Conflict {
                    account: new.account.to_string(),
                    bank: new.bank.to_string(),
                })
        }
        Err(err) => Err(err.into()),
    }
}

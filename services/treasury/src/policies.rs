//! The approval policy as data: every change is a new version, checked before it is stored
//! (a policy without a catch-all rule, an empty step or too few eligible people is refused);
//! the highest version is in force. Approvals given earlier stay bound to their
//! instruction's content; whether they are enough is decided by the policy in force when the
//! chain is looked at.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait, DatabaseConnection, DbErr, EntityTrait, QueryOrder, SqlErr};

use entities::treasury_policies as table;

use crate::approval::{ApprovalPolicy, PolicyConfig, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    #[error(transparent)]
    Invalid(#[from] PolicyError),
    #[error("another policy was set at the same moment; look at it and try again")]
    Concurrent,
    #[error("stored policy version {0} is unreadable: {1}")]
    Corrupt(i32, String),
    #[error("storage: {0}")]
    Storage(#[from] DbErr),
}

/// The policy in force and its row, if any version is stored.
pub async fn current(
    db: &DatabaseConnection,
) -> Result<Option<(ApprovalPolicy, table::Model)>, DbErr> {
    let Some(row) = table::Entity::find()
        .order_by_desc(table::Column::Version)
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let config: PolicyConfig = serde_json::from_str(&row.config)
        .map_err(|e| DbErr::Custom(format!("policy version {}: {e}", row.version)))?;
    let policy = ApprovalPolicy::new(config)
        .map_err(|e| DbErr::Custom(format!("policy version {}: {e}", row.version)))?;
    Ok(Some((policy, row)))
}

/// Checks and stores a new version of the policy.
pub async fn set(
    db: &DatabaseConnection,
    config: PolicyConfig,
    by: &str,
    now: DateTime<Utc>,
) -> Result<table::Model, PolicyStoreError> {
    let policy = ApprovalPolicy::new(config)?;
    let latest = table::Entity::find()
        .order_by_desc(table::Column::Version)
        .one(db)
        .await?
        .map(|r| r.version)
        .unwrap_or(0);
    let row = table::ActiveModel {
        version: Set(latest + 1),
        config: Set(serde_json::to_string(&policy.config())
            .map_err(|e| PolicyStoreError::Corrupt(latest + 1, e.to_string()))?),
        set_by: Set(by.to_owned()),
        set_at: Set(now),
    };
    match row.insert(db).await {
        Ok(row) => Ok(row),
        Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            Err(PolicyStoreError::Concurrent)
        }
        Err(err) => Err(err.into()),
    }
}

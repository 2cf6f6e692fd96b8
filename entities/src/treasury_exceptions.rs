//! `treasury_exceptions`: differences between a bank statement and the platform's books,
//! open until resolved.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_exceptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub statement_id: Uuid,
    pub account_number: String,
    /// `missing_from_statement`, `unknown_entry`, `amount_mismatch`, `direction_mismatch`,
    /// `duplicate_booking` or `balance_mismatch`.
    pub kind: String,
    pub end_to_end_id: Option<String>,
    /// The exception as JSON.
    pub detail: String,
    /// `open` or `resolved`.
    pub status: String,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `treasury_statements`: bank statements (camt.053) imported for reconciliation.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_statements")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_number: String,
    /// The bank's id of the statement (`Stmt/Id`).
    pub statement_id: String,
    /// The day it covers, `YYYY-MM-DD`.
    pub statement_date: String,
    /// `bank` (fetched and verified) or `upload` (given by a user).
    pub source: String,
    pub opening_minor: i64,
    pub closing_minor: i64,
    pub currency: String,
    pub entries: i32,
    pub matched: i32,
    pub xml: String,
    pub imported_by: String,
    pub imported_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `treasury_external_accounts`: a legal entity's own accounts at any bank, for payouts.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_external_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The ledger owner of the legal entity that holds the account.
    pub owner_org: String,
    pub holder_name: String,
    pub account_number: String,
    /// The CNAPS code of the branch that keeps the account.
    pub bank_code: String,
    pub branch_name: String,
    pub created_by: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

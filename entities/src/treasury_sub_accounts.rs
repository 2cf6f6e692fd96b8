//! `treasury_sub_accounts`: the platform's master account and the sub-accounts under it at
//! the custodial bank, each mirrored by a ledger account.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_sub_accounts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The ledger owner of the legal entity the account belongs to.
    pub owner_org: String,
    pub holder_name: String,
    pub account_number: String,
    /// The CNAPS code of the custodial bank's branch.
    pub bank_code: String,
    pub currency: String,
    /// The ledger account that mirrors this account.
    pub ledger_account_id: Uuid,
    /// The platform's master account (the sum of the sub-accounts at the bank).
    pub is_master: bool,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `treasury_instruction_lines`: the payments of a batch instruction, each with its own
//! creditor, amount and end-to-end id; the instruction carries their total.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_instruction_lines")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub instruction_id: Uuid,
    /// 1, 2, … in the order of the batch (and of its message).
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i32,
    pub end_to_end_id: String,
    pub creditor_ledger_account_id: Uuid,
    pub creditor_name: String,
    pub creditor_account: String,
    pub creditor_bank: String,
    pub amount_minor: i64,
    pub currency: String,
    pub remittance: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

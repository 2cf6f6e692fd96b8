//! `treasury_instructions`: instructions to the custodial bank, with their approval state.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_instructions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The maker's `Idempotency-Key`: the same key creates the instruction once.
    pub idempotency_key: String,
    /// `sub_account_transfer`, `payout`, `freeze` or `unfreeze`.
    pub kind: String,
    /// `pending_approval`, `approved`, `rejected`, `settled` or `returned`.
    pub status: String,
    pub end_to_end_id: String,
    /// The debtor's sub-account as mirrored in the ledger.
    pub debtor_ledger_account_id: Uuid,
    pub debtor_name: String,
    pub debtor_account: String,
    pub debtor_bank: String,
    /// The ledger account credited when the bank moves the money.
    pub creditor_ledger_account_id: Uuid,
    pub creditor_name: String,
    pub creditor_account: String,
    pub creditor_bank: String,
    /// Minor units (fen for CNY).
    pub amount_minor: i64,
    pub currency: String,
    pub purpose: Option<String>,
    pub remittance: Option<String>,
    /// ISO date.
    pub requested_execution_date: String,
    pub maker: String,
    /// SHA-256 of the approvable content; approvals bind it.
    pub content_digest: String,
    /// The ledger hold placed when the instruction was approved.
    pub hold_entry_id: Option<Uuid>,
    /// For an unfreeze: the freeze instruction it releases.
    pub releases_instruction_id: Option<Uuid>,
    pub rejected_by: Option<String>,
    pub rejection_reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

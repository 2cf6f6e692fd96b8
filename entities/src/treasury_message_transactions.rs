//! `treasury_message_transactions`: the credit transfers (`CdtTrfTxInf`) of a message to the
//! bank, each with its own end-to-end id and the latest status the bank reported for it. An
//! instruction sent as one transaction has one row (its own end-to-end id); one sent in
//! tranches has one row per tranche (`<end-to-end id>-<n>`).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_message_transactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub message_id: String,
    /// 1, 2, … in the order of the message.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i32,
    pub instruction_id: Uuid,
    /// Unique over all transactions ever sent.
    pub end_to_end_id: String,
    pub amount_minor: i64,
    pub currency: String,
    /// `pending`, `settled`, `rejected` or `returned`.
    pub status: String,
    /// The bank's reason code and text of a rejection or return.
    pub reason: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

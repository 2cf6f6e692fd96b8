//! `pos_recon_exceptions`: a difference between a channel's statement and our payments that
//! reconciliation could not explain, queued until someone resolves it with a note.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_recon_exceptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel_id: String,
    pub statement_day: String,
    /// `payment` or `refund`: what the difference is about.
    pub subject: String,
    /// `missing_here` (the channel has it, we do not), `missing_there`, `amount_mismatch` or
    /// `status_mismatch`.
    pub kind: String,
    /// The station of our payment; absent when we have no payment for the order.
    pub station_id: Option<Uuid>,
    /// Our order number at the channel (for a refund, the refunded order's).
    pub out_trade_no: String,
    /// Our refund number for a refund's difference; empty for a payment's.
    pub refund_no: String,
    /// Our payment, when we have one.
    pub payment_no: Option<String>,
    /// The channel's transaction (or refund) id, when it has one.
    pub channel_txn_id: Option<String>,
    pub our_amount_minor: Option<i64>,
    pub their_amount_minor: Option<i64>,
    pub currency: String,
    /// What the statement, our books and the channel's query said.
    pub detail: String,
    /// `open` or `resolved`.
    pub status: String,
    pub resolution_note: Option<String>,
    pub resolved_by: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub resolved_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `pos_refunds`: a full or partial refund of a payment, unique per terminal refund number.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_refunds")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The platform's refund number, sent to the channel.
    pub refund_no: String,
    pub payment_id: Uuid,
    pub station_id: Uuid,
    /// The requester's own refund number: the same number is the same refund.
    pub terminal_refund_no: String,
    pub request_hash: String,
    /// The open shift the refund was made in, when made at a till.
    pub shift_id: Option<Uuid>,
    pub amount_minor: i64,
    pub currency: String,
    pub reason: String,
    /// `pending_approval`, `refunding`, `succeeded`, `failed`, `rejected`, `expired` or
    /// `needs_attention` (the channel's answer stayed unknown).
    pub status: String,
    /// The sale belongs to a closed shift: the station manager must approve.
    pub needs_approval: bool,
    pub requested_by: String,
    pub decided_by: Option<String>,
    pub decision_note: Option<String>,
    pub channel_refund_id: Option<String>,
    pub status_reason: String,
    pub business_day: String,
    pub created_at: DateTimeUtc,
    pub expires_at: Option<DateTimeUtc>,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

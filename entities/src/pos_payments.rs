//! `pos_payments`: one till payment, unique per terminal order number.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_payments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The platform's payment number; channel order numbers are `<payment_no>-<attempt>`.
    pub payment_no: String,
    pub station_id: Uuid,
    pub terminal_id: Uuid,
    pub shift_id: Uuid,
    /// The terminal's own order number: the same number is the same payment.
    pub terminal_order_no: String,
    /// Digest of the request's content, to tell a retry from a different request.
    pub request_hash: String,
    pub method: String,
    pub amount_minor: i64,
    pub currency: String,
    /// What was sold, as JSON (fuel lines with grade, litres and nozzle; other items).
    pub sale: String,
    /// `pending`, `succeeded`, `failed`, `reversed` or `needs_attention`.
    pub status: String,
    pub channel_id: Option<String>,
    pub channel_txn_id: Option<String>,
    /// The order number of the attempt that charged, as the channel knows it.
    pub out_trade_no: Option<String>,
    /// The channel's fee on the payment, minor units.
    pub fee_minor: Option<i64>,
    /// The routing decision with every candidate and exclusion, as JSON.
    pub route: Option<String>,
    pub reason: String,
    /// Refunds requested and not yet finished, minor units.
    pub refund_reserved_minor: i64,
    /// Refunds paid back, minor units.
    pub refunded_minor: i64,
    /// The station's local date of the payment (`YYYY-MM-DD`, Asia/Shanghai).
    pub business_day: String,
    pub created_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
    /// The member card a `member_card` payment is paid from.
    pub card_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

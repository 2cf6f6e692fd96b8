//! `pos_card_top_ups`: money loaded onto a member card at a till, one per terminal order
//! number, counted in the shift it was taken in.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_card_top_ups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The platform's number for the top-up (the ledger entry's idempotency key).
    pub top_up_no: String,
    pub card_id: Uuid,
    pub station_id: Uuid,
    pub terminal_id: Uuid,
    pub shift_id: Uuid,
    /// The till's own order number: the same number with the same content is the same top-up.
    pub terminal_order_no: String,
    pub request_hash: String,
    /// How the customer paid for the load (`cash`).
    pub method: String,
    pub amount_minor: i64,
    pub currency: String,
    /// `pending`, `succeeded` or `failed` (the cap, or a blocked card).
    pub status: String,
    pub reason: String,
    pub business_day: String,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub finished_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

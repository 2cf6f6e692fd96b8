//! `partner_orders`: an order a partner pushed to a terminal, already paid by its driver in
//! the partner's app. Its money and its place in the shift are the till payment it made
//! (`payment_id`, method `partner_app`); one order per partner and partner order number.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "partner_orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub partner_id: Uuid,
    /// The partner's own order number: the same number and content is the same order.
    pub partner_order_no: String,
    /// Digest of the pushed content, to tell a retry from a different order.
    pub request_hash: String,
    /// The contract the order was taken under.
    pub contract_id: Uuid,
    pub station_id: Uuid,
    pub terminal_id: Uuid,
    /// The till payment (`pos_payments`) the order is.
    pub payment_id: Uuid,
    /// The partner's reference of the driver who paid.
    pub driver_ref: String,
    pub vehicle_plate: Option<String>,
    /// The partner's commission on the order under the contract's terms, minor units.
    pub commission_minor: i64,
    /// When the till acknowledged printing the ticket, and who was logged in on it.
    pub printed_at: Option<DateTimeUtc>,
    pub printed_by: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

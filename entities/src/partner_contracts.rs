//! `partner_contracts`: a partner signed onto a station, with the terms its orders are
//! booked under. One per partner and station; disabling it stops new orders.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "partner_contracts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The partner organisation.
    pub partner_id: Uuid,
    /// The station organisation the partner may push orders to.
    pub station_id: Uuid,
    /// `active` or `disabled`.
    pub status: String,
    /// The partner's commission on each order, in parts per million of the amount
    /// (3,800 is 0.38 %), deducted from what the partner owes the station.
    pub commission_ppm: i64,
    /// Days after an order's business day within which the partner pays the station.
    pub settlement_days: i32,
    /// The largest order the partner may push, minor units.
    pub single_limit_minor: i64,
    pub currency: String,
    /// The station's ledger account of what this partner owes it (an asset).
    pub receivable_account_id: Uuid,
    /// The station's ledger account of the partner's commissions (an expense).
    pub commission_account_id: Uuid,
    pub signed_by: String,
    /// Who last enabled, disabled or amended the contract, and why.
    pub status_changed_by: String,
    pub status_reason: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `pos_shifts`: a cashier's shift on a terminal; at most one open per terminal.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_shifts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub station_id: Uuid,
    pub terminal_id: Uuid,
    pub cashier_id: Uuid,
    pub cashier_name: String,
    /// `open` or `closed`.
    pub status: String,
    pub currency: String,
    /// Cash in the drawer when the shift opened, minor units.
    pub opening_float_minor: i64,
    pub opened_at: DateTimeUtc,
    pub closed_at: Option<DateTimeUtc>,
    /// Cash the cashier counted at close, minor units.
    pub declared_cash_minor: Option<i64>,
    /// Opening float plus cash sales less cash refunds, minor units.
    pub expected_cash_minor: Option<i64>,
    /// The manager who closed the shift over unresolved payments, and why.
    pub override_by: Option<String>,
    pub override_reason: Option<String>,
    /// The close's totals as JSON.
    pub summary: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

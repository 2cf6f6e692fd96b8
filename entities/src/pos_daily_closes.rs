//! `pos_daily_closes`: the daily close (日结) of a station or a station company for one
//! business day (Asia/Shanghai); one row per organisation and day, recomputed in place.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_daily_closes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The station, or the station company whose stations the row adds up.
    pub organisation_id: Uuid,
    /// `station` or `station_company`.
    pub scope: String,
    /// `YYYY-MM-DD` in Asia/Shanghai.
    pub business_day: String,
    pub currency: String,
    pub sales_count: i64,
    /// Succeeded payments, minor units.
    pub sales_minor: i64,
    pub refunds_count: i64,
    /// Refunds paid back, minor units.
    pub refunds_minor: i64,
    /// Sales less refunds, minor units.
    pub net_minor: i64,
    /// Channel fees and partner commissions of the day's sales, minor units.
    pub fees_minor: i64,
    /// Shifts that opened or took money on the day.
    pub shifts: i64,
    /// Shifts still open when the close ran.
    pub open_shifts: i64,
    /// Payments and refunds whose outcome is still open.
    pub unresolved: i64,
    /// The full summary as JSON (totals by method and fuel grade, open shifts, unresolved).
    pub summary: String,
    pub created_at: DateTimeUtc,
    /// When the row was last computed.
    pub computed_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

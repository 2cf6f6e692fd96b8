//! `pos_channel_day_totals`: the amount of a till's payments that are pending or succeeded on a
//! channel on a business day. Written only by a trigger on `pos_payments` (see the
//! migration `m20261128_000004_channel_day_totals`); read by routing for the daily limits.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_channel_day_totals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub station_id: Uuid,
    #[sea_orm(primary_key, auto_increment = false)]
    pub business_day: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub channel_id: String,
    /// Per till, so that the tills of a station do not write one row (routing adds them up).
    #[sea_orm(primary_key, auto_increment = false)]
    pub terminal_id: Uuid,
    pub amount_minor: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

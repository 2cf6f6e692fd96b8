//! `pos_channels`: the channels a station signed, with the station's terms on each.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_channels")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub station_id: Uuid,
    /// The platform's id of the channel (`wxpay-direct`), unique per station.
    pub channel_id: String,
    /// `wechat_pay`, `alipay` or `acquirer`.
    pub party: String,
    /// The terms as JSON (`payments::model::ChannelConfig`): methods, fee, limits, priority,
    /// maintenance windows, enabled.
    pub terms: String,
    /// The station's ledger account for what this channel owes it until settlement.
    pub clearing_account_id: Uuid,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

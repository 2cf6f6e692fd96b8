//! `pos_terminals`: the tills of a station, each with its own key.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_terminals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The station organisation the terminal is bound to.
    pub station_id: Uuid,
    /// The station's own name for the till, unique within the station (`till-1`).
    pub code: String,
    pub name: String,
    /// SHA-256 of the terminal key, hex; the key itself is shown once at registration.
    pub key_hash: String,
    pub created_at: DateTimeUtc,
    pub disabled_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

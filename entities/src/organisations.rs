//! `organisations`: the tree of parties that use the platform (operator, brands, station
//! companies, stations, fleets, depots, partners).
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "organisations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// Absent only for the platform operator, the root of the tree.
    pub parent_id: Option<Uuid>,
    /// `platform_operator`, `brand`, `station_company`, `station`, `fleet_company`, `depot` or
    /// `partner`.
    pub kind: String,
    pub name: String,
    /// The ids from the root down to this organisation, each followed by `/`
    /// (`/<root>/<brand>/<company>/`): the subtree of an organisation is every path that
    /// starts with its own.
    pub path: String,
    /// Distance from the root (the root is 0).
    pub depth: i32,
    /// The `owner_org` of this organisation's ledger accounts.
    pub ledger_owner: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `users`: people who log in, each in one organisation with one role.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organisation_id: Uuid,
    /// The login name, lower case, unique across the platform.
    pub username: String,
    pub display_name: String,
    /// `admin`, `station_owner`, `station_manager`, `cashier`, `fleet_manager`,
    /// `treasury_maker`, `treasury_checker` or `partner`.
    pub role: String,
    /// An argon2id PHC string; the password itself is never stored.
    pub password_hash: String,
    /// A disabled user cannot log in and their sessions stop working.
    pub disabled_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

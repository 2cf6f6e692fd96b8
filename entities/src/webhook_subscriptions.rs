//! `webhook_subscriptions`: where domain events are posted, signed with a secret of the
//! subscription's own.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub url: String,
    /// Space-separated topic patterns: a topic, a prefix ending in `.*`, or `*`.
    pub topics: String,
    /// The signing secret, encrypted like API key secrets.
    pub secret_ciphertext: String,
    pub encryption_key_id: String,
    pub created_by: String,
    pub created_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

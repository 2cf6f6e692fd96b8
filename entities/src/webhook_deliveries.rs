//! `webhook_deliveries`: one domain event for one subscription, until delivered or given up.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "webhook_deliveries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub subscription_id: Uuid,
    /// The event's id (the outbox message that carried it): receivers deduplicate on it.
    pub event_id: Uuid,
    pub topic: String,
    /// The event's data as JSON.
    pub payload: String,
    pub occurred_at: DateTimeUtc,
    /// `pending`, `delivered` or `failed` (out of attempts).
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

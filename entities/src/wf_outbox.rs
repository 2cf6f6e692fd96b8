//! `wf_outbox`: messages written by transitions, delivered after they commit.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "wf_outbox")]
pub struct Model {
    /// The message id, also the broker's message id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub instance_id: Uuid,
    /// `workflow:<type>` or `activity:<kind>`, or `events` for domain events.
    pub destination: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub payload: Json,
    /// Not deliverable before this time: durable timers and retry backoff.
    pub available_at: DateTimeUtc,
    /// A worker running the message holds it until then; past it, another may take it.
    pub leased_until: Option<DateTimeUtc>,
    pub delivered_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

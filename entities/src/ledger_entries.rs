//! `ledger_entries`: immutable journal entries. Corrections are new entries.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_entries")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub idempotency_key: String,
    /// Hash of the request that wrote the entry: a replay with other content is a conflict.
    pub content_hash: String,
    /// `posted`, `pending`, `post_pending`, `void_pending` or `expire_pending`.
    pub kind: String,
    /// For the resolution of a hold: the pending entry it resolves.
    pub hold_id: Option<Uuid>,
    /// The document or workflow that caused the entry.
    pub reference: String,
    pub description: String,
    pub effective_at: DateTimeUtc,
    pub recorded_at: DateTimeUtc,
    #[sea_orm(column_type = "JsonBinary")]
    pub metadata: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::ledger_postings::Entity")]
    Postings,
}

impl Related<super::ledger_postings::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Postings.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

//! `wf_instances`: one row per workflow instance, holding its current state.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "wf_instances")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub workflow_type: String,
    /// The definition version the instance started on; it keeps it to the end.
    pub version: i32,
    /// Unique per type: the purchase order number, the settlement run's date.
    pub business_key: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub state: Json,
    /// `running`, `completed`, `failed` or `compensated`.
    pub status: String,
    pub status_reason: String,
    /// Bumped by every transition; a transition commits only on the revision it read.
    pub revision: i64,
    /// The instance that started this one as its child.
    pub parent_id: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

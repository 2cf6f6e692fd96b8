//! `treasury_approvals`: one row per approval of an instruction's content.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_approvals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub instruction_id: Uuid,
    pub approver: String,
    pub role: String,
    /// The step of the approval chain the approval counts for.
    pub step: i32,
    /// The content the approver saw; a change of content voids the approval.
    pub content_digest: String,
    pub approved_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

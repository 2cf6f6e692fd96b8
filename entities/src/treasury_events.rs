//! `treasury_events`: the append-only audit trail of every instruction.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "treasury_events")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub instruction_id: Uuid,
    pub at: DateTimeUtc,
    /// The user, or `bank` for what the custodial bank reported.
    pub actor: String,
    /// `created`, `amended`, `approved`, `rejected`, `held`, `settled`, `returned`.
    pub event: String,
    /// JSON detail of the event.
    pub detail: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

//! `wf_canary_effects`: the side effects of the canary workflow's steps, one row per step
//! under its idempotency key. Operators and tests count them to prove effectively-once runs.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "wf_canary_effects")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub idempotency_key: String,
    pub instance_id: Uuid,
    pub step: i32,
    /// How many times the step's activity ran; more than one means it was retried or re-run
    /// after a crash, and its effect still happened once.
    pub runs: i32,
    pub recorded_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

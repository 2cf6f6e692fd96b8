//! `wf_schedules`: cron schedules that start workflows.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "wf_schedules")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub name: String,
    /// A cron 0.17 expression: 6 or 7 fields, seconds first, day-of-week 1 = Sunday.
    pub cron: String,
    /// IANA time zone the expression is read in (default Asia/Shanghai).
    pub time_zone: String,
    pub workflow_type: String,
    #[sea_orm(column_type = "JsonBinary")]
    pub input: Json,
    /// After downtime: `fire_once` starts one run for the missed ticks, `skip` starts none.
    pub missed_ticks: String,
    pub next_fire_at: DateTimeUtc,
    pub last_fired_at: Option<DateTimeUtc>,
    /// What the last tick did, e.g. `fired` or `skipped 3 missed ticks`.
    pub last_outcome: String,
    pub enabled: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

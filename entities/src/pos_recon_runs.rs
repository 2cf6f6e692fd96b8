//! `pos_recon_runs`: the reconciliation of one channel's statement of one day with our
//! payments; one row per channel and day, updated by every run.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pos_recon_runs")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub channel_id: String,
    /// The statement's day, `YYYY-MM-DD` in China Standard Time.
    pub statement_day: String,
    /// `balanced` (every line matched), `exceptions` (some left open) or `failed`.
    pub status: String,
    pub statement_lines: i64,
    pub matched: i64,
    /// Exceptions still open after the run.
    pub exceptions: i64,
    /// Differences that the channel's own answer to a query explained.
    pub resolved_by_query: i64,
    /// What the statement counts as paid, minor units.
    pub statement_total_minor: i64,
    pub statement_fees_minor: i64,
    /// What the settlement entries of the matched items moved to the stations' banks.
    pub settled_minor: i64,
    /// How many times the day was reconciled.
    pub runs: i64,
    /// The last run's details as JSON (per station settlement, failure reason).
    pub detail: String,
    pub started_at: DateTimeUtc,
    pub finished_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

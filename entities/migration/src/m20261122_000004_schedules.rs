//! Cron schedules of the workflow engine.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE wf_schedules (
    name text PRIMARY KEY,
    cron text NOT NULL,
    time_zone text NOT NULL,
    workflow_type text NOT NULL,
    input jsonb NOT NULL,
    missed_ticks text NOT NULL CHECK (missed_ticks IN ('fire_once', 'skip')),
    next_fire_at timestamptz NOT NULL,
    last_fired_at timestamptz,
    last_outcome text NOT NULL,
    enabled boolean NOT NULL
);
"#;

const SQLITE: &str = r#"
CREATE TABLE wf_schedules (
    name text PRIMARY KEY NOT NULL,
    cron text NOT NULL,
    time_zone text NOT NULL,
    workflow_type text NOT NULL,
    input text NOT NULL,
    missed_ticks text NOT NULL CHECK (missed_ticks IN ('fire_once', 'skip')),
    next_fire_at text NOT NULL,
    last_fired_at text,
    last_outcome text NOT NULL,
    enabled boolean NOT NULL
);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, "DROP TABLE wf_schedules;").await
    }
}

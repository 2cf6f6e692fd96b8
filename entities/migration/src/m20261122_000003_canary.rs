//! The canary workflow's side effects.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE wf_canary_effects (
    idempotency_key text PRIMARY KEY,
    instance_id uuid NOT NULL,
    step integer NOT NULL,
    runs integer NOT NULL,
    recorded_at timestamptz NOT NULL
);
"#;

const SQLITE: &str = r#"
CREATE TABLE wf_canary_effects (
    idempotency_key text PRIMARY KEY NOT NULL,
    instance_id blob NOT NULL,
    step integer NOT NULL,
    runs integer NOT NULL,
    recorded_at text NOT NULL
);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, "DROP TABLE wf_canary_effects;").await
    }
}

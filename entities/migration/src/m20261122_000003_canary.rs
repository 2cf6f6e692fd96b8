//! The canary workflow's side effects.
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

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
        let script = match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES,
            _ => SQLITE,
        };
        crate::run_script(manager, script).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, "DROP TABLE wf_canary_effects;").await
    }
}

//! Child workflows: an instance may name the instance that started it.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str =
    "ALTER TABLE wf_instances ADD COLUMN parent_id uuid REFERENCES wf_instances (id);";
const SQLITE: &str =
    "ALTER TABLE wf_instances ADD COLUMN parent_id blob REFERENCES wf_instances (id);";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, "ALTER TABLE wf_instances DROP COLUMN parent_id;").await
    }
}

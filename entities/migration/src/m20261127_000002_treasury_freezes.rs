//! Freezes and unfreezes: an unfreeze instruction names the freeze instruction it releases;
//! at most one unfreeze that is not rejected releases a freeze. On SQLite the column carries
//! no foreign key: SQLite cannot drop a column that is part of one, and the store checks
//! the freeze exists before it writes an unfreeze.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
ALTER TABLE treasury_instructions
    ADD COLUMN releases_instruction_id uuid REFERENCES treasury_instructions (id);
CREATE UNIQUE INDEX treasury_instructions_one_release
    ON treasury_instructions (releases_instruction_id)
    WHERE releases_instruction_id IS NOT NULL AND status <> 'rejected';
"#;

const SQLITE: &str = r#"
ALTER TABLE treasury_instructions ADD COLUMN releases_instruction_id blob;
CREATE UNIQUE INDEX treasury_instructions_one_release
    ON treasury_instructions (releases_instruction_id)
    WHERE releases_instruction_id IS NOT NULL AND status <> 'rejected';
"#;

const POSTGRES_DOWN: &str = r#"
DROP INDEX treasury_instructions_one_release;
ALTER TABLE treasury_instructions DROP COLUMN releases_instruction_id;
"#;

const SQLITE_DOWN: &str = r#"
DROP INDEX treasury_instructions_one_release;
ALTER TABLE treasury_instructions DROP COLUMN releases_instruction_id;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES_DOWN, SQLITE_DOWN).await
    }
}

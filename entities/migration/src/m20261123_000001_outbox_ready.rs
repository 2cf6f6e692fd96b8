//! The outbox's ready index follows the order messages are taken in: due time, then id. A
//! scan for ready messages walks it in order and stops at the batch size, so neither pending
//! timers nor rows delivered since the last vacuum are visited again and again. The pending
//! index finds an instance's earlier unsent messages, which relays publish first. On PostgreSQL
//! the outbox is a queue table, vacuumed far more eagerly than the defaults.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
DROP INDEX wf_outbox_due;
CREATE INDEX wf_outbox_ready ON wf_outbox (available_at, id) WHERE delivered_at IS NULL;
CREATE INDEX wf_outbox_pending ON wf_outbox (instance_id, destination, available_at, id) WHERE delivered_at IS NULL;
ALTER TABLE wf_outbox SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000, autovacuum_analyze_scale_factor = 0.02);
"#;

const SQLITE: &str = r#"
DROP INDEX wf_outbox_due;
CREATE INDEX wf_outbox_ready ON wf_outbox (available_at, id) WHERE delivered_at IS NULL;
CREATE INDEX wf_outbox_pending ON wf_outbox (instance_id, destination, available_at, id) WHERE delivered_at IS NULL;
"#;

const DOWN: &str = r#"
DROP INDEX wf_outbox_pending;
DROP INDEX wf_outbox_ready;
CREATE INDEX wf_outbox_due ON wf_outbox (destination, available_at) WHERE delivered_at IS NULL;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, DOWN).await
    }
}

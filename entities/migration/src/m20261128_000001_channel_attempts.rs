//! What each channel did with each attempt, for routing's circuit breakers, success rates and
//! payer exclusions: the health of a channel survives restarts and is shared by every API
//! process. Rows are written once per attempt (the id derives from the payment and the
//! attempt) and only read for the last minutes.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SCHEMA: &str = r#"
CREATE TABLE pos_channel_attempts (
    id UUID PRIMARY KEY NOT NULL,
    channel_id text NOT NULL,
    at TS NOT NULL,
    signal text NOT NULL CHECK (signal IN ('succeeded', 'declined', 'failed')),
    payer_token text
);
CREATE INDEX pos_channel_attempts_recent ON pos_channel_attempts (at);
"#;

const DOWN: &str = "DROP TABLE pos_channel_attempts;";

fn schema(uuid: &str, ts: &str) -> String {
    SCHEMA.replace("UUID", uuid).replace("TS", ts)
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let postgres = schema("uuid", "timestamptz");
        let sqlite = schema("blob", "text");
        crate::run_for_backend(manager, &postgres, &sqlite).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, DOWN, DOWN).await
    }
}

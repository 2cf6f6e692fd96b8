//! Webhooks: subscriptions to domain events, and one delivery per event and subscription
//! (unique), tried until the receiver answers 2xx or the attempts run out.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE webhook_subscriptions (
    id uuid PRIMARY KEY,
    organisation_id uuid NOT NULL,
    url text NOT NULL,
    topics text NOT NULL,
    secret_ciphertext text NOT NULL,
    encryption_key_id text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE TABLE webhook_deliveries (
    id uuid PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id),
    event_id uuid NOT NULL,
    topic text NOT NULL,
    payload text NOT NULL,
    occurred_at timestamptz NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    last_status integer,
    last_error text,
    delivered_at timestamptz,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
"#;

const SQLITE: &str = r#"
CREATE TABLE webhook_subscriptions (
    id blob PRIMARY KEY NOT NULL,
    organisation_id blob NOT NULL,
    url text NOT NULL,
    topics text NOT NULL,
    secret_ciphertext text NOT NULL,
    encryption_key_id text NOT NULL,
    created_by text NOT NULL,
    created_at text NOT NULL,
    revoked_at text
);
CREATE TABLE webhook_deliveries (
    id blob PRIMARY KEY NOT NULL,
    subscription_id blob NOT NULL REFERENCES webhook_subscriptions (id),
    event_id blob NOT NULL,
    topic text NOT NULL,
    payload text NOT NULL,
    occurred_at text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL,
    next_attempt_at text NOT NULL,
    last_status integer,
    last_error text,
    delivered_at text,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
"#;

const DOWN: &str = r#"
DROP TABLE webhook_deliveries;
DROP TABLE webhook_subscriptions;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, DOWN, DOWN).await
    }
}

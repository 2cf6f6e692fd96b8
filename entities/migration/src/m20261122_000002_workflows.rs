//! The workflow engine: instances, history, outbox (with durable timers) and inbox.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE wf_instances (
    id uuid PRIMARY KEY,
    workflow_type text NOT NULL,
    version integer NOT NULL,
    business_key text NOT NULL,
    state jsonb NOT NULL,
    status text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'compensated')),
    status_reason text NOT NULL,
    revision bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    UNIQUE (workflow_type, business_key)
);
CREATE INDEX wf_instances_type_status ON wf_instances (workflow_type, status);

CREATE TABLE wf_history (
    instance_id uuid NOT NULL REFERENCES wf_instances (id),
    seq bigint NOT NULL,
    kind text NOT NULL,
    detail jsonb NOT NULL,
    reason text NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE wf_outbox (
    id uuid PRIMARY KEY,
    instance_id uuid NOT NULL,
    destination text NOT NULL,
    payload jsonb NOT NULL,
    available_at timestamptz NOT NULL,
    leased_until timestamptz,
    delivered_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX wf_outbox_due ON wf_outbox (destination, available_at) WHERE delivered_at IS NULL;

CREATE TABLE wf_inbox (
    message_id uuid PRIMARY KEY,
    consumer text NOT NULL,
    consumed_at timestamptz NOT NULL
);
"#;

const SQLITE: &str = r#"
CREATE TABLE wf_instances (
    id blob PRIMARY KEY NOT NULL,
    workflow_type text NOT NULL,
    version integer NOT NULL,
    business_key text NOT NULL,
    state text NOT NULL,
    status text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'compensated')),
    status_reason text NOT NULL,
    revision integer NOT NULL,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    UNIQUE (workflow_type, business_key)
);
CREATE INDEX wf_instances_type_status ON wf_instances (workflow_type, status);

CREATE TABLE wf_history (
    instance_id blob NOT NULL REFERENCES wf_instances (id),
    seq integer NOT NULL,
    kind text NOT NULL,
    detail text NOT NULL,
    reason text NOT NULL,
    recorded_at text NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE wf_outbox (
    id blob PRIMARY KEY NOT NULL,
    instance_id blob NOT NULL,
    destination text NOT NULL,
    payload text NOT NULL,
    available_at text NOT NULL,
    leased_until text,
    delivered_at text,
    created_at text NOT NULL
);
CREATE INDEX wf_outbox_due ON wf_outbox (destination, available_at) WHERE delivered_at IS NULL;

CREATE TABLE wf_inbox (
    message_id blob PRIMARY KEY NOT NULL,
    consumer text NOT NULL,
    consumed_at text NOT NULL
);
"#;

const DOWN: &str = r#"
DROP TABLE wf_inbox;
DROP TABLE wf_outbox;
DROP TABLE wf_history;
DROP TABLE wf_instances;
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

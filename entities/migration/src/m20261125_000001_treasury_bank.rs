//! Treasury at the bank: the sub-accounts under the platform's master account, each mirrored
//! by a ledger account, and the messages sent for instructions.
//!
//! A sub-account belongs to one legal entity (an organisation's ledger owner) per currency.
//! An instruction has at most one message: the message id and its signed bytes are stored
//! before the first send, so every resubmission sends exactly the same message and the
//! bank's duplicate check (message id, end-to-end id) makes it harmless.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE treasury_sub_accounts (
    id uuid PRIMARY KEY,
    owner_org text NOT NULL,
    holder_name text NOT NULL,
    account_number text NOT NULL,
    bank_code text NOT NULL,
    currency text NOT NULL,
    ledger_account_id uuid NOT NULL UNIQUE,
    is_master boolean NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (bank_code, account_number),
    UNIQUE (owner_org, currency, is_master)
);
CREATE TABLE treasury_messages (
    message_id text PRIMARY KEY,
    instruction_id uuid NOT NULL UNIQUE REFERENCES treasury_instructions (id),
    rail text NOT NULL,
    xml text NOT NULL,
    signature text NOT NULL,
    sends integer NOT NULL,
    last_status text,
    last_report text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
"#;

const SQLITE: &str = r#"
CREATE TABLE treasury_sub_accounts (
    id blob PRIMARY KEY NOT NULL,
    owner_org text NOT NULL,
    holder_name text NOT NULL,
    account_number text NOT NULL,
    bank_code text NOT NULL,
    currency text NOT NULL,
    ledger_account_id blob NOT NULL UNIQUE,
    is_master integer NOT NULL,
    created_at text NOT NULL,
    UNIQUE (bank_code, account_number),
    UNIQUE (owner_org, currency, is_master)
);
CREATE TABLE treasury_messages (
    message_id text PRIMARY KEY NOT NULL,
    instruction_id blob NOT NULL UNIQUE REFERENCES treasury_instructions (id),
    rail text NOT NULL,
    xml text NOT NULL,
    signature text NOT NULL,
    sends integer NOT NULL,
    last_status text,
    last_report text,
    created_at text NOT NULL,
    updated_at text NOT NULL
);
"#;

const DOWN: &str = r#"
DROP TABLE treasury_messages;
DROP TABLE treasury_sub_accounts;
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

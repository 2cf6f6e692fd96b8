//! Treasury: instructions to the custodial bank, their approvals and their audit trail.
//!
//! An instruction is unique by its end-to-end id (the bank's key for one payment) and by the
//! maker's idempotency key. An approver approves a given content once (the digest is part of
//! the key). The events table is append-only: the schema refuses updates and deletes.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE treasury_instructions (
    id uuid PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN ('sub_account_transfer', 'payout', 'freeze', 'unfreeze')),
    status text NOT NULL CHECK (status IN ('pending_approval', 'approved', 'rejected',
                                           'settled', 'returned')),
    end_to_end_id text NOT NULL UNIQUE,
    debtor_ledger_account_id uuid NOT NULL,
    debtor_name text NOT NULL,
    debtor_account text NOT NULL,
    debtor_bank text NOT NULL,
    creditor_ledger_account_id uuid NOT NULL,
    creditor_name text NOT NULL,
    creditor_account text NOT NULL,
    creditor_bank text NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    purpose text,
    remittance text,
    requested_execution_date text NOT NULL,
    maker text NOT NULL,
    content_digest text NOT NULL,
    hold_entry_id uuid,
    rejected_by text,
    rejection_reason text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX treasury_instructions_status ON treasury_instructions (status, created_at);
CREATE INDEX treasury_instructions_creditor ON treasury_instructions (creditor_bank, creditor_account);

CREATE TABLE treasury_approvals (
    id uuid PRIMARY KEY,
    instruction_id uuid NOT NULL REFERENCES treasury_instructions (id),
    approver text NOT NULL,
    role text NOT NULL,
    step integer NOT NULL CHECK (step >= 0),
    content_digest text NOT NULL,
    approved_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    UNIQUE (instruction_id, approver, content_digest)
);

CREATE TABLE treasury_events (
    id uuid PRIMARY KEY,
    instruction_id uuid NOT NULL REFERENCES treasury_instructions (id),
    at timestamptz NOT NULL,
    actor text NOT NULL,
    event text NOT NULL,
    detail text NOT NULL
);
CREATE INDEX treasury_events_instruction ON treasury_events (instruction_id, at);
CREATE FUNCTION treasury_events_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'treasury_events is append-only';
END;
$$;
CREATE TRIGGER treasury_events_no_change BEFORE UPDATE OR DELETE ON treasury_events
    FOR EACH ROW EXECUTE FUNCTION treasury_events_immutable();
"#;

const SQLITE: &str = r#"
CREATE TABLE treasury_instructions (
    id blob PRIMARY KEY NOT NULL,
    idempotency_key text NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN ('sub_account_transfer', 'payout', 'freeze', 'unfreeze')),
    status text NOT NULL CHECK (status IN ('pending_approval', 'approved', 'rejected',
                                           'settled', 'returned')),
    end_to_end_id text NOT NULL UNIQUE,
    debtor_ledger_account_id blob NOT NULL,
    debtor_name text NOT NULL,
    debtor_account text NOT NULL,
    debtor_bank text NOT NULL,
    creditor_ledger_account_id blob NOT NULL,
    creditor_name text NOT NULL,
    creditor_account text NOT NULL,
    creditor_bank text NOT NULL,
    amount_minor integer NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    purpose text,
    remittance text,
    requested_execution_date text NOT NULL,
    maker text NOT NULL,
    content_digest text NOT NULL,
    hold_entry_id blob,
    rejected_by text,
    rejection_reason text,
    created_at text NOT NULL,
    updated_at text NOT NULL
);
CREATE INDEX treasury_instructions_status ON treasury_instructions (status, created_at);
CREATE INDEX treasury_instructions_creditor ON treasury_instructions (creditor_bank, creditor_account);

CREATE TABLE treasury_approvals (
    id blob PRIMARY KEY NOT NULL,
    instruction_id blob NOT NULL REFERENCES treasury_instructions (id),
    approver text NOT NULL,
    role text NOT NULL,
    step integer NOT NULL CHECK (step >= 0),
    content_digest text NOT NULL,
    approved_at text NOT NULL,
    expires_at text NOT NULL,
    UNIQUE (instruction_id, approver, content_digest)
);

CREATE TABLE treasury_events (
    id blob PRIMARY KEY NOT NULL,
    instruction_id blob NOT NULL REFERENCES treasury_instructions (id),
    at text NOT NULL,
    actor text NOT NULL,
    event text NOT NULL,
    detail text NOT NULL
);
CREATE INDEX treasury_events_instruction ON treasury_events (instruction_id, at);
CREATE TRIGGER treasury_events_no_update BEFORE UPDATE ON treasury_events BEGIN
    SELECT RAISE(ABORT, 'treasury_events is append-only');
END;
CREATE TRIGGER treasury_events_no_delete BEFORE DELETE ON treasury_events BEGIN
    SELECT RAISE(ABORT, 'treasury_events is append-only');
END;
"#;

const DOWN: &str = r#"
DROP TABLE treasury_events;
DROP TABLE treasury_approvals;
DROP TABLE treasury_instructions;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let postgres = format!("{DOWN}DROP FUNCTION treasury_events_immutable();");
        crate::run_for_backend(manager, &postgres, DOWN).await
    }
}

//! The transactions of each message to the bank: a message may carry several credit
//! transfers (the tranches of one instruction on the capped 24x7 rail), each with its own
//! end-to-end id and status. Messages stored before carry one transaction, the instruction
//! itself: they are filled in here with the status their instruction has.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE treasury_message_transactions (
    message_id text NOT NULL REFERENCES treasury_messages (message_id),
    seq integer NOT NULL,
    instruction_id uuid NOT NULL REFERENCES treasury_instructions (id),
    end_to_end_id text NOT NULL UNIQUE,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    status text NOT NULL,
    reason text,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (message_id, seq)
);
CREATE INDEX treasury_message_transactions_instruction
    ON treasury_message_transactions (instruction_id);
INSERT INTO treasury_message_transactions
    (message_id, seq, instruction_id, end_to_end_id, amount_minor, currency, status, reason, updated_at)
SELECT m.message_id, 1, i.id, i.end_to_end_id, i.amount_minor, i.currency,
       CASE i.status WHEN 'settled' THEN 'settled' WHEN 'returned' THEN 'returned'
                     WHEN 'rejected' THEN 'rejected' ELSE 'pending' END,
       i.rejection_reason, m.updated_at
FROM treasury_messages m JOIN treasury_instructions i ON i.id = m.instruction_id;
"#;

const SQLITE: &str = r#"
CREATE TABLE treasury_message_transactions (
    message_id text NOT NULL REFERENCES treasury_messages (message_id),
    seq integer NOT NULL,
    instruction_id blob NOT NULL REFERENCES treasury_instructions (id),
    end_to_end_id text NOT NULL UNIQUE,
    amount_minor integer NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    status text NOT NULL,
    reason text,
    updated_at text NOT NULL,
    PRIMARY KEY (message_id, seq)
);
CREATE INDEX treasury_message_transactions_instruction
    ON treasury_message_transactions (instruction_id);
INSERT INTO treasury_message_transactions
    (message_id, seq, instruction_id, end_to_end_id, amount_minor, currency, status, reason, updated_at)
SELECT m.message_id, 1, i.id, i.end_to_end_id, i.amount_minor, i.currency,
       CASE i.status WHEN 'settled' THEN 'settled' WHEN 'returned' THEN 'returned'
                     WHEN 'rejected' THEN 'rejected' ELSE 'pending' END,
       i.rejection_reason, m.updated_at
FROM treasury_messages m JOIN treasury_instructions i ON i.id = m.instruction_id;
"#;

const DOWN: &str = r#"
DROP TABLE treasury_message_transactions;
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

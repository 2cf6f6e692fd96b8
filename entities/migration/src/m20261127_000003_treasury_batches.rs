//! Batch instructions: an instruction may carry several payments from its debtor
//! sub-account, each with its own creditor, amount and end-to-end id, approved, held and sent
//! as a whole (one pain.001, one transaction per line).
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE treasury_instruction_lines (
    instruction_id uuid NOT NULL REFERENCES treasury_instructions (id),
    seq integer NOT NULL CHECK (seq > 0),
    end_to_end_id text NOT NULL UNIQUE,
    creditor_ledger_account_id uuid NOT NULL,
    creditor_name text NOT NULL,
    creditor_account text NOT NULL,
    creditor_bank text NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    remittance text,
    PRIMARY KEY (instruction_id, seq)
);
CREATE INDEX treasury_instruction_lines_creditor
    ON treasury_instruction_lines (creditor_bank, creditor_account);
"#;

const SQLITE: &str = r#"
CREATE TABLE treasury_instruction_lines (
    instruction_id blob NOT NULL REFERENCES treasury_instructions (id),
    seq integer NOT NULL CHECK (seq > 0),
    end_to_end_id text NOT NULL UNIQUE,
    creditor_ledger_account_id blob NOT NULL,
    creditor_name text NOT NULL,
    creditor_account text NOT NULL,
    creditor_bank text NOT NULL,
    amount_minor integer NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    remittance text,
    PRIMARY KEY (instruction_id, seq)
);
CREATE INDEX treasury_instruction_lines_creditor
    ON treasury_instruction_lines (creditor_bank, creditor_account);
"#;

const DOWN: &str = r#"
DROP TABLE treasury_instruction_lines;
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

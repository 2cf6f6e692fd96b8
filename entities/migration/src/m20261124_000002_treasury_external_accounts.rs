//! Treasury: each legal entity's external bank accounts, the creditors of payouts.
//!
//! An account is registered once per owner (bank code and number); registering it again
//! with the same details is a no-op.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE treasury_external_accounts (
    id uuid PRIMARY KEY,
    owner_org text NOT NULL,
    holder_name text NOT NULL CHECK (length(holder_name) BETWEEN 1 AND 140),
    account_number text NOT NULL,
    bank_code text NOT NULL,
    branch_name text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    UNIQUE (owner_org, bank_code, account_number)
);
"#;

const SQLITE: &str = r#"
CREATE TABLE treasury_external_accounts (
    id blob PRIMARY KEY NOT NULL,
    owner_org text NOT NULL,
    holder_name text NOT NULL CHECK (length(holder_name) BETWEEN 1 AND 140),
    account_number text NOT NULL,
    bank_code text NOT NULL,
    branch_name text NOT NULL,
    created_by text NOT NULL,
    created_at text NOT NULL,
    UNIQUE (owner_org, bank_code, account_number)
);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_for_backend(manager, POSTGRES, SQLITE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, "DROP TABLE treasury_external_accounts;").await
    }
}

//! Treasury: imported bank statements (camt.053) and the exceptions their reconciliation
//! raised. A statement is imported once per account and bank statement id; an exception is
//! open until someone resolves it, with a note, and is never deleted.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES: &str = r#"
CREATE TABLE treasury_statements (
    id uuid PRIMARY KEY,
    account_number text NOT NULL,
    statement_id text NOT NULL,
    statement_date text NOT NULL,
    source text NOT NULL CHECK (source IN ('bank', 'upload')),
    opening_minor bigint NOT NULL,
    closing_minor bigint NOT NULL,
    currency text NOT NULL,
    entries integer NOT NULL,
    matched integer NOT NULL,
    xml text NOT NULL,
    imported_by text NOT NULL,
    imported_at timestamptz NOT NULL,
    UNIQUE (account_number, statement_id)
);
CREATE TABLE treasury_exceptions (
    id uuid PRIMARY KEY,
    statement_id uuid NOT NULL REFERENCES treasury_statements (id),
    account_number text NOT NULL,
    kind text NOT NULL,
    end_to_end_id text,
    detail text NOT NULL,
    status text NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution text,
    resolved_by text,
    resolved_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX treasury_exceptions_status ON treasury_exceptions (status, created_at);
"#;

const SQLITE: &str = r#"
CREATE TABLE treasury_statements (
    id blob PRIMARY KEY NOT NULL,
    account_number text NOT NULL,
    statement_id text NOT NULL,
    statement_date text NOT NULL,
    source text NOT NULL CHECK (source IN ('bank', 'upload')),
    opening_minor integer NOT NULL,
    closing_minor integer NOT NULL,
    currency text NOT NULL,
    entries integer NOT NULL,
    matched integer NOT NULL,
    xml text NOT NULL,
    imported_by text NOT NULL,
    imported_at text NOT NULL,
    UNIQUE (account_number, statement_id)
);
CREATE TABLE treasury_exceptions (
    id blob PRIMARY KEY NOT NULL,
    statement_id blob NOT NULL REFERENCES treasury_statements (id),
    account_number text NOT NULL,
    kind text NOT NULL,
    end_to_end_id text,
    detail text NOT NULL,
    status text NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution text,
    resolved_by text,
    resolved_at text,
    created_at text NOT NULL
);
CREATE INDEX treasury_exceptions_status ON treasury_exceptions (status, created_at);
"#;

const DOWN: &str = r#"
DROP TABLE treasury_exceptions;
DROP TABLE treasury_statements;
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

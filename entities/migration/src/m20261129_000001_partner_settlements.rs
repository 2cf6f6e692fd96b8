//! What partners paid the stations they owe: one row per transfer a station received from a
//! partner against its contract, named by the bank's reference of the transfer. At most one
//! standing row per contract and reference (a partial unique index), so a transfer is
//! recorded once however often the request is retried; a row recorded by mistake is reversed,
//! not deleted, and the reference may then be recorded again as its next `attempt`. The money
//! itself is the ledger entry `partner-settlement:<contract>:<reference>:<attempt>` (the
//! station's bank account debited, the partner's receivable credited) and, once reversed, its
//! reversal; the row keeps what the books do not: who recorded and who reversed it and why,
//! the value date on the bank statement, and the request's digest, which tells a retry from
//! other content under the same reference.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SCHEMA: &str = r#"
CREATE TABLE partner_settlements (
    id UUID PRIMARY KEY NOT NULL,
    contract_id UUID NOT NULL REFERENCES partner_contracts (id),
    partner_id UUID NOT NULL,
    station_id UUID NOT NULL,
    reference text NOT NULL,
    request_hash text NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    received_on text NOT NULL,
    entry_id UUID NOT NULL,
    recorded_by text NOT NULL,
    created_at TS NOT NULL,
    attempt integer NOT NULL CHECK (attempt >= 1),
    reversed_at TS,
    reversed_by text,
    reversal_reason text,
    reversal_entry_id UUID,
    UNIQUE (contract_id, reference, attempt),
    CHECK ((reversed_at IS NULL) = (reversed_by IS NULL)),
    CHECK ((reversed_at IS NULL) = (reversal_reason IS NULL)),
    CHECK ((reversed_at IS NULL) = (reversal_entry_id IS NULL))
);
CREATE UNIQUE INDEX partner_settlements_standing ON partner_settlements (contract_id, reference) WHERE reversed_at IS NULL;
"#;

const DOWN: &str = "DROP TABLE partner_settlements;";

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

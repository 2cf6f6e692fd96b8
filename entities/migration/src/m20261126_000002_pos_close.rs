//! The retail day's end: the daily close (日结) of each station and station company, and the
//! T+1 reconciliation of each channel's statement with our payments, with its exceptions.
//!
//! Each table is keyed by what makes a run the same run, so that a repeated schedule tick or
//! a retried activity finds the row it wrote before: one close per organisation and day, one
//! reconciliation run per channel and statement day, one exception per channel, day, order
//! number and refund number (empty for the payment itself).
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Written once with `UUID` and `TS` for the column types each backend spells its own way.
const SCHEMA: &str = r#"
CREATE TABLE pos_daily_closes (
    id UUID PRIMARY KEY NOT NULL,
    organisation_id UUID NOT NULL,
    scope text NOT NULL CHECK (scope IN ('station', 'station_company')),
    business_day text NOT NULL,
    currency text NOT NULL,
    sales_count bigint NOT NULL CHECK (sales_count >= 0),
    sales_minor bigint NOT NULL,
    refunds_count bigint NOT NULL CHECK (refunds_count >= 0),
    refunds_minor bigint NOT NULL,
    net_minor bigint NOT NULL,
    fees_minor bigint NOT NULL,
    shifts bigint NOT NULL CHECK (shifts >= 0),
    open_shifts bigint NOT NULL CHECK (open_shifts >= 0),
    unresolved bigint NOT NULL CHECK (unresolved >= 0),
    summary text NOT NULL,
    created_at TS NOT NULL,
    computed_at TS NOT NULL,
    UNIQUE (organisation_id, business_day)
);
CREATE INDEX pos_daily_closes_day ON pos_daily_closes (business_day);
CREATE TABLE pos_recon_runs (
    id UUID PRIMARY KEY NOT NULL,
    channel_id text NOT NULL,
    statement_day text NOT NULL,
    status text NOT NULL CHECK (status IN ('balanced', 'exceptions', 'failed')),
    statement_lines bigint NOT NULL CHECK (statement_lines >= 0),
    matched bigint NOT NULL CHECK (matched >= 0),
    exceptions bigint NOT NULL CHECK (exceptions >= 0),
    resolved_by_query bigint NOT NULL CHECK (resolved_by_query >= 0),
    statement_total_minor bigint NOT NULL,
    statement_fees_minor bigint NOT NULL,
    settled_minor bigint NOT NULL,
    runs bigint NOT NULL CHECK (runs >= 1),
    detail text NOT NULL,
    started_at TS NOT NULL,
    finished_at TS NOT NULL,
    UNIQUE (channel_id, statement_day)
);
CREATE TABLE pos_recon_exceptions (
    id UUID PRIMARY KEY NOT NULL,
    channel_id text NOT NULL,
    statement_day text NOT NULL,
    subject text NOT NULL CHECK (subject IN ('payment', 'refund')),
    kind text NOT NULL CHECK (kind IN ('missing_here', 'missing_there', 'amount_mismatch',
                                       'status_mismatch')),
    station_id UUID,
    out_trade_no text NOT NULL,
    refund_no text NOT NULL,
    payment_no text,
    channel_txn_id text,
    our_amount_minor bigint,
    their_amount_minor bigint,
    currency text NOT NULL,
    detail text NOT NULL,
    status text NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution_note text,
    resolved_by text,
    created_at TS NOT NULL,
    updated_at TS NOT NULL,
    resolved_at TS,
    UNIQUE (channel_id, statement_day, out_trade_no, refund_no),
    CHECK ((status = 'open') = (resolved_at IS NULL)),
    CHECK ((subject = 'refund') = (refund_no <> ''))
);
CREATE INDEX pos_recon_exceptions_queue ON pos_recon_exceptions (status, statement_day);
CREATE INDEX pos_recon_exceptions_station ON pos_recon_exceptions (station_id, status);
"#;

const DOWN: &str = r#"
DROP TABLE pos_recon_exceptions;
DROP TABLE pos_recon_runs;
DROP TABLE pos_daily_closes;
"#;

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

//! The retail POS pipeline: terminals bound to stations, each station's channel terms,
//! cashiers' shifts, payments (one per terminal order number) and refunds.
//!
//! A payment's money lives in the ledger and its progress in its `pos_payment` workflow;
//! these rows are what the till, the shift and the reports look up. Two guarantees are kept
//! by the schema itself: one open shift per terminal (a partial unique index), and one
//! payment per terminal order number (a unique key), so that a retried request never makes
//! a second payment.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Written once with `UUID` and `TS` for the column types each backend spells its own way.
const SCHEMA: &str = r#"
CREATE TABLE pos_terminals (
    id UUID PRIMARY KEY NOT NULL,
    station_id UUID NOT NULL,
    code text NOT NULL,
    name text NOT NULL,
    key_hash text NOT NULL,
    created_at TS NOT NULL,
    disabled_at TS,
    UNIQUE (station_id, code)
);
CREATE TABLE pos_channels (
    id UUID PRIMARY KEY NOT NULL,
    station_id UUID NOT NULL,
    channel_id text NOT NULL,
    party text NOT NULL,
    terms text NOT NULL,
    clearing_account_id UUID NOT NULL,
    created_at TS NOT NULL,
    updated_at TS NOT NULL,
    UNIQUE (station_id, channel_id)
);
CREATE TABLE pos_shifts (
    id UUID PRIMARY KEY NOT NULL,
    station_id UUID NOT NULL,
    terminal_id UUID NOT NULL REFERENCES pos_terminals (id),
    cashier_id UUID NOT NULL,
    cashier_name text NOT NULL,
    status text NOT NULL CHECK (status IN ('open', 'closed')),
    currency text NOT NULL,
    opening_float_minor bigint NOT NULL CHECK (opening_float_minor >= 0),
    opened_at TS NOT NULL,
    closed_at TS,
    declared_cash_minor bigint,
    expected_cash_minor bigint,
    override_by text,
    override_reason text,
    summary text
);
CREATE UNIQUE INDEX pos_shifts_one_open_per_terminal ON pos_shifts (terminal_id) WHERE status = 'open';
CREATE INDEX pos_shifts_station ON pos_shifts (station_id, opened_at);
CREATE TABLE pos_payments (
    id UUID PRIMARY KEY NOT NULL,
    payment_no text NOT NULL UNIQUE,
    station_id UUID NOT NULL,
    terminal_id UUID NOT NULL REFERENCES pos_terminals (id),
    shift_id UUID NOT NULL REFERENCES pos_shifts (id),
    terminal_order_no text NOT NULL,
    request_hash text NOT NULL,
    method text NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    sale text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'reversed',
                                           'needs_attention')),
    channel_id text,
    channel_txn_id text,
    out_trade_no text,
    fee_minor bigint,
    route text,
    reason text NOT NULL,
    refund_reserved_minor bigint NOT NULL DEFAULT 0,
    refunded_minor bigint NOT NULL DEFAULT 0,
    business_day text NOT NULL,
    created_at TS NOT NULL,
    finished_at TS,
    UNIQUE (terminal_id, terminal_order_no),
    CHECK (refund_reserved_minor >= 0 AND refunded_minor >= 0
           AND refund_reserved_minor + refunded_minor <= amount_minor)
);
CREATE INDEX pos_payments_shift ON pos_payments (shift_id);
CREATE INDEX pos_payments_day ON pos_payments (station_id, business_day);
CREATE TABLE pos_refunds (
    id UUID PRIMARY KEY NOT NULL,
    refund_no text NOT NULL UNIQUE,
    payment_id UUID NOT NULL REFERENCES pos_payments (id),
    station_id UUID NOT NULL,
    terminal_refund_no text NOT NULL,
    request_hash text NOT NULL,
    shift_id UUID REFERENCES pos_shifts (id),
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    reason text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending_approval', 'refunding', 'succeeded',
                                           'failed', 'rejected', 'expired',
                                           'needs_attention')),
    needs_approval boolean NOT NULL,
    requested_by text NOT NULL,
    decided_by text,
    decision_note text,
    channel_refund_id text,
    status_reason text NOT NULL,
    business_day text NOT NULL,
    created_at TS NOT NULL,
    expires_at TS,
    finished_at TS,
    UNIQUE (payment_id, terminal_refund_no)
);
CREATE INDEX pos_refunds_station ON pos_refunds (station_id, status);
CREATE INDEX pos_refunds_shift ON pos_refunds (shift_id);
"#;

const DOWN: &str = r#"
DROP TABLE pos_refunds;
DROP TABLE pos_payments;
DROP TABLE pos_shifts;
DROP TABLE pos_channels;
DROP TABLE pos_terminals;
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

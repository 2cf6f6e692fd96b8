//! Partner-app orders: the contracts that sign a partner (a freight or fleet platform) onto a
//! station, and the orders a partner pushes to one of the station's terminals, already paid
//! by its driver in the partner's app.
//!
//! An order is a till payment (`pos_payments`, method `partner_app`) in the terminal's open
//! shift, so shift closes, daily closes and refunds count it like any sale; this table adds
//! what only a partner order has: the partner's own order number (one order per partner and
//! number, decided by a unique key, so a retried push never makes a second sale), the
//! driver and vehicle, the commission the contract charged, and whether the till printed
//! the ticket. One contract per partner and station; commission rates are stored as parts
//! per million and money as minor units, like every other table.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Written once with `UUID` and `TS` for the column types each backend spells its own way.
const SCHEMA: &str = r#"
CREATE TABLE partner_contracts (
    id UUID PRIMARY KEY NOT NULL,
    partner_id UUID NOT NULL,
    station_id UUID NOT NULL,
    status text NOT NULL CHECK (status IN ('active', 'disabled')),
    commission_ppm bigint NOT NULL CHECK (commission_ppm >= 0 AND commission_ppm < 1000000),
    settlement_days integer NOT NULL CHECK (settlement_days >= 0 AND settlement_days <= 90),
    single_limit_minor bigint NOT NULL CHECK (single_limit_minor > 0),
    currency text NOT NULL,
    receivable_account_id UUID NOT NULL,
    commission_account_id UUID NOT NULL,
    signed_by text NOT NULL,
    status_changed_by text NOT NULL,
    status_reason text NOT NULL,
    created_at TS NOT NULL,
    updated_at TS NOT NULL,
    UNIQUE (partner_id, station_id)
);
CREATE INDEX partner_contracts_station ON partner_contracts (station_id);
CREATE TABLE partner_orders (
    id UUID PRIMARY KEY NOT NULL,
    partner_id UUID NOT NULL,
    partner_order_no text NOT NULL,
    request_hash text NOT NULL,
    contract_id UUID NOT NULL REFERENCES partner_contracts (id),
    station_id UUID NOT NULL,
    terminal_id UUID NOT NULL REFERENCES pos_terminals (id),
    payment_id UUID NOT NULL UNIQUE REFERENCES pos_payments (id),
    driver_ref text NOT NULL,
    vehicle_plate text,
    commission_minor bigint NOT NULL CHECK (commission_minor >= 0),
    printed_at TS,
    printed_by text,
    created_at TS NOT NULL,
    UNIQUE (partner_id, partner_order_no),
    CHECK ((printed_at IS NULL) = (printed_by IS NULL))
);
CREATE INDEX partner_orders_to_print ON partner_orders (terminal_id, created_at) WHERE printed_at IS NULL;
"#;

const DOWN: &str = r#"
DROP TABLE partner_orders;
DROP TABLE partner_contracts;
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

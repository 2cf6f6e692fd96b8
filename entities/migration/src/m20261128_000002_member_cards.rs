//! The station company's stored-value member cards (储值卡) and their top-ups at the till.
//!
//! A card's money lives in the ledger: a balance account that cannot go negative and a
//! headroom account that cannot either, so the card's cap (1,000 CNY anonymous, 5,000 CNY
//! named) holds under any concurrency. These rows are what the till looks a card up by, and
//! the top-ups the shift counts. One card number per issuer and one top-up per terminal
//! order number are kept by the schema. A payment by card names its card.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const SCHEMA: &str = r#"
CREATE TABLE pos_member_cards (
    id UUID PRIMARY KEY NOT NULL,
    issuer_org_id UUID NOT NULL,
    card_no text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('anonymous', 'named')),
    holder_name text,
    holder_phone text,
    status text NOT NULL CHECK (status IN ('active', 'blocked')),
    status_reason text,
    cap_minor bigint NOT NULL CHECK (cap_minor > 0),
    currency text NOT NULL,
    balance_account_id UUID NOT NULL,
    headroom_account_id UUID NOT NULL,
    issued_station_id UUID NOT NULL,
    issued_terminal_id UUID NOT NULL,
    issued_by text NOT NULL,
    request_hash text NOT NULL,
    created_at TS NOT NULL,
    updated_at TS NOT NULL,
    UNIQUE (issuer_org_id, card_no)
);
CREATE TABLE pos_card_top_ups (
    id UUID PRIMARY KEY NOT NULL,
    top_up_no text NOT NULL UNIQUE,
    card_id UUID NOT NULL REFERENCES pos_member_cards (id),
    station_id UUID NOT NULL,
    terminal_id UUID NOT NULL REFERENCES pos_terminals (id),
    shift_id UUID NOT NULL REFERENCES pos_shifts (id),
    terminal_order_no text NOT NULL,
    request_hash text NOT NULL,
    method text NOT NULL,
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    reason text NOT NULL,
    business_day text NOT NULL,
    created_by text NOT NULL,
    created_at TS NOT NULL,
    finished_at TS,
    UNIQUE (terminal_id, terminal_order_no)
);
CREATE INDEX pos_card_top_ups_shift ON pos_card_top_ups (shift_id);
CREATE INDEX pos_card_top_ups_card ON pos_card_top_ups (card_id, created_at);
ALTER TABLE pos_payments ADD COLUMN card_id UUID;
"#;

const DOWN: &str = r#"
ALTER TABLE pos_payments DROP COLUMN card_id;
DROP TABLE pos_card_top_ups;
DROP TABLE pos_member_cards;
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

//! sea-orm entities of the platform, one module per table.
//!
//! # Layout
//! - [`ledger_accounts`]: accounts of the double-entry ledger with their four running balances.
//! - [`ledger_entries`]: immutable journal entries, unique by idempotency key.
//! - [`ledger_postings`]: the legs of each entry, with the account's balances after the leg.
//! - [`ledger_holds`]: the lifecycle of two-phase (pending) entries.
//! - [`wf_instances`], [`wf_history`], [`wf_outbox`], [`wf_inbox`]: the workflow engine's
//!   instances, audit trail, messages (timers are messages not deliverable before their time)
//!   and consumed message ids.
//! - [`organisations`], [`users`], [`user_sessions`]: who uses the platform, in a tree of
//!   organisations, and their login sessions (token digests only).
//! - [`api_keys`], [`api_nonces`]: partner keys and the nonces of their signed requests.
//! - [`api_idempotency`]: claimed `Idempotency-Key`s and their stored responses.
//! - [`treasury_instructions`], [`treasury_approvals`], [`treasury_events`]: instructions to
//!   the custodial bank, the approvals of their content and their append-only audit trail.
//! - [`treasury_instruction_lines`]: the payments of a batch instruction.
//! - [`treasury_external_accounts`]: legal entities' own bank accounts, creditors of payouts.
//! - [`treasury_sub_accounts`], [`treasury_messages`]: sub-accounts at the custodial bank and
//!   the messages sent to it; [`treasury_message_transactions`]: the transactions of each
//!   message (one per instruction, or one per tranche) and their status at the bank.
//! - [`treasury_statements`], [`treasury_exceptions`]: imported camt.053 statements and the
//!   exceptions their reconciliation raised.
//! - [`treasury_policies`]: versions of the approval policy.
//! - [`pos_terminals`], [`pos_channels`], [`pos_shifts`], [`pos_payments`], [`pos_refunds`]:
//!   the retail tills, each station's channel terms, shifts, payments and refunds.
//! - [`pos_daily_closes`]: the daily close (日结) of each station and station company.
//! - [`pos_recon_runs`], [`pos_recon_exceptions`]: the T+1 reconciliation of each channel's
//!   statement with our payments, and the differences left for people to resolve.
//! - [`pos_channel_attempts`]: what each channel did with each attempt (routing's health).
//! - [`pos_channel_day_totals`]: what each station put through each channel each day, kept by
//!   a trigger on `pos_payments` (routing's daily limits).
//! - [`pos_member_cards`], [`pos_card_top_ups`]: stored-value member cards and their top-ups.
//! - [`partner_contracts`], [`partner_orders`], [`partner_settlements`]: partners signed onto
//!   stations with their terms, the orders they push to a station's terminals (each one a
//!   till payment), and the transfers they paid the stations against what they owe.
//! - [`webhook_subscriptions`], [`webhook_deliveries`]: domain events posted to subscribers.
//!
//! Money is stored as `i64` minor units (fen for CNY) in every table: sea-orm reads a
//! `Decimal` column through `f64` on SQLite, so no table here has one. Timestamps are
//! `timestamptz` on PostgreSQL and RFC 3339 text on SQLite. The schema itself lives in
//! `entities/migration`.

pub mod api_idempotency;
pub mod api_keys;
pub mod api_nonces;
pub mod ledger_accounts;
pub mod ledger_entries;
pub mod ledger_holds;
pub mod ledger_postings;
pub mod organisations;
pub mod partner_contracts;
pub mod partner_orders;
pub mod partner_settlements;
pub mod pos_card_top_ups;
pub mod pos_channel_attempts;
pub mod pos_channel_day_totals;
pub mod pos_channels;
pub mod pos_daily_closes;
pub mod pos_member_cards;
pub mod pos_payments;
pub mod pos_recon_exceptions;
pub mod pos_recon_runs;
pub mod pos_refunds;
pub mod pos_shifts;
pub mod pos_terminals;
pub mod treasury_approvals;
pub mod treasury_events;
pub mod treasury_exceptions;
pub mod treasury_external_accounts;
pub mod treasury_instruction_lines;
pub mod treasury_instructions;
pub mod treasury_message_transactions;
pub mod treasury_messages;
pub mod treasury_policies;
pub mod treasury_statements;
pub mod treasury_sub_accounts;
pub mod user_sessions;
pub mod users;
pub mod webhook_deliveries;
pub mod webhook_subscriptions;
pub mod wf_canary_effects;
pub mod wf_history;
pub mod wf_inbox;
pub mod wf_instances;
pub mod wf_outbox;
pub mod wf_schedules;

pub mod db;

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
//!
//! Money is stored as `i64` minor units (fen for CNY) in every table: sea-orm reads a
//! `Decimal` column through `f64` on SQLite, so no table here has one. Timestamps are
//! `timestamptz` on PostgreSQL and RFC 3339 text on SQLite. The schema itself lives in
//! `entities/migration`.

pub mod ledger_accounts;
pub mod ledger_entries;
pub mod ledger_holds;
pub mod ledger_postings;
pub mod wf_canary_effects;
pub mod wf_history;
pub mod wf_inbox;
pub mod wf_instances;
pub mod wf_outbox;
pub mod wf_schedules;

pub mod db;

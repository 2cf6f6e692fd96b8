//! The API end to end, over HTTP, on real PostgreSQL (and SQLite where cheap): one test
//! binary, so it compiles once.

mod auth;
mod bad_input;
mod common;
mod idempotency;
mod matrix;
mod member_cards;
mod partner_orders;
mod payments;
mod reads;
mod signatures;
mod spec;
mod treasury;
mod webhooks;

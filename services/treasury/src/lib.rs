//! Treasury: the platform's instructions to the custodial bank (托管银行).
//!
//! The platform never holds its customers' money. It computes who gets what; the custodial
//! bank moves the funds between the sub-accounts under the platform's master account and out
//! to each legal entity's own account, on instructions that treasury staff approve. This
//! crate holds the domain of those instructions and the client of the bank's interface
//! ([`bank`]); no HTTP routes, no AMQP.
//!
//! # Layout
//! - [`domain`]: newtypes for account numbers, bank codes, end-to-end and message ids, and
//!   the kinds of instruction.
//! - [`calendar`]: working days, public holidays and make-up working days (调休), from
//!   configuration.
//! - [`rails`]: intra-bank, large-value and 24x7 interbank rails, their hours, cap and the
//!   banks' maintenance windows; what is open now and the next window.
//! - [`policies`]: the approval policy as versioned data.
//! - [`planner`]: the rail planner (rail, tranches or waiting, expected arrival).
//! - [`approval`]: approval policies as rule blocks; maker-checker decisions, pure.
//! - [`iso20022`]: pain.001 out, pain.002, camt.053 and camt.054 in, as typed documents checked
//!   against the official schemas.
//! - [`signing`]: RSA-SHA256 detached signatures with OpenSSL; demo key generation.
//! - [`bank`]: the platform's client of the bank's host-to-host HTTP interface (signed
//!   pain.001 out, verified pain.002 and camt.053 back, callbacks verified), with failures
//!   classified as refused or unknown.
//! - [`sim`]: the custodial bank simulator's core (a test peer): signature and duplicate
//!   checks, balances and bookings, rails, returns, signed pain.002, camt.053 and camt.054;
//!   transport is the caller's.
//! - [`accounts`]: legal entities' external bank accounts (payout creditors), in storage.
//! - [`freeze`]: freezing and releasing funds on a sub-account: the proprietary signed
//!   request to the bank (ISO 20022 has none) and its answer.
//! - [`execution`]: approved instructions carried out at the bank: planning, the one stored
//!   and signed message per instruction, submission and status queries, callbacks applied.
//! - [`store`]: instructions in storage (PostgreSQL or SQLite): creation, amendment,
//!   approval with the ledger hold, bank rejection, settlement and return, audit trail.
//! - [`submission`]: approved instructions to a pain.001 batch; a verified pain.002 back to
//!   settlement or rejection of each instruction.
//! - [`statements`]: camt.053 statements imported and reconciled; open exceptions until
//!   resolved.
//! - [`reconcile`]: matching a camt.053 statement against expected movements; mismatches
//!   become exceptions.

pub mod accounts;
pub mod approval;
pub mod bank;
pub mod calendar;
pub mod domain;
pub mod execution;
pub mod freeze;
pub mod iso20022;
pub mod planner;
pub mod policies;
pub mod rails;
pub mod reconcile;
pub mod signing;
pub mod sim;
pub mod statements;
pub mod store;
pub mod submission;

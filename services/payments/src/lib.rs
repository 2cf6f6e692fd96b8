//! Retail POS payments: how a till takes money through many outside channels without ever
//! charging a customer twice.
//!
//! A station signs at least two channels per method. For each payment, [`routing`] filters
//! the channels that may take it (method, station, maintenance, circuit breaker, limits, a
//! payer that just failed there) and ranks the rest (priority, fee, recent success rate),
//! keeping every reason. The [`flow`] state machine then submits to the first candidate and
//! fails over *only* when the attempt certainly did not charge; an unknown outcome is queried
//! on a timer and, if the till gives up, reversed and the reversal confirmed.
//!
//! The channel adapters in [`channels`] are HTTP clients of the outside parties and speak
//! their real formats and signatures (WeChat Pay API v3, Alipay RSA2, a bank acquirer), all
//! on openssl. This crate runs no server and speaks no AMQP; the simulators of those parties live in the `sim`
//! crate and are used by the tests as real HTTP peers.
//!
//! # Layout
//! - [`model`]: methods, channel ids, fee rates and modes, channel terms, maintenance windows.
//! - [`routing`]: the pure routing decision, the circuit breaker and success rate per channel.
//! - [`flow`]: the payment state machine (created → routed → submitted → succeeded | failed |
//!   unknown → querying → succeeded | failed | reversed), pure and deterministic.
//! - [`channels`]: the [`channels::Channel`] trait and one adapter per party.
//! - [`crypto`]: RSA-SHA256 signatures and AES-256-GCM, the primitives every party uses.
//! - [`postings`]: the ledger entries a finished payment makes.
//! - [`statements`]: the parties' T+1 statement files and the pure matching against our books.
//! - [`health`]: what each channel did with each attempt, in storage, read back into the
//!   breakers and success rates routing uses.
//! - [`stations`]: terminals with their keys, the channels each station signed with its
//!   terms, and the station's ledger accounts.
//! - [`shifts`]: cashiers' shifts, one open per terminal, closed with totals that reconcile.
//! - [`cards`]: stored-value member cards, their cap and balance held by the ledger, top-ups.
//! - [`stored_value`]: paying from money in our own ledger (member cards; the fleet-card seam).
//! - [`sales`]: till payments and refunds in storage, the sale lines, the ledger bookings.
//! - [`partners`]: partner-app orders: the contracts that sign a partner onto a station, the
//!   orders it pushes to a terminal (till payments owed by the partner), their tickets and
//!   the ledger entries of orders and refunds.
//! - [`daily`]: the daily close (日结) of a station and of its station company.
//! - [`reconcile`]: the T+1 reconciliation of a channel's statement with our payments and
//!   refunds, the settlement it posts and the exception queue it leaves.

pub mod cards;
pub mod channels;
pub mod crypto;
pub mod daily;
pub mod flow;
pub mod health;
pub mod model;
pub mod partners;
pub mod postings;
pub mod reconcile;
pub mod routing;
pub mod sales;
pub mod shifts;
pub mod statements;
pub mod stations;
pub mod stored_value;

//! Simulators of the outside parties — WeChat Pay API v3, the Alipay open API, a bank card
//! acquirer and the custodial bank (托管银行) — as real HTTP servers. Tests start them
//! in-process on ephemeral ports; the binary's `sim payments` and `sim bank` subcommands
//! serve them for a demo.
//!
//! They check what the real parties check (every request's signature, the merchant's
//! identity) and sign what the real parties sign, and they can be told to behave like the
//! real ones on bad days: latency, declines, a timeout after the charge was actually taken,
//! a customer still confirming, asynchronous and duplicated notifications, maintenance
//! (503), and a T+1 statement file in each party's own format.
//!
//! A simulator is a test peer of the product, never a shortcut inside it: no product crate
//! depends on this one (only the binary, for the embedded demo, and the tests).
//!
//! # Layout
//! - [`core`]: what every party shares: the behaviour switches, the book of charges and
//!   refunds, the call counters, the HTTP server handle.
//! - [`wechat`]: WeChat Pay API v3 (signed JSON, encrypted notifications, trade bill).
//! - [`alipay`]: Alipay gateway (RSA2 form requests, signed answers and notifications,
//!   business statement CSV).
//! - [`acquirer`]: the acquirer's signed JSON protocol and its pipe-delimited statement.
//! - [`bank`]: the custodial bank's host-to-host interface (signed ISO 20022 messages,
//!   callbacks, rails on a settable clock) around the core in `treasury::sim`.
//! - [`keys`]: key generation for tests and demos.
//! - [`retail`]: a station's six simulated channels (two per method) with the platform's
//!   adapters pointed at them.

pub mod acquirer;
pub mod alipay;
pub mod bank;
pub mod core;
pub mod keys;
pub mod retail;
pub mod wechat;

pub use crate::core::{Behaviour, ChargeStatus, SimHandle, SimRecord};

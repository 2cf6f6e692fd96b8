//! The durable workflow engine of Forecourt.
//!
//! Depot purchases, fleet funding, franchise settlement runs and bank instructions are state
//! machines that wait on banks, channels and people. A workflow is a pure transition
//! `(state, event) -> (new state, commands)`; the engine makes it durable.
//!
//! # Guarantees
//! - Each transition commits in one transaction: the new state (only on the revision it read;
//!   a concurrent transition makes it retry), its history row, the outbox rows of its commands,
//!   and the inbox row of the message it consumed. A repeated message is dropped.
//! - Messages leave the outbox only after the transaction that wrote them commits, and are
//!   delivered at least once; with the inbox, each is processed once.
//! - Timers and retry backoff are outbox rows that are not deliverable before their time: they
//!   live in the database and survive any restart.
//! - Activities run outside transactions under a lease, with a stable idempotency key
//!   (`instance:step`) that outside parties deduplicate on. A worker that dies mid-activity
//!   loses its lease and another worker runs the attempt again.
//!
//! # Layout
//! - [`definition`]: the `Workflow` trait, commands, events, retry policies.
//! - [`engine`]: starting, signalling, processing messages, running activities, queries.
//! - [`runtime`]: in-process workers for the embedded mode.
//! - [`pos_payment`], [`refund_approval`], [`bank_instruction`]: the till payment, its
//!   refunds (with the station manager's approval across shifts) and the instruction to the
//!   custodial bank.
//! - [`daily_close`], [`reconciliation`]: the retail day's end, started by cron schedules: the
//!   daily close (日结) per station and the T+1 reconciliation per channel.
//! - `writes`: the writes of one transaction, gathered and written set-wise, so a batch of
//!   messages commits like one.

pub mod amqp;
pub mod bank_instruction;
pub mod canary;
pub mod daily_close;
pub mod definition;
pub mod engine;
pub mod pos_payment;
pub mod reconciliation;
pub mod refund_approval;
pub mod runtime;
pub mod schedule;
pub mod webhooks;
mod writes;

pub use definition::{ActivityError, Command, Event, RetryPolicy, Step, Workflow, WorkflowEvent};
pub use engine::{
    ActivityContext, Delivered, Engine, EngineError, HistoryRow, Instance, Registry, Status,
};
pub use runtime::Workers;

//! The channel adapters: one HTTP client per outside party, each speaking that party's real
//! message shapes and signing, all behind the [`Channel`] trait.
//!
//! The trait's results carry the one distinction failover depends on: an attempt that
//! *certainly did not charge* ([`ChargeResult::Declined`], [`ChannelError::NotSent`]) versus
//! one whose outcome is unknown ([`ChargeResult::Pending`], [`ChannelError::Unknown`]), which
//! must be queried and never retried elsewhere.

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, NaiveDate, Utc};
use ledger::money::Money;
use serde::{Deserialize, Serialize};

use crate::model::Method;
use crate::statements::Statement;

/// A bank card acquirer's signed JSON protocol.
pub mod acquirer;
/// Alipay open API (RSA2).
pub mod alipay;
/// WeChat Pay API v3.
pub mod wechat;

/// A boxed future, so that the trait can be used as `dyn Channel`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One charge to submit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// Our order number at the channel (unique per attempt; the channel is idempotent on it).
    pub out_trade_no: String,
    pub method: Method,
    pub amount: Money,
    pub description: String,
    /// The customer's payment code or card token when the terminal scans or reads it.
    pub payer_code: Option<String>,
}

/// What a channel said about a charge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ChargeResult {
    /// The money is taken.
    Succeeded {
        channel_txn_id: String,
        paid_at: Option<DateTime<Utc>>,
    },
    /// The channel refused; nothing was charged. Safe to try another channel.
    Declined { code: String, message: String },
    /// Accepted but not final (the customer is entering a password, or the channel is busy):
    /// must be queried, never retried elsewhere.
    Pending { reason: String },
    /// A dynamic code for the customer to scan; the outcome comes by notification or query.
    CodeIssued { code_url: String },
}

/// What a query found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum QueryResult {
    Succeeded {
        channel_txn_id: String,
        amount: Money,
    },
    /// The channel has the order and it is not (or not yet) paid.
    Pending,
    /// The channel has no charge for the order, or closed it: nothing was taken.
    NotCharged { reason: String },
    /// The order was paid and then reversed or refunded in full.
    Reversed,
}

/// What a reversal (WeChat `reverse`, Alipay `cancel`, the acquirer's `reversal`) did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReverseResult {
    /// Closed before payment or paid and given back.
    Reversed,
    /// The channel asks for the reversal to be sent again.
    RetryLater { reason: String },
}

/// A refund to ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub out_trade_no: String,
    /// Our refund number; the channel is idempotent on it.
    pub out_refund_no: String,
    pub refund: Money,
    pub total: Money,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RefundResult {
    Accepted { channel_refund_id: String },
    Refused { code: String, message: String },
}

/// A verified asynchronous notification of a payment's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentNotification {
    /// The party's own id of the notification, for de-duplication with the order number.
    pub notification_id: String,
    pub out_trade_no: String,
    pub channel_txn_id: String,
    pub amount: Money,
    pub succeeded: bool,
}

/// The HTTP request a notification arrived in.
#[derive(Clone, Debug, Default)]
pub struct InboundRequest {
    /// Lower-case header names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl InboundRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A failure talking to a channel, classified by what it means for the money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelError {
    /// The request certainly did not reach the party or was refused before processing
    /// (connection refused, maintenance answered with a signed refusal). Safe to fail over.
    #[error("not sent: {reason}")]
    NotSent { reason: String },
    /// The request may have been processed: a timeout, a broken or unverifiable answer.
    #[error("outcome unknown: {reason}")]
    Unknown { reason: String },
    /// Our own configuration or input is wrong (bad key, unsupported method); nothing sent.
    #[error("rejected locally: {reason}")]
    Local { reason: String },
}

/// A notification that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the notification's signature does not verify")]
    BadSignature,
    #[error("the notification is stale or from the future")]
    Stale,
    #[error("the notification is malformed: {0}")]
    Malformed(String),
}

/// One outside payment party, as the payment flow uses it.
pub trait Channel: Send + Sync {
    /// Submits a charge (the terminal scanned a code or read a card) or issues a dynamic code.
    fn charge<'a>(
        &'a self,
        request: &'a ChargeRequest,
    ) -> BoxFuture<'a, Result<ChargeResult, ChannelError>>;
    /// Asks for the order's state.
    fn query<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<QueryResult, ChannelError>>;
    /// Reverses an order whose outcome is unknown or that the terminal abandoned.
    fn reverse<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<ReverseResult, ChannelError>>;
    /// Refunds all or part of a paid order.
    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<RefundResult, ChannelError>>;
    /// Verifies and reads an asynchronous payment notification.
    fn parse_notification(
        &self,
        request: &InboundRequest,
    ) -> Result<PaymentNotification, NotificationError>;
    /// Downloads and reads the party's statement of a day (T+1; the day is the party's own,
    /// China Standard Time). A party without statement files answers [`ChannelError::Local`].
    fn statement<'a>(&'a self, day: NaiveDate) -> BoxFuture<'a, Result<Statement, ChannelError>> {
        Box::pin(async move {
            Err(ChannelError::Local {
                reason: format!("no statement download for {day}"),
            })
        })
    }
}

/// A statement that was downloaded but does not read: the file may be incomplete, so the
/// download is worth trying again.
pub(crate) fn unreadable_statement(error: crate::statements::StatementError) -> ChannelError {
    ChannelError::Unknown {
        reason: format!("statement unreadable: {error}"),
    }
}

/// Maps a transport failure to what it means for the money: a connection that never opened
/// sent nothing; anything later (a timeout, a reset) may have been processed.
pub(crate) fn transport_error(error: reqwest::Error) -> ChannelError {
    if error.is_connect() {
        ChannelError::NotSent {
            reason: format!("connect: {error}"),
        }
    } else if error.is_builder() {
        ChannelError::Local {
            reason: error.to_string(),
        }
    } else {
        ChannelError::Unknown {
            reason: format!("transport: {error}"),
        }
    }
}

/// An HTTP client with the adapter's timeouts set explicitly.
pub(crate) fn http_client(connect_timeout_ms: u64, timeout_ms: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_millis(connect_timeout_ms))
        .timeout(std::time::Duration::from_millis(timeout_ms))
        .pool_max_idle_per_host(16)
        .build()
        .expect("a client without TLS options always builds")
}

/// How long an adapter waits, passed explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub connect_ms: u64,
    pub request_ms: u64,
}

//! A bank card acquirer (收单机构) over a signed JSON protocol. Real acquirers each publish
//! their own; this is the one the platform and its simulator share, modelled on ISO 8583
//! response codes:
//!
//! - `POST /v1/sale`, `/v1/inquiry`, `/v1/reversal`, `/v1/refund`, JSON bodies, amounts in
//!   fen (`amount_fen`).
//! - Requests carry `X-Acq-Merchant`, `X-Acq-Timestamp` (Unix seconds), `X-Acq-Nonce` and
//!   `X-Acq-Signature`: base64 RSA-SHA256 by the merchant's key over
//!   `METHOD\nPATH\ntimestamp\nnonce\nbody\n`.
//! - Answers carry `X-Acq-Timestamp`, `X-Acq-Nonce`, `X-Acq-Signature` by the acquirer's key
//!   over `STATUS\ntimestamp\nnonce\nbody\n`; notifications the same over
//!   `NOTIFY\ntimestamp\nnonce\nbody\n`.
//! - `response_code` `00` approves; `05`, `14`, `51`, `54`, `55`, `57`, `61`, `65` decline
//!   (nothing charged); `91`, `96` and anything else leave the outcome unknown.

use chrono::Utc;
use ledger::money::{Currency, Money};
use openssl::pkey::{PKey, Private, Public};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    BoxFuture, Channel, ChannelError, ChargeRequest, ChargeResult, InboundRequest,
    NotificationError, PaymentNotification, QueryResult, RefundRequest, RefundResult,
    ReverseResult, Timeouts, http_client, transport_error,
};
use crate::crypto::{nonce, rsa_sha256_sign, rsa_sha256_verify};
use crate::model::Method;

/// How far an answer's or notification's timestamp may be from our clock.
pub const MAX_CLOCK_SKEW_S: i64 = 300;
/// Response codes after which the card was certainly not charged.
pub const DECLINE_CODES: &[&str] = &["05", "14", "51", "54", "55", "57", "61", "65"];

/// The text a signature covers: the lines, each followed by a newline.
pub fn signing_text(lines: &[&str]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[derive(Clone)]
pub struct AcquirerConfig {
    pub base_url: String,
    pub merchant_id: String,
    pub terminal_id: String,
    pub merchant_key: PKey<Private>,
    pub acquirer_public_key: PKey<Public>,
    pub timeouts: Timeouts,
}

/// The acquirer adapter.
pub struct Acquirer {
    config: AcquirerConfig,
    http: reqwest::Client,
}

fn unknown(reason: impl Into<String>) -> ChannelError {
    ChannelError::Unknown {
        reason: reason.into(),
    }
}

fn local(reason: impl ToString) -> ChannelError {
    ChannelError::Local {
        reason: reason.to_string(),
    }
}

#[derive(Deserialize)]
struct Reply {
    #[serde(default)]
    response_code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    rrn: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    amount_fen: Option<i64>,
    #[serde(default)]
    refund_rrn: String,
}

impl Acquirer {
    pub fn new(config: AcquirerConfig) -> Self {
        let http = http_client(config.timeouts.connect_ms, config.timeouts.request_ms);
        Acquirer { config, http }
    }

    /// Downloads the pipe-delimited T+1 statement of a day; its trailer is checked when read.
    pub async fn statement_file(&self, day: chrono::NaiveDate) -> Result<String, ChannelError> {
        let response = self
            .http
            .get(format!(
                "{}/v1/statement?date={}",
                self.config.base_url,
                day.format("%Y-%m-%d")
            ))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let text = response.text().await.map_err(transport_error)?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(unknown(format!("statement {status}: {text}")))
        }
    }

    fn verify(
        &self,
        first_line: &str,
        header: impl Fn(&str) -> Option<String>,
        body: &str,
    ) -> Result<(), NotificationError> {
        let get = |n: &str| header(n).ok_or(NotificationError::BadSignature);
        let timestamp = get("x-acq-timestamp")?;
        let nonce_str = get("x-acq-nonce")?;
        let signature = get("x-acq-signature")?;
        let at: i64 = timestamp
            .parse()
            .map_err(|_| NotificationError::Malformed("timestamp".into()))?;
        if (Utc::now().timestamp() - at).abs() > MAX_CLOCK_SKEW_S {
            return Err(NotificationError::Stale);
        }
        let text = signing_text(&[first_line, &timestamp, &nonce_str, body]);
        rsa_sha256_verify(
            &self.config.acquirer_public_key,
            text.as_bytes(),
            &signature,
        )
        .map_err(|_| NotificationError::BadSignature)
    }

    async fn send(&self, path: &str, body: Value) -> Result<Reply, ChannelError> {
        let body = body.to_string();
        let timestamp = Utc::now().timestamp().to_string();
        let nonce_str = nonce(24);
        let text = signing_text(&["POST", path, &timestamp, &nonce_str, &body]);
        let signature = rsa_sha256_sign(&self.config.merchant_key, text.as_bytes())
            .map_err(|e| local(format!("signing: {e}")))?;
        let response = self
            .http
            .post(format!("{}{path}", self.config.base_url))
            .header("Content-Type", "application/json")
            .header("X-Acq-Merchant", &self.config.merchant_id)
            .header("X-Acq-Timestamp", timestamp)
            .header("X-Acq-Nonce", nonce_str)
            .header("X-Acq-Signature", signature)
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err(ChannelError::NotSent {
                reason: "the acquirer is unavailable (maintenance)".into(),
            });
        }
        let headers = response.headers().clone();
        let text = response.text().await.map_err(transport_error)?;
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.verify(status.as_str(), header, &text)
            .map_err(|e| unknown(format!("answer not trusted: {e}")))?;
        if !status.is_success() {
            return Err(unknown(format!("acquirer {status}: {text}")));
        }
        serde_json::from_str(&text).map_err(|e| unknown(format!("unreadable: {e}")))
    }
}

impl Channel for Acquirer {
    fn charge<'a>(
        &'a self,
        request: &'a ChargeRequest,
    ) -> BoxFuture<'a, Result<ChargeResult, ChannelError>> {
        Box::pin(async move {
            if request.method != Method::BankCard {
                return Err(local(format!(
                    "the acquirer does not take {:?}",
                    request.method
                )));
            }
            let card = request
                .payer_code
                .as_deref()
                .ok_or_else(|| local("a card sale needs the card token"))?;
            let reply = self
                .send(
                    "/v1/sale",
                    json!({
                        "merchant_id": self.config.merchant_id,
                        "terminal_id": self.config.terminal_id,
                        "order_no": request.out_trade_no,
                        "amount_fen": request.amount.minor_units().map_err(local)?,
                        "currency": request.amount.currency().code(),
                        "card_token": card,
                    }),
                )
                .await?;
            match reply.response_code.as_str() {
                "00" => Ok(ChargeResult::Succeeded {
                    channel_txn_id: reply.rrn,
                    paid_at: None,
                }),
                code if DECLINE_CODES.contains(&code) => Ok(ChargeResult::Declined {
                    code: code.to_owned(),
                    message: reply.message,
                }),
                code => Err(unknown(format!("response code {code}: {}", reply.message))),
            }
        })
    }

    fn query<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<QueryResult, ChannelError>> {
        Box::pin(async move {
            let reply = self
                .send(
                    "/v1/inquiry",
                    json!({ "merchant_id": self.config.merchant_id, "order_no": out_trade_no }),
                )
                .await?;
            Ok(match reply.status.as_str() {
                "approved" => QueryResult::Succeeded {
                    channel_txn_id: reply.rrn,
                    amount: Money::from_minor(
                        reply.amount_fen.ok_or_else(|| unknown("no amount"))?,
                        Currency::CNY,
                    ),
                },
                "reversed" => QueryResult::Reversed,
                "declined" | "not_found" => QueryResult::NotCharged {
                    reason: reply.status,
                },
                "in_progress" => QueryResult::Pending,
                other => return Err(unknown(format!("inquiry status {other:?}"))),
            })
        })
    }

    fn reverse<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<ReverseResult, ChannelError>> {
        Box::pin(async move {
            let reply = self
                .send(
                    "/v1/reversal",
                    json!({ "merchant_id": self.config.merchant_id, "order_no": out_trade_no }),
                )
                .await?;
            match reply.response_code.as_str() {
                // 25: nothing to reverse, the original was never taken.
                "00" | "25" => Ok(ReverseResult::Reversed),
                code => Ok(ReverseResult::RetryLater {
                    reason: format!("response code {code}"),
                }),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<RefundResult, ChannelError>> {
        Box::pin(async move {
            let reply = self
                .send(
                    "/v1/refund",
                    json!({
                        "merchant_id": self.config.merchant_id,
                        "order_no": request.out_trade_no,
                        "refund_no": request.out_refund_no,
                        "amount_fen": request.refund.minor_units().map_err(local)?,
                    }),
                )
                .await?;
            match reply.response_code.as_str() {
                "00" => Ok(RefundResult::Accepted {
                    channel_refund_id: reply.refund_rrn,
                }),
                code => Ok(RefundResult::Refused {
                    code: code.to_owned(),
                    message: reply.message,
                }),
            }
        })
    }

    fn parse_notification(
        &self,
        request: &InboundRequest,
    ) -> Result<PaymentNotification, NotificationError> {
        let body = std::str::from_utf8(&request.body)
            .map_err(|_| NotificationError::Malformed("not UTF-8".into()))?;
        self.verify("NOTIFY", |n| request.header(n).map(str::to_owned), body)?;
        let value: Value =
            serde_json::from_str(body).map_err(|e| NotificationError::Malformed(e.to_string()))?;
        let text = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| NotificationError::Malformed(format!("no {name}")))
        };
        Ok(PaymentNotification {
            notification_id: text("notification_id")?,
            out_trade_no: text("order_no")?,
            channel_txn_id: text("rrn")?,
            amount: Money::from_minor(
                value["amount_fen"]
                    .as_i64()
                    .ok_or_else(|| NotificationError::Malformed("no amount_fen".into()))?,
                Currency::CNY,
            ),
            succeeded: text("status")? == "approved",
        })
    }

    fn statement<'a>(
        &'a self,
        day: chrono::NaiveDate,
    ) -> BoxFuture<'a, Result<crate::statements::Statement, ChannelError>> {
        Box::pin(async move {
            let text = self.statement_file(day).await?;
            crate::statements::read_acquirer_statement(&text).map_err(super::unreadable_statement)
        })
    }
}

//! WeChat Pay API v3 (微信支付 APIv3): JSON over HTTP, every request signed
//! `WECHATPAY2-SHA256-RSA2048` with the merchant's key, every answer and notification signed
//! by the platform (`Wechatpay-Signature` over `timestamp\nnonce\nbody\n`), notification
//! resources encrypted with AES-256-GCM under the APIv3 key.
//!
//! Operations used: `POST /v3/pay/transactions/codepay` (the terminal scans the payment
//! code), `POST /v3/pay/transactions/native` (a dynamic code for the customer),
//! `GET /v3/pay/transactions/out-trade-no/{no}?mchid=`, `POST
//! /v3/pay/transactions/out-trade-no/{no}/reverse`, `POST /v3/refund/domestic/refunds`.

use chrono::{DateTime, Utc};
use ledger::money::{Currency, Money};
use openssl::pkey::{PKey, Private, Public};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    BoxFuture, Channel, ChannelError, ChargeRequest, ChargeResult, InboundRequest,
    NotificationError, PaymentNotification, QueryResult, RefundRequest, RefundResult,
    ReverseResult, Timeouts, http_client, transport_error,
};
use crate::crypto::{ApiV3Key, nonce, rsa_sha256_sign, rsa_sha256_verify};
use crate::model::Method;

/// The scheme name in the `Authorization` header.
pub const AUTH_SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";
/// How far a notification's or answer's timestamp may be from our clock.
pub const MAX_CLOCK_SKEW_S: i64 = 300;

/// A merchant's WeChat Pay credentials and where to reach the platform.
#[derive(Clone)]
pub struct WechatPayConfig {
    pub base_url: String,
    pub appid: String,
    pub mchid: String,
    /// The serial number of the merchant's API certificate.
    pub merchant_serial_no: String,
    pub merchant_key: PKey<Private>,
    /// The platform's verification keys by serial (certificate serial or public key id).
    pub platform_keys: Vec<(String, PKey<Public>)>,
    pub api_v3_key: ApiV3Key,
    pub notify_url: String,
    pub timeouts: Timeouts,
}

/// The WeChat Pay adapter.
pub struct WechatPay {
    config: WechatPayConfig,
    http: reqwest::Client,
}

/// The string the merchant signs: `METHOD\nURL\ntimestamp\nnonce\nbody\n`, where URL is the
/// path with its query string.
pub fn request_message(method: &str, url: &str, timestamp: i64, nonce: &str, body: &str) -> String {
    format!("{method}\n{url}\n{timestamp}\n{nonce}\n{body}\n")
}

/// The string the platform signs on answers and notifications.
pub fn response_message(timestamp: &str, nonce: &str, body: &str) -> String {
    format!("{timestamp}\n{nonce}\n{body}\n")
}

impl WechatPay {
    pub fn new(config: WechatPayConfig) -> Self {
        let http = http_client(config.timeouts.connect_ms, config.timeouts.request_ms);
        WechatPay { config, http }
    }

    /// The `Authorization` header value for one request.
    pub fn authorization(
        &self,
        method: &str,
        url: &str,
        body: &str,
        timestamp: i64,
        nonce_str: &str,
    ) -> Result<String, ChannelError> {
        let message = request_message(method, url, timestamp, nonce_str, body);
        let signature =
            rsa_sha256_sign(&self.config.merchant_key, message.as_bytes()).map_err(|e| {
                ChannelError::Local {
                    reason: format!("signing: {e}"),
                }
            })?;
        Ok(format!(
            "{AUTH_SCHEME} mchid=\"{}\",nonce_str=\"{nonce_str}\",signature=\"{signature}\",timestamp=\"{timestamp}\",serial_no=\"{}\"",
            self.config.mchid, self.config.merchant_serial_no
        ))
    }

    fn platform_key(&self, serial: &str) -> Option<&PKey<Public>> {
        self.config
            .platform_keys
            .iter()
            .find(|(s, _)| s == serial)
            .map(|(_, k)| k)
    }

    /// Verifies a platform signature carried in `Wechatpay-*` headers over `body`.
    fn verify_signed(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &str,
        now: DateTime<Utc>,
    ) -> Result<(), NotificationError> {
        let get = |name: &str| header(name).ok_or(NotificationError::BadSignature);
        let timestamp = get("wechatpay-timestamp")?;
        let nonce_str = get("wechatpay-nonce")?;
        let signature = get("wechatpay-signature")?;
        let serial = get("wechatpay-serial")?;
        let at: i64 = timestamp
            .parse()
            .map_err(|_| NotificationError::Malformed("timestamp".into()))?;
        if (now.timestamp() - at).abs() > MAX_CLOCK_SKEW_S {
            return Err(NotificationError::Stale);
        }
        let key = self
            .platform_key(&serial)
            .ok_or(NotificationError::BadSignature)?;
        let message = response_message(&timestamp, &nonce_str, body);
        rsa_sha256_verify(key, message.as_bytes(), &signature)
            .map_err(|_| NotificationError::BadSignature)
    }

    /// Sends one signed request and returns the status and the verified body. A 503 is the
    /// gateway refusing before processing (maintenance); an answer whose signature does not
    /// verify cannot be trusted either way and counts as unknown.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, String), ChannelError> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let timestamp = Utc::now().timestamp();
        let nonce_str = nonce(32);
        let authorization =
            self.authorization(method.as_str(), url, &body, timestamp, &nonce_str)?;
        let mut request = self
            .http
            .request(method, format!("{}{url}", self.config.base_url))
            .header("Authorization", authorization)
            .header("Accept", "application/json");
        if !body.is_empty() {
            request = request
                .header("Content-Type", "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(ChannelError::NotSent {
                reason: "the platform is unavailable (maintenance)".into(),
            });
        }
        let headers = response.headers().clone();
        let text = response.text().await.map_err(transport_error)?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        self.verify_signed(header, &text, Utc::now())
            .map_err(|e| ChannelError::Unknown {
                reason: format!("answer not trusted: {e}"),
            })?;
        Ok((status, text))
    }

    fn amount_json(amount: Money) -> Result<Value, ChannelError> {
        let total = amount.minor_units().map_err(|e| ChannelError::Local {
            reason: e.to_string(),
        })?;
        Ok(json!({ "total": total, "currency": amount.currency().code() }))
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct TransactionAmount {
    total: i64,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Deserialize)]
struct Transaction {
    out_trade_no: String,
    #[serde(default)]
    transaction_id: Option<String>,
    trade_state: String,
    #[serde(default)]
    success_time: Option<DateTime<Utc>>,
    #[serde(default)]
    amount: Option<TransactionAmount>,
}

fn unknown(reason: impl Into<String>) -> ChannelError {
    ChannelError::Unknown {
        reason: reason.into(),
    }
}

fn money_of(amount: &TransactionAmount) -> Result<Money, String> {
    let currency = match amount.currency.as_deref() {
        None | Some("CNY") => Currency::CNY,
        Some(other) => return Err(format!("currency {other}")),
    };
    Ok(Money::from_minor(amount.total, currency))
}

/// Error codes after which the payer was certainly not charged.
const DECLINES: &[&str] = &[
    "NOTENOUGH",
    "AUTH_CODE_INVALID",
    "AUTHCODEEXPIRE",
    "AUTH_CODE_ERROR",
    "ORDER_CLOSED",
    "TRADE_ERROR",
    "PARAM_ERROR",
    "INVALID_REQUEST",
    "NO_AUTH",
    "RULE_LIMIT",
    "OUT_TRADE_NO_USED",
    "FREQUENCY_LIMITED",
];

impl WechatPay {
    async fn codepay(&self, request: &ChargeRequest) -> Result<ChargeResult, ChannelError> {
        let auth_code = request.payer_code.as_deref().ok_or(ChannelError::Local {
            reason: "a code payment needs the customer's payment code".into(),
        })?;
        let body = json!({
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": request.description,
            "out_trade_no": request.out_trade_no,
            "payer": { "auth_code": auth_code },
            "amount": Self::amount_json(request.amount)?,
        });
        let (status, text) = self
            .send(
                reqwest::Method::POST,
                "/v3/pay/transactions/codepay",
                Some(&body),
            )
            .await?;
        if status.is_success() {
            let txn: Transaction = serde_json::from_str(&text)
                .map_err(|e| unknown(format!("unreadable answer: {e}")))?;
            return Ok(match txn.trade_state.as_str() {
                "SUCCESS" => ChargeResult::Succeeded {
                    channel_txn_id: txn.transaction_id.unwrap_or_default(),
                    paid_at: txn.success_time,
                },
                other => ChargeResult::Pending {
                    reason: format!("trade_state {other}"),
                },
            });
        }
        let error: ErrorBody = serde_json::from_str(&text)
            .map_err(|e| unknown(format!("unreadable error ({status}): {e}")))?;
        if error.code == "USERPAYING" {
            return Ok(ChargeResult::Pending {
                reason: "the customer is confirming the payment".into(),
            });
        }
        if status.is_client_error() && DECLINES.contains(&error.code.as_str()) {
            return Ok(ChargeResult::Declined {
                code: error.code,
                message: error.message,
            });
        }
        // SYSTEM_ERROR, BANK_ERROR and anything unexpected: the platform may have charged.
        Err(unknown(format!(
            "{status} {}: {}",
            error.code, error.message
        )))
    }

    async fn native(&self, request: &ChargeRequest) -> Result<ChargeResult, ChannelError> {
        let body = json!({
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "description": request.description,
            "out_trade_no": request.out_trade_no,
            "notify_url": self.config.notify_url,
            "amount": Self::amount_json(request.amount)?,
        });
        let (status, text) = self
            .send(
                reqwest::Method::POST,
                "/v3/pay/transactions/native",
                Some(&body),
            )
            .await?;
        let value: Value =
            serde_json::from_str(&text).map_err(|e| unknown(format!("unreadable: {e}")))?;
        if status.is_success() {
            let code_url = value["code_url"]
                .as_str()
                .ok_or_else(|| unknown("no code_url"))?;
            Ok(ChargeResult::CodeIssued {
                code_url: code_url.to_owned(),
            })
        } else if status.is_client_error() {
            // No code was issued, so no customer could have paid.
            Ok(ChargeResult::Declined {
                code: value["code"].as_str().unwrap_or_default().to_owned(),
                message: value["message"].as_str().unwrap_or_default().to_owned(),
            })
        } else {
            Err(unknown(format!("{status}: {text}")))
        }
    }

    /// Reads a decrypted notification resource.
    fn read_resource(&self, body: &str) -> Result<PaymentNotification, NotificationError> {
        let envelope: Value =
            serde_json::from_str(body).map_err(|e| NotificationError::Malformed(e.to_string()))?;
        let field = |v: &Value, name: &str| -> Result<String, NotificationError> {
            v[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| NotificationError::Malformed(format!("no {name}")))
        };
        let resource = &envelope["resource"];
        if field(resource, "algorithm")? != "AEAD_AES_256_GCM" {
            return Err(NotificationError::Malformed("algorithm".into()));
        }
        let plain = self
            .config
            .api_v3_key
            .decrypt(
                field(resource, "nonce")?.as_bytes(),
                resource["associated_data"]
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes(),
                &field(resource, "ciphertext")?,
            )
            .map_err(|_| NotificationError::BadSignature)?;
        let txn: Transaction = serde_json::from_str(&plain)
            .map_err(|e| NotificationError::Malformed(e.to_string()))?;
        let amount = txn
            .amount
            .as_ref()
            .ok_or_else(|| NotificationError::Malformed("no amount".into()))?;
        Ok(PaymentNotification {
            notification_id: field(&envelope, "id")?,
            out_trade_no: txn.out_trade_no,
            channel_txn_id: txn.transaction_id.unwrap_or_default(),
            amount: money_of(amount).map_err(NotificationError::Malformed)?,
            succeeded: txn.trade_state == "SUCCESS",
        })
    }
}

impl WechatPay {
    /// Fetches the trade bill of a day (T+1), verified like every answer.
    pub async fn trade_bill(&self, date: chrono::NaiveDate) -> Result<String, ChannelError> {
        let url = format!("/v3/bill/tradebill?bill_date={}", date.format("%Y-%m-%d"));
        let (status, text) = self.send(reqwest::Method::GET, &url, None).await?;
        if status.is_success() {
            Ok(text)
        } else {
            Err(unknown(format!("trade bill {status}: {text}")))
        }
    }
}

impl Channel for WechatPay {
    fn charge<'a>(
        &'a self,
        request: &'a ChargeRequest,
    ) -> BoxFuture<'a, Result<ChargeResult, ChannelError>> {
        Box::pin(async move {
            match request.method {
                Method::WechatPayCode => self.codepay(request).await,
                Method::WechatPayQr => self.native(request).await,
                other => Err(ChannelError::Local {
                    reason: format!("WeChat Pay does not take {other:?}"),
                }),
            }
        })
    }

    fn query<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<QueryResult, ChannelError>> {
        Box::pin(async move {
            let url = format!(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}?mchid={}",
                self.config.mchid
            );
            let (status, text) = self.send(reqwest::Method::GET, &url, None).await?;
            if status == StatusCode::NOT_FOUND {
                return Ok(QueryResult::NotCharged {
                    reason: "ORDER_NOT_EXIST".into(),
                });
            }
            if !status.is_success() {
                return Err(unknown(format!("query {status}: {text}")));
            }
            let txn: Transaction =
                serde_json::from_str(&text).map_err(|e| unknown(e.to_string()))?;
            Ok(match txn.trade_state.as_str() {
                "SUCCESS" | "REFUND" => {
                    let amount = txn.amount.as_ref().ok_or_else(|| unknown("no amount"))?;
                    QueryResult::Succeeded {
                        channel_txn_id: txn.transaction_id.unwrap_or_default(),
                        amount: money_of(amount).map_err(unknown)?,
                    }
                }
                "USERPAYING" | "NOTPAY" => QueryResult::Pending,
                "REVOKED" => QueryResult::Reversed,
                other => QueryResult::NotCharged {
                    reason: format!("trade_state {other}"),
                },
            })
        })
    }

    fn reverse<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<ReverseResult, ChannelError>> {
        Box::pin(async move {
            let url = format!("/v3/pay/transactions/out-trade-no/{out_trade_no}/reverse");
            let body = json!({ "appid": self.config.appid, "mchid": self.config.mchid });
            let (status, text) = self.send(reqwest::Method::POST, &url, Some(&body)).await?;
            if status.is_success() {
                return Ok(ReverseResult::Reversed);
            }
            let error: ErrorBody =
                serde_json::from_str(&text).map_err(|e| unknown(e.to_string()))?;
            match error.code.as_str() {
                "SYSTEM_ERROR" | "USERPAYING" | "FREQUENCY_LIMITED" => {
                    Ok(ReverseResult::RetryLater { reason: error.code })
                }
                _ => Err(unknown(format!("reverse {status} {}", error.code))),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<RefundResult, ChannelError>> {
        Box::pin(async move {
            let refund = request
                .refund
                .minor_units()
                .map_err(|e| ChannelError::Local {
                    reason: e.to_string(),
                })?;
            let total = request
                .total
                .minor_units()
                .map_err(|e| ChannelError::Local {
                    reason: e.to_string(),
                })?;
            let body = json!({
                "out_trade_no": request.out_trade_no,
                "out_refund_no": request.out_refund_no,
                "reason": request.reason,
                "amount": { "refund": refund, "total": total, "currency": request.refund.currency().code() },
            });
            let (status, text) = self
                .send(
                    reqwest::Method::POST,
                    "/v3/refund/domestic/refunds",
                    Some(&body),
                )
                .await?;
            let value: Value = serde_json::from_str(&text).map_err(|e| unknown(e.to_string()))?;
            if status.is_success() {
                Ok(RefundResult::Accepted {
                    channel_refund_id: value["refund_id"].as_str().unwrap_or_default().to_owned(),
                })
            } else if status.is_client_error() {
                Ok(RefundResult::Refused {
                    code: value["code"].as_str().unwrap_or_default().to_owned(),
                    message: value["message"].as_str().unwrap_or_default().to_owned(),
                })
            } else {
                Err(unknown(format!("refund {status}: {text}")))
            }
        })
    }

    fn parse_notification(
        &self,
        request: &InboundRequest,
    ) -> Result<PaymentNotification, NotificationError> {
        let body = std::str::from_utf8(&request.body)
            .map_err(|_| NotificationError::Malformed("not UTF-8".into()))?;
        self.verify_signed(|n| request.header(n).map(str::to_owned), body, Utc::now())?;
        self.read_resource(body)
    }

    fn statement<'a>(
        &'a self,
        day: chrono::NaiveDate,
    ) -> BoxFuture<'a, Result<crate::statements::Statement, ChannelError>> {
        Box::pin(async move {
            let bill = self.trade_bill(day).await?;
            crate::statements::read_wechat_trade_bill(&bill).map_err(super::unreadable_statement)
        })
    }
}

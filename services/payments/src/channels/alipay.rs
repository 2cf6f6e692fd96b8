//! Alipay open API (支付宝开放平台): form-encoded requests to the gateway, signed `RSA2`
//! (SHA256withRSA) over the parameters sorted by name as `k=v&k=v` with empty values and
//! `sign` left out; answers are JSON whose `<method>_response` member is signed as the exact
//! text it arrives in; asynchronous notifications are form posts signed the same way, with
//! `sign` and `sign_type` both left out of the signed text.
//!
//! Methods used: `alipay.trade.pay` (the terminal scans the payment code, `scene=bar_code`),
//! `alipay.trade.precreate` (a dynamic code), `alipay.trade.query`, `alipay.trade.cancel`,
//! `alipay.trade.refund`.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::Utc;
use ledger::money::{Currency, Money};
use openssl::pkey::{PKey, Private, Public};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::{
    BoxFuture, Channel, ChannelError, ChargeRequest, ChargeResult, InboundRequest,
    NotificationError, PaymentNotification, QueryResult, RefundRequest, RefundResult,
    ReverseResult, Timeouts, http_client, transport_error,
};
use crate::crypto::{rsa_sha256_sign, rsa_sha256_verify};
use crate::model::Method;

/// A merchant application's Alipay credentials and the gateway's address.
#[derive(Clone)]
pub struct AlipayConfig {
    /// The gateway, e.g. `https://openapi.alipay.com/gateway.do`.
    pub gateway_url: String,
    pub app_id: String,
    pub app_key: PKey<Private>,
    /// Alipay's public key, which verifies answers and notifications.
    pub alipay_public_key: PKey<Public>,
    pub notify_url: String,
    pub timeouts: Timeouts,
}

/// The Alipay adapter.
pub struct Alipay {
    config: AlipayConfig,
    http: reqwest::Client,
}

/// The signed text: parameters sorted by name, `k=v` joined with `&`, empty values and the
/// names in `skip` left out. Values are the raw (decoded) values.
pub fn sign_content<'a>(
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
    skip: &[&str],
) -> String {
    let sorted: BTreeMap<&str, &str> = params
        .into_iter()
        .filter(|(k, v)| !v.is_empty() && !skip.contains(k))
        .collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The exact text of the JSON member `key` of the object `text`, as the party signed it.
pub fn raw_member<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    let needle = format!("\"{key}\"");
    let after_key = text.find(&needle)? + needle.len();
    let rest = &text[after_key..];
    let colon = rest.find(':')?;
    let value = rest[colon + 1..].trim_start();
    let start = text.len() - value.len();
    if !value.starts_with('{') {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0_i32, false, false);
    for (i, c) in value.char_indices() {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_string = false,
            (false, _, '"') => in_string = true,
            (false, _, '{') => depth += 1,
            (false, _, '}') => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i + 1]);
                }
            }
            _ => {}
        }
    }
    None
}

fn unknown(reason: impl Into<String>) -> ChannelError {
    ChannelError::Unknown {
        reason: reason.into(),
    }
}

fn yuan(amount: Money) -> String {
    // Alipay amounts are yuan with two decimals, e.g. "12.50".
    format!("{:.2}", amount.amount())
}

fn money_from_yuan(text: &str) -> Result<Money, String> {
    let amount = Decimal::from_str(text).map_err(|e| format!("amount {text:?}: {e}"))?;
    Money::new(amount, Currency::CNY).map_err(|e| e.to_string())
}

/// Business failures after which the payer was certainly not charged.
const DECLINES: &[&str] = &[
    "ACQ.PAYMENT_AUTH_CODE_INVALID",
    "ACQ.BUYER_BALANCE_NOT_ENOUGH",
    "ACQ.BUYER_BANKCARD_BALANCE_NOT_ENOUGH",
    "ACQ.ERROR_BALANCE_PAYMENT_DISABLE",
    "ACQ.TRADE_HAS_CLOSE",
    "ACQ.BUYER_SELLER_EQUAL",
    "ACQ.TRADE_BUYER_NOT_MATCH",
    "ACQ.BUYER_ENABLE_STATUS_FORBID",
    "ACQ.PULL_MOBILE_CASHIER_FAIL",
    "ACQ.PAYMENT_FAIL",
    "ACQ.INVALID_PARAMETER",
    "ACQ.TOTAL_FEE_EXCEED",
    "ACQ.BEYOND_PAY_RESTRICTION",
    "ACQ.CONTEXT_INCONSISTENT",
];

/// One verified answer: the response member as JSON.
struct Answer {
    code: String,
    sub_code: String,
    sub_msg: String,
    body: Value,
}

impl Alipay {
    pub fn new(config: AlipayConfig) -> Self {
        let http = http_client(config.timeouts.connect_ms, config.timeouts.request_ms);
        Alipay { config, http }
    }

    /// Downloads the business detail statement (业务明细) of a day. The real platform answers
    /// `alipay.data.dataservice.bill.downloadurl.query` with a short-lived link; the file is
    /// served beside the gateway, at `statement?bill_date=`.
    pub async fn business_statement(&self, day: chrono::NaiveDate) -> Result<String, ChannelError> {
        let base = self
            .config
            .gateway_url
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&self.config.gateway_url);
        let response = self
            .http
            .get(format!(
                "{base}/statement?bill_date={}",
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

    /// The full signed parameter set of one call.
    pub fn signed_params(
        &self,
        method: &str,
        biz_content: &Value,
        notify: bool,
    ) -> Result<Vec<(String, String)>, ChannelError> {
        let timestamp = Utc::now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string();
        let mut params: Vec<(String, String)> = vec![
            ("app_id".into(), self.config.app_id.clone()),
            ("method".into(), method.into()),
            ("format".into(), "JSON".into()),
            ("charset".into(), "utf-8".into()),
            ("sign_type".into(), "RSA2".into()),
            ("timestamp".into(), timestamp),
            ("version".into(), "1.0".into()),
            ("biz_content".into(), biz_content.to_string()),
        ];
        if notify {
            params.push(("notify_url".into(), self.config.notify_url.clone()));
        }
        let content = sign_content(
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &["sign"],
        );
        let sign = rsa_sha256_sign(&self.config.app_key, content.as_bytes()).map_err(|e| {
            ChannelError::Local {
                reason: format!("signing: {e}"),
            }
        })?;
        params.push(("sign".into(), sign));
        Ok(params)
    }

    async fn call(
        &self,
        method: &str,
        biz_content: Value,
        notify: bool,
    ) -> Result<Answer, ChannelError> {
        let params = self.signed_params(method, &biz_content, notify)?;
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        let response = self
            .http
            .post(format!("{}?charset=utf-8", self.config.gateway_url))
            .header(
                "Content-Type",
                "application/x-www-form-urlencoded;charset=utf-8",
            )
            .body(form)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err(ChannelError::NotSent {
                reason: "the gateway is unavailable (maintenance)".into(),
            });
        }
        let text = response.text().await.map_err(transport_error)?;
        if !status.is_success() {
            return Err(unknown(format!("gateway {status}")));
        }
        let member = format!("{}_response", method.replace('.', "_"));
        let raw = raw_member(&text, &member).ok_or_else(|| unknown("no response member"))?;
        let whole: Value =
            serde_json::from_str(&text).map_err(|e| unknown(format!("unreadable: {e}")))?;
        let sign = whole["sign"]
            .as_str()
            .ok_or_else(|| unknown("unsigned answer"))?;
        rsa_sha256_verify(&self.config.alipay_public_key, raw.as_bytes(), sign)
            .map_err(|_| unknown("the answer's signature does not verify"))?;
        let body: Value = serde_json::from_str(raw).map_err(|e| unknown(e.to_string()))?;
        let text_of = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
        // 40001 (missing parameter), 40002 (invalid parameter or signature), 40006 (no
        // permission): the gateway refused the call before any business processing.
        if matches!(text_of("code").as_str(), "40001" | "40002" | "40006") {
            return Err(ChannelError::NotSent {
                reason: format!(
                    "gateway refused: {} {}",
                    text_of("sub_code"),
                    text_of("sub_msg")
                ),
            });
        }
        Ok(Answer {
            code: text_of("code"),
            sub_code: text_of("sub_code"),
            sub_msg: text_of("sub_msg"),
            body: body.clone(),
        })
    }

    async fn pay(&self, request: &ChargeRequest) -> Result<ChargeResult, ChannelError> {
        let auth_code = request.payer_code.as_deref().ok_or(ChannelError::Local {
            reason: "a code payment needs the customer's payment code".into(),
        })?;
        let answer = self
            .call(
                "alipay.trade.pay",
                json!({
                    "out_trade_no": request.out_trade_no,
                    "scene": "bar_code",
                    "auth_code": auth_code,
                    "subject": request.description,
                    "total_amount": yuan(request.amount),
                }),
                true,
            )
            .await?;
        match answer.code.as_str() {
            "10000" => Ok(ChargeResult::Succeeded {
                channel_txn_id: answer.body["trade_no"].as_str().unwrap_or_default().into(),
                paid_at: None,
            }),
            "10003" => Ok(ChargeResult::Pending {
                reason: "the customer is confirming the payment".into(),
            }),
            "40004" if DECLINES.contains(&answer.sub_code.as_str()) => Ok(ChargeResult::Declined {
                code: answer.sub_code,
                message: answer.sub_msg,
            }),
            // 20000 (service unavailable), ACQ.SYSTEM_ERROR, anything else: may have charged.
            code => Err(unknown(format!(
                "{code} {} {}",
                answer.sub_code, answer.sub_msg
            ))),
        }
    }

    async fn precreate(&self, request: &ChargeRequest) -> Result<ChargeResult, ChannelError> {
        let answer = self
            .call(
                "alipay.trade.precreate",
                json!({
                    "out_trade_no": request.out_trade_no,
                    "subject": request.description,
                    "total_amount": yuan(request.amount),
                }),
                true,
            )
            .await?;
        match answer.code.as_str() {
            "10000" => Ok(ChargeResult::CodeIssued {
                code_url: answer.body["qr_code"].as_str().unwrap_or_default().into(),
            }),
            "40004" => Ok(ChargeResult::Declined {
                code: answer.sub_code,
                message: answer.sub_msg,
            }),
            code => Err(unknown(format!("precreate {code} {}", answer.sub_code))),
        }
    }
}

impl Channel for Alipay {
    fn charge<'a>(
        &'a self,
        request: &'a ChargeRequest,
    ) -> BoxFuture<'a, Result<ChargeResult, ChannelError>> {
        Box::pin(async move {
            match request.method {
                Method::AlipayCode => self.pay(request).await,
                Method::AlipayQr => self.precreate(request).await,
                other => Err(ChannelError::Local {
                    reason: format!("Alipay does not take {other:?}"),
                }),
            }
        })
    }

    fn query<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<QueryResult, ChannelError>> {
        Box::pin(async move {
            let answer = self
                .call(
                    "alipay.trade.query",
                    json!({ "out_trade_no": out_trade_no }),
                    false,
                )
                .await?;
            if answer.code == "40004" && answer.sub_code == "ACQ.TRADE_NOT_EXIST" {
                return Ok(QueryResult::NotCharged {
                    reason: answer.sub_code,
                });
            }
            if answer.code != "10000" {
                return Err(unknown(format!(
                    "query {} {}",
                    answer.code, answer.sub_code
                )));
            }
            let status = answer.body["trade_status"].as_str().unwrap_or_default();
            Ok(match status {
                "TRADE_SUCCESS" | "TRADE_FINISHED" => QueryResult::Succeeded {
                    channel_txn_id: answer.body["trade_no"].as_str().unwrap_or_default().into(),
                    amount: money_from_yuan(
                        answer.body["total_amount"].as_str().unwrap_or_default(),
                    )
                    .map_err(unknown)?,
                },
                "WAIT_BUYER_PAY" => QueryResult::Pending,
                _ => QueryResult::NotCharged {
                    reason: format!("trade_status {status}"),
                },
            })
        })
    }

    fn reverse<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<ReverseResult, ChannelError>> {
        Box::pin(async move {
            let answer = self
                .call(
                    "alipay.trade.cancel",
                    json!({ "out_trade_no": out_trade_no }),
                    false,
                )
                .await?;
            if answer.body["retry_flag"].as_str() == Some("Y") {
                return Ok(ReverseResult::RetryLater {
                    reason: format!("{} {}", answer.code, answer.sub_code),
                });
            }
            match answer.code.as_str() {
                "10000" => Ok(ReverseResult::Reversed),
                code => Err(unknown(format!("cancel {code} {}", answer.sub_code))),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<RefundResult, ChannelError>> {
        Box::pin(async move {
            let answer = self
                .call(
                    "alipay.trade.refund",
                    json!({
                        "out_trade_no": request.out_trade_no,
                        "refund_amount": yuan(request.refund),
                        "out_request_no": request.out_refund_no,
                        "refund_reason": request.reason,
                    }),
                    false,
                )
                .await?;
            match answer.code.as_str() {
                "10000" => Ok(RefundResult::Accepted {
                    channel_refund_id: answer.body["trade_no"].as_str().unwrap_or_default().into(),
                }),
                "40004" => Ok(RefundResult::Refused {
                    code: answer.sub_code,
                    message: answer.sub_msg,
                }),
                code => Err(unknown(format!("refund {code} {}", answer.sub_code))),
            }
        })
    }

    fn parse_notification(
        &self,
        request: &InboundRequest,
    ) -> Result<PaymentNotification, NotificationError> {
        let params: Vec<(String, String)> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| NotificationError::Malformed(format!("no {name}")))
        };
        let sign = get("sign").map_err(|_| NotificationError::BadSignature)?;
        let content = sign_content(
            params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &["sign", "sign_type"],
        );
        rsa_sha256_verify(&self.config.alipay_public_key, content.as_bytes(), sign)
            .map_err(|_| NotificationError::BadSignature)?;
        if get("app_id")? != self.config.app_id {
            return Err(NotificationError::Malformed(
                "another app's notification".into(),
            ));
        }
        let status = get("trade_status")?;
        Ok(PaymentNotification {
            notification_id: get("notify_id")?.to_owned(),
            out_trade_no: get("out_trade_no")?.to_owned(),
            channel_txn_id: get("trade_no")?.to_owned(),
            amount: money_from_yuan(get("total_amount")?).map_err(NotificationError::Malformed)?,
            succeeded: matches!(status, "TRADE_SUCCESS" | "TRADE_FINISHED"),
        })
    }

    fn statement<'a>(
        &'a self,
        day: chrono::NaiveDate,
    ) -> BoxFuture<'a, Result<crate::statements::Statement, ChannelError>> {
        Box::pin(async move {
            let text = self.business_statement(day).await?;
            crate::statements::read_alipay_statement(&text).map_err(super::unreadable_statement)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_text_sorts_by_name_and_leaves_out_empty_values_and_the_signature() {
        let content = sign_content(
            [
                ("method", "alipay.trade.pay"),
                ("app_id", "2021000000000000"),
                ("sign", "xyz"),
                ("notify_url", ""),
                ("biz_content", "{\"a\":1}"),
            ],
            &["sign"],
        );
        assert_eq!(
            content,
            "app_id=2021000000000000&biz_content={\"a\":1}&method=alipay.trade.pay"
        );
    }

    #[test]
    fn the_signed_member_is_cut_out_exactly_as_it_arrived() {
        let text = r#"{"alipay_trade_pay_response":{"code":"10000","msg":"Success","note":"a } in \" a string"},"sign":"abc"}"#;
        assert_eq!(
            raw_member(text, "alipay_trade_pay_response"),
            Some(r#"{"code":"10000","msg":"Success","note":"a } in \" a string"}"#)
        );
        assert_eq!(raw_member(text, "other_response"), None);
    }

    #[test]
    fn amounts_go_out_in_yuan_with_two_decimals() {
        let amount = Money::new(Decimal::new(125, 1), Currency::CNY).unwrap();
        assert_eq!(yuan(amount), "12.50");
        assert_eq!(money_from_yuan("12.50").unwrap(), amount);
        assert!(money_from_yuan("12.505").is_err());
    }
}

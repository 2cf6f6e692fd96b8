//! Alipay gateway simulator: one form-posted endpoint (`POST /gateway.do`) dispatching on
//! `method`, checking the RSA2 signature over the sorted parameters (everything but `sign`)
//! with the application's public key, answering `{"<method>_response": {...}, "sign": ...}`
//! with the response member signed as sent, and form-posting notifications signed over the
//! sorted parameters without `sign` and `sign_type`. The statement is served at
//! `GET /statement?bill_date=YYYY-MM-DD` as the business detail CSV.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openssl::pkey::{PKey, Private, Public};
use serde_json::{Value, json};

use crate::core::{
    ChargeDecision, ChargeStatus, Shared, SimHandle, SimRecord, SimRefund, serve, sign,
    spawn_notifications, verify,
};

#[derive(Clone)]
pub struct AlipaySimConfig {
    pub app_id: String,
    pub app_public_key: PKey<Public>,
    pub alipay_key: PKey<Private>,
    /// The service fee rate, in parts per ten thousand (38 = 0.38%).
    pub fee_rate_bp: i64,
}

#[derive(Clone)]
struct App {
    shared: Shared,
    config: AlipaySimConfig,
}

pub async fn start(config: AlipaySimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let shared = Shared::default();
    let app = App {
        shared: shared.clone(),
        config,
    };
    let router = Router::new()
        .route("/gateway.do", post(gateway))
        .route("/statement", get(statement))
        .with_state(app);
    serve(router, addr, shared).await
}

/// `k=v&...` over the parameters sorted by name, empty values and `skip` left out.
pub fn sign_content(params: &BTreeMap<String, String>, skip: &[&str]) -> String {
    params
        .iter()
        .filter(|(k, v)| !v.is_empty() && !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let fen = fen.abs();
    format!("{sign}{}.{:02}", fen / 100, fen % 100)
}

fn fen(yuan: &str) -> Option<i64> {
    let (whole, frac) = yuan.split_once('.').unwrap_or((yuan, "0"));
    if frac.len() > 2 {
        return None;
    }
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    Some(whole.parse::<i64>().ok()? * 100 + frac)
}

impl App {
    fn answer(&self, method: &str, member: Value) -> Response {
        let member = member.to_string();
        let signature = sign(&self.config.alipay_key, member.as_bytes());
        let name = format!("{}_response", method.replace('.', "_"));
        let body = format!(
            "{{\"{name}\":{member},\"sign\":{}}}",
            Value::String(signature)
        );
        (
            StatusCode::OK,
            [("content-type", "application/json;charset=utf-8")],
            body,
        )
            .into_response()
    }

    fn failure(&self, method: &str, code: &str, sub_code: &str, sub_msg: &str) -> Response {
        let msg = match code {
            "20000" => "Service Currently Unavailable",
            "40002" => "Invalid Arguments",
            _ => "Business Failed",
        };
        self.answer(
            method,
            json!({ "code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg }),
        )
    }

    fn trade(&self, record: &SimRecord, code: &str) -> Value {
        json!({
            "code": code,
            "msg": if code == "10000" { "Success" } else { "order success pay inprocess" },
            "trade_no": record.txn_id,
            "out_trade_no": record.out_trade_no,
            "total_amount": yuan(record.amount_fen),
            "receipt_amount": yuan(record.amount_fen),
            "gmt_payment": record.at.with_timezone(&chrono_tz_shanghai()).format("%Y-%m-%d %H:%M:%S").to_string(),
        })
    }

    fn notify(&self, record: &SimRecord) {
        let behaviour = self.shared.behaviour();
        let Some(url) = behaviour.notify_url else {
            return;
        };
        let mut params = BTreeMap::new();
        params.insert("notify_id".to_owned(), format!("N{}", record.txn_id));
        params.insert("notify_type".to_owned(), "trade_status_sync".to_owned());
        params.insert(
            "notify_time".to_owned(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        );
        params.insert("app_id".to_owned(), self.config.app_id.clone());
        params.insert("charset".to_owned(), "utf-8".to_owned());
        params.insert("version".to_owned(), "1.0".to_owned());
        params.insert("trade_no".to_owned(), record.txn_id.clone());
        params.insert("out_trade_no".to_owned(), record.out_trade_no.clone());
        params.insert("total_amount".to_owned(), yuan(record.amount_fen));
        params.insert("trade_status".to_owned(), "TRADE_SUCCESS".to_owned());
        let signature = sign(
            &self.config.alipay_key,
            sign_content(&params, &["sign", "sign_type"]).as_bytes(),
        );
        params.insert("sign_type".to_owned(), "RSA2".to_owned());
        params.insert("sign".to_owned(), signature);
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params.iter())
            .finish();
        spawn_notifications(url, behaviour.notify_copies.max(1), move || {
            (
                vec![(
                    "content-type",
                    "application/x-www-form-urlencoded;charset=utf-8".to_owned(),
                )],
                body.clone(),
            )
        });
    }
}

fn chrono_tz_shanghai() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8")
}

async fn gateway(State(app): State<App>, body: Bytes) -> Response {
    app.shared.latency().await;
    if app.shared.behaviour().unavailable {
        return (StatusCode::SERVICE_UNAVAILABLE, "system maintenance").into_response();
    }
    let params: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let method = params.get("method").cloned().unwrap_or_default();
    let signed = params.get("app_id") == Some(&app.config.app_id)
        && params.get("sign_type").map(String::as_str) == Some("RSA2")
        && params.get("sign").is_some_and(|s| {
            verify(
                &app.config.app_public_key,
                sign_content(&params, &["sign"]).as_bytes(),
                s,
            )
        });
    if !signed {
        app.shared.lock().bad_signatures += 1;
        return app.failure(&method, "40002", "isv.invalid-signature", "验签出错");
    }
    let Some(biz) = params
        .get("biz_content")
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
    else {
        return app.failure(&method, "40002", "isv.missing-biz-content", "缺少业务参数");
    };
    let no = biz["out_trade_no"].as_str().unwrap_or_default().to_owned();
    match method.as_str() {
        "alipay.trade.pay" => pay(&app, &method, &no, &biz).await,
        "alipay.trade.precreate" => precreate(&app, &method, &no, &biz),
        "alipay.trade.query" => {
            let record = app.shared.lock().query(&no);
            match record {
                None => app.failure(&method, "40004", "ACQ.TRADE_NOT_EXIST", "交易不存在"),
                Some(record) => {
                    let status = match record.status {
                        ChargeStatus::Succeeded => "TRADE_SUCCESS",
                        ChargeStatus::UserPaying | ChargeStatus::NotPaid => "WAIT_BUYER_PAY",
                        _ => "TRADE_CLOSED",
                    };
                    let mut trade = app.trade(&record, "10000");
                    trade["msg"] = json!("Success");
                    trade["trade_status"] = json!(status);
                    app.answer(&method, trade)
                }
            }
        }
        "alipay.trade.cancel" => {
            let record = app.shared.lock().reverse(&no);
            let action = if record.txn_id.is_empty() {
                "close"
            } else {
                "refund"
            };
            app.answer(
                &method,
                json!({ "code": "10000", "msg": "Success", "out_trade_no": no, "retry_flag": "N", "action": action }),
            )
        }
        "alipay.trade.refund" => {
            let refund_no = biz["out_request_no"].as_str().unwrap_or_default();
            let Some(amount) = biz["refund_amount"].as_str().and_then(fen) else {
                return app.failure(&method, "40004", "ACQ.INVALID_PARAMETER", "退款金额");
            };
            let result = app.shared.lock().refund(&no, refund_no, amount);
            match result {
                Ok(record) => app.answer(
                    &method,
                    json!({ "code": "10000", "msg": "Success", "trade_no": record.txn_id, "out_trade_no": no, "refund_fee": yuan(record.refunded_fen), "fund_change": "Y" }),
                ),
                Err(_) => app.failure(&method, "40004", "ACQ.REFUND_AMT_NOT_EQUAL_TOTAL", "退款金额超限"),
            }
        }
        _ => app.failure(&method, "40002", "isv.invalid-method", "不存在的方法名"),
    }
}

/// A dynamic code for the customer to scan; a customer who scans pays the order (after the
/// behaviour's delay) and the notification follows.
fn precreate(app: &App, method: &str, no: &str, biz: &Value) -> Response {
    let Some(amount) = biz["total_amount"].as_str().and_then(fen) else {
        return app.failure(method, "40004", "ACQ.INVALID_PARAMETER", "金额无效");
    };
    let record = app.shared.lock().open_order(no, amount);
    if record.status != ChargeStatus::NotPaid {
        return app.failure(method, "40004", "ACQ.TRADE_HAS_SUCCESS", "交易已被支付");
    }
    if let Some(after) = app.shared.behaviour().qr_scan_after_ms {
        let (app, no) = (app.clone(), no.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(after)).await;
            let paid = app.shared.lock().customer_pays("2026", &no);
            if let Some(record) = paid {
                app.notify(&record);
            }
        });
    }
    app.answer(
        method,
        json!({ "code": "10000", "msg": "Success", "out_trade_no": no, "qr_code": format!("https://qr.alipay.com/{no}") }),
    )
}

async fn pay(app: &App, method: &str, no: &str, biz: &Value) -> Response {
    let Some(amount) = biz["total_amount"].as_str().and_then(fen) else {
        return app.failure(method, "40004", "ACQ.INVALID_PARAMETER", "金额");
    };
    if biz["auth_code"].as_str().unwrap_or_default().is_empty() {
        return app.failure(
            method,
            "40004",
            "ACQ.PAYMENT_AUTH_CODE_INVALID",
            "付款码无效",
        );
    }
    let decision = app.shared.lock().charge("2026", no, amount);
    match decision {
        ChargeDecision::Declined => app.failure(
            method,
            "40004",
            "ACQ.BUYER_BALANCE_NOT_ENOUGH",
            "买家余额不足",
        ),
        ChargeDecision::UserPaying(record) => app.answer(method, app.trade(&record, "10003")),
        ChargeDecision::Existing(record) => match record.status {
            ChargeStatus::Succeeded => app.answer(method, app.trade(&record, "10000")),
            ChargeStatus::UserPaying => app.answer(method, app.trade(&record, "10003")),
            _ => app.failure(method, "40004", "ACQ.TRADE_HAS_CLOSE", "交易已关闭"),
        },
        ChargeDecision::Charged(record, hang_ms) => {
            app.notify(&record);
            if hang_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(hang_ms)).await;
            }
            app.answer(method, app.trade(&record, "10000"))
        }
    }
}

#[derive(serde::Deserialize)]
struct BillQuery {
    bill_date: chrono::NaiveDate,
}

async fn statement(State(app): State<App>, Query(q): Query<BillQuery>) -> Response {
    let (records, refunds) = {
        let state = app.shared.lock();
        (state.charges_on(q.bill_date), state.refunds_on(q.bill_date))
    };
    let text = business_statement_with_refunds(&app.config, q.bill_date, &records, &refunds);
    (
        StatusCode::OK,
        [("content-type", "text/csv; charset=utf-8")],
        text,
    )
        .into_response()
}

/// The business detail statement (业务明细) in Alipay's CSV layout: `#` comment lines
/// around a header and one line per trade, amounts in yuan.
pub fn business_statement(
    config: &AlipaySimConfig,
    date: chrono::NaiveDate,
    records: &[SimRecord],
) -> String {
    business_statement_with_refunds(config, date, records, &[])
}

/// The business detail statement with the day's refunds as `退款` lines after the trades.
pub fn business_statement_with_refunds(
    config: &AlipaySimConfig,
    date: chrono::NaiveDate,
    records: &[SimRecord],
    refunds: &[(SimRecord, SimRefund)],
) -> String {
    let mut out = format!(
        "#支付宝业务明细查询\n#账号：[{}]\n#起始日期：[{date} 00:00:00]   终止日期：[{date} 23:59:59]\n#-----------------------------------------业务明细列表----------------------------------------\n",
        config.app_id
    );
    out.push_str("支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,订单金额（元）,商家实收（元）,服务费（元）,退款批次号/请求号,交易状态\n");
    let (mut count, mut total) = (0, 0_i64);
    for r in records {
        let fee = (r.amount_fen * config.fee_rate_bp + 5_000) / 10_000;
        let (kind, status) = match r.status {
            ChargeStatus::Succeeded => ("交易", "TRADE_SUCCESS"),
            _ => ("交易", "TRADE_CLOSED"),
        };
        if r.status == ChargeStatus::Succeeded {
            count += 1;
            total += r.amount_fen;
        }
        let at = r.at.format("%Y-%m-%d %H:%M:%S");
        out.push_str(&format!(
            "{}\t,{}\t,{kind},fuel,{at},{at},{},{},{},,{status}\n",
            r.txn_id,
            r.out_trade_no,
            yuan(r.amount_fen),
            yuan(r.amount_fen),
            yuan(-fee)
        ));
    }
    for (r, f) in refunds {
        let at = f.at.format("%Y-%m-%d %H:%M:%S");
        out.push_str(&format!(
            "{}\t,{}\t,退款,fuel,{at},{at},{},{},0.00,{}\t,TRADE_SUCCESS\n",
            r.txn_id,
            r.out_trade_no,
            yuan(-f.amount_fen),
            yuan(-f.amount_fen),
            f.refund_no
        ));
    }
    out.push_str(&format!(
        "#-----------------------------------------业务明细列表结束------------------------------------\n#交易合计：{count}笔，商家实收共{}元\n#导出时间：[{}]\n",
        yuan(total),
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S"),
    ));
    out
}

//! WeChat Pay API v3 simulator: checks the `WECHATPAY2-SHA256-RSA2048` signature of every
//! request, signs every answer with the platform key, posts notifications whose resource is
//! AES-256-GCM encrypted under the merchant's APIv3 key, and serves the trade bill
//! (`GET /v3/bill/tradebill?bill_date=YYYY-MM-DD` answers the bill text directly).

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::pkey::{PKey, Private, Public};
use openssl::symm::{Cipher, encrypt_aead};
use serde_json::{Value, json};

use crate::core::{
    ChargeDecision, ChargeStatus, Shared, SimHandle, SimRecord, SimRefund, random_token, serve,
    sign, spawn_notifications, verify,
};

/// What the platform knows about the merchant, and its own key.
#[derive(Clone)]
pub struct WechatSimConfig {
    pub mchid: String,
    pub appid: String,
    pub merchant_serial_no: String,
    pub merchant_public_key: PKey<Public>,
    pub platform_serial_no: String,
    pub platform_key: PKey<Private>,
    pub api_v3_key: [u8; 32],
    /// The fee rate written into the bill, in parts per ten thousand (38 = 0.38%).
    pub fee_rate_bp: i64,
}

#[derive(Clone)]
struct App {
    shared: Shared,
    config: WechatSimConfig,
}

/// Starts the simulator on `addr` (port 0 for an ephemeral port).
pub async fn start(config: WechatSimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let shared = Shared::default();
    let app = App {
        shared: shared.clone(),
        config,
    };
    let router = Router::new()
        .route("/v3/pay/transactions/codepay", post(codepay))
        .route("/v3/pay/transactions/native", post(native))
        .route("/v3/pay/transactions/out-trade-no/{no}", get(query))
        .route(
            "/v3/pay/transactions/out-trade-no/{no}/reverse",
            post(reverse),
        )
        .route("/v3/refund/domestic/refunds", post(refund))
        .route("/v3/bill/tradebill", get(bill))
        .with_state(app);
    serve(router, addr, shared).await
}

impl App {
    /// An answer signed by the platform over `timestamp\nnonce\nbody\n`.
    fn signed(&self, status: StatusCode, body: String) -> Response {
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let nonce = random_token(32);
        let message = format!("{timestamp}\n{nonce}\n{body}\n");
        let signature = sign(&self.config.platform_key, message.as_bytes());
        (
            status,
            [
                ("content-type", "application/json".to_owned()),
                ("wechatpay-timestamp", timestamp),
                ("wechatpay-nonce", nonce),
                ("wechatpay-signature", signature),
                ("wechatpay-serial", self.config.platform_serial_no.clone()),
            ],
            body,
        )
            .into_response()
    }

    fn error(&self, status: StatusCode, code: &str, message: &str) -> Response {
        self.signed(
            status,
            json!({ "code": code, "message": message }).to_string(),
        )
    }

    /// Checks the Authorization header; `None` when it verifies.
    fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Response> {
        let ok = (|| {
            let auth = headers.get("authorization")?.to_str().ok()?;
            let params = auth.strip_prefix("WECHATPAY2-SHA256-RSA2048 ")?;
            let field = |name: &str| {
                params.split(',').find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then(|| v.trim_matches('"').to_owned())
                })
            };
            if field("mchid")? != self.config.mchid
                || field("serial_no")? != self.config.merchant_serial_no
            {
                return None;
            }
            let timestamp = field("timestamp")?;
            let skew = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().ok()?;
            if skew.abs() > 300 {
                return None;
            }
            let path = uri.path_and_query()?.as_str();
            let body = std::str::from_utf8(body).ok()?;
            let message = format!(
                "{}\n{path}\n{timestamp}\n{}\n{body}\n",
                method.as_str(),
                field("nonce_str")?
            );
            verify(
                &self.config.merchant_public_key,
                message.as_bytes(),
                &field("signature")?,
            )
            .then_some(())
        })();
        match ok {
            Some(()) => None,
            None => {
                self.shared.lock().bad_signatures += 1;
                Some(self.error(StatusCode::UNAUTHORIZED, "SIGN_ERROR", "签名错误"))
            }
        }
    }

    fn transaction(&self, record: &SimRecord) -> Value {
        let trade_state = match record.status {
            ChargeStatus::Succeeded if record.refunded_fen > 0 => "REFUND",
            ChargeStatus::Succeeded => "SUCCESS",
            ChargeStatus::UserPaying => "USERPAYING",
            ChargeStatus::NotPaid => "NOTPAY",
            ChargeStatus::Declined => "PAYERROR",
            ChargeStatus::Reversed => "REVOKED",
        };
        json!({
            "appid": self.config.appid,
            "mchid": self.config.mchid,
            "out_trade_no": record.out_trade_no,
            "transaction_id": record.txn_id,
            "trade_type": "MICROPAY",
            "trade_state": trade_state,
            "success_time": record.at.to_rfc3339(),
            "amount": { "total": record.amount_fen, "payer_total": record.amount_fen, "currency": "CNY" },
        })
    }

    fn notify(&self, record: &SimRecord) {
        let behaviour = self.shared.behaviour();
        let Some(url) = behaviour.notify_url else {
            return;
        };
        let plain = self.transaction(record).to_string();
        let nonce = random_token(12);
        let mut tag = [0_u8; 16];
        let mut ciphertext = encrypt_aead(
            Cipher::aes_256_gcm(),
            &self.config.api_v3_key,
            Some(nonce.as_bytes()),
            b"transaction",
            plain.as_bytes(),
            &mut tag,
        )
        .expect("AES-256-GCM");
        ciphertext.extend_from_slice(&tag);
        let body = json!({
            "id": format!("EV-{}", record.txn_id),
            "create_time": chrono::Utc::now().to_rfc3339(),
            "resource_type": "encrypt-resource",
            "event_type": "TRANSACTION.SUCCESS",
            "summary": "支付成功",
            "resource": {
                "original_type": "transaction",
                "algorithm": "AEAD_AES_256_GCM",
                "ciphertext": B64.encode(ciphertext),
                "associated_data": "transaction",
                "nonce": nonce,
            },
        })
        .to_string();
        let key = self.config.platform_key.clone();
        let serial = self.config.platform_serial_no.clone();
        spawn_notifications(url, behaviour.notify_copies.max(1), move || {
            let timestamp = chrono::Utc::now().timestamp().to_string();
            let nonce = random_token(32);
            let signature = sign(&key, format!("{timestamp}\n{nonce}\n{body}\n").as_bytes());
            (
                vec![
                    ("content-type", "application/json".to_owned()),
                    ("wechatpay-timestamp", timestamp),
                    ("wechatpay-nonce", nonce),
                    ("wechatpay-signature", signature),
                    ("wechatpay-serial", serial.clone()),
                ],
                body.clone(),
            )
        });
    }
}

async fn gate(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    app.shared.latency().await;
    if app.shared.behaviour().unavailable {
        return Some((StatusCode::SERVICE_UNAVAILABLE, "system maintenance").into_response());
    }
    app.check(method, uri, headers, body)
}

async fn codepay(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = gate(&app, &method, &uri, &headers, &body).await {
        return refusal;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return app.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "body");
    };
    let (Some(no), Some(total), Some(_code)) = (
        request["out_trade_no"].as_str(),
        request["amount"]["total"].as_i64(),
        request["payer"]["auth_code"].as_str(),
    ) else {
        return app.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "missing fields");
    };
    let decision = app.shared.lock().charge("4200", no, total);
    match decision {
        ChargeDecision::Declined => app.error(StatusCode::FORBIDDEN, "NOTENOUGH", "用户余额不足"),
        ChargeDecision::UserPaying(_) => {
            app.error(StatusCode::ACCEPTED, "USERPAYING", "需要用户输入支付密码")
        }
        ChargeDecision::Existing(record) => match record.status {
            ChargeStatus::Succeeded => {
                app.signed(StatusCode::OK, app.transaction(&record).to_string())
            }
            ChargeStatus::UserPaying => {
                app.error(StatusCode::ACCEPTED, "USERPAYING", "需要用户输入支付密码")
            }
            _ => app.error(StatusCode::FORBIDDEN, "ORDER_CLOSED", "订单已关闭"),
        },
        ChargeDecision::Charged(record, hang_ms) => {
            app.notify(&record);
            if hang_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(hang_ms)).await;
            }
            app.signed(StatusCode::OK, app.transaction(&record).to_string())
        }
    }
}

async fn native(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = gate(&app, &method, &uri, &headers, &body).await {
        return refusal;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return app.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "body");
    };
    let (Some(no), Some(total)) = (
        request["out_trade_no"].as_str(),
        request["amount"]["total"].as_i64(),
    ) else {
        return app.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "missing fields");
    };
    let record = app.shared.lock().open_order(no, total);
    if record.status != ChargeStatus::NotPaid {
        return app.error(StatusCode::BAD_REQUEST, "ORDERPAID", "该订单已支付或已关闭");
    }
    if let Some(after) = app.shared.behaviour().qr_scan_after_ms {
        let (app, no) = (app.clone(), no.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(after)).await;
            let paid = app.shared.lock().customer_pays("4200", &no);
            if let Some(record) = paid {
                app.notify(&record);
            }
        });
    }
    app.signed(
        StatusCode::OK,
        json!({ "code_url": format!("weixin://wxpay/bizpayurl?pr={no}") }).to_string(),
    )
}

async fn query(
    State(app): State<App>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = gate(&app, &method, &uri, &headers, b"").await {
        return refusal;
    }
    let record = app.shared.lock().query(&no);
    match record {
        Some(record) => app.signed(StatusCode::OK, app.transaction(&record).to_string()),
        None => app.error(StatusCode::NOT_FOUND, "ORDER_NOT_EXIST", "订单不存在"),
    }
}

async fn reverse(
    State(app): State<App>,
    Path(no): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = gate(&app, &method, &uri, &headers, &body).await {
        return refusal;
    }
    app.shared.lock().reverse(&no);
    app.signed(StatusCode::OK, json!({ "recall": false }).to_string())
}

async fn refund(
    State(app): State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = gate(&app, &method, &uri, &headers, &body).await {
        return refusal;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return app.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "body");
    };
    let (Some(no), Some(refund_no), Some(amount)) = (
        request["out_trade_no"].as_str(),
        request["out_refund_no"].as_str(),
        request["amount"]["refund"].as_i64(),
    ) else {
        return app.error(StatusCode::BAD_REQUEST, "PARAM_ERROR", "missing fields");
    };
    let result = app.shared.lock().refund(no, refund_no, amount);
    match result {
        Ok(_) => app.signed(
            StatusCode::OK,
            json!({ "refund_id": format!("5030{refund_no}"), "out_refund_no": refund_no, "status": "PROCESSING" })
                .to_string(),
        ),
        Err(code) => app.error(StatusCode::FORBIDDEN, code, "退款失败"),
    }
}

#[derive(serde::Deserialize)]
struct BillQuery {
    bill_date: chrono::NaiveDate,
}

async fn bill(
    State(app): State<App>,
    Query(q): Query<BillQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(refusal) = gate(&app, &method, &uri, &headers, b"").await {
        return refusal;
    }
    let (records, refunds) = {
        let state = app.shared.lock();
        (state.charges_on(q.bill_date), state.refunds_on(q.bill_date))
    };
    // The real platform answers a signed download link and serves the file with its
    // SHA1; here the bill comes in the signed answer itself.
    app.signed(
        StatusCode::OK,
        trade_bill_with_refunds(&app.config, &records, &refunds),
    )
}

fn yuan(fen: i64) -> String {
    format!("{}.{:02}", fen / 100, fen % 100)
}

/// The trade bill in WeChat Pay's layout: a header line, one line per order with every
/// field prefixed by a backquote, a totals header and a totals line.
pub fn trade_bill(config: &WechatSimConfig, records: &[SimRecord]) -> String {
    trade_bill_with_refunds(config, records, &[])
}

/// The trade bill with the day's refunds as `REFUND` lines after the orders.
pub fn trade_bill_with_refunds(
    config: &WechatSimConfig,
    records: &[SimRecord],
    refunds: &[(SimRecord, SimRefund)],
) -> String {
    let mut out = String::from(
        "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率\n",
    );
    let (mut total, mut fees) = (0_i64, 0_i64);
    for r in records {
        let fee = (r.amount_fen * config.fee_rate_bp + 5_000) / 10_000;
        let state = match r.status {
            ChargeStatus::Reversed => "REVOKED",
            ChargeStatus::UserPaying => "USERPAYING",
            ChargeStatus::NotPaid => "NOTPAY",
            _ => "SUCCESS",
        };
        if r.status == ChargeStatus::Succeeded {
            total += r.amount_fen;
            fees += fee;
        }
        let fields = [
            r.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            config.appid.clone(),
            config.mchid.clone(),
            "0".into(),
            String::new(),
            r.txn_id.clone(),
            r.out_trade_no.clone(),
            String::new(),
            "MICROPAY".into(),
            state.into(),
            "OTHERS".into(),
            "CNY".into(),
            yuan(r.amount_fen),
            "0.00".into(),
            "0".into(),
            "0".into(),
            "0.00".into(),
            "0.00".into(),
            String::new(),
            String::new(),
            "fuel".into(),
            String::new(),
            yuan(fee),
            format!("{:.2}%", config.fee_rate_bp as f64 / 100.0),
        ];
        let line: Vec<String> = fields.iter().map(|f| format!("`{f}")).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    let mut refunded = 0_i64;
    for (r, f) in refunds {
        refunded += f.amount_fen;
        let fields = [
            f.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            config.appid.clone(),
            config.mchid.clone(),
            "0".into(),
            String::new(),
            r.txn_id.clone(),
            r.out_trade_no.clone(),
            String::new(),
            "MICROPAY".into(),
            "REFUND".into(),
            "OTHERS".into(),
            "CNY".into(),
            "0.00".into(),
            "0.00".into(),
            format!("5030{}", f.refund_no),
            f.refund_no.clone(),
            yuan(f.amount_fen),
            "0.00".into(),
            "ORIGINAL".into(),
            "SUCCESS".into(),
            "fuel".into(),
            String::new(),
            "0.00".into(),
            format!("{:.2}%", config.fee_rate_bp as f64 / 100.0),
        ];
        let line: Vec<String> = fields.iter().map(|f| format!("`{f}")).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out.push_str("总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\n");
    out.push_str(&format!(
        "`{},`{},`{},`0.00,`{},`{},`{}\n",
        records.len() + refunds.len(),
        yuan(total),
        yuan(refunded),
        yuan(fees),
        yuan(total),
        yuan(refunded)
    ));
    out
}

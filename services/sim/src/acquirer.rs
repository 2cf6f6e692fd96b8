//! Bank card acquirer simulator for the signed JSON protocol documented in the payments
//! crate's acquirer adapter: `POST /v1/sale`, `/v1/inquiry`, `/v1/reversal`, `/v1/refund`;
//! requests signed by the merchant over `METHOD\nPATH\ntimestamp\nnonce\nbody\n`, answers
//! signed by the acquirer over `STATUS\ntimestamp\nnonce\nbody\n`, notifications over
//! `NOTIFY\ntimestamp\nnonce\nbody\n`. The T+1 statement (`GET /v1/statement?date=`) is
//! pipe-delimited: `H|merchant|date`, one `D|order_no|rrn|type|amount_fen|fee_fen|time` per
//! transaction, `T|count|amount_fen|fee_fen`.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use openssl::pkey::{PKey, Private, Public};
use serde_json::{Value, json};

use crate::core::{
    ChargeDecision, ChargeStatus, Shared, SimHandle, SimRecord, SimRefund, random_token, serve,
    sign, spawn_notifications, verify,
};

#[derive(Clone)]
pub struct AcquirerSimConfig {
    pub merchant_id: String,
    pub merchant_public_key: PKey<Public>,
    pub acquirer_key: PKey<Private>,
    /// The merchant discount rate, in parts per ten thousand.
    pub fee_rate_bp: i64,
}

#[derive(Clone)]
struct App {
    shared: Shared,
    config: AcquirerSimConfig,
}

pub async fn start(config: AcquirerSimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
    let shared = Shared::default();
    let app = App {
        shared: shared.clone(),
        config,
    };
    let router = Router::new()
        .route("/v1/sale", post(sale))
        .route("/v1/inquiry", post(inquiry))
        .route("/v1/reversal", post(reversal))
        .route("/v1/refund", post(refund))
        .route("/v1/statement", get(statement))
        .with_state(app);
    serve(router, addr, shared).await
}

impl App {
    fn signed(&self, status: StatusCode, body: Value) -> Response {
        let body = body.to_string();
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let nonce = random_token(24);
        let text = format!("{}\n{timestamp}\n{nonce}\n{body}\n", status.as_str());
        let signature = sign(&self.config.acquirer_key, text.as_bytes());
        (
            status,
            [
                ("content-type", "application/json".to_owned()),
                ("x-acq-timestamp", timestamp),
                ("x-acq-nonce", nonce),
                ("x-acq-signature", signature),
            ],
            body,
        )
            .into_response()
    }

    /// Latency, maintenance and the signature check; the parsed body when all pass.
    async fn gate(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Value, Response> {
        self.shared.latency().await;
        if self.shared.behaviour().unavailable {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response());
        }
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let ok = (|| {
            if header("x-acq-merchant")? != self.config.merchant_id {
                return None;
            }
            let timestamp = header("x-acq-timestamp")?;
            let skew = chrono::Utc::now().timestamp() - timestamp.parse::<i64>().ok()?;
            if skew.abs() > 300 {
                return None;
            }
            let text = format!(
                "POST\n{}\n{timestamp}\n{}\n{}\n",
                uri.path(),
                header("x-acq-nonce")?,
                std::str::from_utf8(body).ok()?
            );
            verify(
                &self.config.merchant_public_key,
                text.as_bytes(),
                header("x-acq-signature")?,
            )
            .then_some(())
        })();
        if ok.is_none() {
            self.shared.lock().bad_signatures += 1;
            return Err(self.signed(
                StatusCode::UNAUTHORIZED,
                json!({ "response_code": "63", "message": "security violation" }),
            ));
        }
        serde_json::from_slice(body).map_err(|_| {
            self.signed(
                StatusCode::BAD_REQUEST,
                json!({ "response_code": "30", "message": "format error" }),
            )
        })
    }

    fn notify(&self, record: &SimRecord) {
        let behaviour = self.shared.behaviour();
        let Some(url) = behaviour.notify_url else {
            return;
        };
        let body = json!({
            "notification_id": format!("AN{}", record.txn_id),
            "order_no": record.out_trade_no,
            "rrn": record.txn_id,
            "amount_fen": record.amount_fen,
            "status": "approved",
        })
        .to_string();
        let key = self.config.acquirer_key.clone();
        spawn_notifications(url, behaviour.notify_copies.max(1), move || {
            let timestamp = chrono::Utc::now().timestamp().to_string();
            let nonce = random_token(24);
            let signature = sign(
                &key,
                format!("NOTIFY\n{timestamp}\n{nonce}\n{body}\n").as_bytes(),
            );
            (
                vec![
                    ("content-type", "application/json".to_owned()),
                    ("x-acq-timestamp", timestamp),
                    ("x-acq-nonce", nonce),
                    ("x-acq-signature", signature),
                ],
                body.clone(),
            )
        });
    }
}

async fn sale(State(app): State<App>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request = match app.gate(&uri, &headers, &body).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let (Some(no), Some(amount)) = (request["order_no"].as_str(), request["amount_fen"].as_i64())
    else {
        return app.signed(StatusCode::BAD_REQUEST, json!({ "response_code": "30" }));
    };
    let decision = app.shared.lock().charge("", no, amount);
    let approved = |r: &SimRecord| json!({ "response_code": "00", "message": "approved", "rrn": r.txn_id, "auth_code": "A1B2C3" });
    match decision {
        ChargeDecision::Declined => app.signed(
            StatusCode::OK,
            json!({ "response_code": "51", "message": "insufficient funds" }),
        ),
        ChargeDecision::UserPaying(_) => app.signed(
            StatusCode::OK,
            json!({ "response_code": "91", "message": "issuer unavailable" }),
        ),
        ChargeDecision::Existing(record) => match record.status {
            ChargeStatus::Succeeded => app.signed(StatusCode::OK, approved(&record)),
            _ => app.signed(
                StatusCode::OK,
                json!({ "response_code": "94", "message": "duplicate transmission" }),
            ),
        },
        ChargeDecision::Charged(record, hang_ms) => {
            app.notify(&record);
            if hang_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(hang_ms)).await;
            }
            app.signed(StatusCode::OK, approved(&record))
        }
    }
}

async fn inquiry(State(app): State<App>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request = match app.gate(&uri, &headers, &body).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let no = request["order_no"].as_str().unwrap_or_default();
    let record = app.shared.lock().query(no);
    let answer = match record {
        None => json!({ "status": "not_found" }),
        Some(r) => {
            let status = match r.status {
                ChargeStatus::Succeeded => "approved",
                ChargeStatus::Reversed => "reversed",
                ChargeStatus::Declined => "declined",
                ChargeStatus::UserPaying | ChargeStatus::NotPaid => "in_progress",
            };
            json!({ "status": status, "rrn": r.txn_id, "amount_fen": r.amount_fen })
        }
    };
    app.signed(StatusCode::OK, answer)
}

async fn reversal(State(app): State<App>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request = match app.gate(&uri, &headers, &body).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let no = request["order_no"].as_str().unwrap_or_default();
    let record = app.shared.lock().reverse(no);
    let code = if record.txn_id.is_empty() { "25" } else { "00" };
    app.signed(StatusCode::OK, json!({ "response_code": code }))
}

async fn refund(State(app): State<App>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let request = match app.gate(&uri, &headers, &body).await {
        Ok(request) => request,
        Err(refusal) => return refusal,
    };
    let (no, refund_no, amount) = (
        request["order_no"].as_str().unwrap_or_default(),
        request["refund_no"].as_str().unwrap_or_default(),
        request["amount_fen"].as_i64().unwrap_or_default(),
    );
    let result = app.shared.lock().refund(no, refund_no, amount);
    match result {
        Ok(_) => app.signed(
            StatusCode::OK,
            json!({ "response_code": "00", "refund_rrn": format!("R{refund_no}") }),
        ),
        Err(reason) => app.signed(
            StatusCode::OK,
            json!({ "response_code": "13", "message": reason }),
        ),
    }
}

#[derive(serde::Deserialize)]
struct StatementQuery {
    date: chrono::NaiveDate,
}

async fn statement(State(app): State<App>, Query(q): Query<StatementQuery>) -> Response {
    let (records, refunds) = {
        let state = app.shared.lock();
        (state.charges_on(q.date), state.refunds_on(q.date))
    };
    let text = pipe_statement_with_refunds(&app.config, q.date, &records, &refunds);
    (StatusCode::OK, [("content-type", "text/plain")], text).into_response()
}

/// The pipe-delimited T+1 statement.
pub fn pipe_statement(
    config: &AcquirerSimConfig,
    date: chrono::NaiveDate,
    records: &[SimRecord],
) -> String {
    pipe_statement_with_refunds(config, date, records, &[])
}

/// The statement with the day's refunds as `REFUND` detail records
/// (`D|order|refund rrn|REFUND|amount|0|time|refund no`) after the sales; the trailer counts
/// the sales.
pub fn pipe_statement_with_refunds(
    config: &AcquirerSimConfig,
    date: chrono::NaiveDate,
    records: &[SimRecord],
    refunds: &[(SimRecord, SimRefund)],
) -> String {
    let mut out = format!("H|{}|{}\n", config.merchant_id, date.format("%Y%m%d"));
    let (mut count, mut total, mut fees) = (0, 0_i64, 0_i64);
    for r in records
        .iter()
        .filter(|r| r.status == ChargeStatus::Succeeded)
    {
        let fee = (r.amount_fen * config.fee_rate_bp + 5_000) / 10_000;
        count += 1;
        total += r.amount_fen;
        fees += fee;
        out.push_str(&format!(
            "D|{}|{}|SALE|{}|{fee}|{}\n",
            r.out_trade_no,
            r.txn_id,
            r.amount_fen,
            r.at.format("%H%M%S")
        ));
    }
    for (r, f) in refunds {
        out.push_str(&format!(
            "D|{}|R{}|REFUND|{}|0|{}|{}\n",
            r.out_trade_no,
            f.refund_no,
            f.amount_fen,
            f.at.format("%H%M%S"),
            f.refund_no
        ));
    }
    out.push_str(&format!("T|{count}|{total}|{fees}\n"));
    out
}

//! The harness: simulators on ephemeral ports, adapters pointed at them, and a driver that
//! runs the payment state machine's commands against the adapters over real HTTP.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderMap;
use ledger::money::{Currency, Money};
use payments::channels::acquirer::{Acquirer, AcquirerConfig};
use payments::channels::alipay::{Alipay, AlipayConfig};
use payments::channels::wechat::{WechatPay, WechatPayConfig};
use payments::channels::{Channel, InboundRequest, Timeouts};
use payments::crypto::ApiV3Key;
use payments::flow::{FlowPolicy, Payment, PaymentCommand, PaymentEvent};
use payments::model::ChannelId;
use sim::SimHandle;

pub const API_V3_KEY: &[u8; 32] = b"fc0123456789abcdef0123456789abcd";

pub fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The client waits 400 ms; a simulator told to hang holds its answer for 1.5 s.
pub const TIMEOUTS: Timeouts = Timeouts {
    connect_ms: 500,
    request_ms: 400,
};
pub const HANG_MS: u64 = 1_500;

pub fn policy() -> FlowPolicy {
    FlowPolicy {
        first_query_ms: 50,
        max_query_ms: 200,
        max_queries: 5,
        max_reversals: 3,
        reversal_retry_ms: 50,
        max_attempts: 3,
    }
}

pub fn cny(fen: i64) -> Money {
    Money::from_minor(fen, Currency::CNY)
}

/// A WeChat Pay merchant and its simulated platform.
pub async fn wechat(mchid: &str) -> (WechatPay, SimHandle) {
    let (merchant_key, merchant_public) = sim::keys::rsa_pair();
    let (platform_key, platform_public) = sim::keys::rsa_pair();
    let handle = sim::wechat::start(
        sim::wechat::WechatSimConfig {
            mchid: mchid.into(),
            appid: "wx8888888888888888".into(),
            merchant_serial_no: format!("SERIAL-{mchid}"),
            merchant_public_key: merchant_public,
            platform_serial_no: "PUB_KEY_ID_0001".into(),
            platform_key,
            api_v3_key: *API_V3_KEY,
            fee_rate_bp: 38,
        },
        local(),
    )
    .await
    .unwrap();
    let adapter = WechatPay::new(WechatPayConfig {
        base_url: handle.base_url(),
        appid: "wx8888888888888888".into(),
        mchid: mchid.into(),
        merchant_serial_no: format!("SERIAL-{mchid}"),
        merchant_key,
        platform_keys: vec![("PUB_KEY_ID_0001".into(), platform_public)],
        api_v3_key: ApiV3Key::new(API_V3_KEY).unwrap(),
        notify_url: "http://127.0.0.1:9/notify".into(),
        timeouts: TIMEOUTS,
    });
    (adapter, handle)
}

pub async fn alipay(app_id: &str) -> (Alipay, SimHandle) {
    let (app_key, app_public) = sim::keys::rsa_pair();
    let (alipay_key, alipay_public) = sim::keys::rsa_pair();
    let handle = sim::alipay::start(
        sim::alipay::AlipaySimConfig {
            app_id: app_id.into(),
            app_public_key: app_public,
            alipay_key,
            fee_rate_bp: 38,
        },
        local(),
    )
    .await
    .unwrap();
    let adapter = Alipay::new(AlipayConfig {
        gateway_url: format!("{}/gateway.do", handle.base_url()),
        app_id: app_id.into(),
        app_key,
        alipay_public_key: alipay_public,
        notify_url: "http://127.0.0.1:9/notify".into(),
        timeouts: TIMEOUTS,
    });
    (adapter, handle)
}

pub async fn acquirer(merchant_id: &str) -> (Acquirer, SimHandle) {
    let (merchant_key, merchant_public) = sim::keys::rsa_pair();
    let (acquirer_key, acquirer_public) = sim::keys::rsa_pair();
    let handle = sim::acquirer::start(
        sim::acquirer::AcquirerSimConfig {
            merchant_id: merchant_id.into(),
            merchant_public_key: merchant_public,
            acquirer_key,
            fee_rate_bp: 50,
        },
        local(),
    )
    .await
    .unwrap();
    let adapter = Acquirer::new(AcquirerConfig {
        base_url: handle.base_url(),
        merchant_id: merchant_id.into(),
        terminal_id: "T0001".into(),
        merchant_key,
        acquirer_public_key: acquirer_public,
        timeouts: TIMEOUTS,
    });
    (adapter, handle)
}

/// Runs the machine's commands until it finishes: adapter calls over HTTP, timers as sleeps.
/// Returns every command it emitted, in order.
pub async fn drive(
    payment: &mut Payment,
    first: PaymentEvent,
    channels: &BTreeMap<ChannelId, &dyn Channel>,
) -> Vec<PaymentCommand> {
    let policy = policy();
    let mut log = Vec::new();
    let mut pending = payment.apply(&first, &policy);
    for _ in 0..100 {
        let Some(command) = pending.first().cloned() else {
            return log;
        };
        pending.remove(0);
        log.push(command.clone());
        let event = match command {
            PaymentCommand::Submit {
                attempt,
                channel,
                out_trade_no,
            } => {
                let request = payments::channels::ChargeRequest {
                    out_trade_no,
                    method: payment.input.method,
                    amount: payment.input.amount,
                    description: "92# fuel".into(),
                    payer_code: Some("134567890123456789".into()),
                };
                let result = channels[&channel].charge(&request).await;
                PaymentEvent::ChargeAnswered { attempt, result }
            }
            PaymentCommand::ScheduleQuery { attempt, after_ms } => {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                PaymentEvent::QueryDue { attempt }
            }
            PaymentCommand::Query {
                attempt,
                channel,
                out_trade_no,
            } => PaymentEvent::QueryAnswered {
                attempt,
                result: channels[&channel].query(&out_trade_no).await,
            },
            PaymentCommand::ScheduleReverse { attempt, after_ms } => {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                PaymentEvent::ReverseDue { attempt }
            }
            PaymentCommand::Reverse {
                attempt,
                channel,
                out_trade_no,
            } => PaymentEvent::ReverseAnswered {
                attempt,
                result: channels[&channel].reverse(&out_trade_no).await,
            },
            PaymentCommand::PostSale { .. } | PaymentCommand::Finish => continue,
        };
        pending.extend(payment.apply(&event, &policy));
    }
    panic!("the payment did not finish: {payment:?}");
}

/// A notification endpoint: an HTTP server that keeps every request it receives.
pub struct Inbox {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<InboundRequest>>>,
}

impl Inbox {
    pub async fn start() -> Inbox {
        let received: Arc<Mutex<Vec<InboundRequest>>> = Arc::default();
        let store = received.clone();
        let router = axum::Router::new().route(
            "/notify",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let store = store.clone();
                async move {
                    let headers = headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect();
                    store.lock().unwrap().push(InboundRequest {
                        headers,
                        body: body.to_vec(),
                    });
                    "success"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(local()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Inbox { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}/notify", self.addr)
    }

    /// Waits until `count` requests arrived (at most five seconds).
    pub async fn wait_for(&self, count: usize) -> Vec<InboundRequest> {
        for _ in 0..100 {
            let got = self.received.lock().unwrap().clone();
            if got.len() >= count {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {count} notifications arrived");
    }
}

//! Webhooks: the platform's domain events posted to a subscriber, signed, retried until it
//! takes them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use testkit::Backend;

use crate::common::{Call, Who, spawn_app};

testkit::scenarios!(
    a_subscriber_gets_the_settlement_signed_and_once_more_after_failing_the_first_try,
);

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver that fails the first post and takes every later one.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                let mut seen = seen.lock().unwrap();
                seen.push((headers, body));
                if seen.len() == 1 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn a_subscriber_gets_the_settlement_signed_and_once_more_after_failing_the_first_try(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_treasury_workers();
    let (url, received) = receiver().await;
    let subscribe = Call::post(
        "/v1/webhooks",
        Some(json!({"url": url, "topics": ["treasury.instruction.settled"]})),
    );
    let response = app.call(Some(Who::BrandAdmin), &subscribe).await;
    assert_eq!(response.status().as_u16(), 403);
    let response = app.call(Some(Who::RootAdmin), &subscribe).await;
    assert_eq!(response.status().as_u16(), 201);
    let created: Value = response.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let webhook = created["id"].as_str().unwrap().to_owned();

    let w = &app.world;
    let response = app
        .call(
            Some(Who::TreasuryMaker),
            &Call::post(
                "/v1/treasury/instructions",
                Some(json!({
                    "debtor_sub_account_id": w.sub_accounts["company-a"],
                    "creditor_sub_account_id": w.sub_accounts["company-b"],
                    "amount": "42.00",
                    "currency": "CNY",
                })),
            ),
        )
        .await;
    assert_eq!(response.status().as_u16(), 201);
    let instruction: Value = response.json().await.unwrap();
    let id = instruction["id"].as_str().unwrap();
    let response = app
        .call(
            Some(Who::TreasuryChecker),
            &Call::post(format!("/v1/treasury/instructions/{id}/approve"), None),
        )
        .await;
    assert_eq!(response.status().as_u16(), 200);

    for _ in 0..400 {
        if received.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "failed once, then taken");
    for (headers, body) in &got {
        let header = |name: &str| headers[name].to_str().unwrap().to_owned();
        let timestamp: i64 = header("forecourt-webhook-timestamp").parse().unwrap();
        assert_eq!(
            header("forecourt-webhook-signature"),
            api::webhooks::signature(&secret, &header("forecourt-webhook-id"), timestamp, body),
            "signed with the subscription's secret"
        );
        let event: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["topic"], "treasury.instruction.settled");
        assert_eq!(event["data"]["instruction_id"], id);
    }
    assert_eq!(
        got[0].0["forecourt-webhook-id"], got[1].0["forecourt-webhook-id"],
        "the same event, so the receiver can drop the repeat"
    );
    let mut deliveries = Value::Null;
    for _ in 0..100 {
        deliveries = app
            .call(
                Some(Who::RootAdmin),
                &Call::get(format!("/v1/webhooks/{webhook}/deliveries")),
            )
            .await
            .json()
            .await
            .unwrap();
        if deliveries["items"][0]["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        deliveries["items"].as_array().unwrap().len(),
        1,
        "{deliveries:#}"
    );
    assert_eq!(deliveries["items"][0]["status"], "delivered");
    assert_eq!(deliveries["items"][0]["attempts"], 2);
}

//! Idempotency-Key: replay, concurrent duplicates, conflicting body, expiry, secrets.

use std::time::Duration;

use api::ApiConfig;
use serde_json::{Value, json};
use testkit::Backend;
use uuid::Uuid;

use crate::common::{Call, TestApp, Who, expect_problem, spawn_app, spawn_app_with};

fn new_station(app: &TestApp, name: &str) -> Call {
    Call::post(
        "/v1/organisations",
        Some(json!({"parent_id": app.world.orgs["company-a"], "kind": "station", "name": name})),
    )
}

async fn stations_named(app: &TestApp, name: &str) -> usize {
    let page: Value = app
        .call(
            Some(Who::RootAdmin),
            &Call::get("/v1/organisations?limit=200"),
        )
        .await
        .json()
        .await
        .unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["name"] == name)
        .count()
}

async fn a_retried_create_returns_the_first_response_and_creates_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let call = new_station(&app, "Retried station");
    let first = app.call(Some(Who::BrandAdmin), &call).await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotency-replayed").is_none());
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    let second = app.call(Some(Who::BrandAdmin), &call).await;
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotency-replayed"], "true");
    assert_eq!(second.headers()["location"].to_str().unwrap(), location);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(stations_named(&app, "Retried station").await, 1);

    // The same key with another body is refused, and creates nothing.
    let mut other = new_station(&app, "Another station");
    other.idempotency_key = call.idempotency_key.clone();
    let response = app.call(Some(Who::BrandAdmin), &other).await;
    expect_problem(response, 422, "idempotency-key-reused").await;
    assert_eq!(stations_named(&app, "Another station").await, 0);

    // The same key and body from another user of another organisation is theirs alone.
    let response = app.call(Some(Who::RootAdmin), &call).await;
    assert_ne!(
        response
            .headers()
            .get("idempotency-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
}

testkit::scenarios!(a_retried_create_returns_the_first_response_and_creates_once);

async fn concurrent_duplicates_create_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let call = new_station(&app, "Raced station");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(app.call(Some(Who::RootAdmin), &call));
    }
    let responses = futures_util::future::join_all(tasks).await;
    let mut created = 0;
    let mut replayed = 0;
    let mut in_flight = 0;
    for response in responses {
        match (
            response.status().as_u16(),
            response.headers().contains_key("idempotency-replayed"),
        ) {
            (201, false) => created += 1,
            (201, true) => replayed += 1,
            (409, _) => {
                expect_problem(response, 409, "idempotency-in-flight").await;
                in_flight += 1;
            }
            (status, _) => panic!("unexpected {status}: {}", response.text().await.unwrap()),
        }
    }
    assert_eq!(created, 1, "replayed {replayed}, in flight {in_flight}");
    assert_eq!(created + replayed + in_flight, 8);
    assert_eq!(stations_named(&app, "Raced station").await, 1);
}

testkit::scenarios!(concurrent_duplicates_create_once);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_keeps_its_key_free_for_the_corrected_retry() {
    let app = spawn_app(Backend::Postgres).await;
    // Below a station nothing may be created: 422, not stored.
    let key = Uuid::new_v4().to_string();
    let mut call = Call::post(
        "/v1/organisations",
        Some(
            json!({"parent_id": app.world.orgs["station-a1"], "kind": "station", "name": "Nested"}),
        ),
    );
    call.idempotency_key = Some(key.clone());
    expect_problem(
        app.call(Some(Who::RootAdmin), &call).await,
        422,
        "validation",
    )
    .await;
    expect_problem(
        app.call(Some(Who::RootAdmin), &call).await,
        422,
        "validation",
    )
    .await;
    // The key is free: the same key with the corrected request goes through.
    let mut fixed = new_station(&app, "Nested");
    fixed.idempotency_key = Some(key);
    assert_eq!(app.call(Some(Who::RootAdmin), &fixed).await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_may_be_used_again() {
    let app = spawn_app_with(
        Backend::Postgres,
        ApiConfig {
            idempotency_ttl: Duration::from_secs(1),
            ..ApiConfig::default()
        },
    )
    .await;
    let call = new_station(&app, "Expiring station");
    assert_eq!(app.call(Some(Who::RootAdmin), &call).await.status(), 201);
    let replay = app.call(Some(Who::RootAdmin), &call).await;
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Expired: the request runs again, and the name is taken now.
    let again = app.call(Some(Who::RootAdmin), &call).await;
    expect_problem(again, 409, "conflict").await;
    let mut other = new_station(&app, "Second expiring station");
    other.idempotency_key = call.idempotency_key.clone();
    assert_eq!(app.call(Some(Who::RootAdmin), &other).await.status(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_an_idempotency_key_is_refused_and_writes_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut call = new_station(&app, "Keyless station");
    call.idempotency_key = None;
    let problem = expect_problem(
        app.call(Some(Who::RootAdmin), &call).await,
        400,
        "idempotency-key-required",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    call.idempotency_key = Some("x".repeat(256));
    expect_problem(
        app.call(Some(Who::RootAdmin), &call).await,
        400,
        "idempotency-key-required",
    )
    .await;
    call.idempotency_key = Some("has space".into());
    expect_problem(
        app.call(Some(Who::RootAdmin), &call).await,
        400,
        "idempotency-key-required",
    )
    .await;
    assert_eq!(stations_named(&app, "Keyless station").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_key_creation_withholds_the_secret_and_names_the_key() {
    let app = spawn_app(Backend::Postgres).await;
    let call = Call::post(
        "/v1/api-keys",
        Some(json!({"organisation_id": app.world.orgs["partner-p"], "name": "retried key"})),
    );
    let first = app.call(Some(Who::PartnerUser), &call).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert!(first["secret"].as_str().unwrap().starts_with("fcs_"));
    let replay = app.call(Some(Who::PartnerUser), &call).await;
    let problem = expect_problem(replay, 409, "idempotency-secret-withheld").await;
    assert_eq!(problem["resource_id"], first["id"]);
}

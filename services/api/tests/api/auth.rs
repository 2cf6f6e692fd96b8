//! Login, logout, expiry, whoami.

use std::time::Duration;

use api::ApiConfig;
use serde_json::{Value, json};
use testkit::Backend;

use crate::common::{Call, PASSWORD, Who, expect_problem, spawn_app, spawn_app_with};

async fn a_user_logs_in_reads_whoami_and_logs_out(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.login("station-owner", PASSWORD).await;
    assert_eq!(response.status(), 200);
    let login: Value = response.json().await.unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fct_"));
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["user"]["role"], "station_owner");
    let whoami = |token: String| {
        let app = &app;
        async move {
            app.client
                .get(app.url("/v1/whoami"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let me: Value = whoami(token.clone()).await.json().await.unwrap();
    assert_eq!(me["subject"], "user");
    assert_eq!(me["username"], "station-owner");
    assert_eq!(
        me["organisation"]["id"],
        app.world.orgs["company-a"].to_string()
    );
    assert_eq!(me["organisation"]["kind"], "station_company");
    let logout = app
        .client
        .post(app.url("/v1/auth/logout"))
        .bearer_auth(&token)
        .header("idempotency-key", "logout-1")
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    expect_problem(whoami(token).await, 401, "invalid-token").await;
    // The token stored is only its digest.
    let stored: Vec<entities::user_sessions::Model> =
        <entities::user_sessions::Entity as sea_orm::EntityTrait>::find()
            .all(&app.state.db)
            .await
            .unwrap();
    assert!(stored.iter().all(|s| !s.token_sha256.starts_with("fct_")));
}

testkit::scenarios!(a_user_logs_in_reads_whoami_and_logs_out);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_user_are_refused_alike() {
    let app = spawn_app(Backend::Postgres).await;
    let wrong = expect_problem(
        app.login("cashier", "not the password").await,
        401,
        "invalid-credentials",
    )
    .await;
    let unknown = expect_problem(
        app.login("nobody-here", PASSWORD).await,
        401,
        "invalid-credentials",
    )
    .await;
    assert_eq!(wrong["detail"], unknown["detail"]);
    // Usernames are not case-sensitive.
    assert_eq!(app.login("CASHIER", PASSWORD).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stops_working_when_it_expires() {
    let app = spawn_app_with(
        Backend::Postgres,
        ApiConfig {
            session_ttl: Duration::from_secs(1),
            ..ApiConfig::default()
        },
    )
    .await;
    let login: Value = app.login("cashier", PASSWORD).await.json().await.unwrap();
    let token = login["token"].as_str().unwrap();
    let me = app
        .client
        .get(app.url("/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let me = app
        .client
        .get(app.url("/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    expect_problem(me, 401, "token-expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_cashier_can_neither_log_in_nor_use_an_open_session() {
    let app = spawn_app(Backend::Postgres).await;
    let login: Value = app.login("cashier", PASSWORD).await.json().await.unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let cashier = app.world.users[&Who::Cashier];
    let response = app
        .call(
            Some(Who::StationManager),
            &Call::post(format!("/v1/users/{cashier}/disable"), None),
        )
        .await;
    assert_eq!(response.status(), 200);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["disabled"], true);
    let me = app
        .client
        .get(app.url("/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    expect_problem(me, 401, "invalid-token").await;
    expect_problem(
        app.login("cashier", PASSWORD).await,
        401,
        "invalid-credentials",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_credentials_or_with_a_made_up_token_are_refused() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .client
        .get(app.url("/v1/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    expect_problem(response, 401, "unauthenticated").await;
    let response = app
        .client
        .get(app.url("/v1/accounts"))
        .bearer_auth("fct_made-up")
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "invalid-token").await;
    let response = app
        .client
        .get(app.url("/v1/accounts"))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .unwrap();
    expect_problem(response, 401, "invalid-token").await;
    let _ = json!({});
}

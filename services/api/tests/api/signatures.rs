//! Partner signatures: valid, forged, body changed, expired timestamp, replayed nonce.

use chrono::Utc;
use serde_json::{Value, json};
use testkit::Backend;

use crate::common::{Signer, TestApp, expect_problem, nonce, signed, spawn_app};

/// Sends `sent_body` signed as if it were `signed_body`, with partner P's key id.
async fn send(
    app: &TestApp,
    (method, path): (&str, &str),
    signed_body: &[u8],
    sent_body: &[u8],
    (secret, timestamp, nonce): (&str, i64, &str),
) -> reqwest::Response {
    let builder = app
        .client
        .request(method.parse().unwrap(), app.url(path))
        .header("content-type", "application/json")
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .body(sent_body.to_vec());
    signed(
        builder,
        method,
        path,
        signed_body,
        &Signer {
            key_id: app.world.key_id,
            secret,
            timestamp,
            nonce,
        },
    )
    .send()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_signs_requests_and_forged_altered_stale_and_replayed_ones_are_refused() {
    let app = spawn_app(Backend::Postgres).await;
    let secret = app.world.key_secret.clone();
    let now = Utc::now().timestamp();

    // Valid: a read with a query string.
    let n = nonce();
    let ok = send(
        &app,
        ("GET", "/v1/accounts?limit=5"),
        b"",
        b"",
        (&secret, now, &n),
    )
    .await;
    assert_eq!(ok.status(), 200);
    let page: Value = ok.json().await.unwrap();
    assert_eq!(
        page["items"][0]["id"],
        app.world.accounts["partner-p"].to_string()
    );

    // Replayed nonce: the same request again, byte for byte.
    let replay = send(
        &app,
        ("GET", "/v1/accounts?limit=5"),
        b"",
        b"",
        (&secret, now, &n),
    )
    .await;
    expect_problem(replay, 401, "nonce-replayed").await;

    // Forged: signed with another secret.
    let forged = send(
        &app,
        ("GET", "/v1/whoami"),
        b"",
        b"",
        ("fcs_not-the-secret", now, &nonce()),
    )
    .await;
    expect_problem(forged, 401, "signature-invalid").await;

    // Body changed after signing (a signed POST; the signature covers the body's digest).
    let body =
        serde_json::to_vec(&json!({"organisation_id": app.world.orgs["partner-p"], "name": "k"}))
            .unwrap();
    let altered =
        serde_json::to_vec(&json!({"organisation_id": app.world.orgs["partner-q"], "name": "k"}))
            .unwrap();
    let changed = send(
        &app,
        ("POST", "/v1/api-keys"),
        &body,
        &altered,
        (&secret, now, &nonce()),
    )
    .await;
    expect_problem(changed, 401, "signature-invalid").await;

    // Query changed after signing.
    let n2 = nonce();
    let builder = app.client.get(app.url("/v1/accounts?limit=6"));
    let response = signed(
        builder,
        "GET",
        "/v1/accounts?limit=5",
        b"",
        &Signer {
            key_id: app.world.key_id,
            secret: &secret,
            timestamp: now,
            nonce: &n2,
        },
    )
    .send()
    .await
    .unwrap();
    expect_problem(response, 401, "signature-invalid").await;

    // Expired: six minutes old, and six minutes ahead.
    for skew in [-360, 360] {
        let stale = send(
            &app,
            ("GET", "/v1/whoami"),
            b"",
            b"",
            (&secret, now + skew, &nonce()),
        )
        .await;
        expect_problem(stale, 401, "signature-expired").await;
    }
    // Within the window: four minutes old.
    let recent = send(
        &app,
        ("GET", "/v1/whoami"),
        b"",
        b"",
        (&secret, now - 240, &nonce()),
    )
    .await;
    assert_eq!(recent.status(), 200);
    let me: Value = recent.json().await.unwrap();
    assert_eq!(me["subject"], "api_key");
    assert_eq!(me["role"], "partner");

    // A nonce that is too short is refused before anything else.
    let short = send(&app, ("GET", "/v1/whoami"), b"", b"", (&secret, now, "abc")).await;
    expect_problem(short, 401, "signature-invalid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_signs_nothing() {
    let app = spawn_app(Backend::Sqlite).await;
    let key = app.world.key_id;
    let response = app
        .call(
            Some(crate::common::Who::PartnerUser),
            &crate::common::Call::post(format!("/v1/api-keys/{key}/revoke"), None),
        )
        .await;
    assert_eq!(response.status(), 200);
    let secret = app.world.key_secret.clone();
    let response = send(
        &app,
        ("GET", "/v1/whoami"),
        b"",
        b"",
        (&secret, Utc::now().timestamp(), &nonce()),
    )
    .await;
    expect_problem(response, 401, "signature-invalid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_created_through_the_api_signs_requests_and_its_secret_is_not_stored_in_clear() {
    let app = spawn_app(Backend::Postgres).await;
    let response = app
        .call(
            Some(crate::common::Who::PartnerUser),
            &crate::common::Call::post(
                "/v1/api-keys",
                Some(
                    json!({"organisation_id": app.world.orgs["partner-p"], "name": "freight app"}),
                ),
            ),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let row = <entities::api_keys::Entity as sea_orm::EntityTrait>::find_by_id(id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert!(!row.secret_ciphertext.contains(&secret[4..]));
    let stored: Vec<entities::api_idempotency::Model> =
        <entities::api_idempotency::Entity as sea_orm::EntityTrait>::find()
            .all(&app.state.db)
            .await
            .unwrap();
    assert!(stored.iter().all(|r| {
        !r.response_body
            .clone()
            .unwrap_or_default()
            .contains(&secret)
    }));
    let builder = app.client.get(app.url("/v1/whoami"));
    let response = signed(
        builder,
        "GET",
        "/v1/whoami",
        b"",
        &Signer {
            key_id: id,
            secret: &secret,
            timestamp: Utc::now().timestamp(),
            nonce: &nonce(),
        },
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
}

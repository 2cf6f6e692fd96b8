//! Bad input: each a precise problem with the right status and type, never a 500.

use serde_json::{Value, json};
use testkit::Backend;

use crate::common::{TestApp, Who, expect_problem, spawn_app, spawn_app_with};

async fn post_raw(
    app: &TestApp,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut builder = app
        .client
        .post(app.url(path))
        .bearer_auth(&app.world.tokens[&Who::RootAdmin])
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .body(body);
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    builder.send().await.unwrap()
}

async fn get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(&app.world.tokens[&Who::RootAdmin])
        .send()
        .await
        .unwrap()
}

async fn bad_bodies_are_precise_problems(backend: Backend) {
    let app = spawn_app_with(
        backend,
        api::ApiConfig {
            max_body_bytes: 4 * 1024,
            ..api::ApiConfig::default()
        },
    )
    .await;
    let parent = app.world.orgs["company-a"];
    let json_type = Some("application/json");

    let p = expect_problem(
        post_raw(
            &app,
            "/v1/organisations",
            json_type,
            b"{\"parent_id\": ".to_vec(),
        )
        .await,
        400,
        "malformed-json",
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("not valid JSON"),
        "{p}"
    );
    expect_problem(
        post_raw(&app, "/v1/organisations", json_type, Vec::new()).await,
        400,
        "malformed-json",
    )
    .await;

    let unknown = json!({"parent_id": parent, "kind": "station", "name": "X", "colour": "red"});
    let p = expect_problem(
        post_raw(
            &app,
            "/v1/organisations",
            json_type,
            unknown.to_string().into_bytes(),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{p}"
    );

    let wrong_type = json!({"parent_id": parent, "kind": "station", "name": 42});
    let p = expect_problem(
        post_raw(
            &app,
            "/v1/organisations",
            json_type,
            wrong_type.to_string().into_bytes(),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "name", "{p}");

    let bad_enum = json!({"parent_id": parent, "kind": "castle", "name": "X"});
    let p = expect_problem(
        post_raw(
            &app,
            "/v1/organisations",
            json_type,
            bad_enum.to_string().into_bytes(),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "kind", "{p}");

    let bad_uuid = json!({"parent_id": "not-a-uuid", "kind": "station", "name": "X"});
    let p = expect_problem(
        post_raw(
            &app,
            "/v1/organisations",
            json_type,
            bad_uuid.to_string().into_bytes(),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "parent_id", "{p}");

    let blank = json!({"parent_id": parent, "kind": "station", "name": "   "});
    let p = expect_problem(
        post_raw(
            &app,
            "/v1/organisations",
            json_type,
            blank.to_string().into_bytes(),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "name", "{p}");

    let user = json!({"organisation_id": app.world.orgs["station-a1"], "username": "A B", "display_name": "", "role": "cashier", "password": "short"});
    let p = expect_problem(
        post_raw(&app, "/v1/users", json_type, user.to_string().into_bytes()).await,
        422,
        "validation",
    )
    .await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["username", "display_name", "password"], "{p}");

    let big = json!({"parent_id": parent, "kind": "station", "name": "x".repeat(8 * 1024)});
    expect_problem(
        post_raw(
            &app,
            "/v1/organisations",
            json_type,
            big.to_string().into_bytes(),
        )
        .await,
        413,
        "payload-too-large",
    )
    .await;

    let ok_body = json!({"parent_id": parent, "kind": "station", "name": "X"})
        .to_string()
        .into_bytes();
    expect_problem(
        post_raw(
            &app,
            "/v1/organisations",
            Some("text/plain"),
            ok_body.clone(),
        )
        .await,
        415,
        "unsupported-media-type",
    )
    .await;
    expect_problem(
        post_raw(&app, "/v1/organisations", None, ok_body.clone()).await,
        415,
        "unsupported-media-type",
    )
    .await;
    // A JSON media type with parameters is fine.
    let response = post_raw(
        &app,
        "/v1/organisations",
        Some("application/json; charset=utf-8"),
        ok_body,
    )
    .await;
    assert_eq!(response.status(), 201);
}

testkit::scenarios!(bad_bodies_are_precise_problems);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_queries_and_cursors_are_precise_problems() {
    let app = spawn_app(Backend::Postgres).await;
    let p = expect_problem(
        get(&app, "/v1/accounts/not-a-uuid").await,
        400,
        "invalid-parameter",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "id", "{p}");
    expect_problem(
        get(&app, "/v1/accounts?cursor=garbage!").await,
        400,
        "invalid-cursor",
    )
    .await;
    // A cursor of another list is not this list's.
    let page: Value = get(&app, "/v1/users?limit=1").await.json().await.unwrap();
    let users_cursor = page["next_cursor"].as_str().unwrap().to_owned();
    expect_problem(
        get(&app, &format!("/v1/accounts?cursor={users_cursor}")).await,
        400,
        "invalid-cursor",
    )
    .await;
    // A statement cursor of one account is not another's.
    let a1 = app.world.accounts["station-a1"];
    let root = app.world.accounts["root"];
    let page: Value = get(&app, &format!("/v1/accounts/{root}/statement?limit=1"))
        .await
        .json()
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    expect_problem(
        get(
            &app,
            &format!("/v1/accounts/{a1}/statement?cursor={cursor}"),
        )
        .await,
        400,
        "invalid-cursor",
    )
    .await;
    for limit in ["0", "201", "-1", "many"] {
        expect_problem(
            get(&app, &format!("/v1/accounts?limit={limit}")).await,
            400,
            "invalid-parameter",
        )
        .await;
    }
    expect_problem(
        get(&app, "/v1/accounts?colour=red").await,
        400,
        "invalid-parameter",
    )
    .await;
    expect_problem(
        get(&app, &format!("/v1/accounts/{a1}/balance?as_of=yesterday")).await,
        400,
        "invalid-parameter",
    )
    .await;
    expect_problem(
        get(&app, "/v1/workflow-instances?status=sleeping").await,
        400,
        "invalid-parameter",
    )
    .await;
    expect_problem(get(&app, "/v1/no-such-thing").await, 404, "not-found").await;
    let delete = app
        .client
        .delete(app.url("/v1/accounts"))
        .bearer_auth(&app.world.tokens[&Who::RootAdmin])
        .send()
        .await
        .unwrap();
    expect_problem(delete, 405, "method-not-allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_request_id_is_kept_and_a_forged_one_is_replaced() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "client-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-42");
    let response = app
        .client
        .get(app.url("/v1/nope"))
        .header("x-request-id", "bad id\tinjected")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "bad id\tinjected");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["instance"], id.as_str());
}

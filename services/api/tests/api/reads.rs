//! Reading: pages, balances, statements, workflow instances, health and metrics.

use std::collections::HashSet;

use serde_json::Value;
use testkit::Backend;

use crate::common::{Call, Who, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_users_follow_each_other_without_gaps_or_repeats() {
    let app = spawn_app(Backend::Postgres).await;
    for _ in 0..7 {
        crate::common::create_user(
            &app.state,
            app.world.orgs["station-a1"],
            api::policy::Role::Cashier,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/users?limit=4".to_owned(),
            Some(c) => format!("/v1/users?limit=4&cursor={c}"),
        };
        let page: Value = app
            .call(Some(Who::StationOwner), &Call::get(path))
            .await
            .json()
            .await
            .unwrap();
        pages += 1;
        for user in page["items"].as_array().unwrap() {
            seen.push(user["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // The station owner's subtree: themselves, the station manager, the cashier, 7 more.
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 10);
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "pages come in id order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_reads_its_balance_and_statement_as_decimal_strings() {
    let app = spawn_app(Backend::Sqlite).await;
    let account = app.world.accounts["station-a1"];
    let view: Value = app
        .call(
            Some(Who::Cashier),
            &Call::get(format!("/v1/accounts/{account}")),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        view["organisation_id"],
        app.world.orgs["station-a1"].to_string()
    );
    assert_eq!(view["balance"]["posted"], "100.25");
    assert_eq!(view["balance"]["currency"], "CNY");
    let balance: Value = app
        .call(
            Some(Who::Cashier),
            &Call::get(format!("/v1/accounts/{account}/balance")),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(balance["available"], "100.25");
    let before: Value = app
        .call(
            Some(Who::Cashier),
            &Call::get(format!(
                "/v1/accounts/{account}/balance?as_of=2000-01-01T00:00:00Z"
            )),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(before["posted"], "0.00");
    let statement: Value = app
        .call(
            Some(Who::Cashier),
            &Call::get(format!("/v1/accounts/{account}/statement")),
        )
        .await
        .json()
        .await
        .unwrap();
    let lines = statement["items"].as_array().unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["amount"], "100.25");
    assert_eq!(lines[0]["running_balance"], "100.25");
    assert_eq!(lines[0]["side"], "debit");
    assert!(statement["next_cursor"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_pages_by_cursor_with_running_balances() {
    let app = spawn_app(Backend::Postgres).await;
    let root = app.world.accounts["root"];
    let mut lines = Vec::new();
    let mut cursor = None::<String>;
    loop {
        let path = match &cursor {
            None => format!("/v1/accounts/{root}/statement?limit=1"),
            Some(c) => format!("/v1/accounts/{root}/statement?limit=1&cursor={c}"),
        };
        let page: Value = app
            .call(Some(Who::TreasuryChecker), &Call::get(path))
            .await
            .json()
            .await
            .unwrap();
        lines.extend(page["items"].as_array().unwrap().clone());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let running: Vec<&str> = lines
        .iter()
        .map(|l| l["running_balance"].as_str().unwrap())
        .collect();
    assert_eq!(running, ["-100.25", "-200.50"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_admin_reads_workflow_instances_and_their_history() {
    let app = spawn_app(Backend::Postgres).await;
    let page: Value = app
        .call(
            Some(Who::RootAdmin),
            &Call::get("/v1/workflow-instances?workflow_type=canary&status=running"),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"][0]["id"], app.world.instance.to_string());
    let instance = app.world.instance;
    let one: Value = app
        .call(
            Some(Who::RootAdmin),
            &Call::get(format!("/v1/workflow-instances/{instance}")),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["workflow_type"], "canary");
    let history: Value = app
        .call(
            Some(Who::RootAdmin),
            &Call::get(format!("/v1/workflow-instances/{instance}/history")),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(history["items"][0]["kind"], "started");
    let missing = uuid::Uuid::now_v7();
    let response = app
        .call(
            Some(Who::RootAdmin),
            &Call::get(format!("/v1/workflow-instances/{missing}")),
        )
        .await;
    crate::common::expect_problem(response, 404, "not-found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_tell_the_truth() {
    let app = spawn_app(Backend::Postgres).await;
    let health: Value = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["database"], "ok");
    let _ = app
        .call(Some(Who::Cashier), &Call::get("/v1/accounts"))
        .await;
    let _ = app.call(None, &Call::get("/v1/accounts")).await;
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(
            r#"forecourt_http_requests_total{method="GET",route="/v1/accounts",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"forecourt_http_requests_total{method="GET",route="/v1/accounts",status="401"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"forecourt_http_request_duration_seconds_count{method="GET",route="/v1/accounts"} 2"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"forecourt_workflow_instances{workflow_type="canary",status="running"} 1"#),
        "{text}"
    );
    // The started canary's first step waits in the outbox (no workers run here).
    assert!(
        text.contains(r#"forecourt_outbox_undelivered{due="true"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_the_broker_cannot_be_reached() {
    let mut app = spawn_app(Backend::Sqlite).await;
    // Nothing listens on port 1.
    app.state = app
        .state
        .clone()
        .with_broker("amqp://guest:guest@127.0.0.1:1/%2f");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state = app.state.clone();
    let server =
        tokio::spawn(async move { api::serve(listener, state, std::future::pending()).await });
    let response = app
        .client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    let problem = crate::common::expect_problem(response, 503, "unavailable").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("broker"),
        "{problem}"
    );
    server.abort();
}

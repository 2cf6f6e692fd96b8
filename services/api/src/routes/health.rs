use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::error::responses::*;
use crate::error::{ApiError, ProblemKind};
use crate::state::AppState;

/// Longest a readiness check waits for one dependency.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// The process is up.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Health {
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = Health)),
    security(())
)]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
    })
}

/// Every dependency answered.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "ready", "checks": {"database": "ok", "broker": "not configured"}}))]
pub struct Readiness {
    pub status: String,
    /// Each dependency and what its check found.
    pub checks: BTreeMap<String, String>,
}

/// Readiness: the database answers, and RabbitMQ when the process is configured with one.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, response = Unavailable),
    ),
    security(())
)]
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Readiness>, ApiError> {
    let mut checks = BTreeMap::new();
    let mut failed = Vec::new();
    let database =
        tokio::time::timeout(CHECK_TIMEOUT, state.db.execute_unprepared("SELECT 1")).await;
    match database {
        Ok(Ok(_)) => {
            checks.insert("database".to_owned(), "ok".to_owned());
        }
        Ok(Err(err)) => failed.push(format!("database: {err}")),
        Err(_) => failed.push(format!("database: no answer within {CHECK_TIMEOUT:?}")),
    }
    match &state.broker {
        None => {
            checks.insert("broker".to_owned(), "not configured".to_owned());
        }
        Some(broker) => match tokio::time::timeout(CHECK_TIMEOUT, broker.check()).await {
            Ok(Ok(())) => {
                checks.insert("broker".to_owned(), "ok".to_owned());
            }
            Ok(Err(err)) => failed.push(format!("broker: {err:#}")),
            Err(_) => failed.push(format!("broker: no answer within {CHECK_TIMEOUT:?}")),
        },
    }
    if !failed.is_empty() {
        tracing::warn!(failed = ?failed, "not ready");
        return Err(ApiError::new(ProblemKind::Unavailable, failed.join("; ")));
    }
    Ok(axum::Json(Readiness {
        status: "ready".into(),
        checks,
    }))
}

/// Prometheus metrics (text format 0.0.4): HTTP request counts and latencies per route and
/// status, workflow instances by status, undelivered outbox messages. Expose it to the
/// monitoring network only.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Metrics", content_type = "text/plain; version=0.0.4", body = String),
        (status = 500, response = Internal),
    ),
    security(())
)]
async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = crate::metrics::render(&state.metrics, &state.db).await?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}

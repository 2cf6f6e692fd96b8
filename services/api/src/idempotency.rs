//! `Idempotency-Key` on every POST: a retried request returns the first one's response
//! instead of doing the work twice.
//!
//! A key belongs to a scope, the caller's organisation. Before the handler runs, the
//! middleware claims `(scope, key)` by inserting a row (the primary key decides between
//! concurrent requests, on PostgreSQL and SQLite alike: nothing is read first). Then:
//! - the row was new: the request runs. A handler that changes something records its response
//!   in the same transaction as its change ([`IdempotencyClaim::commit`]), so the change and
//!   the stored response commit together or not at all. Any other outcome (a refusal, an
//!   error, a panic, a timeout) releases the claim, and the key may be retried;
//! - the row exists, for the same caller, method, path, query and body (its fingerprint): a
//!   completed request's response is returned again with `Idempotency-Replayed: true`; one
//!   still running answers 409 `idempotency-in-flight`;
//! - the row exists with another fingerprint: 422 `idempotency-key-reused`.
//!
//! A route idempotent by a key of its own request ([`OWN_KEY_ROUTES`]: a till's payment, by
//! the terminal's order number) checks the header but takes no claim.
//!
//! Keys expire after [`crate::ApiConfig::idempotency_ttl`]; an expired key is free again. A
//! claim left by a process that died is taken over once its lock (the request timeout plus a
//! margin) has passed. A response that carried a secret shown once (a new API key's) is
//! stored without it; its replay answers 409 `idempotency-secret-withheld` and names the key.

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter,
};
use serde::Serialize;

use entities::api_idempotency::{self, Column};

use crate::crypto::sha256_hex;
use crate::directory::now;
use crate::error::{ApiError, ProblemKind};
use crate::extract::read_body;
use crate::policy::Caller;
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
/// Set on a response that is a stored one, returned again.
pub const REPLAYED_HEADER: &str = "idempotency-replayed";
/// Longest key.
pub const MAX_KEY_LEN: usize = 255;

/// A claimed key, handed to the handler in the request's extensions.
#[derive(Clone, Debug)]
pub struct IdempotencyClaim {
    scope: String,
    key: String,
    fingerprint: String,
}

/// Marks a response whose handler recorded it with its change.
#[derive(Clone, Copy, Debug)]
struct Recorded;

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyClaim {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<IdempotencyClaim>()
            .cloned()
            .ok_or_else(|| {
                ApiError::internal(anyhow::anyhow!(
                    "a writing route is not behind the idempotency middleware"
                ))
            })
    }
}

impl IdempotencyClaim {
    /// The key the client sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Stores the response in `txn` beside the handler's change, commits, and returns the
    /// response. `secret_field` names a top-level field shown once and never stored.
    pub async fn commit<T: Serialize>(
        &self,
        txn: DatabaseTransaction,
        status: StatusCode,
        body: Option<&T>,
        location: Option<String>,
        secret_field: Option<&str>,
    ) -> Result<Response, ApiError> {
        let body = body
            .map(serde_json::to_value)
            .transpose()
            .map_err(ApiError::internal)?;
        let mut stored_body = body.clone();
        if let (Some(field), Some(serde_json::Value::Object(map))) =
            (secret_field, stored_body.as_mut())
        {
            map.remove(field);
        }
        let mut headers = serde_json::Map::new();
        if body.is_some() {
            headers.insert("content-type".into(), "application/json".into());
        }
        if let Some(location) = &location {
            headers.insert("location".into(), location.clone().into());
        }
        let updated = api_idempotency::Entity::update_many()
            .set(api_idempotency::ActiveModel {
                state: Set("completed".into()),
                response_status: Set(Some(i32::from(status.as_u16()))),
                response_headers: Set(Some(serde_json::Value::Object(headers))),
                response_body: Set(stored_body.map(|b| b.to_string())),
                secret_withheld: Set(secret_field.is_some()),
                ..Default::default()
            })
            .filter(Column::Scope.eq(&self.scope))
            .filter(Column::Key.eq(&self.key))
            .filter(Column::State.eq("in_flight"))
            .filter(Column::Fingerprint.eq(&self.fingerprint))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            // Our lock ran out and another request took the key over: our change must not
            // commit beside theirs.
            txn.rollback().await?;
            return Err(ApiError::new(
                ProblemKind::IdempotencyInFlight,
                "the claim on this Idempotency-Key was taken over by a retry; wait for it",
            ));
        }
        txn.commit().await?;
        let mut response = match body {
            Some(body) => (status, axum::Json(body)).into_response(),
            None => status.into_response(),
        };
        if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            response.headers_mut().insert(LOCATION, location);
        }
        response.extensions_mut().insert(Recorded);
        Ok(response)
    }
}

/// Deletes a claim that did not complete, also when the request's future is dropped (a
/// timeout, a client gone): the key is then free for a retry.
struct ClaimGuard {
    db: DatabaseConnection,
    scope: String,
    key: String,
    armed: bool,
}

async fn delete_in_flight(db: &DatabaseConnection, scope: &str, key: &str) {
    let result = api_idempotency::Entity::delete_many()
        .filter(Column::Scope.eq(scope))
        .filter(Column::Key.eq(key))
        .filter(Column::State.eq("in_flight"))
        .exec(db)
        .await;
    if let Err(err) = result {
        tracing::warn!(error = %err, "could not release an idempotency claim; its lock will run out");
    }
}

impl ClaimGuard {
    async fn release(mut self) {
        self.armed = false;
        delete_in_flight(&self.db, &self.scope, &self.key).await;
    }

    fn keep(mut self) {
        self.armed = false;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.armed
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (db, scope, key) = (self.db.clone(), self.scope.clone(), self.key.clone());
            runtime.spawn(async move { delete_in_flight(&db, &scope, &key).await });
        }
    }
}

enum Claim {
    Acquired,
    Completed(api_idempotency::Model),
    InFlight,
    Reused,
}

/// Claims `(scope, key)` for `fingerprint`, inserting first.
async fn claim(
    state: &AppState,
    claim: &IdempotencyClaim,
    now: DateTime<Utc>,
) -> Result<Claim, ApiError> {
    let ttl =
        chrono::Duration::from_std(state.config.idempotency_ttl).map_err(ApiError::internal)?;
    let lock = chrono::Duration::from_std(state.config.request_timeout)
        .map_err(ApiError::internal)?
        + chrono::Duration::seconds(30);
    // Two rounds at most: the second follows the removal of an expired row.
    for _ in 0..2 {
        let inserted = api_idempotency::Entity::insert(api_idempotency::ActiveModel {
            scope: Set(claim.scope.clone()),
            key: Set(claim.key.clone()),
            fingerprint: Set(claim.fingerprint.clone()),
            state: Set("in_flight".into()),
            locked_until: Set(now + lock),
            response_status: Set(None),
            response_headers: Set(None),
            response_body: Set(None),
            secret_withheld: Set(false),
            created_at: Set(now),
            expires_at: Set(now + ttl),
        })
        .on_conflict(
            OnConflict::columns([Column::Scope, Column::Key])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&state.db)
        .await?;
        if inserted == 1 {
            return Ok(Claim::Acquired);
        }
        let Some(existing) =
            api_idempotency::Entity::find_by_id((claim.scope.clone(), claim.key.clone()))
                .one(&state.db)
                .await?
        else {
            continue; // released between our insert and our read
        };
        if existing.expires_at <= now {
            api_idempotency::Entity::delete_many()
                .filter(Column::Scope.eq(&claim.scope))
                .filter(Column::Key.eq(&claim.key))
                .filter(Column::ExpiresAt.lte(now))
                .exec(&state.db)
                .await?;
            continue;
        }
        if existing.fingerprint != claim.fingerprint {
            return Ok(Claim::Reused);
        }
        if existing.state == "completed" {
            return Ok(Claim::Completed(existing));
        }
        if existing.locked_until > now {
            return Ok(Claim::InFlight);
        }
        // A claim whose process died: take it over, if nobody else just did.
        let taken = api_idempotency::Entity::update_many()
            .set(api_idempotency::ActiveModel {
                locked_until: Set(now + lock),
                ..Default::default()
            })
            .filter(Column::Scope.eq(&claim.scope))
            .filter(Column::Key.eq(&claim.key))
            .filter(Column::State.eq("in_flight"))
            .filter(Column::LockedUntil.lte(now))
            .exec(&state.db)
            .await?;
        return Ok(if taken.rows_affected == 1 {
            Claim::Acquired
        } else {
            Claim::InFlight
        });
    }
    Ok(Claim::InFlight)
}

/// Rebuilds a stored response.
fn replay(record: &api_idempotency::Model) -> Result<Response, ApiError> {
    let status = record
        .response_status
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("stored response has no status")))?;
    if record.secret_withheld {
        let id = record
            .response_body
            .as_deref()
            .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
            .and_then(|b| b.get("id").and_then(|id| id.as_str()).map(str::to_owned))
            .and_then(|id| id.parse().ok());
        let mut err = ApiError::new(
            ProblemKind::IdempotencySecretWithheld,
            "the request succeeded, but its response carried a secret that is shown once and never stored: revoke the key named in resource_id and create another",
        );
        if let Some(id) = id {
            err = err.with_resource(id);
        }
        return Err(err);
    }
    let mut response = Response::new(Body::from(record.response_body.clone().unwrap_or_default()));
    *response.status_mut() = status;
    if let Some(serde_json::Value::Object(headers)) = &record.response_headers {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                axum::http::HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    if record.response_body.is_some() && !response.headers().contains_key(CONTENT_TYPE) {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    response
        .headers_mut()
        .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    Ok(response)
}

fn parse_key(req: &Request) -> Result<String, ApiError> {
    let required = |detail: &str| ApiError::new(ProblemKind::IdempotencyKeyRequired, detail);
    let value = req.headers().get(HEADER).ok_or_else(|| {
        required("every POST needs an Idempotency-Key header: a new random value (a UUID) per operation, the same on its retries")
    })?;
    let key = value
        .to_str()
        .map_err(|_| required("the Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(required(
            "the Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

/// The middleware of writing routes; other methods pass through.
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    match run(&state, req, next).await {
        Ok(response) | Err(response) => response,
    }
}

/// Routes idempotent by a key of their own request, which they keep in the same transaction
/// as their change: a till's payment by the terminal's order number (a retry answers the
/// payment as it stands, 200, and concurrent duplicates meet on the order number's unique
/// index). The header is still required and checked, but not claimed: a claim would only be
/// released again after the response (such a handler records no response with it) and cost
/// two commits on the till's busiest request.
const OWN_KEY_ROUTES: &[&str] = &["/v1/terminals/{terminal_id}/payments"];

fn has_own_key(req: &Request) -> bool {
    req.extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| OWN_KEY_ROUTES.contains(&path.as_str()))
}

async fn run(state: &AppState, req: Request, next: Next) -> Result<Response, Response> {
    let key = parse_key(&req).map_err(IntoResponse::into_response)?;
    if has_own_key(&req) {
        return Ok(next.run(req).await);
    }
    let caller = req.extensions().get::<Caller>().cloned();
    let (scope, subject) = match &caller {
        Some(caller) => (caller.org.id.to_string(), caller.subject_id().to_string()),
        None => ("public".to_owned(), "anonymous".to_owned()),
    };
    let (parts, body) = req.into_parts();
    let bytes = read_body(body).await.map_err(IntoResponse::into_response)?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let fingerprint = sha256_hex(
        format!(
            "{subject}\n{}\n{path_and_query}\n{}",
            parts.method,
            sha256_hex(&bytes)
        )
        .as_bytes(),
    );
    let claimed = IdempotencyClaim {
        scope: scope.clone(),
        key: key.clone(),
        fingerprint,
    };
    let outcome = claim(state, &claimed, now())
        .await
        .map_err(IntoResponse::into_response)?;
    match outcome {
        Claim::Completed(record) => replay(&record).map_err(IntoResponse::into_response),
        Claim::InFlight => Err(ApiError::new(
            ProblemKind::IdempotencyInFlight,
            "a request with this Idempotency-Key is still running: retry after it finished",
        )
        .into_response()),
        Claim::Reused => Err(ApiError::new(
            ProblemKind::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different request (caller, method, path, query or body): use a new key per operation",
        )
        .into_response()),
        Claim::Acquired => {
            let guard = ClaimGuard {
                db: state.db.clone(),
                scope,
                key,
                armed: true,
            };
            let mut req = Request::from_parts(parts, Body::from(bytes));
            req.extensions_mut().insert(claimed);
            let response = next.run(req).await;
            if response.extensions().get::<Recorded>().is_some() {
                guard.keep();
            } else {
                guard.release().await;
            }
            Ok(response)
        }
    }
}

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use entities::{organisations, user_sessions, users};

use crate::auth::open_session;
use crate::crypto::{dummy_password_hash, verify_password};
use crate::directory::{Organisation, User, now};
use crate::error::responses::*;
use crate::error::{ApiError, FieldError, ProblemKind};
use crate::extract::{Json, Validate};
use crate::idempotency::IdempotencyClaim;
use crate::policy::{Caller, Role, Subject};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login))
}

/// Routes that need a caller.
pub fn protected_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(logout))
        .routes(routes!(whoami))
}

/// Credentials.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"username": "station-owner", "password": "correct horse battery staple"}))]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Validate for LoginRequest {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.username.is_empty() || self.username.len() > 64 {
            errors.push(FieldError::new("username", "must be 1 to 64 characters"));
        }
        if self.password.is_empty() || self.password.len() > 1024 {
            errors.push(FieldError::new("password", "must be 1 to 1024 bytes"));
        }
        errors
    }
}

/// A new session. The token is shown only here.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "token": "fct_Wm9yZWNvdXJ0IGV4YW1wbGUgdG9rZW4gb25seSEhIQ",
    "token_type": "Bearer",
    "expires_at": "2026-11-22T08:30:00Z",
    "user": {
        "id": "0193a5c2-8a00-7000-8000-0000000000aa",
        "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
        "username": "station-owner",
        "display_name": "Station owner (demo)",
        "role": "station_owner",
        "disabled": false,
        "created_at": "2026-11-22T08:00:00Z"
    }
}))]
pub struct LoginResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// Always `Bearer`.
    pub token_type: String,
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

/// Log in with a username and password; returns a short-lived bearer token.
///
/// Login takes no `Idempotency-Key`, unlike every other POST: it changes nothing a retry
/// could duplicate (a retry opens another session, and the first one expires unused), and
/// storing its request for replay would mean storing a digest of the password and the token.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(())
)]
#[tracing::instrument(skip_all, fields(username = %body.username))]
async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginRequest>,
) -> Result<axum::Json<LoginResponse>, ApiError> {
    let username = body.username.trim().to_ascii_lowercase();
    let user = users::Entity::find()
        .filter(users::Column::Username.eq(&username))
        .one(&state.db)
        .await?;
    let phc = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_password_hash().to_owned());
    let password = body.password.clone();
    let matches = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .map_err(ApiError::internal)?;
    let user = match user {
        Some(user) if matches && user.disabled_at.is_none() => user,
        _ => {
            return Err(ApiError::new(
                ProblemKind::InvalidCredentials,
                "the username or the password is wrong, or the user is disabled",
            ));
        }
    };
    let session = open_session(&state.db, user.id, state.config.session_ttl).await?;
    tracing::info!(user = %user.id, "logged in");
    Ok(axum::Json(LoginResponse {
        token: session.token,
        token_type: "Bearer".into(),
        expires_at: session.expires_at,
        user: user.try_into()?,
    }))
}

/// End the session of the bearer token: the token stops working at once.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    responses(
        (status = 204, description = "Logged out; the token no longer works"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn logout(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
) -> Result<Response, ApiError> {
    let Subject::User { session_id, .. } = caller.subject else {
        return Err(ApiError::forbidden(
            "a signed partner request has no session to end",
        ));
    };
    let txn = entities::db::begin_write(&state.db).await?;
    user_sessions::Entity::update_many()
        .set(user_sessions::ActiveModel {
            revoked_at: Set(Some(now())),
            ..Default::default()
        })
        .filter(user_sessions::Column::Id.eq(session_id))
        .filter(user_sessions::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    claim
        .commit::<()>(txn, StatusCode::NO_CONTENT, None, None, None)
        .await
}

/// Who the caller is.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "subject": "user",
    "id": "0193a5c2-8a00-7000-8000-0000000000aa",
    "username": "station-owner",
    "role": "station_owner",
    "organisation": {
        "id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
        "parent_id": "0193a5c2-6b00-7000-8000-000000000001",
        "kind": "station_company",
        "name": "Huaxin Energy",
        "ledger_owner": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
        "created_at": "2026-11-22T08:00:00Z"
    }
}))]
pub struct Whoami {
    /// `user` (bearer token) or `api_key` (partner signature).
    pub subject: String,
    /// The user's or the API key's id.
    pub id: Uuid,
    /// The user's login name; absent for an API key.
    pub username: Option<String>,
    pub role: Role,
    /// The organisation the caller acts for; it acts within its subtree.
    pub organisation: Organisation,
}

/// Who the caller is: user or API key, role and organisation.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "auth",
    responses(
        (status = 200, description = "The caller", body = Whoami),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all)]
async fn whoami(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Whoami>, ApiError> {
    let org = organisations::Entity::find_by_id(caller.org.id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("caller's organisation vanished")))?;
    let (subject, username) = match &caller.subject {
        Subject::User { username, .. } => ("user", Some(username.clone())),
        Subject::ApiKey { .. } => ("api_key", None),
    };
    Ok(axum::Json(Whoami {
        subject: subject.into(),
        id: caller.subject_id(),
        username,
        role: caller.role,
        organisation: org.try_into()?,
    }))
}

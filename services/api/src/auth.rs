//! Authentication: bearer tokens from login, or partner signatures ([`crate::signature`]).
//!
//! [`authenticate`] runs before every protected route and puts the [`Caller`] into the
//! request; handlers take it with the [`Caller`] extractor. Tokens are random, shown once at
//! login and stored as SHA-256 digests; a token stops working when it expires, at logout, or
//! when its user is disabled.

use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use entities::{user_sessions, users};

use crate::crypto::{random_secret, sha256_hex};
use crate::directory::{find_org, now};
use crate::error::{ApiError, ProblemKind};
use crate::extract::read_body;
use crate::policy::{Caller, Subject};
use crate::signature;
use crate::state::AppState;

/// Prefix of bearer tokens, so that a leaked one is easy to recognise (and to scan for).
pub const TOKEN_PREFIX: &str = "fct_";

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                ProblemKind::Unauthenticated,
                "send Authorization: Bearer <token> from /v1/auth/login, or a partner signature",
            )
        })
    }
}

/// The middleware of protected routes.
pub async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match identify(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(err) => err.into_response(),
    }
}

async fn identify(state: &AppState, mut req: Request) -> Result<Request, ApiError> {
    if let Some(value) = req.headers().get(AUTHORIZATION) {
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .ok_or_else(|| {
                ApiError::new(
                    ProblemKind::InvalidToken,
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        let caller = session_caller(state, token, now()).await?;
        req.extensions_mut().insert(caller);
        return Ok(req);
    }
    if req.headers().contains_key(signature::HEADER_KEY) {
        let (parts, body) = req.into_parts();
        let bytes = read_body(body).await?;
        let caller = signature::verify(state, &parts, &bytes, Utc::now()).await?;
        let mut req = Request::from_parts(parts, Body::from(bytes));
        req.extensions_mut().insert(caller);
        return Ok(req);
    }
    Err(ApiError::new(
        ProblemKind::Unauthenticated,
        "send Authorization: Bearer <token> from /v1/auth/login, or a partner signature",
    ))
}

/// The caller a bearer token stands for.
async fn session_caller(
    state: &AppState,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Caller, ApiError> {
    let invalid = || {
        ApiError::new(
            ProblemKind::InvalidToken,
            "the token is unknown or was revoked: log in again",
        )
    };
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Err(invalid());
    }
    let session = user_sessions::Entity::find()
        .filter(user_sessions::Column::TokenSha256.eq(sha256_hex(token.as_bytes())))
        .one(&state.db)
        .await?
        .filter(|s| s.revoked_at.is_none())
        .ok_or_else(invalid)?;
    if session.expires_at <= now {
        return Err(ApiError::new(
            ProblemKind::TokenExpired,
            format!("the token expired at {}: log in again", session.expires_at),
        ));
    }
    let user = users::Entity::find_by_id(session.user_id)
        .one(&state.db)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or_else(invalid)?;
    let org = find_org(&state.db, user.organisation_id)
        .await?
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("user {} has no organisation", user.id))
        })?;
    Ok(Caller {
        subject: Subject::User {
            id: user.id,
            username: user.username,
            session_id: session.id,
        },
        role: user
            .role
            .parse()
            .map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))?,
        org,
    })
}

/// A new session: the token (shown once) and when it expires.
pub struct NewSession {
    pub id: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Opens a session for a user whose password was checked.
pub async fn open_session(
    db: &impl ConnectionTrait,
    user_id: Uuid,
    ttl: std::time::Duration,
) -> Result<NewSession, ApiError> {
    let token = random_secret(TOKEN_PREFIX);
    let created_at = now();
    let expires_at = created_at + chrono::Duration::from_std(ttl).map_err(ApiError::internal)?;
    let id = Uuid::now_v7();
    user_sessions::Entity::insert(user_sessions::ActiveModel {
        id: Set(id),
        user_id: Set(user_id),
        token_sha256: Set(sha256_hex(token.as_bytes())),
        created_at: Set(created_at),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(NewSession {
        id,
        token,
        expires_at,
    })
}

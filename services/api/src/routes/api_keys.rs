use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use entities::{api_keys, organisations};

use crate::crypto::random_secret;
use crate::directory::{self, check_name, now};
use crate::error::responses::*;
use crate::error::{ApiError, FieldError};
use crate::extract::{Json, Path, Query, Validate};
use crate::idempotency::IdempotencyClaim;
use crate::page;
use crate::policy::{Action, Caller, OrgKind, Subject, authorize};
use crate::routes::subtree;
use crate::state::AppState;

/// Prefix of API key secrets.
pub const SECRET_PREFIX: &str = "fcs_";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
}

/// A partner's API key (never its secret).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-9b00-7000-8000-0000000000b1",
    "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4f0",
    "name": "freight app production",
    "created_by": "0193a5c2-8a00-7000-8000-0000000000aa",
    "created_at": "2026-11-22T08:00:00Z",
    "revoked_at": null
}))]
pub struct ApiKey {
    /// Send as `X-Api-Key`.
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub name: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// When the key stopped working; absent while it works.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<api_keys::Model> for ApiKey {
    fn from(m: api_keys::Model) -> Self {
        ApiKey {
            id: m.id,
            organisation_id: m.organisation_id,
            name: m.name,
            created_by: m.created_by,
            created_at: m.created_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// A new API key with its secret, shown only in this response.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-9b00-7000-8000-0000000000b1",
    "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4f0",
    "name": "freight app production",
    "secret": "fcs_ZXhhbXBsZSBzZWNyZXQgLSBuZXZlciB1c2UgbWUhISE",
    "created_at": "2026-11-22T08:00:00Z"
}))]
pub struct CreatedApiKey {
    /// Send as `X-Api-Key`.
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub name: String,
    /// The signing secret: HMAC-SHA256 key for `X-Signature`. Shown once; store it now.
    pub secret: String,
    pub created_at: DateTime<Utc>,
}

crate::page_type!(ApiKeyPage, ApiKey, "API keys");

/// Which page of the API keys of the caller's subtree.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListApiKeys {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
}

/// The API keys of the caller's organisation subtree, in order of creation.
#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "api-keys",
    params(ListApiKeys),
    responses(
        (status = 200, description = "A page of API keys", body = ApiKeyPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListApiKeys>,
) -> Result<axum::Json<ApiKeyPage>, ApiError> {
    authorize(&caller, Action::ReadApiKeys, &caller.org, "organisation")?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("api-keys", q.cursor.as_deref())?;
    let mut select = api_keys::Entity::find()
        .filter(
            api_keys::Column::OrganisationId
                .in_subquery(subtree(organisations::Column::Id, &caller.org.path)),
        )
        .order_by_asc(api_keys::Column::Id)
        .limit(limit + 1);
    if let Some(after) = after {
        select = select.filter(api_keys::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "api-keys", |k| k.id.to_string());
    Ok(axum::Json(ApiKeyPage {
        items: rows.into_iter().map(ApiKey::from).collect(),
        next_cursor,
    }))
}

/// A new API key for a partner organisation.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4f0",
    "name": "freight app production"
}))]
pub struct CreateApiKey {
    /// A partner organisation in the caller's subtree.
    pub organisation_id: Uuid,
    /// What the key is for, 1 to 200 characters.
    pub name: String,
}

impl Validate for CreateApiKey {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name("name", &self.name, &mut errors);
        errors
    }
}

/// Create an API key for a partner organisation. The secret is in this response only; a
/// replay of the request answers 409 `idempotency-secret-withheld` instead of showing it
/// again.
#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "api-keys",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "Created; the secret is shown only here", body = CreatedApiKey,
            headers(("Location" = String, description = "The new key's URL"))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(organisation = %body.organisation_id))]
async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Json(body): Json<CreateApiKey>,
) -> Result<Response, ApiError> {
    let org = directory::find_org(&state.db, body.organisation_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    authorize(&caller, Action::ManageApiKeys, &org, "organisation")?;
    if org.kind != OrgKind::Partner {
        return Err(ApiError::validation(vec![FieldError::new(
            "organisation_id",
            format!(
                "API keys are for partner organisations; this one is a {}",
                org.kind
            ),
        )]));
    }
    let id = Uuid::now_v7();
    let secret = random_secret(SECRET_PREFIX);
    let ciphertext = state
        .keys
        .encrypt(&secret, id.as_bytes())
        .map_err(ApiError::internal)?;
    let created_by = match &caller.subject {
        Subject::User { id, .. } => Some(*id),
        Subject::ApiKey { .. } => None,
    };
    let created_at = now();
    let txn = entities::db::begin_write(&state.db).await?;
    api_keys::Entity::insert(api_keys::ActiveModel {
        id: Set(id),
        organisation_id: Set(org.id),
        name: Set(body.name.trim().to_owned()),
        secret_ciphertext: Set(ciphertext),
        encryption_key_id: Set(state.keys.id().to_owned()),
        created_by: Set(created_by),
        created_at: Set(created_at),
        revoked_at: Set(None),
    })
    .exec_without_returning(&txn)
    .await?;
    tracing::info!(api_key = %id, "API key created");
    let created = CreatedApiKey {
        id,
        organisation_id: org.id,
        name: body.name.trim().to_owned(),
        secret,
        created_at,
    };
    claim
        .commit(
            txn,
            StatusCode::CREATED,
            Some(&created),
            Some(format!("/v1/api-keys/{id}")),
            Some("secret"),
        )
        .await
}

/// Revoke an API key: requests signed with it are refused from now on.
#[utoipa::path(
    post,
    path = "/v1/api-keys/{id}/revoke",
    tag = "api-keys",
    params(
        ("id" = Uuid, Path, description = "API key id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    responses(
        (status = 200, description = "The revoked key", body = ApiKey),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(api_key = %id))]
async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let key = api_keys::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    let org = directory::find_org(&state.db, key.organisation_id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    authorize(&caller, Action::ManageApiKeys, &org, "API key")?;
    let txn = entities::db::begin_write(&state.db).await?;
    api_keys::Entity::update_many()
        .set(api_keys::ActiveModel {
            revoked_at: Set(Some(now())),
            ..Default::default()
        })
        .filter(api_keys::Column::Id.eq(id))
        .filter(api_keys::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    let revoked = api_keys::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    tracing::info!(api_key = %id, "API key revoked");
    claim
        .commit(
            txn,
            StatusCode::OK,
            Some(&ApiKey::from(revoked)),
            None,
            None,
        )
        .await
}

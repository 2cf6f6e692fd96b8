use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use entities::{organisations, user_sessions, users};

use crate::directory::{self, NewUser, User, check_name, check_password, check_username, now};
use crate::error::responses::*;
use crate::error::{ApiError, FieldError};
use crate::extract::{Json, Path, Query, Validate};
use crate::idempotency::IdempotencyClaim;
use crate::page;
use crate::policy::{Action, Caller, OrgRef, Role, Subject, authorize, check_grant};
use crate::routes::subtree;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user))
        .routes(routes!(disable_user))
}

crate::page_type!(UserPage, User, "users");

/// Which page of the users of the caller's subtree.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsers {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
    /// Only the users of this organisation.
    pub organisation_id: Option<Uuid>,
}

/// The users of the caller's organisation subtree, in order of creation.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    params(ListUsers),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListUsers>,
) -> Result<axum::Json<UserPage>, ApiError> {
    authorize(&caller, Action::ReadUsers, &caller.org, "organisation")?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("users", q.cursor.as_deref())?;
    let mut select = users::Entity::find()
        .filter(
            users::Column::OrganisationId
                .in_subquery(subtree(organisations::Column::Id, &caller.org.path)),
        )
        .order_by_asc(users::Column::Id)
        .limit(limit + 1);
    if let Some(org_id) = q.organisation_id {
        let org = directory::find_org(&state.db, org_id)
            .await?
            .ok_or_else(|| ApiError::not_found("organisation"))?;
        authorize(&caller, Action::ReadUsers, &org, "organisation")?;
        select = select.filter(users::Column::OrganisationId.eq(org_id));
    }
    if let Some(after) = after {
        select = select.filter(users::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "users", |u| u.id.to_string());
    Ok(axum::Json(UserPage {
        items: rows
            .into_iter()
            .map(User::try_from)
            .collect::<Result<_, _>>()?,
        next_cursor,
    }))
}

/// A user and the organisation they belong to, if the caller may `action` on them.
async fn user_in_scope(
    state: &AppState,
    caller: &Caller,
    action: Action,
    id: Uuid,
) -> Result<(users::Model, OrgRef), ApiError> {
    let user = users::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let org = directory::find_org(&state.db, user.organisation_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    authorize(caller, action, &org, "user")?;
    Ok((user, org))
}

/// One user of the caller's subtree.
#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(user = %id))]
async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<User>, ApiError> {
    let (user, _) = user_in_scope(&state, &caller, Action::ReadUsers, id).await?;
    Ok(axum::Json(user.try_into()?))
}

/// A new user.
#[derive(Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "organisation_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "username": "li.wei",
    "display_name": "Li Wei",
    "role": "cashier",
    "password": "a long passphrase of at least 12 characters"
}))]
pub struct CreateUser {
    pub organisation_id: Uuid,
    /// 3 to 64 characters of a-z, 0-9, '.', '_', '-'; unique on the platform.
    pub username: String,
    pub display_name: String,
    /// A role the caller may grant (admins any; station owners station managers and
    /// cashiers; station managers cashiers) that fits the organisation's kind.
    pub role: Role,
    /// 12 to 256 characters; stored as an argon2id hash.
    pub password: String,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUser")
            .field("organisation_id", &self.organisation_id)
            .field("username", &self.username)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Validate for CreateUser {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_username(&self.username, &mut errors);
        check_name("display_name", &self.display_name, &mut errors);
        check_password(&self.password, &mut errors);
        errors
    }
}

/// Create a user in the caller's subtree, with a role the caller may grant.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = User,
            headers(("Location" = String, description = "The new user's URL"))),
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
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(organisation = %body.organisation_id, role = %body.role))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Json(body): Json<CreateUser>,
) -> Result<Response, ApiError> {
    let org = directory::find_org(&state.db, body.organisation_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    authorize(&caller, Action::ManageUsers, &org, "organisation")?;
    check_grant(&caller, body.role, &org)?;
    let password_hash = directory::hash_password(body.password.clone()).await?;
    let txn = entities::db::begin_write(&state.db).await?;
    let created = directory::create_user(
        &txn,
        NewUser {
            id: Uuid::now_v7(),
            organisation_id: org.id,
            username: body.username,
            display_name: body.display_name,
            role: body.role,
        },
        password_hash,
    )
    .await?;
    let user = User::try_from(created)?;
    tracing::info!(user = %user.id, "user created");
    let location = format!("/v1/users/{}", user.id);
    claim
        .commit(txn, StatusCode::CREATED, Some(&user), Some(location), None)
        .await
}

/// Disable a user: they cannot log in, and their sessions stop working at once.
#[utoipa::path(
    post,
    path = "/v1/users/{id}/disable",
    tag = "users",
    params(
        ("id" = Uuid, Path, description = "User id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    responses(
        (status = 200, description = "The disabled user", body = User),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(user = %id))]
async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (user, org) = user_in_scope(&state, &caller, Action::ManageUsers, id).await?;
    if matches!(&caller.subject, Subject::User { id: me, .. } if *me == user.id) {
        return Err(ApiError::forbidden("users cannot disable themselves"));
    }
    let role: Role = user
        .role
        .parse()
        .map_err(|e: String| ApiError::internal(anyhow::anyhow!(e)))?;
    check_grant(&caller, role, &org)?;
    let at = now();
    let txn = entities::db::begin_write(&state.db).await?;
    users::Entity::update_many()
        .set(users::ActiveModel {
            disabled_at: Set(Some(at)),
            ..Default::default()
        })
        .filter(users::Column::Id.eq(user.id))
        .filter(users::Column::DisabledAt.is_null())
        .exec(&txn)
        .await?;
    user_sessions::Entity::update_many()
        .set(user_sessions::ActiveModel {
            revoked_at: Set(Some(at)),
            ..Default::default()
        })
        .filter(user_sessions::Column::UserId.eq(user.id))
        .filter(user_sessions::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    let disabled = users::Entity::find_by_id(user.id)
        .one(&txn)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let disabled = User::try_from(disabled)?;
    tracing::info!(user = %disabled.id, "user disabled");
    claim
        .commit(txn, StatusCode::OK, Some(&disabled), None, None)
        .await
}

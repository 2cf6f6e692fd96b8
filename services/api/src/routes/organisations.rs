use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use entities::organisations;

use crate::directory::{self, NewOrganisation, Organisation, check_name, org_ref};
use crate::error::ApiError;
use crate::error::FieldError;
use crate::error::responses::*;
use crate::extract::{Json, Path, Query, Validate};
use crate::idempotency::IdempotencyClaim;
use crate::page;
use crate::policy::{Action, Caller, OrgKind, authorize};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_organisations, create_organisation))
        .routes(routes!(get_organisation))
}

crate::page_type!(OrganisationPage, Organisation, "organisations");

/// Which page of the caller's organisation subtree.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListOrganisations {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
    /// Only the direct children of this organisation.
    pub parent_id: Option<Uuid>,
}

/// The caller's organisation and everything below it, in order of creation.
#[utoipa::path(
    get,
    path = "/v1/organisations",
    tag = "organisations",
    params(ListOrganisations),
    responses(
        (status = 200, description = "A page of organisations", body = OrganisationPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_organisations(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListOrganisations>,
) -> Result<axum::Json<OrganisationPage>, ApiError> {
    authorize(
        &caller,
        Action::ReadOrganisations,
        &caller.org,
        "organisation",
    )?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("organisations", q.cursor.as_deref())?;
    let mut select = organisations::Entity::find()
        .filter(organisations::Column::Path.like(format!("{}%", caller.org.path)))
        .order_by_asc(organisations::Column::Id)
        .limit(limit + 1);
    if let Some(parent_id) = q.parent_id {
        let parent = directory::find_org(&state.db, parent_id)
            .await?
            .ok_or_else(|| ApiError::not_found("organisation"))?;
        authorize(&caller, Action::ReadOrganisations, &parent, "organisation")?;
        select = select.filter(organisations::Column::ParentId.eq(parent_id));
    }
    if let Some(after) = after {
        select = select.filter(organisations::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "organisations", |o| o.id.to_string());
    Ok(axum::Json(OrganisationPage {
        items: rows
            .into_iter()
            .map(Organisation::try_from)
            .collect::<Result<_, _>>()?,
        next_cursor,
    }))
}

/// One organisation of the caller's subtree.
#[utoipa::path(
    get,
    path = "/v1/organisations/{id}",
    tag = "organisations",
    params(("id" = Uuid, Path, description = "Organisation id")),
    responses(
        (status = 200, description = "The organisation", body = Organisation),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(organisation = %id))]
async fn get_organisation(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<Organisation>, ApiError> {
    let model = organisations::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    authorize(
        &caller,
        Action::ReadOrganisations,
        &org_ref(&model)?,
        "organisation",
    )?;
    Ok(axum::Json(model.try_into()?))
}

/// A new organisation below an existing one.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "parent_id": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "kind": "station",
    "name": "Huaxin No. 3 Station"
}))]
pub struct CreateOrganisation {
    /// The parent; its kind decides which kinds may go below it (a brand has station
    /// companies, a station company has stations; fleets, depots and partners are below the
    /// platform operator).
    pub parent_id: Uuid,
    pub kind: OrgKind,
    /// 1 to 200 characters, unique among the parent's children.
    pub name: String,
}

impl Validate for CreateOrganisation {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_name("name", &self.name, &mut errors);
        if self.kind == OrgKind::PlatformOperator {
            errors.push(FieldError::new(
                "kind",
                "there is one platform operator, created with the platform",
            ));
        }
        errors
    }
}

/// Create an organisation in the caller's subtree (admins).
#[utoipa::path(
    post,
    path = "/v1/organisations",
    tag = "organisations",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    request_body = CreateOrganisation,
    responses(
        (status = 201, description = "Created", body = Organisation,
            headers(("Location" = String, description = "The new organisation's URL"))),
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
#[tracing::instrument(skip_all, fields(parent = %body.parent_id, kind = %body.kind))]
async fn create_organisation(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Json(body): Json<CreateOrganisation>,
) -> Result<Response, ApiError> {
    let parent = directory::find_org(&state.db, body.parent_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    authorize(
        &caller,
        Action::CreateOrganisations,
        &parent,
        "organisation",
    )?;
    let txn = entities::db::begin_write(&state.db).await?;
    let created = directory::create_organisation(
        &txn,
        NewOrganisation {
            id: Uuid::now_v7(),
            parent_id: Some(parent.id),
            kind: body.kind,
            name: body.name,
            ledger_owner: None,
        },
    )
    .await?;
    let organisation = Organisation::try_from(created)?;
    tracing::info!(organisation = %organisation.id, "organisation created");
    let location = format!("/v1/organisations/{}", organisation.id);
    claim
        .commit(
            txn,
            StatusCode::CREATED,
            Some(&organisation),
            Some(location),
            None,
        )
        .await
}

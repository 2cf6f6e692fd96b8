use axum::extract::State;
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;
use workflows::Status;

use entities::{wf_history, wf_instances};

use crate::directory::root_org;
use crate::error::ApiError;
use crate::error::responses::*;
use crate::extract::{Path, Query};
use crate::page;
use crate::policy::{Action, Caller, authorize};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances))
        .routes(routes!(get_instance))
        .routes(routes!(get_history))
}

/// Workflow instances are the platform's own machinery: they belong to the platform operator,
/// so only its admins read them.
async fn authorize_workflows(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let root = root_org(&state.db)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("there is no platform operator")))?;
    authorize(caller, Action::ReadWorkflows, &root, "workflow instance")
}

/// A workflow instance's current state.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-cc00-7000-8000-0000000000e1",
    "workflow_type": "canary",
    "version": 1,
    "business_key": "demo",
    "status": "completed",
    "status_reason": "all 3 steps recorded their effect",
    "state": {"steps": 3, "done": 3},
    "revision": 7,
    "parent_id": null,
    "created_at": "2026-11-22T08:00:00Z",
    "updated_at": "2026-11-22T08:00:01Z"
}))]
pub struct InstanceView {
    pub id: Uuid,
    pub workflow_type: String,
    pub version: i32,
    /// Unique per type: the purchase order number, the settlement run's date.
    pub business_key: String,
    /// `running`, `completed`, `failed` or `compensated`.
    pub status: String,
    /// Why the instance is where it is.
    pub status_reason: String,
    /// The workflow's own state.
    pub state: serde_json::Value,
    pub revision: i64,
    /// The instance that started this one as its child.
    pub parent_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<wf_instances::Model> for InstanceView {
    fn from(m: wf_instances::Model) -> Self {
        InstanceView {
            id: m.id,
            workflow_type: m.workflow_type,
            version: m.version,
            business_key: m.business_key,
            status: m.status,
            status_reason: m.status_reason,
            state: m.state,
            revision: m.revision,
            parent_id: m.parent_id,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

crate::page_type!(InstancePage, InstanceView, "workflow instances");

/// Filters and page of workflow instances.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListInstances {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
    /// Only instances of this workflow type.
    pub workflow_type: Option<String>,
    /// Only instances in this status: `running`, `completed`, `failed` or `compensated`.
    pub status: Option<String>,
}

/// Workflow instances, oldest first (platform admins).
#[utoipa::path(
    get,
    path = "/v1/workflow-instances",
    tag = "workflows",
    params(ListInstances),
    responses(
        (status = 200, description = "A page of instances", body = InstancePage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_instances(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListInstances>,
) -> Result<axum::Json<InstancePage>, ApiError> {
    authorize_workflows(&state, &caller).await?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("workflow-instances", q.cursor.as_deref())?;
    let mut select = wf_instances::Entity::find()
        .order_by_asc(wf_instances::Column::Id)
        .limit(limit + 1);
    if let Some(status) = &q.status {
        let known = [
            Status::Running,
            Status::Completed,
            Status::Failed,
            Status::Compensated,
        ];
        if !known.iter().any(|s| s.as_str() == status) {
            return Err(ApiError::parameter(
                "status",
                "must be running, completed, failed or compensated",
            ));
        }
        select = select.filter(wf_instances::Column::Status.eq(status));
    }
    if let Some(workflow_type) = &q.workflow_type {
        select = select.filter(wf_instances::Column::WorkflowType.eq(workflow_type));
    }
    if let Some(after) = after {
        select = select.filter(wf_instances::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "workflow-instances", |i| i.id.to_string());
    Ok(axum::Json(InstancePage {
        items: rows.into_iter().map(InstanceView::from).collect(),
        next_cursor,
    }))
}

/// One workflow instance (platform admins).
#[utoipa::path(
    get,
    path = "/v1/workflow-instances/{id}",
    tag = "workflows",
    params(("id" = Uuid, Path, description = "Instance id")),
    responses(
        (status = 200, description = "The instance", body = InstanceView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(instance = %id))]
async fn get_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<axum::Json<InstanceView>, ApiError> {
    authorize_workflows(&state, &caller).await?;
    let instance = wf_instances::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow instance"))?;
    Ok(axum::Json(instance.into()))
}

/// One row of an instance's audit trail.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "seq": 1,
    "kind": "started",
    "detail": {"input": {"steps": 3}},
    "reason": "started by demo seeding",
    "recorded_at": "2026-11-22T08:00:00Z"
}))]
pub struct HistoryView {
    pub seq: i64,
    /// `started`, `event`, `ignored`, `retry_scheduled` or `finished`.
    pub kind: String,
    pub detail: serde_json::Value,
    pub reason: String,
    pub recorded_at: DateTime<Utc>,
}

crate::page_type!(HistoryPage, HistoryView, "an instance's history");

/// Which page of an instance's history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Rows per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
}

/// An instance's history, oldest first (platform admins).
#[utoipa::path(
    get,
    path = "/v1/workflow-instances/{id}/history",
    tag = "workflows",
    params(("id" = Uuid, Path, description = "Instance id"), HistoryParams),
    responses(
        (status = 200, description = "A page of the history", body = HistoryPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []), ("partner_signature" = []))
)]
#[tracing::instrument(skip_all, fields(instance = %id))]
async fn get_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<HistoryParams>,
) -> Result<axum::Json<HistoryPage>, ApiError> {
    authorize_workflows(&state, &caller).await?;
    wf_instances::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow instance"))?;
    let limit = page::limit(q.limit)?;
    let list = format!("history/{id}");
    let after = page::decode_seq(&list, q.cursor.as_deref())?;
    let rows = wf_history::Entity::find()
        .filter(wf_history::Column::InstanceId.eq(id))
        .filter(wf_history::Column::Seq.gt(after.unwrap_or(-1)))
        .order_by_asc(wf_history::Column::Seq)
        .limit(limit + 1)
        .all(&state.db)
        .await?;
    let (rows, next_cursor) = page::split(rows, limit, &list, |h| h.seq.to_string());
    Ok(axum::Json(HistoryPage {
        items: rows
            .into_iter()
            .map(|h| HistoryView {
                seq: h.seq,
                kind: h.kind,
                detail: h.detail,
                reason: h.reason,
                recorded_at: h.recorded_at,
            })
            .collect(),
        next_cursor,
    }))
}

//! Webhook subscriptions: where the platform posts its domain events
//! (`treasury.instruction.settled`, `partner_orders.refunded`, …), signed with a secret shown
//! once. The platform operator's administrators subscribe for the operator's own
//! integrations and receive every event; a partner's people subscribe for their partner
//! system and receive only the events that name the partner (their `audience`). Other
//! organisations' events are not scoped yet, so they cannot subscribe. Subscriptions are
//! managed by logged-in people, never with an API key: a leaked key must not redirect
//! events.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use entities::{webhook_deliveries, webhook_subscriptions};

use crate::crypto::random_secret;
use crate::error::responses::*;
use crate::error::{ApiError, FieldError};
use crate::extract::{Json, Path, Query, Validate};
use crate::idempotency::IdempotencyClaim;
use crate::page;
use crate::policy::{Action, Caller, OrgKind, Subject, authorize};
use crate::state::AppState;

/// Prefix of webhook secrets.
pub const SECRET_PREFIX: &str = "fcw_";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(revoke_webhook))
        .routes(routes!(list_deliveries))
}

/// The caller may manage its organisation's subscriptions: a person of the platform
/// operator or of a partner.
fn subscriber(caller: &Caller) -> Result<(), ApiError> {
    authorize(caller, Action::ManageWebhooks, &caller.org, "organisation")?;
    if !matches!(
        caller.org.kind,
        OrgKind::PlatformOperator | OrgKind::Partner
    ) {
        return Err(ApiError::forbidden(
            "webhooks are the platform operator's and partners': events do not name other organisations yet",
        ));
    }
    if matches!(caller.subject, Subject::ApiKey { .. }) {
        return Err(ApiError::forbidden(
            "webhooks are managed by a logged-in user, not with an API key",
        ));
    }
    Ok(())
}

/// A subscription of the caller's subtree (its own organisation's, or for the platform
/// operator any), or 404 like one that does not exist.
async fn own_subscription(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<webhook_subscriptions::Model, ApiError> {
    let row = webhook_subscriptions::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    let owner = crate::directory::find_org(&state.db, row.organisation_id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    authorize(caller, Action::ManageWebhooks, &owner, "webhook")?;
    Ok(row)
}

/// A webhook subscription (never its secret).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c2-ee00-7000-8000-000000000001",
    "url": "https://erp.example.com/forecourt/events",
    "topics": ["treasury.*"],
    "created_by": "admin",
    "created_at": "2026-11-23T08:00:00Z",
    "revoked_at": null
}))]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    /// Topic patterns: a topic, a prefix ending in `.*`, or `*`.
    pub topics: Vec<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<webhook_subscriptions::Model> for Webhook {
    fn from(m: webhook_subscriptions::Model) -> Self {
        Webhook {
            id: m.id,
            url: m.url,
            topics: m.topics.split_whitespace().map(str::to_owned).collect(),
            created_by: m.created_by,
            created_at: m.created_at,
            revoked_at: m.revoked_at,
        }
    }
}

/// A new subscription with its signing secret, shown only in this response.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// HMAC-SHA256 key of `Forecourt-Webhook-Signature`: `v1=` and the hex HMAC of
    /// `<Forecourt-Webhook-Id>.<Forecourt-Webhook-Timestamp>.<body>`. Shown once.
    pub secret: String,
}

crate::page_type!(WebhookPage, Webhook, "webhook subscriptions");

/// A new subscription.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://erp.example.com/forecourt/events", "topics": ["treasury.*"]}))]
pub struct CreateWebhook {
    /// Where to post, `http://` or `https://`.
    pub url: String,
    /// One to twenty patterns: a topic (`treasury.instruction.settled`), a prefix ending in
    /// `.*` (`treasury.*`), or `*`.
    pub topics: Vec<String>,
}

impl Validate for CreateWebhook {
    fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let url_ok = (self.url.starts_with("https://") || self.url.starts_with("http://"))
            && self.url.len() <= 2_000
            && !self.url.chars().any(char::is_whitespace);
        if !url_ok {
            errors.push(FieldError::new("url", "an http:// or https:// URL"));
        }
        let topic_ok = |t: &String| {
            !t.is_empty()
                && t.len() <= 100
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '*'))
                && (!t.contains('*')
                    || t == "*"
                    || (t.ends_with(".*") && t.matches('*').count() == 1))
        };
        if self.topics.is_empty() || self.topics.len() > 20 || !self.topics.iter().all(topic_ok) {
            errors.push(FieldError::new(
                "topics",
                "1 to 20 patterns: a topic, a prefix ending in .*, or *",
            ));
        }
        errors
    }
}

/// The webhook subscriptions of the caller's organisation (the platform operator's
/// administrators see every subscription).
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    params(crate::routes::treasury::PageQuery),
    responses(
        (status = 200, description = "A page of subscriptions", body = WebhookPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<crate::routes::treasury::PageQuery>,
) -> Result<axum::Json<WebhookPage>, ApiError> {
    subscriber(&caller)?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("webhooks", q.cursor.as_deref())?;
    let mut select =
        webhook_subscriptions::Entity::find()
            .filter(webhook_subscriptions::Column::OrganisationId.in_subquery(
                crate::routes::subtree(entities::organisations::Column::Id, &caller.org.path),
            ))
            .order_by_asc(webhook_subscriptions::Column::Id)
            .limit(limit + 1);
    if let Some(after) = after {
        select = select.filter(webhook_subscriptions::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "webhooks", |r| r.id.to_string());
    Ok(axum::Json(WebhookPage {
        items: rows.into_iter().map(Webhook::from).collect(),
        next_cursor,
    }))
}

/// Subscribe a URL to domain events. The platform operator's subscriptions receive every
/// matching event; a partner's only those about the partner (`partner_orders.*`). The secret
/// is in this response only; a replay of the request answers 409
/// `idempotency-secret-withheld`.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    params(("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries.")),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Subscribed; the secret is shown only here", body = CreatedWebhook),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Unprocessable),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all)]
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Json(body): Json<CreateWebhook>,
) -> Result<Response, ApiError> {
    subscriber(&caller)?;
    let created_by = match &caller.subject {
        Subject::User { username, .. } => username.clone(),
        Subject::ApiKey { id } => format!("api-key:{id}"),
    };
    let id = Uuid::now_v7();
    let secret = random_secret(SECRET_PREFIX);
    let ciphertext = state
        .keys
        .encrypt(&secret, id.as_bytes())
        .map_err(ApiError::internal)?;
    let now = crate::directory::now();
    let txn = entities::db::begin_write(&state.db).await?;
    let model = webhook_subscriptions::Model {
        id,
        organisation_id: caller.org.id,
        url: body.url.clone(),
        topics: body.topics.join(" "),
        secret_ciphertext: ciphertext,
        encryption_key_id: state.keys.id().to_owned(),
        created_by,
        created_at: now,
        revoked_at: None,
    };
    webhook_subscriptions::Entity::insert(webhook_subscriptions::ActiveModel::from(model.clone()))
        .exec_without_returning(&txn)
        .await?;
    let created = CreatedWebhook {
        webhook: model.into(),
        secret,
    };
    claim
        .commit(
            txn,
            StatusCode::CREATED,
            Some(&created),
            Some(format!("/v1/webhooks/{id}")),
            Some("secret"),
        )
        .await
}

/// Stop posting to a subscription; deliveries not yet made are dropped.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/revoke",
    tag = "webhooks",
    params(
        ("id" = Uuid, Path, description = "Subscription id"),
        ("Idempotency-Key" = String, Header, description = "A new random value per operation (a UUID), the same on its retries."),
    ),
    responses(
        (status = 200, description = "The revoked subscription", body = Webhook),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(webhook = %id))]
async fn revoke_webhook(
    State(state): State<AppState>,
    caller: Caller,
    claim: IdempotencyClaim,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    subscriber(&caller)?;
    own_subscription(&state, &caller, id).await?;
    let now = crate::directory::now();
    let txn = entities::db::begin_write(&state.db).await?;
    webhook_subscriptions::Entity::update_many()
        .set(webhook_subscriptions::ActiveModel {
            revoked_at: Set(Some(now)),
            ..Default::default()
        })
        .filter(webhook_subscriptions::Column::Id.eq(id))
        .filter(webhook_subscriptions::Column::RevokedAt.is_null())
        .exec(&txn)
        .await?;
    webhook_deliveries::Entity::update_many()
        .set(webhook_deliveries::ActiveModel {
            status: Set("failed".into()),
            last_error: Set(Some("the subscription was revoked".into())),
            ..Default::default()
        })
        .filter(webhook_deliveries::Column::SubscriptionId.eq(id))
        .filter(webhook_deliveries::Column::Status.eq("pending"))
        .exec(&txn)
        .await?;
    let row = webhook_subscriptions::Entity::find_by_id(id)
        .one(&txn)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    claim
        .commit(txn, StatusCode::OK, Some(&Webhook::from(row)), None, None)
        .await
}

/// One delivery of an event to a subscription.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    /// The event's id, as `Forecourt-Webhook-Id`.
    pub event_id: Uuid,
    pub topic: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub occurred_at: DateTime<Utc>,
}

crate::page_type!(DeliveryPage, Delivery, "webhook deliveries");

/// Which deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListDeliveries {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Items per page, 1 to 200 (default 50).
    pub limit: Option<u64>,
}

/// The deliveries of a subscription, oldest first.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = Uuid, Path, description = "Subscription id"), ListDeliveries),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
#[tracing::instrument(skip_all, fields(webhook = %id))]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(q): Query<ListDeliveries>,
) -> Result<axum::Json<DeliveryPage>, ApiError> {
    subscriber(&caller)?;
    own_subscription(&state, &caller, id).await?;
    let limit = page::limit(q.limit)?;
    let after = page::decode_uuid("webhook-deliveries", q.cursor.as_deref())?;
    let mut select = webhook_deliveries::Entity::find()
        .filter(webhook_deliveries::Column::SubscriptionId.eq(id))
        .order_by_asc(webhook_deliveries::Column::Id)
        .limit(limit + 1);
    if let Some(after) = after {
        select = select.filter(webhook_deliveries::Column::Id.gt(after));
    }
    let rows = select.all(&state.db).await?;
    let (rows, next_cursor) = page::split(rows, limit, "webhook-deliveries", |r| r.id.to_string());
    Ok(axum::Json(DeliveryPage {
        items: rows
            .into_iter()
            .map(|d| Delivery {
                id: d.id,
                event_id: d.event_id,
                topic: d.topic,
                status: d.status,
                attempts: d.attempts,
                next_attempt_at: d.next_attempt_at,
                last_status: d.last_status,
                last_error: d.last_error,
                delivered_at: d.delivered_at,
                occurred_at: d.occurred_at,
            })
            .collect(),
        next_cursor,
    }))
}

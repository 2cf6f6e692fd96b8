//! The HTTP API of Forecourt: station owners, fleet managers, treasury and station staff use
//! the platform through it, and partners integrate through the same OpenAPI.
//!
//! # Guarantees
//! - Every error is `application/problem+json` with a stable `type` per kind
//!   ([`error::ProblemKind`]) and the request id as `instance`; internal errors are logged in
//!   full and answered with a generic 500.
//! - Every POST that changes something takes an `Idempotency-Key`; a retry returns the first
//!   response, and the change and its stored response commit together ([`idempotency`]).
//! - One function decides every access ([`policy::authorize`]): a caller acts only within its
//!   organisation's subtree, and another organisation's resource answers 404.
//! - Every list pages by opaque cursor with a bounded limit ([`page`]); bodies, request time
//!   and every query are bounded.
//!
//! # Layout
//! - [`routes`]: one router per area (auth, organisations, users, API keys, accounts,
//!   workflows, treasury, payments, partner orders, webhooks, health), merged in
//!   [`router`]; each handler is documented with utoipa.
//! - [`auth`]: bearer tokens and the authentication middleware; [`signature`]: partner
//!   HMAC-SHA256 signatures; [`crypto`]: tokens, digests, argon2, secret encryption.
//! - [`policy`]: roles, organisation kinds, actions and the one decision.
//! - [`directory`]: organisations and users in storage, shared with seeding and tests.
//! - [`idempotency`]: `Idempotency-Key` claims and stored responses.
//! - [`error`], [`extract`], [`middleware`]: problem+json, extractors whose rejections are
//!   problems, request ids and the outer layers.
//! - [`page`]: cursors and limits. [`metrics`]: Prometheus text exposition.
//! - [`state`]: settings and shared handles.

pub mod auth;
pub mod crypto;
pub mod directory;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod page;
pub mod policy;
pub mod routes;
pub mod signature;
pub mod state;
pub mod webhooks;

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Method, Request, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

pub use crypto::KeyEncryption;
pub use state::{ApiConfig, AppState};

use error::responses;

/// What a partner signs, as the OpenAPI document states it.
const SIGNATURE_SCHEME_DESCRIPTION: &str = "Partner systems sign every request with their API key. Send four headers: \
`X-Api-Key` (the key's id), `X-Timestamp` (Unix seconds), `X-Nonce` (16 to 64 characters of A-Z a-z 0-9 - _, new for every request) \
and `X-Signature`: lower-case hex HMAC-SHA256, keyed with the key's secret (its UTF-8 bytes as shown at creation), over the canonical string\n\n\
```\nFORECOURT-HMAC-SHA256\n<METHOD>\n<path as on the request line>\n<query as on the request line, without '?', or empty>\n<X-Timestamp>\n<X-Nonce>\n<lower-case hex SHA-256 of the body>\n```\n\n\
(lines joined by a single LF, none after the last; the body digest of an empty body is that of zero bytes). \
The timestamp must be within ±5 minutes of the server's clock and a nonce is accepted once per key.";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Forecourt API",
        description = "The money side of the fuel business: organisations and users, partner keys, ledger accounts with balances and statements, workflow instances.\n\n\
Errors are `application/problem+json` (RFC 9457) with a stable `type` (`urn:forecourt:problem:<kind>`), `title`, `status`, `detail`, `instance` (the request id, also in the `x-request-id` response header) and, for validation problems, `errors` per field.\n\n\
Every POST except login takes an `Idempotency-Key` header (1 to 255 visible ASCII characters; a UUID per operation). A retry with the same key and the same request returns the stored response with `Idempotency-Replayed: true`; while the first is still running it answers 409 `idempotency-in-flight`; the same key with a different request answers 422 `idempotency-key-reused`. Keys expire after 24 hours. A till's payment (`POST /v1/terminals/{terminal_id}/payments`) is idempotent by the till's order number instead: it needs the header too, but a retry, with any key, answers the payment as it stands (200), and a different request under the same order number answers 409.\n\n\
Lists page with `limit` (1 to 200, default 50) and the opaque `cursor` from the previous page's `next_cursor`. Money amounts are decimal strings in the account's currency.",
    ),
    modifiers(&SecuritySchemes),
    components(
        schemas(error::Problem, error::FieldError),
        responses(
            responses::BadRequest,
            responses::Unauthorized,
            responses::Forbidden,
            responses::NotFound,
            responses::Conflict,
            responses::PayloadTooLarge,
            responses::UnsupportedMediaType,
            responses::Unprocessable,
            responses::Internal,
            responses::Unavailable,
        )
    ),
    tags(
        (name = "auth", description = "Log in, log out, who am I"),
        (name = "organisations", description = "The organisation tree: platform operator, brands, station companies, stations, fleets, depots, partners"),
        (name = "users", description = "Users and their roles"),
        (name = "api-keys", description = "Partner API keys for signed requests"),
        (name = "accounts", description = "Ledger accounts, balances and statements"),
        (name = "workflows", description = "Workflow instances and their history (platform admins)"),
        (name = "payments", description = "Retail payments: stations' terminals and channel terms, cashiers' shifts, payments routed over several channels per method, refunds with the station manager's approval across shifts, the channels' signed notifications"),
        (name = "partner-orders", description = "Partner-app orders: stations sign partners on with their terms; a partner pushes orders its drivers paid in its app to a station's terminal (signed requests), the till prints the ticket, the order counts in the shift and is owed by the partner; refunds at the till are deducted from what the partner owes and announced to it by webhook"),
        (name = "treasury", description = "Instructions to the custodial bank, maker-checker approval, rails and calendar, statements and reconciliation exceptions, approval policies, the bank's callbacks"),
        (name = "webhooks", description = "Domain events posted to subscribers, signed: the platform operator's administrators receive every event, a partner's people those about the partner"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.info.version = env!("CARGO_PKG_VERSION").to_owned();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            routes::BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("opaque")
                    .description(Some(
                        "A token from POST /v1/auth/login, sent as `Authorization: Bearer <token>`. It expires after 30 minutes (configurable) and at logout.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            routes::PARTNER_SIGNATURE,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Signature",
                SIGNATURE_SCHEME_DESCRIPTION,
            ))),
        );
    }
}

/// Every route with its documentation; with a state, the protected routes get their
/// authentication and idempotency layers.
fn documented(state: Option<&AppState>) -> OpenApiRouter<AppState> {
    let mut protected = OpenApiRouter::new()
        .merge(routes::auth::protected_router())
        .merge(routes::organisations::router())
        .merge(routes::users::router())
        .merge(routes::api_keys::router())
        .merge(routes::accounts::router())
        .merge(routes::workflows::router())
        .merge(routes::treasury::router())
        .merge(routes::payments::router())
        .merge(routes::member_cards::router())
        .merge(routes::partner_orders::router())
        .merge(routes::webhooks::router());
    if let Some(state) = state {
        // The last layer added runs first: authenticate, then claim the Idempotency-Key
        // in the caller's scope.
        protected = protected
            .route_layer(from_fn_with_state(state.clone(), idempotency::idempotency))
            .route_layer(from_fn_with_state(state.clone(), auth::authenticate));
    }
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::router())
        .merge(routes::auth::router())
        .merge(routes::treasury::bank_router())
        .merge(routes::payments::notifications_router())
        .merge(protected)
}

/// The OpenAPI document of every route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented(None).split_for_parts().1
}

/// The OpenAPI document as checked in at `openapi/openapi.json`: pretty JSON, keys in sorted
/// order (paths and components are sorted maps), ending with a newline.
pub fn openapi_json() -> String {
    let value = serde_json::to_value(openapi()).expect("the OpenAPI document serialises");
    let mut text = serde_json::to_string_pretty(&value).expect("JSON serialises");
    text.push('\n');
    text
}

fn cors(origins: &[axum::http::HeaderValue]) -> CorsLayer {
    if origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static(idempotency::HEADER),
            HeaderName::from_static(middleware::REQUEST_ID),
        ])
        .expose_headers([
            HeaderName::from_static(middleware::REQUEST_ID),
            HeaderName::from_static(idempotency::REPLAYED_HEADER),
            axum::http::header::LOCATION,
        ])
        .max_age(Duration::from_secs(600))
}

/// The whole application: routes, `/openapi.json`, Swagger UI at `/docs`, and the layers
/// every request passes (outermost first): request id, tracing, metrics, CORS, problem
/// bodies, panic catching, timeout, body limit.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = documented(Some(&state)).split_for_parts();
    let config = state.config.clone();
    let layers = ServiceBuilder::new()
        .layer(from_fn(middleware::sanitize_request_id))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<axum::body::Body>| {
                    let request_id = req
                        .headers()
                        .get(middleware::REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %request_id,
                    )
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .layer(cors(&config.cors_origins))
        .layer(from_fn(middleware::problems))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            config.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes));
    routes
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi))
        .route_layer(from_fn(metrics::capture_route))
        .fallback(middleware::not_found)
        .method_not_allowed_fallback(middleware::method_not_allowed)
        .with_state(state)
        .layer(layers)
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let housekeeping = tokio::spawn(housekeeping(state.clone()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let deliveries = tokio::spawn(webhooks::run(
        state.db.clone(),
        state.keys.clone(),
        WEBHOOKS_EVERY,
        stopped.clone(),
    ));
    // Payments recorded by workers of other processes wake the requests waiting on them.
    let outcomes = tokio::spawn(payments::sales::outcomes::listen(state.db.clone(), stopped));
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    housekeeping.abort();
    let _ = stop.send(true);
    let _ = deliveries.await;
    let _ = outcomes.await;
    result
}

/// How often due webhook deliveries are looked for.
const WEBHOOKS_EVERY: Duration = Duration::from_millis(500);
/// How often expired nonces, idempotency records and sessions are deleted.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// Expired sessions are kept this long for the record, then deleted.
const SESSIONS_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Deletes what has expired, once a minute. Each delete covers at most a minute of traffic.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = sweep(&state).await {
            tracing::warn!(error = %err, "housekeeping failed; retrying on the next tick");
        }
    }
}

/// One round of housekeeping.
pub async fn sweep(state: &AppState) -> Result<(), sea_orm::DbErr> {
    use entities::{api_idempotency, api_nonces, user_sessions};
    let now = directory::now();
    api_nonces::Entity::delete_many()
        .filter(api_nonces::Column::ExpiresAt.lte(now))
        .exec(&state.db)
        .await?;
    api_idempotency::Entity::delete_many()
        .filter(api_idempotency::Column::ExpiresAt.lte(now))
        .exec(&state.db)
        .await?;
    user_sessions::Entity::delete_many()
        .filter(user_sessions::Column::ExpiresAt.lte(now - SESSIONS_KEPT))
        .exec(&state.db)
        .await?;
    Ok(())
}

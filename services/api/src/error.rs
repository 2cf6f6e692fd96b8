//! The API's one error type and its `application/problem+json` form (RFC 9457).
//!
//! Every refusal is an [`ApiError`] of a [`ProblemKind`]; each kind has a stable `type` URI,
//! a title and an HTTP status. Handlers return the error; the problem middleware
//! ([`crate::middleware::problems`]) writes the body and fills `instance` with the request id,
//! and turns any other error response (a timeout, a panic, a body over the limit) into a
//! problem too, so that no client ever sees a plain-text error. Internal errors are logged in
//! full and answered with a generic 500 that names the request id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Prefix of every problem `type`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:forecourt:problem:";

macro_rules! problem_kinds {
    ($($variant:ident => ($slug:literal, $status:ident, $title:literal)),+ $(,)?) => {
        /// Each kind of problem the API reports. The slug, and so the `type` URI, never
        /// changes once published.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ProblemKind { $($variant),+ }

        impl ProblemKind {
            /// Every kind, for documentation and tests.
            pub const ALL: &[ProblemKind] = &[$(ProblemKind::$variant),+];

            pub const fn slug(self) -> &'static str {
                match self { $(ProblemKind::$variant => $slug),+ }
            }

            pub const fn status(self) -> StatusCode {
                match self { $(ProblemKind::$variant => StatusCode::$status),+ }
            }

            pub const fn title(self) -> &'static str {
                match self { $(ProblemKind::$variant => $title),+ }
            }
        }
    };
}

problem_kinds! {
    MalformedJson => ("malformed-json", BAD_REQUEST, "The body is not valid JSON"),
    MalformedMessage => ("malformed-message", BAD_REQUEST, "The body is not a readable message"),
    InvalidParameter => ("invalid-parameter", BAD_REQUEST, "A path or query parameter is invalid"),
    InvalidCursor => ("invalid-cursor", BAD_REQUEST, "The cursor is not one this list handed out"),
    IdempotencyKeyRequired => ("idempotency-key-required", BAD_REQUEST, "An Idempotency-Key header is required"),
    Unauthenticated => ("unauthenticated", UNAUTHORIZED, "Authentication is required"),
    InvalidCredentials => ("invalid-credentials", UNAUTHORIZED, "Username or password is wrong"),
    InvalidToken => ("invalid-token", UNAUTHORIZED, "The bearer token is not valid"),
    TokenExpired => ("token-expired", UNAUTHORIZED, "The bearer token has expired"),
    SignatureInvalid => ("signature-invalid", UNAUTHORIZED, "The request signature is not valid"),
    SignatureExpired => ("signature-expired", UNAUTHORIZED, "The request timestamp is outside the accepted window"),
    NonceReplayed => ("nonce-replayed", UNAUTHORIZED, "The request nonce was used before"),
    Forbidden => ("forbidden", FORBIDDEN, "The caller's role does not allow this"),
    NotFound => ("not-found", NOT_FOUND, "No such resource"),
    MethodNotAllowed => ("method-not-allowed", METHOD_NOT_ALLOWED, "The method is not allowed on this resource"),
    Conflict => ("conflict", CONFLICT, "The request conflicts with the current state"),
    IdempotencyInFlight => ("idempotency-in-flight", CONFLICT, "A request with this Idempotency-Key is still running"),
    IdempotencySecretWithheld => ("idempotency-secret-withheld", CONFLICT, "The original response carried a secret that is shown only once"),
    PayloadTooLarge => ("payload-too-large", PAYLOAD_TOO_LARGE, "The body is larger than the limit"),
    UnsupportedMediaType => ("unsupported-media-type", UNSUPPORTED_MEDIA_TYPE, "The body must be application/json"),
    Validation => ("validation", UNPROCESSABLE_ENTITY, "The request is not valid"),
    IdempotencyKeyReused => ("idempotency-key-reused", UNPROCESSABLE_ENTITY, "The Idempotency-Key was used for a different request"),
    Internal => ("internal", INTERNAL_SERVER_ERROR, "Internal error"),
    Unavailable => ("unavailable", SERVICE_UNAVAILABLE, "A dependency is unavailable"),
    Timeout => ("timeout", SERVICE_UNAVAILABLE, "The request took too long"),
}

impl ProblemKind {
    /// The stable `type` URI of the kind.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_TYPE_PREFIX}{}", self.slug())
    }

    /// The kind of an error response that carries no problem of its own (written by a layer,
    /// not a handler).
    pub fn for_status(status: StatusCode) -> ProblemKind {
        match status {
            StatusCode::BAD_REQUEST => ProblemKind::InvalidParameter,
            StatusCode::UNAUTHORIZED => ProblemKind::Unauthenticated,
            StatusCode::FORBIDDEN => ProblemKind::Forbidden,
            StatusCode::NOT_FOUND => ProblemKind::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ProblemKind::MethodNotAllowed,
            StatusCode::CONFLICT => ProblemKind::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => ProblemKind::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ProblemKind::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ProblemKind::Validation,
            // Only the timeout layer answers 503 without a problem of its own.
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => ProblemKind::Timeout,
            _ => ProblemKind::Internal,
        }
    }
}

/// One invalid field of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"field": "parent_id", "message": "unknown field"}))]
pub struct FieldError {
    /// Where the problem is: a JSON path into the body (`postings[1].amount`), a query or path
    /// parameter name, or a header name.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error body (RFC 9457 problem details).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:forecourt:problem:validation",
    "title": "The request is not valid",
    "status": 422,
    "detail": "1 field is invalid",
    "instance": "0193a5c2-7d1e-7c4b-9f0e-2a51b2c3d4e5",
    "errors": [{"field": "name", "message": "must be 1 to 200 characters"}]
}))]
pub struct Problem {
    /// Stable URI of the kind of problem: `urn:forecourt:problem:<kind>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    /// What went wrong with this request, for a person to read.
    pub detail: String,
    /// The request id (`x-request-id`): quote it when reporting a problem.
    pub instance: String,
    /// Field-level details of a validation problem.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// The resource a problem is about, where the client needs it (the API key whose secret
    /// was withheld from a replayed response).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<Uuid>,
}

/// Documented problem responses, referenced from every operation.
pub mod responses {
    use super::Problem;
    use utoipa::ToResponse;

    macro_rules! problem_response {
        ($name:ident, $description:literal) => {
            #[derive(ToResponse)]
            #[response(description = $description, content_type = "application/problem+json")]
            #[allow(dead_code)]
            pub struct $name(Problem);
        };
    }

    problem_response!(
        BadRequest,
        "Malformed JSON (`malformed-json`) or XML message (`malformed-message`), a bad path or query parameter (`invalid-parameter`), a cursor this list did not hand out (`invalid-cursor`), or a POST without `Idempotency-Key` (`idempotency-key-required`)."
    );
    problem_response!(
        Unauthorized,
        "No credentials (`unauthenticated`), a wrong, unknown, revoked or expired token (`invalid-token`, `token-expired`), or a bad partner signature (`signature-invalid`, `signature-expired`, `nonce-replayed`)."
    );
    problem_response!(
        Forbidden,
        "The caller's role does not allow the operation (`forbidden`)."
    );
    problem_response!(
        NotFound,
        "No such resource in the caller's organisation subtree (`not-found`). Resources of other organisations answer the same, so their ids do not leak."
    );
    problem_response!(
        Conflict,
        "The request conflicts with existing data (`conflict`), a request with the same `Idempotency-Key` is still running (`idempotency-in-flight`), or the replayed response carried a secret shown only once (`idempotency-secret-withheld`)."
    );
    problem_response!(
        PayloadTooLarge,
        "The body is larger than the configured limit (`payload-too-large`)."
    );
    problem_response!(
        UnsupportedMediaType,
        "The body is not `application/json` (`unsupported-media-type`)."
    );
    problem_response!(
        Unprocessable,
        "Unknown fields, wrong types or invalid values, listed in `errors` (`validation`), or an `Idempotency-Key` reused for a different request (`idempotency-key-reused`)."
    );
    problem_response!(
        Internal,
        "An internal error (`internal`): it is logged in full; quote `instance`, the request id."
    );
    problem_response!(
        Unavailable,
        "A dependency (database, broker) cannot be reached (`unavailable`)."
    );
}

/// An error as handlers return it.
#[derive(Debug)]
pub struct ApiError {
    pub kind: ProblemKind,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub resource_id: Option<Uuid>,
    /// The cause of an internal error, logged and never shown.
    source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        ApiError {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            resource_id: None,
            source: None,
        }
    }

    /// A validation problem listing every invalid field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => format!("{}: {}", errors[0].field, errors[0].message),
            n => format!("{n} fields are invalid"),
        };
        ApiError {
            errors,
            ..ApiError::new(ProblemKind::Validation, detail)
        }
    }

    /// A bad path or query parameter.
    pub fn parameter(field: impl Into<String>, message: impl Into<String>) -> Self {
        let error = FieldError::new(field, message);
        ApiError {
            detail: format!("{}: {}", error.field, error.message),
            errors: vec![error],
            ..ApiError::new(ProblemKind::InvalidParameter, String::new())
        }
    }

    /// No such resource, or one outside the caller's subtree: the two are not told apart.
    pub fn not_found(what: &str) -> Self {
        ApiError::new(ProblemKind::NotFound, format!("no such {what}"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        ApiError::new(ProblemKind::Forbidden, detail)
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        ApiError::new(ProblemKind::Conflict, detail)
    }

    /// An internal error: logged in full, answered with a generic 500.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        ApiError {
            source: Some(source.into()),
            ..ApiError::new(
                ProblemKind::Internal,
                "the server failed to handle the request; it is logged under this request's id",
            )
        }
    }

    pub fn with_resource(mut self, id: Uuid) -> Self {
        self.resource_id = Some(id);
        self
    }

    /// The problem body, without its `instance`, which the problem middleware fills in.
    pub fn to_problem(&self) -> Problem {
        Problem {
            type_uri: self.kind.type_uri(),
            title: self.kind.title().to_owned(),
            status: self.kind.status().as_u16(),
            detail: self.detail.clone(),
            instance: String::new(),
            errors: self.errors.clone(),
            resource_id: self.resource_id,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.slug(), self.detail)
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(err: sea_orm::DbErr) -> Self {
        ApiError::internal(err)
    }
}

impl From<ledger::LedgerError> for ApiError {
    fn from(err: ledger::LedgerError) -> Self {
        match err {
            ledger::LedgerError::UnknownAccount(_) => ApiError::not_found("account"),
            other => ApiError::internal(other),
        }
    }
}

impl From<workflows::EngineError> for ApiError {
    fn from(err: workflows::EngineError) -> Self {
        match err {
            workflows::EngineError::UnknownInstance(_) => ApiError::not_found("workflow instance"),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            // The span of the request carries its id, so the log line and the response's
            // `instance` can be matched.
            tracing::error!(error = format!("{source:#}"), "internal error");
        }
        let mut response = self.kind.status().into_response();
        response.extensions_mut().insert(self.to_problem());
        response
    }
}

/// Maps a unique-constraint violation to a precise client error; any other database error
/// stays internal. The one place where constraint names meet client messages.
pub fn unique_violation(err: sea_orm::DbErr, detail: impl FnOnce() -> String) -> ApiError {
    match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => ApiError::conflict(detail()),
        _ => ApiError::internal(err),
    }
}

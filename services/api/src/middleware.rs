//! The layers every request passes: request id, problem bodies, panics, fallbacks.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, PROBLEM_JSON, Problem, ProblemKind};

pub const REQUEST_ID: &str = "x-request-id";

/// Whether a client's request id may be kept: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`,
/// so that it cannot forge log lines or bloat them.
fn acceptable_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=128).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Drops a client's request id that is not acceptable, so that the request-id layer makes a
/// new one.
pub async fn sanitize_request_id(mut req: Request, next: Next) -> Response {
    if req
        .headers()
        .get(REQUEST_ID)
        .is_some_and(|v| !acceptable_request_id(v))
    {
        req.headers_mut().remove(REQUEST_ID);
    }
    next.run(req).await
}

/// Writes problem bodies: the problem a handler returned, with `instance` set to the request
/// id, or, for an error response some layer wrote without one (a timeout, a panic, a body
/// over the limit), a problem of the kind its status names.
pub async fn problems(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let response = next.run(req).await;
    let status = response.status();
    let problem = response.extensions().get::<Problem>().cloned();
    let is_problem = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    let mut problem = match problem {
        Some(problem) => problem,
        None if status.is_client_error() || status.is_server_error() => {
            if is_problem {
                return response;
            }
            let kind = ProblemKind::for_status(status);
            let mut problem = ApiError::new(kind, default_detail(kind)).to_problem();
            problem.status = status.as_u16();
            problem
        }
        None => return response,
    };
    problem.instance = request_id;
    let (mut parts, _) = response.into_parts();
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    if status == StatusCode::UNAUTHORIZED && !parts.headers.contains_key(WWW_AUTHENTICATE) {
        parts
            .headers
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    let body = serde_json::to_vec(&problem).expect("a problem serialises");
    Response::from_parts(parts, Body::from(body))
}

fn default_detail(kind: ProblemKind) -> &'static str {
    match kind {
        ProblemKind::PayloadTooLarge => "the body is larger than the limit",
        ProblemKind::Timeout => "the request took longer than the server allows; it was stopped",
        ProblemKind::MethodNotAllowed => "this resource does not take that method",
        ProblemKind::NotFound => "no such resource",
        ProblemKind::Internal => {
            "the server failed to handle the request; it is logged under this request's id"
        }
        _ => "the request was refused",
    }
}

/// Turns a panic in a handler into a logged 500 problem.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(not a string)");
    ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
}

/// The answer for a path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(ProblemKind::NotFound, "no route matches this path")
}

/// The answer for a method a route does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ProblemKind::MethodNotAllowed,
        "this resource does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_that_could_forge_logs_are_refused() {
        assert!(acceptable_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!acceptable_request_id(&HeaderValue::from_static("a b")));
        assert!(!acceptable_request_id(&HeaderValue::from_static("")));
        let long = "a".repeat(129);
        assert!(!acceptable_request_id(
            &HeaderValue::from_str(&long).unwrap()
        ));
    }
}

//! Extractors whose every rejection is a precise problem: JSON bodies (content type, size,
//! syntax, unknown fields, types, then the type's own validation), path and query parameters.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError, ProblemKind};

/// A request type that checks its own values after it deserialised.
pub trait Validate {
    /// Every invalid field, or nothing.
    fn validate(&self) -> Vec<FieldError>;
}

/// A JSON body: `application/json` only, within the body limit, no unknown fields (the types
/// say `deny_unknown_fields`), and valid by [`Validate`].
pub struct Json<T>(pub T);

/// Whether a content type is JSON (`application/json` or `application/*+json`).
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Whether reading a body failed because it was longer than the limit.
pub(crate) fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(err) = cause {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Reads a whole body; the body-limit layer has wrapped it, so a longer body fails here.
pub(crate) async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX).await.map_err(|err| {
        if is_length_limit(&err) {
            ApiError::new(
                ProblemKind::PayloadTooLarge,
                "the body is larger than the limit",
            )
        } else {
            ApiError::new(
                ProblemKind::MalformedJson,
                format!("the body could not be read: {err}"),
            )
        }
    })
}

/// serde_json's message without its " at line 1 column 7" suffix, which `field` replaces.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// Parses a JSON body, telling syntax errors (400) from data errors (422, with the field).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer);
    if value.is_ok() {
        deserializer.end().map_err(|err| {
            ApiError::new(
                ProblemKind::MalformedJson,
                format!("the body is not valid JSON: {err}"),
            )
        })?;
    }
    value.map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { String::new() } else { path };
                ApiError::validation(vec![FieldError::new(
                    field,
                    without_position(&inner.to_string()),
                )])
            }
            serde_json::error::Category::Eof if bytes.iter().all(u8::is_ascii_whitespace) => {
                ApiError::new(
                    ProblemKind::MalformedJson,
                    "the body is empty: send a JSON object",
                )
            }
            _ => ApiError::new(
                ProblemKind::MalformedJson,
                format!("the body is not valid JSON: {inner}"),
            ),
        }
    })
}

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !is_json(content_type) {
            let sent = if content_type.is_empty() {
                "no Content-Type".to_owned()
            } else {
                format!("Content-Type {content_type:?}")
            };
            return Err(ApiError::new(
                ProblemKind::UnsupportedMediaType,
                format!("the body must be application/json; the request has {sent}"),
            ));
        }
        let bytes = read_body(req.into_body()).await?;
        let value: T = parse_json(&bytes)?;
        let errors = value.validate();
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(Json(value))
    }
}

/// Path parameters; a value of the wrong form (not a UUID) is a 400 `invalid-parameter`.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind;
    match rejection {
        PathRejection::FailedToDeserializePathParams(err) => match err.into_kind() {
            ErrorKind::ParseErrorAtKey {
                key,
                value,
                expected_type,
            } => ApiError::parameter(
                key,
                format!("{value:?} is not a valid {}", friendly_type(expected_type)),
            ),
            ErrorKind::ParseError {
                value,
                expected_type,
            }
            | ErrorKind::ParseErrorAtIndex {
                value,
                expected_type,
                ..
            } => ApiError::parameter(
                "path",
                format!("{value:?} is not a valid {}", friendly_type(expected_type)),
            ),
            ErrorKind::DeserializeError {
                key,
                value,
                message,
            } => ApiError::parameter(key, format!("{value:?} is not valid: {message}")),
            other => ApiError::parameter("path", other.to_string()),
        },
        other => ApiError::internal(anyhow::anyhow!("path extraction: {other}")),
    }
}

fn friendly_type(expected: &str) -> &str {
    if expected.ends_with("Uuid") {
        "UUID"
    } else {
        expected
    }
}

/// Query parameters; unknown parameters and values of the wrong form are a 400
/// `invalid-parameter`.
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(err)) => {
                let message = err.body_text();
                let message = message
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&message)
                    .to_owned();
                Err(ApiError::parameter("query", message))
            }
            Err(other) => Err(ApiError::internal(anyhow::anyhow!(
                "query extraction: {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: u32,
    }

    #[test]
    fn syntax_errors_are_malformed_json_and_data_errors_name_the_field() {
        let err = parse_json::<Body>(b"{\"name\": ").unwrap_err();
        assert_eq!(err.kind, ProblemKind::MalformedJson);
        let err = parse_json::<Body>(b"").unwrap_err();
        assert_eq!(err.kind, ProblemKind::MalformedJson);
        let err = parse_json::<Body>(br#"{"name": "a", "count": "x"}"#).unwrap_err();
        assert_eq!(err.kind, ProblemKind::Validation);
        assert_eq!(err.errors[0].field, "count");
        let err = parse_json::<Body>(br#"{"name": "a", "count": 1, "extra": 1}"#).unwrap_err();
        assert_eq!(err.kind, ProblemKind::Validation);
        assert!(err.errors[0].message.contains("unknown field"), "{err:?}");
        let err = parse_json::<Body>(br#"{"name": "a", "count": 1} trailing"#).unwrap_err();
        assert_eq!(err.kind, ProblemKind::MalformedJson);
        assert!(parse_json::<Body>(br#"{"name": "a", "count": 1}"#).is_ok());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }
}

//! Cursor pagination: every list takes `limit` (1 to [`MAX_LIMIT`], default
//! [`DEFAULT_LIMIT`]) and an opaque `cursor` from the previous page's `next_cursor`.
//!
//! A cursor is the list's name and the sort key of the last item seen, base64url-encoded. It
//! is opaque to clients, not secret: a forged cursor only moves within what the caller may see
//! anyway, because every query also filters by the caller's subtree. A cursor of another list,
//! or anything that does not decode, is a 400 `invalid-cursor`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{ApiError, ProblemKind};

/// Items per page when `limit` is absent.
pub const DEFAULT_LIMIT: u64 = 50;
/// Most items per page.
pub const MAX_LIMIT: u64 = 200;

/// The page size a request asked for, checked against the bounds.
pub fn limit(requested: Option<u64>) -> Result<u64, ApiError> {
    match requested {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::parameter(
            "limit",
            format!("{n} is out of range: 1 to {MAX_LIMIT}"),
        )),
    }
}

/// Encodes the sort key of the last item of a page for the list `list`.
pub fn encode(list: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{list}|{key}"))
}

/// Decodes a cursor of the list `list` into the sort key it carries.
pub fn decode(list: &str, cursor: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::new(
            ProblemKind::InvalidCursor,
            format!("cursor {cursor:?} was not handed out by this list"),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (name, key) = text.split_once('|').ok_or_else(invalid)?;
    if name != list || key.is_empty() {
        return Err(invalid());
    }
    Ok(key.to_owned())
}

/// Decodes a cursor whose key is a UUID.
pub fn decode_uuid(list: &str, cursor: Option<&str>) -> Result<Option<uuid::Uuid>, ApiError> {
    cursor
        .map(|c| {
            decode(list, c)?.parse().map_err(|_| {
                ApiError::new(
                    ProblemKind::InvalidCursor,
                    format!("cursor {c:?} was not handed out by this list"),
                )
            })
        })
        .transpose()
}

/// Decodes a cursor whose key is a sequence number.
pub fn decode_seq(list: &str, cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|c| {
            decode(list, c)?
                .parse()
                .ok()
                .filter(|n: &i64| *n >= 0)
                .ok_or_else(|| {
                    ApiError::new(
                        ProblemKind::InvalidCursor,
                        format!("cursor {c:?} was not handed out by this list"),
                    )
                })
        })
        .transpose()
}

/// Takes one item more than the page to know whether another page follows; returns the
/// page and the cursor of the next one.
pub fn split<T>(
    mut rows: Vec<T>,
    limit: u64,
    list: &str,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() as u64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|last| encode(list, &key(last)))
    } else {
        None
    };
    (rows, next)
}

/// Declares a page type of a list, so that each appears in the OpenAPI document by name.
#[macro_export]
macro_rules! page_type {
    ($name:ident, $item:ty, $what:literal) => {
        #[doc = concat!("A page of ", $what, ". `next_cursor` is absent on the last page.")]
        #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; absent on the last page.
            pub next_cursor: Option<String>,
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_lists_and_garbage() {
        let id = uuid::Uuid::now_v7();
        let cursor = encode("users", &id.to_string());
        assert_eq!(decode_uuid("users", Some(&cursor)).unwrap(), Some(id));
        let err = decode_uuid("accounts", Some(&cursor)).unwrap_err();
        assert_eq!(err.kind, ProblemKind::InvalidCursor);
        for garbage in [
            "",
            "!!!",
            "bm90IGEgY3Vyc29y",
            &encode("users", "not-a-uuid"),
        ] {
            let err = decode_uuid("users", Some(garbage)).unwrap_err();
            assert_eq!(err.kind, ProblemKind::InvalidCursor, "{garbage}");
        }
        assert_eq!(
            decode_seq("statement", Some(&encode("statement", "7"))).unwrap(),
            Some(7)
        );
        assert!(decode_seq("statement", Some(&encode("statement", "-1"))).is_err());
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(limit(Some(MAX_LIMIT)).unwrap(), MAX_LIMIT);
        assert!(limit(Some(0)).is_err());
        assert!(limit(Some(MAX_LIMIT + 1)).is_err());
    }
}

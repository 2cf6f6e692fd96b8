//! Signed partner requests: HMAC-SHA256 over the request, a timestamp and a nonce.
//!
//! A partner sends four headers:
//! - `X-Api-Key`: the key's id (a UUID);
//! - `X-Timestamp`: the time of signing, in Unix seconds;
//! - `X-Nonce`: 16 to 64 characters of `A-Z a-z 0-9 - _`, new for every request;
//! - `X-Signature`: lower-case hex of HMAC-SHA256, keyed with the key's secret (its UTF-8
//!   bytes, exactly as shown when the key was created), over the canonical string
//!   ([`canonical_string`]):
//!
//! ```text
//! FORECOURT-HMAC-SHA256\n
//! <method, upper case>\n
//! <path, exactly as on the request line, percent-encoding kept>\n
//! <query, exactly as on the request line without '?', or empty>\n
//! <X-Timestamp>\n
//! <X-Nonce>\n
//! <lower-case hex SHA-256 of the body (of zero bytes when there is none)>
//! ```
//!
//! The lines are joined by a single `\n`, with none after the last. The server accepts a
//! timestamp within ±5 minutes of its clock, and a nonce once per key: a replay inside the
//! window is refused, and one after it fails on the timestamp.

use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait};
use uuid::Uuid;

use entities::{api_keys, api_nonces};

use crate::crypto::{constant_time_eq, hmac_sha256_hex, sha256_hex};
use crate::directory::find_org;
use crate::error::{ApiError, ProblemKind};
use crate::policy::{Caller, Role, Subject};
use crate::state::AppState;

pub const HEADER_KEY: &str = "x-api-key";
pub const HEADER_TIMESTAMP: &str = "x-timestamp";
pub const HEADER_NONCE: &str = "x-nonce";
pub const HEADER_SIGNATURE: &str = "x-signature";

/// The first line of the canonical string: names the scheme and its version.
pub const SCHEME: &str = "FORECOURT-HMAC-SHA256";

/// The string a partner signs.
pub fn canonical_string(
    method: &str,
    path: &str,
    query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    format!(
        "{SCHEME}\n{}\n{path}\n{query}\n{timestamp}\n{nonce}\n{}",
        method.to_ascii_uppercase(),
        sha256_hex(body)
    )
}

/// The signature of a request, as a partner computes it.
pub fn sign(
    secret: &str,
    method: &str,
    path: &str,
    query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    hmac_sha256_hex(
        secret.as_bytes(),
        canonical_string(method, path, query, timestamp, nonce, body).as_bytes(),
    )
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new(ProblemKind::SignatureInvalid, detail)
}

fn header<'a>(parts: &'a Parts, name: &str) -> Result<&'a str, ApiError> {
    parts
        .headers
        .get(name)
        .ok_or_else(|| invalid(format!("the {name} header is missing")))?
        .to_str()
        .map_err(|_| invalid(format!("the {name} header is not visible ASCII")))
}

fn valid_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Verifies a signed request and returns its caller. The nonce is recorded only once the
/// signature is valid, so that unsigned junk cannot fill the nonce table.
pub async fn verify(
    state: &AppState,
    parts: &Parts,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Caller, ApiError> {
    let key_id: Uuid = header(parts, HEADER_KEY)?
        .parse()
        .map_err(|_| invalid("X-Api-Key is not a key id"))?;
    let timestamp: i64 = header(parts, HEADER_TIMESTAMP)?
        .parse()
        .map_err(|_| invalid("X-Timestamp is not a number of Unix seconds"))?;
    let nonce = header(parts, HEADER_NONCE)?;
    if !valid_nonce(nonce) {
        return Err(invalid(
            "X-Nonce must be 16 to 64 characters of A-Z, a-z, 0-9, '-', '_'",
        ));
    }
    let signature = header(parts, HEADER_SIGNATURE)?;
    let window = state.config.signature_window.as_secs() as i64;
    if (now.timestamp() - timestamp).abs() > window {
        return Err(ApiError::new(
            ProblemKind::SignatureExpired,
            format!(
                "X-Timestamp {timestamp} is more than {window} seconds from the server's time {}",
                now.timestamp()
            ),
        ));
    }
    let key = api_keys::Entity::find_by_id(key_id)
        .one(&state.db)
        .await?
        .filter(|k| k.revoked_at.is_none())
        // Unknown and revoked keys are refused like a wrong signature: nothing to probe.
        .ok_or_else(|| invalid("the signature does not match"))?;
    if key.encryption_key_id != state.keys.id() {
        return Err(ApiError::internal(anyhow::anyhow!(
            "API key {key_id} was encrypted under key {}, this process has {}",
            key.encryption_key_id,
            state.keys.id()
        )));
    }
    let secret = state
        .keys
        .decrypt(&key.secret_ciphertext, key_id.as_bytes())
        .map_err(ApiError::internal)?;
    let expected = sign(
        &secret,
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        timestamp,
        nonce,
        body,
    );
    if !constant_time_eq(&expected, &signature.to_ascii_lowercase()) {
        return Err(invalid("the signature does not match"));
    }
    let expires_at = DateTime::from_timestamp(timestamp + window + 60, 0)
        .ok_or_else(|| invalid("X-Timestamp is out of range"))?;
    let inserted = api_nonces::Entity::insert(api_nonces::ActiveModel {
        api_key_id: Set(key_id),
        nonce: Set(nonce.to_owned()),
        expires_at: Set(expires_at),
    })
    .on_conflict(
        OnConflict::columns([api_nonces::Column::ApiKeyId, api_nonces::Column::Nonce])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&state.db)
    .await?;
    if inserted == 0 {
        return Err(ApiError::new(
            ProblemKind::NonceReplayed,
            "this X-Nonce was accepted before: sign every request with a new one",
        ));
    }
    let org = find_org(&state.db, key.organisation_id)
        .await?
        .ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("API key {key_id} has no organisation"))
        })?;
    Ok(Caller {
        subject: Subject::ApiKey { id: key_id },
        role: Role::Partner,
        org,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_string_is_exactly_as_documented() {
        let text = canonical_string(
            "post",
            "/v1/orders",
            "a=1&b=2",
            1_700_000_000,
            "n0nce-0123456789",
            b"",
        );
        assert_eq!(
            text,
            "FORECOURT-HMAC-SHA256\nPOST\n/v1/orders\na=1&b=2\n1700000000\nn0nce-0123456789\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

//! Posting webhook deliveries: each pending delivery is claimed (its next attempt moved past a
//! lease, conditionally, so two processes never post the same one at once), posted as JSON
//! with an HMAC-SHA256 signature, and marked delivered on a 2xx answer; otherwise it is tried
//! again with exponential backoff (1 s doubling up to an hour) until `MAX_ATTEMPTS`, then
//! marked failed. Delivery is at least once: receivers deduplicate on `Forecourt-Webhook-Id`.
//!
//! The signature: `Forecourt-Webhook-Signature: v1=<hex HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`
//! with `Forecourt-Webhook-Timestamp` (Unix seconds); receivers should refuse a timestamp far
//! from their clock.

use std::time::Duration;

use chrono::Utc;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde_json::json;
use tokio::sync::watch;

use entities::{webhook_deliveries as deliveries, webhook_subscriptions as subscriptions};

use crate::crypto::{KeyEncryption, hmac_sha256_hex};

pub const HEADER_ID: &str = "forecourt-webhook-id";
pub const HEADER_TIMESTAMP: &str = "forecourt-webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "forecourt-webhook-signature";
pub const HEADER_TOPIC: &str = "forecourt-webhook-topic";

/// Attempts before a delivery is given up (about a day of backoff).
pub const MAX_ATTEMPTS: i32 = 30;
/// How long a claimed delivery is left to its poster before another may take it.
const LEASE: Duration = Duration::from_secs(60);

/// The signature of a delivery's body.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{id}.{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    format!("v1={}", hmac_sha256_hex(secret.as_bytes(), &message))
}

fn backoff(attempts: i32) -> chrono::Duration {
    let secs = 1i64 << attempts.clamp(0, 12);
    chrono::Duration::seconds(secs.min(3_600))
}

/// Posts up to `limit` due deliveries; returns how many were tried.
pub async fn deliver_due(
    db: &DatabaseConnection,
    keys: &KeyEncryption,
    http: &reqwest::Client,
    limit: u64,
) -> Result<usize, DbErr> {
    let now = Utc::now();
    let due = deliveries::Entity::find()
        .filter(deliveries::Column::Status.eq("pending"))
        .filter(deliveries::Column::NextAttemptAt.lte(now))
        .order_by_asc(deliveries::Column::NextAttemptAt)
        .limit(limit)
        .all(db)
        .await?;
    let mut tried = 0;
    for delivery in due {
        // Claim: only the process that moves the attempt time from what it read posts it.
        let lease = now + chrono::Duration::from_std(LEASE).expect("small");
        let claimed = deliveries::Entity::update_many()
            .set(deliveries::ActiveModel {
                next_attempt_at: Set(lease),
                ..Default::default()
            })
            .filter(deliveries::Column::Id.eq(delivery.id))
            .filter(deliveries::Column::Status.eq("pending"))
            .filter(deliveries::Column::NextAttemptAt.eq(delivery.next_attempt_at))
            .exec(db)
            .await?;
        if claimed.rows_affected != 1 {
            continue;
        }
        tried += 1;
        let outcome = post(db, keys, http, &delivery).await;
        let attempts = delivery.attempts + 1;
        let mut update = deliveries::ActiveModel {
            attempts: Set(attempts),
            ..Default::default()
        };
        match outcome {
            Ok(status) if (200..300).contains(&status) => {
                update.status = Set("delivered".into());
                update.last_status = Set(Some(i32::from(status)));
                update.last_error = Set(None);
                update.delivered_at = Set(Some(Utc::now()));
            }
            other => {
                let (status, error) = match other {
                    Ok(status) => (Some(i32::from(status)), format!("answered {status}")),
                    Err(error) => (None, error),
                };
                update.last_status = Set(status);
                update.last_error = Set(Some(error));
                if attempts >= MAX_ATTEMPTS {
                    update.status = Set("failed".into());
                } else {
                    update.next_attempt_at = Set(Utc::now() + backoff(attempts - 1));
                }
            }
        }
        deliveries::Entity::update_many()
            .set(update)
            .filter(deliveries::Column::Id.eq(delivery.id))
            .exec(db)
            .await?;
    }
    Ok(tried)
}

async fn post(
    db: &DatabaseConnection,
    keys: &KeyEncryption,
    http: &reqwest::Client,
    delivery: &deliveries::Model,
) -> Result<u16, String> {
    let subscription = subscriptions::Entity::find_by_id(delivery.subscription_id)
        .one(db)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the subscription is gone")?;
    if subscription.revoked_at.is_some() {
        return Err("the subscription was revoked".into());
    }
    let secret = keys
        .decrypt(&subscription.secret_ciphertext, subscription.id.as_bytes())
        .map_err(|e| format!("the secret cannot be read: {e}"))?;
    let data: serde_json::Value =
        serde_json::from_str(&delivery.payload).map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(&json!({
        "id": delivery.event_id,
        "topic": delivery.topic,
        "occurred_at": delivery.occurred_at,
        "data": data,
    }))
    .map_err(|e| e.to_string())?;
    let timestamp = Utc::now().timestamp();
    let id = delivery.event_id.to_string();
    let response = http
        .post(&subscription.url)
        .header("content-type", "application/json")
        .header(HEADER_ID, &id)
        .header(HEADER_TOPIC, &delivery.topic)
        .header(HEADER_TIMESTAMP, timestamp.to_string())
        .header(HEADER_SIGNATURE, signature(&secret, &id, timestamp, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| format!("not delivered: {e}"))?;
    Ok(response.status().as_u16())
}

/// Posts deliveries until `stop` turns true, waking every `every`.
pub async fn run(
    db: DatabaseConnection,
    keys: std::sync::Arc<KeyEncryption>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "webhook deliveries cannot start");
            return;
        }
    };
    loop {
        match deliver_due(&db, &keys, &http, 50).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "webhook deliveries"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

//! Domain events to webhook deliveries. A `Published` message on the `events` topic becomes,
//! in the transaction that consumes it, one pending delivery per live subscription whose
//! topics match; the inbox row of the message and the deliveries commit together, so an
//! event redelivered by the transport is fanned out once. Posting the deliveries (signed,
//! retried) is the API process's work (`api::webhooks`).

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter};
use serde_json::Value;
use uuid::Uuid;

use entities::{webhook_deliveries, webhook_subscriptions};

/// Whether a space-separated list of patterns (`topic`, `prefix.*`, `*`) takes `topic`.
pub fn matches(patterns: &str, topic: &str) -> bool {
    patterns.split_whitespace().any(|p| {
        p == "*"
            || p == topic
            || p.strip_suffix(".*").is_some_and(|prefix| {
                topic.starts_with(prefix) && topic[prefix.len()..].starts_with('.')
            })
    })
}

/// Writes the deliveries of one event in `txn`.
pub(crate) async fn fan_out(
    txn: &impl ConnectionTrait,
    event_id: Uuid,
    topic: &str,
    payload: &Value,
    at: DateTime<Utc>,
) -> Result<usize, DbErr> {
    let subscriptions = webhook_subscriptions::Entity::find()
        .filter(webhook_subscriptions::Column::RevokedAt.is_null())
        .all(txn)
        .await?;
    let rows: Vec<webhook_deliveries::ActiveModel> = subscriptions
        .iter()
        .filter(|s| matches(&s.topics, topic))
        .map(|s| webhook_deliveries::ActiveModel {
            id: Set(Uuid::now_v7()),
            subscription_id: Set(s.id),
            event_id: Set(event_id),
            topic: Set(topic.to_owned()),
            payload: Set(payload.to_string()),
            occurred_at: Set(at),
            status: Set("pending".into()),
            attempts: Set(0),
            next_attempt_at: Set(at),
            last_status: Set(None),
            last_error: Set(None),
            delivered_at: Set(None),
        })
        .collect();
    let n = rows.len();
    if n > 0 {
        webhook_deliveries::Entity::insert_many(rows)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn topic_patterns_take_exact_topics_prefixes_at_a_dot_and_everything() {
        assert!(matches(
            "treasury.instruction.settled",
            "treasury.instruction.settled"
        ));
        assert!(matches(
            "payments.* treasury.*",
            "treasury.instruction.settled"
        ));
        assert!(!matches("treasury.*", "treasuryx.instruction"));
        assert!(!matches(
            "treasury.instruction.settled",
            "treasury.instruction.rejected"
        ));
        assert!(matches("*", "anything.at.all"));
        assert!(!matches("", "treasury.instruction.settled"));
    }
}

//! Domain events to webhook deliveries. A `Published` message on the `events` topic becomes,
//! in the transaction that consumes it, one pending delivery per live subscription whose
//! topics match and that may see the event; the inbox row of the message and the deliveries
//! commit together, so an event redelivered by the transport is fanned out once. Posting
//! the deliveries (signed, retried) is the API process's work (`api::webhooks`).
//!
//! Who may see an event: the platform operator's subscriptions see every event; another
//! organisation's (a partner's) only the events whose payload names it in `audience`, an
//! array of organisation ids.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use std::collections::BTreeSet;

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect};
use serde_json::Value;
use uuid::Uuid;

use entities::{organisations, webhook_deliveries, webhook_subscriptions};

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

/// The organisations an event names in its `audience`.
pub fn audience(payload: &Value) -> BTreeSet<Uuid> {
    payload["audience"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().and_then(|id| id.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the deliveries of one event in `txn`.
pub(crate) async fn fan_out(
    txn: &impl ConnectionTrait,
    event_id: Uuid,
    topic: &str,
    payload: &Value,
    at: DateTime<Utc>,
) -> Result<usize, DbErr> {
    let subscriptions: Vec<webhook_subscriptions::Model> = webhook_subscriptions::Entity::find()
        .filter(webhook_subscriptions::Column::RevokedAt.is_null())
        .all(txn)
        .await?
        .into_iter()
        .filter(|s| matches(&s.topics, topic))
        .collect();
    if subscriptions.is_empty() {
        return Ok(0);
    }
    let named = audience(payload);
    let owners: BTreeSet<Uuid> = subscriptions.iter().map(|s| s.organisation_id).collect();
    // The platform operator is the root of the organisation tree.
    let operators: BTreeSet<Uuid> = organisations::Entity::find()
        .select_only()
        .column(organisations::Column::Id)
        .filter(organisations::Column::Id.is_in(owners))
        .filter(organisations::Column::ParentId.is_null())
        .into_tuple::<Uuid>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let rows: Vec<webhook_deliveries::ActiveModel> = subscriptions
        .iter()
        .filter(|s| operators.contains(&s.organisation_id) || named.contains(&s.organisation_id))
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
    fn an_events_audience_is_the_organisation_ids_it_names() {
        let partner = uuid::Uuid::now_v7();
        let named = super::audience(&serde_json::json!({"audience": [partner, "not an id"]}));
        assert_eq!(named.into_iter().collect::<Vec<_>>(), vec![partner]);
        assert!(super::audience(&serde_json::json!({"instruction_id": partner})).is_empty());
    }

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

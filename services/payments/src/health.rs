//! The channels' health as routing sees it, kept in storage so that it survives restarts and
//! is shared by every process: one row per attempt with what the channel did
//! ([`record_attempts`], written by the payment's workflow when it finishes), read back into
//! each channel's [`ChannelHealth`] (breaker, success rate, payers that just failed there) by
//! a [`HealthBook`] that loads only what is new, at most once a second.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use entities::pos_channel_attempts as attempts;

use crate::model::ChannelId;
use crate::routing::{BreakerPolicy, ChannelHealth, PAYER_EXCLUSION_MS, PayerToken, Signal};
use crate::stations::StoreError;

/// What one attempt told about its channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSignal {
    pub channel: ChannelId,
    pub signal: Signal,
    /// The payer's fingerprint, kept when the attempt did not charge.
    pub payer: Option<PayerToken>,
}

fn signal_text(signal: Signal) -> &'static str {
    match signal {
        Signal::Succeeded => "succeeded",
        Signal::Declined => "declined",
        Signal::Failed => "failed",
    }
}

fn parse_signal(text: &str) -> Option<Signal> {
    Some(match text {
        "succeeded" => Signal::Succeeded,
        "declined" => Signal::Declined,
        "failed" => Signal::Failed,
        _ => return None,
    })
}

/// Stores a finished payment's attempts; writing them again changes nothing.
pub async fn record_attempts(
    db: &impl ConnectionTrait,
    payment_no: &str,
    at: DateTime<Utc>,
    signals: &[AttemptSignal],
) -> Result<(), StoreError> {
    if signals.is_empty() {
        return Ok(());
    }
    let namespace = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"forecourt/pos_channel_attempts");
    let rows = signals
        .iter()
        .enumerate()
        .map(|(i, s)| attempts::ActiveModel {
            id: Set(Uuid::new_v5(
                &namespace,
                format!("{payment_no}/{i}").as_bytes(),
            )),
            channel_id: Set(s.channel.to_string()),
            at: Set(at),
            signal: Set(signal_text(s.signal).to_owned()),
            payer_token: Set(match s.signal {
                Signal::Succeeded => None,
                _ => s.payer.as_ref().map(|p| p.as_str().to_owned()),
            }),
        });
    attempts::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(attempts::Column::Id)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(())
}

/// How far back the book looks, and how often it loads.
const LOOK_BACK_MS: i64 = PAYER_EXCLUSION_MS;
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Rows written by other processes may carry a time slightly before what was loaded last:
/// each load reaches back this far and skips what it has seen.
const OVERLAP_MS: i64 = 5_000;
const MOST_PER_LOAD: u64 = 20_000;

/// Every channel's health, loaded incrementally from storage.
pub struct HealthBook {
    policy: BreakerPolicy,
    health: BTreeMap<ChannelId, ChannelHealth>,
    loaded_until: Option<DateTime<Utc>>,
    refreshed: Option<Instant>,
    /// Ids loaded within the overlap, with their times.
    seen: VecDeque<(DateTime<Utc>, Uuid)>,
    seen_ids: HashSet<Uuid>,
}

impl HealthBook {
    pub fn new(policy: BreakerPolicy) -> Self {
        HealthBook {
            policy,
            health: BTreeMap::new(),
            loaded_until: None,
            refreshed: None,
            seen: VecDeque::new(),
            seen_ids: HashSet::new(),
        }
    }

    /// The channels' health now, loading what is new when the last load is a second old.
    pub async fn snapshot(
        &mut self,
        db: &impl ConnectionTrait,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<ChannelId, ChannelHealth>, StoreError> {
        let due = self
            .refreshed
            .is_none_or(|at| at.elapsed() >= REFRESH_EVERY);
        if due {
            self.load(db, now).await?;
            self.refreshed = Some(Instant::now());
        }
        Ok(self.health.clone())
    }

    async fn load(
        &mut self,
        db: &impl ConnectionTrait,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let from = match self.loaded_until {
            Some(until) => until - chrono::Duration::milliseconds(OVERLAP_MS),
            None => now - chrono::Duration::milliseconds(LOOK_BACK_MS),
        };
        let rows = attempts::Entity::find()
            .filter(attempts::Column::At.gte(from))
            .order_by_asc(attempts::Column::At)
            .limit(MOST_PER_LOAD)
            .all(db)
            .await?;
        for row in rows {
            if !self.seen_ids.insert(row.id) {
                continue;
            }
            self.seen.push_back((row.at, row.id));
            let (Ok(channel), Some(signal)) =
                (ChannelId::new(row.channel_id), parse_signal(&row.signal))
            else {
                continue;
            };
            let payer = row.payer_token.map(PayerToken::from_stored);
            self.health
                .entry(channel)
                .or_insert_with(|| ChannelHealth::new(self.policy))
                .record(row.at, signal, payer.as_ref());
            if self.loaded_until.is_none_or(|until| row.at > until) {
                self.loaded_until = Some(row.at);
            }
        }
        if self.loaded_until.is_none() {
            self.loaded_until = Some(from);
        }
        // Forget ids older than the overlap: no load reaches them again.
        let horizon =
            self.loaded_until.unwrap_or(now) - chrono::Duration::milliseconds(OVERLAP_MS * 2);
        while let Some((at, id)) = self.seen.front().copied() {
            if at >= horizon {
                break;
            }
            self.seen.pop_front();
            self.seen_ids.remove(&id);
        }
        Ok(())
    }
}

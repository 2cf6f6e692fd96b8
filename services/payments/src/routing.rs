//! Routing: which channels may take a payment, in which order, and why the others may not.
//!
//! Pure functions over the channels' terms and a snapshot of their health; the result, a
//! [`RouteDecision`], is a value stored on the payment so that every choice can be explained
//! afterwards.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use ledger::money::Money;
use openssl::sha::sha256;
use serde::{Deserialize, Serialize};

use crate::model::{ChannelConfig, ChannelId, Method};

/// A one-way fingerprint of the payer's payment code or card number, so that routing can
/// avoid a channel on which it just failed without keeping the code itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PayerToken(String);

impl PayerToken {
    pub fn of(code_or_card: &str) -> Self {
        let digest = sha256(code_or_card.trim().as_bytes());
        PayerToken(digest.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// A fingerprint as stored (never a code: only what [`PayerToken::of`] made).
    pub fn from_stored(digest: String) -> Self {
        PayerToken(digest)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a channel did with one attempt, as the circuit breaker and the success rate see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The channel charged.
    Succeeded,
    /// The channel answered and refused (the payer's problem, not the channel's).
    Declined,
    /// An error, a timeout, or the channel was unavailable.
    Failed,
}

/// The breaker's terms; passed explicitly, never defaulted silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerPolicy {
    /// Failures within `window_ms` that open the breaker.
    pub failures_to_open: u32,
    pub window_ms: i64,
    /// How long the breaker stays open before letting one probe through.
    pub open_ms: i64,
    /// How many recent attempts the success rate looks at.
    pub history: usize,
}

/// The breaker's view at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open {
        until: DateTime<Utc>,
    },
    /// The open period is over: the next attempt is a probe.
    HalfOpen,
}

/// A channel's recent behaviour: a bounded history of signals, the breaker, the payers that
/// just failed on it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelHealth {
    policy: BreakerPolicy,
    recent: VecDeque<(DateTime<Utc>, Signal)>,
    opened_at: Option<DateTime<Utc>>,
    payer_failures: VecDeque<(DateTime<Utc>, PayerToken)>,
}

/// How long a payer stays excluded from a channel it just failed on.
pub const PAYER_EXCLUSION_MS: i64 = 10 * 60 * 1000;
const PAYER_FAILURES_KEPT: usize = 256;

impl ChannelHealth {
    pub fn new(policy: BreakerPolicy) -> Self {
        assert!(policy.history > 0 && policy.failures_to_open > 0);
        ChannelHealth {
            policy,
            recent: VecDeque::with_capacity(policy.history),
            opened_at: None,
            payer_failures: VecDeque::new(),
        }
    }

    /// Records one attempt's signal, and the payer when the attempt failed or was declined.
    pub fn record(&mut self, at: DateTime<Utc>, signal: Signal, payer: Option<&PayerToken>) {
        if self.recent.len() == self.policy.history {
            self.recent.pop_front();
        }
        self.recent.push_back((at, signal));
        if let (Some(payer), Signal::Declined | Signal::Failed) = (payer, signal) {
            if self.payer_failures.len() == PAYER_FAILURES_KEPT {
                self.payer_failures.pop_front();
            }
            self.payer_failures.push_back((at, payer.clone()));
        }
        match (self.breaker(at), signal) {
            (BreakerState::HalfOpen, Signal::Failed) => self.opened_at = Some(at),
            (BreakerState::HalfOpen, _) => self.opened_at = None,
            (BreakerState::Closed, Signal::Failed) => {
                let since = at - Duration::milliseconds(self.policy.window_ms);
                let failures = self
                    .recent
                    .iter()
                    .filter(|(t, s)| *t >= since && *s == Signal::Failed)
                    .count();
                if failures >= self.policy.failures_to_open as usize {
                    self.opened_at = Some(at);
                }
            }
            _ => {}
        }
    }

    pub fn breaker(&self, at: DateTime<Utc>) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(opened) => {
                let until = opened + Duration::milliseconds(self.policy.open_ms);
                if at < until {
                    BreakerState::Open { until }
                } else {
                    BreakerState::HalfOpen
                }
            }
        }
    }

    /// Successes per thousand recent attempts; a channel with no history counts as perfect.
    pub fn success_per_mille(&self) -> u32 {
        if self.recent.is_empty() {
            return 1000;
        }
        let ok = self
            .recent
            .iter()
            .filter(|(_, s)| *s == Signal::Succeeded)
            .count();
        (ok * 1000 / self.recent.len()) as u32
    }

    /// Whether this payer failed on the channel within the exclusion period.
    pub fn payer_failed_recently(&self, payer: &PayerToken, at: DateTime<Utc>) -> bool {
        let since = at - Duration::milliseconds(PAYER_EXCLUSION_MS);
        self.payer_failures
            .iter()
            .any(|(t, p)| *t >= since && p == payer)
    }
}

/// What routing is asked.
#[derive(Clone, Debug)]
pub struct RouteRequest<'a> {
    pub method: Method,
    pub amount: Money,
    pub at: DateTime<Utc>,
    /// The channels the station has signed; others are never considered.
    pub station_channels: &'a [ChannelId],
    pub payer: Option<&'a PayerToken>,
}

/// What routing knows about each channel at the moment of the decision.
#[derive(Clone, Debug, Default)]
pub struct RoutingSnapshot {
    pub health: BTreeMap<ChannelId, ChannelHealth>,
    /// Amounts already taken today per channel.
    pub used_today: BTreeMap<ChannelId, Money>,
}

/// Why a channel was left out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Exclusion {
    MethodNotServed,
    NotSignedByStation,
    Disabled,
    InMaintenance,
    CircuitOpen { until: DateTime<Utc> },
    CurrencyMismatch,
    OverSingleLimit { limit: Money },
    OverDailyLimit { remaining: Money },
    PayerFailedHere,
}

/// A channel that may take the payment, with the values that ranked it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub channel: ChannelId,
    pub priority: u32,
    pub fee: Money,
    pub success_per_mille: u32,
    /// The breaker is half-open: this attempt would be its probe.
    pub probe: bool,
}

/// The stored outcome of routing: the ranked candidates and every exclusion with its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteDecision {
    pub at: DateTime<Utc>,
    pub method: Method,
    pub amount: Money,
    pub candidates: Vec<Candidate>,
    pub excluded: Vec<(ChannelId, Exclusion)>,
}

impl RouteDecision {
    /// The best candidate not yet tried, if any.
    pub fn next_untried(&self, tried: &[ChannelId]) -> Option<&ChannelId> {
        self.candidates
            .iter()
            .map(|c| &c.channel)
            .find(|c| !tried.contains(c))
    }
}

/// Filters the channels that can take the payment and ranks them: priority first, then the
/// fee, then the recent success rate, then the id so that the order is total.
pub fn route(
    request: &RouteRequest<'_>,
    channels: &[ChannelConfig],
    snapshot: &RoutingSnapshot,
) -> RouteDecision {
    let mut candidates = Vec::new();
    let mut excluded = Vec::new();
    for channel in channels {
        match assess(request, channel, snapshot) {
            Ok(candidate) => candidates.push(candidate),
            Err(reason) => excluded.push((channel.id.clone(), reason)),
        }
    }
    candidates.sort_by(|a, b| {
        (
            a.priority,
            a.fee.amount(),
            std::cmp::Reverse(a.success_per_mille),
            &a.channel,
        )
            .cmp(&(
                b.priority,
                b.fee.amount(),
                std::cmp::Reverse(b.success_per_mille),
                &b.channel,
            ))
    });
    RouteDecision {
        at: request.at,
        method: request.method,
        amount: request.amount,
        candidates,
        excluded,
    }
}

fn assess(
    request: &RouteRequest<'_>,
    channel: &ChannelConfig,
    snapshot: &RoutingSnapshot,
) -> Result<Candidate, Exclusion> {
    if !channel.methods.contains(&request.method) {
        return Err(Exclusion::MethodNotServed);
    }
    if !request.station_channels.contains(&channel.id) {
        return Err(Exclusion::NotSignedByStation);
    }
    if !channel.enabled {
        return Err(Exclusion::Disabled);
    }
    if channel.in_maintenance(request.at) {
        return Err(Exclusion::InMaintenance);
    }
    let health = snapshot.health.get(&channel.id);
    let breaker = health.map_or(BreakerState::Closed, |h| h.breaker(request.at));
    if let BreakerState::Open { until } = breaker {
        return Err(Exclusion::CircuitOpen { until });
    }
    if request.amount.currency() != channel.currency {
        return Err(Exclusion::CurrencyMismatch);
    }
    if request.amount.amount() > channel.single_limit.amount() {
        return Err(Exclusion::OverSingleLimit {
            limit: channel.single_limit,
        });
    }
    let used = snapshot
        .used_today
        .get(&channel.id)
        .map_or(rust_decimal::Decimal::ZERO, |m| m.amount());
    let remaining = channel.daily_limit.amount() - used;
    if request.amount.amount() > remaining {
        let remaining = Money::new(remaining.max(rust_decimal::Decimal::ZERO), channel.currency)
            .expect("a difference of two amounts keeps the currency's scale");
        return Err(Exclusion::OverDailyLimit { remaining });
    }
    if let (Some(payer), Some(health)) = (request.payer, health)
        && health.payer_failed_recently(payer, request.at)
    {
        return Err(Exclusion::PayerFailedHere);
    }
    let fee = channel
        .fee_rate
        .fee_on(request.amount)
        .expect("a fee below the amount fits the currency");
    Ok(Candidate {
        channel: channel.id.clone(),
        priority: channel.priority,
        fee,
        success_per_mille: health.map_or(1000, ChannelHealth::success_per_mille),
        probe: breaker == BreakerState::HalfOpen,
    })
}

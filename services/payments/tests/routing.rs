//! Routing decisions, one reason at a time, and the circuit breaker's life cycle.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger::money::{Currency, Money};
use payments::model::{
    ChannelConfig, ChannelId, FeeMode, FeeRate, MaintenanceWindow, Method, Party,
};
use payments::routing::{
    BreakerPolicy, BreakerState, ChannelHealth, Exclusion, PayerToken, RouteRequest,
    RoutingSnapshot, Signal, route,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn cny(fen: i64) -> Money {
    Money::from_minor(fen, Currency::CNY)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap()
}

const BREAKER: BreakerPolicy = BreakerPolicy {
    failures_to_open: 3,
    window_ms: 60_000,
    open_ms: 30_000,
    history: 20,
};

fn channel(id: &str, priority: u32, rate: Decimal) -> ChannelConfig {
    ChannelConfig {
        id: ChannelId::new(id).unwrap(),
        party: Party::WechatPay,
        methods: vec![Method::WechatPayCode, Method::WechatPayQr],
        currency: Currency::CNY,
        fee_rate: FeeRate::new(rate).unwrap(),
        fee_mode: FeeMode::BilledLater,
        single_limit: cny(200_000),
        daily_limit: cny(1_000_000),
        priority,
        maintenance: vec![],
        enabled: true,
    }
}

fn ids(configs: &[ChannelConfig]) -> Vec<ChannelId> {
    configs.iter().map(|c| c.id.clone()).collect()
}

fn decide(
    configs: &[ChannelConfig],
    fen: i64,
    snapshot: &RoutingSnapshot,
    payer: Option<&PayerToken>,
) -> payments::routing::RouteDecision {
    let signed = ids(configs);
    route(
        &RouteRequest {
            method: Method::WechatPayCode,
            amount: cny(fen),
            at: now(),
            station_channels: &signed,
            payer,
        },
        configs,
        snapshot,
    )
}

fn order(decision: &payments::routing::RouteDecision) -> Vec<&str> {
    decision
        .candidates
        .iter()
        .map(|c| c.channel.as_str())
        .collect()
}

#[test]
fn channels_rank_by_priority_then_fee_then_success_rate() {
    let configs = [
        channel("c-cheap-low-priority", 2, dec!(0.0020)),
        channel("b-dear", 1, dec!(0.0060)),
        channel("a-cheap", 1, dec!(0.0038)),
    ];
    let decision = decide(&configs, 10_000, &RoutingSnapshot::default(), None);
    assert_eq!(
        order(&decision),
        ["a-cheap", "b-dear", "c-cheap-low-priority"]
    );
    assert_eq!(decision.candidates[0].fee, cny(38));

    // Same priority and fee: the channel that has been failing goes second.
    let configs = [channel("x", 1, dec!(0.0038)), channel("y", 1, dec!(0.0038))];
    let mut x = ChannelHealth::new(BREAKER);
    x.record(now() - Duration::minutes(10), Signal::Succeeded, None);
    x.record(now() - Duration::minutes(9), Signal::Declined, None);
    let snapshot = RoutingSnapshot {
        health: BTreeMap::from([(configs[0].id.clone(), x)]),
        ..Default::default()
    };
    assert_eq!(
        order(&decide(&configs, 10_000, &snapshot, None)),
        ["y", "x"]
    );
}

#[test]
fn every_exclusion_is_stored_with_its_reason() {
    let mut other_method = channel("card", 1, dec!(0.005));
    other_method.methods = vec![Method::BankCard];
    let mut disabled = channel("off", 1, dec!(0.005));
    disabled.enabled = false;
    let mut maintenance = channel("maint", 1, dec!(0.005));
    maintenance.maintenance = vec![
        MaintenanceWindow::one_off(now() - Duration::hours(1), now() + Duration::hours(1)).unwrap(),
    ];
    let mut small = channel("small", 1, dec!(0.005));
    small.single_limit = cny(5_000);
    let mut spent = channel("spent", 1, dec!(0.005));
    spent.daily_limit = cny(50_000);
    let mut usd = channel("usd", 1, dec!(0.005));
    usd.currency = Currency::USD;
    usd.single_limit = Money::from_minor(200_000, Currency::USD);
    usd.daily_limit = Money::from_minor(1_000_000, Currency::USD);
    let unsigned = channel("unsigned", 1, dec!(0.005));
    let good = channel("good", 9, dec!(0.005));
    let configs = vec![
        other_method,
        disabled,
        maintenance,
        small,
        spent,
        usd,
        unsigned.clone(),
        good,
    ];
    let signed: Vec<ChannelId> = ids(&configs)
        .into_iter()
        .filter(|id| *id != unsigned.id)
        .collect();
    let snapshot = RoutingSnapshot {
        used_today: BTreeMap::from([(ChannelId::new("spent").unwrap(), cny(45_000))]),
        ..Default::default()
    };
    let decision = route(
        &RouteRequest {
            method: Method::WechatPayCode,
            amount: cny(10_000),
            at: now(),
            station_channels: &signed,
            payer: None,
        },
        &configs,
        &snapshot,
    );
    assert_eq!(order(&decision), ["good"]);
    let reasons: BTreeMap<&str, &Exclusion> = decision
        .excluded
        .iter()
        .map(|(id, r)| (id.as_str(), r))
        .collect();
    assert_eq!(reasons["card"], &Exclusion::MethodNotServed);
    assert_eq!(reasons["off"], &Exclusion::Disabled);
    assert_eq!(reasons["maint"], &Exclusion::InMaintenance);
    assert_eq!(
        reasons["small"],
        &Exclusion::OverSingleLimit { limit: cny(5_000) }
    );
    assert_eq!(
        reasons["spent"],
        &Exclusion::OverDailyLimit {
            remaining: cny(5_000)
        }
    );
    assert_eq!(reasons["usd"], &Exclusion::CurrencyMismatch);
    assert_eq!(reasons["unsigned"], &Exclusion::NotSignedByStation);
    // The decision is a stored value: it survives a round trip through JSON.
    let json = serde_json::to_string(&decision).unwrap();
    assert_eq!(
        serde_json::from_str::<payments::routing::RouteDecision>(&json).unwrap(),
        decision
    );
}

#[test]
fn a_payer_whose_code_just_failed_on_a_channel_is_sent_elsewhere() {
    let configs = [channel("a", 1, dec!(0.0038)), channel("b", 2, dec!(0.0038))];
    let payer = PayerToken::of("134567890123456789");
    let mut a = ChannelHealth::new(BREAKER);
    a.record(now() - Duration::minutes(1), Signal::Declined, Some(&payer));
    let snapshot = RoutingSnapshot {
        health: BTreeMap::from([(configs[0].id.clone(), a)]),
        ..Default::default()
    };
    let decision = decide(&configs, 1_000, &snapshot, Some(&payer));
    assert_eq!(order(&decision), ["b"]);
    assert_eq!(decision.excluded[0].1, Exclusion::PayerFailedHere);
    // Another payer still goes to a; and the exclusion lapses after ten minutes.
    let other = PayerToken::of("139999999999999999");
    assert_eq!(
        order(&decide(&configs, 1_000, &snapshot, Some(&other))),
        ["a", "b"]
    );
    let later = snapshot.health[&configs[0].id]
        .payer_failed_recently(&payer, now() + Duration::minutes(10));
    assert!(!later);
}

#[test]
fn errors_open_the_breaker_a_probe_after_the_pause_closes_or_reopens_it() {
    let mut h = ChannelHealth::new(BREAKER);
    let t = now();
    h.record(t, Signal::Failed, None);
    h.record(t + Duration::seconds(1), Signal::Declined, None);
    h.record(t + Duration::seconds(2), Signal::Failed, None);
    assert_eq!(
        h.breaker(t + Duration::seconds(2)),
        BreakerState::Closed,
        "declines are not errors"
    );
    h.record(t + Duration::seconds(3), Signal::Failed, None);
    let until = t + Duration::seconds(33);
    assert_eq!(
        h.breaker(t + Duration::seconds(4)),
        BreakerState::Open { until }
    );

    let configs = [channel("a", 1, dec!(0.0038)), channel("b", 2, dec!(0.0038))];
    let snapshot = RoutingSnapshot {
        health: BTreeMap::from([(configs[0].id.clone(), h.clone())]),
        ..Default::default()
    };
    let decision = decide(&configs, 1_000, &snapshot, None);
    assert_eq!(
        decision.excluded,
        vec![(configs[0].id.clone(), Exclusion::CircuitOpen { until })]
    );

    // After the pause one probe may go; its failure reopens, its success closes.
    assert_eq!(h.breaker(until), BreakerState::HalfOpen);
    let mut reopened = h.clone();
    reopened.record(until, Signal::Failed, None);
    assert!(matches!(
        reopened.breaker(until + Duration::seconds(1)),
        BreakerState::Open { .. }
    ));
    h.record(until, Signal::Succeeded, None);
    assert_eq!(
        h.breaker(until + Duration::seconds(1)),
        BreakerState::Closed
    );
}

#[test]
fn failures_spread_beyond_the_window_do_not_open_the_breaker() {
    let mut h = ChannelHealth::new(BREAKER);
    for minute in 0..5 {
        h.record(now() + Duration::minutes(minute * 2), Signal::Failed, None);
    }
    assert_eq!(
        h.breaker(now() + Duration::minutes(9)),
        BreakerState::Closed
    );
    assert_eq!(h.success_per_mille(), 0);
}

#[test]
fn with_no_channel_able_to_take_it_the_decision_is_empty_and_says_why() {
    let mut a = channel("a", 1, dec!(0.0038));
    a.single_limit = cny(100);
    let decision = decide(&[a], 1_000, &RoutingSnapshot::default(), None);
    assert!(decision.candidates.is_empty());
    assert_eq!(decision.excluded.len(), 1);
}

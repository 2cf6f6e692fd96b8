//! Payments end to end against the simulated parties over real HTTP: routing, failover only
//! when nothing was charged, unknown outcomes resolved by query, notifications counted once.

mod common;

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use common::*;
use ledger::money::Currency;
use payments::channels::{
    Channel, ChannelError, ChargeRequest, ChargeResult, NotificationError, QueryResult,
    RefundRequest, RefundResult, ReverseResult,
};
use payments::flow::{
    AttemptOutcome, Payment, PaymentCommand, PaymentEvent, PaymentInput, PaymentState,
};
use payments::model::{
    ChannelConfig, ChannelId, FeeMode, FeeRate, MaintenanceWindow, Method, Party,
};
use payments::routing::{Exclusion, RouteRequest, RoutingSnapshot, route};
use rust_decimal_macros::dec;

fn channel(id: &str, party: Party, method: Method, priority: u32) -> ChannelConfig {
    ChannelConfig {
        id: ChannelId::new(id).unwrap(),
        party,
        methods: vec![method],
        currency: Currency::CNY,
        fee_rate: FeeRate::new(dec!(0.0038)).unwrap(),
        fee_mode: FeeMode::DeductedAtPayment,
        single_limit: cny(500_000),
        daily_limit: cny(10_000_000),
        priority,
        maintenance: vec![],
        enabled: true,
    }
}

fn payment(no: &str, method: Method, fen: i64) -> Payment {
    Payment::new(PaymentInput {
        payment_no: no.into(),
        method,
        amount: cny(fen),
    })
}

fn routed(configs: &[ChannelConfig], method: Method, fen: i64) -> PaymentEvent {
    let signed: Vec<ChannelId> = configs.iter().map(|c| c.id.clone()).collect();
    let decision = route(
        &RouteRequest {
            method,
            amount: cny(fen),
            at: Utc::now(),
            station_channels: &signed,
            payer: None,
        },
        configs,
        &RoutingSnapshot::default(),
    );
    PaymentEvent::Routed { decision }
}

fn sales(log: &[PaymentCommand]) -> Vec<&PaymentCommand> {
    log.iter()
        .filter(|c| matches!(c, PaymentCommand::PostSale { .. }))
        .collect()
}

#[tokio::test]
async fn channel_a_in_announced_maintenance_routes_to_channel_b() {
    let (a, sim_a) = wechat("1900000001").await;
    let (b, sim_b) = wechat("1900000002").await;
    let mut config_a = channel("wxpay-direct", Party::WechatPay, Method::WechatPayCode, 1);
    config_a.maintenance = vec![
        MaintenanceWindow::one_off(
            Utc::now() - Duration::hours(1),
            Utc::now() + Duration::hours(1),
        )
        .unwrap(),
    ];
    let config_b = channel(
        "wxpay-via-bank-a",
        Party::WechatPay,
        Method::WechatPayCode,
        2,
    );
    let channels: BTreeMap<ChannelId, &dyn Channel> = [
        (config_a.id.clone(), &a as &dyn Channel),
        (config_b.id.clone(), &b as &dyn Channel),
    ]
    .into();
    let event = routed(
        &[config_a.clone(), config_b.clone()],
        Method::WechatPayCode,
        30_000,
    );
    let PaymentEvent::Routed { decision } = &event else {
        unreachable!()
    };
    assert_eq!(
        decision.excluded,
        vec![(config_a.id.clone(), Exclusion::InMaintenance)]
    );

    let mut p = payment("P1", Method::WechatPayCode, 30_000);
    let log = drive(&mut p, event, &channels).await;

    assert!(matches!(p.state, PaymentState::Succeeded { .. }), "{p:?}");
    assert_eq!(p.attempts.len(), 1);
    assert_eq!(p.attempts[0].channel, config_b.id);
    assert_eq!(
        sim_a.charge_calls(),
        0,
        "the channel in maintenance is never called"
    );
    assert_eq!(sim_b.taken().len(), 1);
    assert_eq!(sim_b.taken()[0].amount_fen, 30_000);
    assert_eq!(sales(&log).len(), 1);
}

#[tokio::test]
async fn channel_a_down_without_notice_answers_503_and_the_payment_fails_over_to_b() {
    let (a, sim_a) = wechat("1900000001").await;
    let (b, sim_b) = wechat("1900000002").await;
    sim_a.set(|b| b.unavailable = true);
    let configs = [
        channel("wxpay-direct", Party::WechatPay, Method::WechatPayCode, 1),
        channel(
            "wxpay-via-bank-a",
            Party::WechatPay,
            Method::WechatPayCode,
            2,
        ),
    ];
    let channels: BTreeMap<ChannelId, &dyn Channel> = [
        (configs[0].id.clone(), &a as &dyn Channel),
        (configs[1].id.clone(), &b as &dyn Channel),
    ]
    .into();
    let mut p = payment("P2", Method::WechatPayCode, 12_345);
    drive(
        &mut p,
        routed(&configs, Method::WechatPayCode, 12_345),
        &channels,
    )
    .await;

    assert!(matches!(p.state, PaymentState::Succeeded { .. }), "{p:?}");
    assert!(matches!(
        p.attempts[0].outcome,
        AttemptOutcome::NotCharged { .. }
    ));
    assert!(sim_a.taken().is_empty());
    assert_eq!(sim_b.taken().len(), 1);
}

#[tokio::test]
async fn channel_a_times_out_after_charging_the_query_finds_the_success_and_b_is_never_called() {
    let (a, sim_a) = wechat("1900000001").await;
    let (b, sim_b) = wechat("1900000002").await;
    sim_a.set(|b| {
        b.timeout_after_charge_next = 1;
        b.hang_ms = HANG_MS;
    });
    let configs = [
        channel("wxpay-direct", Party::WechatPay, Method::WechatPayCode, 1),
        channel(
            "wxpay-via-bank-a",
            Party::WechatPay,
            Method::WechatPayCode,
            2,
        ),
    ];
    let channels: BTreeMap<ChannelId, &dyn Channel> = [
        (configs[0].id.clone(), &a as &dyn Channel),
        (configs[1].id.clone(), &b as &dyn Channel),
    ]
    .into();
    let mut p = payment("P3", Method::WechatPayCode, 50_000);
    let log = drive(
        &mut p,
        routed(&configs, Method::WechatPayCode, 50_000),
        &channels,
    )
    .await;

    assert!(matches!(p.state, PaymentState::Succeeded { .. }), "{p:?}");
    assert!(
        log.iter()
            .any(|c| matches!(c, PaymentCommand::Query { .. }))
    );
    assert_eq!(
        sim_b.charge_calls(),
        0,
        "never charge elsewhere while the outcome is unknown"
    );
    assert_eq!(sim_a.taken().len(), 1, "one charge, not two");
    assert_eq!(sales(&log).len(), 1);
}

#[tokio::test]
async fn alipay_times_out_after_charging_and_the_query_finds_it_too() {
    let (a, sim_a) = alipay("2021000000000001").await;
    let (b, sim_b) = alipay("2021000000000002").await;
    sim_a.set(|b| {
        b.timeout_after_charge_next = 1;
        b.hang_ms = HANG_MS;
    });
    let configs = [
        channel("alipay-direct", Party::Alipay, Method::AlipayCode, 1),
        channel(
            "alipay-via-acquirer-b",
            Party::Alipay,
            Method::AlipayCode,
            2,
        ),
    ];
    let channels: BTreeMap<ChannelId, &dyn Channel> = [
        (configs[0].id.clone(), &a as &dyn Channel),
        (configs[1].id.clone(), &b as &dyn Channel),
    ]
    .into();
    let mut p = payment("P4", Method::AlipayCode, 20_050);
    drive(
        &mut p,
        routed(&configs, Method::AlipayCode, 20_050),
        &channels,
    )
    .await;
    assert!(matches!(p.state, PaymentState::Succeeded { .. }), "{p:?}");
    assert_eq!(sim_b.charge_calls(), 0);
    assert_eq!(sim_a.taken().len(), 1);
    assert_eq!(sim_a.taken()[0].amount_fen, 20_050);
}

#[tokio::test]
async fn a_declined_card_fails_over_to_the_second_acquirer() {
    let (a, sim_a) = acquirer("M-ACQ-A").await;
    let (b, sim_b) = acquirer("M-ACQ-B").await;
    sim_a.set(|b| b.decline_next = 1);
    let configs = [
        channel("card-acquirer-a", Party::Acquirer, Method::BankCard, 1),
        channel("card-acquirer-b", Party::Acquirer, Method::BankCard, 2),
    ];
    let channels: BTreeMap<ChannelId, &dyn Channel> = [
        (configs[0].id.clone(), &a as &dyn Channel),
        (configs[1].id.clone(), &b as &dyn Channel),
    ]
    .into();
    let mut p = payment("P5", Method::BankCard, 88_000);
    let log = drive(
        &mut p,
        routed(&configs, Method::BankCard, 88_000),
        &channels,
    )
    .await;
    assert!(matches!(p.state, PaymentState::Succeeded { .. }), "{p:?}");
    assert_eq!(p.attempts.len(), 2);
    assert!(
        matches!(&p.attempts[0].outcome, AttemptOutcome::NotCharged { reason } if reason.contains("51"))
    );
    assert!(sim_a.taken().is_empty());
    assert_eq!(sim_b.taken().len(), 1);
    assert_eq!(sales(&log).len(), 1);
}

#[tokio::test]
async fn a_payment_declined_everywhere_fails_and_nothing_is_taken() {
    let (a, sim_a) = wechat("1900000001").await;
    let (b, sim_b) = wechat("1900000002").await;
    sim_a.set(|b| b.decline_next = 1);
    sim_b.set(|b| b.decline_next = 1);
    let configs = [
        channel("wxpay-direct", Party::WechatPay, Method::WechatPayCode, 1),
        channel(
            "wxpay-via-bank-a",
            Party::WechatPay,
            Method::WechatPayCode,
            2,
        ),
    ];
    let channels: BTreeMap<ChannelId, &dyn Channel> = [
        (configs[0].id.clone(), &a as &dyn Channel),
        (configs[1].id.clone(), &b as &dyn Channel),
    ]
    .into();
    let mut p = payment("P6", Method::WechatPayCode, 1_000);
    let log = drive(
        &mut p,
        routed(&configs, Method::WechatPayCode, 1_000),
        &channels,
    )
    .await;
    assert!(matches!(p.state, PaymentState::Failed { .. }), "{p:?}");
    assert!(sales(&log).is_empty());
    assert!(sim_a.taken().is_empty() && sim_b.taken().is_empty());
}

#[tokio::test]
async fn a_duplicated_notification_counts_once() {
    let inbox = Inbox::start().await;
    let (a, sim_a) = wechat("1900000001").await;
    sim_a.set(|b| {
        b.timeout_after_charge_next = 1;
        b.hang_ms = HANG_MS;
        b.notify_url = Some(inbox.url());
        b.notify_copies = 3;
    });
    let configs = [channel(
        "wxpay-direct",
        Party::WechatPay,
        Method::WechatPayCode,
        1,
    )];
    let mut p = payment("P7", Method::WechatPayCode, 7_700);
    let policy = policy();
    let submit = p.apply(&routed(&configs, Method::WechatPayCode, 7_700), &policy);
    let PaymentCommand::Submit {
        attempt,
        out_trade_no,
        ..
    } = &submit[0]
    else {
        panic!("{submit:?}")
    };
    let request = ChargeRequest {
        out_trade_no: out_trade_no.clone(),
        method: Method::WechatPayCode,
        amount: cny(7_700),
        description: "95# fuel".into(),
        payer_code: Some("134567890123456789".into()),
    };
    let result = a.charge(&request).await;
    assert!(
        matches!(result, Err(ChannelError::Unknown { .. })),
        "{result:?}"
    );
    let next = p.apply(
        &PaymentEvent::ChargeAnswered {
            attempt: *attempt,
            result,
        },
        &policy,
    );
    assert!(matches!(next[0], PaymentCommand::ScheduleQuery { .. }));

    let mut posted = 0;
    for inbound in inbox.wait_for(3).await {
        let notification = a
            .parse_notification(&inbound)
            .expect("a genuine notification");
        assert_eq!(notification.amount, cny(7_700));
        let commands = p.apply(&PaymentEvent::Notified { notification }, &policy);
        posted += commands
            .iter()
            .filter(|c| matches!(c, PaymentCommand::PostSale { .. }))
            .count();
    }
    assert_eq!(posted, 1);
    assert!(matches!(p.state, PaymentState::Succeeded { .. }));
    // The query timer that fires afterwards changes nothing.
    assert!(
        p.apply(&PaymentEvent::QueryDue { attempt: 0 }, &policy)
            .is_empty()
    );
}

#[tokio::test]
async fn a_forged_or_altered_notification_is_refused() {
    let inbox = Inbox::start().await;
    let (a, sim_a) = wechat("1900000001").await;
    sim_a.set(|b| b.notify_url = Some(inbox.url()));
    let request = ChargeRequest {
        out_trade_no: "P8-1".into(),
        method: Method::WechatPayCode,
        amount: cny(100),
        description: "shop".into(),
        payer_code: Some("134567890123456789".into()),
    };
    assert!(matches!(
        a.charge(&request).await,
        Ok(ChargeResult::Succeeded { .. })
    ));
    let mut inbound = inbox.wait_for(1).await.remove(0);
    a.parse_notification(&inbound).unwrap();
    let text = String::from_utf8(inbound.body.clone()).unwrap();
    inbound.body = text
        .replace("TRANSACTION.SUCCESS", "TRANSACTION.SUCCESS ")
        .into_bytes();
    assert_eq!(
        a.parse_notification(&inbound),
        Err(NotificationError::BadSignature)
    );
}

#[tokio::test]
async fn a_customer_still_confirming_is_queried_until_paid_without_failover() {
    let (a, sim_a) = alipay("2021000000000001").await;
    let (b, sim_b) = alipay("2021000000000002").await;
    sim_a.set(|b| b.user_paying_next = 1);
    let configs = [
        channel("alipay-direct", Party::Alipay, Method::AlipayCode, 1),
        channel(
            "alipay-via-acquirer-b",
            Party::Alipay,
            Method::AlipayCode,
            2,
        ),
    ];
    let channels: BTreeMap<ChannelId, &dyn Channel> = [
        (configs[0].id.clone(), &a as &dyn Channel),
        (configs[1].id.clone(), &b as &dyn Channel),
    ]
    .into();
    let mut p = payment("P9", Method::AlipayCode, 3_000);
    drive(
        &mut p,
        routed(&configs, Method::AlipayCode, 3_000),
        &channels,
    )
    .await;
    assert!(matches!(p.state, PaymentState::Succeeded { .. }), "{p:?}");
    assert_eq!(sim_b.charge_calls(), 0);
    assert_eq!(sim_a.taken().len(), 1);
}

#[tokio::test]
async fn an_abandoned_unknown_payment_is_reversed_and_the_reversal_confirmed() {
    let (a, sim_a) = acquirer("M-ACQ-A").await;
    sim_a.set(|b| {
        b.timeout_after_charge_next = 1;
        b.hang_ms = HANG_MS;
    });
    let configs = [channel(
        "card-acquirer-a",
        Party::Acquirer,
        Method::BankCard,
        1,
    )];
    let channels: BTreeMap<ChannelId, &dyn Channel> =
        [(configs[0].id.clone(), &a as &dyn Channel)].into();
    let policy = policy();
    let mut p = payment("P10", Method::BankCard, 45_600);
    let submit = p.apply(&routed(&configs, Method::BankCard, 45_600), &policy);
    let PaymentCommand::Submit { out_trade_no, .. } = &submit[0] else {
        panic!()
    };
    let request = ChargeRequest {
        out_trade_no: out_trade_no.clone(),
        method: Method::BankCard,
        amount: cny(45_600),
        description: "92# fuel".into(),
        payer_code: Some("6222020000000000".into()),
    };
    let result = channels[&configs[0].id].charge(&request).await;
    p.apply(
        &PaymentEvent::ChargeAnswered { attempt: 0, result },
        &policy,
    );
    assert!(matches!(p.state, PaymentState::Querying { .. }));
    assert_eq!(sim_a.taken().len(), 1, "the acquirer took the money");

    // The till gives up: the sale is released only once the reversal is confirmed.
    let reverse = p.apply(&PaymentEvent::Abandoned, &policy);
    assert!(matches!(reverse[0], PaymentCommand::Reverse { .. }));
    let result = a.reverse(out_trade_no).await;
    assert_eq!(result, Ok(ReverseResult::Reversed));
    let confirm = p.apply(
        &PaymentEvent::ReverseAnswered { attempt: 0, result },
        &policy,
    );
    assert!(matches!(confirm[0], PaymentCommand::Query { .. }));
    assert!(
        !matches!(p.state, PaymentState::Reversed),
        "not released before confirmation"
    );
    let result = a.query(out_trade_no).await;
    assert_eq!(result, Ok(QueryResult::Reversed));
    p.apply(&PaymentEvent::QueryAnswered { attempt: 0, result }, &policy);
    assert_eq!(p.state, PaymentState::Reversed);
    assert!(sim_a.taken().is_empty(), "nothing is left taken");
}

#[tokio::test]
async fn partial_refunds_go_up_to_the_original_and_no_further_on_every_party() {
    let (w, _sw) = wechat("1900000001").await;
    let (al, _sa) = alipay("2021000000000001").await;
    let (ac, _sc) = acquirer("M-ACQ-A").await;
    let cases: [(&dyn Channel, Method, Option<&str>); 3] = [
        (&w, Method::WechatPayCode, Some("134567890123456789")),
        (&al, Method::AlipayCode, Some("281234567890123456")),
        (&ac, Method::BankCard, Some("6222020000000000")),
    ];
    for (channel, method, code) in cases {
        let charge = ChargeRequest {
            out_trade_no: "R1-1".into(),
            method,
            amount: cny(10_000),
            description: "fuel".into(),
            payer_code: code.map(str::to_owned),
        };
        assert!(matches!(
            channel.charge(&charge).await,
            Ok(ChargeResult::Succeeded { .. })
        ));
        let refund = |no: &str, fen| RefundRequest {
            out_trade_no: "R1-1".into(),
            out_refund_no: no.into(),
            refund: cny(fen),
            total: cny(10_000),
            reason: "customer returned goods".into(),
        };
        assert!(matches!(
            channel.refund(&refund("F1", 6_000)).await,
            Ok(RefundResult::Accepted { .. })
        ));
        assert!(matches!(
            channel.refund(&refund("F2", 4_000)).await,
            Ok(RefundResult::Accepted { .. })
        ));
        // The same refund number again is the same refund, not a new one.
        assert!(matches!(
            channel.refund(&refund("F2", 4_000)).await,
            Ok(RefundResult::Accepted { .. })
        ));
        assert!(
            matches!(
                channel.refund(&refund("F3", 1)).await,
                Ok(RefundResult::Refused { .. })
            ),
            "{method:?}: a refund beyond the original is refused"
        );
    }
}

#[tokio::test]
async fn a_request_signed_with_the_wrong_key_is_refused_and_charges_nothing() {
    let (_, sim_a) = wechat("1900000001").await;
    // A merchant whose key the platform does not know, pointed at the same platform.
    let impostor = payments::channels::wechat::WechatPay::new(impostor_config(&sim_a));
    let request = ChargeRequest {
        out_trade_no: "X-1".into(),
        method: Method::WechatPayCode,
        amount: cny(100),
        description: "x".into(),
        payer_code: Some("134567890123456789".into()),
    };
    let result = impostor.charge(&request).await;
    assert!(
        result.is_err() || matches!(result, Ok(ChargeResult::Declined { .. })),
        "{result:?}"
    );
    assert_eq!(sim_a.bad_signatures(), 1);
    assert!(sim_a.taken().is_empty());
}

fn impostor_config(sim: &sim::SimHandle) -> payments::channels::wechat::WechatPayConfig {
    let (merchant_key, _) = sim::keys::rsa_pair();
    let (_, platform_public) = sim::keys::rsa_pair();
    payments::channels::wechat::WechatPayConfig {
        base_url: sim.base_url(),
        appid: "wx8888888888888888".into(),
        mchid: "1900000001".into(),
        merchant_serial_no: "SERIAL-1900000001".into(),
        merchant_key,
        platform_keys: vec![("PUB_KEY_ID_0001".into(), platform_public)],
        api_v3_key: payments::crypto::ApiV3Key::new(API_V3_KEY).unwrap(),
        notify_url: String::new(),
        timeouts: TIMEOUTS,
    }
}

#[tokio::test]
async fn each_party_serves_a_statement_in_its_own_format() {
    let (w, sw) = wechat("1900000001").await;
    let charge = ChargeRequest {
        out_trade_no: "S1-1".into(),
        method: Method::WechatPayCode,
        amount: cny(12_345),
        description: "fuel".into(),
        payer_code: Some("134567890123456789".into()),
    };
    assert!(matches!(
        w.charge(&charge).await,
        Ok(ChargeResult::Succeeded { .. })
    ));
    let today = Utc::now()
        .with_timezone(&payments::sales::BUSINESS_TZ)
        .date_naive();
    let records = sw.state.lock().charges_on(today);
    let bill = sim::wechat::trade_bill(
        &sim::wechat::WechatSimConfig {
            mchid: "1900000001".into(),
            appid: "wx8888888888888888".into(),
            merchant_serial_no: String::new(),
            merchant_public_key: sim::keys::rsa_pair().1,
            platform_serial_no: String::new(),
            platform_key: sim::keys::rsa_pair().0,
            api_v3_key: *API_V3_KEY,
            fee_rate_bp: 38,
        },
        &records,
    );
    let lines: Vec<&str> = bill.lines().collect();
    assert!(lines[0].starts_with("交易时间,公众账号ID,商户号"));
    assert!(
        lines[1].contains("`S1-1") && lines[1].contains("`123.45") && lines[1].contains("`0.47")
    );
    assert_eq!(lines[3], "`1,`123.45,`0.00,`0.00,`0.47,`123.45,`0.00");
}

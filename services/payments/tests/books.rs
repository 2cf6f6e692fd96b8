//! Payments into the ledger on PostgreSQL and SQLite: every sale posts once and balances,
//! the T+1 bill is matched against our payments, and settlement empties clearing.

mod common;

use std::collections::BTreeMap;

use chrono::Utc;
use common::*;
use ledger::{Currency, Ledger, LedgerConfig, NewAccount, Side};
use payments::channels::{Channel, ChargeRequest, ChargeResult};
use payments::flow::{Payment, PaymentCommand, PaymentEvent, PaymentInput, PaymentState};
use payments::model::{ChannelConfig, ChannelId, FeeMode, FeeRate, Method, Party};
use payments::postings::{ChannelAccounts, cash_sale, channel_refund, channel_sale, settlement};
use payments::routing::{RouteRequest, RoutingSnapshot, route};
use payments::statements::{
    BookedPayment, Match, parse_acquirer_statement, parse_alipay_statement,
    parse_wechat_trade_bill, reconcile,
};
use rust_decimal_macros::dec;
use testkit::{Backend, TestDb};

testkit::scenarios!(every_sale_posts_once_balances_and_clearing_nets_to_zero_after_settlement);

async fn accounts(ledger: &Ledger, station: &str) -> ChannelAccounts {
    let open = |code: &str, side| {
        NewAccount::new(
            station,
            code.to_owned(),
            code.to_owned(),
            Currency::CNY,
            side,
        )
    };
    ChannelAccounts {
        clearing: ledger
            .create_account(open("clearing:wxpay-direct", Side::Debit))
            .await
            .unwrap()
            .id,
        sales: ledger
            .create_account(open("sales", Side::Credit))
            .await
            .unwrap()
            .id,
        fees: ledger
            .create_account(open("fees", Side::Debit))
            .await
            .unwrap()
            .id,
        bank: ledger
            .create_account(open("bank", Side::Debit))
            .await
            .unwrap()
            .id,
    }
}

fn config() -> ChannelConfig {
    ChannelConfig {
        id: ChannelId::new("wxpay-direct").unwrap(),
        party: Party::WechatPay,
        methods: vec![Method::WechatPayCode],
        currency: Currency::CNY,
        fee_rate: FeeRate::new(dec!(0.0038)).unwrap(),
        fee_mode: FeeMode::DeductedAtPayment,
        single_limit: cny(500_000),
        daily_limit: cny(10_000_000),
        priority: 1,
        maintenance: vec![],
        enabled: true,
    }
}

async fn every_sale_posts_once_balances_and_clearing_nets_to_zero_after_settlement(
    backend: Backend,
) {
    let db = TestDb::fresh(backend).await;
    let ledger = Ledger::start(
        db.db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );
    let acc = accounts(&ledger, "station-1").await;
    let (a, sim_a) = wechat("1900000001").await;
    // The second sale times out after the charge: found by query, still booked once.
    sim_a.set(|b| b.hang_ms = HANG_MS);
    let config = config();
    let channels: BTreeMap<ChannelId, &dyn Channel> =
        [(config.id.clone(), &a as &dyn Channel)].into();
    let amounts = [12_345_i64, 30_000, 1_999];
    for (i, fen) in amounts.iter().enumerate() {
        if i == 1 {
            sim_a.set(|b| b.timeout_after_charge_next = 1);
        }
        let mut p = Payment::new(PaymentInput {
            payment_no: format!("PAY{i}"),
            method: Method::WechatPayCode,
            amount: cny(*fen),
        });
        let signed = [config.id.clone()];
        let decision = route(
            &RouteRequest {
                method: Method::WechatPayCode,
                amount: cny(*fen),
                at: Utc::now(),
                station_channels: &signed,
                payer: None,
            },
            std::slice::from_ref(&config),
            &RoutingSnapshot::default(),
        );
        let log = drive(&mut p, PaymentEvent::Routed { decision }, &channels).await;
        assert!(matches!(p.state, PaymentState::Succeeded { .. }), "{p:?}");
        for command in log {
            if let PaymentCommand::PostSale { amount, .. } = command {
                let entry = channel_sale(
                    &p.input.payment_no,
                    &acc,
                    amount,
                    config.fee_rate,
                    config.fee_mode,
                )
                .unwrap();
                let first = ledger.post_entry(entry.clone()).await.unwrap();
                // A redelivered activity posts the same entry again: the ledger keeps one.
                let again = ledger.post_entry(entry).await.unwrap();
                assert_eq!(first.entry_id, again.entry_id);
            }
        }
    }
    let total: i64 = amounts.iter().sum();
    let sales = ledger.balance(acc.sales).await.unwrap();
    assert_eq!(sales.posted, cny(total));
    // Fees: 46.91 -> 0.47, 300.00 -> 1.14, 19.99 -> 0.08 (half-up to the fen).
    assert_eq!(
        ledger.balance(acc.fees).await.unwrap().posted,
        cny(47 + 114 + 8)
    );
    assert_eq!(
        ledger.balance(acc.clearing).await.unwrap().posted,
        cny(total - 169)
    );

    // T+1: the bill, fetched and verified over HTTP, matches every payment.
    let bill = a
        .trade_bill(
            Utc::now()
                .with_timezone(&payments::sales::BUSINESS_TZ)
                .date_naive(),
        )
        .await
        .unwrap();
    let lines = parse_wechat_trade_bill(&bill).unwrap();
    let ours: Vec<BookedPayment> = amounts
        .iter()
        .enumerate()
        .map(|(i, fen)| BookedPayment {
            out_trade_no: format!("PAY{i}-1"),
            amount: cny(*fen),
            succeeded: true,
        })
        .collect();
    let matches = reconcile(&ours, &lines);
    assert!(
        matches.iter().all(|m| matches!(m, Match::Matched { .. })),
        "{matches:?}"
    );
    let fee_fen: i64 = lines.iter().map(|l| l.fee.minor_units().unwrap()).sum();
    assert_eq!(fee_fen, 169, "our fees agree with the channel's");
    let date = Utc::now()
        .with_timezone(&payments::sales::BUSINESS_TZ)
        .date_naive()
        .to_string();
    ledger
        .post_entry(settlement(
            "wxpay-direct",
            &date,
            &acc,
            cny(total - fee_fen),
        ))
        .await
        .unwrap();
    assert_eq!(
        ledger.balance(acc.clearing).await.unwrap().posted,
        cny(0),
        "clearing nets to zero"
    );
    assert_eq!(
        ledger.balance(acc.bank).await.unwrap().posted,
        cny(total - 169)
    );
    assert!(
        ledger
            .trial_balance()
            .await
            .unwrap()
            .iter()
            .all(|t| t.is_balanced())
    );
    assert_eq!(sim_a.taken().len(), 3);

    // A partial refund gives back sales and leaves clearing owing the channel until the
    // next settlement nets it; a cash sale goes to the drawer. Both post once.
    let refund = channel_refund("PAY1", "F1", &acc, cny(10_000));
    ledger.post_entry(refund.clone()).await.unwrap();
    assert!(ledger.post_entry(refund).await.unwrap().replayed);
    assert_eq!(
        ledger.balance(acc.sales).await.unwrap().posted,
        cny(total - 10_000)
    );
    assert_eq!(
        ledger.balance(acc.clearing).await.unwrap().posted,
        cny(-10_000)
    );
    let drawer = ledger
        .create_account(NewAccount::new(
            "station-1",
            "drawer",
            "drawer",
            Currency::CNY,
            Side::Debit,
        ))
        .await
        .unwrap()
        .id;
    ledger
        .post_entry(cash_sale("PAY9", drawer, acc.sales, cny(5_000)))
        .await
        .unwrap();
    assert_eq!(ledger.balance(drawer).await.unwrap().posted, cny(5_000));
    let trial = ledger.trial_balance().await.unwrap();
    assert!(trial.iter().all(|t| t.is_balanced()));
}

#[tokio::test]
async fn reconciliation_finds_every_planted_discrepancy() {
    let (a, _sim) = wechat("1900000001").await;
    for (no, fen) in [
        ("OK-1", 10_000),
        ("THEIRS-ONLY-1", 2_000),
        ("AMOUNT-1", 5_000),
    ] {
        let request = ChargeRequest {
            out_trade_no: no.into(),
            method: Method::WechatPayCode,
            amount: cny(fen),
            description: "fuel".into(),
            payer_code: Some("134567890123456789".into()),
        };
        assert!(matches!(
            a.charge(&request).await,
            Ok(ChargeResult::Succeeded { .. })
        ));
    }
    let lines = parse_wechat_trade_bill(
        &a.trade_bill(
            Utc::now()
                .with_timezone(&payments::sales::BUSINESS_TZ)
                .date_naive(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let ours = [
        BookedPayment {
            out_trade_no: "OK-1".into(),
            amount: cny(10_000),
            succeeded: true,
        },
        BookedPayment {
            out_trade_no: "AMOUNT-1".into(),
            amount: cny(5_001),
            succeeded: true,
        },
        BookedPayment {
            out_trade_no: "OURS-ONLY-1".into(),
            amount: cny(800),
            succeeded: true,
        },
    ];
    let found = reconcile(&ours, &lines);
    assert_eq!(
        found,
        vec![
            Match::AmountMismatch {
                out_trade_no: "AMOUNT-1".into(),
                ours: cny(5_001),
                theirs: cny(5_000)
            },
            Match::Matched {
                out_trade_no: "OK-1".into(),
                fee: cny(38)
            },
            Match::MissingThere {
                out_trade_no: "OURS-ONLY-1".into(),
                amount: cny(800)
            },
            Match::MissingHere {
                out_trade_no: "THEIRS-ONLY-1".into(),
                amount: cny(2_000)
            },
        ]
    );
}

#[tokio::test]
async fn alipay_and_acquirer_statements_read_back_what_was_charged() {
    let (al, sim_al) = alipay("2021000000000001").await;
    let (ac, sim_ac) = acquirer("M-ACQ-A").await;
    let cases: [(&dyn Channel, Method, &str); 2] = [
        (&al, Method::AlipayCode, "281234567890123456"),
        (&ac, Method::BankCard, "6222020000000000"),
    ];
    for (channel, method, code) in cases {
        for (no, fen) in [("ST-1", 10_050), ("ST-2", 333)] {
            let request = ChargeRequest {
                out_trade_no: no.into(),
                method,
                amount: cny(fen),
                description: "fuel".into(),
                payer_code: Some(code.into()),
            };
            assert!(matches!(
                channel.charge(&request).await,
                Ok(ChargeResult::Succeeded { .. })
            ));
        }
    }
    let date = Utc::now()
        .with_timezone(&payments::sales::BUSINESS_TZ)
        .date_naive();
    let fetch = |url: String| async move { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let alipay_lines = parse_alipay_statement(
        &fetch(format!("{}/statement?bill_date={date}", sim_al.base_url())).await,
    )
    .unwrap();
    let acquirer_lines = parse_acquirer_statement(
        &fetch(format!("{}/v1/statement?date={date}", sim_ac.base_url())).await,
    )
    .unwrap();
    for lines in [&alipay_lines, &acquirer_lines] {
        let ours = [
            BookedPayment {
                out_trade_no: "ST-1".into(),
                amount: cny(10_050),
                succeeded: true,
            },
            BookedPayment {
                out_trade_no: "ST-2".into(),
                amount: cny(333),
                succeeded: true,
            },
        ];
        let found = reconcile(&ours, lines);
        assert_eq!(found.len(), 2);
        assert!(
            found.iter().all(|m| matches!(m, Match::Matched { .. })),
            "{found:?}"
        );
    }
    // Alipay's service fee at 0.38%: 100.50 -> 0.38; the acquirer's 0.50%: 100.50 -> 0.50.
    assert_eq!(alipay_lines[0].fee, cny(38));
    assert_eq!(acquirer_lines[0].fee, cny(50));
}

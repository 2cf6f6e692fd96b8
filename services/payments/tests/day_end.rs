//! The retail day's end on PostgreSQL and SQLite: the daily close of a station and its
//! station company, and the T+1 reconciliation of each channel's statement, fetched over
//! HTTP from the simulated parties, with the ledger it settles and the exceptions it raises.

use std::collections::BTreeMap;

use chrono::Utc;
use entities::{organisations, pos_daily_closes, pos_payments, pos_shifts, pos_terminals};
use ledger::money::{Currency, Money};
use ledger::{Ledger, LedgerConfig};
use payments::channels::{
    BoxFuture, Channel, ChannelError, ChargeRequest, ChargeResult, InboundRequest,
    NotificationError, PaymentNotification, QueryResult, RefundRequest, RefundResult,
    ReverseResult, Timeouts,
};
use payments::model::{ChannelConfig, ChannelId, FeeMode, FeeRate, Method};
use payments::reconcile::{ExceptionFilter, list_exceptions, reconcile_day, resolve_exception};
use payments::sales::{
    FuelGrade, NewPayment, NewRefund, Outcome, RefundCreated, Sale, SaleLine, business_day,
};
use payments::shifts::Tally;
use payments::statements::Statement;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use sim::retail::{Retail, SimulatedChannel, default_terms};
use testkit::{Backend, TestDb};
use uuid::Uuid;

testkit::scenarios!(
    reconciliation_finds_every_planted_discrepancy_and_a_second_run_posts_nothing_twice,
    a_charge_the_statement_lists_but_the_party_reversed_since_is_resolved_by_the_query,
    after_reconciling_a_day_of_matched_items_every_clearing_account_of_the_station_nets_to_zero,
    the_daily_close_flags_the_shift_left_open_adds_up_the_shift_summaries_and_stays_one_row,
    the_daily_limits_count_what_is_pending_or_taken_and_a_failure_or_a_failover_moves_it,
);

fn cny(fen: i64) -> Money {
    Money::from_minor(fen, Currency::CNY)
}

const TIMEOUTS: Timeouts = Timeouts {
    connect_ms: 1_000,
    request_ms: 5_000,
};

fn ledger_of(db: &TestDb) -> Ledger {
    Ledger::start(
        db.db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    )
}

fn today() -> String {
    business_day(Utc::now())
}

fn today_date() -> chrono::NaiveDate {
    payments::reconcile::parse_day(&today()).unwrap()
}

/// A station company with its stations, in `organisations`.
async fn company_with_stations(db: &TestDb, stations: usize) -> (Uuid, Vec<Uuid>) {
    let now = Utc::now();
    let company = Uuid::now_v7();
    let row = |id: Uuid, parent: Option<Uuid>, kind: &str, path: String, depth: i32| {
        organisations::ActiveModel {
            id: Set(id),
            parent_id: Set(parent),
            kind: Set(kind.into()),
            name: Set(format!("{kind} {id}")),
            path: Set(path),
            depth: Set(depth),
            ledger_owner: Set(format!("org:{id}")),
            created_at: Set(now),
        }
    };
    let root = Uuid::now_v7();
    organisations::Entity::insert(row(root, None, "platform_operator", format!("/{root}/"), 0))
        .exec_without_returning(&db.db)
        .await
        .unwrap();
    organisations::Entity::insert(row(
        company,
        Some(root),
        "station_company",
        format!("/{root}/{company}/"),
        1,
    ))
    .exec_without_returning(&db.db)
    .await
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..stations {
        let id = Uuid::now_v7();
        organisations::Entity::insert(row(
            id,
            Some(company),
            "station",
            format!("/{root}/{company}/{id}/"),
            2,
        ))
        .exec_without_returning(&db.db)
        .await
        .unwrap();
        ids.push(id);
    }
    (company, ids)
}

async fn terminal(db: &TestDb, station: Uuid, code: &str) -> pos_terminals::Model {
    payments::stations::register_terminal(&db.db, station, code, code, Utc::now())
        .await
        .unwrap()
        .terminal
}

async fn shift(db: &TestDb, terminal: &pos_terminals::Model, cashier: &str) -> pos_shifts::Model {
    payments::shifts::open_shift(
        &db.db,
        terminal,
        Uuid::now_v7(),
        cashier,
        cny(50_000),
        Utc::now(),
    )
    .await
    .unwrap()
}

fn fuel(grade: FuelGrade, fen: i64) -> Sale {
    Sale {
        lines: vec![SaleLine::Fuel {
            grade,
            litres: dec!(10.5),
            nozzle: 3,
            amount: cny(fen).amount(),
        }],
    }
}

/// Writes a pending payment through the store, as the till's request does.
async fn pending(
    db: &TestDb,
    terminal: &pos_terminals::Model,
    shift: &pos_shifts::Model,
    method: Method,
    sale: Sale,
) -> pos_payments::Model {
    let amount = cny(sale
        .lines
        .iter()
        .map(|l| {
            Money::new(l.amount(), Currency::CNY)
                .unwrap()
                .minor_units()
                .unwrap()
        })
        .sum());
    let new = NewPayment {
        terminal_order_no: format!("ORD{}", Uuid::now_v7().simple()),
        method,
        amount,
        sale,
        payer_code: None,
    };
    payments::sales::create_payment(&db.db, terminal, shift, &new, None, Utc::now())
        .await
        .unwrap()
        .payment()
        .clone()
}

async fn reload(db: &TestDb, no: &str) -> pos_payments::Model {
    payments::sales::payment_by_no(&db.db, no)
        .await
        .unwrap()
        .unwrap()
}

/// A cash sale, succeeded and booked into the drawer.
async fn cash_sale(
    db: &TestDb,
    ledger: &Ledger,
    terminal: &pos_terminals::Model,
    shift: &pos_shifts::Model,
    sale: Sale,
) -> pos_payments::Model {
    let p = pending(db, terminal, shift, Method::Cash, sale).await;
    record(db, &p, "succeeded", None, None, None).await;
    let p = reload(db, &p.payment_no).await;
    payments::sales::book_cash_sale(ledger, &p).await.unwrap();
    p
}

async fn record(
    db: &TestDb,
    p: &pos_payments::Model,
    status: &str,
    channel: Option<&ChannelId>,
    txn: Option<String>,
    fee_minor: Option<i64>,
) {
    let out_trade_no = channel.map(|_| format!("{}-1", p.payment_no));
    let recorded = payments::sales::record_outcome(
        &db.db,
        &p.payment_no,
        &Outcome {
            status: status.into(),
            channel: channel.cloned(),
            channel_txn_id: txn,
            out_trade_no,
            fee_minor,
            reason: format!("test: {status}"),
        },
        Utc::now(),
    )
    .await
    .unwrap();
    assert!(recorded);
}

/// Charges the party over HTTP under the payment's channel order number.
async fn charge(
    channel: &SimulatedChannel,
    out_trade_no: &str,
    method: Method,
    fen: i64,
) -> String {
    let result = channel
        .adapter
        .charge(&ChargeRequest {
            out_trade_no: out_trade_no.into(),
            method,
            amount: cny(fen),
            description: "92# fuel".into(),
            payer_code: Some("134567890123456789".into()),
        })
        .await
        .unwrap();
    match result {
        ChargeResult::Succeeded { channel_txn_id, .. } => channel_txn_id,
        other => panic!("the charge did not succeed: {other:?}"),
    }
}

/// A channel sale the normal way: written, charged at the party, recorded, booked.
async fn channel_sale(
    db: &TestDb,
    ledger: &Ledger,
    terminal: &pos_terminals::Model,
    shift: &pos_shifts::Model,
    channel: &SimulatedChannel,
    method: Method,
    fen: i64,
) -> pos_payments::Model {
    let p = pending(db, terminal, shift, method, fuel(FuelGrade::Petrol92, fen)).await;
    let txn = charge(channel, &format!("{}-1", p.payment_no), method, fen).await;
    book(db, ledger, &p, channel, Some(txn), "succeeded").await
}

/// Records the outcome and, when succeeded, books the sale, without calling the party.
async fn book(
    db: &TestDb,
    ledger: &Ledger,
    p: &pos_payments::Model,
    channel: &SimulatedChannel,
    txn: Option<String>,
    status: &str,
) -> pos_payments::Model {
    let terms = payments::stations::channel(&db.db, p.station_id, &channel.id)
        .await
        .unwrap()
        .unwrap();
    let fee = terms.terms.fee_rate.fee_on(cny(p.amount_minor)).unwrap();
    record(
        db,
        p,
        status,
        Some(&channel.id),
        txn,
        Some(fee.minor_units().unwrap()),
    )
    .await;
    let p = reload(db, &p.payment_no).await;
    if status == "succeeded" {
        payments::sales::book_channel_sale(ledger, &p, &terms)
            .await
            .unwrap();
    }
    p
}

/// Asks for a refund of a sale of the open shift, through the store.
async fn refund(
    db: &TestDb,
    payment: &pos_payments::Model,
    no: &str,
    fen: i64,
    shift: &pos_shifts::Model,
) -> entities::pos_refunds::Model {
    let txn = entities::db::begin_write(&db.db).await.unwrap();
    let made = payments::sales::request_refund(
        &txn,
        payment,
        &NewRefund {
            terminal_refund_no: no.into(),
            amount: cny(fen),
            reason: "overfilled".into(),
            requested_by: "Alice".into(),
        },
        Some(shift.id),
        false,
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    match made {
        RefundCreated::New(r) => r,
        other => panic!("the refund was not made: {other:?}"),
    }
}

async fn retail() -> Retail {
    sim::retail::start(TIMEOUTS).await.unwrap()
}

/// Signs the station with every simulated channel on its default terms, changed by `terms`.
async fn sign_all(
    ledger: &Ledger,
    station: Uuid,
    retail: &Retail,
    terms: impl Fn(ChannelConfig) -> ChannelConfig,
) {
    for channel in &retail.channels {
        payments::stations::set_channel(
            ledger,
            station,
            &format!("org:{station}"),
            terms(default_terms(channel)),
            Utc::now(),
        )
        .await
        .unwrap();
    }
}

fn channel<'a>(retail: &'a Retail, id: &str) -> &'a SimulatedChannel {
    retail
        .channels
        .iter()
        .find(|c| c.id.as_str() == id)
        .unwrap()
}

async fn clearing_balance(ledger: &Ledger, db: &TestDb, station: Uuid, id: &ChannelId) -> Money {
    let terms = payments::stations::channel(&db.db, station, id)
        .await
        .unwrap()
        .unwrap();
    ledger
        .balance(terms.clearing_account_id)
        .await
        .unwrap()
        .posted
}

async fn statement_entries(ledger: &Ledger, channel: &str) -> usize {
    ledger
        .entries_by_reference(&format!("statement:{channel}:{}", today()))
        .await
        .unwrap()
        .len()
}

async fn reconciliation_finds_every_planted_discrepancy_and_a_second_run_posts_nothing_twice(
    backend: Backend,
) {
    let db = TestDb::fresh(backend).await;
    let ledger = ledger_of(&db);
    let retail = retail().await;
    let station = Uuid::now_v7();
    sign_all(&ledger, station, &retail, |t| t).await;
    let wx = channel(&retail, "wxpay-direct");
    let t1 = terminal(&db, station, "T1").await;
    let s1 = shift(&db, &t1, "Alice").await;
    let code = Method::WechatPayCode;

    // Two sales as they should be; the first partly refunded through the party.
    let p1 = channel_sale(&db, &ledger, &t1, &s1, wx, code, 10_000).await;
    let p2 = channel_sale(&db, &ledger, &t1, &s1, wx, code, 25_000).await;
    let refunded = refund(&db, &p1, "RF1", 1_000, &s1).await;
    let done = payments::sales::execute_refund(
        &ledger,
        &refunded.refund_no,
        Some(wx.adapter.as_ref()),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(done.status, "succeeded");
    // A refund our books count as paid back that never reached the party.
    let ghost = refund(&db, &p2, "RF2", 2_000, &s1).await;
    let ghost = payments::sales::finish_refund(
        &db.db,
        &ghost.refund_no,
        "succeeded",
        None,
        "recorded by hand",
        Utc::now(),
    )
    .await
    .unwrap();
    let wx_terms = payments::stations::channel(&db.db, station, &wx.id)
        .await
        .unwrap()
        .unwrap();
    payments::sales::book_refund(&ledger, &p2, &ghost, Some(wx_terms.clearing_account_id))
        .await
        .unwrap();
    // A charge at the party we never recorded.
    let stray_txn = charge(wx, "STRAY0000000000000001-1", code, 5_000).await;
    // A sale we booked that the party never took.
    let never = pending(&db, &t1, &s1, code, fuel(FuelGrade::Petrol95, 8_800)).await;
    let never = book(&db, &ledger, &never, wx, None, "succeeded").await;
    // The party took 300.00 on an order we booked at 30.00.
    let short = pending(&db, &t1, &s1, code, fuel(FuelGrade::Diesel0, 3_000)).await;
    let short_txn = charge(wx, &format!("{}-1", short.payment_no), code, 30_000).await;
    let short = book(&db, &ledger, &short, wx, Some(short_txn), "succeeded").await;
    // The party took the money on a payment we recorded as failed.
    let lost = pending(&db, &t1, &s1, code, fuel(FuelGrade::Petrol92, 6_600)).await;
    let lost_txn = charge(wx, &format!("{}-1", lost.payment_no), code, 6_600).await;
    let lost = book(&db, &ledger, &lost, wx, Some(lost_txn.clone()), "failed").await;

    let clearing_before = clearing_balance(&ledger, &db, station, &wx.id).await;
    let report = reconcile_day(
        &ledger,
        &wx.id,
        wx.adapter.as_ref(),
        today_date(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(report.run.status, "exceptions");
    assert_eq!(report.run.statement_lines, 5 + 1, "five orders, one refund");
    assert_eq!(report.run.matched, 2 + 1);
    assert_eq!(report.run.exceptions, 4 + 1);
    let by_kind: BTreeMap<String, _> = report
        .exceptions
        .iter()
        .filter(|e| e.subject == "payment")
        .map(|e| (e.kind.clone(), e.clone()))
        .collect();
    let refund_exceptions: Vec<_> = report
        .exceptions
        .iter()
        .filter(|e| e.subject == "refund")
        .collect();
    assert_eq!(refund_exceptions.len(), 1);
    let lost_refund = refund_exceptions[0];
    assert_eq!(
        (
            lost_refund.kind.as_str(),
            lost_refund.refund_no.as_str(),
            lost_refund.our_amount_minor,
            lost_refund.their_amount_minor
        ),
        ("missing_there", ghost.refund_no.as_str(), Some(2_000), None)
    );
    assert_eq!(
        lost_refund.payment_no.as_deref(),
        Some(p2.payment_no.as_str())
    );
    assert_eq!(
        by_kind.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "amount_mismatch",
            "missing_here",
            "missing_there",
            "status_mismatch"
        ]
    );
    assert!(report.exceptions.iter().all(|e| e.status == "open"));
    let here = &by_kind["missing_here"];
    assert_eq!(here.out_trade_no, "STRAY0000000000000001-1");
    assert_eq!(here.channel_txn_id.as_deref(), Some(stray_txn.as_str()));
    assert_eq!((here.payment_no.as_ref(), here.station_id), (None, None));
    assert_eq!(here.their_amount_minor, Some(5_000));
    let there = &by_kind["missing_there"];
    assert_eq!(there.payment_no.as_deref(), Some(never.payment_no.as_str()));
    assert_eq!(there.station_id, Some(station));
    assert!(
        there.detail.contains("nothing was taken"),
        "{}",
        there.detail
    );
    let amount = &by_kind["amount_mismatch"];
    assert_eq!(
        amount.payment_no.as_deref(),
        Some(short.payment_no.as_str())
    );
    assert_eq!(
        (amount.our_amount_minor, amount.their_amount_minor),
        (Some(3_000), Some(30_000))
    );
    let status = &by_kind["status_mismatch"];
    assert_eq!(status.payment_no.as_deref(), Some(lost.payment_no.as_str()));
    assert_eq!(status.channel_txn_id.as_deref(), Some(lost_txn.as_str()));
    assert!(
        status.detail.contains("holds the customer's money"),
        "a payment we think failed that the party took is raised: {}",
        status.detail
    );

    // Only the matched sales and refund settle: 350.00 less the statement's fees (0.38 +
    // 0.95) less the 10.00 refund.
    let net = 35_000 - 38 - 95 - 1_000;
    assert_eq!(report.settlements.len(), 1);
    assert_eq!(report.settlements[0].net_minor, net);
    assert_eq!(report.run.settled_minor, net);
    let clearing_after = clearing_balance(&ledger, &db, station, &wx.id).await;
    assert_eq!(
        clearing_after.minor_units().unwrap(),
        clearing_before.minor_units().unwrap() - net
    );
    let bank = payments::stations::station_account_ids(station).bank;
    assert_eq!(ledger.balance(bank).await.unwrap().posted, cny(net));
    let entries = statement_entries(&ledger, "wxpay-direct").await;
    assert!(entries >= 1);

    // Finance resolves one; the queue shrinks, and resolving again changes nothing.
    let resolved = resolve_exception(
        &db.db,
        status.id,
        "finance-1",
        "refunded the customer through the channel",
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(resolved.status, "resolved");
    assert_eq!(resolved.resolved_by.as_deref(), Some("finance-1"));
    let again = resolve_exception(&db.db, status.id, "finance-2", "other", Utc::now())
        .await
        .unwrap();
    assert_eq!(again, resolved, "a second resolution is a no-op");
    assert!(
        resolve_exception(&db.db, status.id, "finance-1", "  ", Utc::now())
            .await
            .is_err(),
        "a resolution needs a note"
    );
    let open = list_exceptions(
        &db.db,
        &ExceptionFilter {
            status: Some("open".into()),
            ..ExceptionFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(open.len(), 4);

    // The same day again: nothing posts twice, nothing is raised twice, nothing reopens.
    let second = reconcile_day(
        &ledger,
        &wx.id,
        wx.adapter.as_ref(),
        today_date(),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(second.run.id, report.run.id);
    assert_eq!(second.run.runs, 2);
    assert_eq!(second.run.matched, 3);
    assert_eq!(second.run.exceptions, 4);
    assert_eq!(second.exceptions.len(), 5);
    assert_eq!(
        second
            .exceptions
            .iter()
            .find(|e| e.id == status.id)
            .unwrap()
            .status,
        "resolved"
    );
    assert_eq!(statement_entries(&ledger, "wxpay-direct").await, entries);
    assert_eq!(
        clearing_balance(&ledger, &db, station, &wx.id).await,
        clearing_after
    );
    assert_eq!(ledger.balance(bank).await.unwrap().posted, cny(net));
    let stored = entities::pos_recon_runs::Entity::find()
        .count(&db.db)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    assert!(
        ledger
            .trial_balance()
            .await
            .unwrap()
            .iter()
            .all(|t| t.is_balanced())
    );
}

/// The party as a till sees it, except that an operator at the party reverses every order
/// just before it is queried: the statement was written before the reversal.
struct ReversedBeforeQuery(std::sync::Arc<dyn Channel>);

impl Channel for ReversedBeforeQuery {
    fn charge<'a>(
        &'a self,
        request: &'a ChargeRequest,
    ) -> BoxFuture<'a, Result<ChargeResult, ChannelError>> {
        self.0.charge(request)
    }
    fn query<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<QueryResult, ChannelError>> {
        Box::pin(async move {
            self.0.reverse(out_trade_no).await?;
            self.0.query(out_trade_no).await
        })
    }
    fn reverse<'a>(
        &'a self,
        out_trade_no: &'a str,
    ) -> BoxFuture<'a, Result<ReverseResult, ChannelError>> {
        self.0.reverse(out_trade_no)
    }
    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
    ) -> BoxFuture<'a, Result<RefundResult, ChannelError>> {
        self.0.refund(request)
    }
    fn parse_notification(
        &self,
        request: &InboundRequest,
    ) -> Result<PaymentNotification, NotificationError> {
        self.0.parse_notification(request)
    }
    fn statement<'a>(
        &'a self,
        day: chrono::NaiveDate,
    ) -> BoxFuture<'a, Result<Statement, ChannelError>> {
        self.0.statement(day)
    }
}

async fn a_charge_the_statement_lists_but_the_party_reversed_since_is_resolved_by_the_query(
    backend: Backend,
) {
    let db = TestDb::fresh(backend).await;
    let ledger = ledger_of(&db);
    let retail = retail().await;
    let station = Uuid::now_v7();
    sign_all(&ledger, station, &retail, |t| t).await;
    let ali = channel(&retail, "alipay-direct");
    let t1 = terminal(&db, station, "T1").await;
    let s1 = shift(&db, &t1, "Alice").await;
    // Our books gave up on the payment; the party took it, then reversed it after writing
    // the statement.
    let p = pending(
        &db,
        &t1,
        &s1,
        Method::AlipayCode,
        fuel(FuelGrade::Petrol92, 9_900),
    )
    .await;
    let txn = charge(
        ali,
        &format!("{}-1", p.payment_no),
        Method::AlipayCode,
        9_900,
    )
    .await;
    book(&db, &ledger, &p, ali, Some(txn), "failed").await;
    let party = ReversedBeforeQuery(ali.adapter.clone());
    let report = reconcile_day(&ledger, &ali.id, &party, today_date(), Utc::now())
        .await
        .unwrap();
    assert_eq!(report.exceptions.len(), 1);
    let e = &report.exceptions[0];
    assert_eq!(
        (e.kind.as_str(), e.status.as_str(), e.resolved_by.as_deref()),
        ("status_mismatch", "resolved", Some("reconciliation"))
    );
    assert!(e.resolved_at.is_some());
    assert_eq!(
        (report.run.resolved_by_query, report.run.exceptions),
        (1, 0)
    );
    assert_eq!(report.run.status, "balanced");
    assert!(
        ali.sim.taken().is_empty(),
        "nothing is left taken at the party"
    );
}

async fn after_reconciling_a_day_of_matched_items_every_clearing_account_of_the_station_nets_to_zero(
    backend: Backend,
) {
    let db = TestDb::fresh(backend).await;
    let ledger = ledger_of(&db);
    let retail = retail().await;
    let station = Uuid::now_v7();
    // Alipay direct bills its fees later; the others deduct them at payment. The bank's
    // WeChat reseller charges 0.38% where our terms say 0.30%: the statement's fee wins.
    sign_all(&ledger, station, &retail, |mut t| {
        match t.id.as_str() {
            "alipay-direct" => t.fee_mode = FeeMode::BilledLater,
            "wxpay-via-bank-a" => t.fee_rate = FeeRate::new(dec!(0.0030)).unwrap(),
            _ => {}
        }
        t
    })
    .await;
    let t1 = terminal(&db, station, "T1").await;
    let s1 = shift(&db, &t1, "Alice").await;
    let plan: [(&str, Method, &[i64]); 4] = [
        ("wxpay-direct", Method::WechatPayCode, &[12_345, 30_000]),
        ("wxpay-via-bank-a", Method::WechatPayCode, &[1_999]),
        ("alipay-direct", Method::AlipayCode, &[20_000, 4_321]),
        ("card-acquirer-a", Method::BankCard, &[88_800]),
    ];
    let mut first_wx = None;
    for (id, method, amounts) in plan {
        for fen in amounts {
            let p = channel_sale(&db, &ledger, &t1, &s1, channel(&retail, id), method, *fen).await;
            first_wx.get_or_insert(p);
        }
    }
    // A partial refund of the first WeChat sale, paid back through the party today.
    let first_wx = first_wx.unwrap();
    let txn = entities::db::begin_write(&db.db).await.unwrap();
    let refund = payments::sales::request_refund(
        &txn,
        &first_wx,
        &NewRefund {
            terminal_refund_no: "RF1".into(),
            amount: cny(2_345),
            reason: "overfilled".into(),
            requested_by: "Alice".into(),
        },
        Some(s1.id),
        false,
        None,
        Utc::now(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    let RefundCreated::New(refund) = refund else {
        panic!("the refund was not made: {refund:?}")
    };
    let wx = channel(&retail, "wxpay-direct");
    let done = payments::sales::execute_refund(
        &ledger,
        &refund.refund_no,
        Some(wx.adapter.as_ref()),
        Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(done.status, "succeeded");

    let mut settled = 0i64;
    let mut reports = BTreeMap::new();
    for channel in &retail.channels {
        let report = reconcile_day(
            &ledger,
            &channel.id,
            channel.adapter.as_ref(),
            today_date(),
            Utc::now(),
        )
        .await
        .unwrap();
        assert_eq!(
            report.run.exceptions, 0,
            "{}: {:?}",
            channel.id, report.exceptions
        );
        assert!(report.exceptions.is_empty());
        settled += report.run.settled_minor;
        let status = if report.run.statement_lines == 0 {
            "balanced"
        } else {
            report.run.status.as_str()
        };
        assert_eq!(status, "balanced");
        reports.insert(channel.id.to_string(), report);
    }
    for channel in &retail.channels {
        assert_eq!(
            clearing_balance(&ledger, &db, station, &channel.id).await,
            cny(0),
            "the clearing account with {} nets to zero",
            channel.id
        );
    }
    // The bank received every sale less the refund and the deducted fees; the fees billed
    // later are owed to Alipay.
    let gross = 12_345 + 30_000 + 1_999 + 20_000 + 4_321 + 88_800;
    let deducted = 47 + 114 + 8 + 444; // 0.38% of the WeChat sales, 0.50% of the card sale
    let adjusted = reports["wxpay-via-bank-a"].settlements[0].clone();
    assert_eq!(
        (adjusted.booked_fees_minor, adjusted.fees_minor),
        (6, 8),
        "our 0.30% booked 0.06, the statement charged 0.08"
    );
    let bank = payments::stations::station_account_ids(station).bank;
    assert_eq!(
        ledger.balance(bank).await.unwrap().posted,
        cny(gross - 2_345 - deducted)
    );
    assert_eq!(settled, gross - 2_345 - deducted);
    let fees = payments::stations::station_account_ids(station).fees;
    let billed = 76 + 16; // 0.38% of the Alipay sales, billed later
    assert_eq!(
        ledger.balance(fees).await.unwrap().posted,
        cny(deducted + billed)
    );
    assert!(
        ledger
            .trial_balance()
            .await
            .unwrap()
            .iter()
            .all(|t| t.is_balanced())
    );
}

fn sum_tallies<'a>(tallies: impl Iterator<Item = &'a Tally>) -> Tally {
    tallies.fold(Tally::default(), |mut sum, t| {
        sum.count += t.count;
        sum.amount += t.amount;
        sum
    })
}

async fn the_daily_close_flags_the_shift_left_open_adds_up_the_shift_summaries_and_stays_one_row(
    backend: Backend,
) {
    let db = TestDb::fresh(backend).await;
    let ledger = ledger_of(&db);
    let retail = retail().await;
    let (company, stations) = company_with_stations(&db, 2).await;
    let (station, other) = (stations[0], stations[1]);
    sign_all(&ledger, station, &retail, |t| t).await;
    sign_all(&ledger, other, &retail, |t| t).await;
    let t1 = terminal(&db, station, "T1").await;
    let t2 = terminal(&db, station, "T2").await;
    let t9 = terminal(&db, other, "T1").await;

    // Alice's shift: two cash sales, a WeChat sale, a cash refund; closed.
    let alice = shift(&db, &t1, "Alice").await;
    let sale = cash_sale(&db, &ledger, &t1, &alice, fuel(FuelGrade::Petrol92, 30_000)).await;
    cash_sale(
        &db,
        &ledger,
        &t1,
        &alice,
        Sale {
            lines: vec![
                SaleLine::Fuel {
                    grade: FuelGrade::Diesel0,
                    litres: dec!(40),
                    nozzle: 1,
                    amount: dec!(300.00),
                },
                SaleLine::Item {
                    name: "water".into(),
                    quantity: 2,
                    amount: dec!(4.00),
                },
            ],
        },
    )
    .await;
    let wx = channel(&retail, "wxpay-direct");
    channel_sale(&db, &ledger, &t1, &alice, wx, Method::WechatPayCode, 20_000).await;
    let txn = entities::db::begin_write(&db.db).await.unwrap();
    let RefundCreated::New(refund) = payments::sales::request_refund(
        &txn,
        &sale,
        &NewRefund {
            terminal_refund_no: "RF1".into(),
            amount: cny(5_000),
            reason: "overcharged".into(),
            requested_by: "Alice".into(),
        },
        Some(alice.id),
        false,
        None,
        Utc::now(),
    )
    .await
    .unwrap() else {
        panic!("refund refused")
    };
    txn.commit().await.unwrap();
    payments::sales::execute_refund(&ledger, &refund.refund_no, None, Utc::now())
        .await
        .unwrap();
    let declared = cny(50_000 + 30_000 + 30_400 - 5_000);
    payments::shifts::close_shift(&db.db, &alice, declared, None, Utc::now())
        .await
        .unwrap()
        .unwrap();

    // Bob's shift: a card sale and a payment still pending; left open.
    let bob = shift(&db, &t2, "Bob").await;
    let card = channel(&retail, "card-acquirer-a");
    channel_sale(&db, &ledger, &t2, &bob, card, Method::BankCard, 45_600).await;
    let stuck = pending(
        &db,
        &t2,
        &bob,
        Method::WechatPayCode,
        fuel(FuelGrade::Petrol95, 7_700),
    )
    .await;

    // The other station of the company: one closed shift with one sale.
    let carol = shift(&db, &t9, "Carol").await;
    cash_sale(&db, &ledger, &t9, &carol, fuel(FuelGrade::Petrol98, 12_300)).await;
    payments::shifts::close_shift(&db.db, &carol, cny(50_000 + 12_300), None, Utc::now())
        .await
        .unwrap()
        .unwrap();

    let day = today();
    let close = payments::daily::close_day(&db.db, station, &day, Utc::now())
        .await
        .unwrap();
    let s = &close.station.summary;

    // The day is the sum of its shifts.
    let alice_now = payments::shifts::shift(&db.db, alice.id)
        .await
        .unwrap()
        .unwrap();
    let bob_now = payments::shifts::shift(&db.db, bob.id)
        .await
        .unwrap()
        .unwrap();
    let shifts = [
        payments::shifts::shift_summary(&db.db, &alice_now, None)
            .await
            .unwrap(),
        payments::shifts::shift_summary(&db.db, &bob_now, None)
            .await
            .unwrap(),
    ];
    assert_eq!(s.sales, sum_tallies(shifts.iter().map(|x| &x.sales)));
    assert_eq!(s.refunds, sum_tallies(shifts.iter().map(|x| &x.refunds)));
    assert_eq!(s.non_fuel, sum_tallies(shifts.iter().map(|x| &x.non_fuel)));
    assert_eq!(s.net, shifts.iter().map(|x| x.net).sum::<Decimal>());
    for method in [Method::Cash, Method::WechatPayCode, Method::BankCard] {
        assert_eq!(
            s.by_method[&method],
            sum_tallies(shifts.iter().filter_map(|x| x.by_method.get(&method))),
            "{method:?}"
        );
    }
    for (grade, tally) in &s.by_fuel_grade {
        let litres: Decimal = shifts
            .iter()
            .filter_map(|x| x.by_fuel_grade.get(grade))
            .map(|t| t.litres)
            .sum();
        let amount: Decimal = shifts
            .iter()
            .filter_map(|x| x.by_fuel_grade.get(grade))
            .map(|t| t.amount)
            .sum();
        assert_eq!((tally.litres, tally.amount), (litres, amount), "{grade}");
    }
    assert_eq!(s.sales.count, 4);
    assert_eq!(
        s.sales.amount,
        dec!(300.00) + dec!(304.00) + dec!(200.00) + dec!(456.00)
    );
    assert_eq!(s.refunds.amount, dec!(50.00));
    assert_eq!(s.by_fuel_grade["0"].litres, dec!(40));
    // Fees: 0.38% of 200.00 and 0.50% of 456.00.
    assert_eq!(s.fees, dec!(0.76) + dec!(2.28));
    assert_eq!(s.shifts.len(), 2);

    // Bob's shift is flagged with its terminal and cashier; the pending payment too.
    assert_eq!(s.open_shifts.len(), 1);
    let open = &s.open_shifts[0];
    assert_eq!(
        (
            open.shift_id,
            open.terminal_id,
            open.terminal_code.as_str(),
            open.cashier_name.as_str()
        ),
        (bob.id, t2.id, "T2", "Bob")
    );
    assert_eq!(s.unresolved.len(), 1);
    assert_eq!(s.unresolved[0].number, stuck.payment_no);
    assert!(!s.is_final());
    assert_eq!(close.station.row.open_shifts, 1);
    assert_eq!(close.station.row.sales_minor, 126_000);
    assert_eq!(close.station.row.net_minor, 126_000 - 5_000);

    // The company's close adds its two stations.
    let company_close = close.company.as_ref().expect("the station has a company");
    assert_eq!(company_close.row.organisation_id, company);
    assert_eq!(company_close.row.scope, "station_company");
    assert_eq!(company_close.row.sales_minor, 126_000 + 12_300);
    assert_eq!(company_close.summary.stations, {
        let mut both = vec![station, other];
        both.sort();
        both
    });
    assert_eq!(company_close.summary.open_shifts.len(), 1);

    // Again: the same rows, never a second one.
    let again = payments::daily::close_day(&db.db, station, &day, Utc::now())
        .await
        .unwrap();
    assert_eq!(again.station.row, close.station.row);
    assert_eq!(again.company.as_ref().unwrap().row, company_close.row);
    for org in [station, company] {
        let rows = pos_daily_closes::Entity::find()
            .filter(pos_daily_closes::Column::OrganisationId.eq(org))
            .filter(pos_daily_closes::Column::BusinessDay.eq(day.as_str()))
            .count(&db.db)
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }
    // What the till's "yesterday's summary" reads is what the close stored.
    let live = payments::daily::day_summary(&db.db, station, &day)
        .await
        .unwrap();
    assert_eq!(&live, s);
    let stored = payments::daily::daily_close(&db.db, station, &day)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.summary, *s);
    // A scheduler down for three days catches up every day after the last close.
    let in_three_days = (chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d").unwrap()
        + chrono::Days::new(3))
    .format("%Y-%m-%d")
    .to_string();
    let behind = payments::daily::days_to_close(&db.db, station, &in_three_days)
        .await
        .unwrap();
    assert_eq!(behind.len(), 3);
    assert_eq!(behind.last(), Some(&in_three_days));
    assert_eq!(
        payments::daily::days_to_close(&db.db, station, &day)
            .await
            .unwrap(),
        vec![day.clone()]
    );
    let printed = payments::daily::receipt(s, "Station 1");
    assert!(printed.contains("OPEN SHIFT T2 Bob"), "{printed}");
    assert!(printed.contains("UNRESOLVED 1"), "{printed}");
}

/// Sets the channel a pending payment is about to try, as the till's routing writes it.
async fn about_to_try(db: &TestDb, p: &pos_payments::Model, channel: &ChannelId) {
    pos_payments::Entity::update_many()
        .col_expr(
            pos_payments::Column::ChannelId,
            sea_orm::sea_query::Expr::value(channel.to_string()),
        )
        .filter(pos_payments::Column::Id.eq(p.id))
        .exec(&db.db)
        .await
        .unwrap();
}

/// The day's sums per channel straight from the payments, as routing computed them before
/// the running totals.
async fn summed(db: &TestDb, station: Uuid) -> BTreeMap<ChannelId, Money> {
    let mut out = BTreeMap::new();
    for p in pos_payments::Entity::find()
        .filter(pos_payments::Column::StationId.eq(station))
        .filter(pos_payments::Column::BusinessDay.eq(today()))
        .all(&db.db)
        .await
        .unwrap()
    {
        if let (Some(channel), "pending" | "succeeded") = (p.channel_id, p.status.as_str()) {
            let total = out
                .entry(ChannelId::new(channel).unwrap())
                .or_insert(cny(0));
            *total = total.checked_add(cny(p.amount_minor)).unwrap();
        }
    }
    out
}

async fn the_daily_limits_count_what_is_pending_or_taken_and_a_failure_or_a_failover_moves_it(
    backend: Backend,
) {
    let db = TestDb::fresh(backend).await;
    let (_, stations) = company_with_stations(&db, 2).await;
    let (station, other) = (stations[0], stations[1]);
    let t1 = terminal(&db, station, "T1").await;
    let t2 = terminal(&db, station, "T2").await;
    let t9 = terminal(&db, other, "T1").await;
    let (s1, s9) = (shift(&db, &t1, "Alice").await, shift(&db, &t9, "Bob").await);
    let s2 = shift(&db, &t2, "Carol").await;
    let (a, b) = (
        ChannelId::new("wxpay-direct").unwrap(),
        ChannelId::new("wxpay-via-bank-a").unwrap(),
    );
    let used = async || {
        let used = payments::sales::used_today(&db.db, station, &today())
            .await
            .unwrap();
        // Channels whose payments all failed keep a row of zero; the sums have none.
        let used: BTreeMap<_, _> = used
            .into_iter()
            .filter(|(_, m)| !m.amount().is_zero())
            .collect();
        assert_eq!(
            used,
            summed(&db, station).await,
            "running totals against the sums"
        );
        used
    };
    let wechat = Method::WechatPayCode;
    // Taken on A.
    let p1 = pending(&db, &t1, &s1, wechat, fuel(FuelGrade::Petrol92, 50_000)).await;
    assert!(used().await.is_empty(), "not routed yet");
    record(
        &db,
        &p1,
        "succeeded",
        Some(&a),
        Some("T1".into()),
        Some(190),
    )
    .await;
    assert_eq!(used().await, BTreeMap::from([(a.clone(), cny(50_000))]));
    // Pending on A counts at once; failing frees it.
    let p2 = pending(&db, &t1, &s1, wechat, fuel(FuelGrade::Petrol95, 30_000)).await;
    about_to_try(&db, &p2, &a).await;
    assert_eq!(used().await, BTreeMap::from([(a.clone(), cny(80_000))]));
    record(&db, &p2, "failed", Some(&a), None, None).await;
    assert_eq!(used().await, BTreeMap::from([(a.clone(), cny(50_000))]));
    // At the station's other till, routed to A, charged on B after a failover: the amount
    // moves, and the station's totals add up both tills.
    let p3 = pending(&db, &t2, &s2, wechat, fuel(FuelGrade::Diesel0, 20_000)).await;
    about_to_try(&db, &p3, &a).await;
    assert_eq!(used().await, BTreeMap::from([(a.clone(), cny(70_000))]));
    record(&db, &p3, "succeeded", Some(&b), Some("T3".into()), Some(76)).await;
    assert_eq!(
        used().await,
        BTreeMap::from([(a.clone(), cny(50_000)), (b.clone(), cny(20_000))])
    );
    // Another station's payments are its own; cash has no channel.
    let p9 = pending(&db, &t9, &s9, wechat, fuel(FuelGrade::Petrol92, 10_000)).await;
    record(&db, &p9, "succeeded", Some(&a), Some("T9".into()), Some(38)).await;
    pending(
        &db,
        &t1,
        &s1,
        Method::Cash,
        fuel(FuelGrade::Petrol92, 7_000),
    )
    .await;
    assert_eq!(
        used().await,
        BTreeMap::from([(a.clone(), cny(50_000)), (b, cny(20_000))])
    );
    let other_day = payments::sales::used_today(&db.db, other, &today())
        .await
        .unwrap();
    assert_eq!(other_day, BTreeMap::from([(a, cny(10_000))]));
}

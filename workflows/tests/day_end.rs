//! The retail day's end on the engine, on PostgreSQL and SQLite: cron schedules start the
//! daily close of a station and the reconciliation of a channel, and both run their
//! activities against storage, the ledger and a simulated party over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ledger::money::{Currency, Money};
use ledger::{Ledger, LedgerConfig};
use payments::channels::{ChargeRequest, ChargeResult, Timeouts};
use payments::model::{ChannelId, Method};
use payments::sales::{FuelGrade, NewPayment, Outcome, Sale, SaleLine, business_day};
use rust_decimal_macros::dec;
use sea_orm::EntityTrait;
use testkit::{Backend, TestDb};
use uuid::Uuid;
use workflows::daily_close::{DailyClose, DailyCloseInput, daily_close_schedule};
use workflows::reconciliation::{Reconciliation, ReconciliationInput, reconciliation_schedule};
use workflows::{Engine, Instance, Registry, RetryPolicy, Status, Workers};

testkit::scenarios!(
    the_daily_close_and_the_reconciliation_run_from_their_schedules_and_on_demand,
    a_statement_the_party_never_serves_leaves_a_failed_run_and_a_failed_instance,
);

fn cny(fen: i64) -> Money {
    Money::from_minor(fen, Currency::CNY)
}

async fn finished(engine: &Engine, id: Uuid) -> Instance {
    for _ in 0..600 {
        let instance = engine.instance(id).await.unwrap();
        if instance.status != Status::Running {
            return instance;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("instance {id} did not finish");
}

async fn started_by(engine: &Engine, schedule: &str) -> Vec<Uuid> {
    entities::wf_instances::Entity::find()
        .all(engine.db())
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.business_key.starts_with(&format!("{schedule}@")))
        .map(|i| i.id)
        .collect()
}

async fn the_daily_close_and_the_reconciliation_run_from_their_schedules_and_on_demand(
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
    let retail = sim::retail::start(Timeouts {
        connect_ms: 1_000,
        request_ms: 5_000,
    })
    .await
    .unwrap();
    let station = Uuid::now_v7();
    for channel in &retail.channels {
        payments::stations::set_channel(
            &ledger,
            station,
            "station-1",
            sim::retail::default_terms(channel),
            Utc::now(),
        )
        .await
        .unwrap();
    }
    // One WeChat sale today, charged at the party over HTTP, recorded and booked.
    let wx_id = ChannelId::new("wxpay-direct").unwrap();
    let wx = retail.channels.iter().find(|c| c.id == wx_id).unwrap();
    let terminal = payments::stations::register_terminal(&db.db, station, "T1", "T1", Utc::now())
        .await
        .unwrap()
        .terminal;
    let shift = payments::shifts::open_shift(
        &db.db,
        &terminal,
        Uuid::now_v7(),
        "Alice",
        cny(0),
        Utc::now(),
    )
    .await
    .unwrap();
    let new = NewPayment {
        terminal_order_no: "ORD1".into(),
        method: Method::WechatPayCode,
        amount: cny(18_800),
        sale: Sale {
            lines: vec![SaleLine::Fuel {
                grade: FuelGrade::Petrol95,
                litres: dec!(21.3),
                nozzle: 2,
                amount: dec!(188.00),
            }],
        },
        payer_code: None,
    };
    let payment =
        payments::sales::create_payment(&db.db, &terminal, &shift, &new, None, Utc::now())
            .await
            .unwrap()
            .payment()
            .clone();
    let out_trade_no = format!("{}-1", payment.payment_no);
    let ChargeResult::Succeeded { channel_txn_id, .. } = wx
        .adapter
        .charge(&ChargeRequest {
            out_trade_no: out_trade_no.clone(),
            method: Method::WechatPayCode,
            amount: cny(18_800),
            description: "95# fuel".into(),
            payer_code: Some("134567890123456789".into()),
        })
        .await
        .unwrap()
    else {
        panic!("the charge did not succeed")
    };
    payments::sales::record_outcome(
        &db.db,
        &payment.payment_no,
        &Outcome {
            status: "succeeded".into(),
            channel: Some(wx_id.clone()),
            channel_txn_id: Some(channel_txn_id),
            out_trade_no: Some(out_trade_no),
            fee_minor: Some(71),
            reason: "paid".into(),
        },
        Utc::now(),
    )
    .await
    .unwrap();
    let payment = payments::sales::payment_by_no(&db.db, &payment.payment_no)
        .await
        .unwrap()
        .unwrap();
    let terms = payments::stations::channel(&db.db, station, &wx_id)
        .await
        .unwrap()
        .unwrap();
    payments::sales::book_channel_sale(&ledger, &payment, &terms)
        .await
        .unwrap();

    let registry = workflows::reconciliation::register_reconciliation(
        workflows::daily_close::register_daily_close(Registry::default(), db.db.clone()),
        ledger.clone(),
        Arc::new(retail.adapters()),
    );
    let engine = Engine::new(db.db.clone(), registry);
    let workers = Workers::spawn(&engine, 1, 1);

    // Every second, for the test: each tick closes and reconciles the day before it.
    let every_second = Some("* * * * * *");
    engine
        .put_schedule(daily_close_schedule(station, every_second))
        .await
        .unwrap();
    engine
        .put_schedule(reconciliation_schedule(&wx_id, every_second))
        .await
        .unwrap();
    let close_schedule = format!("daily_close:{station}");
    let recon_schedule = "reconciliation:wxpay-direct".to_owned();
    for _ in 0..40 {
        engine.fire_due_schedules().await.unwrap();
        if !started_by(&engine, &close_schedule).await.is_empty()
            && !started_by(&engine, &recon_schedule).await.is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let close_id = started_by(&engine, &close_schedule).await[0];
    let recon_id = started_by(&engine, &recon_schedule).await[0];
    let close = finished(&engine, close_id).await;
    assert_eq!(close.status, Status::Completed, "{close:?}");
    let recon = finished(&engine, recon_id).await;
    assert_eq!(recon.status, Status::Completed, "{recon:?}");
    // The tick's day before: yesterday, nothing sold, nothing on the statement.
    let tick = workflows::daily_close::tick_of(&close.business_key).unwrap();
    let yesterday = payments::daily::previous_business_day(tick);
    let stored = payments::daily::daily_close(&db.db, station, &yesterday)
        .await
        .unwrap()
        .expect("the scheduled close stored the day before its tick");
    assert_eq!(stored.row.sales_count, 0);
    // A shift open since today is not left open on yesterday.
    assert!(stored.summary.open_shifts.is_empty());
    let run = payments::reconcile::recon_run(&db.db, &wx_id, &yesterday)
        .await
        .unwrap()
        .expect("the scheduled reconciliation recorded its run");
    assert_eq!((run.status.as_str(), run.statement_lines), ("balanced", 0));

    // On demand, for today: the sale is matched and settled, the open shift flagged.
    let today = business_day(Utc::now());
    let id = engine
        .start::<Reconciliation>(
            &format!("manual:wxpay-direct:{today}"),
            ReconciliationInput {
                channel: wx_id.clone(),
                day: Some(today.clone()),
                activity_timeout_ms: 30_000,
                retry: RetryPolicy {
                    initial_interval_ms: 100,
                    maximum_attempts: 2,
                    ..RetryPolicy::default()
                },
            },
        )
        .await
        .unwrap();
    let done = finished(&engine, id).await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    let run = payments::reconcile::recon_run(&db.db, &wx_id, &today)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((run.matched, run.exceptions), (1, 0));
    assert_eq!(run.settled_minor, 18_800 - 71);
    assert_eq!(
        ledger
            .balance(terms.clearing_account_id)
            .await
            .unwrap()
            .posted,
        cny(0)
    );

    let id = engine
        .start::<DailyClose>(
            &format!("manual:{station}:{today}"),
            DailyCloseInput {
                station_id: station,
                day: Some(today.clone()),
                activity_timeout_ms: 30_000,
            },
        )
        .await
        .unwrap();
    let done = finished(&engine, id).await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    let stored = payments::daily::daily_close(&db.db, station, &today)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.row.sales_minor, 18_800);
    assert_eq!(stored.row.fees_minor, 71);
    assert_eq!(stored.summary.open_shifts.len(), 1);
    assert_eq!(stored.summary.open_shifts[0].cashier_name, "Alice");
    let closes = entities::pos_daily_closes::Entity::find()
        .all(&db.db)
        .await
        .unwrap();
    assert_eq!(closes.len(), 2, "one row per day: {closes:?}");
    workers.shutdown().await;
}

async fn a_statement_the_party_never_serves_leaves_a_failed_run_and_a_failed_instance(
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
    let retail = sim::retail::start(Timeouts {
        connect_ms: 1_000,
        request_ms: 5_000,
    })
    .await
    .unwrap();
    let id = ChannelId::new("wxpay-via-bank-a").unwrap();
    retail.sim(id.as_str()).set(|b| b.unavailable = true);
    let registry = workflows::reconciliation::register_reconciliation(
        Registry::default(),
        ledger.clone(),
        Arc::new(retail.adapters()),
    );
    let engine = Engine::new(db.db.clone(), registry);
    let workers = Workers::spawn(&engine, 1, 1);
    let day = business_day(Utc::now());
    let instance = engine
        .start::<Reconciliation>(
            "manual:wxpay-via-bank-a",
            ReconciliationInput {
                channel: id.clone(),
                day: Some(day.clone()),
                activity_timeout_ms: 10_000,
                retry: RetryPolicy {
                    initial_interval_ms: 50,
                    maximum_attempts: 2,
                    ..RetryPolicy::default()
                },
            },
        )
        .await
        .unwrap();
    let done = finished(&engine, instance).await;
    assert_eq!(done.status, Status::Failed, "{done:?}");
    let run = payments::reconcile::recon_run(&db.db, &id, &day)
        .await
        .unwrap()
        .expect("the gap is recorded");
    assert_eq!((run.status.as_str(), run.matched), ("failed", 0));
    assert!(run.detail.contains("failure"), "{}", run.detail);

    // The party is back: the same day reconciles and the run says so.
    retail.sim(id.as_str()).set(|b| b.unavailable = false);
    let again = engine
        .start::<Reconciliation>(
            "manual:wxpay-via-bank-a:again",
            ReconciliationInput {
                channel: id.clone(),
                day: Some(day.clone()),
                activity_timeout_ms: 10_000,
                retry: RetryPolicy::default(),
            },
        )
        .await
        .unwrap();
    assert_eq!(finished(&engine, again).await.status, Status::Completed);
    let run = payments::reconcile::recon_run(&db.db, &id, &day)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((run.status.as_str(), run.runs), ("balanced", 2));
    workers.shutdown().await;
}

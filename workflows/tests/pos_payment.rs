//! `pos_payment` on the engine, on PostgreSQL and SQLite, against simulated WeChat Pay
//! platforms over real HTTP, booking into the ledger.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ledger::{Currency, Ledger, LedgerConfig, Money};
use payments::channels::wechat::{WechatPay, WechatPayConfig};
use payments::channels::{Channel, Timeouts};
use payments::crypto::ApiV3Key;
use payments::flow::{FlowPolicy, PaymentInput};
use payments::model::{ChannelConfig, ChannelId, FeeMode, FeeRate, Method, Party};
use payments::postings::ChannelAccounts;
use payments::routing::{RouteRequest, RoutingSnapshot, route};
use rust_decimal_macros::dec;
use sim::SimHandle;
use testkit::{Backend, TestDb};
use workflows::pos_payment::{
    Channels, PosPayment, PosPaymentInput, register_channel_activities, register_store_activities,
};
use workflows::{Engine, Registry, Status, Workers};

testkit::scenarios!(
    channel_a_times_out_after_charging_the_query_finds_it_b_is_never_called_and_the_sale_is_booked_once,
    a_declined_payment_fails_over_to_channel_b,
);

const API_V3_KEY: &[u8; 32] = b"fc0123456789abcdef0123456789abcd";

async fn wechat(mchid: &str) -> (Arc<dyn Channel>, SimHandle) {
    let (merchant_key, merchant_public) = sim::keys::rsa_pair();
    let (platform_key, platform_public) = sim::keys::rsa_pair();
    let handle = sim::wechat::start(
        sim::wechat::WechatSimConfig {
            mchid: mchid.into(),
            appid: "wx8888888888888888".into(),
            merchant_serial_no: "SERIAL".into(),
            merchant_public_key: merchant_public,
            platform_serial_no: "PUB_KEY_ID_0001".into(),
            platform_key,
            api_v3_key: *API_V3_KEY,
            fee_rate_bp: 38,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let adapter = WechatPay::new(WechatPayConfig {
        base_url: handle.base_url(),
        appid: "wx8888888888888888".into(),
        mchid: mchid.into(),
        merchant_serial_no: "SERIAL".into(),
        merchant_key,
        platform_keys: vec![("PUB_KEY_ID_0001".into(), platform_public)],
        api_v3_key: ApiV3Key::new(API_V3_KEY).unwrap(),
        notify_url: "http://127.0.0.1:9/notify".into(),
        timeouts: Timeouts {
            connect_ms: 500,
            request_ms: 400,
        },
    });
    (Arc::new(adapter), handle)
}

fn config(id: &str, priority: u32) -> ChannelConfig {
    ChannelConfig {
        id: ChannelId::new(id).unwrap(),
        party: Party::WechatPay,
        methods: vec![Method::WechatPayCode],
        currency: Currency::CNY,
        fee_rate: FeeRate::new(dec!(0.0038)).unwrap(),
        fee_mode: FeeMode::DeductedAtPayment,
        single_limit: Money::from_minor(500_000, Currency::CNY),
        daily_limit: Money::from_minor(10_000_000, Currency::CNY),
        priority,
        maintenance: vec![],
        enabled: true,
    }
}

struct Till {
    engine: Engine,
    _workers: Workers,
    ledger: Ledger,
    accounts: ChannelAccounts,
    configs: Vec<ChannelConfig>,
    sims: Vec<SimHandle>,
    terminal: entities::pos_terminals::Model,
    shift: entities::pos_shifts::Model,
    _db: TestDb,
}

async fn till(backend: Backend) -> Till {
    let db = TestDb::fresh(backend).await;
    let ledger = Ledger::start(
        db.db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );
    let station = uuid::Uuid::now_v7();
    let configs = vec![config("wxpay-direct", 1), config("wxpay-via-bank-a", 2)];
    let mut clearing = Vec::new();
    for terms in &configs {
        let stored = payments::stations::set_channel(
            &ledger,
            station,
            "station-1",
            terms.clone(),
            Utc::now(),
        )
        .await
        .unwrap();
        clearing.push(stored.clearing_account_id);
    }
    let accounts = payments::stations::channel_accounts(
        &payments::stations::station_account_ids(station),
        clearing[0],
    );
    let terminal =
        payments::stations::register_terminal(ledger.db(), station, "till-1", "Till 1", Utc::now())
            .await
            .unwrap()
            .terminal;
    let shift = payments::shifts::open_shift(
        ledger.db(),
        &terminal,
        uuid::Uuid::now_v7(),
        "cashier",
        Money::from_minor(0, Currency::CNY),
        Utc::now(),
    )
    .await
    .unwrap();
    let (a, sim_a) = wechat("1900000001").await;
    let (b, sim_b) = wechat("1900000002").await;
    let channels: Channels =
        BTreeMap::from([(configs[0].id.clone(), a), (configs[1].id.clone(), b)]);
    let registry = register_store_activities(
        register_channel_activities(
            Registry::default().workflow::<PosPayment>(),
            Arc::new(channels),
        ),
        ledger.clone(),
    );
    let engine = Engine::new(db.db.clone(), registry);
    let workers = Workers::spawn(&engine, 2, 2);
    Till {
        engine,
        _workers: workers,
        ledger,
        accounts,
        configs,
        sims: vec![sim_a, sim_b],
        terminal,
        shift,
        _db: db,
    }
}

impl Till {
    /// Writes the payment row as the API does, starts its workflow, and waits for it.
    async fn pay(
        &self,
        order: &str,
        fen: i64,
    ) -> (workflows::Instance, entities::pos_payments::Model) {
        let amount = Money::from_minor(fen, Currency::CNY);
        let signed: Vec<ChannelId> = self.configs.iter().map(|c| c.id.clone()).collect();
        let decision = route(
            &RouteRequest {
                method: Method::WechatPayCode,
                amount,
                at: Utc::now(),
                station_channels: &signed,
                payer: None,
            },
            &self.configs,
            &RoutingSnapshot::default(),
        );
        let new = payments::sales::NewPayment {
            terminal_order_no: order.into(),
            method: Method::WechatPayCode,
            amount,
            sale: payments::sales::Sale {
                lines: vec![payments::sales::SaleLine::Fuel {
                    grade: payments::sales::FuelGrade::Petrol92,
                    litres: rust_decimal::Decimal::new(3974, 2),
                    nozzle: 3,
                    amount: amount.amount(),
                }],
            },
            payer_code: Some("134567890123456789".into()),
        };
        let created = payments::sales::create_payment(
            self.ledger.db(),
            &self.terminal,
            &self.shift,
            &new,
            Some(&decision),
            Utc::now(),
        )
        .await
        .unwrap();
        let no = created.payment().payment_no.clone();
        let input = PosPaymentInput {
            payment: PaymentInput {
                payment_no: no.clone(),
                method: Method::WechatPayCode,
                amount,
            },
            decision,
            policy: FlowPolicy {
                first_query_ms: 100,
                max_query_ms: 400,
                max_queries: 5,
                max_reversals: 3,
                reversal_retry_ms: 100,
                max_attempts: 3,
            },
            description: "92# fuel".into(),
            payer_code: new.payer_code.clone(),
            activity_timeout_ms: 5_000,
        };
        let decision = serde_json::to_value(&input.decision).unwrap();
        let id = self.engine.start::<PosPayment>(&no, input).await.unwrap();
        // The state keeps the routing decision once, with the payment; a state stored before,
        // with the decision in its input too, still reads.
        let mut state = self.engine.instance(id).await.unwrap().state;
        assert!(state["input"].get("decision").is_none(), "{state}");
        assert_eq!(state["payment"]["decision"], decision);
        state["input"]["decision"] = decision;
        serde_json::from_value::<workflows::pos_payment::PosPaymentState>(state).unwrap();
        for _ in 0..400 {
            let instance = self.engine.instance(id).await.unwrap();
            if instance.status != Status::Running {
                let row = payments::sales::payment_by_no(self.ledger.db(), &no)
                    .await
                    .unwrap()
                    .unwrap();
                return (instance, row);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("payment {no} did not finish");
    }
}

async fn channel_a_times_out_after_charging_the_query_finds_it_b_is_never_called_and_the_sale_is_booked_once(
    backend: Backend,
) {
    let till = till(backend).await;
    till.sims[0].set(|b| {
        b.timeout_after_charge_next = 1;
        b.hang_ms = 1_500;
    });
    let (instance, row) = till.pay("PAY-1", 30_000).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    assert_eq!(row.status, "succeeded");
    assert_eq!(row.channel_id.as_deref(), Some("wxpay-direct"));
    assert_eq!(row.fee_minor, Some(114));
    assert_eq!(till.sims[1].charge_calls(), 0, "channel B is never called");
    assert_eq!(till.sims[0].taken().len(), 1, "one charge");
    let sales = till.ledger.balance(till.accounts.sales).await.unwrap();
    assert_eq!(
        sales.posted,
        Money::from_minor(30_000, Currency::CNY),
        "booked once"
    );
    let clearing = till.ledger.balance(till.accounts.clearing).await.unwrap();
    assert_eq!(
        clearing.posted,
        Money::from_minor(30_000 - 114, Currency::CNY)
    );
}

async fn a_declined_payment_fails_over_to_channel_b(backend: Backend) {
    let till = till(backend).await;
    till.sims[0].set(|b| b.decline_next = 1);
    let (instance, row) = till.pay("PAY-2", 8_800).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    assert_eq!(row.channel_id.as_deref(), Some("wxpay-via-bank-a"));
    assert_eq!(
        row.out_trade_no.as_deref(),
        Some(format!("{}-2", row.payment_no).as_str())
    );
    assert!(till.sims[0].taken().is_empty());
    assert_eq!(till.sims[1].taken().len(), 1);
    let sales = till.ledger.balance(till.accounts.sales).await.unwrap();
    assert_eq!(sales.posted, Money::from_minor(8_800, Currency::CNY));
}

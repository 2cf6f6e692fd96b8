//! Treasury across OS processes on PostgreSQL and RabbitMQ: the API (`forecourt serve`), the
//! scheduler and workers with the custodial bank configured, and the bank simulator. Makers
//! and checkers act through the API while workers (and now and then the scheduler) are
//! SIGKILLed again and again; every instruction is paid exactly once.

mod common;

use std::time::{Duration, Instant};

use api::directory::{self, NewOrganisation, NewUser};
use api::policy::{OrgKind, Role};
use chrono::Utc;
use common::{Deployment, kill};
use ledger::{Currency, Ledger, LedgerConfig, Money, NewEntry};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use treasury::accounts::{NewSubAccount, open_sub_account};
use treasury::domain::{AccountNumber, BankCode};
use uuid::Uuid;

const BANK: &str = "308584000013";
const COMPANY: &str = "3100000000000101";
const DEPOT: &str = "3100000000000301";
const PASSWORD: &str = "a long demo passphrase";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn login(http: &reqwest::Client, base: &str, username: &str) -> String {
    let answer: Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["token"].as_str().expect("a token").to_owned()
}

async fn post(http: &reqwest::Client, url: String, token: &str, body: Option<Value>) -> Value {
    let mut request = http
        .post(url)
        .bearer_auth(token)
        .header("idempotency-key", Uuid::new_v4().to_string());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instructions_approved_while_workers_are_killed_are_each_paid_exactly_once() {
    let d = Deployment::new().await;
    let db = d.db.db.clone();
    let ledger = Ledger::start(
        db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );

    // The organisations, the treasury staff, the accounts at the bank.
    let org = |id, parent, kind, name: &str| NewOrganisation {
        id,
        parent_id: parent,
        kind,
        name: name.into(),
        ledger_owner: None,
    };
    let root = Uuid::now_v7();
    let company = Uuid::now_v7();
    let depot = Uuid::now_v7();
    directory::create_organisation(&db, org(root, None, OrgKind::PlatformOperator, "Platform"))
        .await
        .unwrap();
    directory::create_organisation(
        &db,
        org(company, Some(root), OrgKind::StationCompany, "Huaxin"),
    )
    .await
    .unwrap();
    directory::create_organisation(&db, org(depot, Some(root), OrgKind::Depot, "Taicang"))
        .await
        .unwrap();
    let hash = api::crypto::hash_password(PASSWORD).unwrap();
    for (username, role) in [
        ("maker", Role::TreasuryMaker),
        ("checker", Role::TreasuryChecker),
    ] {
        directory::create_user(
            &db,
            NewUser {
                id: Uuid::now_v7(),
                organisation_id: root,
                username: username.into(),
                display_name: username.into(),
                role,
            },
            hash.clone(),
        )
        .await
        .unwrap();
    }
    let mut subs = Vec::new();
    for (owner, number, is_master) in [
        (root, "3100000000000000", true),
        (company, COMPANY, false),
        (depot, DEPOT, false),
    ] {
        subs.push(
            open_sub_account(
                &ledger,
                NewSubAccount {
                    owner_org: owner.to_string(),
                    holder_name: format!("Org {owner}"),
                    account: AccountNumber::new(number).unwrap(),
                    bank: BankCode::new(BANK).unwrap(),
                    currency: Currency::CNY,
                    is_master,
                },
                Utc::now(),
            )
            .await
            .unwrap(),
        );
    }
    let funds = Decimal::from(10_000_000);
    ledger
        .post_entry(NewEntry::transfer(
            "fund",
            "test",
            subs[0].ledger_account_id,
            subs[1].ledger_account_id,
            funds,
            Currency::CNY,
        ))
        .await
        .unwrap();

    // Keys, the bank, and the processes.
    let keys = std::env::temp_dir().join(format!("forecourt-keys-{}", Uuid::new_v4().simple()));
    let platform = treasury::signing::generate_demo_keys(&keys, "platform").unwrap();
    let bank_keys = treasury::signing::generate_demo_keys(&keys, "bank").unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut config = sim::bank::BankSimConfig::new(
        treasury::signing::Signer::from_pem_file(&bank_keys.private_key).unwrap(),
        treasury::signing::Verifier::from_pem_file(&platform.public_key).unwrap(),
        treasury::rails::Rails::new(
            treasury::rails::RailsConfig::default(),
            treasury::calendar::BusinessCalendar::new(Default::default()).unwrap(),
        )
        .unwrap(),
    );
    config.accounts = vec![
        (
            AccountNumber::new(COMPANY).unwrap(),
            Money::new(funds, Currency::CNY).unwrap(),
        ),
        (
            AccountNumber::new(DEPOT).unwrap(),
            Money::zero(Currency::CNY),
        ),
    ];
    config.callback_url = Some(format!("{base}/v1/treasury/bank/callbacks"));
    config.callback_delay = Duration::from_millis(50);
    let bank = sim::bank::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let treasury_env = vec![
        ("TREASURY_BANK_URL", bank.base_url()),
        (
            "TREASURY_SIGNING_KEY",
            platform.private_key.display().to_string(),
        ),
        (
            "TREASURY_BANK_KEY",
            bank_keys.public_key.display().to_string(),
        ),
        ("TREASURY_ACTIVITY_TIMEOUT_MS", "3000".to_owned()),
        (
            "API_KEY_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned(),
        ),
    ];
    let _serve = d.spawn_with(
        &["serve", "--listen", &format!("127.0.0.1:{port}")],
        &treasury_env,
    );
    let mut scheduler = d.spawn_with(&["scheduler"], &treasury_env);
    let worker = || d.spawn_with(&["worker", "--concurrency", "2"], &treasury_env);
    let mut workers = vec![worker(), worker()];

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let started = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let maker = login(&http, &base, "maker").await;
    let checker = login(&http, &base, "checker").await;

    // Forty instructions, made and approved through the API, while workers die.
    let n = 40;
    let mut ids = Vec::new();
    let mut total = Decimal::ZERO;
    let mut kills = 0usize;
    for i in 0..n {
        let amount = Decimal::new(100_000 + i as i64 * 101, 2);
        total += amount;
        let created = post(
            &http,
            format!("{base}/v1/treasury/instructions"),
            &maker,
            Some(json!({
                "debtor_sub_account_id": subs[1].id,
                "creditor_sub_account_id": subs[2].id,
                "amount": amount.to_string(),
                "currency": "CNY",
            })),
        )
        .await;
        let id = created["id"].as_str().unwrap().to_owned();
        post(
            &http,
            format!("{base}/v1/treasury/instructions/{id}/approve"),
            &checker,
            None,
        )
        .await;
        ids.push(id);
        if i % 2 == 1 {
            let victim = kills % workers.len();
            kill(&mut workers[victim]);
            workers[victim] = worker();
            kills += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut settled = 0;
        for id in &ids {
            let got: Value = http
                .get(format!("{base}/v1/treasury/instructions/{id}"))
                .bearer_auth(&checker)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_ne!(got["status"], "rejected", "{got:#}");
            if got["status"] == "settled" {
                settled += 1;
            }
        }
        if settled == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {settled} of {} settled",
            ids.len()
        );
        // Keep killing while work is in flight; the scheduler every third time.
        let victim = kills % workers.len();
        kill(&mut workers[victim]);
        workers[victim] = worker();
        if kills % 3 == 2 {
            kill(&mut scheduler);
            scheduler = d.spawn_with(&["scheduler"], &treasury_env);
        }
        kills += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    eprintln!("{kills} kills while {n} instructions were paid");
    assert!(
        kills >= 10,
        "the run ended after {kills} kills: too few to prove anything"
    );

    let counters = bank.counters();
    assert_eq!(counters.payments_executed, n as u64, "{counters:?}");
    let at_bank = |number: &str| {
        bank.balance(&AccountNumber::new(number).unwrap())
            .unwrap()
            .amount()
    };
    assert_eq!(at_bank(COMPANY), funds - total);
    assert_eq!(at_bank(DEPOT), total);
    let posted = |id| {
        let ledger = ledger.clone();
        async move { ledger.balance(id).await.unwrap().posted.amount() }
    };
    assert_eq!(posted(subs[1].ledger_account_id).await, funds - total);
    assert_eq!(posted(subs[2].ledger_account_id).await, total);

    for w in &mut workers {
        kill(w);
    }
    kill(&mut scheduler);
    let mut destinations = d.engine.destinations();
    destinations.extend(
        [
            "workflow:bank_instruction",
            "activity:treasury.check_approval",
            "activity:treasury.plan",
            "activity:treasury.sync",
            "activity:treasury.return",
        ]
        .map(String::from),
    );
    let broker = workflows::amqp::Broker::connect(common::AMQP_URL, &d.prefix, "test cleanup")
        .await
        .unwrap();
    broker.delete(&destinations).await.unwrap();
    broker.close().await.unwrap();
    let _ = std::fs::remove_dir_all(keys);
}

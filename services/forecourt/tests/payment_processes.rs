//! Retail payments across OS processes on PostgreSQL and RabbitMQ: the API (`forecourt
//! serve`), the scheduler and workers with the six simulated channels configured through a
//! `PAYMENTS_CHANNELS` file. A till takes payments through the API while workers (and now and
//! then the scheduler) are SIGKILLed again and again; every payment ends charged exactly once
//! at exactly one channel and booked exactly once. Member-card operations and partner
//! settlements are made while the API itself is killed mid-request; each is booked once.

mod common;

use std::time::{Duration, Instant};

use api::directory::{self, NewOrganisation, NewUser};
use api::policy::{OrgKind, Role};
use chrono::Utc;
use common::{Deployment, kill};
use ledger::{Ledger, LedgerConfig};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use uuid::Uuid;

const PASSWORD: &str = "a long demo passphrase";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A station of a station company with a cashier and the company's owner, signed on the six
/// simulated channels, a till, a partner organisation (not yet signed onto the station), the
/// channels file and the environment of the processes.
struct Retail {
    d: Deployment,
    ledger: Ledger,
    retail: sim::retail::Retail,
    station: Uuid,
    partner: Uuid,
    till: payments::stations::RegisteredTerminal,
    port: u16,
    base: String,
    env: Vec<(&'static str, String)>,
    dir: std::path::PathBuf,
}

async fn retail_deployment() -> Retail {
    let d = Deployment::new().await;
    let db = d.db.db.clone();
    let ledger = Ledger::start(
        db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );

    // A station with a cashier, signed on the six simulated channels, and a till.
    let org = |id, parent, kind, name: &str| NewOrganisation {
        id,
        parent_id: parent,
        kind,
        name: name.into(),
        ledger_owner: None,
    };
    let (root, company, station, partner) = (
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    for (id, parent, kind, name) in [
        (root, None, OrgKind::PlatformOperator, "Platform"),
        (company, Some(root), OrgKind::StationCompany, "Huaxin"),
        (station, Some(company), OrgKind::Station, "Huaxin No. 1"),
        (partner, Some(root), OrgKind::Partner, "Yunlian Freight"),
    ] {
        directory::create_organisation(&db, org(id, parent, kind, name))
            .await
            .unwrap();
    }
    for (organisation_id, username, role) in [
        (station, "cashier", Role::Cashier),
        (company, "owner", Role::StationOwner),
    ] {
        directory::create_user(
            &db,
            NewUser {
                id: Uuid::now_v7(),
                organisation_id,
                username: username.into(),
                display_name: username.into(),
                role,
            },
            api::crypto::hash_password(PASSWORD).unwrap(),
        )
        .await
        .unwrap();
    }
    let timeouts = payments::channels::Timeouts {
        connect_ms: 500,
        request_ms: 2_000,
    };
    let retail = sim::retail::start(timeouts).await.unwrap();
    for channel in &retail.channels {
        payments::stations::set_channel(
            &ledger,
            station,
            &station.to_string(),
            sim::retail::default_terms(channel),
            Utc::now(),
        )
        .await
        .unwrap();
    }
    let till = payments::stations::register_terminal(&db, station, "till-1", "Till", Utc::now())
        .await
        .unwrap();

    // The channels file, and the processes.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let notify = format!("{base}/v1/payments/notifications");
    retail.notify_to(&notify);
    let dir = std::env::temp_dir().join(format!("forecourt-tills-{}", Uuid::new_v4().simple()));
    let channels = retail.write_config(&dir, &notify, timeouts).unwrap();
    let env = vec![
        ("PAYMENTS_CHANNELS", channels.display().to_string()),
        ("PAYMENTS_ACTIVITY_TIMEOUT_MS", "3000".to_owned()),
        ("PAYMENTS_WAIT_MS", "1500".to_owned()),
        (
            "API_KEY_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=".to_owned(),
        ),
    ];
    Retail {
        d,
        ledger,
        retail,
        station,
        partner,
        till,
        port,
        base,
        env,
        dir,
    }
}

/// Waits for `serve` to answer, then logs the cashier in and returns the token.
async fn cashier_token(http: &reqwest::Client, base: &str) -> String {
    user_token(http, base, "cashier").await
}

/// Waits for `serve` to answer, then logs `username` in and returns the token.
async fn user_token(http: &reqwest::Client, base: &str, username: &str) -> String {
    let started = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let login: Value = http
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    login["token"].as_str().unwrap().to_owned()
}

/// Kills the API in the middle of requests and counts it.
#[derive(Default)]
struct Killer {
    kills: usize,
    /// Kills that came while the request was still running (the others just after its answer).
    in_flight: usize,
}

impl Killer {
    /// Sends the request `build` makes until it is answered with a success, and returns the
    /// answer. With `kill_after`, the API is SIGKILLed that long into the first try and started
    /// again by `serve`: in the middle of its work when the request is still running, just after
    /// its answer otherwise. A failed try is sent again as `build` makes it anew.
    async fn send(
        &mut self,
        build: impl Fn() -> reqwest::RequestBuilder,
        mut kill_after: Option<Duration>,
        api: &mut common::Proc,
        serve: impl Fn() -> common::Proc,
    ) -> Value {
        loop {
            let request = build().send();
            let sent = match kill_after.take() {
                Some(delay) => {
                    tokio::pin!(request);
                    let sent = tokio::select! {
                        sent = &mut request => Some(sent),
                        () = tokio::time::sleep(delay) => None,
                    };
                    kill(api);
                    self.kills += 1;
                    *api = serve();
                    match sent {
                        Some(sent) => sent,
                        None => {
                            self.in_flight += 1;
                            request.await
                        }
                    }
                }
                None => request.await,
            };
            match sent {
                Ok(r) if r.status().is_success() => return r.json().await.unwrap(),
                Ok(r) => panic!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payments_taken_while_workers_are_killed_are_each_charged_and_booked_exactly_once() {
    let Retail {
        d,
        ledger,
        retail,
        station,
        till,
        port,
        base,
        env,
        dir,
        ..
    } = retail_deployment().await;
    let _serve = d.spawn_with(&["serve", "--listen", &format!("127.0.0.1:{port}")], &env);
    let mut scheduler = d.spawn_with(&["scheduler"], &env);
    let worker = || d.spawn_with(&["worker", "--concurrency", "2"], &env);
    let mut workers = vec![worker(), worker()];

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = cashier_token(&http, &base).await;
    let at_till = |request: reqwest::RequestBuilder| {
        request
            .bearer_auth(&token)
            .header("forecourt-terminal-key", &till.key)
            .header("idempotency-key", Uuid::new_v4().to_string())
    };
    let terminal = till.terminal.id;
    let opened = at_till(http.post(format!("{base}/v1/terminals/{terminal}/shifts")))
        .json(&json!({"opening_float": "0.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);

    // Forty payments over three methods; now and then a channel takes the money and then
    // hangs past the adapter's timeout. Workers die all along.
    let methods = ["wechat_pay_code", "alipay_code", "bank_card"];
    let n = 40;
    let mut orders = Vec::new();
    let mut total = Decimal::ZERO;
    let mut kills = 0usize;
    for i in 0..n {
        if i % 7 == 3 {
            retail.sim("wxpay-direct").set(|b| {
                b.timeout_after_charge_next = 1;
                b.hang_ms = 3_000;
            });
        }
        let amount = Decimal::new(10_000 + i as i64 * 37, 2);
        total += amount;
        let order = format!("K-{i:03}");
        let body = json!({
            "order_no": order,
            "method": methods[i % methods.len()],
            "amount": amount.to_string(),
            "payer_code": format!("13456789012345{i:04}"),
            "lines": [{"kind": "fuel", "grade": "95", "litres": "12.500", "nozzle": 1,
                       "amount": amount.to_string()}],
        });
        // A till retries until it gets an answer: a request cut short is sent again with the
        // same order number.
        loop {
            let sent = at_till(http.post(format!("{base}/v1/terminals/{terminal}/payments")))
                .json(&body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => panic!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        orders.push(order);
        if i % 2 == 1 {
            let victim = kills % workers.len();
            kill(&mut workers[victim]);
            workers[victim] = worker();
            kills += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut payments: Vec<Value>;
    loop {
        payments = Vec::new();
        for order in &orders {
            let got: Value =
                at_till(http.get(format!("{base}/v1/terminals/{terminal}/payments/{order}")))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
            payments.push(got);
        }
        let pending = payments.iter().filter(|p| p["status"] == "pending").count();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} payments still pending"
        );
        let victim = kills % workers.len();
        kill(&mut workers[victim]);
        workers[victim] = worker();
        if kills % 3 == 2 {
            kill(&mut scheduler);
            scheduler = d.spawn_with(&["scheduler"], &env);
        }
        kills += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    eprintln!("{kills} kills while {n} payments were taken");
    assert!(kills >= 10, "only {kills} kills: too few to prove anything");

    // Every payment succeeded, on one channel, charged once there and nowhere else, and
    // booked once.
    let mut booked = Decimal::ZERO;
    for payment in &payments {
        assert_eq!(payment["status"], "succeeded", "{payment:#}");
        let no = payment["payment_no"].as_str().unwrap();
        let charges: Vec<(String, sim::SimRecord)> = retail
            .channels
            .iter()
            .flat_map(|c| {
                c.sim
                    .taken()
                    .into_iter()
                    .filter(|r| r.out_trade_no.starts_with(&format!("{no}-")))
                    .map(|r| (c.id.to_string(), r))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(charges.len(), 1, "{no}: {charges:?}");
        assert_eq!(Some(charges[0].0.as_str()), payment["channel"].as_str());
        let entries = ledger
            .entries_by_reference(&format!("payment:{no}"))
            .await
            .unwrap();
        assert_eq!(entries.len(), 1, "{no} booked {} times", entries.len());
        booked += payment["amount"]
            .as_str()
            .unwrap()
            .parse::<Decimal>()
            .unwrap();
    }
    assert_eq!(booked, total);
    let sales = payments::stations::station_account_ids(station).sales;
    assert_eq!(
        ledger.balance(sales).await.unwrap().posted.amount(),
        total,
        "the station's sales are the sum of the payments"
    );
    let audit = ledger.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);

    for w in &mut workers {
        kill(w);
    }
    kill(&mut scheduler);
    let mut destinations = d.engine.destinations();
    destinations.extend(
        [
            "workflow:pos_payment",
            "workflow:refund_approval",
            "workflow:bank_instruction",
            "activity:payments.charge",
            "activity:payments.query",
            "activity:payments.reverse",
            "activity:payments.post_sale",
            "activity:payments.record",
            "activity:payments.settle",
            "activity:payments.refund",
            "activity:payments.refund_expire",
            "activity:payments.refund_attention",
        ]
        .map(String::from),
    );
    let broker = workflows::amqp::Broker::connect(common::AMQP_URL, &d.prefix, "test cleanup")
        .await
        .unwrap();
    broker.delete(&destinations).await.unwrap();
    broker.close().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A till loads and spends a member card through `serve` while `serve` itself is SIGKILLed in
/// the middle of requests, again and again; the till sends each request again (same order
/// number) until it is answered. Every top-up and every payment is booked exactly once, and
/// the card holds exactly what the answers say.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_card_top_ups_and_payments_are_booked_once_while_the_api_is_killed_mid_request() {
    let Retail {
        d,
        ledger,
        till,
        port,
        base,
        env,
        dir,
        ..
    } = retail_deployment().await;
    let listen = format!("127.0.0.1:{port}");
    let serve = || d.spawn_with(&["serve", "--listen", &listen], &env);
    let mut api = serve();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Sessions are stored: the token outlives the process that issued it.
    let token = cashier_token(&http, &base).await;
    let terminal = till.terminal.id;
    let post = |path: String, body: Value| {
        http.post(format!("{base}/v1/terminals/{terminal}/{path}"))
            .bearer_auth(&token)
            .header("forecourt-terminal-key", &till.key)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(&body)
    };
    let opened = post("shifts".into(), json!({"opening_float": "0.00"}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), 201);
    let card = "8800000000000777";
    let issued = post(
        "member-cards".into(),
        json!({"card_no": card, "kind": "anonymous"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(issued.status(), 201);

    let mut killer = Killer::default();
    let (mut top_ups, mut payments) = (Vec::new(), Vec::new());
    let n = 24;
    for i in 0..n {
        let (path, body) = if i % 2 == 0 {
            (
                format!("member-cards/{card}/top-ups"),
                json!({"order_no": format!("TU-{i}"), "amount": "50.00"}),
            )
        } else {
            (
                "payments".to_owned(),
                json!({
                    "order_no": format!("CP-{i}"),
                    "method": "member_card",
                    "amount": "30.00",
                    "payer_code": card,
                    "lines": [{"kind": "item", "name": "coffee", "quantity": 2, "amount": "30.00"}],
                }),
            )
        };
        let kill_after = (i % 3 == 0).then_some(Duration::from_millis((i as u64 * 3) % 13));
        let answer = killer
            .send(
                || post(path.clone(), body.clone()),
                kill_after,
                &mut api,
                serve,
            )
            .await;
        assert_eq!(answer["status"], "succeeded", "{answer:#}");
        if i % 2 == 0 {
            top_ups.push(answer["top_up_no"].as_str().unwrap().to_owned());
        } else {
            payments.push(answer["payment_no"].as_str().unwrap().to_owned());
        }
    }
    eprintln!(
        "{} kills of the API ({} with the request in flight) while {n} card operations were made",
        killer.kills, killer.in_flight
    );
    assert_eq!(killer.kills, 8);

    // Each booked once; the card holds 12 × 50.00 − 12 × 30.00; the ledger is sound.
    for no in &top_ups {
        let entries = ledger
            .entries_by_reference(&format!("top-up:{no}"))
            .await
            .unwrap();
        assert_eq!(
            entries.len(),
            1,
            "top-up {no} booked {} times",
            entries.len()
        );
    }
    for no in &payments {
        let entries = ledger
            .entries_by_reference(&format!("payment:{no}"))
            .await
            .unwrap();
        assert_eq!(
            entries.len(),
            1,
            "payment {no} booked {} times",
            entries.len()
        );
    }
    let view: Value = http
        .get(format!(
            "{base}/v1/terminals/{terminal}/member-cards/{card}"
        ))
        .bearer_auth(&token)
        .header("forecourt-terminal-key", &till.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["balance"], "240.00", "{view:#}");
    assert_eq!(view["loadable"], "760.00", "{view:#}");
    let audit = ledger.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    kill(&mut api);
    d.remove_queues().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partner_settlements_and_their_reversals_are_booked_once_while_the_api_is_killed_mid_request()
 {
    let Retail {
        d,
        ledger,
        station,
        partner,
        port,
        base,
        env,
        dir,
        ..
    } = retail_deployment().await;
    let listen = format!("127.0.0.1:{port}");
    let serve = || d.spawn_with(&["serve", "--listen", &listen], &env);
    let mut api = serve();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = user_token(&http, &base, "owner").await;
    let post = |path: String, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .header("idempotency-key", Uuid::new_v4().to_string())
            .json(&body)
    };
    let signed = post(
        format!("/v1/stations/{station}/partner-contracts"),
        json!({"partner_id": partner, "commission_rate": "0.005", "settlement_days": 1, "single_limit": "3000.00"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(signed.status(), 201);
    let contract: Value = signed.json().await.unwrap();
    let contract_id = contract["id"].as_str().unwrap().to_owned();
    let settlements = format!("/v1/stations/{station}/partner-contracts/{contract_id}/settlements");

    // Twelve transfers of 10.00, every third one reversed after it is recorded; the API is
    // killed a few milliseconds into every third request, and each request is sent again
    // (with a new Idempotency-Key, as a person would after an error) until it is answered.
    let mut killer = Killer::default();
    let mut requests = 0u64;
    let mut send = async |path: String, body: Value| -> Value {
        requests += 1;
        let kill_after = requests
            .is_multiple_of(3)
            .then_some(Duration::from_millis((requests * 3) % 13));
        killer
            .send(
                || post(path.clone(), body.clone()),
                kill_after,
                &mut api,
                serve,
            )
            .await
    };
    for i in 0..12 {
        let recorded = send(
            settlements.clone(),
            json!({"reference": format!("CMB-{i:04}"), "amount": "10.00", "received_on": "2026-11-20"}),
        )
        .await;
        assert_eq!(recorded["settlement"]["reference"], format!("CMB-{i:04}"));
        if i % 3 == 0 {
            let id = recorded["settlement"]["id"].as_str().unwrap().to_owned();
            let reversed = send(
                format!("{settlements}/{id}/reverse"),
                json!({"reason": "recorded on the wrong contract"}),
            )
            .await;
            assert!(
                !reversed["settlement"]["reversal"].is_null(),
                "{reversed:#}"
            );
        }
    }
    eprintln!(
        "{} kills of the API ({} with the request in flight) in {requests} settlement requests",
        killer.kills, killer.in_flight
    );
    assert_eq!(killer.kills, 5);

    // Twelve settlements and four reversals booked, each once: the partner is 80.00 in
    // credit, and the station's bank account holds 80.00.
    let entries = ledger
        .entries_by_reference(&format!("partner-contract:{contract_id}"))
        .await
        .unwrap();
    let keys: std::collections::BTreeSet<&str> =
        entries.iter().map(|e| e.idempotency_key.as_str()).collect();
    assert_eq!(entries.len(), 16, "{keys:?}");
    assert_eq!(keys.len(), 16, "{keys:?}");
    assert_eq!(
        keys.iter().filter(|k| k.ends_with(":reversal")).count(),
        4,
        "{keys:?}"
    );
    let receivable: Uuid = contract["receivable_account_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        ledger.balance(receivable).await.unwrap().posted.amount(),
        Decimal::new(-8_000, 2)
    );
    let listed: Value = http
        .get(format!("{base}{settlements}?limit=200"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 12, "{listed:#}");
    assert_eq!(
        items.iter().filter(|s| !s["reversal"].is_null()).count(),
        4,
        "{listed:#}"
    );
    let audit = ledger.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    kill(&mut api);
    d.remove_queues().await;
    let _ = std::fs::remove_dir_all(dir);
}

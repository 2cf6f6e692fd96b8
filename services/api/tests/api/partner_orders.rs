//! Partner-app orders through the API: a station company signs a partner onto a station, the
//! partner's system pushes orders its drivers paid (signed requests), the till prints the
//! tickets, the shift and the day count the orders, the ledger has the partner owing the
//! station, and a refund at the till is deducted from what the partner owes and announced
//! to the partner by a signed webhook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use rust_decimal::Decimal;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use testkit::Backend;
use uuid::Uuid;

use crate::common::{
    Call, Signer, TestApp, Who, create_key, expect_problem, nonce, signed, spawn_app,
};

testkit::scenarios!(
    a_partner_order_pushed_to_a_till_counts_in_the_shift_and_is_owed_by_the_partner,
    a_partner_without_a_contract_cannot_push_to_the_station,
    the_same_partner_order_pushed_twice_is_one_sale,
    a_partner_order_to_a_till_without_an_open_shift_is_refused_and_writes_nothing,
    a_partner_order_refunded_at_the_till_is_deducted_from_what_the_partner_owes_and_the_partner_is_told,
    a_push_interrupted_before_its_booking_is_booked_by_the_tills_list_before_its_ticket_prints,
    a_partners_transfer_is_booked_to_the_stations_bank_once_per_reference_off_what_it_owes_and_a_mistake_is_reversed,
);

async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn dec(value: &Value) -> Decimal {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a decimal string, got {value}"))
        .parse()
        .expect("a decimal")
}

fn till(app: &TestApp, station: &str) -> (Uuid, String) {
    app.world.terminals[station].clone()
}

/// Partner Q's signing key (partner P's is the world's).
struct Partner {
    key_id: Uuid,
    secret: String,
}

impl Partner {
    fn p(app: &TestApp) -> Partner {
        Partner {
            key_id: app.world.key_id,
            secret: app.world.key_secret.clone(),
        }
    }

    async fn q(app: &TestApp) -> Partner {
        let (key_id, secret) = create_key(&app.state, app.world.orgs["partner-q"]).await;
        Partner { key_id, secret }
    }

    /// Sends `call` signed with this partner's key.
    async fn call(&self, app: &TestApp, call: &Call) -> (u16, Value) {
        let bytes = call
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let mut builder = app.client.request(call.method.clone(), app.url(&call.path));
        if call.body.is_some() {
            builder = builder
                .header("content-type", "application/json")
                .body(bytes.clone());
        }
        if let Some(key) = &call.idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        let nonce = nonce();
        let builder = signed(
            builder,
            call.method.as_str(),
            &call.path,
            &bytes,
            &Signer {
                key_id: self.key_id,
                secret: &self.secret,
                timestamp: Utc::now().timestamp(),
                nonce: &nonce,
            },
        );
        body(builder.send().await.unwrap()).await
    }

    async fn push(&self, app: &TestApp, order: Value) -> (u16, Value) {
        self.call(app, &Call::post("/v1/partner/orders", Some(order)))
            .await
    }

    async fn order(&self, app: &TestApp, order_no: &str) -> (u16, Value) {
        self.call(app, &Call::get(format!("/v1/partner/orders/{order_no}")))
            .await
    }
}

/// An order of `amount` of diesel to `terminal`.
fn order(order_no: &str, terminal: Uuid, amount: &str) -> Value {
    json!({
        "order_no": order_no,
        "terminal_id": terminal,
        "amount": amount,
        "lines": [{"kind": "fuel", "grade": "0", "litres": "42.553", "nozzle": 5, "amount": amount}],
        "driver_ref": "D-88231",
        "vehicle_plate": "陕A12345",
    })
}

/// The station owner signs `partner` onto `station`: returns the contract.
async fn sign(app: &TestApp, station: &str, partner: &str, rate: &str, limit: &str) -> Value {
    let who = if station == "station-a1" {
        Who::StationOwner
    } else {
        Who::RootAdmin
    };
    let (status, contract) = body(
        app.call(
            Some(who),
            &Call::post(
                format!("/v1/stations/{}/partner-contracts", app.world.orgs[station]),
                Some(json!({
                    "partner_id": app.world.orgs[partner],
                    "commission_rate": rate,
                    "settlement_days": 1,
                    "single_limit": limit,
                })),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{contract}");
    contract
}

async fn open_shift(app: &TestApp, station: &str, float: &str) {
    let (id, key) = till(app, station);
    let (status, shift) = body(
        app.call(
            Some(Who::Cashier),
            &Call::post(
                format!("/v1/terminals/{id}/shifts"),
                Some(json!({ "opening_float": float })),
            )
            .at_till(&key),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{shift}");
}

async fn at_till(app: &TestApp, call: Call) -> (u16, Value) {
    let (_, key) = till(app, "station-a1");
    body(app.call(Some(Who::Cashier), &call.at_till(&key)).await).await
}

async fn unprinted(app: &TestApp) -> Vec<Value> {
    let (id, _) = till(app, "station-a1");
    let (status, page) =
        at_till(app, Call::get(format!("/v1/terminals/{id}/partner-orders"))).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

async fn balance(app: &TestApp, account: Uuid) -> Decimal {
    app.state
        .ledger
        .balance(account)
        .await
        .unwrap()
        .posted
        .amount()
}

async fn close_shift(app: &TestApp, declared: &str) -> Value {
    let (id, _) = till(app, "station-a1");
    let (status, shift) = at_till(
        app,
        Call::post(
            format!("/v1/terminals/{id}/shifts/current/close"),
            Some(json!({ "declared_cash": declared })),
        ),
    )
    .await;
    assert_eq!(status, 200, "{shift}");
    shift
}

async fn a_partner_order_pushed_to_a_till_counts_in_the_shift_and_is_owed_by_the_partner(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let station = app.world.orgs["station-a1"];
    let partner_id = app.world.orgs["partner-p"];
    let (terminal, _) = till(&app, "station-a1");
    let contract = sign(&app, "station-a1", "partner-p", "0.01", "2000.00").await;
    assert_eq!(contract["status"], "active");
    assert_eq!(dec(&contract["owed"]), Decimal::ZERO);
    let p = Partner::p(&app);

    // The partner sees the station it may serve, with the till to push to.
    let (status, stations) = p.call(&app, &Call::get("/v1/partner/stations")).await;
    assert_eq!(status, 200, "{stations}");
    assert_eq!(stations.as_array().unwrap().len(), 1, "{stations}");
    assert_eq!(stations[0]["station_id"], station.to_string());
    assert_eq!(stations[0]["terminals"][0]["id"], terminal.to_string());

    open_shift(&app, "station-a1", "500.00").await;
    // A cash sale beside it, so the drawer has something to count.
    let (status, cash) = at_till(
        &app,
        Call::post(
            format!("/v1/terminals/{terminal}/payments"),
            Some(json!({
                "order_no": "C-1", "method": "cash", "amount": "50.00",
                "lines": [{"kind": "item", "name": "water", "quantity": 5, "amount": "50.00"}],
            })),
        ),
    )
    .await;
    assert_eq!(status, 201, "{cash}");

    let (status, pushed) = p.push(&app, order("YL-1001", terminal, "300.00")).await;
    assert_eq!(status, 201, "{pushed}");
    assert_eq!(pushed["status"], "succeeded", "{pushed}");
    assert_eq!(dec(&pushed["amount"]), Decimal::new(30000, 2));
    assert_eq!(dec(&pushed["commission"]), Decimal::new(300, 2));
    assert_eq!(pushed["printed"], false);
    assert_eq!(pushed["terminal_id"], terminal.to_string());
    let payment_no = pushed["payment_no"].as_str().unwrap().to_owned();

    // The till sees the order it has to print, with its ticket.
    let waiting = unprinted(&app).await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(waiting[0]["order_no"], "YL-1001");
    let ticket = waiting[0]["ticket"].as_str().unwrap();
    assert!(
        ticket.contains("YL-1001") && ticket.contains("Nothing to collect"),
        "{ticket}"
    );
    assert!(
        ticket.contains("陕A12345") && ticket.contains("300.00"),
        "{ticket}"
    );
    // The till acknowledges the print; again changes nothing.
    let print = || {
        Call::post(
            format!("/v1/terminals/{terminal}/partner-orders/{payment_no}/printed"),
            None,
        )
    };
    let (status, printed) = at_till(&app, print()).await;
    assert_eq!(status, 200, "{printed}");
    assert_eq!(printed["printed"], true);
    let (status, again) = at_till(&app, print()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["printed_at"], printed["printed_at"]);
    assert!(unprinted(&app).await.is_empty());
    let (status, page) = at_till(
        &app,
        Call::get(format!(
            "/v1/terminals/{terminal}/partner-orders?printed=true"
        )),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    // The partner sees it printed.
    let (status, seen) = p.order(&app, "YL-1001").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["printed"], true);
    // It is a payment of the till like any other.
    let (status, payment) = at_till(
        &app,
        Call::get(format!("/v1/terminals/{terminal}/payments/PA-{payment_no}")),
    )
    .await;
    assert_eq!(status, 200, "{payment}");
    assert_eq!(payment["method"], "partner_app");
    assert_eq!(payment["status"], "succeeded");

    // The ledger: the partner owes 297.00 (300.00 less its 1 % commission), sales 350.00
    // with the cash sale; one balanced entry for the order.
    let accounts = payments::partners::partner_account_ids(station, partner_id);
    let retail = payments::stations::station_account_ids(station);
    assert_eq!(
        balance(&app, accounts.receivable).await,
        Decimal::new(29700, 2)
    );
    assert_eq!(
        balance(&app, accounts.commission).await,
        Decimal::new(300, 2)
    );
    assert_eq!(balance(&app, retail.sales).await, Decimal::new(35000, 2));
    let entries = app
        .state
        .ledger
        .entries_by_reference(&format!("payment:{payment_no}"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let audit = app.state.ledger.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    let (status, contracts) = body(
        app.call(
            Some(Who::StationOwner),
            &Call::get(format!("/v1/stations/{station}/partner-contracts")),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{contracts}");
    assert_eq!(dec(&contracts[0]["owed"]), Decimal::new(29700, 2));

    // The shift close counts it by method; the drawer holds the float and the cash sale only.
    let shift = close_shift(&app, "550.00").await;
    let summary = &shift["summary"];
    assert_eq!(summary["sales"]["count"], 2, "{summary}");
    assert_eq!(dec(&summary["sales"]["amount"]), Decimal::new(35000, 2));
    assert_eq!(summary["by_method"]["partner_app"]["count"], 1);
    assert_eq!(
        dec(&summary["by_method"]["partner_app"]["amount"]),
        Decimal::new(30000, 2)
    );
    assert_eq!(dec(&summary["expected_cash"]), Decimal::new(55000, 2));
    assert_eq!(dec(&summary["variance"]), Decimal::ZERO);
    assert_eq!(
        dec(&summary["by_fuel_grade"]["0"]["litres"]),
        Decimal::new(42553, 3)
    );

    // So does the station's day, with the commission among the fees.
    let today = Utc::now()
        .with_timezone(&payments::sales::BUSINESS_TZ)
        .date_naive();
    let (status, day) = at_till(
        &app,
        Call::get(format!("/v1/terminals/{terminal}/day-summary?day={today}")),
    )
    .await;
    assert_eq!(status, 200, "{day}");
    assert_eq!(
        dec(&day["summary"]["by_method"]["partner_app"]["amount"]),
        Decimal::new(30000, 2)
    );
    assert_eq!(dec(&day["summary"]["fees"]), Decimal::new(300, 2));
    assert!(day["receipt"].as_str().unwrap().contains("partner_app"));
    let close = payments::daily::close_day(&app.state.db, station, &today.to_string(), Utc::now())
        .await
        .unwrap();
    assert_eq!(
        close.station.summary.by_method[&payments::model::Method::PartnerApp].amount,
        Decimal::new(30000, 2)
    );
}

async fn a_partner_without_a_contract_cannot_push_to_the_station(backend: Backend) {
    let app = spawn_app(backend).await;
    let (terminal, _) = till(&app, "station-a1");
    let (other_terminal, _) = till(&app, "station-b1");
    let p = Partner::p(&app);
    open_shift(&app, "station-a1", "0.00").await;

    // No contract: the station's terminal is not the partner's to see.
    let (status, problem) = p.push(&app, order("NC-1", terminal, "100.00")).await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["type"], "urn:forecourt:problem:not-found");
    // Terms that make no sense, or a partner that is not one, are refused precisely.
    let station = app.world.orgs["station-a1"];
    for (terms, field) in [
        (json!({"commission_rate": "1.5"}), "commission_rate"),
        (json!({"commission_rate": "0.0000001"}), "commission_rate"),
        (json!({"settlement_days": 91}), "settlement_days"),
        (json!({"single_limit": "0.001"}), "single_limit"),
        (
            json!({"partner_id": app.world.orgs["fleet-f"]}),
            "partner_id",
        ),
    ] {
        let mut request = json!({
            "partner_id": app.world.orgs["partner-p"],
            "commission_rate": "0.01",
            "settlement_days": 1,
            "single_limit": "2000.00",
        });
        for (k, v) in terms.as_object().unwrap() {
            request[k] = v.clone();
        }
        let response = app
            .call(
                Some(Who::StationOwner),
                &Call::post(
                    format!("/v1/stations/{station}/partner-contracts"),
                    Some(request),
                ),
            )
            .await;
        let problem = expect_problem(response, 422, "validation").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let contract = sign(&app, "station-a1", "partner-p", "0", "2000.00").await;
    let contract_id = contract["id"].as_str().unwrap().to_owned();
    // Signed onto station A1, not onto B1.
    let (status, problem) = p.push(&app, order("NC-2", other_terminal, "100.00")).await;
    assert_eq!(status, 404, "{problem}");
    // Orders come from the partner's system, signed: neither a logged-in partner user nor
    // station staff push them.
    for who in [Who::PartnerUser, Who::Cashier, Who::StationOwner] {
        let response = app
            .call(
                Some(who),
                &Call::post(
                    "/v1/partner/orders",
                    Some(order("NC-3", terminal, "100.00")),
                ),
            )
            .await;
        expect_problem(response, 403, "forbidden").await;
    }
    let (status, taken) = p.push(&app, order("NC-3", terminal, "100.00")).await;
    assert_eq!(status, 201, "{taken}");

    // Disabled: refused with the station's reason; the partner no longer lists the station.
    let disable = || {
        Call::post(
            format!("/v1/stations/{station}/partner-contracts/{contract_id}/disable"),
            Some(json!({"reason": "settlement two weeks overdue"})),
        )
    };
    let (status, disabled) = body(app.call(Some(Who::StationOwner), &disable()).await).await;
    assert_eq!(status, 200, "{disabled}");
    assert_eq!(disabled["status"], "disabled");
    let (status, problem) = p.push(&app, order("NC-4", terminal, "100.00")).await;
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("settlement two weeks overdue"),
        "{problem}"
    );
    let (_, stations) = p.call(&app, &Call::get("/v1/partner/stations")).await;
    assert_eq!(stations, json!([]));
    // The order taken before stands, and its retry is answered as it stands.
    let (status, retried) = p.push(&app, order("NC-3", terminal, "100.00")).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["payment_no"], taken["payment_no"]);
    // Disabling again changes nothing; the first reason stays.
    let (status, again) = body(
        app.call(
            Some(Who::StationOwner),
            &Call::post(
                format!("/v1/stations/{station}/partner-contracts/{contract_id}/disable"),
                Some(json!({"reason": "another reason"})),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status_reason"], "settlement two weeks overdue");
    // Amending the terms of the disabled contract leaves it disabled, for the same reason.
    let (status, amended) = body(
        app.call(
            Some(Who::StationOwner),
            &Call::post(
                format!("/v1/stations/{station}/partner-contracts"),
                Some(json!({
                    "partner_id": app.world.orgs["partner-p"],
                    "commission_rate": "0.002",
                    "settlement_days": 3,
                    "single_limit": "150.00",
                })),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{amended}");
    assert_eq!(amended["id"], contract_id.as_str());
    assert_eq!(amended["status"], "disabled");
    assert_eq!(amended["status_reason"], "settlement two weeks overdue");
    assert_eq!(dec(&amended["commission_rate"]), Decimal::new(2, 3));

    // Enabled again: orders are taken.
    let (status, enabled) = body(
        app.call(
            Some(Who::StationOwner),
            &Call::post(
                format!("/v1/stations/{station}/partner-contracts/{contract_id}/enable"),
                None,
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{enabled}");
    assert_eq!(enabled["status"], "active");
    let (status, pushed) = p.push(&app, order("NC-4", terminal, "100.00")).await;
    assert_eq!(status, 201, "{pushed}");
    // Under the amended terms: 0.2 % commission, nothing above 150.00.
    assert_eq!(dec(&pushed["commission"]), Decimal::new(20, 2));
    let (status, problem) = p.push(&app, order("NC-5", terminal, "150.01")).await;
    assert_eq!(status, 422, "{problem}");

    // Station A1's staff do not see station B1's contracts.
    let (status, _) = body(
        app.call(
            Some(Who::StationManager),
            &Call::get(format!(
                "/v1/stations/{}/partner-contracts",
                app.world.orgs["station-b1"]
            )),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
}

async fn the_same_partner_order_pushed_twice_is_one_sale(backend: Backend) {
    let app = spawn_app(backend).await;
    let (terminal, _) = till(&app, "station-a1");
    let station = app.world.orgs["station-a1"];
    sign(&app, "station-a1", "partner-p", "0.005", "2000.00").await;
    sign(&app, "station-a1", "partner-q", "0", "2000.00").await;
    open_shift(&app, "station-a1", "0.00").await;
    let p = Partner::p(&app);
    let q = Partner::q(&app).await;

    let (status, first) = p.push(&app, order("YL-7", terminal, "280.00")).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = p.push(&app, order("YL-7", terminal, "280.00")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["payment_no"], first["payment_no"]);
    // Other content under the same number is refused as a conflict.
    let (status, problem) = p.push(&app, order("YL-7", terminal, "281.00")).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "urn:forecourt:problem:conflict");
    // The same number from another partner is another order: numbers are each partner's.
    let (status, theirs) = q.push(&app, order("YL-7", terminal, "280.00")).await;
    assert_eq!(status, 201, "{theirs}");
    assert_ne!(theirs["payment_no"], first["payment_no"]);
    // A partner reads only its own orders.
    let (status, _) = p.push(&app, order("YL-8", terminal, "10.00")).await;
    assert_eq!(status, 201);
    let (status, problem) = q.order(&app, "YL-8").await;
    assert_eq!(status, 404, "{problem}");
    let (status, mine) = q.order(&app, "YL-7").await;
    assert_eq!(status, 200, "{mine}");
    assert_eq!(mine["payment_no"], theirs["payment_no"]);

    // Ten pushes of one order at once: one order, one sale, one entry.
    let pushes = (0..10).map(|_| p.push(&app, order("YL-9", terminal, "99.90")));
    let answers = futures_util::future::join_all(pushes).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(
        answers.iter().all(|(s, _)| *s == 201 || *s == 200),
        "{answers:?}"
    );
    let numbers: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|(_, o)| o["payment_no"].as_str().unwrap())
        .collect();
    assert_eq!(numbers.len(), 1, "{answers:?}");
    let payment_no = numbers.into_iter().next().unwrap();
    let entries = app
        .state
        .ledger
        .entries_by_reference(&format!("payment:{payment_no}"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let orders = entities::partner_orders::Entity::find()
        .filter(entities::partner_orders::Column::StationId.eq(station))
        .count(&app.state.db)
        .await
        .unwrap();
    assert_eq!(orders, 4, "YL-7 twice (P and Q), YL-8, YL-9");
    let (status, shift) = at_till(
        &app,
        Call::get(format!("/v1/terminals/{terminal}/shifts/current")),
    )
    .await;
    assert_eq!(status, 200, "{shift}");
    assert_eq!(shift["summary"]["by_method"]["partner_app"]["count"], 4);
    assert_eq!(
        dec(&shift["summary"]["by_method"]["partner_app"]["amount"]),
        Decimal::new(66990, 2)
    );
}

async fn a_partner_order_to_a_till_without_an_open_shift_is_refused_and_writes_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let (terminal, _) = till(&app, "station-a1");
    let (other_terminal, other_key) = till(&app, "station-b1");
    sign(&app, "station-a1", "partner-p", "0", "2000.00").await;
    let p = Partner::p(&app);

    let (status, problem) = p.push(&app, order("NS-1", terminal, "100.00")).await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("no open shift"),
        "{problem}"
    );
    let written = entities::partner_orders::Entity::find()
        .count(&app.state.db)
        .await
        .unwrap()
        + entities::pos_payments::Entity::find()
            .filter(entities::pos_payments::Column::TerminalId.eq(terminal))
            .count(&app.state.db)
            .await
            .unwrap();
    assert_eq!(written, 0, "a refused order leaves nothing behind");
    let (status, problem) = p.order(&app, "NS-1").await;
    assert_eq!(status, 404, "{problem}");

    open_shift(&app, "station-a1", "0.00").await;
    // The number was never taken: the same order goes through now.
    let (status, pushed) = p.push(&app, order("NS-1", terminal, "100.00")).await;
    assert_eq!(status, 201, "{pushed}");

    // Above the contract's single-order limit, malformed or inconsistent: precise problems.
    let (status, problem) = p.push(&app, order("NS-2", terminal, "2000.01")).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "amount", "{problem}");
    let (status, problem) = p.push(&app, order("NS-3", terminal, "10.001")).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["type"], "urn:forecourt:problem:validation");
    let mut wrong_sum = order("NS-4", terminal, "100.00");
    wrong_sum["lines"][0]["amount"] = json!("90.00");
    let (status, problem) = p.push(&app, wrong_sum).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "lines", "{problem}");
    let mut unknown = order("NS-5", terminal, "100.00");
    unknown["tip"] = json!("5.00");
    let (status, problem) = p.push(&app, unknown).await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = p
        .push(&app, order("not a number!", terminal, "100.00"))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "order_no", "{problem}");
    let mut no_key = Call::post("/v1/partner/orders", Some(order("NS-6", terminal, "1.00")));
    no_key.idempotency_key = None;
    let (status, problem) = p.call(&app, &no_key).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(
        problem["type"],
        "urn:forecourt:problem:idempotency-key-required"
    );
    let (status, problem) = p.push(&app, order("NS-7", Uuid::now_v7(), "1.00")).await;
    assert_eq!(status, 404, "{problem}");

    // The till cannot make up a partner order itself.
    let (status, problem) = at_till(
        &app,
        Call::post(
            format!("/v1/terminals/{terminal}/payments"),
            Some(json!({
                "order_no": "T-1", "method": "partner_app", "amount": "10.00",
                "lines": [{"kind": "item", "name": "water", "quantity": 1, "amount": "10.00"}],
            })),
        ),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "method", "{problem}");
    // Nor print an order it does not have: unknown, or another terminal's.
    let payment_no = pushed["payment_no"].as_str().unwrap();
    let (status, problem) = at_till(
        &app,
        Call::post(
            format!("/v1/terminals/{terminal}/partner-orders/000000000000000000000000/printed"),
            None,
        ),
    )
    .await;
    assert_eq!(status, 404, "{problem}");
    let second = payments::stations::register_terminal(
        &app.state.db,
        app.world.orgs["station-a1"],
        "till-2",
        "Shop till",
        Utc::now(),
    )
    .await
    .unwrap();
    let response = app
        .call(
            Some(Who::Cashier),
            &Call::post(
                format!(
                    "/v1/terminals/{}/partner-orders/{payment_no}/printed",
                    second.terminal.id
                ),
                None,
            )
            .at_till(&second.key),
        )
        .await;
    expect_problem(response, 404, "not-found").await;
    // Another station's till is not the cashier's to work at all.
    let response = app
        .call(
            Some(Who::Cashier),
            &Call::get(format!("/v1/terminals/{other_terminal}/partner-orders"))
                .at_till(&other_key),
        )
        .await;
    expect_problem(response, 404, "not-found").await;
    // And a partner order is not cancelled at the till.
    let (status, problem) = at_till(
        &app,
        Call::post(
            format!("/v1/terminals/{terminal}/payments/PA-{payment_no}/cancel"),
            None,
        ),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
}

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A webhook receiver that takes every post.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((headers, body));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

async fn subscribe(app: &TestApp, token: &str, url: &str) -> (String, String) {
    let response = app
        .client
        .post(app.url("/v1/webhooks"))
        .bearer_auth(token)
        .header("idempotency-key", Uuid::new_v4().to_string())
        .json(&json!({"url": url, "topics": ["partner_orders.*"]}))
        .send()
        .await
        .unwrap();
    let (status, created) = body(response).await;
    assert_eq!(status, 201, "{created}");
    (
        created["id"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

async fn a_partner_order_refunded_at_the_till_is_deducted_from_what_the_partner_owes_and_the_partner_is_told(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    let station = app.world.orgs["station-a1"];
    let (terminal, _) = till(&app, "station-a1");
    // Partner P's people subscribe to events about their orders; so does partner Q.
    let (url, received) = receiver().await;
    let (_, secret) = subscribe(&app, &app.world.tokens[&Who::PartnerUser], &url).await;
    let q_user = crate::common::create_user(
        &app.state,
        app.world.orgs["partner-q"],
        api::policy::Role::Partner,
    )
    .await;
    let q_session = api::auth::open_session(&app.state.db, q_user, Duration::from_secs(600))
        .await
        .unwrap();
    let (q_url, q_received) = receiver().await;
    subscribe(&app, &q_session.token, &q_url).await;
    // A partner's key does not manage webhooks.
    let response = app
        .call(
            Some(Who::PartnerKey),
            &Call::post(
                "/v1/webhooks",
                Some(json!({"url": url, "topics": ["partner_orders.*"]})),
            ),
        )
        .await;
    expect_problem(response, 403, "forbidden").await;

    sign(&app, "station-a1", "partner-p", "0.01", "2000.00").await;
    open_shift(&app, "station-a1", "500.00").await;
    let p = Partner::p(&app);
    let (status, pushed) = p.push(&app, order("YL-42", terminal, "300.00")).await;
    assert_eq!(status, 201, "{pushed}");
    let payment_no = pushed["payment_no"].as_str().unwrap().to_owned();

    // The driver took less fuel than paid for: the cashier refunds 50.00 at the till.
    let (status, refund) = at_till(
        &app,
        Call::post(
            format!("/v1/terminals/{terminal}/refunds"),
            Some(json!({
                "payment_no": payment_no,
                "refund_no": "RF-1",
                "amount": "50.00",
                "reason": "tank full after 250.00",
            })),
        ),
    )
    .await;
    assert_eq!(status, 201, "{refund}");
    assert_eq!(refund["status"], "succeeded", "{refund}");
    assert!(
        refund["status_reason"]
            .as_str()
            .unwrap()
            .contains("partner"),
        "{refund}"
    );
    // Beyond what remains: refused, nothing moves.
    let (status, problem) = at_till(
        &app,
        Call::post(
            format!("/v1/terminals/{terminal}/refunds"),
            Some(json!({
                "payment_no": payment_no,
                "refund_no": "RF-2",
                "amount": "250.01",
                "reason": "too much",
            })),
        ),
    )
    .await;
    assert_eq!(status, 422, "{problem}");

    // The partner owes 50.00 less; the drawer paid nothing out.
    let accounts = payments::partners::partner_account_ids(station, app.world.orgs["partner-p"]);
    let retail = payments::stations::station_account_ids(station);
    assert_eq!(
        balance(&app, accounts.receivable).await,
        Decimal::new(24700, 2)
    );
    assert_eq!(balance(&app, retail.sales).await, Decimal::new(25000, 2));
    assert_eq!(balance(&app, retail.cash).await, Decimal::ZERO);
    let audit = app.state.ledger.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    let (status, seen) = p.order(&app, "YL-42").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(dec(&seen["refunded"]), Decimal::new(5000, 2));
    assert_eq!(seen["refunds"][0]["status"], "succeeded");

    // The partner is told, signed with its subscription's secret.
    for _ in 0..400 {
        if !received.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one event for one refund");
    let (headers, bytes) = &got[0];
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let timestamp: i64 = header("forecourt-webhook-timestamp").parse().unwrap();
    assert_eq!(
        header("forecourt-webhook-signature"),
        api::webhooks::signature(&secret, &header("forecourt-webhook-id"), timestamp, bytes)
    );
    let event: Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(event["topic"], "partner_orders.refunded");
    assert_eq!(event["data"]["order_no"], "YL-42");
    assert_eq!(event["data"]["payment_no"], payment_no.as_str());
    assert_eq!(dec(&event["data"]["amount"]), Decimal::new(5000, 2));
    assert_eq!(dec(&event["data"]["refunded"]), Decimal::new(5000, 2));
    // Partner Q hears nothing of partner P's orders.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(q_received.lock().unwrap().is_empty());

    // The shift counts the refund against the partner's orders, not the drawer.
    let shift = close_shift(&app, "500.00").await;
    let summary = &shift["summary"];
    assert_eq!(
        dec(&summary["refunds_by_method"]["partner_app"]["amount"]),
        Decimal::new(5000, 2),
        "{summary}"
    );
    assert_eq!(dec(&summary["cash_refunds"]), Decimal::ZERO);
    assert_eq!(dec(&summary["expected_cash"]), Decimal::new(50000, 2));
    assert_eq!(dec(&summary["net"]), Decimal::new(25000, 2));
}

async fn a_push_interrupted_before_its_booking_is_booked_by_the_tills_list_before_its_ticket_prints(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let (terminal, _) = till(&app, "station-a1");
    let station = app.world.orgs["station-a1"];
    let partner_id = app.world.orgs["partner-p"];
    sign(&app, "station-a1", "partner-p", "0.01", "2000.00").await;
    open_shift(&app, "station-a1", "0.00").await;
    // The order's rows commit, and the process stops before the ledger entry.
    let contract = payments::partners::contract_between(&app.state.db, partner_id, station)
        .await
        .unwrap()
        .unwrap();
    let terms = payments::partners::ContractTerms::of(&contract).unwrap();
    let amount = ledger::Money::from_minor(20_000, ledger::Currency::CNY);
    let new = payments::partners::NewPartnerOrder {
        partner_order_no: "CR-1".into(),
        terminal_id: terminal,
        amount,
        sale: payments::sales::Sale {
            lines: vec![payments::sales::SaleLine::Item {
                name: "engine oil".into(),
                quantity: 2,
                amount: amount.amount(),
            }],
        },
        driver_ref: "D-7".into(),
        vehicle_plate: None,
    };
    let terminal_row = payments::stations::terminal(&app.state.db, terminal)
        .await
        .unwrap()
        .unwrap();
    let txn = entities::db::begin_write(&app.state.db).await.unwrap();
    let shift = payments::shifts::open_shift_in(&txn, terminal)
        .await
        .unwrap()
        .unwrap();
    let pushed = payments::partners::push_order(
        &txn,
        &contract,
        &terms,
        &terminal_row,
        &shift,
        &new,
        "Org partner-p",
        Utc::now(),
    )
    .await
    .unwrap();
    let payments::partners::Pushed::New(written) = pushed else {
        panic!("the order number was free");
    };
    txn.commit().await.unwrap();
    let payment = entities::pos_payments::Entity::find_by_id(written.payment_id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payment.status, "pending");
    let accounts = payments::partners::partner_account_ids(station, partner_id);
    assert_eq!(balance(&app, accounts.receivable).await, Decimal::ZERO);

    // Its ticket is not handed out before it is booked.
    let print = Call::post(
        format!(
            "/v1/terminals/{terminal}/partner-orders/{}/printed",
            payment.payment_no
        ),
        None,
    );
    let (status, problem) = at_till(&app, print.clone()).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "urn:forecourt:problem:conflict");
    // Listing the till's orders books it, once.
    let waiting = unprinted(&app).await;
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0]["status"], "succeeded", "{:?}", waiting[0]);
    assert_eq!(
        balance(&app, accounts.receivable).await,
        Decimal::new(19800, 2)
    );
    let (status, seen) = Partner::p(&app).order(&app, "CR-1").await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["status"], "succeeded");
    let entries = app
        .state
        .ledger
        .entries_by_reference(&format!("payment:{}", payment.payment_no))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    let mut print = print;
    print.idempotency_key = Some(Uuid::new_v4().to_string());
    let (status, printed) = at_till(&app, print).await;
    assert_eq!(status, 200, "{printed}");
    assert_eq!(printed["printed"], true);
    // The partner's retry of the push is the same order.
    let mut retry = order("CR-1", terminal, "200.00");
    retry["lines"] =
        json!([{"kind": "item", "name": "engine oil", "quantity": 2, "amount": "200.00"}]);
    retry["driver_ref"] = json!("D-7");
    retry.as_object_mut().unwrap().remove("vehicle_plate");
    let (status, again) = Partner::p(&app).push(&app, retry).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["payment_no"], payment.payment_no.as_str());
}

async fn as_owner(app: &TestApp, call: &Call) -> (u16, Value) {
    body(app.call(Some(Who::StationOwner), call).await).await
}

async fn a_partners_transfer_is_booked_to_the_stations_bank_once_per_reference_off_what_it_owes_and_a_mistake_is_reversed(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let station = app.world.orgs["station-a1"];
    let (terminal, _) = till(&app, "station-a1");
    let contract = sign(&app, "station-a1", "partner-p", "0.005", "3000.00").await;
    let contract_id = contract["id"].as_str().unwrap().to_owned();
    let receivable: Uuid = contract["receivable_account_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    open_shift(&app, "station-a1", "0.00").await;
    let p = Partner::p(&app);
    for (no, amount) in [("YL-2001", "1000.00"), ("YL-2002", "500.00")] {
        let (status, pushed) = p.push(&app, order(no, terminal, amount)).await;
        assert_eq!(status, 201, "{pushed}");
    }
    // 1,500.00 less the 0.5 % commission.
    assert_eq!(balance(&app, receivable).await, Decimal::new(149_250, 2));

    let path = format!("/v1/stations/{station}/partner-contracts/{contract_id}/settlements");
    let record = |reference: &str, amount: &str, on: &str| {
        Call::post(
            path.clone(),
            Some(json!({"reference": reference, "amount": amount, "received_on": on})),
        )
    };

    // The first transfer: in the station's bank account, off what the partner owes.
    let first = record("CMB-0001", "1000.00", "2026-11-20");
    let (status, recorded) = as_owner(&app, &first).await;
    assert_eq!(status, 201, "{recorded}");
    let settlement = &recorded["settlement"];
    assert_eq!(dec(&settlement["amount"]), Decimal::new(100_000, 2));
    assert_eq!(settlement["reference"], "CMB-0001");
    assert_eq!(settlement["received_on"], "2026-11-20");
    assert_eq!(settlement["recorded_by"], "station-owner");
    assert_eq!(dec(&recorded["contract"]["owed"]), Decimal::new(49_250, 2));
    let entry_id: Uuid = settlement["entry_id"].as_str().unwrap().parse().unwrap();
    let entry = app.state.ledger.entry(entry_id).await.unwrap().unwrap();
    assert_eq!(entry.postings.len(), 2, "{entry:?}");
    let debit = entry
        .postings
        .iter()
        .find(|p| p.side == ledger::Side::Debit)
        .unwrap();
    let credit = entry
        .postings
        .iter()
        .find(|p| p.side == ledger::Side::Credit)
        .unwrap();
    assert_eq!(credit.account_id, receivable);
    let bank = debit.account_id;
    assert_eq!(
        app.state.ledger.account(bank).await.unwrap().name,
        "Station bank account"
    );
    assert_eq!(balance(&app, bank).await, Decimal::new(100_000, 2));

    // The same request again: the same answer, booked once.
    let (status, again) = as_owner(&app, &first).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["settlement"]["id"], settlement["id"]);
    // The same transfer recorded again as a new request: found, not booked twice.
    let (status, found) = as_owner(&app, &record("CMB-0001", "1000.00", "2026-11-20")).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["settlement"]["id"], settlement["id"]);
    // Another amount or value date under the same reference: refused, nothing booked.
    for other in [
        record("CMB-0001", "900.00", "2026-11-20"),
        record("CMB-0001", "1000.00", "2026-11-21"),
    ] {
        let (status, problem) = as_owner(&app, &other).await;
        assert_eq!(status, 409, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("CMB-0001"),
            "{problem}"
        );
    }
    assert_eq!(balance(&app, bank).await, Decimal::new(100_000, 2));
    assert_eq!(balance(&app, receivable).await, Decimal::new(49_250, 2));

    // More than is owed: the money did arrive, so it is booked in full, and the partner is
    // in credit.
    let (status, second) = as_owner(&app, &record("CMB-0002", "600.00", "2026-11-21")).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(dec(&second["contract"]["owed"]), Decimal::new(-10_750, 2));
    assert_eq!(balance(&app, bank).await, Decimal::new(160_000, 2));

    // Bad input is refused by field and writes nothing.
    for (bad, field) in [
        (
            json!({"reference": "CMB-0003", "amount": "0.00", "received_on": "2026-11-21"}),
            "amount",
        ),
        (
            json!({"reference": "CMB-0003", "amount": "-5.00", "received_on": "2026-11-21"}),
            "amount",
        ),
        (
            json!({"reference": "CMB-0003", "amount": "10.001", "received_on": "2026-11-21"}),
            "amount",
        ),
        (
            json!({"reference": "", "amount": "10.00", "received_on": "2026-11-21"}),
            "reference",
        ),
        (
            json!({"reference": "CMB 0003", "amount": "10.00", "received_on": "2026-11-21"}),
            "reference",
        ),
        (
            json!({"reference": "CMB-0003", "amount": "10.00", "received_on": "2099-01-01"}),
            "received_on",
        ),
    ] {
        let (status, problem) = as_owner(&app, &Call::post(path.clone(), Some(bad))).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    // A cashier may not record a transfer; another station has no such contract.
    let (status, problem) = body(
        app.call(
            Some(Who::Cashier),
            &record("CMB-0004", "10.00", "2026-11-21"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    let elsewhere = app.world.orgs["station-b1"];
    let (status, problem) = body(
        app.call(
            Some(Who::RootAdmin),
            &Call::post(
                format!("/v1/stations/{elsewhere}/partner-contracts/{contract_id}/settlements"),
                Some(json!({"reference": "CMB-0005", "amount": "10.00", "received_on": "2026-11-21"})),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(balance(&app, bank).await, Decimal::new(160_000, 2));

    // The second was keyed wrong: 600.00 where the statement says 492.50. It is reversed
    // (the bank and what the partner owes as before it) and recorded again as it should be.
    let wrong = second["settlement"]["id"].as_str().unwrap().to_owned();
    let reverse = Call::post(
        format!("{path}/{wrong}/reverse"),
        Some(json!({"reason": "keyed 600.00; the statement says 492.50"})),
    );
    let (status, problem) = body(app.call(Some(Who::Cashier), &reverse).await).await;
    assert_eq!(status, 403, "{problem}");
    let (status, problem) = as_owner(
        &app,
        &Call::post(
            format!("{path}/{wrong}/reverse"),
            Some(json!({"reason": " "})),
        ),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = as_owner(
        &app,
        &Call::post(
            format!("{path}/{}/reverse", Uuid::now_v7()),
            Some(json!({"reason": "no such settlement"})),
        ),
    )
    .await;
    assert_eq!(status, 404, "{problem}");
    let (status, reversed) = as_owner(&app, &reverse).await;
    assert_eq!(status, 200, "{reversed}");
    let reversal = &reversed["settlement"]["reversal"];
    assert_eq!(reversal["reversed_by"], "station-owner", "{reversed}");
    assert_eq!(
        reversal["reason"], "keyed 600.00; the statement says 492.50",
        "{reversed}"
    );
    assert_eq!(dec(&reversed["contract"]["owed"]), Decimal::new(49_250, 2));
    assert_eq!(balance(&app, bank).await, Decimal::new(100_000, 2));
    // Reversing it again, as a new request, changes nothing.
    let (status, again) = as_owner(
        &app,
        &Call::post(
            format!("{path}/{wrong}/reverse"),
            Some(json!({"reason": "once more"})),
        ),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["settlement"]["reversal"]["entry_id"],
        reversal["entry_id"]
    );
    assert_eq!(
        again["settlement"]["reversal"]["reason"],
        reversal["reason"]
    );
    assert_eq!(balance(&app, bank).await, Decimal::new(100_000, 2));
    // The reference is free again: recorded as the statement has it, the partner owes nothing.
    let (status, corrected) = as_owner(&app, &record("CMB-0002", "492.50", "2026-11-21")).await;
    assert_eq!(status, 201, "{corrected}");
    assert_ne!(corrected["settlement"]["id"], second["settlement"]["id"]);
    assert_eq!(dec(&corrected["contract"]["owed"]), Decimal::ZERO);
    assert_eq!(balance(&app, bank).await, Decimal::new(149_250, 2));
    assert_eq!(balance(&app, receivable).await, Decimal::ZERO);

    // One transfer recorded from five screens at once is one settlement, booked once.
    let racing = record("CMB-0009", "100.00", "2026-11-22");
    let answers = futures_util::future::join_all((0..5).map(|_| {
        let call = Call::post(racing.path.clone(), racing.body.clone());
        let app = &app;
        async move { as_owner(app, &call).await }
    }))
    .await;
    let mut statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 200, 201], "{answers:?}");
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(_, a)| a["settlement"]["id"].to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert_eq!(balance(&app, bank).await, Decimal::new(159_250, 2));
    let racing_id = answers[0].1["settlement"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = as_owner(
        &app,
        &Call::post(
            format!("{path}/{racing_id}/reverse"),
            Some(json!({"reason": "test transfer"})),
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(balance(&app, bank).await, Decimal::new(149_250, 2));

    // The station's list: the four recordings, oldest first, a page at a time.
    let (status, page) = body(
        app.call(
            Some(Who::StationManager),
            &Call::get(format!("{path}?limit=1")),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["reference"], "CMB-0001", "{page}");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, rest) = body(
        app.call(
            Some(Who::StationManager),
            &Call::get(format!("{path}?limit=1&cursor={cursor}")),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{rest}");
    assert_eq!(rest["items"][0]["reference"], "CMB-0002", "{rest}");
    assert!(!rest["items"][0]["reversal"].is_null(), "{rest}");
    let cursor = rest["next_cursor"].as_str().unwrap();
    let (status, last) = body(
        app.call(
            Some(Who::StationManager),
            &Call::get(format!("{path}?limit=1&cursor={cursor}")),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{last}");
    assert_eq!(last["items"][0]["reference"], "CMB-0002", "{last}");
    assert!(last["items"][0]["reversal"].is_null(), "{last}");
    let cursor = last["next_cursor"].as_str().unwrap();
    let (status, end) = body(
        app.call(
            Some(Who::StationManager),
            &Call::get(format!("{path}?cursor={cursor}")),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{end}");
    assert_eq!(end["items"].as_array().unwrap().len(), 1, "{end}");
    assert_eq!(end["items"][0]["reference"], "CMB-0009", "{end}");
    assert!(end["next_cursor"].is_null(), "{end}");
    let audit = app.state.ledger.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
}

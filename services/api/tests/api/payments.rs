//! Retail payments through the API: tills with their keys, shifts, payments routed over the
//! six simulated channels (real HTTP, signatures checked by the simulators), refunds with the
//! station manager's approval across shifts, and the channels' notifications.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use testkit::Backend;
use uuid::Uuid;

use crate::common::{Call, TestApp, Who, expect_problem, spawn_app};

testkit::scenarios!(
    a_cashier_takes_a_wechat_payment_that_is_booked_once_and_a_retry_returns_it,
    channel_a_in_announced_maintenance_routes_to_channel_b_and_says_why,
    channel_a_times_out_after_charging_the_query_finds_it_and_b_is_never_called,
    a_declined_card_fails_over_to_the_second_acquirer,
    a_customer_still_confirming_is_settled_once_although_the_notification_comes_twice,
    a_cross_shift_refund_needs_the_station_managers_approval_and_then_goes_back_through_the_channel,
    partial_refunds_in_the_open_shift_stop_at_the_original_amount,
    shift_totals_are_exact_and_an_unresolved_payment_holds_the_close_until_a_manager_overrides,
    a_channel_failing_again_and_again_is_cut_off_and_a_declined_payer_is_sent_elsewhere,
    the_till_prints_the_days_summary_and_finance_resolves_a_reconciliation_exception_once,
    customers_scan_the_tills_codes_and_pay_and_a_code_nobody_scans_is_closed_when_the_till_gives_up,
);

async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn till(app: &TestApp, station: &str) -> (Uuid, String) {
    app.world.terminals[station].clone()
}

async fn open_shift(app: &TestApp, who: Who, float: &str) -> Value {
    let (id, key) = till(app, "station-a1");
    let (status, shift) = body(
        app.call(
            Some(who),
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
    shift
}

async fn close_shift(app: &TestApp, who: Who, declared: &str, over: Option<&str>) -> (u16, Value) {
    let (id, key) = till(app, "station-a1");
    let mut request = json!({ "declared_cash": declared });
    if let Some(reason) = over {
        request["override_reason"] = json!(reason);
    }
    body(
        app.call(
            Some(who),
            &Call::post(
                format!("/v1/terminals/{id}/shifts/current/close"),
                Some(request),
            )
            .at_till(&key),
        )
        .await,
    )
    .await
}

fn fuel(order: &str, method: &str, amount: &str) -> Value {
    let mut body = json!({
        "order_no": order,
        "method": method,
        "amount": amount,
        "lines": [{"kind": "fuel", "grade": "92", "litres": "39.740", "nozzle": 3, "amount": amount}],
    });
    if method != "cash" {
        body["payer_code"] = json!("134567890123456789");
    }
    body
}

async fn pay(app: &TestApp, request: Value) -> (u16, Value) {
    let (id, key) = till(app, "station-a1");
    body(
        app.call(
            Some(Who::Cashier),
            &Call::post(format!("/v1/terminals/{id}/payments"), Some(request)).at_till(&key),
        )
        .await,
    )
    .await
}

async fn get_payment(app: &TestApp, order: &str) -> Value {
    let (id, key) = till(app, "station-a1");
    let (status, payment) = body(
        app.call(
            Some(Who::Cashier),
            &Call::get(format!("/v1/terminals/{id}/payments/{order}")).at_till(&key),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{payment}");
    payment
}

/// Polls the payment until it is final (at most ten seconds).
async fn settled(app: &TestApp, order: &str) -> Value {
    for _ in 0..100 {
        let payment = get_payment(app, order).await;
        if payment["status"] != "pending" {
            return payment;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("payment {order} did not finish");
}

async fn refund(app: &TestApp, who: Who, payment_no: &str, no: &str, amount: &str) -> (u16, Value) {
    let (id, key) = till(app, "station-a1");
    body(
        app.call(
            Some(who),
            &Call::post(
                format!("/v1/terminals/{id}/refunds"),
                Some(json!({
                    "payment_no": payment_no,
                    "refund_no": no,
                    "amount": amount,
                    "reason": "customer returned the goods",
                })),
            )
            .at_till(&key),
        )
        .await,
    )
    .await
}

fn dec(value: &Value) -> Decimal {
    value
        .as_str()
        .expect("a decimal string")
        .parse()
        .expect("a decimal")
}

/// The posted balance of one of the station's retail accounts, on its normal side.
async fn balance(app: &TestApp, account: Uuid) -> Decimal {
    app.state
        .ledger
        .balance(account)
        .await
        .unwrap()
        .posted
        .amount()
}

async fn a_cashier_takes_a_wechat_payment_that_is_booked_once_and_a_retry_returns_it(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    open_shift(&app, Who::Cashier, "500.00").await;
    let (status, payment) = pay(&app, fuel("A-0001", "wechat_pay_code", "300.00")).await;
    assert_eq!(status, 201, "{payment}");
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["channel"], "wxpay-direct");
    assert_eq!(dec(&payment["fee"]), Decimal::new(114, 2));
    assert_eq!(payment["sale_kind"], "fuel");
    assert_eq!(dec(&payment["refundable"]), Decimal::new(30000, 2));
    // The same order again is the same payment, charged once.
    let (status, again) = pay(&app, fuel("A-0001", "wechat_pay_code", "300.00")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["payment_no"], payment["payment_no"]);
    assert_eq!(app.retail.sim("wxpay-direct").taken().len(), 1);
    // Another amount under the same order number is refused.
    let (status, problem) = pay(&app, fuel("A-0001", "wechat_pay_code", "301.00")).await;
    assert_eq!(status, 409, "{problem}");
    // Booked once: sales 300.00, clearing 298.86 (the fee deducted), fees 1.14.
    let station = payments::stations::station_account_ids(app.world.orgs["station-a1"]);
    assert_eq!(balance(&app, station.sales).await, Decimal::new(30000, 2));
    assert_eq!(balance(&app, station.fees).await, Decimal::new(114, 2));
    let no = payment["payment_no"].as_str().unwrap();
    let entries = app
        .state
        .ledger
        .entries_by_reference(&format!("payment:{no}"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    // Without the terminal's key, or with another terminal's, the till is refused.
    let (id, _) = till(&app, "station-a1");
    let (_, other_key) = till(&app, "station-b1");
    let response = app
        .call(
            Some(Who::Cashier),
            &Call::post(
                format!("/v1/terminals/{id}/payments"),
                Some(fuel("A-0002", "cash", "10.00")),
            ),
        )
        .await;
    expect_problem(response, 401, "unauthenticated").await;
    let response = app
        .call(
            Some(Who::Cashier),
            &Call::post(
                format!("/v1/terminals/{id}/payments"),
                Some(fuel("A-0002", "cash", "10.00")),
            )
            .at_till(&other_key),
        )
        .await;
    expect_problem(response, 401, "invalid-credentials").await;
    // A till that sends one order twice at once, under one Idempotency-Key (a retry after
    // its own timeout), gets one payment, charged once: the order number decides, and the
    // second request answers the payment instead of a 409 for a request in flight.
    let (id, key) = till(&app, "station-a1");
    let twice = Call::post(
        format!("/v1/terminals/{id}/payments"),
        Some(fuel("A-0003", "wechat_pay_code", "120.00")),
    )
    .at_till(&key);
    let (first, second) = tokio::join!(
        app.call(Some(Who::Cashier), &twice),
        app.call(Some(Who::Cashier), &twice)
    );
    let ((s1, p1), (s2, p2)) = (body(first).await, body(second).await);
    let mut statuses = [s1, s2];
    statuses.sort();
    assert_eq!(statuses, [200, 201], "{p1} {p2}");
    assert_eq!(p1["payment_no"], p2["payment_no"]);
    let charged: Vec<_> = app
        .retail
        .sim("wxpay-direct")
        .taken()
        .into_iter()
        .filter(|c| c.amount_fen == 12000)
        .collect();
    assert_eq!(charged.len(), 1, "{charged:?}");
}

async fn channel_a_in_announced_maintenance_routes_to_channel_b_and_says_why(backend: Backend) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    let station = app.world.orgs["station-a1"];
    let now = chrono::Utc::now();
    let response = app
        .call(
            Some(Who::StationOwner),
            &Call::post(
                format!("/v1/stations/{station}/channels"),
                Some(json!({
                    "channel_id": "wxpay-direct",
                    "methods": ["wechat_pay_code", "wechat_pay_qr"],
                    "fee_rate": "0.0038",
                    "fee_mode": "deducted_at_payment",
                    "single_limit": "50000.00",
                    "daily_limit": "5000000.00",
                    "priority": 1,
                    "maintenance": [{"kind": "one_off",
                                     "from": (now - chrono::Duration::minutes(5)).to_rfc3339(),
                                     "until": (now + chrono::Duration::hours(1)).to_rfc3339()}],
                    "enabled": true
                })),
            ),
        )
        .await;
    let (status, terms) = body(response).await;
    assert_eq!(status, 200, "{terms}");
    open_shift(&app, Who::Cashier, "0.00").await;
    let (status, payment) = pay(&app, fuel("M-1", "wechat_pay_code", "88.00")).await;
    assert_eq!(status, 201);
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["channel"], "wxpay-via-bank-a");
    let excluded = &payment["route"]["excluded"];
    assert!(
        excluded
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e[0] == "wxpay-direct" && e[1]["reason"] == "in_maintenance"),
        "{excluded}"
    );
    assert_eq!(app.retail.sim("wxpay-direct").charge_calls(), 0);
}

async fn channel_a_times_out_after_charging_the_query_finds_it_and_b_is_never_called(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    app.retail.sim("wxpay-direct").set(|b| {
        b.timeout_after_charge_next = 1;
        b.hang_ms = 1_500;
    });
    open_shift(&app, Who::Cashier, "0.00").await;
    let (status, payment) = pay(&app, fuel("T-1", "wechat_pay_code", "250.00")).await;
    assert_eq!(status, 201, "{payment}");
    let payment = settled(&app, "T-1").await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["channel"], "wxpay-direct");
    assert_eq!(app.retail.sim("wxpay-via-bank-a").charge_calls(), 0);
    assert_eq!(app.retail.sim("wxpay-direct").taken().len(), 1);
    let station = payments::stations::station_account_ids(app.world.orgs["station-a1"]);
    assert_eq!(balance(&app, station.sales).await, Decimal::new(25000, 2));
}

async fn a_declined_card_fails_over_to_the_second_acquirer(backend: Backend) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    app.retail
        .sim("card-acquirer-a")
        .set(|b| b.decline_next = 1);
    open_shift(&app, Who::Cashier, "0.00").await;
    let (_, payment) = pay(&app, fuel("C-1", "bank_card", "420.00")).await;
    let payment = if payment["status"] == "pending" {
        settled(&app, "C-1").await
    } else {
        payment
    };
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["channel"], "card-acquirer-b");
    assert!(app.retail.sim("card-acquirer-a").taken().is_empty());
    assert_eq!(app.retail.sim("card-acquirer-b").taken().len(), 1);
}

async fn a_customer_still_confirming_is_settled_once_although_the_notification_comes_twice(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    app.retail.sim("alipay-direct").set(|b| {
        b.user_paying_next = 1;
        b.notify_copies = 2;
    });
    open_shift(&app, Who::Cashier, "0.00").await;
    let (status, _) = pay(&app, fuel("N-1", "alipay_code", "199.00")).await;
    assert_eq!(status, 201);
    let payment = settled(&app, "N-1").await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["channel"], "alipay-direct");
    // Give the duplicated notifications time to arrive; the sale is still booked once.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let no = payment["payment_no"].as_str().unwrap();
    let entries = app
        .state
        .ledger
        .entries_by_reference(&format!("payment:{no}"))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(app.retail.sim("alipay-via-acquirer-b").charge_calls(), 0);
    // A forged notification is refused.
    let response = app
        .client
        .post(app.url("/v1/payments/notifications/alipay-direct"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "out_trade_no={no}-1&trade_no=2026112322001&total_amount=199.00&trade_status=TRADE_SUCCESS&sign_type=RSA2&sign=Zm9yZ2Vk"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

async fn a_cross_shift_refund_needs_the_station_managers_approval_and_then_goes_back_through_the_channel(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    open_shift(&app, Who::Cashier, "0.00").await;
    let (_, payment) = pay(&app, fuel("X-1", "wechat_pay_code", "300.00")).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    let no = payment["payment_no"].as_str().unwrap().to_owned();
    let (status, closed) = close_shift(&app, Who::Cashier, "0.00", None).await;
    assert_eq!(status, 200, "{closed}");
    open_shift(&app, Who::Cashier, "0.00").await;
    // The sale belongs to the closed shift: a request for the manager.
    let (status, request) = refund(&app, Who::Cashier, &no, "RF-1", "100.00").await;
    assert_eq!(status, 201, "{request}");
    assert_eq!(request["status"], "pending_approval");
    assert!(request["needs_approval"].as_bool().unwrap());
    let station = app.world.orgs["station-a1"];
    let refund_id = request["id"].as_str().unwrap().to_owned();
    // Not refunded before approval.
    assert!(
        app.retail.sim("wxpay-direct").taken()[0].refunds.is_empty(),
        "nothing goes back before the manager approves"
    );
    // The cashier cannot approve; the manager can.
    let approve = || {
        Call::post(
            format!("/v1/stations/{station}/refunds/{refund_id}/approve"),
            Some(json!({"note": "receipt checked"})),
        )
    };
    let response = app.call(Some(Who::Cashier), &approve()).await;
    expect_problem(response, 403, "forbidden").await;
    let (status, listed) = body(
        app.call(
            Some(Who::StationManager),
            &Call::get(format!("/v1/stations/{station}/refunds")),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"][0]["id"], refund_id.as_str());
    let (status, approved) = body(app.call(Some(Who::StationManager), &approve()).await).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "refunding", "{approved}");
    assert_eq!(approved["decided_by"], "station-manager");
    // The refund_approval workflow pays it back.
    let mut paid = false;
    for _ in 0..100 {
        let (_, done) = body(
            app.call(
                Some(Who::StationManager),
                &Call::get(format!("/v1/stations/{station}/refunds?status=succeeded")),
            )
            .await,
        )
        .await;
        if done["items"].as_array().is_some_and(|i| !i.is_empty()) {
            paid = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(paid, "the approved refund was not paid back");
    // Deciding again is a conflict.
    let response = app.call(Some(Who::StationManager), &approve()).await;
    expect_problem(response, 409, "conflict").await;
    // Back through the channel, booked, and the payment shows it.
    let charged = &app.retail.sim("wxpay-direct").taken()[0];
    assert_eq!(charged.refunded_fen, 10_000);
    let payment = get_payment(&app, "X-1").await;
    assert_eq!(dec(&payment["refunded"]), Decimal::new(10000, 2));
    assert_eq!(dec(&payment["refundable"]), Decimal::new(20000, 2));
    let accounts = payments::stations::station_account_ids(station);
    assert_eq!(balance(&app, accounts.sales).await, Decimal::new(20000, 2));
    // A rejected request gives the amount back to what may be refunded.
    let (_, second) = refund(&app, Who::Cashier, &no, "RF-2", "200.00").await;
    let second_id = second["id"].as_str().unwrap();
    let response = app
        .call(
            Some(Who::StationManager),
            &Call::post(
                format!("/v1/stations/{station}/refunds/{second_id}/reject"),
                Some(json!({})),
            ),
        )
        .await;
    expect_problem(response, 422, "validation").await;
    let (status, rejected) = body(
        app.call(
            Some(Who::StationManager),
            &Call::post(
                format!("/v1/stations/{station}/refunds/{second_id}/reject"),
                Some(json!({"note": "goods were used"})),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["status"], "rejected");
    let payment = get_payment(&app, "X-1").await;
    assert_eq!(dec(&payment["refundable"]), Decimal::new(20000, 2));
}

async fn partial_refunds_in_the_open_shift_stop_at_the_original_amount(backend: Backend) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    open_shift(&app, Who::Cashier, "200.00").await;
    let (_, payment) = pay(&app, fuel("P-1", "cash", "100.00")).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    let no = payment["payment_no"].as_str().unwrap().to_owned();
    let (status, first) = refund(&app, Who::Cashier, &no, "R-1", "60.00").await;
    assert_eq!(
        (status, first["status"].as_str()),
        (201, Some("succeeded")),
        "{first}"
    );
    let (status, problem) = refund(&app, Who::Cashier, &no, "R-2", "50.00").await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("40.00")
    );
    // The same refund number again is the same refund, not a second one.
    let (status, again) = refund(&app, Who::Cashier, &no, "R-1", "60.00").await;
    assert_eq!(status, 200);
    assert_eq!(again["id"], first["id"]);
    let (status, last) = refund(&app, Who::Cashier, &no, "R-3", "40.00").await;
    assert_eq!(
        (status, last["status"].as_str()),
        (201, Some("succeeded")),
        "{last}"
    );
    let payment = get_payment(&app, "P-1").await;
    assert_eq!(dec(&payment["refundable"]), Decimal::ZERO);
    let (status, closed) = close_shift(&app, Who::Cashier, "200.00", None).await;
    assert_eq!(status, 200, "{closed}");
    let summary = &closed["summary"];
    assert_eq!(dec(&summary["cash_sales"]), Decimal::new(10000, 2));
    assert_eq!(dec(&summary["cash_refunds"]), Decimal::new(10000, 2));
    assert_eq!(dec(&summary["expected_cash"]), Decimal::new(20000, 2));
    assert_eq!(dec(&summary["variance"]), Decimal::ZERO);
    assert_eq!(summary["refunds"]["count"], 2);
}

async fn shift_totals_are_exact_and_an_unresolved_payment_holds_the_close_until_a_manager_overrides(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let workers = app.run_workers();
    open_shift(&app, Who::Cashier, "500.00").await;
    let mixed = json!({
        "order_no": "S-1",
        "method": "alipay_code",
        "amount": "325.50",
        "payer_code": "286543210987654321",
        "lines": [
            {"kind": "fuel", "grade": "95", "litres": "38.150", "nozzle": 2, "amount": "310.00"},
            {"kind": "item", "name": "mineral water", "quantity": 5, "amount": "15.50"}
        ],
    });
    assert_eq!(pay(&app, mixed).await.1["status"], "succeeded");
    assert_eq!(
        pay(&app, fuel("S-2", "cash", "200.00")).await.1["status"],
        "succeeded"
    );
    assert_eq!(
        pay(&app, fuel("S-3", "wechat_pay_code", "150.25")).await.1["status"],
        "succeeded"
    );
    // A payment taken while no worker runs stays pending.
    drop(workers);
    let (status, pending) = pay(&app, fuel("S-4", "bank_card", "80.00")).await;
    assert_eq!((status, pending["status"].as_str()), (201, Some("pending")));
    let (status, problem) = close_shift(&app, Who::Cashier, "690.00", None).await;
    assert_eq!(status, 409, "{problem}");
    // Only a manager may close over it, and the override is recorded.
    let (status, _) =
        close_shift(&app, Who::Cashier, "690.00", Some("card terminal offline")).await;
    assert_eq!(status, 403);
    let (status, closed) = close_shift(
        &app,
        Who::StationManager,
        "690.00",
        Some("card terminal offline"),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    let summary = &closed["summary"];
    assert_eq!(summary["sales"]["count"], 3);
    assert_eq!(dec(&summary["sales"]["amount"]), Decimal::new(67575, 2));
    assert_eq!(
        dec(&summary["by_method"]["cash"]["amount"]),
        Decimal::new(20000, 2)
    );
    assert_eq!(
        dec(&summary["by_method"]["alipay_code"]["amount"]),
        Decimal::new(32550, 2)
    );
    assert_eq!(
        dec(&summary["by_fuel_grade"]["95"]["litres"]),
        Decimal::new(38150, 3)
    );
    assert_eq!(
        dec(&summary["by_fuel_grade"]["92"]["amount"]),
        Decimal::new(35025, 2)
    );
    assert_eq!(dec(&summary["non_fuel"]["amount"]), Decimal::new(1550, 2));
    assert_eq!(dec(&summary["expected_cash"]), Decimal::new(70000, 2));
    assert_eq!(dec(&summary["variance"]), Decimal::new(-1000, 2));
    assert_eq!(summary["unresolved"], 1);
    assert_eq!(summary["override_by"], "station-manager");
    // The receipt prints the same figures.
    let station = app.world.orgs["station-a1"];
    let shift_id = closed["id"].as_str().unwrap();
    let receipt = app
        .call(
            Some(Who::StationManager),
            &Call::get(format!("/v1/stations/{station}/shifts/{shift_id}/receipt")),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(receipt.contains("675.75"), "{receipt}");
    assert!(receipt.contains("-10.00"), "{receipt}");
    assert!(receipt.contains("card terminal offline"), "{receipt}");
    // The payment completes once workers run again.
    let _workers = app.run_workers();
    assert_eq!(settled(&app, "S-4").await["status"], "succeeded");
}

async fn a_channel_failing_again_and_again_is_cut_off_and_a_declined_payer_is_sent_elsewhere(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    open_shift(&app, Who::Cashier, "0.00").await;
    // WeChat direct is down without notice: each payment finds it out and fails over.
    app.retail.sim("wxpay-direct").set(|b| b.unavailable = true);
    // Five customers (each with a payment code of their own, so that no payer exclusion
    // keeps a later one away from A).
    let customer = |i: usize| {
        let mut request = fuel(&format!("B-{i}"), "wechat_pay_code", "10.00");
        request["payer_code"] = json!(format!("13456789012345{i:04}"));
        request
    };
    for i in 0..5 {
        let (_, payment) = pay(&app, customer(i)).await;
        assert_eq!(payment["channel"], "wxpay-via-bank-a", "{payment}");
    }
    // The failures are on record for every process: the breaker opens (routing reloads the
    // channels' health at most once a second).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (_, payment) = pay(&app, customer(5)).await;
    assert_eq!(payment["status"], "succeeded", "{payment}");
    assert_eq!(payment["channel"], "wxpay-via-bank-a");
    let excluded = payment["route"]["excluded"].as_array().unwrap();
    assert!(
        excluded
            .iter()
            .any(|e| e[0] == "wxpay-direct" && e[1]["reason"] == "circuit_open"),
        "{excluded:?}"
    );
    assert_eq!(payment["route"]["candidates"].as_array().unwrap().len(), 1);

    // A card declined on acquirer A is not tried there again for a while.
    app.retail
        .sim("card-acquirer-a")
        .set(|b| b.decline_next = 1);
    let mut card = fuel("D-1", "bank_card", "66.00");
    card["payer_code"] = json!("6222020200112233445");
    let (_, first) = pay(&app, card.clone()).await;
    assert_eq!(first["channel"], "card-acquirer-b", "{first}");
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    card["order_no"] = json!("D-2");
    let (_, second) = pay(&app, card).await;
    assert_eq!(second["channel"], "card-acquirer-b", "{second}");
    let excluded = second["route"]["excluded"].as_array().unwrap();
    assert!(
        excluded
            .iter()
            .any(|e| e[0] == "card-acquirer-a" && e[1]["reason"] == "payer_failed_here"),
        "{excluded:?}"
    );
    // Another card still goes to A first.
    let (_, other) = pay(&app, fuel("D-3", "bank_card", "66.00")).await;
    assert_eq!(other["channel"], "card-acquirer-a", "{other}");
}

async fn the_till_prints_the_days_summary_and_finance_resolves_a_reconciliation_exception_once(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    open_shift(&app, Who::Cashier, "0.00").await;
    assert_eq!(
        pay(&app, fuel("Y-1", "cash", "120.00")).await.1["status"],
        "succeeded"
    );
    assert_eq!(
        pay(&app, fuel("Y-2", "wechat_pay_code", "80.50")).await.1["status"],
        "succeeded"
    );
    let (id, key) = till(&app, "station-a1");
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let (status, day) = body(
        app.call(
            Some(Who::Cashier),
            &Call::get(format!("/v1/terminals/{id}/day-summary?day={today}")).at_till(&key),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{day}");
    assert_eq!(day["summary"]["sales"]["count"], 2);
    assert_eq!(
        dec(&day["summary"]["sales"]["amount"]),
        Decimal::new(20050, 2)
    );
    assert_eq!(day["summary"]["open_shifts"].as_array().unwrap().len(), 1);
    assert!(day["receipt"].as_str().unwrap().contains("200.50"), "{day}");

    // An exception of the station's: its company resolves it, once.
    let station = app.world.orgs["station-a1"];
    let exception = Uuid::now_v7();
    let now = chrono::Utc::now();
    use sea_orm::ActiveValue::Set;
    sea_orm::EntityTrait::insert(entities::pos_recon_exceptions::ActiveModel {
        id: Set(exception),
        channel_id: Set("wxpay-direct".into()),
        statement_day: Set(today.to_string()),
        subject: Set("payment".into()),
        kind: Set("amount_mismatch".into()),
        station_id: Set(Some(station)),
        out_trade_no: Set("01a2000000000000000000ab-1".into()),
        refund_no: Set(String::new()),
        payment_no: Set(Some("01a2000000000000000000ab".into())),
        channel_txn_id: Set(Some("4200000000000099".into())),
        our_amount_minor: Set(Some(8_050)),
        their_amount_minor: Set(Some(8_000)),
        currency: Set("CNY".into()),
        detail: Set("statement says 80.00".into()),
        status: Set("open".into()),
        resolution_note: Set(None),
        resolved_by: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        resolved_at: Set(None),
    })
    .exec_without_returning(&app.state.db)
    .await
    .unwrap();
    let (status, open) = body(
        app.call(
            Some(Who::StationManager),
            &Call::get(format!("/v1/stations/{station}/reconciliation-exceptions")),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(open[0]["kind"], "amount_mismatch");
    assert_eq!(dec(&open[0]["their_amount"]), Decimal::new(8000, 2));
    let resolve = |note: &str| {
        Call::post(
            format!("/v1/reconciliation-exceptions/{exception}/resolve"),
            Some(json!({ "note": note })),
        )
    };
    let response = app.call(Some(Who::StationManager), &resolve("x")).await;
    expect_problem(response, 403, "forbidden").await;
    let (status, first) = body(
        app.call(
            Some(Who::StationOwner),
            &resolve("the channel charged 0.50 less: credit note 77"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "resolved");
    let (_, again) = body(
        app.call(Some(Who::StationOwner), &resolve("another note"))
            .await,
    )
    .await;
    assert_eq!(again["resolution_note"], first["resolution_note"]);
    let (_, open) = body(
        app.call(
            Some(Who::StationOwner),
            &Call::get(format!("/v1/stations/{station}/reconciliation-exceptions")),
        )
        .await,
    )
    .await;
    assert_eq!(open.as_array().unwrap().len(), 0);
}

async fn customers_scan_the_tills_codes_and_pay_and_a_code_nobody_scans_is_closed_when_the_till_gives_up(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_workers();
    open_shift(&app, Who::Cashier, "0.00").await;
    let qr = |order: &str, method: &str| {
        let mut request = fuel(order, "cash", "88.00");
        request["method"] = json!(method);
        request
    };
    // The customers scan the codes a moment after the till shows them.
    for id in ["wxpay-direct", "alipay-direct"] {
        app.retail.sim(id).set(|b| b.qr_scan_after_ms = Some(300));
    }
    for (order, method, channel) in [
        ("Q-1", "wechat_pay_qr", "wxpay-direct"),
        ("Q-2", "alipay_qr", "alipay-direct"),
    ] {
        let (status, shown) = pay(&app, qr(order, method)).await;
        assert_eq!(status, 201, "{shown}");
        let paid = settled(&app, order).await;
        assert_eq!(
            (paid["status"].as_str(), paid["channel"].as_str()),
            (Some("succeeded"), Some(channel)),
            "{paid}"
        );
        // Taken once, on the one channel the code was issued by.
        let out_trade_no = format!("{}-1", paid["payment_no"].as_str().unwrap());
        let record = app.retail.sim(channel).record(&out_trade_no).unwrap();
        assert_eq!(record.status, sim::core::ChargeStatus::Succeeded);
        assert_eq!(record.amount_fen, 8_800);
    }
    // Nobody scans this one: the till shows the code, then gives up; the order is closed at
    // the channel, so a late scan can take nothing.
    app.retail
        .sim("wxpay-direct")
        .set(|b| b.qr_scan_after_ms = None);
    let (status, shown) = pay(&app, qr("Q-3", "wechat_pay_qr")).await;
    assert_eq!(
        (status, shown["status"].as_str()),
        (201, Some("pending")),
        "{shown}"
    );
    assert!(
        shown["code_url"]
            .as_str()
            .is_some_and(|url| url.starts_with("weixin://")),
        "{shown}"
    );
    let (id, key) = till(&app, "station-a1");
    let cancelled = app
        .call(
            Some(Who::Cashier),
            &Call::post(format!("/v1/terminals/{id}/payments/Q-3/cancel"), None).at_till(&key),
        )
        .await;
    assert_eq!(cancelled.status().as_u16(), 202);
    let given_up = settled(&app, "Q-3").await;
    assert_ne!(given_up["status"], "succeeded", "{given_up}");
    let out_trade_no = format!("{}-1", given_up["payment_no"].as_str().unwrap());
    let record = app
        .retail
        .sim("wxpay-direct")
        .record(&out_trade_no)
        .unwrap();
    assert_eq!(
        record.status,
        sim::core::ChargeStatus::Reversed,
        "{record:?}"
    );
    assert!(
        app.retail
            .sim("wxpay-direct")
            .state
            .lock()
            .customer_pays("4200", &out_trade_no)
            .is_none(),
        "a late scan takes nothing"
    );
}

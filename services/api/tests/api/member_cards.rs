//! Stored-value member cards at the till: issued, loaded in cash, spent and refunded, with
//! the cap and the balance held by the ledger under concurrency, lost cards blocked, and the
//! shift counting the cash the top-ups brought.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use testkit::Backend;
use uuid::Uuid;

use crate::common::{Call, TestApp, Who, spawn_app};

testkit::scenarios!(
    a_member_card_is_issued_loaded_in_cash_spent_and_refunded_and_the_shift_counts_the_cash,
    concurrent_top_ups_and_payments_can_neither_pass_the_cap_nor_overdraw_the_card,
    a_named_card_reported_lost_cannot_pay_until_a_station_manager_unblocks_it,
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
        .unwrap_or_else(|| panic!("a decimal string: {value}"))
        .parse()
        .expect("a decimal")
}

fn cny(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn till(app: &TestApp) -> (Uuid, String) {
    app.world.terminals["station-a1"].clone()
}

async fn post(app: &TestApp, who: Who, path: String, request: Value) -> (u16, Value) {
    let (_, key) = till(app);
    body(
        app.call(Some(who), &Call::post(path, Some(request)).at_till(&key))
            .await,
    )
    .await
}

async fn open_shift(app: &TestApp, float: &str) {
    let (id, _) = till(app);
    let (status, shift) = post(
        app,
        Who::Cashier,
        format!("/v1/terminals/{id}/shifts"),
        json!({ "opening_float": float }),
    )
    .await;
    assert_eq!(status, 201, "{shift}");
}

async fn issue(app: &TestApp, request: Value) -> (u16, Value) {
    let (id, _) = till(app);
    post(
        app,
        Who::Cashier,
        format!("/v1/terminals/{id}/member-cards"),
        request,
    )
    .await
}

async fn card(app: &TestApp, card_no: &str) -> Value {
    let (id, key) = till(app);
    let (status, card) = body(
        app.call(
            Some(Who::Cashier),
            &Call::get(format!("/v1/terminals/{id}/member-cards/{card_no}")).at_till(&key),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{card}");
    card
}

async fn top_up(app: &TestApp, card_no: &str, order: &str, amount: &str) -> (u16, Value) {
    let (id, _) = till(app);
    post(
        app,
        Who::Cashier,
        format!("/v1/terminals/{id}/member-cards/{card_no}/top-ups"),
        json!({ "order_no": order, "amount": amount }),
    )
    .await
}

async fn pay(app: &TestApp, card_no: &str, order: &str, amount: &str) -> (u16, Value) {
    let (id, _) = till(app);
    post(
        app,
        Who::Cashier,
        format!("/v1/terminals/{id}/payments"),
        json!({
            "order_no": order,
            "method": "member_card",
            "amount": amount,
            "payer_code": card_no,
            "lines": [{"kind": "fuel", "grade": "95", "litres": "20.000", "nozzle": 1, "amount": amount}],
        }),
    )
    .await
}

/// The card's two ledger accounts always add up to its cap, and the ledger is sound.
async fn ledger_holds_the_cap(app: &TestApp, card_no: &str) {
    let view = card(app, card_no).await;
    assert_eq!(
        dec(&view["balance"]) + dec(&view["loadable"]),
        dec(&view["cap"]),
        "{view}"
    );
    let audit = app.state.ledger.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
}

async fn a_member_card_is_issued_loaded_in_cash_spent_and_refunded_and_the_shift_counts_the_cash(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    // The refund is paid back by its workflow.
    let _workers = app.run_workers();
    open_shift(&app, "100.00").await;
    let number = "8800000000000001";
    let (status, issued) = issue(&app, json!({"card_no": number, "kind": "anonymous"})).await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(
        (
            dec(&issued["balance"]),
            dec(&issued["loadable"]),
            dec(&issued["cap"])
        ),
        (Decimal::ZERO, cny("1000.00"), cny("1000.00"))
    );
    // The same card again is the same card; the number with other details is refused.
    let (status, again) = issue(&app, json!({"card_no": number, "kind": "anonymous"})).await;
    assert_eq!((status, &again["card_no"]), (200, &json!(number)));
    let (status, problem) = issue(
        &app,
        json!({"card_no": number, "kind": "named", "holder_name": "Han Mei", "holder_phone": "13900139000"}),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    // An anonymous card has no holder; a named one needs one.
    let (status, problem) = issue(
        &app,
        json!({"card_no": "8800000000000002", "kind": "named", "holder_name": "Han Mei"}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "holder_phone", "{problem}");

    // Cash onto the card, once however often the till sends it.
    let (status, loaded) = top_up(&app, number, "TU-1", "600.00").await;
    assert_eq!(
        (status, loaded["status"].as_str()),
        (201, Some("succeeded")),
        "{loaded}"
    );
    let (status, replay) = top_up(&app, number, "TU-1", "600.00").await;
    assert_eq!(status, 200);
    assert_eq!(replay["top_up_no"], loaded["top_up_no"]);
    assert_eq!(dec(&replay["card"]["balance"]), cny("600.00"));
    let (status, _) = top_up(&app, number, "TU-1", "700.00").await;
    assert_eq!(status, 409, "another amount under the same order number");
    // Past the anonymous cap: refused, nothing moves, and the till is told what fits.
    let (status, refused) = top_up(&app, number, "TU-2", "500.00").await;
    assert_eq!(
        (status, refused["status"].as_str()),
        (201, Some("failed")),
        "{refused}"
    );
    assert!(
        refused["reason"].as_str().unwrap().contains("400.00"),
        "{refused}"
    );
    assert_eq!(dec(&refused["card"]["balance"]), cny("600.00"));

    // Paying by card: the balance pays; a payment beyond it fails and takes nothing.
    let (status, paid) = pay(&app, number, "P-1", "250.50").await;
    assert_eq!(
        (status, paid["status"].as_str()),
        (201, Some("succeeded")),
        "{paid}"
    );
    assert_eq!(paid["method"], "member_card");
    let (_, short) = pay(&app, number, "P-2", "400.00").await;
    assert_eq!(short["status"], "failed", "{short}");
    assert!(
        short["reason"].as_str().unwrap().contains("349.50"),
        "{short}"
    );
    // A card of no company of this station's is not found.
    let (status, problem) = pay(&app, "8899999999999999", "P-3", "10.00").await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "payer_code");

    // A refund in the open shift goes back onto the card.
    let (id, _) = till(&app);
    let (status, refund) = post(
        &app,
        Who::Cashier,
        format!("/v1/terminals/{id}/refunds"),
        json!({
            "payment_no": paid["payment_no"],
            "refund_no": "RF-1",
            "amount": "50.00",
            "reason": "pump stopped early",
        }),
    )
    .await;
    assert_eq!(status, 201, "{refund}");
    let mut view = card(&app, number).await;
    for _ in 0..50 {
        if dec(&view["balance"]) == cny("399.50") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = card(&app, number).await;
    }
    assert_eq!(dec(&view["balance"]), cny("399.50"), "{view}");
    ledger_holds_the_cap(&app, number).await;

    // The close: the card sale counts as a sale by card, the top-up as cash in the drawer.
    let (status, closed) = post(
        &app,
        Who::Cashier,
        format!("/v1/terminals/{id}/shifts/current/close"),
        json!({ "declared_cash": "700.00" }),
    )
    .await;
    assert_eq!(status, 200, "{closed}");
    let summary = &closed["summary"];
    assert_eq!(summary["by_method"]["member_card"]["count"], 1, "{summary}");
    assert_eq!(
        dec(&summary["by_method"]["member_card"]["amount"]),
        cny("250.50")
    );
    assert_eq!(
        dec(&summary["refunds_by_method"]["member_card"]["amount"]),
        cny("50.00")
    );
    assert_eq!(summary["card_top_ups"]["count"], 1);
    assert_eq!(dec(&summary["card_top_ups"]["amount"]), cny("600.00"));
    assert_eq!(dec(&summary["expected_cash"]), cny("700.00"));
    assert_eq!(dec(&summary["variance"]), Decimal::ZERO);
}

async fn concurrent_top_ups_and_payments_can_neither_pass_the_cap_nor_overdraw_the_card(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    open_shift(&app, "0.00").await;
    let number = "8800000000000100";
    let (status, _) = issue(&app, json!({"card_no": number, "kind": "anonymous"})).await;
    assert_eq!(status, 201);
    // Ten tills' worth of 150.00 loads at once onto a card capped at 1,000.00: six fit.
    let loads = (0..10).map(|i| {
        let app = &app;
        async move { top_up(app, number, &format!("C-{i}"), "150.00").await }
    });
    let results = futures_util::future::join_all(loads).await;
    let succeeded = results
        .iter()
        .filter(|(status, t)| {
            assert_eq!(*status, 201, "{t}");
            t["status"] == "succeeded"
        })
        .count();
    assert_eq!(succeeded, 6, "{results:?}");
    assert_eq!(dec(&card(&app, number).await["balance"]), cny("900.00"));
    // Ten payments of 100.00 at once from 900.00: nine are paid, one fails.
    let payments = (0..10).map(|i| {
        let app = &app;
        async move { pay(app, number, &format!("S-{i}"), "100.00").await }
    });
    let results = futures_util::future::join_all(payments).await;
    let paid = results
        .iter()
        .filter(|(status, p)| {
            assert_eq!(*status, 201, "{p}");
            p["status"] == "succeeded"
        })
        .count();
    assert_eq!(paid, 9, "{results:?}");
    assert_eq!(dec(&card(&app, number).await["balance"]), Decimal::ZERO);
    ledger_holds_the_cap(&app, number).await;
}

async fn a_named_card_reported_lost_cannot_pay_until_a_station_manager_unblocks_it(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    open_shift(&app, "0.00").await;
    let (id, _) = till(&app);
    let number = "8800000000000200";
    issue(&app, json!({"card_no": number, "kind": "anonymous"})).await;
    assert_eq!(
        top_up(&app, number, "L-1", "800.00").await.1["status"],
        "succeeded"
    );
    // Whoever holds an anonymous card may spend it: it cannot be reported lost.
    let block = |phone: &str| json!({"holder_phone": phone, "reason": "lost at the car wash"});
    let (status, problem) = post(
        &app,
        Who::Cashier,
        format!("/v1/terminals/{id}/member-cards/{number}/block"),
        block("13800138000"),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    // Registered to its holder, its cap rises to 5,000.00.
    let register = json!({"holder_name": "Li Lei", "holder_phone": "13800138000"});
    let (status, named) = post(
        &app,
        Who::Cashier,
        format!("/v1/terminals/{id}/member-cards/{number}/register"),
        register.clone(),
    )
    .await;
    assert_eq!(status, 200, "{named}");
    assert_eq!(
        (dec(&named["cap"]), dec(&named["loadable"])),
        (cny("5000.00"), cny("4200.00"))
    );
    let (status, again) = post(
        &app,
        Who::Cashier,
        format!("/v1/terminals/{id}/member-cards/{number}/register"),
        register,
    )
    .await;
    assert_eq!((status, dec(&again["cap"])), (200, cny("5000.00")));
    assert_eq!(
        top_up(&app, number, "L-2", "3000.00").await.1["status"],
        "succeeded"
    );
    ledger_holds_the_cap(&app, number).await;
    // Reported lost, checked against the holder's phone.
    let (status, problem) = post(
        &app,
        Who::Cashier,
        format!("/v1/terminals/{id}/member-cards/{number}/block"),
        block("13900000000"),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let (status, blocked) = post(
        &app,
        Who::Cashier,
        format!("/v1/terminals/{id}/member-cards/{number}/block"),
        block("13800138000"),
    )
    .await;
    assert_eq!((status, blocked["status"].as_str()), (200, Some("blocked")));
    let (_, refused) = pay(&app, number, "X-1", "100.00").await;
    assert_eq!(refused["status"], "failed");
    assert!(refused["reason"].as_str().unwrap().contains("blocked"));
    let (_, refused) = top_up(&app, number, "L-3", "100.00").await;
    assert_eq!(refused["status"], "failed");
    // The cashier cannot unblock it; the station manager can, and the card pays again.
    let unblock = json!({"reason": "holder found it, identity checked"});
    let path = format!("/v1/terminals/{id}/member-cards/{number}/unblock");
    let (status, _) = post(&app, Who::Cashier, path.clone(), unblock.clone()).await;
    assert_eq!(status, 403);
    let (status, active) = post(&app, Who::StationManager, path, unblock).await;
    assert_eq!((status, active["status"].as_str()), (200, Some("active")));
    let (_, paid) = pay(&app, number, "X-2", "100.00").await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    assert_eq!(dec(&card(&app, number).await["balance"]), cny("3700.00"));
    ledger_holds_the_cap(&app, number).await;
}

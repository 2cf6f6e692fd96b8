//! Treasury through the API: a maker's instruction, a checker's decision, the bank's answer
//! by callback, on PostgreSQL and SQLite, with the bank simulator over HTTP.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::Backend;

use crate::common::{Call, TestApp, Who, spawn_app};

testkit::scenarios!(
    a_maker_creates_a_checker_approves_and_the_bank_settles_it,
    a_checker_rejects_and_nothing_is_held_or_sent,
    a_maker_cannot_approve_and_an_instruction_cannot_be_approved_twice,
    an_instruction_the_debtor_cannot_cover_is_refused_at_approval_and_stays_pending,
    a_forged_bank_callback_is_refused_and_changes_nothing,
    the_days_statement_matches_the_settled_instruction_and_an_unexplained_deposit_stays_open_until_resolved,
    an_admin_puts_a_two_of_three_tier_in_force_and_a_large_instruction_needs_two_of_the_named_checkers,
    a_maker_registers_a_payout_account_once_and_other_details_for_it_conflict,
    the_tranche_setting_is_part_of_the_versioned_policy_and_waits_by_default,
    a_freeze_blocks_the_funds_until_its_unfreeze_is_carried_out,
    a_batch_of_payments_is_one_instruction_and_one_message,
);

async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn create(app: &TestApp, amount: &str, payout: bool) -> Value {
    let w = &app.world;
    let mut request = json!({
        "debtor_sub_account_id": w.sub_accounts["company-a"],
        "amount": amount,
        "currency": "CNY",
        "purpose": "SUPP",
        "remittance": "92# gasoline, order DP-7781",
    });
    if payout {
        request["creditor_external_account_id"] = json!(w.external_accounts["company-a"]);
    } else {
        request["creditor_sub_account_id"] = json!(w.sub_accounts["company-b"]);
    }
    let (status, created) = body(
        app.call(
            Some(Who::TreasuryMaker),
            &Call::post("/v1/treasury/instructions", Some(request)),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn get(app: &TestApp, id: &str) -> Value {
    let (status, found) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::get(format!("/v1/treasury/instructions/{id}")),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{found}");
    found
}

async fn available(app: &TestApp, key: &str) -> String {
    let (_, page) = body(
        app.call(
            Some(Who::RootAdmin),
            &Call::get("/v1/treasury/sub-accounts"),
        )
        .await,
    )
    .await;
    let id = app.world.sub_accounts[key].to_string();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id.as_str())
        .map(|s| s["available"].as_str().unwrap().to_owned())
        .unwrap()
}

async fn a_maker_creates_a_checker_approves_and_the_bank_settles_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let _workers = app.run_treasury_workers();
    let created = create(&app, "123456.78", false).await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "pending_approval");
    assert_eq!(created["approval"]["state"], "pending");
    assert_eq!(created["maker"], "treasury-maker");
    assert_eq!(created["kind"], "sub_account_transfer");

    let (status, approved) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::post(format!("/v1/treasury/instructions/{id}/approve"), None),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "approved");
    assert_eq!(available(&app, "company-a").await, "876543.22", "held");

    let mut last = Value::Null;
    for _ in 0..400 {
        last = get(&app, &id).await;
        if last["status"] == "settled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(last["status"], "settled", "{last:#}");
    assert_eq!(last["bank"]["last_status"], "ACSC");
    assert_eq!(last["bank"]["sends"], 1);
    assert_eq!(last["bank"]["rail"], "intra_bank");
    assert_eq!(last["bank"]["settled_amount"], "123456.78");
    assert_eq!(
        last["bank"]["transactions"],
        json!([{"end_to_end_id": created["end_to_end_id"], "amount": "123456.78",
                "status": "settled", "reason": null}])
    );
    let events: Vec<&str> = last["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["created", "approved", "approved_and_held", "settled"],
        "{last:#}"
    );
    assert_eq!(available(&app, "company-a").await, "876543.22");
    assert_eq!(available(&app, "company-b").await, "1123456.78");
    let at_bank = app
        .treasury
        .bank
        .balance(&treasury::domain::AccountNumber::new("3100000000000201").unwrap())
        .unwrap();
    assert_eq!(at_bank.amount().to_string(), "1123456.78");
    assert_eq!(app.treasury.bank.counters().payments_executed, 1);
}

async fn a_checker_rejects_and_nothing_is_held_or_sent(backend: Backend) {
    let app = spawn_app(backend).await;
    let _workers = app.run_treasury_workers();
    let created = create(&app, "5000.00", true).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["kind"], "payout");
    let (status, rejected) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::post(
                format!("/v1/treasury/instructions/{id}/reject"),
                Some(json!({"reason": "the depot's account changed last week"})),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["rejection"]["by"], "treasury-checker");
    let mut finished = Value::Null;
    for _ in 0..200 {
        finished = get(&app, id).await;
        if finished["workflow"]["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(finished["workflow"]["status"], "completed", "{finished:#}");
    assert_eq!(finished["bank"], Value::Null, "never sent");
    assert_eq!(available(&app, "company-a").await, "1000000.00");
    assert_eq!(app.treasury.bank.counters().messages_received, 0);
    // Approving it now is a conflict.
    let (status, problem) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::post(format!("/v1/treasury/instructions/{id}/approve"), None),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409, "{problem}");
}

async fn a_maker_cannot_approve_and_an_instruction_cannot_be_approved_twice(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = create(&app, "10.00", false).await;
    let id = created["id"].as_str().unwrap();
    let approve = Call::post(format!("/v1/treasury/instructions/{id}/approve"), None);
    let (status, problem) = body(app.call(Some(Who::TreasuryMaker), &approve).await).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["type"], "urn:forecourt:problem:forbidden");
    let (status, _) = body(app.call(Some(Who::TreasuryChecker), &approve).await).await;
    assert_eq!(status, 200);
    let again = Call::post(format!("/v1/treasury/instructions/{id}/approve"), None);
    let (status, problem) = body(app.call(Some(Who::TreasuryChecker), &again).await).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(available(&app, "company-a").await, "999990.00", "held once");
}

async fn an_instruction_the_debtor_cannot_cover_is_refused_at_approval_and_stays_pending(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let created = create(&app, "1000000.01", false).await;
    let id = created["id"].as_str().unwrap();
    let (status, problem) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::post(format!("/v1/treasury/instructions/{id}/approve"), None),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("cannot cover"),
        "{problem}"
    );
    assert_eq!(get(&app, id).await["status"], "pending_approval");
    assert_eq!(available(&app, "company-a").await, "1000000.00");
}

async fn a_forged_bank_callback_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .post(app.url("/v1/treasury/bank/callbacks"))
        .header("content-type", "application/xml")
        .header("x-signature", "bm90IGEgc2lnbmF0dXJl")
        .body("<Document xmlns=\"urn:iso:std:iso:20022:tech:xsd:pain.002.001.11\"/>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

async fn the_days_statement_matches_the_settled_instruction_and_an_unexplained_deposit_stays_open_until_resolved(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let _workers = app.run_treasury_workers();
    let created = create(&app, "2500.00", false).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, _) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::post(format!("/v1/treasury/instructions/{id}/approve"), None),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    for _ in 0..400 {
        if get(&app, &id).await["status"] == "settled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Money arrives that no instruction explains.
    let account = treasury::domain::AccountNumber::new("3100000000000101").unwrap();
    app.treasury.bank.credit(
        &account,
        ledger::Money::new(rust_decimal_macros::dec!(777.00), ledger::Currency::CNY).unwrap(),
    );
    let today = chrono::Utc::now()
        .with_timezone(&treasury::rails::TZ)
        .date_naive()
        .to_string();
    let import = Call::post(
        "/v1/treasury/statements",
        Some(json!({"account_number": "3100000000000101", "date": today})),
    );
    let (status, imported) = body(app.call(Some(Who::TreasuryMaker), &import).await).await;
    assert_eq!(status, 201, "{imported:#}");
    assert_eq!(imported["source"], "bank");
    assert_eq!(imported["matched"], 1, "{imported:#}");
    let exceptions = imported["exceptions"].as_array().unwrap();
    assert_eq!(exceptions.len(), 1, "{imported:#}");
    assert_eq!(exceptions[0]["kind"], "unknown_entry");
    assert_eq!(exceptions[0]["detail"]["amount"]["amount"], "777.00");
    let exception = exceptions[0]["id"].as_str().unwrap().to_owned();

    // The same statement again is the same import.
    let again = Call::post(
        "/v1/treasury/statements",
        Some(json!({"account_number": "3100000000000101", "date": today})),
    );
    let (status, replayed) = body(app.call(Some(Who::TreasuryMaker), &again).await).await;
    assert_eq!(status, 200, "{replayed:#}");
    assert_eq!(replayed["id"], imported["id"]);

    let (status, open) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::get("/v1/treasury/exceptions?status=open"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(open["items"].as_array().unwrap().len(), 1);

    let resolve = |note: &str| {
        Call::post(
            format!("/v1/treasury/exceptions/{exception}/resolve"),
            Some(json!({"resolution": note})),
        )
    };
    let (status, problem) = body(
        app.call(Some(Who::TreasuryMaker), &resolve("not mine to clear"))
            .await,
    )
    .await;
    assert_eq!(status, 403, "{problem}");
    let (status, resolved) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &resolve("cash pickup deposit, booked by hand"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolved_by"], "treasury-checker");
    let (status, _) = body(
        app.call(Some(Who::TreasuryChecker), &resolve("again"))
            .await,
    )
    .await;
    assert_eq!(status, 409);
    let (_, open) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::get("/v1/treasury/exceptions?status=open"),
        )
        .await,
    )
    .await;
    assert!(open["items"].as_array().unwrap().is_empty());
}

/// A checker of the root organisation with a session: username and token.
async fn named_checker(app: &TestApp, username: &str) -> String {
    let user = api::directory::create_user(
        &app.state.db,
        api::directory::NewUser {
            id: uuid::Uuid::now_v7(),
            organisation_id: app.world.orgs["root"],
            username: username.to_owned(),
            display_name: username.to_owned(),
            role: api::policy::Role::TreasuryChecker,
        },
        "unused".into(),
    )
    .await
    .unwrap();
    api::auth::open_session(&app.state.db, user.id, Duration::from_secs(600))
        .await
        .unwrap()
        .token
}

async fn approve_as(app: &TestApp, token: &str, id: &str) -> (u16, Value) {
    body(
        app.client
            .post(app.url(&format!("/v1/treasury/instructions/{id}/approve")))
            .bearer_auth(token)
            .header("idempotency-key", uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn an_admin_puts_a_two_of_three_tier_in_force_and_a_large_instruction_needs_two_of_the_named_checkers(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let tier = json!({
        "rules": [
            {"name": "every instruction", "steps": [{"role": "treasury_checker", "approvals": 1}]},
            {"name": "above 1,000: two of three", "when": {"amount_above": "1000"},
             "steps": [{"role": "treasury_checker", "approvals": 2, "eligible": ["zhao", "qian", "sun"]}]}
        ],
        "valid_for_minutes": 60
    });
    let set = |policy: Value| Call::post("/v1/treasury/approval-policy", Some(policy));
    let (status, problem) = body(app.call(Some(Who::BrandAdmin), &set(tier.clone())).await).await;
    assert_eq!(status, 403, "{problem}");
    let no_base = json!({
        "rules": [{"name": "only big ones", "when": {"amount_above": "1000"},
                   "steps": [{"role": "treasury_checker", "approvals": 1}]}],
        "valid_for_minutes": 60
    });
    let (status, problem) = body(app.call(Some(Who::RootAdmin), &set(no_base)).await).await;
    assert_eq!(status, 422, "{problem}");
    let (status, in_force) = body(app.call(Some(Who::RootAdmin), &set(tier)).await).await;
    assert_eq!(status, 201, "{in_force}");
    assert_eq!(in_force["version"], 1);
    assert_eq!(in_force["set_by"], "root-admin");
    let (_, read) = body(
        app.call(
            Some(Who::TreasuryMaker),
            &Call::get("/v1/treasury/approval-policy"),
        )
        .await,
    )
    .await;
    assert_eq!(read["version"], 1);
    assert_eq!(
        read["rules"][1]["steps"][0]["eligible"],
        json!(["zhao", "qian", "sun"])
    );

    let zhao = named_checker(&app, "zhao").await;
    let qian = named_checker(&app, "qian").await;
    let small = create(&app, "999.00", false).await;
    let small_id = small["id"].as_str().unwrap();
    let (status, approved) = approve_as(&app, &zhao, small_id).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(
        approved["status"], "approved",
        "one checker is enough below the tier"
    );

    let large = create(&app, "5000.00", false).await;
    let id = large["id"].as_str().unwrap();
    let (status, first) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::post(format!("/v1/treasury/instructions/{id}/approve"), None),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "pending_approval");
    assert_eq!(
        first["approval"]["waiting_for"],
        "2 more approval(s) by treasury_checker"
    );
    // A checker who is not named cannot take the named step.
    let li = named_checker(&app, "li").await;
    let (status, problem) = approve_as(&app, &li, id).await;
    assert_eq!(status, 403, "{problem}");
    let (status, second) = approve_as(&app, &zhao, id).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["status"], "pending_approval");
    let (status, problem) = approve_as(&app, &zhao, id).await;
    assert_eq!(status, 409, "nobody approves twice: {problem}");
    let (status, third) = approve_as(&app, &qian, id).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["status"], "approved");
    assert_eq!(available(&app, "company-a").await, "994001.00", "both held");
}

async fn a_maker_registers_a_payout_account_once_and_other_details_for_it_conflict(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let register = |holder: &str| {
        Call::post(
            "/v1/treasury/external-accounts",
            Some(json!({
                "organisation_id": app.world.orgs["company-b"],
                "holder_name": holder,
                "account_number": "6222020200000007777",
                "bank_code": "102100099996",
                "branch_name": "ICBC Suzhou Branch",
            })),
        )
    };
    let (status, first) = body(
        app.call(Some(Who::TreasuryMaker), &register("Huaxin B Ltd."))
            .await,
    )
    .await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = body(
        app.call(Some(Who::TreasuryMaker), &register("Huaxin B Ltd."))
            .await,
    )
    .await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(
        again["id"], first["id"],
        "the same account, registered once"
    );
    let (status, problem) = body(
        app.call(Some(Who::TreasuryMaker), &register("Someone Else Ltd."))
            .await,
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    let bad = Call::post(
        "/v1/treasury/external-accounts",
        Some(json!({
            "organisation_id": app.world.orgs["company-b"],
            "holder_name": "X",
            "account_number": "62-22",
            "bank_code": "ICBC",
            "branch_name": "Y",
        })),
    );
    let (status, problem) = body(app.call(Some(Who::TreasuryMaker), &bad).await).await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["account_number", "bank_code"], "{problem}");
}

async fn the_tranche_setting_is_part_of_the_versioned_policy_and_waits_by_default(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let read = || async {
        body(
            app.call(
                Some(Who::TreasuryMaker),
                &Call::get("/v1/treasury/approval-policy"),
            )
            .await,
        )
        .await
        .1
    };
    assert_eq!(read().await["tranches"], json!({"kind": "wait"}));
    let set = |tranches: Value| {
        Call::post(
            "/v1/treasury/approval-policy",
            Some(json!({
                "rules": [{"name": "every instruction",
                           "steps": [{"role": "treasury_checker", "approvals": 1}]}],
                "valid_for_minutes": 60,
                "tranches": tranches
            })),
        )
    };
    let one = set(json!({"kind": "allowed", "max_tranches": 1}));
    let (status, problem) = body(app.call(Some(Who::RootAdmin), &one).await).await;
    assert_eq!(status, 422, "{problem}");
    assert!(problem.to_string().contains("tranches"), "{problem}");
    let unknown = set(json!({"kind": "sometimes"}));
    let (status, problem) = body(app.call(Some(Who::RootAdmin), &unknown).await).await;
    assert!(status == 400 || status == 422, "{status} {problem}");
    let ten = set(json!({"kind": "allowed", "max_tranches": 10}));
    let (status, in_force) = body(app.call(Some(Who::RootAdmin), &ten).await).await;
    assert_eq!(status, 201, "{in_force}");
    assert_eq!(in_force["version"], 1);
    assert_eq!(
        read().await["tranches"],
        json!({"kind": "allowed", "max_tranches": 10})
    );
    let wait = set(json!({"kind": "wait"}));
    let (status, in_force) = body(app.call(Some(Who::RootAdmin), &wait).await).await;
    assert_eq!(status, 201, "{in_force}");
    assert_eq!(in_force["version"], 2);
    assert_eq!(read().await["tranches"], json!({"kind": "wait"}));
}

async fn approve_and_wait(app: &TestApp, id: &str, until: &str) -> Value {
    let (status, approved) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::post(format!("/v1/treasury/instructions/{id}/approve"), None),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    let mut last = Value::Null;
    for _ in 0..400 {
        last = get(app, id).await;
        if last["status"] == until {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{id} is not {until}: {last:#}");
}

async fn a_freeze_blocks_the_funds_until_its_unfreeze_is_carried_out(backend: Backend) {
    let app = spawn_app(backend).await;
    let _workers = app.run_treasury_workers();
    let w = &app.world;
    let make = |request: Value| Call::post("/v1/treasury/instructions", Some(request));
    let (status, problem) = body(
        app.call(
            Some(Who::TreasuryMaker),
            &make(json!({
                "kind": "freeze",
                "debtor_sub_account_id": w.sub_accounts["company-a"],
                "creditor_sub_account_id": w.sub_accounts["company-b"],
                "amount": "1.00", "currency": "CNY"
            })),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422, "a freeze has no creditor: {problem}");
    let (status, freeze) = body(
        app.call(
            Some(Who::TreasuryMaker),
            &make(json!({
                "kind": "freeze",
                "debtor_sub_account_id": w.sub_accounts["company-a"],
                "amount": "600000.00", "currency": "CNY",
                "remittance": "(2026)沪0115民初12345号 财产保全"
            })),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{freeze}");
    assert_eq!(freeze["kind"], "freeze");
    let freeze_id = freeze["id"].as_str().unwrap().to_owned();
    let frozen = approve_and_wait(&app, &freeze_id, "settled").await;
    assert_eq!(frozen["bank"]["last_status"], "ACSC", "{frozen:#}");
    assert_eq!(available(&app, "company-a").await, "400000.00");
    let account =
        treasury::domain::AccountNumber::new(frozen["debtor"]["account_number"].as_str().unwrap())
            .unwrap();
    assert_eq!(
        app.treasury
            .bank
            .available(&account)
            .unwrap()
            .amount()
            .to_string(),
        "400000.00"
    );

    // What is frozen cannot be paid out: the hold is refused.
    let payout = create(&app, "500000.00", true).await;
    let (status, problem) = body(
        app.call(
            Some(Who::TreasuryChecker),
            &Call::post(
                format!(
                    "/v1/treasury/instructions/{}/approve",
                    payout["id"].as_str().unwrap()
                ),
                None,
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409, "{problem}");

    let unfreeze = |amount: &str| {
        make(json!({
            "kind": "unfreeze",
            "releases_instruction_id": freeze_id,
            "debtor_sub_account_id": w.sub_accounts["company-a"],
            "amount": amount, "currency": "CNY"
        }))
    };
    let (status, problem) = body(app.call(Some(Who::TreasuryMaker), &unfreeze("1.00")).await).await;
    assert_eq!(status, 422, "the whole freeze or nothing: {problem}");
    let (status, released) = body(
        app.call(Some(Who::TreasuryMaker), &unfreeze("600000.00"))
            .await,
    )
    .await;
    assert_eq!(status, 201, "{released}");
    assert_eq!(released["releases_instruction_id"], freeze_id.as_str());
    let id = released["id"].as_str().unwrap().to_owned();
    let done = approve_and_wait(&app, &id, "settled").await;
    assert_eq!(done["bank"]["last_status"], "ACSC", "{done:#}");
    assert_eq!(available(&app, "company-a").await, "1000000.00");
    let events: Vec<Value> = get(&app, &freeze_id).await["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert!(events.contains(&json!("released")), "{events:?}");
}

async fn a_batch_of_payments_is_one_instruction_and_one_message(backend: Backend) {
    let app = spawn_app(backend).await;
    let _workers = app.run_treasury_workers();
    let w = &app.world;
    let make = |request: Value| Call::post("/v1/treasury/instructions", Some(request));
    let batch = |amount: &str, extra: Option<(&str, Value)>| {
        let mut request = json!({
            "debtor_sub_account_id": w.sub_accounts["company-a"],
            "amount": amount, "currency": "CNY", "purpose": "SUPP",
            "end_to_end_id": "FC-BATCH-0001",
            "transactions": [
                {"creditor_sub_account_id": w.sub_accounts["company-b"], "amount": "100.00",
                 "remittance": "invoice 1"},
                {"creditor_sub_account_id": w.sub_accounts["company-b"], "amount": "23.45",
                 "end_to_end_id": "FC-BATCH-0001-B", "remittance": "invoice 2"}
            ]
        });
        if let Some((field, value)) = extra {
            request[field] = value;
        }
        make(request)
    };
    let (status, problem) = body(
        app.call(Some(Who::TreasuryMaker), &batch("123.00", None))
            .await,
    )
    .await;
    assert_eq!(status, 422, "the amount is the total: {problem}");
    let both = Some((
        "creditor_sub_account_id",
        json!(w.sub_accounts["company-b"]),
    ));
    let (status, problem) = body(
        app.call(Some(Who::TreasuryMaker), &batch("123.45", both))
            .await,
    )
    .await;
    assert_eq!(status, 422, "creditors in the transactions only: {problem}");
    let (status, created) = body(
        app.call(Some(Who::TreasuryMaker), &batch("123.45", None))
            .await,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["kind"], "sub_account_transfer");
    assert_eq!(created["amount"], "123.45");
    let ids: Vec<&str> = created["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["end_to_end_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["FC-BATCH-0001-1", "FC-BATCH-0001-B"]);
    let id = created["id"].as_str().unwrap().to_owned();
    let done = approve_and_wait(&app, &id, "settled").await;
    assert_eq!(done["bank"]["settled_amount"], "123.45", "{done:#}");
    let statuses: Vec<&str> = done["bank"]["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["settled", "settled"]);
    assert_eq!(available(&app, "company-a").await, "999876.55");
    assert_eq!(available(&app, "company-b").await, "1000123.45");
    assert_eq!(app.treasury.bank.counters().messages_received, 1);
    assert_eq!(app.treasury.bank.counters().payments_executed, 2);
}

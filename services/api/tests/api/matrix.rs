//! The authorisation matrix: every caller on every route, on a resource of its own subtree
//! and on one of another organisation's. Adding a route without a row fails
//! `every_documented_operation_has_a_row_in_the_matrix`.

use api::policy::Role;
use sea_orm::EntityTrait;
use serde_json::json;
use testkit::Backend;
use uuid::Uuid;

use crate::common::{Call, PASSWORD, TestApp, Who, create_key, create_user, spawn_app};

use Who::*;

/// A row: the operation, who may do it, the status of success, and how a denied caller whose
/// role allows the action but whose subtree does not hold the resource is answered.
struct Row {
    operation: &'static str,
    allowed: &'static [Who],
    ok: u16,
}

const EVERYONE: &[Who] = &Who::ALL;
const USERS: &[Who] = &[
    RootAdmin,
    BrandAdmin,
    StationOwner,
    StationManager,
    Cashier,
    FleetManager,
    TreasuryMaker,
    TreasuryChecker,
    PartnerUser,
];
const ADMINS: &[Who] = &[RootAdmin, BrandAdmin];
const USER_READERS: &[Who] = &[
    RootAdmin,
    BrandAdmin,
    StationOwner,
    StationManager,
    FleetManager,
];
const USER_MANAGERS: &[Who] = &[RootAdmin, BrandAdmin, StationOwner, StationManager];
const KEY_READERS: &[Who] = &[RootAdmin, BrandAdmin, PartnerUser, PartnerKey];
const KEY_MANAGERS: &[Who] = &[RootAdmin, BrandAdmin, PartnerUser];
const TREASURY_READERS: &[Who] = &[RootAdmin, BrandAdmin, TreasuryMaker, TreasuryChecker];
const PAYMENT_READERS: &[Who] = &[RootAdmin, BrandAdmin, StationOwner, StationManager, Cashier];
const STATION_MANAGERS: &[Who] = &[RootAdmin, BrandAdmin, StationOwner];
const TILL_STAFF: &[Who] = &[StationManager, Cashier];
const PARTNERS: &[Who] = &[PartnerUser, PartnerKey];
/// Webhooks: the platform operator's administrators and partners' people (a brand's
/// administrators are refused by an override: events do not name brands).
const WEBHOOK_SUBSCRIBERS: &[Who] = &[RootAdmin, BrandAdmin, PartnerUser];

const ROWS: &[Row] = &[
    Row {
        operation: "GET /healthz",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "GET /readyz",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "GET /metrics",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "POST /v1/auth/login",
        allowed: USERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/auth/logout",
        allowed: USERS,
        ok: 204,
    },
    Row {
        operation: "GET /v1/whoami",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "GET /v1/organisations",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "POST /v1/organisations",
        allowed: ADMINS,
        ok: 201,
    },
    Row {
        operation: "GET /v1/organisations/{id}",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "GET /v1/users",
        allowed: USER_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/users",
        allowed: USER_MANAGERS,
        ok: 201,
    },
    Row {
        operation: "GET /v1/users/{id}",
        allowed: USER_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/users/{id}/disable",
        allowed: USER_MANAGERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/api-keys",
        allowed: KEY_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/api-keys",
        allowed: KEY_MANAGERS,
        ok: 201,
    },
    Row {
        operation: "POST /v1/api-keys/{id}/revoke",
        allowed: KEY_MANAGERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/accounts",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "GET /v1/accounts/{id}",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "GET /v1/accounts/{id}/balance",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "GET /v1/accounts/{id}/statement",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "GET /v1/workflow-instances",
        allowed: &[RootAdmin],
        ok: 200,
    },
    Row {
        operation: "GET /v1/workflow-instances/{id}",
        allowed: &[RootAdmin],
        ok: 200,
    },
    Row {
        operation: "GET /v1/workflow-instances/{id}/history",
        allowed: &[RootAdmin],
        ok: 200,
    },
    Row {
        operation: "GET /v1/treasury/sub-accounts",
        allowed: TREASURY_READERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/treasury/external-accounts",
        allowed: TREASURY_READERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/treasury/instructions",
        allowed: TREASURY_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/treasury/instructions",
        allowed: &[TreasuryMaker],
        ok: 201,
    },
    Row {
        operation: "GET /v1/treasury/instructions/{id}",
        allowed: TREASURY_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/treasury/instructions/{id}/approve",
        allowed: &[TreasuryChecker],
        ok: 200,
    },
    Row {
        operation: "POST /v1/treasury/instructions/{id}/reject",
        allowed: &[TreasuryChecker],
        ok: 200,
    },
    Row {
        operation: "GET /v1/treasury/rails",
        allowed: TREASURY_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/treasury/bank/callbacks",
        allowed: EVERYONE,
        ok: 204,
    },
    Row {
        operation: "GET /v1/stations/{station_id}/terminals",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/stations/{station_id}/terminals",
        allowed: STATION_MANAGERS,
        ok: 201,
    },
    Row {
        operation: "GET /v1/stations/{station_id}/channels",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/stations/{station_id}/channels",
        allowed: STATION_MANAGERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/stations/{station_id}/shifts",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/stations/{station_id}/shifts/{shift_id}/receipt",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/stations/{station_id}/refunds",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/stations/{station_id}/refunds/{refund_id}/approve",
        allowed: &[StationManager],
        ok: 200,
    },
    Row {
        operation: "POST /v1/stations/{station_id}/refunds/{refund_id}/reject",
        allowed: &[StationManager],
        ok: 200,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/shifts",
        allowed: TILL_STAFF,
        ok: 201,
    },
    Row {
        operation: "GET /v1/terminals/{terminal_id}/shifts/current",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/shifts/current/close",
        allowed: TILL_STAFF,
        ok: 200,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/payments",
        allowed: TILL_STAFF,
        ok: 201,
    },
    Row {
        operation: "GET /v1/terminals/{terminal_id}/payments/{order_no}",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/payments/{order_no}/cancel",
        allowed: TILL_STAFF,
        ok: 202,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/refunds",
        allowed: TILL_STAFF,
        ok: 201,
    },
    Row {
        operation: "GET /v1/terminals/{terminal_id}/day-summary",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/member-cards",
        allowed: TILL_STAFF,
        ok: 201,
    },
    Row {
        operation: "GET /v1/terminals/{terminal_id}/member-cards/{card_no}",
        allowed: TILL_STAFF,
        ok: 200,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/member-cards/{card_no}/top-ups",
        allowed: TILL_STAFF,
        ok: 201,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/member-cards/{card_no}/register",
        allowed: TILL_STAFF,
        ok: 200,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/member-cards/{card_no}/block",
        allowed: TILL_STAFF,
        ok: 200,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/member-cards/{card_no}/unblock",
        allowed: &[StationManager],
        ok: 200,
    },
    Row {
        operation: "GET /v1/organisations/{id}/daily-closes",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/stations/{station_id}/reconciliation-exceptions",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/reconciliation-exceptions",
        allowed: ADMINS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/reconciliation-exceptions/{id}/resolve",
        allowed: STATION_MANAGERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/payments/notifications/{channel_id}",
        allowed: EVERYONE,
        ok: 200,
    },
    Row {
        operation: "POST /v1/treasury/statements",
        allowed: &[TreasuryMaker, TreasuryChecker],
        ok: 201,
    },
    Row {
        operation: "GET /v1/treasury/exceptions",
        allowed: TREASURY_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/treasury/exceptions/{id}/resolve",
        allowed: &[TreasuryChecker],
        ok: 200,
    },
    Row {
        operation: "POST /v1/treasury/external-accounts",
        allowed: &[TreasuryMaker],
        ok: 201,
    },
    Row {
        operation: "GET /v1/treasury/calendar",
        allowed: TREASURY_READERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/treasury/approval-policy",
        allowed: TREASURY_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/treasury/approval-policy",
        allowed: ADMINS,
        ok: 201,
    },
    Row {
        operation: "GET /v1/webhooks",
        allowed: WEBHOOK_SUBSCRIBERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/webhooks",
        allowed: WEBHOOK_SUBSCRIBERS,
        ok: 201,
    },
    Row {
        operation: "POST /v1/webhooks/{id}/revoke",
        allowed: WEBHOOK_SUBSCRIBERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/webhooks/{id}/deliveries",
        allowed: WEBHOOK_SUBSCRIBERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/stations/{station_id}/partner-contracts",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/stations/{station_id}/partner-contracts",
        allowed: STATION_MANAGERS,
        ok: 201,
    },
    Row {
        operation: "POST /v1/stations/{station_id}/partner-contracts/{contract_id}/disable",
        allowed: STATION_MANAGERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/stations/{station_id}/partner-contracts/{contract_id}/enable",
        allowed: STATION_MANAGERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/stations/{station_id}/partner-contracts/{contract_id}/settlements",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/stations/{station_id}/partner-contracts/{contract_id}/settlements",
        allowed: STATION_MANAGERS,
        ok: 201,
    },
    Row {
        operation: "POST /v1/stations/{station_id}/partner-contracts/{contract_id}/settlements/{settlement_id}/reverse",
        allowed: STATION_MANAGERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/partner/stations",
        allowed: PARTNERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/partner/orders",
        allowed: &[PartnerKey],
        ok: 201,
    },
    Row {
        operation: "GET /v1/partner/orders/{order_no}",
        allowed: PARTNERS,
        ok: 200,
    },
    Row {
        operation: "GET /v1/terminals/{terminal_id}/partner-orders",
        allowed: PAYMENT_READERS,
        ok: 200,
    },
    Row {
        operation: "POST /v1/terminals/{terminal_id}/partner-orders/{payment_no}/printed",
        allowed: TILL_STAFF,
        ok: 200,
    },
];

/// Which resource a case is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// One in the caller's own subtree.
    Own,
    /// One of an organisation outside the caller's subtree.
    Foreign,
}

/// Whether the caller's subtree is the whole tree (nothing is foreign to it).
fn at_root(who: Who) -> bool {
    who.home() == "root"
}

/// The organisation of a foreign resource of the same sort as the caller's home.
fn foreign_org(who: Who) -> &'static str {
    match who.home() {
        "brand-a" => "brand-b",
        "company-a" => "company-b",
        "station-a1" => "station-b1",
        "fleet-f" => "fleet-g",
        "partner-p" => "partner-q",
        other => panic!("{other} has nothing foreign"),
    }
}

/// The request of one case, or none where the case does not exist (nothing is foreign to
/// the root; a brand admin has no partner to make keys for). `Some(status)` overrides the
/// expected status where the matrix alone does not say it.
async fn case(app: &TestApp, op: &str, who: Who, target: Target) -> Option<(Call, Option<u16>)> {
    let w = &app.world;
    let public = matches!(
        op,
        "GET /healthz"
            | "GET /readyz"
            | "GET /metrics"
            | "POST /v1/treasury/bank/callbacks"
            | "POST /v1/payments/notifications/{channel_id}"
    );
    let unscoped = public
        || matches!(
            op,
            "POST /v1/auth/login"
                | "POST /v1/auth/logout"
                | "GET /v1/whoami"
                | "GET /v1/organisations"
                | "GET /v1/users"
                | "GET /v1/api-keys"
                | "GET /v1/accounts"
                | "GET /v1/workflow-instances"
                | "GET /v1/workflow-instances/{id}"
                | "GET /v1/workflow-instances/{id}/history"
                | "GET /v1/treasury/sub-accounts"
                | "GET /v1/treasury/external-accounts"
                | "GET /v1/treasury/instructions"
                | "GET /v1/treasury/rails"
                | "GET /v1/treasury/exceptions"
                | "GET /v1/treasury/approval-policy"
                | "POST /v1/treasury/approval-policy"
                | "GET /v1/treasury/calendar"
                | "GET /v1/webhooks"
                | "POST /v1/webhooks"
                | "GET /v1/partner/stations"
                | "GET /v1/reconciliation-exceptions"
        );
    if target == Target::Foreign && (unscoped || at_root(who)) {
        return None;
    }
    let org_key = match target {
        Target::Own => who.home(),
        Target::Foreign => foreign_org(who),
    };
    let org = w.orgs[org_key];
    let instance = w.instance;
    let account = w.accounts[org_key];
    let call = match op {
        "GET /healthz" => Call::get("/healthz"),
        "GET /readyz" => Call::get("/readyz"),
        "GET /metrics" => Call::get("/metrics"),
        "POST /v1/auth/login" => {
            let (username, _, _) = who.user()?;
            let mut call = Call::post(
                "/v1/auth/login",
                Some(json!({"username": username, "password": PASSWORD})),
            );
            call.idempotency_key = None;
            call
        }
        "POST /v1/auth/logout" => Call::post("/v1/auth/logout", None),
        "GET /v1/whoami" => Call::get("/v1/whoami"),
        "GET /v1/organisations" => Call::get("/v1/organisations"),
        "POST /v1/organisations" => {
            let kind = match org_key {
                "root" => "brand",
                "brand-a" | "brand-b" => "station_company",
                "company-a" | "company-b" => "station",
                // Nothing may go below these: a caller allowed to create would get 422.
                _ => "station",
            };
            Call::post(
                "/v1/organisations",
                Some(
                    json!({"parent_id": org, "kind": kind, "name": format!("New {}", Uuid::new_v4())}),
                ),
            )
        }
        "GET /v1/organisations/{id}" => Call::get(format!("/v1/organisations/{org}")),
        "GET /v1/users" => Call::get("/v1/users"),
        "POST /v1/users" => Call::post(
            "/v1/users",
            Some(json!({
                "organisation_id": w.orgs[user_org(org_key)],
                "username": format!("new-{}", Uuid::new_v4().simple()),
                "display_name": "New cashier",
                "role": "cashier",
                "password": PASSWORD,
            })),
        ),
        "GET /v1/users/{id}" => {
            let user = create_user(&app.state, org, fitting_role(org_key)).await;
            Call::get(format!("/v1/users/{user}"))
        }
        "POST /v1/users/{id}/disable" => {
            let user_org = user_org(org_key);
            let user = create_user(&app.state, w.orgs[user_org], Role::Cashier).await;
            Call::post(format!("/v1/users/{user}/disable"), None)
        }
        "GET /v1/api-keys" => Call::get("/v1/api-keys"),
        "POST /v1/api-keys" | "POST /v1/api-keys/{id}/revoke" => {
            // Keys are for partners: the caller's own partner, the root's partner P, or
            // for anyone else their home (refused before its kind matters).
            let partner = match (who.home(), target) {
                ("root", _) => "partner-p",
                ("brand-a", Target::Own) => return None,
                ("brand-a", Target::Foreign) => "partner-q",
                (_, _) => org_key,
            };
            if op == "POST /v1/api-keys" {
                Call::post(
                    "/v1/api-keys",
                    Some(json!({"organisation_id": w.orgs[partner], "name": "matrix"})),
                )
            } else {
                let (key, _) = create_key(&app.state, w.orgs[partner]).await;
                Call::post(format!("/v1/api-keys/{key}/revoke"), None)
            }
        }
        "GET /v1/accounts" => Call::get("/v1/accounts"),
        "GET /v1/accounts/{id}" => Call::get(format!("/v1/accounts/{account}")),
        "GET /v1/accounts/{id}/balance" => Call::get(format!("/v1/accounts/{account}/balance")),
        "GET /v1/accounts/{id}/statement" => Call::get(format!("/v1/accounts/{account}/statement")),
        "GET /v1/workflow-instances" => Call::get("/v1/workflow-instances"),
        "GET /v1/workflow-instances/{id}" => {
            Call::get(format!("/v1/workflow-instances/{instance}"))
        }
        "GET /v1/workflow-instances/{id}/history" => {
            Call::get(format!("/v1/workflow-instances/{instance}/history"))
        }
        "GET /v1/treasury/sub-accounts" => Call::get("/v1/treasury/sub-accounts"),
        "GET /v1/treasury/external-accounts" => Call::get("/v1/treasury/external-accounts"),
        "GET /v1/treasury/instructions" => Call::get("/v1/treasury/instructions"),
        "GET /v1/treasury/rails" => Call::get(format!(
            "/v1/treasury/rails?debtor_bank={}&creditor_bank=102100099996",
            crate::common::CUSTODIAN
        )),
        "POST /v1/treasury/instructions" => Call::post(
            "/v1/treasury/instructions",
            Some(json!({
                "debtor_sub_account_id": w.sub_accounts[treasury_org(org_key)],
                "creditor_external_account_id": w.external_accounts[treasury_org(org_key)],
                "amount": "12.34",
                "currency": "CNY",
            })),
        ),
        "GET /v1/treasury/instructions/{id}" => {
            let id = instruction(app, treasury_org(org_key)).await;
            Call::get(format!("/v1/treasury/instructions/{id}"))
        }
        "POST /v1/treasury/instructions/{id}/approve" => {
            let id = instruction(app, treasury_org(org_key)).await;
            Call::post(format!("/v1/treasury/instructions/{id}/approve"), None)
        }
        "POST /v1/treasury/instructions/{id}/reject" => {
            let id = instruction(app, treasury_org(org_key)).await;
            Call::post(
                format!("/v1/treasury/instructions/{id}/reject"),
                Some(json!({"reason": "matrix"})),
            )
        }
        "GET /v1/treasury/exceptions" => Call::get("/v1/treasury/exceptions"),
        "GET /v1/treasury/approval-policy" => Call::get("/v1/treasury/approval-policy"),
        "GET /v1/treasury/calendar" => Call::get("/v1/treasury/calendar"),
        "GET /v1/webhooks"
        | "POST /v1/webhooks"
        | "POST /v1/webhooks/{id}/revoke"
        | "GET /v1/webhooks/{id}/deliveries" => {
            let call = match op {
                "GET /v1/webhooks" => Call::get("/v1/webhooks"),
                "POST /v1/webhooks" => Call::post(
                    "/v1/webhooks",
                    Some(json!({"url": "http://127.0.0.1:9/events", "topics": ["treasury.*"]})),
                ),
                _ => {
                    // A partner's own subscription, or another partner's; the operator's
                    // for everyone else.
                    let owner = match (who, target) {
                        (PartnerUser | PartnerKey, Target::Own) => "partner-p",
                        (PartnerUser | PartnerKey, Target::Foreign) => "partner-q",
                        _ => "root",
                    };
                    let id = webhook(app, owner).await;
                    if op.ends_with("revoke") {
                        Call::post(format!("/v1/webhooks/{id}/revoke"), None)
                    } else {
                        Call::get(format!("/v1/webhooks/{id}/deliveries"))
                    }
                }
            };
            // A brand's administrators may not: events do not name brands.
            return Some((call, (who == BrandAdmin).then_some(403)));
        }
        "POST /v1/treasury/external-accounts" => Call::post(
            "/v1/treasury/external-accounts",
            Some(json!({
                "organisation_id": w.orgs[treasury_org(org_key)],
                "holder_name": "Depot",
                "account_number": format!("62220202{:011}", rand_digits()),
                "bank_code": "102100099996",
                "branch_name": "ICBC Taicang Branch",
            })),
        ),
        "POST /v1/treasury/approval-policy" => {
            let call = Call::post(
                "/v1/treasury/approval-policy",
                Some(json!({
                    "rules": [{"name": "every instruction",
                               "steps": [{"role": "treasury_checker", "approvals": 1}]}],
                    "valid_for_minutes": 60
                })),
            );
            // A brand's administrators may not: the policy is the platform operator's.
            return Some((call, (who == BrandAdmin).then_some(403)));
        }
        "POST /v1/treasury/statements" => {
            let (_, xml) = statement(treasury_org(org_key), 0);
            Call::post("/v1/treasury/statements", Some(json!({ "xml": xml })))
        }
        "POST /v1/treasury/exceptions/{id}/resolve" => {
            let (parsed, xml) = statement(treasury_org(org_key), 1);
            let imported = treasury::statements::import(
                &app.state.db,
                &parsed,
                &xml,
                treasury::statements::Source::Upload,
                "matrix",
                chrono::Utc::now(),
            )
            .await
            .unwrap();
            let id = imported.exceptions[0].id;
            Call::post(
                format!("/v1/treasury/exceptions/{id}/resolve"),
                Some(json!({"resolution": "matrix"})),
            )
        }
        // Unsigned: the bank's signature is the only credential, and this has none.
        "POST /v1/treasury/bank/callbacks" => {
            return Some((Call::post("/v1/treasury/bank/callbacks", None), Some(401)));
        }
        // Unsigned: the channel's signature is the only credential, and this one is forged.
        "POST /v1/payments/notifications/{channel_id}" => {
            let mut call = Call::post("/v1/payments/notifications/alipay-direct", None);
            call.body = None;
            return Some((call, Some(401)));
        }
        "GET /v1/reconciliation-exceptions" => {
            // A brand's administrators may not: unassigned exceptions are the operator's.
            return Some((
                Call::get("/v1/reconciliation-exceptions"),
                (who == BrandAdmin).then_some(403),
            ));
        }
        "POST /v1/reconciliation-exceptions/{id}/resolve" => {
            let id = recon_exception(app, station_of(org_key)).await;
            return Some((
                Call::post(
                    format!("/v1/reconciliation-exceptions/{id}/resolve"),
                    Some(json!({"note": "matrix"})),
                ),
                None,
            ));
        }
        "GET /v1/organisations/{id}/daily-closes" => {
            let station = w.orgs[station_of(org_key)];
            return Some((
                Call::get(format!("/v1/organisations/{station}/daily-closes")),
                None,
            ));
        }
        "GET /v1/partner/stations" => Call::get("/v1/partner/stations"),
        "POST /v1/partner/orders" => {
            // Partner P's own case: a till of the station that signed it; the foreign case:
            // a till of a station that never did.
            let station = match target {
                Target::Own => "station-a1",
                Target::Foreign => "station-b1",
            };
            let (till, _) = fresh_till(app, station, true).await;
            if target == Target::Own {
                contract(app, w.orgs["partner-p"], w.orgs[station]).await;
            }
            Call::post(
                "/v1/partner/orders",
                Some(json!({
                    "order_no": format!("MX-{}", Uuid::new_v4().simple()),
                    "terminal_id": till,
                    "amount": "10.00",
                    "lines": [{"kind": "item", "name": "water", "quantity": 1, "amount": "10.00"}],
                    "driver_ref": "D-1",
                })),
            )
        }
        "GET /v1/partner/orders/{order_no}" => {
            // Partner P's own order, or one only partner Q has.
            let (partner, station) = match target {
                Target::Own => ("partner-p", "station-a1"),
                Target::Foreign => ("partner-q", "station-b1"),
            };
            let (till, _) = fresh_till(app, station, true).await;
            let order_no = format!("MX-{}", Uuid::new_v4().simple());
            partner_order(app, partner, till, &order_no).await;
            Call::get(format!("/v1/partner/orders/{order_no}"))
        }
        op if op.contains("/v1/stations/") || op.contains("/v1/terminals/") => {
            return Some((retail_case(app, op, station_of(org_key)).await, None));
        }
        other => panic!("no case for {other}: add one"),
    };
    // A brand admin's role may read workflows, but they belong to the platform operator,
    // outside the brand: not found, like any resource of another organisation.
    let overridden =
        (op.starts_with("GET /v1/workflow-instances") && who == BrandAdmin).then_some(404);
    Some((call, overridden))
}

/// The station company whose sub-account pays the instructions of a case about `org_key`:
/// one below it for A's side of the tree (the root included), B's for B's side.
fn treasury_org(org_key: &str) -> &'static str {
    match org_key {
        "brand-b" | "company-b" | "station-b1" | "fleet-g" | "partner-q" => "company-b",
        _ => "company-a",
    }
}

/// A statement of `company`'s sub-account with `unexplained` deposits nobody instructed
/// (each an exception), under a new statement id.
fn statement(
    company: &str,
    unexplained: usize,
) -> (treasury::iso20022::camt053::Statement, String) {
    use treasury::iso20022::camt053::{Direction, Statement, StatementEntry};
    let number = crate::common::SUB_ACCOUNTS
        .iter()
        .find(|(key, _)| *key == company)
        .unwrap()
        .1;
    let cny = |minor| ledger::Money::from_minor(minor, ledger::Currency::CNY);
    let today = chrono::Utc::now().date_naive();
    let entries: Vec<StatementEntry> = (0..unexplained)
        .map(|i| StatementEntry {
            amount: cny(10_000),
            direction: Direction::Credit,
            booking_date: today,
            bank_reference: format!("BK-MX-{i}"),
            end_to_end_id: None,
            reversal: false,
            counterparty: None,
            return_reason: None,
        })
        .collect();
    let statement = Statement {
        message_id: treasury::domain::MessageId::new(format!("MX{}", Uuid::new_v4().simple()))
            .unwrap(),
        created_at: chrono::Utc::now(),
        statement_id: format!("ST{}", Uuid::new_v4().simple()),
        account: treasury::domain::AccountNumber::new(number).unwrap(),
        date: today,
        opening: cny(0),
        closing: cny(10_000 * unexplained as i64),
        entries,
    };
    let xml = statement.to_xml().unwrap();
    (statement, xml)
}

/// A webhook subscription of the organisation `owner`.
async fn webhook(app: &TestApp, owner: &str) -> Uuid {
    let id = Uuid::now_v7();
    entities::webhook_subscriptions::Entity::insert(entities::webhook_subscriptions::ActiveModel {
        id: sea_orm::ActiveValue::Set(id),
        organisation_id: sea_orm::ActiveValue::Set(app.world.orgs[owner]),
        url: sea_orm::ActiveValue::Set("http://127.0.0.1:9/events".into()),
        topics: sea_orm::ActiveValue::Set("treasury.*".into()),
        secret_ciphertext: sea_orm::ActiveValue::Set(
            app.state.keys.encrypt("fcw_matrix", id.as_bytes()).unwrap(),
        ),
        encryption_key_id: sea_orm::ActiveValue::Set(app.state.keys.id().to_owned()),
        created_by: sea_orm::ActiveValue::Set("matrix".into()),
        created_at: sea_orm::ActiveValue::Set(chrono::Utc::now()),
        revoked_at: sea_orm::ActiveValue::Set(None),
    })
    .exec_without_returning(&app.state.db)
    .await
    .unwrap();
    id
}

/// Eleven digits that differ from call to call.
fn rand_digits() -> u64 {
    (Uuid::new_v4().as_u128() % 100_000_000_000) as u64
}

/// A new instruction of the maker, paid from `company`'s sub-account.
async fn instruction(app: &TestApp, company: &str) -> Uuid {
    let ctx = app.state.treasury.as_ref().expect("treasury");
    let sub = entities::treasury_sub_accounts::Entity::find_by_id(app.world.sub_accounts[company])
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let master =
        entities::treasury_sub_accounts::Entity::find_by_id(app.world.sub_accounts["master"])
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
    let party = |name: &str, number: &str, bank: &str, ledger_account: Uuid| {
        treasury::store::Counterparty {
            ledger_account,
            name: name.to_owned(),
            account: treasury::domain::AccountNumber::new(number).unwrap(),
            bank: treasury::domain::BankCode::new(bank).unwrap(),
        }
    };
    let e2e = format!("MX{}", Uuid::new_v4().simple());
    let new = treasury::store::NewInstruction {
        kind: treasury::domain::InstructionKind::Payout,
        end_to_end_id: treasury::domain::EndToEndId::new(e2e.clone()).unwrap(),
        debtor: party(
            &sub.holder_name,
            &sub.account_number,
            &sub.bank_code,
            sub.ledger_account_id,
        ),
        creditor: party(
            "Depot",
            "6222020200000000999",
            "102100099996",
            master.ledger_account_id,
        ),
        amount: ledger::Money::new(rust_decimal_macros::dec!(1.00), ledger::Currency::CNY).unwrap(),
        purpose: None,
        remittance: None,
        requested_execution_date: chrono::Utc::now().date_naive(),
        releases: None,
        lines: Vec::new(),
    };
    ctx.executor
        .instructions
        .create(
            new,
            &treasury::approval::UserId("treasury-maker".into()),
            &e2e,
        )
        .await
        .unwrap()
        .id
}

/// The station of a retail case about `org_key`: A's for A's side of the tree (and for
/// callers whose role is refused before the station matters), B's for B's side.
fn station_of(org_key: &str) -> &'static str {
    match org_key {
        "brand-b" | "company-b" | "station-b1" | "fleet-g" | "partner-q" => "station-b1",
        _ => "station-a1",
    }
}

/// A new till of `station`, with its key, and optionally an open shift.
async fn fresh_till(app: &TestApp, station: &str, shift: bool) -> (Uuid, String) {
    let station_id = app.world.orgs[station];
    let registered = payments::stations::register_terminal(
        &app.state.db,
        station_id,
        &format!("t-{}", &Uuid::new_v4().simple().to_string()[..12]),
        "matrix till",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    if shift {
        payments::shifts::open_shift(
            &app.state.db,
            &registered.terminal,
            app.world.users[&Cashier],
            "cashier",
            ledger::Money::from_minor(0, ledger::Currency::CNY),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    (registered.terminal.id, registered.key)
}

/// A card number no other case uses.
fn fresh_card_no() -> String {
    let digits: String = Uuid::new_v4()
        .as_u128()
        .to_string()
        .chars()
        .take(16)
        .collect();
    format!("{digits:0>16}")
}

/// A member card issued at the till (through the store, as the API does): named to
/// 13800138000 when `named`. Returns its number.
async fn member_card(app: &TestApp, terminal: Uuid, named: bool) -> String {
    let terminal = payments::stations::terminal(&app.state.db, terminal)
        .await
        .unwrap()
        .unwrap();
    let station = entities::organisations::Entity::find_by_id(terminal.station_id)
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    let issuer = station.parent_id.unwrap();
    let card = payments::cards::NewCard {
        card_no: fresh_card_no(),
        kind: if named {
            payments::cards::CardKind::Named
        } else {
            payments::cards::CardKind::Anonymous
        },
        holder_name: named.then(|| "Li Lei".to_owned()),
        holder_phone: named.then(|| "13800138000".to_owned()),
    };
    payments::cards::issue_card(
        &app.state.ledger,
        issuer,
        &issuer.to_string(),
        &terminal,
        "cashier",
        &card,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    card.card_no
}

/// A cash payment taken on the till (through the store, as the API does).
async fn cash_payment(app: &TestApp, terminal: Uuid, order: &str) -> entities::pos_payments::Model {
    let terminal = payments::stations::terminal(&app.state.db, terminal)
        .await
        .unwrap()
        .unwrap();
    let shift = payments::shifts::current_shift(&app.state.db, terminal.id)
        .await
        .unwrap()
        .unwrap();
    let amount = ledger::Money::from_minor(1_000, ledger::Currency::CNY);
    let new = payments::sales::NewPayment {
        terminal_order_no: order.into(),
        method: payments::model::Method::Cash,
        amount,
        sale: payments::sales::Sale {
            lines: vec![payments::sales::SaleLine::Item {
                name: "water".into(),
                quantity: 1,
                amount: amount.amount(),
            }],
        },
        payer_code: None,
    };
    let txn = entities::db::begin_write(&app.state.db).await.unwrap();
    let created =
        payments::sales::create_payment(&txn, &terminal, &shift, &new, None, chrono::Utc::now())
            .await
            .unwrap();
    txn.commit().await.unwrap();
    let payment = created.payment().clone();
    payments::sales::book_cash_sale(&app.state.ledger, &payment)
        .await
        .unwrap();
    let outcome = payments::sales::Outcome {
        status: "succeeded".into(),
        channel: None,
        channel_txn_id: None,
        out_trade_no: None,
        fee_minor: None,
        reason: "cash".into(),
    };
    payments::sales::record_outcome(
        &app.state.db,
        &payment.payment_no,
        &outcome,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    payment
}

/// A refund request of a sale of a closed shift, waiting for the manager.
async fn refund_request(app: &TestApp, station: &str) -> Uuid {
    let (till, _) = fresh_till(app, station, true).await;
    let payment = cash_payment(app, till, "R-1").await;
    let payment = payments::sales::payment_by_no(&app.state.db, &payment.payment_no)
        .await
        .unwrap()
        .unwrap();
    let ctx = app.state.payments.as_ref().unwrap();
    let txn = entities::db::begin_write(&app.state.db).await.unwrap();
    let created = payments::sales::request_refund(
        &txn,
        &payment,
        &payments::sales::NewRefund {
            terminal_refund_no: "RF-1".into(),
            amount: ledger::Money::from_minor(500, ledger::Currency::CNY),
            reason: "matrix".into(),
            requested_by: "cashier".into(),
        },
        None,
        true,
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let payments::sales::RefundCreated::New(refund) = created else {
        panic!("{created:?}");
    };
    ctx.engine
        .start_in::<workflows::refund_approval::RefundApproval>(
            &txn,
            &refund.refund_no,
            workflows::refund_approval::RefundInput {
                refund_no: refund.refund_no.clone(),
                needs_approval: true,
                approval_deadline_ms: 600_000,
                activity_timeout_ms: 1_000,
            },
        )
        .await
        .unwrap();
    txn.commit().await.unwrap();
    refund.id
}

/// The call of a retail case at `station`.
async fn retail_case(app: &TestApp, op: &str, station: &str) -> Call {
    let id = app.world.orgs[station];
    match op {
        "GET /v1/stations/{station_id}/terminals" => {
            Call::get(format!("/v1/stations/{id}/terminals"))
        }
        "POST /v1/stations/{station_id}/terminals" => Call::post(
            format!("/v1/stations/{id}/terminals"),
            Some(
                json!({"code": format!("t-{}", &Uuid::new_v4().simple().to_string()[..12]), "name": "Till"}),
            ),
        ),
        "GET /v1/stations/{station_id}/channels" => {
            Call::get(format!("/v1/stations/{id}/channels"))
        }
        "POST /v1/stations/{station_id}/channels" => Call::post(
            format!("/v1/stations/{id}/channels"),
            Some(json!({
                "channel_id": "card-acquirer-b",
                "methods": ["bank_card"],
                "fee_rate": "0.005",
                "fee_mode": "billed_later",
                "single_limit": "50000.00",
                "daily_limit": "5000000.00",
                "priority": 2,
                "enabled": true
            })),
        ),
        "GET /v1/stations/{station_id}/shifts" => Call::get(format!("/v1/stations/{id}/shifts")),
        "GET /v1/stations/{station_id}/shifts/{shift_id}/receipt" => {
            let (till, _) = fresh_till(app, station, true).await;
            let shift = payments::shifts::current_shift(&app.state.db, till)
                .await
                .unwrap()
                .unwrap();
            Call::get(format!("/v1/stations/{id}/shifts/{}/receipt", shift.id))
        }
        "GET /v1/stations/{station_id}/refunds" => Call::get(format!("/v1/stations/{id}/refunds")),
        "GET /v1/stations/{station_id}/reconciliation-exceptions" => {
            Call::get(format!("/v1/stations/{id}/reconciliation-exceptions"))
        }
        "GET /v1/terminals/{terminal_id}/day-summary" => {
            let (till, key) = fresh_till(app, station, false).await;
            Call::get(format!("/v1/terminals/{till}/day-summary")).at_till(&key)
        }
        "POST /v1/stations/{station_id}/refunds/{refund_id}/approve"
        | "POST /v1/stations/{station_id}/refunds/{refund_id}/reject" => {
            let refund = refund_request(app, station).await;
            let verb = if op.ends_with("approve") {
                "approve"
            } else {
                "reject"
            };
            Call::post(
                format!("/v1/stations/{id}/refunds/{refund}/{verb}"),
                Some(json!({"note": "matrix"})),
            )
        }
        "POST /v1/terminals/{terminal_id}/shifts" => {
            let (till, key) = fresh_till(app, station, false).await;
            Call::post(
                format!("/v1/terminals/{till}/shifts"),
                Some(json!({"opening_float": "100.00"})),
            )
            .at_till(&key)
        }
        "GET /v1/terminals/{terminal_id}/shifts/current" => {
            let (till, key) = fresh_till(app, station, true).await;
            Call::get(format!("/v1/terminals/{till}/shifts/current")).at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/shifts/current/close" => {
            let (till, key) = fresh_till(app, station, true).await;
            Call::post(
                format!("/v1/terminals/{till}/shifts/current/close"),
                Some(json!({"declared_cash": "0.00"})),
            )
            .at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/payments" => {
            let (till, key) = fresh_till(app, station, true).await;
            Call::post(
                format!("/v1/terminals/{till}/payments"),
                Some(json!({
                    "order_no": "M-1",
                    "method": "cash",
                    "amount": "10.00",
                    "lines": [{"kind": "item", "name": "water", "quantity": 1, "amount": "10.00"}]
                })),
            )
            .at_till(&key)
        }
        "GET /v1/terminals/{terminal_id}/payments/{order_no}" => {
            let (till, key) = fresh_till(app, station, true).await;
            cash_payment(app, till, "G-1").await;
            Call::get(format!("/v1/terminals/{till}/payments/G-1")).at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/payments/{order_no}/cancel" => {
            let (till, key) = fresh_till(app, station, true).await;
            pending_card_payment(app, till, "C-1").await;
            Call::post(format!("/v1/terminals/{till}/payments/C-1/cancel"), None).at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/refunds" => {
            let (till, key) = fresh_till(app, station, true).await;
            let payment = cash_payment(app, till, "F-1").await;
            Call::post(
                format!("/v1/terminals/{till}/refunds"),
                Some(json!({
                    "payment_no": payment.payment_no,
                    "refund_no": "RF-1",
                    "amount": "1.00",
                    "reason": "matrix"
                })),
            )
            .at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/member-cards" => {
            let (till, key) = fresh_till(app, station, false).await;
            Call::post(
                format!("/v1/terminals/{till}/member-cards"),
                Some(json!({"card_no": fresh_card_no(), "kind": "anonymous"})),
            )
            .at_till(&key)
        }
        "GET /v1/terminals/{terminal_id}/member-cards/{card_no}" => {
            let (till, key) = fresh_till(app, station, false).await;
            let card = member_card(app, till, false).await;
            Call::get(format!("/v1/terminals/{till}/member-cards/{card}")).at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/member-cards/{card_no}/top-ups" => {
            let (till, key) = fresh_till(app, station, true).await;
            let card = member_card(app, till, false).await;
            Call::post(
                format!("/v1/terminals/{till}/member-cards/{card}/top-ups"),
                Some(json!({"order_no": "TU-1", "amount": "100.00"})),
            )
            .at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/member-cards/{card_no}/register" => {
            let (till, key) = fresh_till(app, station, false).await;
            let card = member_card(app, till, false).await;
            Call::post(
                format!("/v1/terminals/{till}/member-cards/{card}/register"),
                Some(json!({"holder_name": "Li Lei", "holder_phone": "13800138000"})),
            )
            .at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/member-cards/{card_no}/block" => {
            let (till, key) = fresh_till(app, station, false).await;
            let card = member_card(app, till, true).await;
            Call::post(
                format!("/v1/terminals/{till}/member-cards/{card}/block"),
                Some(json!({"holder_phone": "13800138000", "reason": "lost"})),
            )
            .at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/member-cards/{card_no}/unblock" => {
            let (till, key) = fresh_till(app, station, false).await;
            let card = member_card(app, till, true).await;
            Call::post(
                format!("/v1/terminals/{till}/member-cards/{card}/unblock"),
                Some(json!({"reason": "found"})),
            )
            .at_till(&key)
        }
        "GET /v1/stations/{station_id}/partner-contracts" => {
            Call::get(format!("/v1/stations/{id}/partner-contracts"))
        }
        "POST /v1/stations/{station_id}/partner-contracts" => Call::post(
            format!("/v1/stations/{id}/partner-contracts"),
            Some(json!({
                "partner_id": new_partner(app).await,
                "commission_rate": "0.005",
                "settlement_days": 1,
                "single_limit": "3000.00",
            })),
        ),
        "POST /v1/stations/{station_id}/partner-contracts/{contract_id}/disable" => {
            let signed = contract(app, new_partner(app).await, id).await;
            Call::post(
                format!("/v1/stations/{id}/partner-contracts/{}/disable", signed.id),
                Some(json!({"reason": "matrix"})),
            )
        }
        "POST /v1/stations/{station_id}/partner-contracts/{contract_id}/enable" => {
            let signed = contract(app, new_partner(app).await, id).await;
            Call::post(
                format!("/v1/stations/{id}/partner-contracts/{}/enable", signed.id),
                None,
            )
        }
        "GET /v1/stations/{station_id}/partner-contracts/{contract_id}/settlements" => {
            let signed = contract(app, new_partner(app).await, id).await;
            Call::get(format!(
                "/v1/stations/{id}/partner-contracts/{}/settlements",
                signed.id
            ))
        }
        "POST /v1/stations/{station_id}/partner-contracts/{contract_id}/settlements" => {
            let signed = contract(app, new_partner(app).await, id).await;
            Call::post(
                format!(
                    "/v1/stations/{id}/partner-contracts/{}/settlements",
                    signed.id
                ),
                Some(json!({
                    "reference": format!("M{}", Uuid::new_v4().simple()),
                    "amount": "10.00",
                    "received_on": "2026-11-01",
                })),
            )
        }
        "POST /v1/stations/{station_id}/partner-contracts/{contract_id}/settlements/{settlement_id}/reverse" =>
        {
            let signed = contract(app, new_partner(app).await, id).await;
            let settled = settlement(app, &signed).await;
            Call::post(
                format!(
                    "/v1/stations/{id}/partner-contracts/{}/settlements/{}/reverse",
                    signed.id, settled.id
                ),
                Some(json!({"reason": "matrix"})),
            )
        }
        "GET /v1/terminals/{terminal_id}/partner-orders" => {
            let (till, key) = fresh_till(app, station, true).await;
            Call::get(format!("/v1/terminals/{till}/partner-orders")).at_till(&key)
        }
        "POST /v1/terminals/{terminal_id}/partner-orders/{payment_no}/printed" => {
            let (till, key) = fresh_till(app, station, true).await;
            let partner = if station == "station-a1" {
                "partner-p"
            } else {
                "partner-q"
            };
            let payment = partner_order(
                app,
                partner,
                till,
                &format!("MX-{}", Uuid::new_v4().simple()),
            )
            .await;
            Call::post(
                format!(
                    "/v1/terminals/{till}/partner-orders/{}/printed",
                    payment.payment_no
                ),
                None,
            )
            .at_till(&key)
        }
        other => panic!("no retail case for {other}"),
    }
}

/// An open reconciliation exception about one of `station`'s payments.
async fn recon_exception(app: &TestApp, station: &str) -> Uuid {
    let id = Uuid::now_v7();
    let now = chrono::Utc::now();
    entities::pos_recon_exceptions::Entity::insert(entities::pos_recon_exceptions::ActiveModel {
        id: sea_orm::ActiveValue::Set(id),
        channel_id: sea_orm::ActiveValue::Set("wxpay-direct".into()),
        statement_day: sea_orm::ActiveValue::Set("2026-11-22".into()),
        subject: sea_orm::ActiveValue::Set("payment".into()),
        kind: sea_orm::ActiveValue::Set("missing_there".into()),
        station_id: sea_orm::ActiveValue::Set(Some(app.world.orgs[station])),
        out_trade_no: sea_orm::ActiveValue::Set(format!("X{}-1", Uuid::new_v4().simple())),
        refund_no: sea_orm::ActiveValue::Set(String::new()),
        payment_no: sea_orm::ActiveValue::Set(None),
        channel_txn_id: sea_orm::ActiveValue::Set(None),
        our_amount_minor: sea_orm::ActiveValue::Set(Some(1_000)),
        their_amount_minor: sea_orm::ActiveValue::Set(None),
        currency: sea_orm::ActiveValue::Set("CNY".into()),
        detail: sea_orm::ActiveValue::Set("matrix".into()),
        status: sea_orm::ActiveValue::Set("open".into()),
        resolution_note: sea_orm::ActiveValue::Set(None),
        resolved_by: sea_orm::ActiveValue::Set(None),
        created_at: sea_orm::ActiveValue::Set(now),
        updated_at: sea_orm::ActiveValue::Set(now),
        resolved_at: sea_orm::ActiveValue::Set(None),
    })
    .exec_without_returning(&app.state.db)
    .await
    .unwrap();
    id
}

/// A card payment under way (its workflow started, no worker running).
async fn pending_card_payment(app: &TestApp, terminal: Uuid, order: &str) {
    let ctx = app.state.payments.as_ref().unwrap();
    let terminal = payments::stations::terminal(&app.state.db, terminal)
        .await
        .unwrap()
        .unwrap();
    let shift = payments::shifts::current_shift(&app.state.db, terminal.id)
        .await
        .unwrap()
        .unwrap();
    let amount = ledger::Money::from_minor(1_000, ledger::Currency::CNY);
    let new = payments::sales::NewPayment {
        terminal_order_no: order.into(),
        method: payments::model::Method::BankCard,
        amount,
        sale: payments::sales::Sale {
            lines: vec![payments::sales::SaleLine::Item {
                name: "water".into(),
                quantity: 1,
                amount: amount.amount(),
            }],
        },
        payer_code: Some("6222000011112222".into()),
    };
    let decision = payments::routing::RouteDecision {
        at: chrono::Utc::now(),
        method: payments::model::Method::BankCard,
        amount,
        candidates: vec![],
        excluded: vec![],
    };
    let txn = entities::db::begin_write(&app.state.db).await.unwrap();
    let created = payments::sales::create_payment(
        &txn,
        &terminal,
        &shift,
        &new,
        Some(&decision),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    ctx.engine
        .start_in::<workflows::pos_payment::PosPayment>(
            &txn,
            &created.payment().payment_no,
            workflows::pos_payment::PosPaymentInput {
                payment: payments::flow::PaymentInput {
                    payment_no: created.payment().payment_no.clone(),
                    method: payments::model::Method::BankCard,
                    amount,
                },
                decision,
                policy: ctx.flow,
                description: "matrix".into(),
                payer_code: new.payer_code.clone(),
                activity_timeout_ms: 1_000,
            },
        )
        .await
        .unwrap();
    txn.commit().await.unwrap();
}

/// A new partner organisation, signed onto nothing.
async fn new_partner(app: &TestApp) -> Uuid {
    api::directory::create_organisation(
        &app.state.db,
        api::directory::NewOrganisation {
            id: Uuid::now_v7(),
            parent_id: Some(app.world.orgs["root"]),
            kind: api::policy::OrgKind::Partner,
            name: format!("Partner {}", Uuid::new_v4().simple()),
            ledger_owner: None,
        },
    )
    .await
    .unwrap()
    .id
}

/// The partner's contract with the station (signed through the store, as the API does),
/// active, with the station's accounts for the partner open.
/// A transfer of 10.00 recorded on the contract.
async fn settlement(
    app: &TestApp,
    contract: &entities::partner_contracts::Model,
) -> entities::partner_settlements::Model {
    let transfer = payments::partners::NewSettlement {
        reference: format!("M{}", Uuid::new_v4().simple()),
        amount: ledger::Money::new(rust_decimal::Decimal::new(1_000, 2), ledger::Currency::CNY)
            .unwrap(),
        received_on: chrono::NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
    };
    let receipt = app
        .state
        .ledger
        .post_entry(payments::partners::settlement_entry(contract, &transfer, 1))
        .await
        .unwrap();
    let txn = entities::db::begin_write(&app.state.db).await.unwrap();
    let recorded = payments::partners::record_settlement(
        &txn,
        contract,
        &transfer,
        1,
        receipt.entry_id,
        "matrix",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    match recorded {
        payments::partners::Recorded::New(row) => row,
        payments::partners::Recorded::Existing(row) => panic!("a new reference, found {row:?}"),
    }
}

async fn contract(
    app: &TestApp,
    partner: Uuid,
    station: Uuid,
) -> entities::partner_contracts::Model {
    payments::partners::open_partner_accounts(
        &app.state.ledger,
        station,
        &station.to_string(),
        partner,
    )
    .await
    .unwrap();
    let terms = payments::partners::ContractTerms::new(
        rust_decimal::Decimal::ZERO,
        1,
        rust_decimal::Decimal::new(300_000, 2),
    )
    .unwrap();
    let txn = entities::db::begin_write(&app.state.db).await.unwrap();
    let signed = payments::partners::sign_contract(
        &txn,
        station,
        partner,
        &terms,
        "matrix",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    signed.contract
}

/// An order of the partner `partner` pushed to `terminal` (which has an open shift) and
/// booked, through the store as the API does.
async fn partner_order(
    app: &TestApp,
    partner: &str,
    terminal: Uuid,
    order_no: &str,
) -> entities::pos_payments::Model {
    let terminal = payments::stations::terminal(&app.state.db, terminal)
        .await
        .unwrap()
        .unwrap();
    let signed = contract(app, app.world.orgs[partner], terminal.station_id).await;
    let terms = payments::partners::ContractTerms::of(&signed).unwrap();
    let amount = ledger::Money::from_minor(1_000, ledger::Currency::CNY);
    let new = payments::partners::NewPartnerOrder {
        partner_order_no: order_no.into(),
        terminal_id: terminal.id,
        amount,
        sale: payments::sales::Sale {
            lines: vec![payments::sales::SaleLine::Item {
                name: "water".into(),
                quantity: 1,
                amount: amount.amount(),
            }],
        },
        driver_ref: "D-1".into(),
        vehicle_plate: None,
    };
    let txn = entities::db::begin_write(&app.state.db).await.unwrap();
    let shift = payments::shifts::open_shift_in(&txn, terminal.id)
        .await
        .unwrap()
        .unwrap();
    let pushed = payments::partners::push_order(
        &txn,
        &signed,
        &terms,
        &terminal,
        &shift,
        &new,
        partner,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let payments::partners::Pushed::New(order) = pushed else {
        panic!("order {order_no} was taken");
    };
    txn.commit().await.unwrap();
    payments::partners::complete(&app.state.ledger, &order)
        .await
        .unwrap()
}

/// The organisation to put a new user in, below `org_key`: a station, where cashiers are.
fn user_org(org_key: &str) -> &'static str {
    match org_key {
        "root" | "brand-a" | "company-a" | "station-a1" => "station-a1",
        "brand-b" | "company-b" | "station-b1" => "station-b1",
        "fleet-f" => "fleet-f",
        "fleet-g" => "fleet-g",
        "partner-p" => "partner-p",
        "partner-q" => "partner-q",
        other => panic!("unknown organisation {other}"),
    }
}

fn fitting_role(org_key: &str) -> Role {
    match org_key {
        k if k.starts_with("station") => Role::Cashier,
        k if k.starts_with("fleet") => Role::FleetManager,
        k if k.starts_with("partner") => Role::Partner,
        _ => Role::Admin,
    }
}

async fn run_matrix(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut failures = Vec::new();
    let mut cases = 0;
    for row in ROWS {
        for who in Who::ALL {
            for target in [Target::Own, Target::Foreign] {
                let Some((call, overridden)) = case(&app, row.operation, who, target).await else {
                    continue;
                };
                let public = row.operation.starts_with("GET /healthz")
                    || row.operation.starts_with("GET /readyz")
                    || row.operation.starts_with("GET /metrics")
                    || row.operation == "POST /v1/auth/login"
                    || row.operation == "POST /v1/treasury/bank/callbacks"
                    || row.operation == "POST /v1/payments/notifications/{channel_id}";
                let allowed = row.allowed.contains(&who);
                let expected = overridden.unwrap_or(match (allowed, target) {
                    (true, Target::Own) => row.ok,
                    (true, Target::Foreign) => 404,
                    (false, _) => 403,
                });
                // Logout ends the session it is called with: use a fresh one.
                let response = if row.operation == "POST /v1/auth/logout" && who != PartnerKey {
                    let session = api::auth::open_session(
                        &app.state.db,
                        app.world.users[&who],
                        std::time::Duration::from_secs(600),
                    )
                    .await
                    .expect("session");
                    app.client
                        .post(app.url(&call.path))
                        .bearer_auth(session.token)
                        .header("idempotency-key", Uuid::new_v4().to_string())
                        .send()
                        .await
                        .expect("logout")
                } else {
                    app.call((!public).then_some(who), &call).await
                };
                cases += 1;
                let status = response.status().as_u16();
                if status != expected {
                    let body = response.text().await.unwrap_or_default();
                    failures.push(format!(
                        "{} as {who:?} on {target:?}: expected {expected}, got {status}: {body}",
                        row.operation
                    ));
                } else if status >= 400 {
                    let is_problem = response
                        .headers()
                        .get("content-type")
                        .is_some_and(|v| v == "application/problem+json");
                    if !is_problem {
                        failures.push(format!(
                            "{} as {who:?}: {status} is not a problem",
                            row.operation
                        ));
                    }
                }
            }
        }
    }
    assert!(cases > 280, "only {cases} cases ran");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_on_every_route_is_allowed_or_denied_as_the_matrix_says() {
    run_matrix(Backend::Postgres).await;
}

#[test]
fn every_documented_operation_has_a_row_in_the_matrix() {
    let spec = serde_json::to_value(api::openapi()).expect("spec");
    let mut documented = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let rows: Vec<String> = ROWS.iter().map(|r| r.operation.to_owned()).collect();
    for operation in &documented {
        assert!(
            rows.contains(operation),
            "{operation} has no row in the authorisation matrix"
        );
    }
    for row in &rows {
        assert!(
            documented.contains(row),
            "the matrix row {row} is not a documented operation"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cashier_cannot_read_another_stations_accounts_and_cannot_tell_they_exist() {
    let app = spawn_app(Backend::Sqlite).await;
    let other = app.world.accounts["station-b1"];
    let missing = Uuid::now_v7();
    let a = app
        .call(Some(Cashier), &Call::get(format!("/v1/accounts/{other}")))
        .await;
    let b = app
        .call(Some(Cashier), &Call::get(format!("/v1/accounts/{missing}")))
        .await;
    let a = crate::common::expect_problem(a, 404, "not-found").await;
    let b = crate::common::expect_problem(b, 404, "not-found").await;
    assert_eq!(
        a["detail"], b["detail"],
        "another station's account looks like no account"
    );
    let list: serde_json::Value = app
        .call(Some(Cashier), &Call::get("/v1/accounts"))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    // The station's own accounts: the world's, and its retail accounts (sales, fees, cash,
    // bank, one clearing account per channel), and nothing of station B's.
    let mut expected = owned_by(&app, &["station-a1"]).await;
    expected.sort();
    let mut ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
    ids.sort();
    assert!(ids.contains(&app.world.accounts["station-a1"].to_string()));
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_owner_sees_the_accounts_of_the_company_and_its_stations_only() {
    let app = spawn_app(Backend::Postgres).await;
    let list: serde_json::Value = app
        .call(Some(StationOwner), &Call::get("/v1/accounts"))
        .await
        .json()
        .await
        .unwrap();
    let mut ids: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    // The company's mirror of its sub-account at the custodial bank is one of its accounts.
    let sub_account =
        entities::treasury_sub_accounts::Entity::find_by_id(app.world.sub_accounts["company-a"])
            .one(&app.state.db)
            .await
            .unwrap()
            .unwrap();
    let mut expected = owned_by(&app, &["company-a", "station-a1"]).await;
    expected.sort();
    for id in [
        app.world.accounts["company-a"],
        app.world.accounts["station-a1"],
        sub_account.ledger_account_id,
    ] {
        assert!(expected.contains(&id.to_string()));
    }
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_manager_cannot_create_a_station_owner_and_nobody_grants_beyond_their_role() {
    let app = spawn_app(Backend::Sqlite).await;
    let body = |role: &str| {
        json!({
            "organisation_id": app.world.orgs["station-a1"],
            "username": format!("x-{}", Uuid::new_v4().simple()),
            "display_name": "X",
            "role": role,
            "password": PASSWORD,
        })
    };
    let response = app
        .call(
            Some(StationManager),
            &Call::post("/v1/users", Some(body("station_manager"))),
        )
        .await;
    crate::common::expect_problem(response, 403, "forbidden").await;
    let response = app
        .call(
            Some(StationOwner),
            &Call::post("/v1/users", Some(body("admin"))),
        )
        .await;
    crate::common::expect_problem(response, 403, "forbidden").await;
    // A role that does not fit the organisation's kind is a validation problem.
    let response = app
        .call(
            Some(RootAdmin),
            &Call::post("/v1/users", Some(body("fleet_manager"))),
        )
        .await;
    let problem = crate::common::expect_problem(response, 422, "validation").await;
    assert_eq!(problem["errors"][0]["field"], "role");
    let response = app
        .call(
            Some(StationManager),
            &Call::post("/v1/users", Some(body("cashier"))),
        )
        .await;
    assert_eq!(response.status(), 201);
}

/// The ids of every ledger account owned by the organisations `keys`.
async fn owned_by(app: &TestApp, keys: &[&str]) -> Vec<String> {
    use sea_orm::{ColumnTrait, QueryFilter};
    let owners: Vec<String> = keys.iter().map(|k| app.world.orgs[k].to_string()).collect();
    entities::ledger_accounts::Entity::find()
        .filter(entities::ledger_accounts::Column::OwnerOrg.is_in(owners))
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id.to_string())
        .collect()
}

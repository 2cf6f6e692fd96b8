//! `bank_instruction` on the engine, on PostgreSQL and SQLite, against the custodial bank
//! simulator over real HTTP, with the real ledger: approval, the hold, submission, the
//! bank's answers on good and bad days, and the bank's callbacks into the platform.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use ledger::{Currency, Ledger, LedgerConfig, Money, NewAccount, NewEntry, Side};
use rust_decimal_macros::dec;
use testkit::{Backend, TestDb};
use treasury::approval::{ApprovalPolicy, Condition, PolicyConfig, Role, Rule, UserId};
use treasury::bank::{BankClient, BankClientConfig, Incoming};
use treasury::calendar::{BusinessCalendar, CalendarConfig};
use treasury::domain::{AccountNumber, BankCode, EndToEndId, InstructionKind};
use treasury::execution::Executor;
use treasury::planner::TranchePolicy;
use treasury::rails::{Rails, RailsConfig, shanghai};
use treasury::signing::{Signer, Verifier};
use treasury::store::{Clock, Counterparty, InstructionStatus, Instructions, NewInstruction};
use treasury::submission::TransactionState;
use uuid::Uuid;
use workflows::bank_instruction::{
    BankInstruction, BankInstructionInput, SIGNAL_APPROVAL, SIGNAL_BANK_STATUS, SIGNAL_RETURNED,
    Timing, register_activities,
};
use workflows::{Engine, Registry, Status, Workers};

testkit::scenarios!(
    an_approved_transfer_settles_at_the_bank_and_the_hold_posts,
    a_rejection_by_the_bank_voids_the_hold,
    an_answer_lost_after_the_bank_paid_is_found_by_a_query_and_nothing_is_paid_twice,
    a_payment_the_bank_executes_silently_is_found_by_polling,
    a_return_after_settlement_reverses_the_payment,
    a_large_value_payout_at_22_00_waits_for_the_morning_window,
    a_sync_repeated_after_a_crash_asks_the_bank_first_and_never_pays_twice,
    a_30_million_payout_at_22_00_goes_in_6_tranches_of_one_message_when_policy_allows,
    tranches_the_bank_refuses_post_the_hold_in_part_and_release_the_rest,
    a_configured_cap_changes_the_tranches_and_the_bank_enforces_it,
    a_configured_maintenance_window_holds_a_payment_until_it_ends,
    one_tranche_returned_after_settlement_reverses_that_tranche_only,
    a_frozen_amount_cannot_be_paid_out_and_an_unfreeze_restores_it,
    a_batch_of_three_payments_goes_as_one_message_and_settles_line_by_line,
    a_batch_payment_the_bank_refuses_is_released_alone,
);

const BANK: &str = "308584000013";
const OTHER_BANK: &str = "102100099996";
const DEBTOR: &str = "3100000000000001";
const CREDITOR: &str = "3100000000000002";
const OUTSIDE: &str = "6222020200000000099";

fn key_pair() -> (Signer, Verifier) {
    let (private, _) = sim::keys::rsa_pair();
    let signer = Signer::from_pem(&private.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let verifier = signer.verifier().unwrap();
    (signer, verifier)
}

fn rails() -> Rails {
    rails_from(RailsConfig::default())
}

fn rails_from(config: RailsConfig) -> Rails {
    Rails::new(
        config,
        BusinessCalendar::new(CalendarConfig {
            holidays: vec![],
            makeup_working_days: vec![],
        })
        .unwrap(),
    )
    .unwrap()
}

/// What a world differs in.
struct Setup {
    fixed: Option<DateTime<Utc>>,
    /// The debtor sub-account's balance at the bank, in fen.
    bank_debtor_fen: i64,
    /// The rails of both the platform and the bank, as a configuration file gives them.
    rails_json: Option<&'static str>,
}

impl Setup {
    fn new(fixed: Option<DateTime<Utc>>) -> Self {
        Setup {
            fixed,
            bank_debtor_fen: 5_000_000_000,
            rails_json: None,
        }
    }
}

fn policy() -> ApprovalPolicy {
    ApprovalPolicy::new(PolicyConfig {
        rules: vec![Rule {
            name: "every instruction".into(),
            when: Condition::default(),
            steps: vec![treasury::approval::Step {
                role: Role::new("treasury_checker"),
                approvals: 1,
                eligible: vec![],
            }],
        }],
        valid_for_minutes: 240,
        tranches: Default::default(),
    })
    .unwrap()
}

/// The platform's side of the bank's callbacks: verify, apply, tell the workflow.
async fn callback(
    executor: Arc<Executor>,
    engine: Engine,
    bank: Verifier,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers
        .get(treasury::bank::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let Ok(incoming) = treasury::bank::verify_callback(&bank, &body, signature) else {
        return StatusCode::BAD_REQUEST;
    };
    let signals: Vec<(Uuid, &str, serde_json::Value)> = match incoming {
        Incoming::StatusReport(report) => match executor.receive_report(&report).await {
            Ok(id) => id
                .map(|id| (id, SIGNAL_BANK_STATUS, serde_json::Value::Null))
                .into_iter()
                .collect(),
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR,
        },
        Incoming::Notification(notification) => {
            match executor.receive_notification(&notification).await {
                Ok(returns) => returns
                    .into_iter()
                    .map(|(id, reason)| {
                        (id, SIGNAL_RETURNED, serde_json::json!({ "reason": reason }))
                    })
                    .collect(),
                Err(_) => return StatusCode::INTERNAL_SERVER_ERROR,
            }
        }
    };
    for (id, name, payload) in signals {
        // A finished instance needs no word: the store already has the outcome.
        let _ = engine
            .signal_by_key(
                <BankInstruction as workflows::Workflow>::NAME,
                &id.to_string(),
                name,
                payload,
            )
            .await;
    }
    StatusCode::NO_CONTENT
}

struct World {
    engine: Engine,
    executor: Arc<Executor>,
    _workers: Workers,
    ledger: Ledger,
    instructions: Instructions,
    bank: sim::bank::BankSimHandle,
    debtor: Uuid,
    creditor: Uuid,
    master: Uuid,
    _callbacks: tokio::task::JoinHandle<()>,
    _db: TestDb,
}

async fn world(backend: Backend, fixed: Option<DateTime<Utc>>) -> World {
    world_with(backend, Setup::new(fixed)).await
}

async fn world_with(backend: Backend, setup: Setup) -> World {
    let fixed = setup.fixed;
    let configured = || match setup.rails_json {
        Some(json) => rails_from(RailsConfig::from_json(json).unwrap()),
        None => rails(),
    };
    let db = TestDb::fresh(backend).await;
    let ledger = Ledger::start(
        db.db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );
    let master = ledger
        .create_account(NewAccount::new(
            "platform",
            "bank:master",
            "Master account at the custodial bank",
            Currency::CNY,
            Side::Debit,
        ))
        .await
        .unwrap();
    let sub = |owner: &str, number: &str| {
        NewAccount::new(
            owner,
            format!("bank:sub:{number}"),
            format!("Sub-account {number}"),
            Currency::CNY,
            Side::Credit,
        )
        .debits_must_not_exceed_credits()
    };
    let debtor = ledger
        .create_account(sub("station-co-1", DEBTOR))
        .await
        .unwrap();
    let creditor = ledger
        .create_account(sub("depot-1", CREDITOR))
        .await
        .unwrap();
    ledger
        .post_entry(NewEntry::transfer(
            "fund",
            "test",
            master.id,
            debtor.id,
            dec!(50000000),
            Currency::CNY,
        ))
        .await
        .unwrap();

    let (platform_signer, platform_verifier) = key_pair();
    let (bank_signer, bank_verifier) = key_pair();
    let mut config = sim::bank::BankSimConfig::new(bank_signer, platform_verifier, configured());
    config.accounts = vec![
        (
            AccountNumber::new(DEBTOR).unwrap(),
            Money::from_minor(setup.bank_debtor_fen, Currency::CNY),
        ),
        (
            AccountNumber::new(CREDITOR).unwrap(),
            Money::from_minor(0, Currency::CNY),
        ),
    ];
    config.callback_delay = Duration::from_millis(50);
    config.return_delay = Duration::from_millis(200);
    config.tick = Duration::from_millis(100);

    // Without a fixed time, the clocks run from a working day's morning, when every rail is
    // open, so that no scenario depends on the hour or the day it runs at.
    let started = Utc::now();
    let clock: Clock = match fixed {
        Some(at) => Arc::new(move || at),
        None => Arc::new(move || wednesday_10_00() + (Utc::now() - started)),
    };
    let instructions = Instructions::new(ledger.clone(), policy(), clock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback_url = format!("http://{}/bank/callbacks", listener.local_addr().unwrap());
    config.callback_url = Some(callback_url);
    let bank = sim::bank::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    match fixed {
        Some(at) => bank.set_clock(at),
        None => bank.set_running_clock(wednesday_10_00()),
    }
    let client = BankClient::new(
        BankClientConfig {
            request_timeout: Duration::from_millis(800),
            ..BankClientConfig::new(bank.base_url())
        },
        platform_signer.clone(),
        bank_verifier.clone(),
    )
    .unwrap();
    let executor = Arc::new(Executor {
        instructions: instructions.clone(),
        rails: Arc::new(configured()),
        bank: client,
        signer: platform_signer,
        clock,
        initiating_party: "Forecourt Platform".into(),
    });
    let registry = register_activities(
        Registry::default().workflow::<BankInstruction>(),
        executor.clone(),
    );
    let engine = Engine::new(db.db.clone(), registry);
    let workers = Workers::spawn(&engine, 2, 2);

    let (e, en, v) = (executor.clone(), engine.clone(), bank_verifier);
    let app = axum::Router::new().route(
        "/bank/callbacks",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            callback(e.clone(), en.clone(), v.clone(), headers, body)
        }),
    );
    let callbacks = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    World {
        engine,
        executor,
        _workers: workers,
        ledger,
        instructions,
        bank,
        debtor: debtor.id,
        creditor: creditor.id,
        master: master.id,
        _callbacks: callbacks,
        _db: db,
    }
}

fn timing() -> Timing {
    Timing {
        approval_poll_ms: 500,
        approval_deadline_ms: 60_000,
        status_poll_ms: 200,
        status_poll_max_ms: 1_000,
        return_window_ms: 1_500,
        activity_timeout_ms: 5_000,
    }
}

impl World {
    /// A maker's instruction, its workflow, and one checker's approval.
    async fn instruct(&self, e2e: &str, fen: i64, payout: bool, date: NaiveDate) -> Uuid {
        let creditor = if payout {
            Counterparty {
                ledger_account: self.master,
                name: "Sinopec Depot No. 7".into(),
                account: AccountNumber::new(OUTSIDE).unwrap(),
                bank: BankCode::new(OTHER_BANK).unwrap(),
            }
        } else {
            Counterparty {
                ledger_account: self.creditor,
                name: "Depot One Ltd".into(),
                account: AccountNumber::new(CREDITOR).unwrap(),
                bank: BankCode::new(BANK).unwrap(),
            }
        };
        let new = NewInstruction {
            kind: if payout {
                InstructionKind::Payout
            } else {
                InstructionKind::SubAccountTransfer
            },
            end_to_end_id: EndToEndId::new(e2e).unwrap(),
            debtor: Counterparty {
                ledger_account: self.debtor,
                name: "Huaxin Station Co".into(),
                account: AccountNumber::new(DEBTOR).unwrap(),
                bank: BankCode::new(BANK).unwrap(),
            },
            creditor,
            amount: Money::from_minor(fen, Currency::CNY),
            purpose: Some("SUPP".into()),
            remittance: Some(format!("fuel purchase {e2e}")),
            requested_execution_date: date,
            releases: None,
            lines: Vec::new(),
        };
        self.run(new).await
    }

    /// Creates an instruction, starts its workflow and has one checker approve it.
    async fn run(&self, new: NewInstruction) -> Uuid {
        let maker = UserId("maker-li".into());
        let key = format!("key-{}", new.end_to_end_id);
        let instruction = self.instructions.create(new, &maker, &key).await.unwrap();
        let input = BankInstructionInput {
            instruction_id: instruction.id,
            timing: timing(),
        };
        self.engine
            .start::<BankInstruction>(&instruction.id.to_string(), input)
            .await
            .unwrap();
        self.instructions
            .approve(
                instruction.id,
                &UserId("checker-wang".into()),
                &[Role::new("treasury_checker")],
            )
            .await
            .unwrap();
        self.engine
            .signal_by_key(
                "bank_instruction",
                &instruction.id.to_string(),
                SIGNAL_APPROVAL,
                serde_json::Value::Null,
            )
            .await
            .unwrap();
        instruction.id
    }

    /// An approved instruction with no workflow.
    async fn instruct_without_workflow(&self, e2e: &str, fen: i64) -> Uuid {
        let new = NewInstruction {
            kind: InstructionKind::SubAccountTransfer,
            end_to_end_id: EndToEndId::new(e2e).unwrap(),
            debtor: Counterparty {
                ledger_account: self.debtor,
                name: "Huaxin Station Co".into(),
                account: AccountNumber::new(DEBTOR).unwrap(),
                bank: BankCode::new(BANK).unwrap(),
            },
            creditor: Counterparty {
                ledger_account: self.creditor,
                name: "Depot One Ltd".into(),
                account: AccountNumber::new(CREDITOR).unwrap(),
                bank: BankCode::new(BANK).unwrap(),
            },
            amount: Money::from_minor(fen, Currency::CNY),
            purpose: None,
            remittance: None,
            requested_execution_date: today(),
            releases: None,
            lines: Vec::new(),
        };
        let instruction = self
            .instructions
            .create(new, &UserId("maker-li".into()), &format!("key-{e2e}"))
            .await
            .unwrap();
        self.instructions
            .approve(
                instruction.id,
                &UserId("checker-wang".into()),
                &[Role::new("treasury_checker")],
            )
            .await
            .unwrap();
        instruction.id
    }

    async fn finished(&self, id: Uuid) -> workflows::Instance {
        for _ in 0..600 {
            let instance = self.instance(id).await;
            if instance.status != Status::Running {
                return instance;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("instruction {id} did not finish");
    }

    async fn instance(&self, id: Uuid) -> workflows::Instance {
        self.engine
            .instance_by_key("bank_instruction", &id.to_string())
            .await
            .unwrap()
            .expect("the instruction's workflow")
    }

    async fn posted(&self, account: Uuid) -> Money {
        self.ledger.balance(account).await.unwrap().posted
    }

    async fn available(&self, account: Uuid) -> Money {
        self.ledger.balance(account).await.unwrap().available
    }

    fn at_bank(&self, account: &str) -> Money {
        self.bank
            .balance(&AccountNumber::new(account).unwrap())
            .unwrap()
    }
}

/// The day the running clocks start on (see [`world_with`]).
fn today() -> NaiveDate {
    wednesday()
}

fn cny(fen: i64) -> Money {
    Money::from_minor(fen, Currency::CNY)
}

async fn an_approved_transfer_settles_at_the_bank_and_the_hold_posts(backend: Backend) {
    let w = world(backend, None).await;
    let id = w.instruct("E2E-SETTLE-1", 12_345_678, false, today()).await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    assert_eq!(
        w.instructions.get(id).await.unwrap().status,
        InstructionStatus::Settled
    );
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000 - 12_345_678));
    assert_eq!(w.posted(w.creditor).await, cny(12_345_678));
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000 - 12_345_678));
    assert_eq!(w.at_bank(CREDITOR), cny(12_345_678));
    assert_eq!(w.bank.counters().payments_executed, 1);
}

async fn a_rejection_by_the_bank_voids_the_hold(backend: Backend) {
    let w = world(backend, None).await;
    w.bank.set(|b| b.reject_next.push("AM04".into()));
    let id = w.instruct("E2E-REJECT-1", 700_000, false, today()).await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    let instruction = w.instructions.get(id).await.unwrap();
    assert_eq!(instruction.status, InstructionStatus::Rejected);
    let (by, reason) = instruction.rejection.unwrap();
    assert_eq!(by, "bank");
    assert!(reason.contains("AM04"), "{reason}");
    assert_eq!(
        w.available(w.debtor).await,
        cny(5_000_000_000),
        "the hold is released"
    );
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000));
}

async fn an_answer_lost_after_the_bank_paid_is_found_by_a_query_and_nothing_is_paid_twice(
    backend: Backend,
) {
    let w = world(backend, None).await;
    // The bank pays, its answer never arrives, and no callback tells either: only a query
    // can find out, and a blind resend would pay twice if the bank did not refuse it.
    w.bank.set(|b| {
        b.drop_response_next = 1;
        b.silent_next = 1;
    });
    let id = w.instruct("E2E-LOST-1", 2_500_000, false, today()).await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    assert_eq!(
        w.instructions.get(id).await.unwrap().status,
        InstructionStatus::Settled
    );
    let counters = w.bank.counters();
    assert_eq!(counters.payments_executed, 1, "paid once: {counters:?}");
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000 - 2_500_000));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000 - 2_500_000));
    assert!(counters.status_queries >= 1, "{counters:?}");
    let unknown = instance
        .history
        .iter()
        .any(|h| h.reason.contains("outcome unknown"));
    assert!(
        unknown,
        "the lost answer was an unknown outcome: {instance:#?}"
    );
}

async fn a_payment_the_bank_executes_silently_is_found_by_polling(backend: Backend) {
    let w = world(backend, None).await;
    w.bank.set(|b| b.silent_next = 1);
    let id = w.instruct("E2E-SILENT-1", 90_000, false, today()).await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    assert_eq!(
        w.instructions.get(id).await.unwrap().status,
        InstructionStatus::Settled
    );
    assert_eq!(w.bank.counters().payments_executed, 1);
    assert!(w.bank.counters().status_queries >= 1);
}

async fn a_return_after_settlement_reverses_the_payment(backend: Backend) {
    let w = world(backend, None).await;
    w.bank.set(|b| b.return_next.push("AC04".into()));
    let id = w.instruct("E2E-RETURN-1", 330_000, false, today()).await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    let instruction = w.instructions.get(id).await.unwrap();
    assert_eq!(instruction.status, InstructionStatus::Returned);
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000));
    assert_eq!(w.posted(w.creditor).await, cny(0));
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000));
    let history = w.instructions.history(id).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.event == "returned" && e.detail.to_string().contains("AC04")),
        "{history:#?}"
    );
}

async fn a_large_value_payout_at_22_00_waits_for_the_morning_window(backend: Backend) {
    // Wednesday 2026-11-25, 22:00 in Shanghai: the large-value system closed at 17:00.
    let evening = shanghai(
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
    )
    .unwrap();
    let w = world(backend, Some(evening)).await;
    let id = w
        .instruct(
            "E2E-LVPS-1",
            3_000_000_000,
            true,
            NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        )
        .await;
    for _ in 0..400 {
        let instance = w.instance(id).await;
        if instance.state["phase"]["phase"] == "waiting_for_window" {
            assert_eq!(
                instance.state["phase"]["until"],
                "2026-11-26T08:30:00+08:00"
            );
            assert_eq!(w.bank.counters().messages_received, 0, "nothing sent");
            assert_eq!(
                w.available(w.debtor).await,
                cny(5_000_000_000 - 3_000_000_000),
                "the funds are held meanwhile"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the payout did not wait for the window");
}

async fn a_sync_repeated_after_a_crash_asks_the_bank_first_and_never_pays_twice(backend: Backend) {
    let w = world(backend, None).await;
    // Approved, but the workflow is not told: the test plays the worker itself.
    let e2e = "E2E-CRASH-1";
    let id = w.instruct_without_workflow(e2e, 4_200_000).await;
    w.bank.set(|b| {
        b.drop_response_next = 1;
        b.silent_next = 1;
    });
    let first = w.executor.sync(id).await.unwrap();
    assert!(
        matches!(first, treasury::execution::BankProgress::Unknown { .. }),
        "{first:?}"
    );
    // The worker dies here and another runs the step again, twice for good measure.
    for _ in 0..2 {
        let again = w.executor.sync(id).await.unwrap();
        assert_eq!(again, treasury::execution::BankProgress::Settled);
    }
    let counters = w.bank.counters();
    assert_eq!(
        counters.messages_received, 1,
        "never sent again: {counters:?}"
    );
    assert_eq!(counters.payments_executed, 1);
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000 - 4_200_000));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000 - 4_200_000));
}

/// Puts a policy in force that lets payments above the 24x7 cap go in tranches.
async fn allow_tranches(w: &World, max_tranches: u32) {
    let mut config = policy().config();
    config.tranches = TranchePolicy::Allowed { max_tranches };
    treasury::policies::set(&w._db.db, config, "admin-zhao", Utc::now())
        .await
        .unwrap();
}

/// 22:00 in Shanghai on Wednesday 2026-11-25, a working day: only the 24x7 system is open.
fn wednesday_10_00() -> DateTime<Utc> {
    shanghai(
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
    )
    .unwrap()
}

fn wednesday_22_00() -> DateTime<Utc> {
    shanghai(
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(),
        NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
    )
    .unwrap()
}

fn wednesday() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 25).unwrap()
}

/// `xmllint --schema` with the treasury crate's copy of the official schema.
fn validate(xml: &str, xsd: &str) {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../services/treasury/schemas")
        .join(xsd);
    let file = std::env::temp_dir().join(format!(
        "forecourt-wf-{}-{}.xml",
        std::process::id(),
        Uuid::now_v7()
    ));
    std::fs::write(&file, xml).unwrap();
    let out = std::process::Command::new("xmllint")
        .arg("--noout")
        .arg("--schema")
        .arg(&schema)
        .arg(&file)
        .output()
        .expect("xmllint must be installed (Debian package libxml2-utils)");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{xsd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bank's statement of `account` for `date`, reconciled against the platform's books:
/// the transactions it matched.
async fn reconciled(w: &World, account: &str, date: NaiveDate) -> Vec<String> {
    let account = AccountNumber::new(account).unwrap();
    let statement = w.executor.bank.statement(&account, date).await.unwrap();
    let expected = treasury::statements::expected_movements(&w._db.db, &account, date)
        .await
        .unwrap();
    let result = treasury::reconcile::reconcile(&statement, &expected);
    assert!(result.is_clean(), "{:#?}", result.exceptions);
    result.matched.iter().map(|e| e.to_string()).collect()
}

/// The instruction's one stored message, its transactions' end-to-end ids and amounts.
async fn stored_message(w: &World, id: Uuid) -> entities::treasury_messages::Model {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    entities::treasury_messages::Entity::find()
        .filter(entities::treasury_messages::Column::InstructionId.eq(id))
        .one(&w._db.db)
        .await
        .unwrap()
        .expect("the instruction's message")
}

async fn a_30_million_payout_at_22_00_goes_in_6_tranches_of_one_message_when_policy_allows(
    backend: Backend,
) {
    let w = world(backend, Some(wednesday_22_00())).await;
    allow_tranches(&w, 10).await;
    let master_before = w.posted(w.master).await;
    let id = w
        .instruct("E2E-TRANCHE-1", 3_000_000_000, true, wednesday())
        .await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    assert_eq!(
        w.instructions.get(id).await.unwrap().status,
        InstructionStatus::Settled
    );
    let txs = w.instructions.transactions(id).await.unwrap();
    let ids: Vec<&str> = txs.iter().map(|t| t.end_to_end_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "E2E-TRANCHE-1-1",
            "E2E-TRANCHE-1-2",
            "E2E-TRANCHE-1-3",
            "E2E-TRANCHE-1-4",
            "E2E-TRANCHE-1-5",
            "E2E-TRANCHE-1-6"
        ]
    );
    assert!(
        txs.iter()
            .all(|t| t.amount == cny(500_000_000) && t.state == TransactionState::Settled),
        "{txs:#?}"
    );
    let counters = w.bank.counters();
    assert_eq!(counters.messages_received, 1, "one message: {counters:?}");
    assert_eq!(
        counters.payments_executed, 6,
        "six transactions: {counters:?}"
    );
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000 - 3_000_000_000));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000 - 3_000_000_000));
    assert_eq!(
        w.available(w.debtor).await,
        cny(5_000_000_000 - 3_000_000_000)
    );
    // The money left the platform through the master account, exactly once.
    assert_eq!(
        (w.posted(w.master).await.amount() - master_before.amount()).abs(),
        cny(3_000_000_000).amount()
    );
    let message = stored_message(&w, id).await;
    assert_eq!(message.rail, "interbank_24x7");
    assert_eq!(message.xml.matches("<CdtTrfTxInf>").count(), 6);
    assert_eq!(message.xml.matches("<PmtInf>").count(), 1);
    assert!(
        message.xml.contains("<NbOfTxs>6</NbOfTxs>"),
        "{}",
        message.xml
    );
    validate(&message.xml, "pain.001.001.10.xsd");
    let report = message.last_report.expect("the bank's report");
    assert_eq!(report.matches("<TxInfAndSts>").count(), 6);
    validate(&report, "pain.002.001.11.xsd");
    // The hold posted once, for the whole.
    let history = w.instructions.history(id).await.unwrap();
    assert_eq!(history.iter().filter(|e| e.event == "settled").count(), 1);
    // The day's statement shows six bookings, each matched to its tranche.
    assert_eq!(reconciled(&w, DEBTOR, wednesday()).await.len(), 6);
}

async fn tranches_the_bank_refuses_post_the_hold_in_part_and_release_the_rest(backend: Backend) {
    // The bank holds 12,000,000 CNY on the sub-account: two tranches of 5,000,000 pass,
    // the other four are refused for insufficient funds.
    let mut setup = Setup::new(Some(wednesday_22_00()));
    setup.bank_debtor_fen = 1_200_000_000;
    let w = world_with(backend, setup).await;
    allow_tranches(&w, 10).await;
    let master_before = w.posted(w.master).await;
    let id = w
        .instruct("E2E-TRANCHE-2", 3_000_000_000, true, wednesday())
        .await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    let instruction = w.instructions.get(id).await.unwrap();
    assert_eq!(instruction.status, InstructionStatus::Settled);
    let txs = w.instructions.transactions(id).await.unwrap();
    let states: Vec<TransactionState> = txs.iter().map(|t| t.state).collect();
    use TransactionState::{Rejected, Settled};
    assert_eq!(
        states,
        [Settled, Settled, Rejected, Rejected, Rejected, Rejected]
    );
    assert!(
        txs[2..]
            .iter()
            .all(|t| t.reason.as_deref().is_some_and(|r| r.starts_with("AM04"))),
        "{txs:#?}"
    );
    // 10,000,000 left at the bank and in the ledger; the other 20,000,000 are free again.
    assert_eq!(w.at_bank(DEBTOR), cny(1_200_000_000 - 1_000_000_000));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000 - 1_000_000_000));
    assert_eq!(
        w.available(w.debtor).await,
        cny(5_000_000_000 - 1_000_000_000)
    );
    assert_eq!(
        (w.posted(w.master).await.amount() - master_before.amount()).abs(),
        cny(1_000_000_000).amount()
    );
    let history = w.instructions.history(id).await.unwrap();
    let part = history
        .iter()
        .find(|e| e.event == "settled_in_part")
        .expect("a partial settlement in the audit trail");
    assert_eq!(part.detail["settled"]["amount"], "10000000.00");
    assert_eq!(part.detail["refused"].as_array().unwrap().len(), 4);
    let message = stored_message(&w, id).await;
    validate(&message.last_report.unwrap(), "pain.002.001.11.xsd");
}

async fn a_configured_cap_changes_the_tranches_and_the_bank_enforces_it(backend: Backend) {
    let mut setup = Setup::new(Some(wednesday_22_00()));
    setup.rails_json = Some(r#"{"interbank": {"per_transaction_cap": "10000000"}}"#);
    let w = world_with(backend, setup).await;
    allow_tranches(&w, 10).await;
    let id = w
        .instruct("E2E-TRANCHE-3", 3_000_000_000, true, wednesday())
        .await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    let txs = w.instructions.transactions(id).await.unwrap();
    assert_eq!(txs.len(), 3, "{txs:#?}");
    assert!(txs.iter().all(|t| t.amount == cny(1_000_000_000)));
    assert_eq!(w.bank.counters().payments_executed, 3);
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000 - 3_000_000_000));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000 - 3_000_000_000));
}

async fn a_configured_maintenance_window_holds_a_payment_until_it_ends(backend: Backend) {
    // The creditor's bank announced maintenance of its real-time payments tonight.
    let mut setup = Setup::new(Some(wednesday_22_00()));
    setup.rails_json = Some(
        r#"{"maintenance": [{"bank": "102100099996", "rails": ["interbank_24x7"],
            "when": {"kind": "one_off", "from": "2026-11-25T21:30:00", "until": "2026-11-25T23:45:00"},
            "note": "实时付款业务维护"}]}"#,
    );
    let w = world_with(backend, setup).await;
    let id = w
        .instruct("E2E-MAINT-1", 8_000_000, true, wednesday())
        .await;
    for _ in 0..400 {
        let instance = w.instance(id).await;
        if instance.state["phase"]["phase"] == "waiting_for_window" {
            assert_eq!(
                instance.state["phase"]["until"],
                "2026-11-25T23:45:00+08:00"
            );
            assert_eq!(w.bank.counters().messages_received, 0, "nothing sent");
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the payout did not wait for the end of the maintenance window");
}

async fn one_tranche_returned_after_settlement_reverses_that_tranche_only(backend: Backend) {
    let w = world(backend, Some(wednesday_22_00())).await;
    allow_tranches(&w, 10).await;
    let id = w
        .instruct("E2E-TRANCHE-4", 3_000_000_000, true, wednesday())
        .await;
    let mut settled = false;
    for _ in 0..400 {
        if w.instance(id).await.state["phase"]["phase"] == "settled" {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(settled, "{:#?}", w.instance(id).await);
    // The creditor's bank sends the third tranche back.
    let third = EndToEndId::new("E2E-TRANCHE-4-3").unwrap();
    w.bank.return_payment(&third, "AC04").unwrap();
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    assert!(
        instance
            .history
            .iter()
            .any(|h| h.reason.contains("part of the payment came back")),
        "{instance:#?}"
    );
    assert_eq!(
        w.instructions.get(id).await.unwrap().status,
        InstructionStatus::Settled,
        "five tranches stay paid"
    );
    let txs = w.instructions.transactions(id).await.unwrap();
    let returned: Vec<&str> = txs
        .iter()
        .filter(|t| t.state == TransactionState::Returned)
        .map(|t| t.end_to_end_id.as_str())
        .collect();
    assert_eq!(returned, ["E2E-TRANCHE-4-3"]);
    // Six debits and the third one's reversal, all matched.
    assert_eq!(reconciled(&w, DEBTOR, wednesday()).await.len(), 7);
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000 - 2_500_000_000));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000 - 2_500_000_000));
    let history = w.instructions.history(id).await.unwrap();
    assert_eq!(
        history
            .iter()
            .filter(|e| e.event == "transaction_returned")
            .count(),
        1,
        "reversed once: {history:#?}"
    );
}

impl World {
    fn debtor_party(&self) -> Counterparty {
        Counterparty {
            ledger_account: self.debtor,
            name: "Huaxin Station Co".into(),
            account: AccountNumber::new(DEBTOR).unwrap(),
            bank: BankCode::new(BANK).unwrap(),
        }
    }

    async fn wait_for_status(&self, id: Uuid, status: InstructionStatus) {
        for _ in 0..400 {
            if self.instructions.get(id).await.unwrap().status == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{id} is not {status:?}: {:#?}",
            self.instructions.history(id).await.unwrap()
        );
    }
}

async fn a_frozen_amount_cannot_be_paid_out_and_an_unfreeze_restores_it(backend: Backend) {
    let w = world(backend, None).await;
    // A court orders 45,000,000 CNY of the 50,000,000 on the sub-account frozen.
    let freeze = w
        .instructions
        .new_freeze(
            w.debtor_party(),
            cny(4_500_000_000),
            EndToEndId::new("E2E-FRZ-1").unwrap(),
            None,
            Some("(2026)沪0115民初12345号 财产保全".into()),
            today(),
        )
        .await
        .unwrap();
    let freeze = w.run(freeze).await;
    w.wait_for_status(freeze, InstructionStatus::Settled).await;
    let debtor = AccountNumber::new(DEBTOR).unwrap();
    assert_eq!(w.bank.available(&debtor), Some(cny(500_000_000)));
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000), "frozen, not moved");
    assert_eq!(w.available(w.debtor).await, cny(500_000_000));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000));
    let message = stored_message(&w, freeze).await;
    assert_eq!(message.last_status.as_deref(), Some("ACSC"));
    assert!(
        message.xml.contains("\"action\":\"freeze\""),
        "{}",
        message.xml
    );

    // The ledger refuses to hold a 10,000,000 payout: the approval cannot complete.
    let payout = w
        .instructions
        .create(
            NewInstruction {
                kind: InstructionKind::Payout,
                end_to_end_id: EndToEndId::new("E2E-FRZ-PAY-1").unwrap(),
                debtor: w.debtor_party(),
                creditor: Counterparty {
                    ledger_account: w.master,
                    name: "Sinopec Depot No. 7".into(),
                    account: AccountNumber::new(OUTSIDE).unwrap(),
                    bank: BankCode::new(OTHER_BANK).unwrap(),
                },
                amount: cny(1_000_000_000),
                purpose: None,
                remittance: None,
                requested_execution_date: today(),
                releases: None,
                lines: Vec::new(),
            },
            &UserId("maker-li".into()),
            "key-frz-pay-1",
        )
        .await
        .unwrap();
    let refused = w
        .instructions
        .approve(
            payout.id,
            &UserId("checker-wang".into()),
            &[Role::new("treasury_checker")],
        )
        .await;
    assert!(
        matches!(refused, Err(treasury::store::TreasuryError::Ledger(_))),
        "{refused:?}"
    );
    assert_eq!(
        w.instructions.get(payout.id).await.unwrap().status,
        InstructionStatus::PendingApproval
    );
    // And the bank refuses the same payment sent to it directly.
    let batch = treasury::iso20022::pain001::Batch {
        message_id: treasury::domain::MessageId::new("FC-FROZEN-DIRECT-1").unwrap(),
        created_at: Utc::now(),
        initiating_party: "Forecourt Platform".into(),
        debtor: treasury::iso20022::pain001::AccountHolder {
            name: "Huaxin Station Co".into(),
            account: debtor.clone(),
            bank: BankCode::new(BANK).unwrap(),
        },
        rail: treasury::rails::Rail::IntraBank,
        requested_execution_date: today(),
        transfers: vec![treasury::iso20022::pain001::CreditTransfer {
            end_to_end_id: EndToEndId::new("E2E-FRZ-DIRECT-1").unwrap(),
            amount: cny(1_000_000_000),
            creditor: treasury::iso20022::pain001::AccountHolder {
                name: "Depot One Ltd".into(),
                account: AccountNumber::new(CREDITOR).unwrap(),
                bank: BankCode::new(BANK).unwrap(),
            },
            purpose: None,
            remittance: None,
        }],
    };
    let report = w.executor.bank.submit(&batch).await.unwrap();
    let reason = report.transactions[0].reason.clone().unwrap();
    assert_eq!(reason.code, "AM04");
    assert!(reason.info.unwrap().contains("frozen"));
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000));

    // The unfreeze releases it at the bank and in the ledger.
    let unfreeze = w
        .instructions
        .new_unfreeze(
            freeze,
            EndToEndId::new("E2E-UNF-1").unwrap(),
            Some("preservation lifted".into()),
            today(),
        )
        .await
        .unwrap();
    let unfreeze = w.run(unfreeze).await;
    w.wait_for_status(unfreeze, InstructionStatus::Settled)
        .await;
    assert_eq!(w.bank.available(&debtor), Some(cny(5_000_000_000)));
    assert_eq!(w.available(w.debtor).await, cny(5_000_000_000));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000));
    let history = w.instructions.history(freeze).await.unwrap();
    assert!(
        history.iter().any(|e| e.event == "released"),
        "{history:#?}"
    );
    let again = w
        .instructions
        .new_unfreeze(freeze, EndToEndId::new("E2E-UNF-2").unwrap(), None, today())
        .await
        .unwrap();
    let twice = w
        .instructions
        .create(again, &UserId("maker-li".into()), "key-unf-2")
        .await;
    assert!(
        matches!(
            twice,
            Err(treasury::store::TreasuryError::InvalidContent(_))
        ),
        "{twice:?}"
    );

    // The payout now goes through, held and settled.
    let paid = w
        .instruct("E2E-FRZ-PAY-2", 1_000_000_000, true, today())
        .await;
    w.wait_for_status(paid, InstructionStatus::Settled).await;
    assert_eq!(w.at_bank(DEBTOR), cny(4_000_000_000));
    assert_eq!(w.posted(w.debtor).await, cny(4_000_000_000));
}

impl World {
    /// A batch of payments from the debtor, one line per (creditor, fen).
    fn batch(&self, e2e: &str, lines: Vec<(Counterparty, i64)>) -> NewInstruction {
        let lines: Vec<treasury::store::Line> = lines
            .into_iter()
            .enumerate()
            .map(|(n, (creditor, fen))| treasury::store::Line {
                end_to_end_id: EndToEndId::new(format!("{e2e}-{}", n + 1)).unwrap(),
                creditor,
                amount: cny(fen),
                remittance: Some(format!("invoice {}", n + 1)),
            })
            .collect();
        let total = lines.iter().map(|l| l.amount.minor_units().unwrap()).sum();
        NewInstruction {
            kind: if lines[0].creditor.bank.as_str() == BANK {
                InstructionKind::SubAccountTransfer
            } else {
                InstructionKind::Payout
            },
            end_to_end_id: EndToEndId::new(e2e).unwrap(),
            debtor: self.debtor_party(),
            creditor: lines[0].creditor.clone(),
            amount: cny(total),
            purpose: Some("SUPP".into()),
            remittance: None,
            requested_execution_date: today(),
            releases: None,
            lines,
        }
    }

    fn depot_one(&self) -> Counterparty {
        Counterparty {
            ledger_account: self.creditor,
            name: "Depot One Ltd".into(),
            account: AccountNumber::new(CREDITOR).unwrap(),
            bank: BankCode::new(BANK).unwrap(),
        }
    }

    fn outside(&self, n: u32) -> Counterparty {
        Counterparty {
            ledger_account: self.master,
            name: format!("Carrier {n}"),
            account: AccountNumber::new(format!("62220202000000001{n:02}")).unwrap(),
            bank: BankCode::new(OTHER_BANK).unwrap(),
        }
    }
}

async fn a_batch_of_three_payments_goes_as_one_message_and_settles_line_by_line(backend: Backend) {
    let w = world(backend, None).await;
    let new = w.batch(
        "E2E-BATCH-1",
        vec![
            (w.depot_one(), 100_000),
            (w.depot_one(), 200_050),
            (w.depot_one(), 300_000),
        ],
    );
    let id = w.run(new).await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    assert_eq!(
        w.instructions.get(id).await.unwrap().status,
        InstructionStatus::Settled
    );
    let txs = w.instructions.transactions(id).await.unwrap();
    let lines: Vec<(&str, Money, TransactionState)> = txs
        .iter()
        .map(|t| (t.end_to_end_id.as_str(), t.amount, t.state))
        .collect();
    assert_eq!(
        lines,
        [
            ("E2E-BATCH-1-1", cny(100_000), TransactionState::Settled),
            ("E2E-BATCH-1-2", cny(200_050), TransactionState::Settled),
            ("E2E-BATCH-1-3", cny(300_000), TransactionState::Settled),
        ]
    );
    let counters = w.bank.counters();
    assert_eq!(
        (counters.messages_received, counters.payments_executed),
        (1, 3)
    );
    assert_eq!(w.at_bank(CREDITOR), cny(600_050));
    assert_eq!(w.at_bank(DEBTOR), cny(5_000_000_000 - 600_050));
    assert_eq!(w.posted(w.creditor).await, cny(600_050));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000 - 600_050));
    let message = stored_message(&w, id).await;
    assert_eq!(message.xml.matches("<PmtInf>").count(), 1);
    assert_eq!(message.xml.matches("<CdtTrfTxInf>").count(), 3);
    assert!(
        message.xml.contains("<Ustrd>invoice 2</Ustrd>"),
        "{}",
        message.xml
    );
    validate(&message.xml, "pain.001.001.10.xsd");
    validate(&message.last_report.unwrap(), "pain.002.001.11.xsd");
    let today = w
        .bank
        .now()
        .with_timezone(&treasury::rails::TZ)
        .date_naive();
    assert_eq!(reconciled(&w, DEBTOR, today).await.len(), 3);
    assert_eq!(reconciled(&w, CREDITOR, today).await.len(), 3);
}

async fn a_batch_payment_the_bank_refuses_is_released_alone(backend: Backend) {
    // The bank holds 5,000.00 CNY on the sub-account: the first two payments (4,500.00)
    // pass, the third (1,000.00) is refused for insufficient funds.
    let mut setup = Setup::new(None);
    setup.bank_debtor_fen = 500_000;
    let w = world_with(backend, setup).await;
    let master_before = w.posted(w.master).await;
    let new = w.batch(
        "E2E-BATCH-2",
        vec![
            (w.outside(1), 200_000),
            (w.outside(2), 250_000),
            (w.outside(3), 100_000),
        ],
    );
    let id = w.run(new).await;
    let instance = w.finished(id).await;
    assert_eq!(instance.status, Status::Completed, "{instance:#?}");
    let instruction = w.instructions.get(id).await.unwrap();
    assert_eq!(instruction.status, InstructionStatus::Settled);
    let states: Vec<TransactionState> = w
        .instructions
        .transactions(id)
        .await
        .unwrap()
        .iter()
        .map(|t| t.state)
        .collect();
    use TransactionState::{Rejected, Settled};
    assert_eq!(states, [Settled, Settled, Rejected]);
    assert_eq!(w.at_bank(DEBTOR), cny(500_000 - 450_000));
    assert_eq!(w.posted(w.debtor).await, cny(5_000_000_000 - 450_000));
    assert_eq!(w.available(w.debtor).await, cny(5_000_000_000 - 450_000));
    assert_eq!(
        (w.posted(w.master).await.amount() - master_before.amount()).abs(),
        cny(450_000).amount()
    );
    let history = w.instructions.history(id).await.unwrap();
    let part = history
        .iter()
        .find(|e| e.event == "settled_in_part")
        .expect("a partial settlement in the audit trail");
    assert_eq!(part.detail["refused"][0]["end_to_end_id"], "E2E-BATCH-2-3");
    let mut matched = reconciled(
        &w,
        DEBTOR,
        w.bank
            .now()
            .with_timezone(&treasury::rails::TZ)
            .date_naive(),
    )
    .await;
    matched.sort();
    assert_eq!(matched, ["E2E-BATCH-2-1", "E2E-BATCH-2-2"]);
}

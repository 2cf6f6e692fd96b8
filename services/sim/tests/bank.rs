//! The platform's bank client against the custodial bank simulator, over real HTTP on
//! ephemeral ports, with a small callback receiver standing in for the platform's route.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use ledger::{Currency, Money};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sim::bank::{BankSimConfig, BankSimHandle};
use treasury::bank::{BankClient, BankClientConfig, Incoming, QueryError, SubmitError};
use treasury::calendar::{BusinessCalendar, CalendarConfig};
use treasury::domain::{AccountNumber, BankCode, EndToEndId, MessageId};
use treasury::iso20022::camt053::{Direction, Statement};
use treasury::iso20022::pain001::{AccountHolder, Batch, CreditTransfer};
use treasury::iso20022::pain002::{PaymentStatus, StatusReport};
use treasury::rails::{Rail, Rails, RailsConfig, shanghai};
use treasury::signing::Signer;

const DEBTOR: &str = "3100000000000001";
const DEBTOR_BANK: &str = "102100099996";

fn cny(amount: Decimal) -> Money {
    Money::new(amount, Currency::CNY).unwrap()
}

fn local(text: &str) -> DateTime<Utc> {
    let t: NaiveDateTime = text.parse().unwrap();
    shanghai(t.date(), t.time()).unwrap()
}

fn signer() -> Signer {
    let (private, _) = sim::keys::rsa_pair();
    Signer::from_pem(&private.private_key_to_pem_pkcs8().unwrap()).unwrap()
}

/// A callback's body and its `X-Signature`.
type Received = (Bytes, Option<String>);

/// What the platform's callback route received.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Requests still to be answered with a 500.
    fail_next: Arc<Mutex<u32>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    {
        let mut fail = r.fail_next.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, "try again");
        }
    }
    let signature = headers
        .get("x-signature")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    r.got.lock().unwrap().push((body, signature));
    (StatusCode::OK, "ok")
}

async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let router = axum::Router::new()
        .route("/bank/callbacks", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}/bank/callbacks"), receiver)
}

struct World {
    bank: BankSimHandle,
    client: BankClient,
    platform: Signer,
    receiver: Receiver,
    debtor: AccountNumber,
}

impl World {
    async fn new() -> World {
        World::with_timeout(Duration::from_secs(10)).await
    }

    async fn with_timeout(request_timeout: Duration) -> World {
        let platform = signer();
        let bank_key = signer();
        let rails = Rails::new(
            RailsConfig::default(),
            BusinessCalendar::new(CalendarConfig::default()).unwrap(),
        )
        .unwrap();
        let (callback_url, receiver) = start_receiver().await;
        let debtor = AccountNumber::new(DEBTOR).unwrap();
        let mut config = BankSimConfig::new(bank_key.clone(), platform.verifier().unwrap(), rails);
        config.accounts = vec![(debtor.clone(), cny(dec!(50000000.00)))];
        config.callback_url = Some(callback_url);
        config.callback_delay = Duration::from_millis(50);
        config.retry_initial = Duration::from_millis(20);
        config.tick = Duration::from_millis(50);
        config.return_delay = Duration::from_millis(100);
        let bank = sim::bank::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        // A Tuesday afternoon in Shanghai: every rail is open.
        bank.set_clock(local("2026-11-24T16:00:00"));
        let mut client_config = BankClientConfig::new(bank.base_url());
        client_config.request_timeout = request_timeout;
        let client = BankClient::new(
            client_config,
            platform.clone(),
            bank_key.verifier().unwrap(),
        )
        .unwrap();
        World {
            bank,
            client,
            platform,
            receiver,
            debtor,
        }
    }

    fn balance(&self) -> Money {
        self.bank.balance(&self.debtor).unwrap()
    }

    /// The verified callbacks received so far.
    fn callbacks(&self) -> Vec<Incoming> {
        self.receiver
            .got
            .lock()
            .unwrap()
            .iter()
            .map(|(body, signature)| {
                self.client
                    .verify_callback(body, signature.as_deref())
                    .expect("every callback is signed by the bank")
            })
            .collect()
    }

    async fn wait_for_callbacks(&self, count: usize) -> Vec<Incoming> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.callbacks();
            if got.len() >= count {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} callbacks, got {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn batch(message_id: &str, rail: Rail, transfers: &[(&str, Decimal)]) -> Batch {
    Batch {
        message_id: MessageId::new(message_id).unwrap(),
        created_at: local("2026-11-24T15:59:00"),
        initiating_party: "Forecourt 平台".into(),
        debtor: AccountHolder {
            name: "重庆某加油站有限公司".into(),
            account: AccountNumber::new(DEBTOR).unwrap(),
            bank: BankCode::new(DEBTOR_BANK).unwrap(),
        },
        rail,
        requested_execution_date: "2026-11-24".parse().unwrap(),
        transfers: transfers
            .iter()
            .map(|(e2e, amount)| CreditTransfer {
                end_to_end_id: EndToEndId::new(*e2e).unwrap(),
                amount: cny(*amount),
                creditor: AccountHolder {
                    name: "西南油库有限公司".into(),
                    account: AccountNumber::new("6222020200112233445").unwrap(),
                    bank: BankCode::new("313290000017").unwrap(),
                },
                purpose: Some("DEPOT_PURCHASE".into()),
                remittance: None,
            })
            .collect(),
    }
}

fn depot(message_id: &str) -> Batch {
    batch(
        message_id,
        Rail::LargeValue,
        &[("E2E-DEPOT-0001", dec!(30000000.00))],
    )
}

fn only_status(report: &StatusReport) -> PaymentStatus {
    assert_eq!(report.transactions.len(), 1, "{report:?}");
    report.transactions[0].status
}

fn group_reason(report: &StatusReport) -> &str {
    assert_eq!(report.group_status, Some(PaymentStatus::Rejected));
    assert!(report.transactions.is_empty());
    &report.group_reason.as_ref().unwrap().code
}

/// `xmllint --schema` on a message with the treasury crate's copy of the official schema.
fn validate(xml: &str, xsd: &str) {
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../treasury/schemas")
        .join(xsd);
    let file = std::env::temp_dir().join(format!(
        "forecourt-bank-sim-{}-{}.xml",
        std::process::id(),
        Utc::now().timestamp_nanos_opt().unwrap()
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

#[tokio::test]
async fn a_signed_payment_settles_and_its_signed_callbacks_verify() {
    let w = World::new().await;
    let report = w.client.submit(&depot("FC-20261124-0001")).await.unwrap();
    assert_eq!(
        report.group_status,
        Some(PaymentStatus::AcceptedSettlementCompleted)
    );
    assert_eq!(w.balance(), cny(dec!(20000000.00)));

    let callbacks = w.wait_for_callbacks(2).await;
    let Incoming::Notification(debit) = &callbacks[0] else {
        panic!("the booking first: {callbacks:?}");
    };
    assert_eq!(debit.account, w.debtor);
    let entry = &debit.entries[0];
    assert_eq!(entry.direction, Direction::Debit);
    assert_eq!(entry.amount, cny(dec!(30000000.00)));
    assert_eq!(
        entry.end_to_end_id.as_ref().unwrap().as_str(),
        "E2E-DEPOT-0001"
    );
    let Incoming::StatusReport(last) = &callbacks[1] else {
        panic!("then the final status: {callbacks:?}");
    };
    assert_eq!(
        only_status(last),
        PaymentStatus::AcceptedSettlementCompleted
    );
    for record in w.bank.callbacks() {
        assert!(record.delivered);
        let xsd = match record.kind {
            "camt.054" => "camt.054.001.08.xsd",
            _ => "pain.002.001.11.xsd",
        };
        validate(&record.xml, xsd);
    }
    let counters = w.bank.counters();
    assert_eq!(counters.messages_received, 1);
    assert_eq!(counters.payments_executed, 1);
}

#[tokio::test]
async fn a_callback_the_platform_refuses_is_sent_again_until_it_is_taken() {
    let w = World::new().await;
    *w.receiver.fail_next.lock().unwrap() = 3;
    w.client.submit(&depot("FC-20261124-0001")).await.unwrap();
    w.wait_for_callbacks(2).await;
    let records = w.bank.callbacks();
    assert_eq!(records[0].attempts, 4, "{records:?}");
    assert!(records.iter().all(|r| r.delivered));
    // A forged callback is refused by the platform's check.
    let (body, signature) = w.receiver.got.lock().unwrap()[0].clone();
    let forged = String::from_utf8(body.to_vec())
        .unwrap()
        .replace("30000000.00", "3.00");
    assert!(
        w.client
            .verify_callback(forged.as_bytes(), signature.as_deref())
            .is_err()
    );
}

#[tokio::test]
async fn a_tampered_body_is_refused_with_ds0b_and_moves_no_money() {
    let w = World::new().await;
    let xml = depot("FC-20261124-0001").to_xml().unwrap();
    let signature = w.platform.sign(xml.as_bytes()).unwrap();
    let tampered = xml.replace("6222020200112233445", "6222020200999999999");
    let report = w
        .client
        .submit_signed(tampered.as_bytes(), &signature)
        .await
        .unwrap();
    assert_eq!(group_reason(&report), "DS0B");
    assert_eq!(w.balance(), cny(dec!(50000000.00)));
    let counters = w.bank.counters();
    assert_eq!(counters.bad_signatures, 1);
    assert_eq!(counters.payments_executed, 0);
    // The id was not taken by the forgery: the genuine message goes through.
    let report = w
        .client
        .submit_signed(xml.as_bytes(), &signature)
        .await
        .unwrap();
    assert_eq!(
        only_status(&report),
        PaymentStatus::AcceptedSettlementCompleted
    );
    // A message that is not a readable pain.001 is not even sent by the client; the bank
    // refuses one with 400 and its reason, and takes nothing.
    let garbled = xml.replace("<CtrlSum>", "<CtrlSum>x");
    let signature = w.platform.sign(garbled.as_bytes()).unwrap();
    let local = w.client.submit_signed(garbled.as_bytes(), &signature).await;
    assert!(matches!(local, Err(SubmitError::Local(_))), "{local:?}");
    let raw = reqwest::Client::new()
        .post(format!("{}/h2h/pain001", w.bank.base_url()))
        .header("x-signature", signature.to_base64())
        .body(garbled)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    assert_eq!(w.bank.counters().payments_executed, 1);
}

/// A stand-in bank that answers every submission with `status` and `body`, unsigned.
async fn broken_bank(status: StatusCode, body: &'static str) -> String {
    let router = axum::Router::new().route(
        "/h2h/pain001",
        axum::routing::post(move || async move { (status, body) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_server_error_or_an_unsigned_answer_leaves_the_outcome_unknown() {
    let platform = signer();
    let message = depot("FC-20261124-0001");
    for (status, body) in [
        (StatusCode::INTERNAL_SERVER_ERROR, "boom"),
        (StatusCode::BAD_GATEWAY, "upstream"),
        (StatusCode::OK, "<Document/>"),
    ] {
        let base = broken_bank(status, body).await;
        let client = BankClient::new(
            BankClientConfig::new(base),
            platform.clone(),
            signer().verifier().unwrap(),
        )
        .unwrap();
        let outcome = client.submit(&message).await;
        assert!(
            matches!(outcome, Err(SubmitError::Unknown { .. })),
            "{status}: {outcome:?}"
        );
    }
}

#[tokio::test]
async fn the_same_message_id_twice_pays_once() {
    let w = World::new().await;
    let message = depot("FC-20261124-0001");
    let first = w.client.submit(&message).await.unwrap();
    assert_eq!(
        only_status(&first),
        PaymentStatus::AcceptedSettlementCompleted
    );
    let second = w.client.submit(&message).await.unwrap();
    assert_eq!(group_reason(&second), "DU01");
    assert_eq!(w.balance(), cny(dec!(20000000.00)));
    assert_eq!(w.bank.counters().payments_executed, 1);
}

#[tokio::test]
async fn a_lost_answer_is_unknown_and_a_query_before_resending_finds_the_payment() {
    let w = World::with_timeout(Duration::from_millis(800)).await;
    w.bank.set(|b| b.drop_response_next = 1);
    let message = depot("FC-20261124-0001");
    let lost = w.client.submit(&message).await;
    assert!(matches!(lost, Err(SubmitError::Unknown { .. })), "{lost:?}");
    assert_eq!(w.balance(), cny(dec!(20000000.00)), "the money moved");
    let status = w
        .client
        .status(&message.message_id)
        .await
        .unwrap()
        .expect("the bank has the message");
    assert_eq!(
        only_status(&status),
        PaymentStatus::AcceptedSettlementCompleted
    );
    // Resending anyway is harmless.
    let again = w.client.submit(&message).await.unwrap();
    assert_eq!(group_reason(&again), "DU01");
    assert_eq!(w.balance(), cny(dec!(20000000.00)));
    assert_eq!(w.bank.counters().payments_executed, 1);
    // A message the bank never received is safe to send.
    let never = MessageId::new("FC-20261124-0099").unwrap();
    assert!(w.client.status(&never).await.unwrap().is_none());
}

#[tokio::test]
async fn a_silent_bank_tells_the_outcome_only_when_asked() {
    let w = World::new().await;
    w.bank.set(|b| b.silent_next = 1);
    let message = depot("FC-20261124-0001");
    let answer = w.client.submit(&message).await.unwrap();
    assert_eq!(answer.group_status, Some(PaymentStatus::Received));
    assert!(answer.transactions.is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(w.callbacks().is_empty(), "no callback at all");
    assert!(w.bank.callbacks().is_empty());
    let status = w.client.status(&message.message_id).await.unwrap().unwrap();
    assert_eq!(
        only_status(&status),
        PaymentStatus::AcceptedSettlementCompleted
    );
    assert_eq!(w.balance(), cny(dec!(20000000.00)));
}

#[tokio::test]
async fn a_rejection_carries_its_reason_and_moves_no_money() {
    let w = World::new().await;
    w.bank.set(|b| b.reject_next.push("AM04".into()));
    let report = w.client.submit(&depot("FC-20261124-0001")).await.unwrap();
    assert_eq!(report.group_status, Some(PaymentStatus::Rejected));
    assert_eq!(only_status(&report), PaymentStatus::Rejected);
    assert_eq!(report.transactions[0].reason.as_ref().unwrap().code, "AM04");
    assert_eq!(w.balance(), cny(dec!(50000000.00)));
    let callbacks = w.wait_for_callbacks(1).await;
    let Incoming::StatusReport(last) = &callbacks[0] else {
        panic!("{callbacks:?}");
    };
    assert_eq!(only_status(last), PaymentStatus::Rejected);
}

#[tokio::test]
async fn a_return_after_settlement_arrives_as_a_signed_camt054_and_shows_in_queries() {
    let w = World::new().await;
    w.bank.set(|b| b.return_next.push("AC04".into()));
    let message = depot("FC-20261124-0001");
    let report = w.client.submit(&message).await.unwrap();
    assert_eq!(
        only_status(&report),
        PaymentStatus::AcceptedSettlementCompleted
    );
    // Debit, final status, then the return.
    let callbacks = w.wait_for_callbacks(3).await;
    let returned = callbacks
        .iter()
        .find_map(|c| match c {
            Incoming::Notification(n) if n.entries[0].direction == Direction::Credit => Some(n),
            _ => None,
        })
        .expect("the return's notification");
    let entry = &returned.entries[0];
    assert!(entry.reversal);
    assert_eq!(
        entry.end_to_end_id.as_ref().unwrap().as_str(),
        "E2E-DEPOT-0001"
    );
    assert_eq!(entry.return_reason.as_ref().unwrap().code, "AC04");
    assert_eq!(entry.amount, cny(dec!(30000000.00)));
    assert_eq!(w.balance(), cny(dec!(50000000.00)), "credited back");
    let status = w.client.status(&message.message_id).await.unwrap().unwrap();
    let tx = &status.transactions[0];
    assert!(tx.is_return(), "{tx:?}");
    assert_eq!(tx.reason.as_ref().unwrap().code, "AC04");
}

#[tokio::test]
async fn maintenance_answers_503_and_the_client_knows_nothing_was_sent() {
    let w = World::new().await;
    w.bank.set(|b| b.maintenance = true);
    let message = depot("FC-20261124-0001");
    let refused = w.client.submit(&message).await;
    assert!(
        matches!(refused, Err(SubmitError::Refused { .. })),
        "{refused:?}"
    );
    assert!(matches!(
        w.client.status(&message.message_id).await,
        Err(QueryError::Unavailable)
    ));
    assert_eq!(w.bank.counters().messages_received, 0);
    assert_eq!(w.balance(), cny(dec!(50000000.00)));
    w.bank.set(|b| b.maintenance = false);
    let report = w.client.submit(&message).await.unwrap();
    assert_eq!(
        only_status(&report),
        PaymentStatus::AcceptedSettlementCompleted
    );

    // A bank that is not listening at all did not receive anything either.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let nobody = BankClient::new(
        BankClientConfig::new(format!("http://{addr}")),
        w.platform.clone(),
        signer().verifier().unwrap(),
    )
    .unwrap();
    let refused = nobody.submit(&depot("FC-20261124-0002")).await;
    assert!(
        matches!(refused, Err(SubmitError::Refused { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_large_value_payment_at_22_00_waits_and_settles_at_the_next_opening() {
    let w = World::new().await;
    w.bank.set_clock(local("2026-11-24T22:00:00"));
    let message = depot("FC-20261124-0001");
    let report = w.client.submit(&message).await.unwrap();
    assert_eq!(only_status(&report), PaymentStatus::Pending);
    assert_eq!(report.group_status, Some(PaymentStatus::Pending));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        w.balance(),
        cny(dec!(50000000.00)),
        "ticks at night change nothing"
    );
    assert!(w.callbacks().is_empty());
    w.bank.set_clock(local("2026-11-25T08:29:59"));
    assert_eq!(
        w.balance(),
        cny(dec!(50000000.00)),
        "one second before opening"
    );
    w.bank.set_clock(local("2026-11-25T08:30:00"));
    assert_eq!(w.balance(), cny(dec!(20000000.00)));
    let callbacks = w.wait_for_callbacks(2).await;
    assert!(callbacks.iter().any(|c| matches!(
        c,
        Incoming::StatusReport(r) if only_status(r) == PaymentStatus::AcceptedSettlementCompleted
    )));
    let status = w.client.status(&message.message_id).await.unwrap().unwrap();
    assert_eq!(
        only_status(&status),
        PaymentStatus::AcceptedSettlementCompleted
    );
}

#[tokio::test]
async fn a_day_statement_balances_and_validates_against_the_schema() {
    let w = World::new().await;
    w.client
        .submit(&batch(
            "FC-20261124-0001",
            Rail::LargeValue,
            &[
                ("E2E-DEPOT-0001", dec!(30000000.00)),
                ("E2E-DEPOT-0002", dec!(1234.56)),
            ],
        ))
        .await
        .unwrap();
    w.bank.credit(&w.debtor, cny(dec!(888.88)));
    let day: NaiveDate = "2026-11-24".parse().unwrap();
    let statement: Statement = w.client.statement(&w.debtor, day).await.unwrap();
    assert_eq!(statement.opening, cny(dec!(50000000.00)));
    assert_eq!(statement.entries.len(), 3);
    let net: Decimal = statement
        .entries
        .iter()
        .map(|e| match e.direction {
            Direction::Credit => e.amount.amount(),
            Direction::Debit => -e.amount.amount(),
        })
        .sum();
    assert_eq!(statement.opening.amount() + net, statement.closing.amount());
    assert_eq!(statement.closing, w.balance());
    assert_eq!(statement.closing, cny(dec!(19999654.32)));

    let raw = reqwest::get(format!(
        "{}/h2h/statements/{DEBTOR}?date=2026-11-24",
        w.bank.base_url()
    ))
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    validate(&raw, "camt.053.001.08.xsd");
    let unknown = w
        .client
        .statement(&AccountNumber::new("999").unwrap(), day)
        .await;
    assert!(
        matches!(unknown, Err(QueryError::NotFound(_))),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn the_admin_interface_drives_the_bank_over_http() {
    let w = World::new().await;
    let http = reqwest::Client::new();
    let base = w.bank.base_url();
    let answer: serde_json::Value = http
        .post(format!("{base}/sim/accounts/3100000000000002/credit"))
        .json(&serde_json::json!({ "amount": "100.00", "currency": "CNY" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["balance"]["amount"], "100.00");
    let behaviour: serde_json::Value = http
        .post(format!("{base}/sim/behaviour"))
        .json(&serde_json::json!({ "reject_next": "AM04", "latency_ms": 5 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(behaviour["reject_next"][0], "AM04");
    let clock: serde_json::Value = http
        .post(format!("{base}/sim/clock"))
        .json(&serde_json::json!({ "now": "2026-11-24T22:00:00+08:00", "frozen": true }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(clock["now"], "2026-11-24T14:00:00Z");
    let report = w.client.submit(&depot("FC-20261124-0001")).await.unwrap();
    assert_eq!(report.transactions[0].reason.as_ref().unwrap().code, "AM04");
    let messages: serde_json::Value = http
        .get(format!("{base}/sim/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(messages[0]["injected"], "reject AM04");
    let counters: serde_json::Value = http
        .get(format!("{base}/sim/counters"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["messages_received"], 1);
    assert_eq!(counters["payments_executed"], 0);
}

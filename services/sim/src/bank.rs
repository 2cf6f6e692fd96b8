//! The custodial bank (托管银行) as an HTTP peer: the host-to-host interface documented in
//! `treasury::bank` around the pure core `treasury::sim::CustodialBank`.
//!
//! # Interface
//! - `POST /h2h/pain001` (signed pain.001 in, signed pain.002 out), `GET
//!   /h2h/status/{message_id}`, `GET /h2h/statements/{account}?date=YYYY-MM-DD`. During
//!   maintenance every `/h2h/` request gets a `503` before anything is processed.
//! - Callbacks to the configured URL, signed (`X-Signature`), after a delay (200 ms by
//!   default): the camt.054 of every booking, the pain.002 of a PDNG payment that settles,
//!   and a final pain.002 of every accepted message whose payments are all final. They are
//!   delivered in order, one at a time; a callback the platform does not answer with `2xx`
//!   is retried with exponential backoff until it is (a bank keeps trying), and each one is
//!   recorded with its attempts.
//! - A ticker runs the waiting payments whose rail has opened, on the simulator's clock.
//!   The clock is the system clock moved by an offset, or frozen at a set instant; rails
//!   follow Asia/Shanghai business hours, so tests set it.
//!
//! # Admin (`/sim/...`, JSON, available during maintenance)
//! - `GET /sim/behaviour`, `POST /sim/behaviour` with any of the fields of
//!   [`BehaviourUpdate`]: `latency_ms`, `maintenance`, `reject_next` (a reason code: the next
//!   accepted message is rejected with it, e.g. `"AM04"`), `silent_next` (the next messages
//!   are executed but answered with a bare RCVD and no callback at all: only a status query
//!   tells the outcome), `return_next` (a return reason code: the next message's payments
//!   settle and are returned after the return delay, announced by camt.054),
//!   `drop_response_next` (the next messages are fully processed, money moves, but the answer
//!   is held back until long after any client has given up), `callback_url`,
//!   `callback_delay_ms`.
//! - `POST /h2h/freeze`, `GET /h2h/freeze/{request_id}`: freezing and releasing funds (a
//!   signed JSON request, see `treasury::freeze`); a freeze lowers the available balance
//!   and payments beyond it are refused with `AM04`.
//! - `POST /sim/accounts/{account}/credit` `{"amount": "100.00", "currency": "CNY"}`: a
//!   deposit, booked and notified; `GET /sim/accounts/{account}`: balance and journal.
//! - `GET /sim/clock`; `POST /sim/clock` with `{"now": "2026-11-24T22:00:00+08:00",
//!   "frozen": true}`, `{"advance_seconds": 36000}` or `{"real": true}`; the waiting payments
//!   are run at once on the new time.
//! - `POST /sim/returns` `{"end_to_end_id": "…", "reason": "AC04"}`: return a settled
//!   payment now.
//! - `GET /sim/messages` (received pain.001), `GET /sim/callbacks` (sent callbacks),
//!   `GET /sim/counters`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use ledger::{Currency, Money};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use treasury::domain::{AccountNumber, EndToEndId, MessageId};
use treasury::iso20022::pain002::{PaymentStatus, StatusReason, StatusReport};
use treasury::rails::Rails;
use treasury::signing::{Signature, Signer, Verifier};
use treasury::sim::{CustodialBank, SignedNotification, SignedReport};

/// The header carrying the base64 RSA-SHA256 signature of a body.
pub const SIGNATURE_HEADER: &str = "x-signature";

/// How the simulated bank is set up.
#[derive(Clone, Debug)]
pub struct BankSimConfig {
    /// The bank's private key: it signs every answer and callback.
    pub bank_key: Signer,
    /// The platform's public key: every pain.001 must be signed with its private half.
    pub platform_key: Verifier,
    pub rails: Rails,
    /// Sub-accounts opened at start with their funds.
    pub accounts: Vec<(AccountNumber, Money)>,
    pub callback_url: Option<String>,
    /// From an event to its callback.
    pub callback_delay: Duration,
    /// First wait before a failed callback is sent again; it doubles up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How often waiting payments are run.
    pub tick: Duration,
    /// From settlement to the return of a payment under `return_next`.
    pub return_delay: Duration,
    /// How long an answer under `drop_response_next` is held back.
    pub drop_hold: Duration,
}

impl BankSimConfig {
    /// Callbacks after 200 ms, retried from 100 ms up to every 5 s; a tick a second;
    /// returns 500 ms after settlement; dropped answers held for 10 minutes.
    pub fn new(bank_key: Signer, platform_key: Verifier, rails: Rails) -> Self {
        BankSimConfig {
            bank_key,
            platform_key,
            rails,
            accounts: Vec::new(),
            callback_url: None,
            callback_delay: Duration::from_millis(200),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            tick: Duration::from_secs(1),
            return_delay: Duration::from_millis(500),
            drop_hold: Duration::from_secs(600),
        }
    }
}

/// The switches that change how the bank behaves; all can be flipped while it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankBehaviour {
    /// Added before every `/h2h/` answer.
    pub latency_ms: u64,
    /// Every `/h2h/` request gets a 503 before anything is processed.
    pub maintenance: bool,
    /// Reason codes, first first: each of the next accepted messages is rejected with one.
    pub reject_next: Vec<String>,
    /// The next N accepted messages are executed silently (RCVD answer, no callbacks).
    pub silent_next: u32,
    /// Return reason codes: the payments of each of the next accepted messages are returned
    /// after they settle.
    pub return_next: Vec<String>,
    /// The next N accepted messages are processed but their answer never comes in time.
    pub drop_response_next: u32,
    pub callback_url: Option<String>,
    pub callback_delay_ms: u64,
}

/// A change of behaviour: the fields given are applied, `reject_next` and `return_next`
/// add one code to their queue.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviourUpdate {
    pub latency_ms: Option<u64>,
    pub maintenance: Option<bool>,
    pub reject_next: Option<String>,
    pub silent_next: Option<u32>,
    pub return_next: Option<String>,
    pub drop_response_next: Option<u32>,
    pub callback_url: Option<String>,
    pub callback_delay_ms: Option<u64>,
}

impl BehaviourUpdate {
    pub fn apply(self, b: &mut BankBehaviour) {
        if let Some(v) = self.latency_ms {
            b.latency_ms = v;
        }
        if let Some(v) = self.maintenance {
            b.maintenance = v;
        }
        if let Some(v) = self.reject_next {
            b.reject_next.push(v);
        }
        if let Some(v) = self.silent_next {
            b.silent_next = v;
        }
        if let Some(v) = self.return_next {
            b.return_next.push(v);
        }
        if let Some(v) = self.drop_response_next {
            b.drop_response_next = v;
        }
        if let Some(v) = self.callback_url {
            b.callback_url = (!v.is_empty()).then_some(v);
        }
        if let Some(v) = self.callback_delay_ms {
            b.callback_delay_ms = v;
        }
    }
}

/// The simulator's clock: the system clock moved by an offset, or frozen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimClock {
    pub offset_ms: i64,
    pub frozen_at: Option<DateTime<Utc>>,
}

impl SimClock {
    pub fn now(&self) -> DateTime<Utc> {
        self.frozen_at
            .unwrap_or_else(|| Utc::now() + chrono::Duration::milliseconds(self.offset_ms))
    }
}

/// A pain.001 that reached the bank.
#[derive(Clone, Debug, Serialize)]
pub struct ReceivedMessage {
    pub message_id: Option<String>,
    pub received_at: DateTime<Utc>,
    pub signature_valid: bool,
    /// The group status answered (or the HTTP status when no report was possible).
    pub answer: String,
    /// The failure injected, if any.
    pub injected: Option<String>,
}

/// A callback and its delivery.
#[derive(Clone, Debug, Serialize)]
pub struct CallbackRecord {
    pub id: usize,
    /// `pain.002` or `camt.054`.
    pub kind: &'static str,
    /// The pain.001 message it is about, when there is one.
    pub message_id: Option<String>,
    pub xml: String,
    pub signature: String,
    pub queued_at: DateTime<Utc>,
    pub attempts: u32,
    pub delivered: bool,
    pub last_error: Option<String>,
}

/// What the bank counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// pain.001 requests processed (after maintenance and latency).
    pub messages_received: u64,
    pub payments_executed: u64,
    /// pain.001 whose signature did not verify.
    pub bad_signatures: u64,
    pub status_queries: u64,
    /// Freeze and unfreeze requests taken (after maintenance and latency).
    pub freeze_requests: u64,
    pub statements: u64,
    pub callbacks_delivered: u64,
}

struct BankState {
    bank: CustodialBank,
    behaviour: BankBehaviour,
    clock: SimClock,
    received: Vec<ReceivedMessage>,
    callbacks: Vec<CallbackRecord>,
    counters: Counters,
    /// Messages executed silently: none of their callbacks are sent.
    silent: BTreeSet<MessageId>,
    /// Payments to return once settled, with the reason code.
    to_return: BTreeMap<EndToEndId, String>,
}

struct Timing {
    retry_initial: Duration,
    retry_max: Duration,
    return_delay: Duration,
    drop_hold: Duration,
}

#[derive(Clone)]
struct App {
    state: Arc<Mutex<BankState>>,
    platform: Verifier,
    outgoing: mpsc::UnboundedSender<(usize, tokio::time::Instant)>,
    shutdown: watch::Receiver<bool>,
    timing: Arc<Timing>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// A running bank simulator. Dropping it (or [`stop`](Self::stop)) stops the server, the
/// ticker, the callbacks and any held answer.
pub struct BankSimHandle {
    pub addr: SocketAddr,
    app: App,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
}

/// Starts the bank on `addr` (port 0 for an ephemeral port).
pub async fn start(config: BankSimConfig, addr: SocketAddr) -> std::io::Result<BankSimHandle> {
    let mut bank = CustodialBank::new(
        config.rails.clone(),
        config.platform_key.clone(),
        config.bank_key.clone(),
    );
    for (account, amount) in &config.accounts {
        bank.credit(account.clone(), *amount);
    }
    let state = BankState {
        bank,
        behaviour: BankBehaviour {
            callback_url: config.callback_url.clone(),
            callback_delay_ms: u64::try_from(config.callback_delay.as_millis()).unwrap_or(200),
            ..BankBehaviour::default()
        },
        clock: SimClock::default(),
        received: Vec::new(),
        callbacks: Vec::new(),
        counters: Counters::default(),
        silent: BTreeSet::new(),
        to_return: BTreeMap::new(),
    };
    let (outgoing, queue) = mpsc::unbounded_channel();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let app = App {
        state: Arc::new(Mutex::new(state)),
        platform: config.platform_key.clone(),
        outgoing,
        shutdown,
        timing: Arc::new(Timing {
            retry_initial: config.retry_initial,
            retry_max: config.retry_max,
            return_delay: config.return_delay,
            drop_hold: config.drop_hold,
        }),
        tasks: Arc::new(Mutex::new(Vec::new())),
    };
    app.spawn(deliver(app.clone(), queue));
    app.spawn(ticker(app.clone(), config.tick));

    let router = Router::new()
        .route("/h2h/pain001", post(pain001))
        .route("/h2h/status/{message_id}", get(status))
        .route("/h2h/freeze", post(freeze))
        .route("/h2h/freeze/{request_id}", get(freeze_status))
        .route("/h2h/statements/{account}", get(statement))
        .route("/sim/behaviour", get(get_behaviour).post(set_behaviour))
        .route("/sim/accounts/{account}", get(account))
        .route("/sim/accounts/{account}/credit", post(credit))
        .route("/sim/clock", get(get_clock).post(set_clock))
        .route("/sim/returns", post(return_now))
        .route("/sim/messages", get(messages))
        .route("/sim/callbacks", get(callbacks))
        .route("/sim/counters", get(counters))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::warn!(%error, "bank simulator stopped");
        }
    });
    Ok(BankSimHandle {
        addr,
        app,
        shutdown: shutdown_tx,
        server,
    })
}

impl BankSimHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the behaviour while the bank runs.
    pub fn set(&self, change: impl FnOnce(&mut BankBehaviour)) {
        change(&mut self.app.lock().behaviour);
    }

    pub fn behaviour(&self) -> BankBehaviour {
        self.app.lock().behaviour.clone()
    }

    /// A deposit on a sub-account now (on the simulator's clock), booked and notified.
    pub fn credit(&self, account: &AccountNumber, amount: Money) {
        self.app
            .credit(account, amount)
            .expect("a positive amount in the account's currency");
    }

    pub fn balance(&self, account: &AccountNumber) -> Option<Money> {
        self.app.lock().bank.balance(account)
    }

    /// The balance less everything frozen.
    pub fn available(&self, account: &AccountNumber) -> Option<Money> {
        self.app.lock().bank.available(account)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.app.lock().clock.now()
    }

    /// Freezes the clock at `now` and runs the payments whose rail is open then.
    /// Sets the bank's clock to `now` and lets it run on from there.
    pub fn set_running_clock(&self, now: DateTime<Utc>) {
        self.app.lock().clock = SimClock {
            offset_ms: (now - Utc::now()).num_milliseconds(),
            frozen_at: None,
        };
        self.app.tick();
    }

    pub fn set_clock(&self, now: DateTime<Utc>) {
        self.app.lock().clock = SimClock {
            offset_ms: 0,
            frozen_at: Some(now),
        };
        self.app.tick();
    }

    pub fn counters(&self) -> Counters {
        self.app.counters()
    }

    pub fn received(&self) -> Vec<ReceivedMessage> {
        self.app.lock().received.clone()
    }

    pub fn callbacks(&self) -> Vec<CallbackRecord> {
        self.app.lock().callbacks.clone()
    }

    /// Returns a settled payment now.
    pub fn return_payment(&self, end_to_end_id: &EndToEndId, reason: &str) -> Result<(), String> {
        self.app.return_payment(end_to_end_id, reason)
    }

    /// Stops the bank.
    pub fn stop(self) {}
}

impl Drop for BankSimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.server.abort();
        for task in self
            .app
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

impl App {
    fn lock(&self) -> MutexGuard<'_, BankState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(task));
    }

    /// Sleeps, or less when the bank stops.
    async fn sleep(&self, duration: Duration) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = shutdown.wait_for(|stopped| *stopped) => {}
        }
    }

    fn counters(&self) -> Counters {
        let st = self.lock();
        Counters {
            payments_executed: st.bank.executed(),
            callbacks_delivered: st.callbacks.iter().filter(|c| c.delivered).count() as u64,
            ..st.counters
        }
    }

    async fn gate(&self) -> Option<Response> {
        let latency = self.lock().behaviour.latency_ms;
        if latency > 0 {
            self.sleep(Duration::from_millis(latency)).await;
        }
        self.lock()
            .behaviour
            .maintenance
            .then(|| (StatusCode::SERVICE_UNAVAILABLE, "maintenance").into_response())
    }

    /// Queues a callback unless its message is silent.
    fn enqueue(
        &self,
        st: &mut BankState,
        kind: &'static str,
        message_id: Option<&MessageId>,
        signed: &SignedReport,
    ) {
        if message_id.is_some_and(|m| st.silent.contains(m)) {
            return;
        }
        let id = st.callbacks.len();
        st.callbacks.push(CallbackRecord {
            id,
            kind,
            message_id: message_id.map(ToString::to_string),
            xml: signed.xml.clone(),
            signature: signed.signature.to_base64(),
            queued_at: st.clock.now(),
            attempts: 0,
            delivered: false,
            last_error: None,
        });
        let due =
            tokio::time::Instant::now() + Duration::from_millis(st.behaviour.callback_delay_ms);
        let _ = self.outgoing.send((id, due));
    }

    fn enqueue_notifications(&self, st: &mut BankState, notices: Vec<SignedNotification>) {
        for n in notices {
            self.enqueue(st, "camt.054", n.message_id.as_ref(), &n.signed);
        }
    }

    /// Settled payments marked for return are returned after the return delay.
    fn schedule_returns(&self, st: &mut BankState, report: &StatusReport) {
        for tx in &report.transactions {
            if tx.status != PaymentStatus::AcceptedSettlementCompleted {
                continue;
            }
            if let Some(code) = st.to_return.remove(&tx.end_to_end_id) {
                let app = self.clone();
                let e2e = tx.end_to_end_id.clone();
                self.spawn(async move {
                    app.sleep(app.timing.return_delay).await;
                    if *app.shutdown.borrow() {
                        return;
                    }
                    if let Err(error) = app.return_payment(&e2e, &code) {
                        tracing::warn!(%error, "scheduled return failed");
                    }
                });
            }
        }
    }

    fn return_payment(&self, e2e: &EndToEndId, reason: &str) -> Result<(), String> {
        let mut st = self.lock();
        let now = st.clock.now();
        st.bank
            .return_payment(e2e, reason, now)
            .map_err(|e| e.to_string())?;
        let notices = st.bank.take_notifications();
        self.enqueue_notifications(&mut st, notices);
        Ok(())
    }

    /// Runs the payments whose rail is open now and queues what they produce.
    fn tick(&self) {
        let mut st = self.lock();
        let now = st.clock.now();
        let reports = match st.bank.run_due(now) {
            Ok(reports) => reports,
            Err(error) => {
                tracing::warn!(%error, "running waiting payments failed");
                return;
            }
        };
        let notices = st.bank.take_notifications();
        self.enqueue_notifications(&mut st, notices);
        for signed in reports {
            let Ok(report) = StatusReport::parse(&signed.xml) else {
                continue;
            };
            self.enqueue(
                &mut st,
                "pain.002",
                Some(&report.original_message_id),
                &signed,
            );
            self.schedule_returns(&mut st, &report);
        }
    }

    fn credit(&self, account: &AccountNumber, amount: Money) -> Result<(), String> {
        let mut st = self.lock();
        let now = st.clock.now();
        st.bank
            .deposit(account.clone(), amount, now)
            .map_err(|e| e.to_string())?;
        let notices = st.bank.take_notifications();
        self.enqueue_notifications(&mut st, notices);
        Ok(())
    }
}

/// Delivers callbacks in order; a failed one is retried with backoff until delivered.
async fn deliver(app: App, mut queue: mpsc::UnboundedReceiver<(usize, tokio::time::Instant)>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a client without TLS options always builds");
    while let Some((id, due)) = queue.recv().await {
        let wait = due.saturating_duration_since(tokio::time::Instant::now());
        app.sleep(wait).await;
        let mut backoff = app.timing.retry_initial;
        loop {
            if *app.shutdown.borrow() {
                return;
            }
            let (url, body, signature) = {
                let st = app.lock();
                let record = &st.callbacks[id];
                (
                    st.behaviour.callback_url.clone(),
                    record.xml.clone(),
                    record.signature.clone(),
                )
            };
            let outcome = match url {
                None => Err("no callback URL configured".to_owned()),
                Some(url) => client
                    .post(url)
                    .header(header::CONTENT_TYPE, "application/xml")
                    .header(SIGNATURE_HEADER, signature)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        if r.status().is_success() {
                            Ok(())
                        } else {
                            Err(format!("answered {}", r.status()))
                        }
                    }),
            };
            {
                let mut st = app.lock();
                let record = &mut st.callbacks[id];
                record.attempts += 1;
                match &outcome {
                    Ok(()) => {
                        record.delivered = true;
                        record.last_error = None;
                    }
                    Err(error) => record.last_error = Some(error.clone()),
                }
            }
            if outcome.is_ok() {
                break;
            }
            app.sleep(backoff).await;
            backoff = (backoff * 2).min(app.timing.retry_max);
        }
    }
}

async fn ticker(app: App, every: Duration) {
    loop {
        app.sleep(every).await;
        if *app.shutdown.borrow() {
            return;
        }
        app.tick();
    }
}

fn signed_xml(status: StatusCode, signed: &SignedReport) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/xml".to_owned()),
            (
                header::HeaderName::from_static(SIGNATURE_HEADER),
                signed.signature.to_base64(),
            ),
        ],
        signed.xml.clone(),
    )
        .into_response()
}

fn failure(status: StatusCode, error: impl std::fmt::Display) -> Response {
    (status, error.to_string()).into_response()
}

/// What to do to one accepted message, decided when it arrives.
#[derive(Default)]
struct Injection {
    reject: Option<String>,
    silent: bool,
    return_code: Option<String>,
    drop_response: bool,
}

impl Injection {
    fn take(b: &mut BankBehaviour) -> Injection {
        let mut i = Injection::default();
        if !b.reject_next.is_empty() {
            i.reject = Some(b.reject_next.remove(0));
        }
        if b.silent_next > 0 {
            b.silent_next -= 1;
            i.silent = true;
        }
        if !b.return_next.is_empty() {
            i.return_code = Some(b.return_next.remove(0));
        }
        if b.drop_response_next > 0 {
            b.drop_response_next -= 1;
            i.drop_response = true;
        }
        i
    }

    fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(code) = &self.reject {
            parts.push(format!("reject {code}"));
        }
        if self.silent {
            parts.push("silent".to_owned());
        }
        if let Some(code) = &self.return_code {
            parts.push(format!("return {code}"));
        }
        if self.drop_response {
            parts.push("drop response".to_owned());
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

fn message_id_of(body: &[u8]) -> Option<MessageId> {
    let text = std::str::from_utf8(body).ok()?;
    let document = treasury::iso20022::pain001::parse(text).ok()?;
    MessageId::new(document.initiation.grp_hdr.msg_id).ok()
}

async fn pain001(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = app.gate().await {
        return refusal;
    }
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Signature::from_base64(v).ok())
        .unwrap_or_else(|| Signature::from_base64("").expect("empty is valid base64"));
    let signature_valid = app.platform.verify(&body, &signature).is_ok();
    let message_id = message_id_of(&body);
    let (answer, drop_response) = {
        let mut st = app.lock();
        let now = st.clock.now();
        st.counters.messages_received += 1;
        if !signature_valid {
            st.counters.bad_signatures += 1;
        }
        // Failures are injected into messages the bank accepts: signed, and new.
        let fresh = signature_valid && message_id.as_ref().is_some_and(|m| !st.bank.has_message(m));
        let injection = if fresh {
            Injection::take(&mut st.behaviour)
        } else {
            Injection::default()
        };
        let outcome = match &injection.reject {
            Some(code) => st.bank.receive_rejecting(
                &body,
                &signature,
                now,
                StatusReason {
                    code: code.clone(),
                    info: Some("rejected by the bank".into()),
                },
            ),
            None => st.bank.receive(&body, &signature, now),
        };
        let signed = match outcome {
            Ok(signed) => signed,
            Err(error) => {
                st.received.push(ReceivedMessage {
                    message_id: message_id.as_ref().map(ToString::to_string),
                    received_at: now,
                    signature_valid,
                    answer: "400".into(),
                    injected: None,
                });
                return failure(StatusCode::BAD_REQUEST, error);
            }
        };
        let report = StatusReport::parse(&signed.xml).expect("the bank reads its own reports");
        let accepted = !report.transactions.is_empty();
        st.received.push(ReceivedMessage {
            message_id: Some(report.original_message_id.to_string()),
            received_at: now,
            signature_valid,
            answer: report
                .group_status
                .map(|s| s.code().to_owned())
                .unwrap_or_default(),
            injected: injection.describe(),
        });
        let id = report.original_message_id.clone();
        if injection.silent && accepted {
            st.silent.insert(id.clone());
        }
        if let Some(code) = &injection.return_code {
            for tx in &report.transactions {
                if matches!(
                    tx.status,
                    PaymentStatus::AcceptedSettlementCompleted | PaymentStatus::Pending
                ) {
                    st.to_return.insert(tx.end_to_end_id.clone(), code.clone());
                }
            }
        }
        let notices = st.bank.take_notifications();
        app.enqueue_notifications(&mut st, notices);
        app.schedule_returns(&mut st, &report);
        // The final status, again, as a callback: the platform learns it even when the
        // synchronous answer is lost.
        if accepted && report.transactions.iter().all(|t| t.status.is_final()) {
            match st.bank.query(&id, now) {
                Ok(Some(final_report)) => {
                    app.enqueue(&mut st, "pain.002", Some(&id), &final_report)
                }
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "final report not signed"),
            }
        }
        let answer = if injection.silent && accepted {
            match st.bank.acknowledge(&id, now) {
                Ok(ack) => ack,
                Err(error) => return failure(StatusCode::INTERNAL_SERVER_ERROR, error),
            }
        } else {
            signed
        };
        (answer, injection.drop_response && accepted)
    };
    if drop_response {
        app.sleep(app.timing.drop_hold).await;
    }
    signed_xml(StatusCode::OK, &answer)
}

/// `POST /h2h/freeze`: a signed freeze or unfreeze request, answered with signed JSON.
async fn freeze(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = app.gate().await {
        return refusal;
    }
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Signature::from_base64(v).ok())
        .unwrap_or_else(|| Signature::from_base64("").expect("empty is valid base64"));
    let mut st = app.lock();
    let now = st.clock.now();
    st.counters.freeze_requests += 1;
    match st.bank.receive_freeze(&body, &signature, now) {
        Ok(signed) => signed_json(&signed),
        Err(error) => failure(StatusCode::BAD_REQUEST, error),
    }
}

/// `GET /h2h/freeze/{request_id}`: the answer to a request, or 404 when never taken.
async fn freeze_status(State(app): State<App>, Path(request_id): Path<String>) -> Response {
    if let Some(refusal) = app.gate().await {
        return refusal;
    }
    let Ok(request_id) = MessageId::new(request_id) else {
        return failure(StatusCode::BAD_REQUEST, "not a request id");
    };
    let mut st = app.lock();
    st.counters.status_queries += 1;
    match st.bank.query_freeze(&request_id) {
        Ok(Some(signed)) => signed_json(&signed),
        Ok(None) => failure(StatusCode::NOT_FOUND, "request never received"),
        Err(error) => failure(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}

fn signed_json(signed: &SignedReport) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::HeaderName::from_static(SIGNATURE_HEADER),
                signed.signature.to_base64(),
            ),
        ],
        signed.xml.clone(),
    )
        .into_response()
}

async fn status(State(app): State<App>, Path(message_id): Path<String>) -> Response {
    if let Some(refusal) = app.gate().await {
        return refusal;
    }
    let Ok(message_id) = MessageId::new(message_id) else {
        return failure(StatusCode::BAD_REQUEST, "not a message id");
    };
    let mut st = app.lock();
    st.counters.status_queries += 1;
    let now = st.clock.now();
    match st.bank.query(&message_id, now) {
        Ok(Some(signed)) => signed_xml(StatusCode::OK, &signed),
        Ok(None) => failure(StatusCode::NOT_FOUND, "message never received"),
        Err(error) => failure(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}

#[derive(Deserialize)]
struct DateQuery {
    date: NaiveDate,
}

async fn statement(
    State(app): State<App>,
    Path(account): Path<String>,
    Query(q): Query<DateQuery>,
) -> Response {
    if let Some(refusal) = app.gate().await {
        return refusal;
    }
    let Ok(account) = AccountNumber::new(account) else {
        return failure(StatusCode::BAD_REQUEST, "not an account number");
    };
    let mut st = app.lock();
    st.counters.statements += 1;
    let now = st.clock.now();
    match st.bank.statement(&account, q.date, now) {
        Ok(Some(signed)) => signed_xml(StatusCode::OK, &signed),
        Ok(None) => failure(StatusCode::NOT_FOUND, "no such account"),
        Err(error) => failure(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}

async fn get_behaviour(State(app): State<App>) -> Response {
    axum::Json(app.lock().behaviour.clone()).into_response()
}

async fn set_behaviour(
    State(app): State<App>,
    axum::Json(update): axum::Json<BehaviourUpdate>,
) -> Response {
    let mut st = app.lock();
    update.apply(&mut st.behaviour);
    axum::Json(st.behaviour.clone()).into_response()
}

async fn account(State(app): State<App>, Path(account): Path<String>) -> Response {
    let Ok(account) = AccountNumber::new(account) else {
        return failure(StatusCode::BAD_REQUEST, "not an account number");
    };
    let st = app.lock();
    match st.bank.balance(&account) {
        Some(balance) => axum::Json(json!({
            "account": account,
            "balance": balance,
            "available": st.bank.available(&account),
            "bookings": st.bank.bookings(&account),
        }))
        .into_response(),
        None => failure(StatusCode::NOT_FOUND, "no such account"),
    }
}

#[derive(Deserialize)]
struct CreditBody {
    amount: Decimal,
    #[serde(default = "cny")]
    currency: String,
}

fn cny() -> String {
    "CNY".into()
}

async fn credit(
    State(app): State<App>,
    Path(account): Path<String>,
    axum::Json(body): axum::Json<CreditBody>,
) -> Response {
    let Ok(account) = AccountNumber::new(account) else {
        return failure(StatusCode::BAD_REQUEST, "not an account number");
    };
    let amount = body
        .currency
        .parse::<Currency>()
        .map_err(|e| e.to_string())
        .and_then(|c| Money::new(body.amount, c).map_err(|e| e.to_string()));
    let result = amount.and_then(|amount| app.credit(&account, amount));
    match result {
        Ok(()) => {
            let balance = app.lock().bank.balance(&account);
            axum::Json(json!({ "account": account, "balance": balance })).into_response()
        }
        Err(error) => failure(StatusCode::BAD_REQUEST, error),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    now: Option<DateTime<chrono::FixedOffset>>,
    #[serde(default)]
    frozen: bool,
    advance_seconds: Option<i64>,
    #[serde(default)]
    real: bool,
}

fn clock_json(clock: &SimClock) -> serde_json::Value {
    json!({ "now": clock.now(), "offset_ms": clock.offset_ms, "frozen_at": clock.frozen_at })
}

async fn get_clock(State(app): State<App>) -> Response {
    axum::Json(clock_json(&app.lock().clock)).into_response()
}

async fn set_clock(State(app): State<App>, axum::Json(body): axum::Json<ClockBody>) -> Response {
    {
        let mut st = app.lock();
        if body.real {
            st.clock = SimClock::default();
        }
        if let Some(now) = body.now {
            let now = now.with_timezone(&Utc);
            st.clock = if body.frozen {
                SimClock {
                    offset_ms: 0,
                    frozen_at: Some(now),
                }
            } else {
                SimClock {
                    offset_ms: (now - Utc::now()).num_milliseconds(),
                    frozen_at: None,
                }
            };
        }
        if let Some(seconds) = body.advance_seconds {
            let step = chrono::Duration::seconds(seconds);
            match &mut st.clock.frozen_at {
                Some(at) => *at += step,
                None => st.clock.offset_ms += step.num_milliseconds(),
            }
        }
    }
    app.tick();
    axum::Json(clock_json(&app.lock().clock)).into_response()
}

#[derive(Deserialize)]
struct ReturnBody {
    end_to_end_id: String,
    reason: String,
}

async fn return_now(State(app): State<App>, axum::Json(body): axum::Json<ReturnBody>) -> Response {
    let Ok(e2e) = EndToEndId::new(body.end_to_end_id) else {
        return failure(StatusCode::BAD_REQUEST, "not an end-to-end id");
    };
    match app.return_payment(&e2e, &body.reason) {
        Ok(()) => axum::Json(json!({ "returned": e2e })).into_response(),
        Err(error) => failure(StatusCode::CONFLICT, error),
    }
}

async fn messages(State(app): State<App>) -> Response {
    axum::Json(app.lock().received.clone()).into_response()
}

async fn callbacks(State(app): State<App>) -> Response {
    axum::Json(app.lock().callbacks.clone()).into_response()
}

async fn counters(State(app): State<App>) -> Response {
    axum::Json(app.counters()).into_response()
}

//! `spawn_app()`: the API on a random port with a database of its own, and a world of
//! organisations, users, accounts and a partner key to act in.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use api::directory::{self, NewOrganisation, NewUser};
use api::policy::{OrgKind, Role};
use api::{ApiConfig, AppState, KeyEncryption};
use chrono::Utc;
use ledger::{Currency, Ledger, LedgerConfig, NewAccount, NewEntry, Side};
use reqwest::{Method, RequestBuilder, Response};
use rust_decimal_macros::dec;
use sea_orm::{ActiveValue::Set, EntityTrait};
use serde_json::Value;
use testkit::{Backend, TestDb};
use uuid::Uuid;

/// Every test user's password (hashed once per test binary: argon2 is slow on purpose).
pub const PASSWORD: &str = "correct horse battery staple";

fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| api::crypto::hash_password(PASSWORD).expect("argon2"))
        .clone()
}

fn init_tracing() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("TEST_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Who calls: one per role, a second admin at a brand, and a partner signing with its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Who {
    RootAdmin,
    BrandAdmin,
    StationOwner,
    StationManager,
    Cashier,
    FleetManager,
    TreasuryMaker,
    TreasuryChecker,
    PartnerUser,
    PartnerKey,
}

impl Who {
    pub const ALL: [Who; 10] = [
        Who::RootAdmin,
        Who::BrandAdmin,
        Who::StationOwner,
        Who::StationManager,
        Who::Cashier,
        Who::FleetManager,
        Who::TreasuryMaker,
        Who::TreasuryChecker,
        Who::PartnerUser,
        Who::PartnerKey,
    ];

    /// Username, role and organisation key of a user caller.
    pub fn user(self) -> Option<(&'static str, Role, &'static str)> {
        Some(match self {
            Who::RootAdmin => ("root-admin", Role::Admin, "root"),
            Who::BrandAdmin => ("brand-admin", Role::Admin, "brand-a"),
            Who::StationOwner => ("station-owner", Role::StationOwner, "company-a"),
            Who::StationManager => ("station-manager", Role::StationManager, "station-a1"),
            Who::Cashier => ("cashier", Role::Cashier, "station-a1"),
            Who::FleetManager => ("fleet-manager", Role::FleetManager, "fleet-f"),
            Who::TreasuryMaker => ("treasury-maker", Role::TreasuryMaker, "root"),
            Who::TreasuryChecker => ("treasury-checker", Role::TreasuryChecker, "root"),
            Who::PartnerUser => ("partner", Role::Partner, "partner-p"),
            Who::PartnerKey => return None,
        })
    }

    /// The organisation the caller acts for.
    pub fn home(self) -> &'static str {
        match self.user() {
            Some((_, _, org)) => org,
            None => "partner-p",
        }
    }
}

/// Organisations of the test world: key, parent key, kind. `*-b`, `fleet-g` and `partner-q`
/// are "another organisation" for everyone below the root.
pub const ORGS: &[(&str, Option<&str>, OrgKind)] = &[
    ("root", None, OrgKind::PlatformOperator),
    ("brand-a", Some("root"), OrgKind::Brand),
    ("company-a", Some("brand-a"), OrgKind::StationCompany),
    ("station-a1", Some("company-a"), OrgKind::Station),
    ("brand-b", Some("root"), OrgKind::Brand),
    ("company-b", Some("brand-b"), OrgKind::StationCompany),
    ("station-b1", Some("company-b"), OrgKind::Station),
    ("fleet-f", Some("root"), OrgKind::FleetCompany),
    ("fleet-g", Some("root"), OrgKind::FleetCompany),
    ("partner-p", Some("root"), OrgKind::Partner),
    ("partner-q", Some("root"), OrgKind::Partner),
];

pub struct World {
    pub orgs: HashMap<&'static str, Uuid>,
    pub users: HashMap<Who, Uuid>,
    pub tokens: HashMap<Who, String>,
    /// One account per organisation, with a little money on it.
    pub accounts: HashMap<&'static str, Uuid>,
    /// Partner P's key: id and secret.
    pub key_id: Uuid,
    pub key_secret: String,
    /// A workflow instance (a canary, started, with no workers running).
    pub instance: Uuid,
    /// Sub-accounts at the custodial bank (row ids): `master` (the platform's), `company-a`
    /// and `company-b`, each company's funded with 1,000,000.00 CNY.
    pub sub_accounts: HashMap<&'static str, Uuid>,
    /// A payout account of `company-a` and of `company-b`.
    pub external_accounts: HashMap<&'static str, Uuid>,
    /// A till of `station-a1` and of `station-b1`: id and key. Both stations have signed
    /// the six simulated channels on their default terms.
    pub terminals: HashMap<&'static str, (Uuid, String)>,
}

/// The custodial bank of the test world: the simulator (callbacks to this app), and the
/// engine the treasury area starts and signals instances on (no workers until
/// [`TestApp::run_treasury_workers`]).
pub struct TreasuryWorld {
    pub bank: sim::bank::BankSimHandle,
    pub engine: workflows::Engine,
}

/// The custodial bank's CNAPS code in the test world.
pub const CUSTODIAN: &str = "308584000013";
pub const SUB_ACCOUNTS: &[(&str, &str)] = &[
    ("master", "3100000000000000"),
    ("company-a", "3100000000000101"),
    ("company-b", "3100000000000201"),
];

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub world: World,
    pub treasury: TreasuryWorld,
    /// The six simulated payment channels (notifications come to this app).
    pub retail: sim::retail::Retail,
    /// Kept for as long as the app runs: dropping it removes a SQLite file.
    _db: TestDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    /// In-process workers for the treasury workflow; they stop when dropped.
    pub fn run_treasury_workers(&self) -> workflows::Workers {
        workflows::Workers::spawn(&self.treasury.engine, 1, 1)
    }

    /// In-process workers for every workflow (one engine runs them all); they stop when
    /// dropped.
    pub fn run_workers(&self) -> workflows::Workers {
        workflows::Workers::spawn(&self.treasury.engine, 2, 2)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The API with default settings on a fresh database.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, ApiConfig::default()).await
}

/// The API with the given settings on a fresh database of `backend`.
pub async fn spawn_app_with(backend: Backend, config: ApiConfig) -> TestApp {
    init_tracing();
    let db = TestDb::fresh(backend).await;
    let ledger = Ledger::start(
        db.db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );
    let state = AppState::new(db.db.clone(), ledger, config, KeyEncryption::generate());
    let world = seed(&state).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let retail = sim::retail::start(payments::channels::Timeouts {
        connect_ms: 500,
        request_ms: 1_000,
    })
    .await
    .expect("channel simulators");
    retail.notify_to(&format!("{base}/v1/payments/notifications"));
    let (context, treasury, payments) = treasury_context(&state, &base, &retail).await;
    let state = state.with_treasury(context).with_payments(payments);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = state.clone();
    tokio::spawn(async move {
        api::serve(listener, served, async move {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    TestApp {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        state,
        world,
        treasury,
        retail,
        _db: db,
        stop: Some(stop),
    }
}

async fn seed(state: &AppState) -> World {
    let db = &state.db;
    let mut orgs = HashMap::new();
    for (key, parent, kind) in ORGS {
        let created = directory::create_organisation(
            db,
            NewOrganisation {
                id: Uuid::now_v7(),
                parent_id: parent.map(|p| orgs[p]),
                kind: *kind,
                name: format!("Org {key}"),
                ledger_owner: None,
            },
        )
        .await
        .expect("organisation");
        orgs.insert(*key, created.id);
    }
    let mut users = HashMap::new();
    let mut tokens = HashMap::new();
    for who in Who::ALL {
        let Some((username, role, org)) = who.user() else {
            continue;
        };
        let user = directory::create_user(
            db,
            NewUser {
                id: Uuid::now_v7(),
                organisation_id: orgs[org],
                username: username.to_owned(),
                display_name: username.to_owned(),
                role,
            },
            password_hash(),
        )
        .await
        .expect("user");
        let session = api::auth::open_session(db, user.id, state.config.session_ttl)
            .await
            .expect("session");
        users.insert(who, user.id);
        tokens.insert(who, session.token);
    }
    let mut accounts = HashMap::new();
    for (key, _, _) in ORGS {
        let account = state
            .ledger
            .create_account(NewAccount::new(
                orgs[key].to_string(),
                "1000.test",
                format!("Account of {key}"),
                Currency::CNY,
                Side::Debit,
            ))
            .await
            .expect("account");
        accounts.insert(*key, account.id);
    }
    // Some movements: the root's account pays each station.
    for (i, station) in ["station-a1", "station-b1"].iter().enumerate() {
        state
            .ledger
            .post_entry(NewEntry::transfer(
                format!("seed-{i}"),
                "seed",
                accounts[station],
                accounts["root"],
                dec!(100.25),
                Currency::CNY,
            ))
            .await
            .expect("entry");
    }
    let (key_id, key_secret) = create_key(state, orgs["partner-p"]).await;
    let engine = workflows::Engine::new(
        db.clone(),
        workflows::canary::register(workflows::Registry::default(), db.clone()),
    );
    let instance = engine
        .start::<workflows::canary::Canary>(
            "matrix",
            workflows::canary::CanaryInput {
                steps: 1,
                record_effects: false,
            },
        )
        .await
        .expect("canary");
    let mut sub_accounts = HashMap::new();
    for (key, number) in SUB_ACCOUNTS {
        let owner = if *key == "master" { "root" } else { key };
        let row = treasury::accounts::open_sub_account(
            &state.ledger,
            treasury::accounts::NewSubAccount {
                owner_org: orgs[owner].to_string(),
                holder_name: format!("Org {owner}"),
                account: treasury::domain::AccountNumber::new(*number).expect("number"),
                bank: treasury::domain::BankCode::new(CUSTODIAN).expect("bank"),
                currency: Currency::CNY,
                is_master: *key == "master",
            },
            Utc::now(),
        )
        .await
        .expect("sub-account");
        sub_accounts.insert(*key, row);
    }
    for key in ["company-a", "company-b"] {
        state
            .ledger
            .post_entry(NewEntry::transfer(
                format!("fund-{key}"),
                "seed",
                sub_accounts["master"].ledger_account_id,
                sub_accounts[key].ledger_account_id,
                dec!(1000000),
                Currency::CNY,
            ))
            .await
            .expect("funding");
    }
    let mut external_accounts = HashMap::new();
    for (key, number) in [
        ("company-a", "6222020200000000101"),
        ("company-b", "6222020200000000201"),
    ] {
        let account = treasury::accounts::register(
            db,
            treasury::accounts::NewExternalAccount {
                owner_org: orgs[key].to_string(),
                holder_name: format!("Org {key} at its own bank"),
                account: treasury::domain::AccountNumber::new(number).expect("number"),
                bank: treasury::domain::BankCode::new("102100099996").expect("bank"),
                branch_name: "ICBC Xi'an Gaoxin Branch".into(),
            },
            "seed",
            Utc::now(),
        )
        .await
        .expect("external account");
        external_accounts.insert(key, account.id);
    }
    let mut terminals = HashMap::new();
    for station in ["station-a1", "station-b1"] {
        let retail_terms = retail_terms();
        for terms in retail_terms {
            payments::stations::set_channel(
                &state.ledger,
                orgs[station],
                &orgs[station].to_string(),
                terms,
                Utc::now(),
            )
            .await
            .expect("channel terms");
        }
        let registered = payments::stations::register_terminal(
            db,
            orgs[station],
            "till-1",
            "Forecourt till 1",
            Utc::now(),
        )
        .await
        .expect("terminal");
        terminals.insert(station, (registered.terminal.id, registered.key));
    }
    World {
        terminals,
        orgs,
        users,
        tokens,
        accounts,
        key_id,
        key_secret,
        instance,
        sub_accounts: sub_accounts.into_iter().map(|(k, v)| (k, v.id)).collect(),
        external_accounts,
    }
}

/// The default terms of the six simulated channels, without starting them.
fn retail_terms() -> Vec<payments::model::ChannelConfig> {
    use payments::model::{ChannelConfig, ChannelId, FeeMode, FeeRate, Method};
    let channel = |id: &str, methods: Vec<Method>, bp: i64, priority: u32| ChannelConfig {
        id: ChannelId::new(id).expect("id"),
        party: match id {
            i if i.starts_with("wxpay") => payments::model::Party::WechatPay,
            i if i.starts_with("alipay") => payments::model::Party::Alipay,
            _ => payments::model::Party::Acquirer,
        },
        methods,
        currency: Currency::CNY,
        fee_rate: FeeRate::new(rust_decimal::Decimal::new(bp, 4)).expect("rate"),
        fee_mode: FeeMode::DeductedAtPayment,
        single_limit: ledger::Money::from_minor(5_000_000, Currency::CNY),
        daily_limit: ledger::Money::from_minor(500_000_000, Currency::CNY),
        priority,
        maintenance: vec![],
        enabled: true,
    };
    let wx = || vec![Method::WechatPayCode, Method::WechatPayQr];
    let ali = || vec![Method::AlipayCode, Method::AlipayQr];
    vec![
        channel("wxpay-direct", wx(), 38, 1),
        channel("wxpay-via-bank-a", wx(), 38, 2),
        channel("alipay-direct", ali(), 38, 1),
        channel("alipay-via-acquirer-b", ali(), 38, 2),
        channel("card-acquirer-a", vec![Method::BankCard], 50, 1),
        channel("card-acquirer-b", vec![Method::BankCard], 50, 2),
    ]
}

fn key_pair() -> (treasury::signing::Signer, treasury::signing::Verifier) {
    let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
    let pem = openssl::pkey::PKey::from_rsa(rsa)
        .expect("pkey")
        .private_key_to_pem_pkcs8()
        .expect("pem");
    let signer = treasury::signing::Signer::from_pem(&pem).expect("signer");
    let verifier = signer.verifier().expect("verifier");
    (signer, verifier)
}

/// The treasury area over a bank simulator whose callbacks come to `base`.
async fn treasury_context(
    state: &AppState,
    base: &str,
    retail: &sim::retail::Retail,
) -> (
    api::routes::treasury::TreasuryContext,
    TreasuryWorld,
    api::routes::payments::PaymentsContext,
) {
    use std::sync::Arc;
    let rails = || {
        treasury::rails::Rails::new(
            treasury::rails::RailsConfig::default(),
            treasury::calendar::BusinessCalendar::new(Default::default()).expect("calendar"),
        )
        .expect("rails")
    };
    let (platform, platform_public) = key_pair();
    let (bank_key, bank_public) = key_pair();
    let mut config = sim::bank::BankSimConfig::new(bank_key, platform_public, rails());
    config.accounts = SUB_ACCOUNTS
        .iter()
        .filter(|(key, _)| *key != "master")
        .map(|(_, number)| {
            (
                treasury::domain::AccountNumber::new(*number).expect("number"),
                ledger::Money::new(dec!(1000000), Currency::CNY).expect("money"),
            )
        })
        .collect();
    config.callback_url = Some(format!("{base}/v1/treasury/bank/callbacks"));
    config.callback_delay = Duration::from_millis(20);
    config.tick = Duration::from_millis(100);
    let bank = sim::bank::start(config, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bank simulator");
    let client = treasury::bank::BankClient::new(
        treasury::bank::BankClientConfig {
            request_timeout: Duration::from_secs(5),
            ..treasury::bank::BankClientConfig::new(bank.base_url())
        },
        platform.clone(),
        bank_public.clone(),
    )
    .expect("bank client");
    let policy = treasury::approval::ApprovalPolicy::new(treasury::approval::PolicyConfig {
        rules: vec![treasury::approval::Rule {
            name: "every instruction".into(),
            when: Default::default(),
            steps: vec![treasury::approval::Step {
                role: treasury::approval::Role::new("treasury_checker"),
                approvals: 1,
                eligible: vec![],
            }],
        }],
        valid_for_minutes: 240,
        tranches: Default::default(),
    })
    .expect("policy");
    let executor = Arc::new(treasury::execution::Executor {
        instructions: treasury::store::Instructions::new(
            state.ledger.clone(),
            policy,
            Arc::new(Utc::now),
        ),
        rails: Arc::new(rails()),
        bank: client,
        signer: platform,
        clock: Arc::new(Utc::now),
        initiating_party: "Forecourt Platform".into(),
    });
    let registry = workflows::bank_instruction::register_activities(
        // Every type of the database: the world's canary too, or workers stall on it.
        workflows::canary::register(workflows::Registry::default(), state.db.clone())
            .workflow::<workflows::bank_instruction::BankInstruction>()
            .workflow::<workflows::pos_payment::PosPayment>()
            .workflow::<workflows::refund_approval::RefundApproval>(),
        executor.clone(),
    );
    let channels = Arc::new(retail.adapters());
    let registry = workflows::pos_payment::register_channel_activities(registry, channels.clone());
    let registry =
        workflows::pos_payment::register_store_activities(registry, state.ledger.clone());
    let registry = workflows::refund_approval::register_refund_activities(
        registry,
        state.ledger.clone(),
        channels.clone(),
    );
    let engine = workflows::Engine::new(state.db.clone(), registry);
    let payments = api::routes::payments::PaymentsContext {
        engine: engine.clone(),
        channels,
        parties: retail.parties(),
        flow: payments::flow::FlowPolicy {
            first_query_ms: 100,
            max_query_ms: 400,
            max_queries: 10,
            max_reversals: 5,
            reversal_retry_ms: 100,
            max_attempts: 3,
        },
        wait: Duration::from_secs(3),
        activity_timeout_ms: 3_000,
        approval_deadline: Duration::from_secs(600),
        health: payments::health::HealthBook::new(api::routes::payments::BREAKER).into(),
    };
    let timing = workflows::bank_instruction::Timing {
        approval_poll_ms: 500,
        status_poll_ms: 200,
        status_poll_max_ms: 1_000,
        return_window_ms: 1_000,
        ..Default::default()
    };
    (
        api::routes::treasury::TreasuryContext {
            executor,
            engine: engine.clone(),
            bank: bank_public,
            timing,
        },
        TreasuryWorld { bank, engine },
        payments,
    )
}

/// Stores an API key for an organisation, as the API would, and returns id and secret.
pub async fn create_key(state: &AppState, org: Uuid) -> (Uuid, String) {
    let id = Uuid::now_v7();
    let secret = api::crypto::random_secret("fcs_");
    entities::api_keys::Entity::insert(entities::api_keys::ActiveModel {
        id: Set(id),
        organisation_id: Set(org),
        name: Set("test key".into()),
        secret_ciphertext: Set(state.keys.encrypt(&secret, id.as_bytes()).expect("encrypt")),
        encryption_key_id: Set(state.keys.id().to_owned()),
        created_by: Set(None),
        created_at: Set(Utc::now()),
        revoked_at: Set(None),
    })
    .exec_without_returning(&state.db)
    .await
    .expect("api key");
    (id, secret)
}

/// Creates a user directly (no API call) and returns its id.
pub async fn create_user(state: &AppState, org: Uuid, role: Role) -> Uuid {
    let id = Uuid::now_v7();
    directory::create_user(
        &state.db,
        NewUser {
            id,
            organisation_id: org,
            username: format!("u-{}", id.simple()),
            display_name: "someone".into(),
            role,
        },
        password_hash(),
    )
    .await
    .expect("user");
    id
}

/// A request as the tests describe it.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
    pub idempotency_key: Option<String>,
    pub headers: Vec<(&'static str, String)>,
}

impl Call {
    pub fn get(path: impl Into<String>) -> Call {
        Call {
            method: Method::GET,
            path: path.into(),
            body: None,
            idempotency_key: None,
            headers: Vec::new(),
        }
    }

    /// A POST with a fresh Idempotency-Key.
    pub fn post(path: impl Into<String>, body: Option<Value>) -> Call {
        Call {
            method: Method::POST,
            path: path.into(),
            body,
            idempotency_key: Some(Uuid::new_v4().to_string()),
            headers: Vec::new(),
        }
    }

    /// The same call with a header added.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Call {
        self.headers.push((name, value.into()));
        self
    }

    /// The same call made by a till: with the terminal's key.
    pub fn at_till(self, key: &str) -> Call {
        self.header("forecourt-terminal-key", key)
    }
}

/// What a partner signs with: its key, the time of signing and a fresh nonce.
pub struct Signer<'a> {
    pub key_id: Uuid,
    pub secret: &'a str,
    pub timestamp: i64,
    pub nonce: &'a str,
}

/// Signs a request as a partner would.
pub fn signed(
    builder: RequestBuilder,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    signer: &Signer<'_>,
) -> RequestBuilder {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let signature = api::signature::sign(
        signer.secret,
        method,
        path,
        query,
        signer.timestamp,
        signer.nonce,
        body,
    );
    builder
        .header("x-api-key", signer.key_id.to_string())
        .header("x-timestamp", signer.timestamp.to_string())
        .header("x-nonce", signer.nonce)
        .header("x-signature", signature)
}

pub fn nonce() -> String {
    Uuid::new_v4().simple().to_string()
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a call as `who`: a bearer token, or a signature for the partner key.
    pub async fn call(&self, who: Option<Who>, call: &Call) -> Response {
        let body = call
            .body
            .as_ref()
            .map(|b| serde_json::to_vec(b).expect("json"))
            .unwrap_or_default();
        let mut builder = self
            .client
            .request(call.method.clone(), self.url(&call.path));
        if call.body.is_some() {
            builder = builder
                .header("content-type", "application/json")
                .body(body.clone());
        }
        if let Some(key) = &call.idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        for (name, value) in &call.headers {
            builder = builder.header(*name, value);
        }
        builder = match who {
            None => builder,
            Some(Who::PartnerKey) => signed(
                builder,
                call.method.as_str(),
                &call.path,
                &body,
                &Signer {
                    key_id: self.world.key_id,
                    secret: &self.world.key_secret,
                    timestamp: Utc::now().timestamp(),
                    nonce: &nonce(),
                },
            ),
            Some(who) => builder.bearer_auth(&self.world.tokens[&who]),
        };
        builder.send().await.expect("request")
    }

    /// Logs in through the API and returns the token.
    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.client
            .post(self.url("/v1/auth/login"))
            .json(&serde_json::json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login")
    }
}

/// Reads a problem body and checks its media type, status and kind.
pub async fn expect_problem(response: Response, status: u16, kind: &str) -> Value {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of a {kind} problem"
    );
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .expect("every response has a request id");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(
        body["type"],
        format!("urn:forecourt:problem:{kind}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["instance"], request_id.as_str(), "{body}");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()));
    body
}

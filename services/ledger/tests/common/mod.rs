//! Shared setup for the ledger's scenarios: a ledger on a fresh database, a clock the test
//! moves by hand, and short constructors for the accounts the scenarios use.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use ledger::{Currency, Ledger, LedgerConfig, NewAccount, Side};
use rust_decimal::Decimal;
use testkit::{Backend, TestDb};
use uuid::Uuid;

/// A clock that stands still until the test moves it.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(
            Utc.with_ymd_and_hms(2026, 11, 2, 8, 0, 0).unwrap(),
        )))
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

pub struct Books {
    pub ledger: Ledger,
    pub clock: ManualClock,
    pub db: TestDb,
}

pub fn config(clock: &ManualClock) -> LedgerConfig {
    let c = clock.clone();
    LedgerConfig {
        clock: Arc::new(move || c.now()),
        hold_sweep_every: None,
        ..LedgerConfig::default()
    }
}

pub async fn books(backend: Backend) -> Books {
    let db = TestDb::fresh(backend).await;
    let clock = ManualClock::new();
    let ledger = Ledger::start(db.db.clone(), config(&clock));
    Books { ledger, clock, db }
}

impl Books {
    /// A second ledger on its own pool: what another process would be.
    pub async fn second_process(&self) -> Ledger {
        Ledger::start(self.db.connect_again().await, config(&self.clock))
    }

    /// A prepaid balance (credit-normal) that must never go negative.
    pub async fn wallet(&self, name: &str) -> Uuid {
        self.open(
            NewAccount::new("fleet-1", "2203.prepaid", name, Currency::CNY, Side::Credit)
                .debits_must_not_exceed_credits(),
        )
        .await
    }

    /// An unconstrained debit-normal account, like a bank clearing account.
    pub async fn asset(&self, name: &str) -> Uuid {
        self.open(NewAccount::new(
            "platform",
            "1002.bank",
            name,
            Currency::CNY,
            Side::Debit,
        ))
        .await
    }

    /// An unconstrained credit-normal account, like a station's sales.
    pub async fn revenue(&self, name: &str) -> Uuid {
        self.open(NewAccount::new(
            "station-1",
            "6001.sales",
            name,
            Currency::CNY,
            Side::Credit,
        ))
        .await
    }

    pub async fn open(&self, account: NewAccount) -> Uuid {
        self.ledger.create_account(account).await.unwrap().id
    }

    /// Puts `amount` on a wallet from the bank.
    pub async fn top_up(&self, bank: Uuid, wallet: Uuid, amount: Decimal) {
        self.ledger
            .post_entry(ledger::NewEntry::transfer(
                format!("topup-{}", Uuid::new_v4()),
                "topup",
                bank,
                wallet,
                amount,
                Currency::CNY,
            ))
            .await
            .unwrap();
    }

    pub async fn posting_count(&self) -> usize {
        self.ledger.audit().await.unwrap().postings
    }

    pub async fn assert_consistent(&self) {
        let report = self.ledger.audit().await.unwrap();
        assert!(report.problems.is_empty(), "audit: {:#?}", report.problems);
    }
}

pub fn cny(amount: Decimal) -> ledger::Money {
    ledger::Money::new(amount, Currency::CNY).unwrap()
}

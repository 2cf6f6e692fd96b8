//! Property tests: random sequences of entries, holds, posts, voids, expiries and replays,
//! on PostgreSQL and on SQLite. After every sequence the audit recomputes the books; after
//! every replay nothing may have changed.

mod common;

use std::collections::HashMap;

use chrono::Duration;
use common::{Books, books};
use ledger::{Currency, LedgerError, NewAccount, NewEntry, PostHold, Receipt, Side, VoidHold};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rust_decimal::Decimal;
use testkit::Backend;
use uuid::Uuid;

#[derive(Clone, Debug)]
enum Step {
    Transfer {
        from: usize,
        to: usize,
        fen: i64,
        key: u8,
    },
    Hold {
        from: usize,
        to: usize,
        fen: i64,
        key: u8,
        expires_in_min: Option<i64>,
    },
    Post {
        hold: usize,
        percent: Option<u8>,
        key: u8,
    },
    Void {
        hold: usize,
        key: u8,
    },
    Advance {
        minutes: i64,
    },
    Expire,
    Replay {
        earlier: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let account = 0..4usize;
    let fen = 1..20_000i64;
    let key = 0..24u8;
    prop_oneof![
        4 => (account.clone(), account.clone(), fen.clone(), key.clone())
            .prop_map(|(from, to, fen, key)| Step::Transfer { from, to, fen, key }),
        3 => (account.clone(), account, fen, key.clone(), proptest::option::of(0..10i64))
            .prop_map(|(from, to, fen, key, expires_in_min)| Step::Hold { from, to, fen, key, expires_in_min }),
        2 => (0..8usize, proptest::option::of(1..=100u8), key.clone())
            .prop_map(|(hold, percent, key)| Step::Post { hold, percent, key }),
        1 => (0..8usize, key).prop_map(|(hold, key)| Step::Void { hold, key }),
        1 => (0..6i64).prop_map(|minutes| Step::Advance { minutes }),
        1 => Just(Step::Expire),
        2 => (0..64usize).prop_map(|earlier| Step::Replay { earlier }),
    ]
}

/// A request that succeeded, kept to be replayed.
#[derive(Clone, Debug)]
enum Sent {
    Entry(NewEntry),
    Post(PostHold),
    Void(VoidHold),
}

struct Case<'a> {
    b: &'a Books,
    accounts: Vec<Uuid>,
    prefix: String,
    holds: Vec<Uuid>,
    /// Successful requests by key, with their receipts.
    sent: Vec<(Sent, Receipt)>,
    keys: HashMap<String, usize>,
}

impl Case<'_> {
    fn key(&self, slot: u8) -> String {
        format!("{}-{slot}", self.prefix)
    }

    async fn send(&self, request: &Sent) -> Result<Receipt, LedgerError> {
        match request.clone() {
            Sent::Entry(e) => self.b.ledger.post_entry(e).await,
            Sent::Post(p) => self.b.ledger.post_hold(p).await,
            Sent::Void(v) => self.b.ledger.void_hold(v).await,
        }
    }

    async fn balances(&self) -> Vec<ledger::Balance> {
        let mut out = Vec::new();
        for id in &self.accounts {
            out.push(self.b.ledger.balance(*id).await.unwrap());
        }
        out
    }

    /// Sends a new request and checks the key discipline: a key that wrote before returns
    /// its original receipt for the same request and a conflict for another one.
    async fn fresh(&mut self, key: String, request: Sent) -> Result<(), TestCaseError> {
        let result = self.send(&request).await;
        match (self.keys.get(&key), result) {
            (Some(&i), Ok(receipt)) => {
                prop_assert!(receipt.replayed, "a used key wrote again");
                prop_assert_eq!(receipt.entry_id, self.sent[i].1.entry_id);
            }
            (Some(_), Err(err)) => {
                prop_assert!(
                    matches!(err, LedgerError::IdempotencyConflict { .. }),
                    "a used key answered {:?}",
                    err
                );
            }
            (None, Ok(receipt)) => {
                prop_assert!(!receipt.replayed);
                if let Sent::Entry(NewEntry { hold: Some(_), .. }) = &request {
                    self.holds.push(receipt.entry_id);
                }
                self.keys.insert(key, self.sent.len());
                self.sent.push((request, receipt));
            }
            (None, Err(err)) => {
                prop_assert!(
                    !matches!(
                        err,
                        LedgerError::Storage(_) | LedgerError::IdempotencyConflict { .. }
                    ),
                    "unexpected {:?}",
                    err
                );
            }
        }
        Ok(())
    }

    async fn run(&mut self, step: Step) -> Result<(), TestCaseError> {
        let cny = |fen: i64| Decimal::new(fen, 2);
        match step {
            Step::Transfer { from, to, fen, key } => {
                let k = self.key(key);
                let entry = NewEntry::transfer(
                    k.clone(),
                    "prop",
                    self.accounts[from],
                    self.accounts[to],
                    cny(fen),
                    Currency::CNY,
                );
                self.fresh(k, Sent::Entry(entry)).await?;
            }
            Step::Hold {
                from,
                to,
                fen,
                key,
                expires_in_min,
            } => {
                let k = self.key(key);
                let expires = expires_in_min.map(|m| self.b.clock.now() + Duration::minutes(m));
                let entry = NewEntry::transfer(
                    k.clone(),
                    "prop",
                    self.accounts[from],
                    self.accounts[to],
                    cny(fen),
                    Currency::CNY,
                )
                .as_hold(expires);
                self.fresh(k, Sent::Entry(entry)).await?;
            }
            Step::Post { hold, percent, key } => {
                if let Some(&hold_id) = self.holds.get(hold) {
                    let k = self.key(key);
                    let mut post = PostHold::full(k.clone(), hold_id);
                    if let Some(p) = percent {
                        let held = self
                            .b
                            .ledger
                            .entry(hold_id)
                            .await
                            .unwrap()
                            .unwrap()
                            .postings[0]
                            .amount;
                        let part =
                            (held.amount() * Decimal::from(p) / Decimal::from(100)).round_dp(2);
                        if part > Decimal::ZERO {
                            post.amount = Some(part);
                        }
                    }
                    self.fresh(k, Sent::Post(post)).await?;
                }
            }
            Step::Void { hold, key } => {
                if let Some(&hold_id) = self.holds.get(hold) {
                    let k = self.key(key);
                    self.fresh(
                        k.clone(),
                        Sent::Void(VoidHold {
                            idempotency_key: k,
                            hold_id,
                        }),
                    )
                    .await?;
                }
            }
            Step::Advance { minutes } => self.b.clock.advance(Duration::minutes(minutes)),
            Step::Expire => {
                self.b
                    .ledger
                    .expire_due_holds()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Step::Replay { earlier } => {
                if !self.sent.is_empty() {
                    let (request, receipt) = self.sent[earlier % self.sent.len()].clone();
                    let before = self.balances().await;
                    let again = self
                        .send(&request)
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert!(again.replayed);
                    prop_assert_eq!(again.entry_id, receipt.entry_id);
                    prop_assert_eq!(self.balances().await, before, "a replay changed balances");
                }
            }
        }
        Ok(())
    }
}

async fn open_case_accounts(b: &Books) -> Vec<Uuid> {
    let owner = format!("prop-{}", Uuid::new_v4());
    vec![
        // A prepaid wallet: never below zero.
        b.open(
            NewAccount::new(&owner, "wallet", "wallet", Currency::CNY, Side::Credit)
                .debits_must_not_exceed_credits(),
        )
        .await,
        // A receivable that may not be credited beyond what was debited, plus 20.00.
        b.open(
            NewAccount::new(
                &owner,
                "receivable",
                "receivable",
                Currency::CNY,
                Side::Debit,
            )
            .credits_must_not_exceed_debits()
            .credit_limit(Decimal::new(2000, 2)),
        )
        .await,
        // An unconstrained bank account.
        b.open(NewAccount::new(
            &owner,
            "bank",
            "bank",
            Currency::CNY,
            Side::Debit,
        ))
        .await,
        // A fleet on credit: may spend 50.00 before it has paid anything.
        b.open(
            NewAccount::new(&owner, "fleet", "fleet", Currency::CNY, Side::Credit)
                .debits_must_not_exceed_credits()
                .credit_limit(Decimal::new(5000, 2)),
        )
        .await,
    ]
}

fn random_sequences_keep_the_books_balanced(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let b = rt.block_on(books(backend));
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(step(), 1..40), |steps| {
        rt.block_on(async {
            let accounts = open_case_accounts(&b).await;
            let mut case = Case {
                b: &b,
                accounts,
                prefix: Uuid::new_v4().to_string(),
                holds: Vec::new(),
                sent: Vec::new(),
                keys: HashMap::new(),
            };
            for step in steps {
                case.run(step).await?;
            }
            let report = b
                .ledger
                .audit()
                .await
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(report.problems.is_empty(), "audit: {:#?}", report.problems);
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
}

#[test]
fn random_sequences_keep_the_books_balanced_on_postgres() {
    random_sequences_keep_the_books_balanced(Backend::Postgres);
}

#[test]
fn random_sequences_keep_the_books_balanced_on_sqlite() {
    random_sequences_keep_the_books_balanced(Backend::Sqlite);
}

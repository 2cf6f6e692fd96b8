//! The ledger's scenarios, each run on PostgreSQL and on SQLite.

mod common;

use chrono::Duration;
use common::{books, cny};
use ledger::{
    Currency, Effect, EntryKind, HoldStatus, LedgerError, MoneyError, NewAccount, NewEntry,
    PostHold, PostingInput, Side, StatementQuery, VoidHold,
};
use rust_decimal_macros::dec;
use testkit::Backend;
use uuid::Uuid;

testkit::scenarios!(
    a_fuel_sale_moves_money_and_the_statement_shows_the_running_balance,
    a_replayed_key_returns_the_original_entry_and_other_content_conflicts,
    each_kind_of_bad_input_gets_its_own_error_and_writes_nothing,
    a_pump_preauthorisation_posts_the_fuel_actually_taken_and_releases_the_rest,
    a_three_leg_hold_posted_in_part_stays_balanced,
    a_hold_of_several_payments_posts_leg_by_leg_what_happened,
    a_voided_hold_cannot_be_posted_or_voided_again,
    an_expired_hold_cannot_be_posted_and_the_sweep_releases_it,
    a_balance_as_of_a_time_counts_only_entries_effective_by_then,
    entries_are_found_by_the_document_that_caused_them,
    a_long_statement_pages_by_cursor_without_gaps_or_repeats,
    fifty_drivers_race_to_spend_one_fleet_balance_across_two_processes,
    twenty_retries_of_one_request_across_two_processes_post_once,
    an_account_closes_only_when_settled_and_then_refuses_postings,
    a_credit_limit_lets_a_fleet_consume_first_and_settle_later,
    an_entry_may_balance_in_two_currencies_at_once,
    creating_an_account_twice_is_idempotent,
    replaying_a_spend_after_the_wallet_ran_dry_returns_the_original_receipt,
    the_books_refuse_to_rewrite_or_delete_history,
);

async fn a_fuel_sale_moves_money_and_the_statement_shows_the_running_balance(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("truck 粤B-12345").await;
    let sales = b.revenue("station sales").await;
    b.top_up(bank, wallet, dec!(1000.00)).await;

    let receipt = b
        .ledger
        .post_entry(
            NewEntry::transfer(
                "sale-1",
                "pos:order-1",
                wallet,
                sales,
                dec!(312.45),
                Currency::CNY,
            )
            .description("92# petrol 40.2 L"),
        )
        .await
        .unwrap();
    assert_eq!(receipt.kind, EntryKind::Posted);
    assert!(!receipt.replayed);

    let balance = b.ledger.balance(wallet).await.unwrap();
    assert_eq!(balance.posted, cny(dec!(687.55)));
    assert_eq!(balance.available, cny(dec!(687.55)));
    assert_eq!(
        b.ledger.balance(sales).await.unwrap().posted,
        cny(dec!(312.45))
    );

    let page = b
        .ledger
        .statement(StatementQuery {
            account_id: wallet,
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    let running: Vec<_> = page.lines.iter().map(|l| l.running_balance).collect();
    assert_eq!(running, vec![cny(dec!(1000.00)), cny(dec!(687.55))]);
    assert_eq!(page.lines[1].description, "92# petrol 40.2 L");
    assert_eq!(page.lines[1].side, Side::Debit);
    assert_eq!(page.next_cursor, None);
    b.assert_consistent().await;
}

async fn a_replayed_key_returns_the_original_entry_and_other_content_conflicts(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    let entry = NewEntry::transfer("k-1", "ref", bank, wallet, dec!(50), Currency::CNY);
    let first = b.ledger.post_entry(entry.clone()).await.unwrap();
    b.clock.advance(Duration::seconds(30));
    let again = b.ledger.post_entry(entry.clone()).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.entry_id, first.entry_id);
    assert_eq!(again.recorded_at, first.recorded_at);
    // 50 and 50.00 are the same amount: still a replay.
    let same = NewEntry::transfer("k-1", "ref", bank, wallet, dec!(50.00), Currency::CNY);
    assert!(b.ledger.post_entry(same).await.unwrap().replayed);

    let different = NewEntry::transfer("k-1", "ref", bank, wallet, dec!(51), Currency::CNY);
    assert_eq!(
        b.ledger.post_entry(different).await.unwrap_err(),
        LedgerError::IdempotencyConflict { key: "k-1".into() }
    );
    assert_eq!(
        b.ledger.balance(wallet).await.unwrap().posted,
        cny(dec!(50))
    );
    b.assert_consistent().await;
}

async fn each_kind_of_bad_input_gets_its_own_error_and_writes_nothing(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    let sales = b.revenue("sales").await;
    let usd = b
        .open(NewAccount::new(
            "platform",
            "1002.bank.usd",
            "usd bank",
            Currency::USD,
            Side::Debit,
        ))
        .await;
    let closed = b.revenue("closed").await;
    b.ledger.close_account(closed).await.unwrap();
    b.top_up(bank, wallet, dec!(100)).await;

    let hold = b
        .ledger
        .post_entry(
            NewEntry::transfer("h-void", "pump-1", wallet, sales, dec!(40), Currency::CNY)
                .as_hold(None),
        )
        .await
        .unwrap();
    b.ledger
        .void_hold(VoidHold {
            idempotency_key: "v-1".into(),
            hold_id: hold.entry_id,
        })
        .await
        .unwrap();
    let small = b
        .ledger
        .post_entry(
            NewEntry::transfer("h-small", "pump-2", wallet, sales, dec!(20), Currency::CNY)
                .as_hold(None),
        )
        .await
        .unwrap();
    let expiring = b
        .ledger
        .post_entry(
            NewEntry::transfer("h-exp", "pump-3", wallet, sales, dec!(10), Currency::CNY)
                .as_hold(Some(b.clock.now() + Duration::minutes(5))),
        )
        .await
        .unwrap();
    b.clock.advance(Duration::minutes(6));

    let before = b.posting_count().await;
    let balances_before = (
        b.ledger.balance(wallet).await.unwrap(),
        b.ledger.balance(sales).await.unwrap(),
    );
    let t = |key: &str, debit, credit, amount| {
        NewEntry::transfer(key, "bad", debit, credit, amount, Currency::CNY)
    };
    let mut unbalanced = t("bad-1", wallet, sales, dec!(10));
    unbalanced.postings[1].amount = dec!(9.99);
    let mut mixed = t("bad-2", usd, sales, dec!(10));
    mixed.postings[0].currency = Currency::USD;
    mixed.postings[1].currency = Currency::USD;
    let mut one_leg = t("bad-3", wallet, sales, dec!(1));
    one_leg.postings.truncate(1);
    let ghost = Uuid::now_v7();

    type Check = Box<dyn Fn(&LedgerError) -> bool>;
    let cases: Vec<(NewEntry, Check)> = vec![
        (
            unbalanced,
            Box::new(move |e| {
                matches!(
                    e,
                    LedgerError::Unbalanced {
                        currency: Currency::CNY,
                        debits_minor: 1000,
                        credits_minor: 999
                    }
                )
            }),
        ),
        (
            mixed,
            Box::new(move |e| matches!(e, LedgerError::CurrencyMismatch { leg: 1, .. })),
        ),
        (
            t("bad-4", wallet, sales, dec!(1.005)),
            Box::new(move |e| {
                matches!(
                    e,
                    LedgerError::InvalidAmount {
                        leg: 0,
                        source: MoneyError::TooManyDecimals { .. }
                    }
                )
            }),
        ),
        (
            t("bad-5", wallet, sales, dec!(0)),
            Box::new(move |e| matches!(e, LedgerError::NonPositiveAmount { leg: 0 })),
        ),
        (
            t("bad-6", wallet, sales, dec!(-5)),
            Box::new(move |e| matches!(e, LedgerError::NonPositiveAmount { leg: 0 })),
        ),
        (
            t("bad-7", ghost, sales, dec!(1)),
            Box::new(move |e| *e == LedgerError::UnknownAccount(ghost)),
        ),
        (
            t("bad-8", bank, closed, dec!(1)),
            Box::new(move |e| *e == LedgerError::AccountClosed(closed)),
        ),
        (
            one_leg,
            Box::new(move |e| *e == LedgerError::TooFewPostings(1)),
        ),
        (
            t("bad-9", wallet, sales, dec!(1000)),
            Box::new(move |e| *e == LedgerError::ExceedsCredits { account: wallet }),
        ),
    ];
    for (entry, expected) in cases {
        let key = entry.idempotency_key.clone();
        let err = b.ledger.post_entry(entry).await.unwrap_err();
        assert!(expected(&err), "{key}: unexpected {err:?}");
    }
    let post = |key: &str, hold_id, amount| PostHold {
        amount,
        ..PostHold::full(key, hold_id)
    };
    assert_eq!(
        b.ledger
            .post_hold(post("p-1", hold.entry_id, None))
            .await
            .unwrap_err(),
        LedgerError::HoldNotPending {
            hold: hold.entry_id,
            status: HoldStatus::Voided
        }
    );
    assert_eq!(
        b.ledger
            .post_hold(post("p-2", small.entry_id, Some(dec!(20.01))))
            .await
            .unwrap_err(),
        LedgerError::ExceedsHold {
            hold: small.entry_id,
            requested_minor: 2001,
            held_minor: 2000
        }
    );
    assert_eq!(
        b.ledger
            .post_hold(post("p-3", expiring.entry_id, None))
            .await
            .unwrap_err(),
        LedgerError::HoldExpired(expiring.entry_id)
    );
    let unknown = Uuid::now_v7();
    assert_eq!(
        b.ledger
            .post_hold(post("p-4", unknown, None))
            .await
            .unwrap_err(),
        LedgerError::UnknownHold(unknown)
    );
    assert_eq!(
        b.posting_count().await,
        before,
        "a refused request wrote postings"
    );
    assert_eq!(
        (
            b.ledger.balance(wallet).await.unwrap(),
            b.ledger.balance(sales).await.unwrap()
        ),
        balances_before
    );
    // A refused key is not spent: the corrected request goes through under it.
    b.ledger
        .post_entry(t("bad-9", wallet, sales, dec!(10)))
        .await
        .expect("a key whose request was refused stays free");
    b.assert_consistent().await;
}

async fn a_pump_preauthorisation_posts_the_fuel_actually_taken_and_releases_the_rest(
    backend: Backend,
) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("card 8800").await;
    let sales = b.revenue("sales").await;
    b.top_up(bank, wallet, dec!(800)).await;
    let hold = b
        .ledger
        .post_entry(
            NewEntry::transfer(
                "preauth-1",
                "pump-7",
                wallet,
                sales,
                dec!(500),
                Currency::CNY,
            )
            .as_hold(Some(b.clock.now() + Duration::minutes(30))),
        )
        .await
        .unwrap();
    assert_eq!(hold.kind, EntryKind::Pending);
    let during = b.ledger.balance(wallet).await.unwrap();
    assert_eq!(during.posted, cny(dec!(800)));
    assert_eq!(during.available, cny(dec!(300)));
    assert_eq!(during.debits_pending, cny(dec!(500)));

    let post = PostHold::partial("fill-1", hold.entry_id, dec!(320.47));
    let posted = b.ledger.post_hold(post.clone()).await.unwrap();
    assert_eq!(posted.kind, EntryKind::PostPending);
    assert!(b.ledger.post_hold(post).await.unwrap().replayed);
    let after = b.ledger.balance(wallet).await.unwrap();
    assert_eq!(after.posted, cny(dec!(479.53)));
    assert_eq!(after.available, cny(dec!(479.53)));
    assert_eq!(after.debits_pending, cny(dec!(0)));
    assert_eq!(
        b.ledger.balance(sales).await.unwrap().posted,
        cny(dec!(320.47))
    );
    let stored = b.ledger.hold(hold.entry_id).await.unwrap().unwrap();
    assert_eq!(stored.status, HoldStatus::Posted);
    assert_eq!(stored.resolved_entry_id, Some(posted.entry_id));
    // A second, different post of the same hold is refused: a hold resolves at most once.
    let again = PostHold::full("fill-2", hold.entry_id);
    assert_eq!(
        b.ledger.post_hold(again).await.unwrap_err(),
        LedgerError::HoldNotPending {
            hold: hold.entry_id,
            status: HoldStatus::Posted
        }
    );
    b.assert_consistent().await;
}

async fn a_three_leg_hold_posted_in_part_stays_balanced(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    let station = b.revenue("station").await;
    let fees = b.revenue("channel fees").await;
    b.top_up(bank, wallet, dec!(1000)).await;
    let entry = NewEntry {
        idempotency_key: "h3".into(),
        reference: "pump-9".into(),
        description: "pre-authorisation with a fee".into(),
        effective_at: None,
        postings: vec![
            PostingInput::debit(wallet, dec!(300), Currency::CNY),
            PostingInput::credit(station, dec!(297), Currency::CNY),
            PostingInput::credit(fees, dec!(3), Currency::CNY),
        ],
        hold: Some(Default::default()),
        metadata: serde_json::json!({"pump": 9}),
    };
    let hold = b.ledger.post_entry(entry).await.unwrap();
    b.ledger
        .post_hold(PostHold::partial("p", hold.entry_id, dec!(100.01)))
        .await
        .unwrap();
    // 100.01 shared 297:3 is 99.0099 and 1.0001: largest remainder gives 99.01 and 1.00.
    assert_eq!(
        b.ledger.balance(station).await.unwrap().posted,
        cny(dec!(99.01))
    );
    assert_eq!(
        b.ledger.balance(fees).await.unwrap().posted,
        cny(dec!(1.00))
    );
    assert_eq!(
        b.ledger.balance(wallet).await.unwrap().posted,
        cny(dec!(899.99))
    );
    let entries = b.ledger.entries_by_reference("pump-9").await.unwrap();
    assert_eq!(entries.len(), 2);
    let resolution = &entries[1];
    assert_eq!(resolution.hold_id, Some(hold.entry_id));
    assert_eq!(
        resolution
            .postings
            .iter()
            .filter(|p| p.effect == Effect::Release)
            .count(),
        3
    );
    assert_eq!(
        resolution
            .postings
            .iter()
            .filter(|p| p.effect == Effect::Post)
            .count(),
        3
    );
    b.assert_consistent().await;
}

async fn a_voided_hold_cannot_be_posted_or_voided_again(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    let sales = b.revenue("sales").await;
    b.top_up(bank, wallet, dec!(100)).await;
    let hold = b
        .ledger
        .post_entry(
            NewEntry::transfer("h", "r", wallet, sales, dec!(60), Currency::CNY).as_hold(None),
        )
        .await
        .unwrap();
    let void = VoidHold {
        idempotency_key: "void".into(),
        hold_id: hold.entry_id,
    };
    b.ledger.void_hold(void.clone()).await.unwrap();
    assert!(b.ledger.void_hold(void).await.unwrap().replayed);
    let other = VoidHold {
        idempotency_key: "void-2".into(),
        hold_id: hold.entry_id,
    };
    assert!(matches!(
        b.ledger.void_hold(other).await.unwrap_err(),
        LedgerError::HoldNotPending {
            status: HoldStatus::Voided,
            ..
        }
    ));
    let balance = b.ledger.balance(wallet).await.unwrap();
    assert_eq!(balance.available, cny(dec!(100)));
    assert_eq!(balance.debits_pending, cny(dec!(0)));
    b.assert_consistent().await;
}

async fn an_expired_hold_cannot_be_posted_and_the_sweep_releases_it(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    let sales = b.revenue("sales").await;
    b.top_up(bank, wallet, dec!(100)).await;
    let hold = b
        .ledger
        .post_entry(
            NewEntry::transfer("h", "r", wallet, sales, dec!(70), Currency::CNY)
                .as_hold(Some(b.clock.now() + Duration::minutes(15))),
        )
        .await
        .unwrap();
    assert_eq!(b.ledger.expire_due_holds().await.unwrap(), 0, "not due yet");
    b.clock.advance(Duration::minutes(15));
    assert_eq!(
        b.ledger
            .post_hold(PostHold::full("late", hold.entry_id))
            .await
            .unwrap_err(),
        LedgerError::HoldExpired(hold.entry_id)
    );
    assert_eq!(
        b.ledger.balance(wallet).await.unwrap().available,
        cny(dec!(30))
    );
    assert_eq!(b.ledger.expire_due_holds().await.unwrap(), 1);
    assert_eq!(
        b.ledger.expire_due_holds().await.unwrap(),
        0,
        "expired once"
    );
    assert_eq!(
        b.ledger.balance(wallet).await.unwrap().available,
        cny(dec!(100))
    );
    let stored = b.ledger.hold(hold.entry_id).await.unwrap().unwrap();
    assert_eq!(stored.status, HoldStatus::Expired);
    b.assert_consistent().await;
}

async fn a_balance_as_of_a_time_counts_only_entries_effective_by_then(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    let t0 = b.clock.now();
    for (i, hours) in [1, 2, 3].into_iter().enumerate() {
        b.ledger
            .post_entry(
                NewEntry::transfer(
                    format!("e{i}"),
                    "r",
                    bank,
                    wallet,
                    dec!(10.10),
                    Currency::CNY,
                )
                .effective_at(t0 + Duration::hours(hours)),
            )
            .await
            .unwrap();
    }
    let at = |h| b.ledger.balance_as_of(wallet, t0 + Duration::hours(h));
    assert_eq!(at(0).await.unwrap().posted, cny(dec!(0)));
    assert_eq!(at(1).await.unwrap().posted, cny(dec!(10.10)));
    assert_eq!(at(2).await.unwrap().posted, cny(dec!(20.20)));
    assert_eq!(at(9).await.unwrap().posted, cny(dec!(30.30)));
    assert_eq!(
        at(9).await.unwrap(),
        b.ledger.balance(wallet).await.unwrap()
    );
}

async fn entries_are_found_by_the_document_that_caused_them(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    for i in 0..3 {
        b.ledger
            .post_entry(NewEntry::transfer(
                format!("po-{i}"),
                "depot-purchase:PO-7",
                bank,
                wallet,
                dec!(1),
                Currency::CNY,
            ))
            .await
            .unwrap();
    }
    b.ledger
        .post_entry(NewEntry::transfer(
            "other",
            "depot-purchase:PO-8",
            bank,
            wallet,
            dec!(1),
            Currency::CNY,
        ))
        .await
        .unwrap();
    let found = b
        .ledger
        .entries_by_reference("depot-purchase:PO-7")
        .await
        .unwrap();
    assert_eq!(found.len(), 3);
    assert!(
        found
            .iter()
            .all(|e| e.postings.len() == 2 && e.kind == EntryKind::Posted)
    );
    let keys: Vec<_> = found.iter().map(|e| e.idempotency_key.as_str()).collect();
    assert_eq!(keys, ["po-0", "po-1", "po-2"]);
    let one = b.ledger.entry(found[0].id).await.unwrap().unwrap();
    assert_eq!(one, found[0]);
}

async fn a_long_statement_pages_by_cursor_without_gaps_or_repeats(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    let entries: Vec<_> = (1..=25)
        .map(|i| {
            NewEntry::transfer(
                format!("s{i}"),
                "r",
                bank,
                wallet,
                rust_decimal::Decimal::from(i),
                Currency::CNY,
            )
        })
        .collect();
    for r in b.ledger.post_entries(entries).await {
        r.unwrap();
    }
    let mut after = None;
    let mut seqs = Vec::new();
    let mut last_balance = cny(dec!(0));
    loop {
        let page = b
            .ledger
            .statement(StatementQuery {
                account_id: wallet,
                after,
                limit: 10,
            })
            .await
            .unwrap();
        for line in &page.lines {
            assert_eq!(
                line.running_balance.amount(),
                last_balance.amount() + line.amount.amount()
            );
            last_balance = line.running_balance;
            seqs.push(line.seq);
        }
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => break,
        }
    }
    assert_eq!(seqs, (1..=25).collect::<Vec<i64>>());
    assert_eq!(last_balance, cny(dec!(325)));
}

async fn fifty_drivers_race_to_spend_one_fleet_balance_across_two_processes(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("shared fleet card").await;
    let sales = b.revenue("sales").await;
    b.top_up(bank, wallet, dec!(1000)).await;
    let other = b.second_process().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let ledger = if i % 2 == 0 {
            b.ledger.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            ledger
                .post_entry(NewEntry::transfer(
                    format!("spend-{i}"),
                    "race",
                    wallet,
                    sales,
                    dec!(30),
                    Currency::CNY,
                ))
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(LedgerError::ExceedsCredits { account }) => assert_eq!(account, wallet),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ok, 33, "1000 / 30 = 33 spends are affordable");
    assert_eq!(
        b.ledger.balance(wallet).await.unwrap().posted,
        cny(dec!(10))
    );
    b.assert_consistent().await;
}

async fn twenty_retries_of_one_request_across_two_processes_post_once(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    let other = b.second_process().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let ledger = if i % 2 == 0 {
            b.ledger.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            ledger
                .post_entry(NewEntry::transfer(
                    "the-one",
                    "retry",
                    bank,
                    wallet,
                    dec!(5),
                    Currency::CNY,
                ))
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    let mut fresh = 0;
    for t in tasks {
        let receipt = t.await.unwrap();
        ids.push(receipt.entry_id);
        fresh += usize::from(!receipt.replayed);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every retry sees the same entry");
    assert_eq!(fresh, 1, "exactly one request wrote it");
    assert_eq!(b.ledger.balance(wallet).await.unwrap().posted, cny(dec!(5)));
    b.assert_consistent().await;
}

async fn an_account_closes_only_when_settled_and_then_refuses_postings(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("retired truck").await;
    b.top_up(bank, wallet, dec!(20)).await;
    assert_eq!(
        b.ledger.close_account(wallet).await.unwrap_err(),
        LedgerError::AccountNotSettled(wallet)
    );
    b.ledger
        .post_entry(NewEntry::transfer(
            "refund",
            "r",
            wallet,
            bank,
            dec!(20),
            Currency::CNY,
        ))
        .await
        .unwrap();
    b.ledger.close_account(wallet).await.unwrap();
    b.ledger.close_account(wallet).await.unwrap();
    assert!(b.ledger.account(wallet).await.unwrap().closed);
    assert_eq!(
        b.ledger
            .post_entry(NewEntry::transfer(
                "late",
                "r",
                bank,
                wallet,
                dec!(1),
                Currency::CNY
            ))
            .await
            .unwrap_err(),
        LedgerError::AccountClosed(wallet)
    );
}

async fn a_credit_limit_lets_a_fleet_consume_first_and_settle_later(backend: Backend) {
    let b = books(backend).await;
    let sales = b.revenue("sales").await;
    let fleet = b
        .open(
            NewAccount::new(
                "gov-fleet",
                "1122.fleet.credit",
                "county fleet",
                Currency::CNY,
                Side::Credit,
            )
            .debits_must_not_exceed_credits()
            .credit_limit(dec!(5000)),
        )
        .await;
    b.ledger
        .post_entry(NewEntry::transfer(
            "c1",
            "r",
            fleet,
            sales,
            dec!(4999.99),
            Currency::CNY,
        ))
        .await
        .unwrap();
    assert_eq!(
        b.ledger.balance(fleet).await.unwrap().available,
        cny(dec!(0.01))
    );
    assert_eq!(
        b.ledger
            .post_entry(NewEntry::transfer(
                "c2",
                "r",
                fleet,
                sales,
                dec!(0.02),
                Currency::CNY
            ))
            .await
            .unwrap_err(),
        LedgerError::ExceedsCredits { account: fleet }
    );
    b.ledger
        .post_entry(NewEntry::transfer(
            "c3",
            "r",
            fleet,
            sales,
            dec!(0.01),
            Currency::CNY,
        ))
        .await
        .unwrap();
    assert_eq!(
        b.ledger.balance(fleet).await.unwrap().posted,
        cny(dec!(-5000))
    );
    b.assert_consistent().await;
}

async fn an_entry_may_balance_in_two_currencies_at_once(backend: Backend) {
    let b = books(backend).await;
    let cny_bank = b.asset("cny bank").await;
    let fx_cny = b.revenue("fx position cny").await;
    let usd_bank = b
        .open(NewAccount::new(
            "platform",
            "1002.usd",
            "usd bank",
            Currency::USD,
            Side::Debit,
        ))
        .await;
    let fx_usd = b
        .open(NewAccount::new(
            "platform",
            "fx.usd",
            "fx position usd",
            Currency::USD,
            Side::Credit,
        ))
        .await;
    let entry = NewEntry {
        idempotency_key: "fx-1".into(),
        reference: "fx".into(),
        description: "buy 100 USD".into(),
        effective_at: None,
        postings: vec![
            PostingInput::debit(usd_bank, dec!(100), Currency::USD),
            PostingInput::credit(fx_usd, dec!(100), Currency::USD),
            PostingInput::debit(fx_cny.to_owned(), dec!(718.30), Currency::CNY),
            PostingInput::credit(cny_bank, dec!(718.30), Currency::CNY),
        ],
        hold: None,
        metadata: serde_json::json!({}),
    };
    b.ledger.post_entry(entry.clone()).await.unwrap();
    let mut broken = entry;
    broken.idempotency_key = "fx-2".into();
    broken.postings[3].amount = dec!(718.31);
    assert!(matches!(
        b.ledger.post_entry(broken).await.unwrap_err(),
        LedgerError::Unbalanced {
            currency: Currency::CNY,
            ..
        }
    ));
    let tb = b.ledger.trial_balance().await.unwrap();
    assert_eq!(tb.len(), 2);
    assert!(tb.iter().all(|t| t.is_balanced()));
}

async fn creating_an_account_twice_is_idempotent(backend: Backend) {
    let b = books(backend).await;
    let request = NewAccount::new(
        "fleet-9",
        "2203.prepaid",
        "master",
        Currency::CNY,
        Side::Credit,
    );
    let first = b.ledger.create_account(request.clone()).await.unwrap();
    let second = b.ledger.create_account(request.clone()).await.unwrap();
    assert_eq!(first, second);
    let mut changed = request;
    changed.name = "renamed".into();
    assert_eq!(
        b.ledger.create_account(changed).await.unwrap_err(),
        LedgerError::AccountConflict(first.id)
    );
    let child = NewAccount::new(
        "fleet-9",
        "2203.prepaid.sub",
        "truck 1",
        Currency::USD,
        Side::Credit,
    )
    .parent(first.id);
    assert_eq!(
        b.ledger.create_account(child).await.unwrap_err(),
        LedgerError::InvalidParent(first.id)
    );
}

async fn replaying_a_spend_after_the_wallet_ran_dry_returns_the_original_receipt(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    let sales = b.revenue("sales").await;
    b.top_up(bank, wallet, dec!(100)).await;
    let spend = NewEntry::transfer("spend", "pos:1", wallet, sales, dec!(100), Currency::CNY);
    let first = b.ledger.post_entry(spend.clone()).await.unwrap();
    // The wallet is empty now: the same spend again would be refused if it were new.
    let again = b.ledger.post_entry(spend).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.entry_id, first.entry_id);
    // And in a batch with other work, too.
    let batch = vec![
        NewEntry::transfer("spend", "pos:1", wallet, sales, dec!(100), Currency::CNY),
        NewEntry::transfer("top-up-2", "t", bank, wallet, dec!(5), Currency::CNY),
    ];
    let results = b.ledger.post_entries(batch).await;
    assert!(results[0].as_ref().unwrap().replayed);
    assert!(!results[1].as_ref().unwrap().replayed);
    assert_eq!(b.ledger.balance(wallet).await.unwrap().posted, cny(dec!(5)));
    b.assert_consistent().await;
}

async fn the_books_refuse_to_rewrite_or_delete_history(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("w").await;
    b.top_up(bank, wallet, dec!(10)).await;
    for sql in [
        "UPDATE ledger_entries SET reference = 'rewritten'",
        "DELETE FROM ledger_entries",
        "UPDATE ledger_postings SET amount_minor = 1",
        "DELETE FROM ledger_postings",
        "DELETE FROM ledger_accounts",
    ] {
        assert!(
            b.db.db.execute_unprepared(sql).await.is_err(),
            "the schema allowed: {sql}"
        );
    }
    assert_eq!(
        b.ledger.balance(wallet).await.unwrap().posted,
        cny(dec!(10))
    );
    b.assert_consistent().await;
}

async fn a_hold_of_several_payments_posts_leg_by_leg_what_happened(backend: Backend) {
    let b = books(backend).await;
    let bank = b.asset("bank").await;
    let wallet = b.wallet("sub-account").await;
    let depot = b.revenue("depot").await;
    let carrier = b.revenue("carrier").await;
    b.top_up(bank, wallet, dec!(1000)).await;
    // Two payments reserved at once: 600 to the depot, 250.50 to the carrier.
    let entry = NewEntry {
        idempotency_key: "batch-hold".into(),
        reference: "batch-1".into(),
        description: "two payments".into(),
        effective_at: None,
        postings: vec![
            PostingInput::debit(wallet, dec!(600), Currency::CNY),
            PostingInput::credit(depot, dec!(600), Currency::CNY),
            PostingInput::debit(wallet, dec!(250.50), Currency::CNY),
            PostingInput::credit(carrier, dec!(250.50), Currency::CNY),
        ],
        hold: Some(Default::default()),
        metadata: serde_json::json!({}),
    };
    let hold = b.ledger.post_entry(entry).await.unwrap();
    assert_eq!(
        b.ledger.balance(wallet).await.unwrap().available,
        cny(dec!(149.50))
    );
    // Unbalanced, above a leg, the wrong number of legs, or both ways: refused.
    let refused = [
        PostHold::by_legs(
            "bad-1",
            hold.entry_id,
            vec![dec!(600), dec!(0), dec!(0), dec!(0)],
        ),
        PostHold::by_legs(
            "bad-2",
            hold.entry_id,
            vec![dec!(700), dec!(700), dec!(0), dec!(0)],
        ),
        PostHold::by_legs("bad-3", hold.entry_id, vec![dec!(600), dec!(600)]),
        PostHold {
            amount: Some(dec!(1)),
            ..PostHold::by_legs(
                "bad-4",
                hold.entry_id,
                vec![dec!(1), dec!(1), dec!(0), dec!(0)],
            )
        },
    ];
    for post in refused {
        let key = post.idempotency_key.clone();
        assert!(b.ledger.post_hold(post).await.is_err(), "{key}");
    }
    // The depot was paid, the carrier's payment was refused by the bank.
    let post = PostHold::by_legs(
        "batch-post",
        hold.entry_id,
        vec![dec!(600), dec!(600), dec!(0), dec!(0)],
    );
    b.ledger.post_hold(post.clone()).await.unwrap();
    assert!(b.ledger.post_hold(post).await.unwrap().replayed);
    let after = b.ledger.balance(wallet).await.unwrap();
    assert_eq!(after.posted, cny(dec!(400)));
    assert_eq!(after.available, cny(dec!(400)));
    assert_eq!(after.debits_pending, cny(dec!(0)));
    assert_eq!(
        b.ledger.balance(depot).await.unwrap().posted,
        cny(dec!(600))
    );
    assert_eq!(
        b.ledger.balance(carrier).await.unwrap().posted,
        cny(dec!(0))
    );
    b.assert_consistent().await;
}

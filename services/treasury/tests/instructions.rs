//! Instructions on real storage (PostgreSQL and SQLite) with the real ledger: approval
//! chains, holds, bank rejections, settlement and returns.

use std::sync::Arc;

use chrono::Utc;
use ledger::{Currency, Ledger, LedgerConfig, Money, NewAccount, NewEntry, Side};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use testkit::{Backend, TestDb, scenarios};
use treasury::approval::{
    ApprovalError, ApprovalPolicy, ApprovalState, Condition, PolicyConfig, Role, Rule, Step, UserId,
};
use treasury::domain::{AccountNumber, BankCode, EndToEndId, InstructionKind};
use treasury::store::{
    Counterparty, InstructionStatus, Instructions, NewInstruction, TreasuryError,
};
use uuid::Uuid;

struct World {
    _db: TestDb,
    ledger: Ledger,
    treasury: Instructions,
    debtor: Uuid,
    in_transit: Uuid,
}

fn user(name: &str) -> UserId {
    UserId(name.to_owned())
}

fn checker() -> Role {
    Role::new("treasury_checker")
}

fn director() -> Role {
    Role::new("treasury_director")
}

fn policy() -> ApprovalPolicy {
    ApprovalPolicy::new(PolicyConfig {
        rules: vec![
            Rule {
                name: "every instruction".into(),
                when: Condition::default(),
                steps: vec![Step {
                    role: checker(),
                    approvals: 1,
                    eligible: vec![],
                }],
            },
            Rule {
                name: "above ten million".into(),
                when: Condition {
                    amount_above: Some(dec!(10000000)),
                    ..Condition::default()
                },
                steps: vec![Step {
                    role: director(),
                    approvals: 2,
                    eligible: vec![user("zhao"), user("qian"), user("sun")],
                }],
            },
        ],
        valid_for_minutes: 240,
        tranches: Default::default(),
    })
    .unwrap()
}

async fn world(backend: Backend) -> World {
    let db = TestDb::fresh(backend).await;
    let ledger = Ledger::start(
        db.db.clone(),
        LedgerConfig {
            hold_sweep_every: None,
            ..LedgerConfig::default()
        },
    );
    let funding = ledger
        .create_account(NewAccount::new(
            "platform",
            "bank:master",
            "Master account at the custodial bank",
            Currency::CNY,
            Side::Debit,
        ))
        .await
        .unwrap();
    let debtor = ledger
        .create_account(
            NewAccount::new(
                "station-co-1",
                "bank:sub:3100000000000001",
                "Station company sub-account",
                Currency::CNY,
                Side::Credit,
            )
            .debits_must_not_exceed_credits(),
        )
        .await
        .unwrap();
    let in_transit = ledger
        .create_account(NewAccount::new(
            "platform",
            "bank:payouts-in-transit",
            "Payouts instructed to the bank",
            Currency::CNY,
            Side::Credit,
        ))
        .await
        .unwrap();
    ledger
        .post_entry(NewEntry::transfer(
            "fund-debtor",
            "test",
            funding.id,
            debtor.id,
            dec!(50000000),
            Currency::CNY,
        ))
        .await
        .unwrap();
    let treasury = Instructions::new(ledger.clone(), policy(), Arc::new(Utc::now));
    World {
        _db: db,
        ledger,
        treasury,
        debtor: debtor.id,
        in_transit: in_transit.id,
    }
}

fn payout(w: &World, amount: Decimal, e2e: &str) -> NewInstruction {
    NewInstruction {
        kind: InstructionKind::Payout,
        end_to_end_id: EndToEndId::new(e2e).unwrap(),
        debtor: Counterparty {
            ledger_account: w.debtor,
            name: "重庆某加油站有限公司".into(),
            account: AccountNumber::new("3100000000000001").unwrap(),
            bank: BankCode::new("102100099996").unwrap(),
        },
        creditor: Counterparty {
            ledger_account: w.in_transit,
            name: "西南油库有限公司".into(),
            account: AccountNumber::new("6222020200112233445").unwrap(),
            bank: BankCode::new("313290000017").unwrap(),
        },
        amount: Money::new(amount, Currency::CNY).unwrap(),
        purpose: Some("DEPOT_PURCHASE".into()),
        remittance: Some("PO-2026-118".into()),
        requested_execution_date: "2026-11-24".parse().unwrap(),
        releases: None,
        lines: Vec::new(),
    }
}

async fn available(w: &World) -> Decimal {
    w.ledger.balance(w.debtor).await.unwrap().available.amount()
}

async fn posted(w: &World) -> Decimal {
    w.ledger.balance(w.debtor).await.unwrap().posted.amount()
}

async fn a_thirty_million_payout_needs_a_checker_and_two_of_three_directors(backend: Backend) {
    let w = world(backend).await;
    let maker = user("maker");
    let i = w
        .treasury
        .create(payout(&w, dec!(30000000), "E2E-DEPOT-0001"), &maker, "k1")
        .await
        .unwrap();
    assert_eq!(i.status, InstructionStatus::PendingApproval);

    let own = w.treasury.approve(i.id, &maker, &[checker()]).await;
    assert!(matches!(
        own,
        Err(TreasuryError::Approval(ApprovalError::SelfApproval))
    ));

    w.treasury
        .approve(i.id, &user("li"), &[checker()])
        .await
        .unwrap();
    let after_one = w
        .treasury
        .approve(i.id, &user("zhao"), &[director()])
        .await
        .unwrap();
    assert_eq!(after_one.status, InstructionStatus::PendingApproval);
    assert_eq!(
        available(&w).await,
        dec!(50000000),
        "nothing held before the chain completes"
    );
    let twice = w.treasury.approve(i.id, &user("zhao"), &[director()]).await;
    assert!(matches!(
        twice,
        Err(TreasuryError::Approval(ApprovalError::AlreadyApprovedBy(_)))
    ));

    let done = w
        .treasury
        .approve(i.id, &user("sun"), &[director()])
        .await
        .unwrap();
    assert_eq!(done.status, InstructionStatus::Approved);
    assert!(done.hold_entry_id.is_some());
    assert_eq!(
        available(&w).await,
        dec!(20000000),
        "the debtor's funds are held"
    );
    assert_eq!(posted(&w).await, dec!(50000000));

    let events: Vec<String> = w
        .treasury
        .history(i.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    assert_eq!(
        events,
        vec![
            "created",
            "approved",
            "approved",
            "approved",
            "approved_and_held"
        ]
    );
}

async fn a_bank_rejection_releases_the_hold(backend: Backend) {
    let w = world(backend).await;
    let i = w
        .treasury
        .create(payout(&w, dec!(1000), "E2E-PAY-0001"), &user("maker"), "k1")
        .await
        .unwrap();
    w.treasury
        .approve(i.id, &user("li"), &[checker()])
        .await
        .unwrap();
    assert_eq!(available(&w).await, dec!(49999000));
    let rejected = w
        .treasury
        .bank_rejected(i.id, "AM04 insufficient funds")
        .await
        .unwrap();
    assert_eq!(rejected.status, InstructionStatus::Rejected);
    assert_eq!(available(&w).await, dec!(50000000));
    // The bank's report may arrive twice.
    w.treasury
        .bank_rejected(i.id, "AM04 insufficient funds")
        .await
        .unwrap();
    assert_eq!(available(&w).await, dec!(50000000));
    assert!(matches!(
        w.treasury.settled(i.id).await,
        Err(TreasuryError::InvalidState { .. })
    ));
}

async fn a_return_after_settlement_reverses_it(backend: Backend) {
    let w = world(backend).await;
    let i = w
        .treasury
        .create(
            payout(&w, dec!(1234.56), "E2E-PAY-0002"),
            &user("maker"),
            "k1",
        )
        .await
        .unwrap();
    w.treasury
        .approve(i.id, &user("li"), &[checker()])
        .await
        .unwrap();
    let settled = w.treasury.settled(i.id).await.unwrap();
    assert_eq!(settled.status, InstructionStatus::Settled);
    assert_eq!(posted(&w).await, dec!(49998765.44));
    // A duplicate settlement report changes nothing.
    w.treasury.settled(i.id).await.unwrap();
    assert_eq!(posted(&w).await, dec!(49998765.44));

    let returned = w
        .treasury
        .returned(i.id, "AC04 account closed")
        .await
        .unwrap();
    assert_eq!(returned.status, InstructionStatus::Returned);
    assert_eq!(posted(&w).await, dec!(50000000));
    w.treasury
        .returned(i.id, "AC04 account closed")
        .await
        .unwrap();
    assert_eq!(posted(&w).await, dec!(50000000), "a return reverses once");
    let audit = w.ledger.audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{audit:?}");
}

async fn the_same_idempotency_key_creates_one_instruction(backend: Backend) {
    let w = world(backend).await;
    let maker = user("maker");
    let first = w
        .treasury
        .create(payout(&w, dec!(1000), "E2E-PAY-0003"), &maker, "k1")
        .await
        .unwrap();
    let again = w
        .treasury
        .create(payout(&w, dec!(1000), "E2E-PAY-0003"), &maker, "k1")
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    let other_content = w
        .treasury
        .create(payout(&w, dec!(2000), "E2E-PAY-0003"), &maker, "k1")
        .await;
    assert!(matches!(
        other_content,
        Err(TreasuryError::IdempotencyConflict(_))
    ));
    let same_e2e = w
        .treasury
        .create(payout(&w, dec!(1000), "E2E-PAY-0003"), &maker, "k2")
        .await;
    assert!(matches!(
        same_e2e,
        Err(TreasuryError::DuplicateEndToEndId(_))
    ));
}

async fn a_change_after_approval_voids_it(backend: Backend) {
    let w = world(backend).await;
    let maker = user("maker");
    let i = w
        .treasury
        .create(payout(&w, dec!(30000000), "E2E-DEPOT-0002"), &maker, "k1")
        .await
        .unwrap();
    w.treasury
        .approve(i.id, &user("li"), &[checker()])
        .await
        .unwrap();
    w.treasury
        .approve(i.id, &user("zhao"), &[director()])
        .await
        .unwrap();
    w.treasury
        .amend(i.id, payout(&w, dec!(29000000), "E2E-DEPOT-0002"), &maker)
        .await
        .unwrap();
    assert!(matches!(
        w.treasury.approval_state(i.id).await.unwrap(),
        ApprovalState::Pending {
            step: 0,
            have: 0,
            ..
        }
    ));
    // The same checker approves the new content; the chain starts over.
    w.treasury
        .approve(i.id, &user("li"), &[checker()])
        .await
        .unwrap();
    w.treasury
        .approve(i.id, &user("zhao"), &[director()])
        .await
        .unwrap();
    let done = w
        .treasury
        .approve(i.id, &user("qian"), &[director()])
        .await
        .unwrap();
    assert_eq!(done.status, InstructionStatus::Approved);
    assert_eq!(available(&w).await, dec!(21000000));
    assert!(matches!(
        w.treasury
            .amend(i.id, payout(&w, dec!(1), "E2E-DEPOT-0002"), &maker)
            .await,
        Err(TreasuryError::InvalidState { .. })
    ));
}

async fn a_checker_rejection_ends_the_instruction(backend: Backend) {
    let w = world(backend).await;
    let i = w
        .treasury
        .create(payout(&w, dec!(1000), "E2E-PAY-0004"), &user("maker"), "k1")
        .await
        .unwrap();
    let rejected = w
        .treasury
        .reject(i.id, &user("li"), &[checker()], "wrong creditor account")
        .await
        .unwrap();
    assert_eq!(rejected.status, InstructionStatus::Rejected);
    assert!(matches!(
        w.treasury.approve(i.id, &user("wang"), &[checker()]).await,
        Err(TreasuryError::InvalidState { .. })
    ));
    assert_eq!(available(&w).await, dec!(50000000));
}

async fn insufficient_funds_leave_the_instruction_pending_until_funded(backend: Backend) {
    let w = world(backend).await;
    let i = w
        .treasury
        .create(
            payout(&w, dec!(60000000), "E2E-DEPOT-0003"),
            &user("maker"),
            "k1",
        )
        .await
        .unwrap();
    w.treasury
        .approve(i.id, &user("li"), &[checker()])
        .await
        .unwrap();
    w.treasury
        .approve(i.id, &user("zhao"), &[director()])
        .await
        .unwrap();
    let short = w.treasury.approve(i.id, &user("sun"), &[director()]).await;
    assert!(matches!(short, Err(TreasuryError::Ledger(_))), "{short:?}");
    assert_eq!(
        w.treasury.get(i.id).await.unwrap().status,
        InstructionStatus::PendingApproval
    );
    // Funds arrive; calling approve again finishes the job without another approval.
    let master = w
        .ledger
        .create_account(NewAccount::new(
            "platform",
            "bank:topup",
            "Top-up",
            Currency::CNY,
            Side::Debit,
        ))
        .await
        .unwrap();
    w.ledger
        .post_entry(NewEntry::transfer(
            "top-up",
            "test",
            master.id,
            w.debtor,
            dec!(10000000),
            Currency::CNY,
        ))
        .await
        .unwrap();
    let done = w
        .treasury
        .approve(i.id, &user("sun"), &[director()])
        .await
        .unwrap();
    assert_eq!(done.status, InstructionStatus::Approved);
    assert_eq!(available(&w).await, dec!(0));
}

scenarios!(
    a_thirty_million_payout_needs_a_checker_and_two_of_three_directors,
    a_bank_rejection_releases_the_hold,
    a_return_after_settlement_reverses_it,
    the_same_idempotency_key_creates_one_instruction,
    a_change_after_approval_voids_it,
    a_checker_rejection_ends_the_instruction,
    insufficient_funds_leave_the_instruction_pending_until_funded,
    a_batch_is_approved_as_a_whole_on_its_total_and_held_line_by_line,
    a_batch_whose_lines_disagree_with_it_is_refused,
);

fn batch(w: &World, e2e: &str, amounts: &[Decimal]) -> NewInstruction {
    let mut new = payout(w, amounts.iter().copied().sum(), e2e);
    new.lines = amounts
        .iter()
        .enumerate()
        .map(|(n, amount)| treasury::store::Line {
            end_to_end_id: EndToEndId::new(format!("{e2e}-L{}", n + 1)).unwrap(),
            creditor: Counterparty {
                account: AccountNumber::new(format!("622202020011223344{n}")).unwrap(),
                ..new.creditor.clone()
            },
            amount: Money::new(*amount, Currency::CNY).unwrap(),
            remittance: Some(format!("invoice {}", n + 1)),
        })
        .collect();
    new.creditor = new.lines[0].creditor.clone();
    new
}

async fn a_batch_is_approved_as_a_whole_on_its_total_and_held_line_by_line(backend: Backend) {
    let w = world(backend).await;
    // Two payments of 6,000,000: each below the directors' threshold, their total above.
    let new = batch(&w, "E2E-BATCH-1", &[dec!(6000000), dec!(6000000)]);
    let i = w
        .treasury
        .create(new.clone(), &user("maker"), "b-1")
        .await
        .unwrap();
    assert_eq!(i.content.lines, new.lines, "the lines are stored in order");
    assert_eq!(i.content.amount.amount(), dec!(12000000));
    let after_checker = w
        .treasury
        .approve(i.id, &user("li"), &[checker()])
        .await
        .unwrap();
    assert_eq!(after_checker.status, InstructionStatus::PendingApproval);
    w.treasury
        .approve(i.id, &user("zhao"), &[director()])
        .await
        .unwrap();
    let done = w
        .treasury
        .approve(i.id, &user("qian"), &[director()])
        .await
        .unwrap();
    assert_eq!(done.status, InstructionStatus::Approved);
    assert_eq!(available(&w).await, dec!(38000000), "the total is held");
    let hold = w
        .ledger
        .entry(done.hold_entry_id.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hold.postings.len(),
        4,
        "a debtor and a creditor leg per line: {hold:?}"
    );
    // The same key and content: the same batch.
    let again = w.treasury.create(new, &user("maker"), "b-1").await.unwrap();
    assert_eq!(again.id, i.id);
}

async fn a_batch_whose_lines_disagree_with_it_is_refused(backend: Backend) {
    let w = world(backend).await;
    let mut wrong_total = batch(&w, "E2E-BATCH-2", &[dec!(100), dec!(200)]);
    wrong_total.amount = Money::new(dec!(301), Currency::CNY).unwrap();
    let mut mixed_rails = batch(&w, "E2E-BATCH-3", &[dec!(100), dec!(200)]);
    mixed_rails.lines[1].creditor.bank = BankCode::new("102100099996").unwrap();
    let mut same_id = batch(&w, "E2E-BATCH-4", &[dec!(100), dec!(200)]);
    same_id.lines[1].end_to_end_id = same_id.lines[0].end_to_end_id.clone();
    let one_line = batch(&w, "E2E-BATCH-5", &[dec!(100)]);
    for (n, new) in [wrong_total, mixed_rails, same_id, one_line]
        .into_iter()
        .enumerate()
    {
        let refused = w
            .treasury
            .create(new, &user("maker"), &format!("bad-{n}"))
            .await;
        assert!(
            matches!(
                refused,
                Err(treasury::store::TreasuryError::InvalidContent(_))
            ),
            "{n}: {refused:?}"
        );
    }
    assert_eq!(available(&w).await, dec!(50000000));
}

mod with_the_bank {
    //! The round trip through the simulated custodial bank: sign, submit, verify the signed
    //! report, apply it.

    use super::*;
    use treasury::calendar::{BusinessCalendar, CalendarConfig};
    use treasury::domain::MessageId;
    use treasury::rails::{Rail, Rails, RailsConfig};
    use treasury::signing::{Signer, Verifier, generate_demo_keys};
    use treasury::sim::{CustodialBank, read_signed_report};
    use treasury::submission::{ReportOutcome, batch_for};

    struct Keys {
        platform: Signer,
        bank: Verifier,
        bank_signer: Signer,
    }

    fn keys() -> Keys {
        let dir = std::env::temp_dir().join(format!("forecourt-bank-{}", Uuid::new_v4()));
        let p = generate_demo_keys(&dir, "platform").unwrap();
        let b = generate_demo_keys(&dir, "bank").unwrap();
        let k = Keys {
            platform: Signer::from_pem_file(&p.private_key).unwrap(),
            bank: Verifier::from_pem_file(&b.public_key).unwrap(),
            bank_signer: Signer::from_pem_file(&b.private_key).unwrap(),
        };
        std::fs::remove_dir_all(dir).unwrap();
        k
    }

    fn bank(k: &Keys, balance: Decimal) -> CustodialBank {
        let rails = Rails::new(
            RailsConfig::default(),
            BusinessCalendar::new(CalendarConfig::default()).unwrap(),
        )
        .unwrap();
        let mut bank =
            CustodialBank::new(rails, k.platform.verifier().unwrap(), k.bank_signer.clone());
        bank.credit(
            AccountNumber::new("3100000000000001").unwrap(),
            Money::new(balance, Currency::CNY).unwrap(),
        );
        bank
    }

    async fn approved(w: &World, amount: Decimal, e2e: &str) -> treasury::store::Instruction {
        let i = w
            .treasury
            .create(payout(w, amount, e2e), &user("maker"), e2e)
            .await
            .unwrap();
        w.treasury
            .approve(i.id, &user("li"), &[checker()])
            .await
            .unwrap()
    }

    async fn a_settled_payment_posts_the_hold_and_a_resubmission_pays_nothing(backend: Backend) {
        let w = world(backend).await;
        let k = keys();
        let mut bank = bank(&k, dec!(50000000));
        let i = approved(&w, dec!(80000), "E2E-PAY-0100").await;
        let at = "2026-11-24T08:00:00Z".parse().unwrap();
        let batch = batch_for(
            std::slice::from_ref(&i),
            MessageId::new("FC-MSG-0100").unwrap(),
            at,
            "Forecourt",
            Rail::Interbank24x7,
            "2026-11-24".parse().unwrap(),
        )
        .unwrap();
        let xml = batch.to_xml().unwrap();
        let signature = k.platform.sign(xml.as_bytes()).unwrap();

        let signed = bank.receive(xml.as_bytes(), &signature, at).unwrap();
        let report = read_signed_report(&k.bank, &signed).unwrap();
        let outcome = w.treasury.apply_report(&report).await.unwrap();
        assert_eq!(
            outcome,
            ReportOutcome::Applied {
                settled: vec![i.id],
                rejected: vec![],
                returned: vec![],
                in_progress: vec![]
            }
        );
        assert_eq!(posted(&w).await, dec!(49920000));
        // The same report delivered twice changes nothing.
        w.treasury.apply_report(&report).await.unwrap();
        assert_eq!(posted(&w).await, dec!(49920000));

        // A crash before the acknowledgement was stored: the message goes again.
        let again = bank.receive(xml.as_bytes(), &signature, at).unwrap();
        let report = read_signed_report(&k.bank, &again).unwrap();
        assert_eq!(
            w.treasury.apply_report(&report).await.unwrap(),
            ReportOutcome::DuplicateMessage
        );
        assert_eq!(posted(&w).await, dec!(49920000));
        let at_bank = bank
            .balance(&AccountNumber::new("3100000000000001").unwrap())
            .unwrap();
        assert_eq!(at_bank.amount(), dec!(49920000), "the bank paid once");

        // Later the creditor's bank sends the money back; a status query reports the
        // transaction as rejected "RETURNED": a return, reversed, never a voided hold.
        let e2e = treasury::domain::EndToEndId::new("E2E-PAY-0100").unwrap();
        bank.return_payment(&e2e, "AC04", at).unwrap();
        let queried = bank
            .query(&MessageId::new("FC-MSG-0100").unwrap(), at)
            .unwrap()
            .expect("the bank knows the message");
        let report = read_signed_report(&k.bank, &queried).unwrap();
        let outcome = w.treasury.apply_report(&report).await.unwrap();
        assert!(
            matches!(outcome, ReportOutcome::Applied { ref returned, .. } if returned == &vec![i.id]),
            "{outcome:?}"
        );
        assert_eq!(
            w.treasury.get(i.id).await.unwrap().status,
            InstructionStatus::Returned
        );
        assert_eq!(posted(&w).await, dec!(50000000), "the return is reversed");
        // Reported again, it changes nothing.
        w.treasury.apply_report(&report).await.unwrap();
        assert_eq!(posted(&w).await, dec!(50000000));
    }

    async fn a_bank_rejection_for_insufficient_funds_releases_the_hold(backend: Backend) {
        let w = world(backend).await;
        let k = keys();
        // The bank's balance lags behind the ledger's: the bank refuses.
        let mut bank = bank(&k, dec!(100));
        let i = approved(&w, dec!(80000), "E2E-PAY-0101").await;
        assert_eq!(available(&w).await, dec!(49920000));
        let at = "2026-11-24T08:00:00Z".parse().unwrap();
        let batch = batch_for(
            std::slice::from_ref(&i),
            MessageId::new("FC-MSG-0101").unwrap(),
            at,
            "Forecourt",
            Rail::Interbank24x7,
            "2026-11-24".parse().unwrap(),
        )
        .unwrap();
        let xml = batch.to_xml().unwrap();
        let signature = k.platform.sign(xml.as_bytes()).unwrap();
        let signed = bank.receive(xml.as_bytes(), &signature, at).unwrap();
        let report = read_signed_report(&k.bank, &signed).unwrap();
        let outcome = w.treasury.apply_report(&report).await.unwrap();
        assert!(
            matches!(outcome, ReportOutcome::Applied { ref rejected, .. } if rejected == &vec![i.id])
        );
        assert_eq!(available(&w).await, dec!(50000000));
        let instruction = w.treasury.get(i.id).await.unwrap();
        assert_eq!(instruction.status, InstructionStatus::Rejected);
        assert!(instruction.rejection.unwrap().1.starts_with("AM04"));
    }

    async fn only_approved_instructions_go_into_a_batch(backend: Backend) {
        let w = world(backend).await;
        let pending = w
            .treasury
            .create(payout(&w, dec!(10), "E2E-PAY-0102"), &user("maker"), "k")
            .await
            .unwrap();
        let err = batch_for(
            std::slice::from_ref(&pending),
            MessageId::new("FC-MSG-0102").unwrap(),
            Utc::now(),
            "Forecourt",
            Rail::Interbank24x7,
            "2026-11-24".parse().unwrap(),
        );
        assert_eq!(
            err,
            Err(treasury::submission::BatchError::NotApproved(pending.id))
        );
    }

    scenarios!(
        a_settled_payment_posts_the_hold_and_a_resubmission_pays_nothing,
        a_bank_rejection_for_insufficient_funds_releases_the_hold,
        only_approved_instructions_go_into_a_batch,
    );
}

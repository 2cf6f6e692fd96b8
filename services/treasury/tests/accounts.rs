//! External bank accounts on PostgreSQL and SQLite.

use chrono::Utc;
use testkit::{Backend, TestDb, scenarios};
use treasury::accounts::{AccountError, NewExternalAccount, of_owner, register};
use treasury::domain::{AccountNumber, BankCode};

fn depot_account() -> NewExternalAccount {
    NewExternalAccount {
        owner_org: "depot-southwest".into(),
        holder_name: "西南油库有限公司".into(),
        account: AccountNumber::new("6222020200112233445").unwrap(),
        bank: BankCode::new("313290000017").unwrap(),
        branch_name: "上海银行重庆分行".into(),
    }
}

async fn a_depot_registers_its_payout_account_once(backend: Backend) {
    let db = TestDb::fresh(backend).await;
    let first = register(&db.db, depot_account(), "admin", Utc::now())
        .await
        .unwrap();
    let again = register(&db.db, depot_account(), "admin", Utc::now())
        .await
        .unwrap();
    assert_eq!(first.id, again.id);

    let mut renamed = depot_account();
    renamed.holder_name = "另一家公司".into();
    assert!(matches!(
        register(&db.db, renamed, "admin", Utc::now()).await,
        Err(AccountError::Conflict { .. })
    ));

    let mut second = depot_account();
    second.account = AccountNumber::new("6222020200112233446").unwrap();
    register(&db.db, second, "admin", Utc::now()).await.unwrap();
    let listed = of_owner(&db.db, "depot-southwest").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].id, first.id);
    assert!(of_owner(&db.db, "someone-else").await.unwrap().is_empty());

    let mut nameless = depot_account();
    nameless.holder_name = String::new();
    assert!(matches!(
        register(&db.db, nameless, "admin", Utc::now()).await,
        Err(AccountError::InvalidName)
    ));
}

scenarios!(a_depot_registers_its_payout_account_once);

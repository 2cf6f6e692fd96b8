//! Transactions that their caller abandons part-way: a request whose client went away, a
//! timed-out handler, a worker stopped while it begins. None may leave the pooled connection
//! inside a transaction, where the next borrower's writes would never commit.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use testkit::{Backend, PoolSettings, TestDb, scenarios};

scenarios!(a_write_abandoned_while_it_begins_leaves_the_next_borrower_committing);

async fn count(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM abandoned_probe",
        ))
        .await
        .expect("count")
        .expect("a row");
    row.try_get("", "n").expect("n")
}

async fn a_write_abandoned_while_it_begins_leaves_the_next_borrower_committing(backend: Backend) {
    // One connection, so that every borrower gets the one the abandoned begin used.
    let test = TestDb::fresh_with(
        backend,
        PoolSettings {
            max_connections: 1,
            min_connections: 1,
            ..PoolSettings::default()
        },
    )
    .await;
    let db = &test.db;
    db.execute_unprepared("CREATE TABLE abandoned_probe (n BIGINT NOT NULL)")
        .await
        .expect("table");
    let other = test.connect_again().await;
    // Abandon the begin after a spread of delays, so that some land while its BEGIN is on
    // the wire; after each, a plain write on the same pool must be seen by another pool.
    for attempt in 0..300_i64 {
        let delay = Duration::from_micros(u64::try_from(attempt % 60).expect("small") * 10);
        let _ = tokio::time::timeout(delay, entities::db::begin_write(db)).await;
        db.execute_unprepared(&format!(
            "INSERT INTO abandoned_probe (n) VALUES ({attempt})"
        ))
        .await
        .expect("insert");
        assert_eq!(
            count(&other).await,
            attempt + 1,
            "the write after abandoned begin number {attempt} did not commit"
        );
    }
}

//! The binary as a newcomer and an operator use it.

use std::process::Command;

use testkit::{Backend, TestDb};

fn forecourt(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_forecourt"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .output()
        .expect("run forecourt");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn demo_runs_and_a_second_run_replays_the_same_day(url: &str) {
    let (ok, first, err) = forecourt(url, &["demo"]);
    assert!(ok, "demo failed: {err}");
    assert!(
        first.contains("Entries written: 12, replayed (already on the books): 0"),
        "{first}"
    );
    assert!(first.contains("the books agree"), "{first}");
    assert!(first.contains("Refused as expected"), "{first}");
    let (ok, second, err) = forecourt(url, &["demo"]);
    assert!(ok, "second demo failed: {err}");
    assert!(
        second.contains("Entries written: 0, replayed (already on the books): 12"),
        "{second}"
    );
    let balances = |out: &str| {
        out.lines()
            .skip_while(|l| !l.starts_with("Account"))
            .take(15)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        balances(&first),
        balances(&second),
        "a replayed day changed balances"
    );
}

#[tokio::test]
async fn a_newcomer_runs_the_demo_twice_on_the_embedded_default() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    demo_runs_and_a_second_run_replays_the_same_day(&db.url);
}

#[tokio::test]
async fn the_demo_runs_the_same_on_postgres() {
    let db = TestDb::fresh(Backend::Postgres).await;
    demo_runs_and_a_second_run_replays_the_same_day(&db.url);
}

#[tokio::test]
async fn migrate_brings_an_empty_postgres_schema_up_to_date_and_is_repeatable() {
    let db = TestDb::fresh(Backend::Postgres).await;
    for _ in 0..2 {
        let (ok, out, err) = forecourt(&db.url, &["migrate"]);
        assert!(ok, "migrate failed: {err}");
        assert!(out.contains("is up to date"), "{out}");
    }
}

#[tokio::test]
async fn a_short_ledger_bench_reports_every_workload_as_json() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let (ok, out, err) = forecourt(
        &db.url,
        &[
            "bench",
            "ledger",
            "--seconds",
            "1",
            "--clients",
            "4",
            "--json",
        ],
    );
    assert!(ok, "bench failed: {err}");
    let reports: serde_json::Value = serde_json::from_str(&out).expect("JSON report");
    let reports = reports.as_array().expect("one report per workload");
    let workloads: Vec<_> = reports
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(workloads, ["spread", "contended", "hot"]);
    for r in reports {
        assert!(r["transfers"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(r["errors"].as_u64().unwrap(), 0, "{r}");
        assert!(r["p99_ms"].as_f64().unwrap() >= r["p50_ms"].as_f64().unwrap());
    }
}

#[test]
fn an_unreachable_database_is_a_clear_error_not_a_panic() {
    let (ok, _, err) = forecourt("postgres://nobody@127.0.0.1:1/none", &["migrate"]);
    assert!(!ok);
    assert!(
        err.contains("cannot open postgres://nobody@127.0.0.1:1/none"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Starts the demo and kills it with SIGKILL after `after`, whatever it is doing.
fn killed_demo(url: &str, after: std::time::Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_forecourt"))
        .arg("demo")
        .env("DATABASE_URL", url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start demo");
    std::thread::sleep(after);
    let _ = child.kill();
    let _ = child.wait();
}

fn balances_of(out: &str) -> String {
    out.lines()
        .skip_while(|l| !l.starts_with("Account"))
        .take(15)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_demo_killed_again_and_again_still_books_every_movement_exactly_once() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let clean = TestDb::fresh(backend).await;
        let (ok, expected, err) = forecourt(&clean.url, &["demo"]);
        assert!(ok, "{err}");

        let crashed = TestDb::fresh(backend).await;
        // Kill points spread over the whole run, from before the first entry to the audit.
        let ledger = ledger::Ledger::start(
            crashed.db.clone(),
            ledger::LedgerConfig {
                hold_sweep_every: None,
                ..Default::default()
            },
        );
        for i in 0..24u64 {
            killed_demo(&crashed.url, std::time::Duration::from_millis(5 + i * 7));
            // Whatever the kill interrupted, the books it left are whole.
            let report = ledger.audit().await.unwrap();
            assert!(
                report.problems.is_empty(),
                "{backend:?} after kill {i}: {:#?}",
                report.problems
            );
        }
        let (ok, after, err) = forecourt(&crashed.url, &["demo"]);
        assert!(ok, "{backend:?}: demo after crashes failed: {err}");
        assert!(after.contains("the books agree"), "{after}");
        assert_eq!(
            balances_of(&after),
            balances_of(&expected),
            "{backend:?}: crashes changed the books"
        );
    }
}

#[tokio::test]
async fn a_short_workflow_bench_counts_every_transition() {
    let db = TestDb::fresh(Backend::Sqlite).await;
    let args = [
        "bench",
        "workflows",
        "--workflows",
        "5",
        "--steps",
        "2",
        "--workers",
        "1",
        "--json",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_forecourt"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env_remove("AMQP_URL")
        .output()
        .expect("run forecourt");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    // Each workflow: started, then one transition per step.
    assert_eq!(reports[0]["transitions"], 15, "{reports}");
    assert_eq!(reports[0]["transport"], "in-process");
}

//! The engine over RabbitMQ (127.0.0.1:5672) and PostgreSQL, in one process: a queue prefix
//! and a database schema of its own per test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::{Backend, TestDb};
use tokio::sync::watch;
use uuid::Uuid;
use workflows::amqp::{self, Broker};
use workflows::{Command, Engine, Event, Registry, Status, Step, Workflow};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Records bank status reports in the order they arrive; completes after `expected` of them.
struct StatusReports;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Reports {
    expected: usize,
    seen: Vec<u64>,
}

impl Workflow for StatusReports {
    const NAME: &'static str = "test.status_reports";
    const VERSION: i32 = 1;
    type Input = usize;
    type State = Reports;
    type Event = Event;

    fn start(expected: usize) -> Step<Reports> {
        let state = Reports {
            expected,
            seen: Vec::new(),
        };
        Step::to(state, "waiting for status reports").then(Command::WaitSignal {
            name: "report".into(),
            deadline_ms: None,
        })
    }

    fn on_event(state: &Reports, event: &Event) -> Option<Step<Reports>> {
        let Event::Signal { name, payload } = event else {
            return None;
        };
        if name != "report" {
            return None;
        }
        let mut next = state.clone();
        next.seen.push(payload["n"].as_u64()?);
        if next.seen.len() == next.expected {
            let output = json!({ "seen": next.seen.len() });
            return Some(Step::to(next, "every report arrived").then(Command::Complete { output }));
        }
        Some(Step::to(next, "report recorded"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signals_to_one_instance_arrive_in_order_through_several_relays() {
    let db = TestDb::fresh(Backend::Postgres).await;
    let engine = Engine::new(
        db.db.clone(),
        Registry::default().workflow::<StatusReports>(),
    );
    let prefix = format!("t{}", Uuid::new_v4().simple());
    let broker = Arc::new(Broker::connect(AMQP_URL, &prefix, "test").await.unwrap());
    broker.declare(&engine.destinations()).await.unwrap();
    // A backlog first, so that the relays start together and split it between them.
    let reports = 300;
    let ids = [
        engine
            .start::<StatusReports>("batch-a", reports)
            .await
            .unwrap(),
        engine
            .start::<StatusReports>("batch-b", reports)
            .await
            .unwrap(),
    ];
    for n in 0..reports as u64 {
        for id in ids {
            engine
                .signal(id, "report", json!({ "n": n }))
                .await
                .unwrap();
        }
    }

    let (stop, stopped) = watch::channel(false);
    let relays = tokio::spawn(amqp::run_relays(
        engine.clone(),
        broker.clone(),
        4,
        stopped.clone(),
    ));
    let consumers = tokio::spawn(amqp::run_consumers(
        engine.clone(),
        broker.clone(),
        1,
        64,
        stopped,
    ));

    let deadline = Instant::now() + Duration::from_secs(60);
    for id in ids {
        let instance = loop {
            let instance = engine.instance(id).await.unwrap();
            if instance.status != Status::Running {
                break instance;
            }
            assert!(
                Instant::now() < deadline,
                "reports still missing: {instance:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(instance.status, Status::Completed);
        let seen: Vec<u64> = serde_json::from_value::<Reports>(instance.state)
            .unwrap()
            .seen;
        assert_eq!(seen, (0..reports as u64).collect::<Vec<_>>(), "in order");
        let ignored = instance
            .history
            .iter()
            .filter(|h| h.kind == "ignored")
            .count();
        assert_eq!(ignored, 0);
    }

    let _ = stop.send(true);
    relays.await.unwrap().unwrap();
    consumers.await.unwrap().unwrap();
    broker.delete(&engine.destinations()).await.unwrap();
    broker.close().await.unwrap();
}

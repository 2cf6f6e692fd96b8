//! The engine's scenarios, on PostgreSQL and on SQLite, with test-only workflow types.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use testkit::{Backend, TestDb};
use uuid::Uuid;
use workflows::schedule::{MissedTicks, Schedule};
use workflows::{
    ActivityError, Command, Engine, Event, Registry, RetryPolicy, Status, Step, Workers, Workflow,
};

testkit::scenarios!(
    a_five_step_workflow_whose_third_step_fails_twice_completes_after_backoff,
    a_saga_whose_third_step_fails_compensates_the_first_two_in_reverse,
    an_approval_that_arrives_before_the_deadline_wins,
    a_deadline_that_passes_before_the_approval_wins,
    an_approval_racing_its_deadline_has_exactly_one_winner,
    the_same_message_delivered_twice_is_processed_once,
    starting_twice_with_one_business_key_starts_one_instance,
    a_schedule_every_second_fires_once_per_tick_under_two_schedulers,
    a_schedule_after_downtime_fires_once_or_skips_as_configured,
    a_settlement_run_waits_for_its_child_workflows,
    pruning_forgets_delivered_messages_but_never_an_unsent_one,
    a_message_for_an_unknown_workflow_type_does_not_hold_up_the_others,
);

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval_ms: 20,
        backoff_coefficient: 2.0,
        maximum_interval_ms: 1_000,
        maximum_attempts: 5,
        non_retryable: vec!["declined".into()],
    }
}

fn run(step: &str, kind: &str, input: Value) -> Command {
    Command::RunActivity {
        step: step.into(),
        kind: kind.into(),
        input,
        retry: fast_retry(),
        timeout_ms: 5_000,
    }
}

/// Runs steps 1..=5 in order, one activity each.
struct FiveSteps;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Progress {
    done: u32,
}

impl Workflow for FiveSteps {
    const NAME: &'static str = "test.five_steps";
    const VERSION: i32 = 1;
    type Input = ();
    type State = Progress;
    type Event = Event;

    fn start(_: ()) -> Step<Progress> {
        Step::to(Progress { done: 0 }, "start step 1").then(run("1", "step", json!(1)))
    }

    fn on_event(state: &Progress, event: &Event) -> Option<Step<Progress>> {
        match event {
            Event::ActivityCompleted { step, .. } if *step == (state.done + 1).to_string() => {
                let done = state.done + 1;
                let next = Progress { done };
                Some(if done == 5 {
                    Step::to(next, "all five steps done")
                        .then(Command::Emit {
                            topic: "orders.order.completed".into(),
                            payload: json!({ "steps": done }),
                        })
                        .then(Command::Complete {
                            output: json!(done),
                        })
                } else {
                    Step::to(next, format!("step {done} done")).then(run(
                        &(done + 1).to_string(),
                        "step",
                        json!(done + 1),
                    ))
                })
            }
            Event::ActivityFailed { error, .. } => Some(
                Step::to(state.clone(), "a step failed").then(Command::Fail {
                    reason: error.to_string(),
                }),
            ),
            _ => None,
        }
    }
}

/// Reserve, debit, ship; if a step fails for good, undo the completed ones in reverse.
struct Saga;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SagaState {
    completed: Vec<String>,
    compensating: bool,
    failure: Option<String>,
}

const SAGA_STEPS: [&str; 3] = ["reserve", "debit", "ship"];

impl Workflow for Saga {
    const NAME: &'static str = "test.saga";
    const VERSION: i32 = 1;
    type Input = ();
    type State = SagaState;
    type Event = Event;

    fn start(_: ()) -> Step<SagaState> {
        Step::to(
            SagaState {
                completed: vec![],
                compensating: false,
                failure: None,
            },
            "reserve first",
        )
        .then(run("reserve", "saga", json!("reserve")))
    }

    fn on_event(state: &SagaState, event: &Event) -> Option<Step<SagaState>> {
        let mut next = state.clone();
        match event {
            Event::ActivityCompleted { step, .. } if !state.compensating => {
                next.completed.push(step.clone());
                match SAGA_STEPS.get(next.completed.len()) {
                    Some(following) => Some(Step::to(next, format!("{step} done")).then(run(
                        following,
                        "saga",
                        json!(following),
                    ))),
                    None => Some(Step::to(next, "all done").then(Command::Complete {
                        output: Value::Null,
                    })),
                }
            }
            Event::ActivityFailed { step, error, .. } if !state.compensating => {
                next.compensating = true;
                next.failure = Some(format!("{step}: {error}"));
                Some(compensate_next(
                    next,
                    format!("{step} failed for good; compensating"),
                ))
            }
            Event::ActivityCompleted { step, .. }
                if state.compensating && step.starts_with("undo:") =>
            {
                next.completed.pop();
                Some(compensate_next(next, format!("{step} done")))
            }
            _ => None,
        }
    }
}

fn compensate_next(state: SagaState, reason: String) -> Step<SagaState> {
    match state.completed.last().cloned() {
        Some(last) => {
            Step::to(state, reason).then(run(&format!("undo:{last}"), "undo", json!(last)))
        }
        None => {
            let failure = state.failure.clone().unwrap_or_default();
            Step::to(state, reason).then(Command::Compensated { reason: failure })
        }
    }
}

/// Waits for approval, or for its deadline.
struct Approval;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum ApprovalState {
    Waiting,
    Approved { by: String },
    TimedOut,
}

impl Workflow for Approval {
    const NAME: &'static str = "test.approval";
    const VERSION: i32 = 1;
    type Input = u64;
    type State = ApprovalState;
    type Event = Event;

    fn start(deadline_ms: u64) -> Step<ApprovalState> {
        Step::to(ApprovalState::Waiting, "waiting for the checker").then(Command::WaitSignal {
            name: "approval".into(),
            deadline_ms: Some(deadline_ms),
        })
    }

    fn on_event(state: &ApprovalState, event: &Event) -> Option<Step<ApprovalState>> {
        match (state, event) {
            (ApprovalState::Waiting, Event::Signal { name, payload }) if name == "approval" => {
                let by = payload["by"].as_str().unwrap_or_default().to_owned();
                Some(
                    Step::to(ApprovalState::Approved { by }, "approved").then(Command::Complete {
                        output: Value::Null,
                    }),
                )
            }
            (ApprovalState::Waiting, Event::TimerFired { name }) if name == "deadline:approval" => {
                Some(
                    Step::to(ApprovalState::TimedOut, "no approval before the deadline").then(
                        Command::Fail {
                            reason: "approval deadline passed".into(),
                        },
                    ),
                )
            }
            _ => None,
        }
    }
}

type Log = Arc<Mutex<Vec<String>>>;

struct Setup {
    engine: Engine,
    workers: Workers,
    log: Log,
    _db: TestDb,
}

async fn setup(backend: Backend) -> Setup {
    let db = TestDb::fresh(backend).await;
    let log: Log = Arc::default();
    let attempts: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let registry = Registry::default()
        .workflow::<FiveSteps>()
        .workflow::<Saga>()
        .workflow::<Approval>()
        .workflow::<Tick>()
        .workflow::<Batch>()
        .activity("step", {
            let attempts = attempts.clone();
            move |ctx, _input| {
                let attempts = attempts.clone();
                async move {
                    let mut attempts = attempts.lock().unwrap();
                    let n = attempts.entry(ctx.idempotency_key.clone()).or_insert(0);
                    *n += 1;
                    if ctx.step == "3" && *n <= 2 {
                        return Err(ActivityError::retryable(
                            "bank_busy",
                            format!("attempt {n}"),
                        ));
                    }
                    Ok(json!({ "attempt": *n }))
                }
            }
        })
        .activity("saga", {
            let log = log.clone();
            move |ctx, _| {
                let log = log.clone();
                async move {
                    if ctx.step == "ship" {
                        return Err(ActivityError::permanent("declined", "carrier refused"));
                    }
                    log.lock().unwrap().push(ctx.step.clone());
                    Ok(Value::Null)
                }
            }
        })
        .activity("undo", {
            let log = log.clone();
            move |ctx, _| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push(ctx.step.clone());
                    Ok(Value::Null)
                }
            }
        });
    let engine = Engine::new(db.db.clone(), registry);
    let workers = Workers::spawn(&engine, 2, 2);
    Setup {
        engine,
        workers,
        log,
        _db: db,
    }
}

/// On PostgreSQL, a process that commits a message but runs no relay or worker of its own
/// (an API process) announces it, so that the relays and workers of other processes start at
/// once; a process that consumes its own messages wakes them directly and does not announce
/// (a notifying commit takes a database-wide lock).
#[tokio::test]
async fn only_a_process_without_its_own_consumers_announces_its_messages_to_the_others() {
    use sea_orm::sqlx::postgres::PgListener;
    let db = TestDb::fresh(Backend::Postgres).await;
    let pool = db.db.get_postgres_connection_pool().clone();
    let channel = workflows::engine::outbox_channel(&pool).await.unwrap();
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen(&channel).await.unwrap();
    let registry = || Registry::default().workflow::<FiveSteps>();
    let api = Engine::new(db.db.clone(), registry());
    let worker = Engine::new(db.db.clone(), registry());
    worker.consumes_in_process();
    // In commit order: the worker's start, the API's start, then a marker.
    worker
        .start::<FiveSteps>("by-the-worker", ())
        .await
        .unwrap();
    api.start::<FiveSteps>("by-the-api", ()).await.unwrap();
    sea_orm::sqlx::query("SELECT pg_notify($1, 'marker')")
        .bind(&channel)
        .execute(&pool)
        .await
        .unwrap();
    let mut announced = 0;
    loop {
        let note = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("the marker arrives")
            .unwrap();
        if note.payload() == "marker" {
            break;
        }
        announced += 1;
    }
    assert_eq!(announced, 1, "only the API's start announces");
}

async fn finished(engine: &Engine, id: Uuid) -> workflows::Instance {
    for _ in 0..400 {
        let instance = engine.instance(id).await.unwrap();
        if instance.status != Status::Running {
            return instance;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "instance {id} did not finish: {:#?}",
        engine.instance(id).await.unwrap()
    );
}

async fn a_five_step_workflow_whose_third_step_fails_twice_completes_after_backoff(
    backend: Backend,
) {
    let s = setup(backend).await;
    let id = s.engine.start::<FiveSteps>("order-1", ()).await.unwrap();
    let done = finished(&s.engine, id).await;
    assert_eq!(done.status, Status::Completed, "{done:#?}");
    let retries: Vec<_> = done
        .history
        .iter()
        .filter(|h| h.kind == "retry_scheduled")
        .collect();
    assert_eq!(retries.len(), 2, "{:#?}", done.history);
    assert_eq!(retries[0].detail["backoff_ms"], 20);
    assert_eq!(retries[1].detail["backoff_ms"], 40);
    assert!(retries[1].recorded_at >= retries[0].recorded_at + chrono::Duration::milliseconds(20));
    assert_eq!(done.history.iter().filter(|h| h.kind == "event").count(), 5);
    s.workers.shutdown().await;
}

async fn a_saga_whose_third_step_fails_compensates_the_first_two_in_reverse(backend: Backend) {
    let s = setup(backend).await;
    let id = s.engine.start::<Saga>("po-9", ()).await.unwrap();
    let done = finished(&s.engine, id).await;
    assert_eq!(done.status, Status::Compensated, "{done:#?}");
    assert_eq!(done.status_reason, "ship: declined: carrier refused");
    assert_eq!(
        *s.log.lock().unwrap(),
        ["reserve", "debit", "undo:debit", "undo:reserve"]
    );
    s.workers.shutdown().await;
}

async fn an_approval_that_arrives_before_the_deadline_wins(backend: Backend) {
    let s = setup(backend).await;
    let id = s.engine.start::<Approval>("instr-1", 60_000).await.unwrap();
    s.engine
        .signal_by_key(
            Approval::NAME,
            "instr-1",
            "approval",
            json!({"by": "checker-2"}),
        )
        .await
        .unwrap();
    let done = finished(&s.engine, id).await;
    assert_eq!(done.status, Status::Completed);
    assert_eq!(done.state, json!({"Approved": {"by": "checker-2"}}));
    s.workers.shutdown().await;
}

async fn a_deadline_that_passes_before_the_approval_wins(backend: Backend) {
    let s = setup(backend).await;
    let id = s.engine.start::<Approval>("instr-2", 100).await.unwrap();
    let done = finished(&s.engine, id).await;
    assert_eq!(done.status, Status::Failed);
    assert_eq!(done.state, json!("TimedOut"));
    assert!(
        s.engine
            .signal(id, "approval", json!({"by": "late"}))
            .await
            .is_err(),
        "a finished instance takes no signal"
    );
    s.workers.shutdown().await;
}

async fn an_approval_racing_its_deadline_has_exactly_one_winner(backend: Backend) {
    let s = setup(backend).await;
    let id = s.engine.start::<Approval>("instr-3", 0).await.unwrap();
    // The deadline is due at once; the signal is sent at the same moment.
    let _ = s
        .engine
        .signal(id, "approval", json!({"by": "checker"}))
        .await;
    let done = finished(&s.engine, id).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done_later = s.engine.instance(id).await.unwrap();
    assert_eq!(
        done_later.state, done.state,
        "the loser changed the outcome"
    );
    let applied = done_later
        .history
        .iter()
        .filter(|h| h.kind == "event")
        .count();
    assert_eq!(
        applied, 1,
        "exactly one of signal and deadline is applied: {:#?}",
        done_later.history
    );
    s.workers.shutdown().await;
}

async fn the_same_message_delivered_twice_is_processed_once(backend: Backend) {
    use entities::{organisations, webhook_deliveries, webhook_subscriptions};
    let s = setup(backend).await;
    // The platform operator's subscription: it sees every event.
    let operator = Uuid::now_v7();
    organisations::Entity::insert(organisations::ActiveModel {
        id: Set(operator),
        parent_id: Set(None),
        kind: Set("platform_operator".into()),
        name: Set("Platform".into()),
        path: Set(format!("/{}/", operator.simple())),
        depth: Set(0),
        ledger_owner: Set(operator.to_string()),
        created_at: Set(chrono::Utc::now()),
    })
    .exec_without_returning(s.engine.db())
    .await
    .unwrap();
    let subscription = Uuid::now_v7();
    webhook_subscriptions::Entity::insert(webhook_subscriptions::ActiveModel {
        id: Set(subscription),
        organisation_id: Set(operator),
        url: Set("http://127.0.0.1:9/events".into()),
        topics: Set("orders.*".into()),
        secret_ciphertext: Set("unused".into()),
        encryption_key_id: Set("unused".into()),
        created_by: Set("test".into()),
        created_at: Set(chrono::Utc::now()),
        revoked_at: Set(None),
    })
    .exec_without_returning(s.engine.db())
    .await
    .unwrap();
    let id = s.engine.start::<FiveSteps>("order-2", ()).await.unwrap();
    let before = finished(&s.engine, id).await;
    // The completion's domain event was fanned out to the subscription, once.
    let mut fanned = 0;
    for _ in 0..200 {
        fanned = webhook_deliveries::Entity::find()
            .count(s.engine.db())
            .await
            .unwrap();
        if fanned > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fanned, 1);
    s.workers.shutdown().await;
    // Every message is delivered again, as a broker does after a lost acknowledgement.
    s.engine
        .db()
        .execute_unprepared("UPDATE wf_outbox SET delivered_at = NULL, leased_until = NULL")
        .await
        .unwrap();
    let delivered = entities::wf_outbox::Entity::find()
        .all(s.engine.db())
        .await
        .unwrap()
        .len();
    for _ in 0..delivered {
        s.engine.process_next_event().await.unwrap();
        s.engine.run_next_activity().await.unwrap();
    }
    let after = s.engine.instance(id).await.unwrap();
    assert_eq!(
        after.history.len(),
        before.history.len(),
        "a repeated message changed the history"
    );
    assert_eq!(after.state, before.state);
    let deliveries = webhook_deliveries::Entity::find()
        .count(s.engine.db())
        .await
        .unwrap();
    assert_eq!(deliveries, 1, "a repeated event fanned out again");
}

async fn pruning_forgets_delivered_messages_but_never_an_unsent_one(backend: Backend) {
    use entities::{wf_inbox, wf_outbox};
    let s = setup(backend).await;
    let done = s.engine.start::<FiveSteps>("order-4", ()).await.unwrap();
    finished(&s.engine, done).await;
    s.workers.shutdown().await;
    // An approval waits for its signal; the signal is queued but nobody delivers it.
    let waiting = s
        .engine
        .start::<Approval>("payout-4", 60_000)
        .await
        .unwrap();
    s.engine
        .signal(waiting, "approval", json!({ "by": "checker" }))
        .await
        .unwrap();
    let db = s.engine.db();
    let unsent = || {
        wf_outbox::Entity::find()
            .filter(wf_outbox::Column::DeliveredAt.is_null())
            .count(db)
    };
    let unsent_before = unsent().await.unwrap();
    assert!(unsent_before >= 2, "the signal and the deadline timer wait");
    let inbox_before = wf_inbox::Entity::find().count(db).await.unwrap();
    assert!(inbox_before > 0);

    // A cutoff before everything: nothing goes.
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(s.engine.prune(past, past).await.unwrap(), (0, 0));

    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    let (outbox, inbox) = s.engine.prune(later, later).await.unwrap();
    assert!(outbox > 0);
    assert_eq!(inbox, inbox_before);
    assert_eq!(
        unsent().await.unwrap(),
        unsent_before,
        "unsent messages stay"
    );
    let left = wf_outbox::Entity::find().count(db).await.unwrap();
    assert_eq!(left, unsent_before, "every delivered message went");
    // History is untouched: the finished instance still reads whole.
    let instance = s.engine.instance(done).await.unwrap();
    assert_eq!(instance.status, Status::Completed);
    assert_eq!(
        instance
            .history
            .iter()
            .filter(|h| h.kind == "event")
            .count(),
        5
    );
}

async fn starting_twice_with_one_business_key_starts_one_instance(backend: Backend) {
    let s = setup(backend).await;
    let a = s.engine.start::<FiveSteps>("order-3", ()).await.unwrap();
    let b = s.engine.start::<FiveSteps>("order-3", ()).await.unwrap();
    assert_eq!(a, b);
    finished(&s.engine, a).await;
    let completed = s
        .engine
        .list(FiveSteps::NAME, Status::Completed, 10)
        .await
        .unwrap();
    assert_eq!(completed, vec![a]);
    s.workers.shutdown().await;
}

/// Does nothing but finish: what a schedule starts in these tests.
struct Tick;

impl Workflow for Tick {
    const NAME: &'static str = "test.tick";
    const VERSION: i32 = 1;
    type Input = Value;
    type State = Value;
    type Event = Event;

    fn start(input: Value) -> Step<Value> {
        Step::to(input, "ticked").then(Command::Complete {
            output: Value::Null,
        })
    }

    fn on_event(_: &Value, _: &Event) -> Option<Step<Value>> {
        None
    }
}

fn every_second(name: &str, missed: MissedTicks) -> Schedule {
    Schedule {
        name: name.into(),
        cron: "* * * * * *".into(),
        time_zone: "Asia/Shanghai".into(),
        workflow_type: Tick::NAME.into(),
        input: json!({}),
        missed_ticks: missed,
    }
}

async fn ticks_started(engine: &Engine, schedule: &str) -> Vec<String> {
    let mut keys: Vec<String> = entities::wf_instances::Entity::find()
        .all(engine.db())
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.business_key.starts_with(&format!("{schedule}@")))
        .map(|i| i.business_key)
        .collect();
    keys.sort();
    keys
}

async fn a_schedule_every_second_fires_once_per_tick_under_two_schedulers(backend: Backend) {
    let s = setup(backend).await;
    s.workers.shutdown().await;
    s.engine
        .put_schedule(every_second("heartbeat", MissedTicks::FireOnce))
        .await
        .unwrap();
    // Two schedulers on their own pools, as two processes would run.
    let other = Engine::new(
        s._db.connect_again().await,
        Registry::default().workflow::<Tick>(),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(workflows::schedule::run_schedules(
        s.engine.clone(),
        stopped.clone(),
    ));
    let b = tokio::spawn(workflows::schedule::run_schedules(other, stopped));
    tokio::time::sleep(Duration::from_millis(3_600)).await;
    stop.send(true).unwrap();
    a.await.unwrap();
    b.await.unwrap();
    let keys = ticks_started(&s.engine, "heartbeat").await;
    assert!(
        keys.len() >= 3,
        "3.6 s of a schedule every second fired {keys:?}"
    );
    // One start per tick, consecutive seconds, none twice, none skipped.
    let ticks: Vec<chrono::DateTime<chrono::FixedOffset>> = keys
        .iter()
        .map(|k| chrono::DateTime::parse_from_rfc3339(k.trim_start_matches("heartbeat@")).unwrap())
        .collect();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(1), "{keys:?}");
    }
}

async fn a_schedule_after_downtime_fires_once_or_skips_as_configured(backend: Backend) {
    let s = setup(backend).await;
    s.workers.shutdown().await;
    s.engine
        .put_schedule(every_second("catch-up", MissedTicks::FireOnce))
        .await
        .unwrap();
    s.engine
        .put_schedule(every_second("no-catch-up", MissedTicks::Skip))
        .await
        .unwrap();
    // No scheduler runs for three seconds: three or more ticks are missed.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    s.engine.fire_due_schedules().await.unwrap();
    assert_eq!(ticks_started(&s.engine, "catch-up").await.len(), 1);
    assert_eq!(ticks_started(&s.engine, "no-catch-up").await.len(), 0);
    let outcomes: Vec<String> = entities::wf_schedules::Entity::find()
        .all(s.engine.db())
        .await
        .unwrap()
        .into_iter()
        .map(|row| format!("{}: {}", row.name, row.last_outcome))
        .collect();
    assert!(
        outcomes
            .iter()
            .any(|o| o.starts_with("catch-up: fired once") && o.contains("missed ticks folded")),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.starts_with("no-catch-up: skipped")),
        "{outcomes:?}"
    );
}

/// Starts one child per station and finishes when every child has.
struct Batch;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct BatchState {
    waiting: Vec<String>,
    finished: Vec<String>,
}

impl Workflow for Batch {
    const NAME: &'static str = "test.batch";
    const VERSION: i32 = 1;
    type Input = Vec<String>;
    type State = BatchState;
    type Event = Event;

    fn start(stations: Vec<String>) -> Step<BatchState> {
        let mut step = Step::to(
            BatchState {
                waiting: stations.clone(),
                finished: vec![],
            },
            "one child per station",
        );
        for station in stations {
            step = step.then(Command::StartChild {
                workflow_type: Tick::NAME.into(),
                business_key: format!("settle:{station}"),
                input: json!({ "station": station }),
            });
        }
        step
    }

    fn on_event(state: &BatchState, event: &Event) -> Option<Step<BatchState>> {
        let Event::ChildFinished {
            business_key,
            status,
            ..
        } = event
        else {
            return None;
        };
        let mut next = state.clone();
        next.waiting
            .retain(|k| format!("settle:{k}") != *business_key);
        next.finished.push(format!("{business_key}={status}"));
        Some(if next.waiting.is_empty() {
            Step::to(next, "every station settled").then(Command::Complete {
                output: Value::Null,
            })
        } else {
            Step::to(next, format!("{business_key} finished"))
        })
    }
}

async fn a_settlement_run_waits_for_its_child_workflows(backend: Backend) {
    let s = setup(backend).await;
    let stations = vec!["nanshan".to_owned(), "baoan".to_owned()];
    let id = s
        .engine
        .start::<Batch>("run-2026-11-22", stations)
        .await
        .unwrap();
    let done = finished(&s.engine, id).await;
    assert_eq!(done.status, Status::Completed, "{done:#?}");
    let mut finished_children: Vec<String> =
        serde_json::from_value(done.state["finished"].clone()).unwrap();
    finished_children.sort();
    assert_eq!(
        finished_children,
        ["settle:baoan=completed", "settle:nanshan=completed"]
    );
    let children: Vec<_> = entities::wf_instances::Entity::find()
        .all(s.engine.db())
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.parent_id == Some(id))
        .collect();
    assert_eq!(children.len(), 2);
    s.workers.shutdown().await;
}

async fn a_message_for_an_unknown_workflow_type_does_not_hold_up_the_others(backend: Backend) {
    use entities::wf_outbox;
    let s = setup(backend).await;
    // A message no process here can handle, due before everything else.
    let poison = Uuid::now_v7();
    let early = chrono::Utc::now() - chrono::Duration::seconds(60);
    wf_outbox::Entity::insert(wf_outbox::ActiveModel {
        id: Set(poison),
        instance_id: Set(Uuid::now_v7()),
        destination: Set("workflow:test.retired".into()),
        payload: Set(json!({"message": "start", "workflow_type": "test.retired",
                            "business_key": "x", "input": null, "parent_id": Uuid::nil()})),
        available_at: Set(early),
        leased_until: Set(None),
        delivered_at: Set(None),
        created_at: Set(early),
    })
    .exec_without_returning(s.engine.db())
    .await
    .unwrap();
    let id = s.engine.start::<FiveSteps>("order-9", ()).await.unwrap();
    let done = finished(&s.engine, id).await;
    assert_eq!(done.status, Status::Completed, "{done:#?}");
    let row = wf_outbox::Entity::find_by_id(poison)
        .one(s.engine.db())
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.delivered_at.is_none(),
        "the bad message is kept, undelivered"
    );
    assert!(
        row.available_at > chrono::Utc::now(),
        "and put back for later"
    );
}

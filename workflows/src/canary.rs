//! The canary: a workflow of K steps whose activity records one side effect per step under
//! the step's idempotency key. It checks a deployment end to end (operators start one and
//! watch it finish), and it is what `forecourt bench workflows` and the crash tests run.

use chrono::Utc;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait, ExprTrait};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use entities::wf_canary_effects;

use crate::definition::{ActivityError, Command, Event, RetryPolicy, Step, Workflow};
use crate::engine::Registry;

pub struct Canary;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CanaryInput {
    pub steps: u32,
    /// Whether each step writes its effect row (off: a no-op activity, for benchmarks).
    pub record_effects: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CanaryState {
    pub steps: u32,
    pub done: u32,
    pub record_effects: bool,
}

/// Activity kind of a canary step.
pub const STEP: &str = "canary.step";

fn step_command(step: u32, record_effects: bool) -> Command {
    Command::RunActivity {
        step: step.to_string(),
        kind: STEP.into(),
        input: json!({ "step": step, "record": record_effects }),
        retry: RetryPolicy {
            initial_interval_ms: 100,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 2_000,
            maximum_attempts: 10,
            non_retryable: Vec::new(),
        },
        timeout_ms: 10_000,
    }
}

impl Workflow for Canary {
    const NAME: &'static str = "canary";
    const VERSION: i32 = 1;
    type Input = CanaryInput;
    type State = CanaryState;
    type Event = Event;

    fn start(input: CanaryInput) -> Step<CanaryState> {
        let state = CanaryState {
            steps: Ord::max(input.steps, 1),
            done: 0,
            record_effects: input.record_effects,
        };
        Step::to(state, "run step 1").then(step_command(1, input.record_effects))
    }

    fn on_event(state: &CanaryState, event: &Event) -> Option<Step<CanaryState>> {
        match event {
            Event::ActivityCompleted { step, .. } if *step == (state.done + 1).to_string() => {
                let next = CanaryState {
                    done: state.done + 1,
                    ..state.clone()
                };
                Some(if next.done == next.steps {
                    Step::to(next, "every step done").then(Command::Complete {
                        output: Value::Null,
                    })
                } else {
                    let following = next.done + 1;
                    let record = next.record_effects;
                    Step::to(next, format!("step {step} done"))
                        .then(step_command(following, record))
                })
            }
            Event::ActivityFailed { step, error, .. } => Some(
                Step::to(state.clone(), format!("step {step} failed for good")).then(
                    Command::Fail {
                        reason: error.to_string(),
                    },
                ),
            ),
            _ => None,
        }
    }
}

/// Adds the canary and its step activity to a registry.
pub fn register(registry: Registry, db: DatabaseConnection) -> Registry {
    registry
        .workflow::<Canary>()
        .activity(STEP, move |ctx, input| {
            let db = db.clone();
            async move {
                let step = input["step"].as_i64().unwrap_or(0) as i32;
                if input["record"].as_bool().unwrap_or(false) {
                    let effect = wf_canary_effects::ActiveModel {
                        idempotency_key: Set(ctx.idempotency_key.clone()),
                        instance_id: Set(ctx.instance_id),
                        step: Set(step),
                        runs: Set(1),
                        recorded_at: Set(Utc::now()),
                    };
                    // The effect happens once per key however often the step runs; `runs` counts.
                    wf_canary_effects::Entity::insert(effect)
                        .on_conflict(
                            OnConflict::column(wf_canary_effects::Column::IdempotencyKey)
                                .value(
                                    wf_canary_effects::Column::Runs,
                                    Expr::col((
                                        wf_canary_effects::Entity,
                                        wf_canary_effects::Column::Runs,
                                    ))
                                    .add(1),
                                )
                                .to_owned(),
                        )
                        .exec_without_returning(&db)
                        .await
                        .map_err(|e| ActivityError::retryable("storage", e.to_string()))?;
                }
                Ok(json!({ "step": step }))
            }
        })
}

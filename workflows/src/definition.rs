//! What a workflow is: a typed state, the engine's events, and a pure transition that turns
//! (state, event) into a new state and commands.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Retry policy of an activity: exponential backoff from `initial_interval_ms`, capped at
/// `maximum_interval_ms`, at most `maximum_attempts` attempts in all; errors whose class is
/// listed in `non_retryable` fail at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub initial_interval_ms: u64,
    pub backoff_coefficient: f64,
    pub maximum_interval_ms: u64,
    pub maximum_attempts: u32,
    pub non_retryable: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval_ms: 1_000,
            backoff_coefficient: 2.0,
            maximum_interval_ms: 60_000,
            maximum_attempts: 5,
            non_retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `next_attempt` (2 for the first retry).
    pub fn backoff_ms(&self, next_attempt: u32) -> u64 {
        let exponent = next_attempt.saturating_sub(2) as i32;
        let delay = self.initial_interval_ms as f64 * self.backoff_coefficient.powi(exponent);
        (delay as u64).min(self.maximum_interval_ms)
    }

    pub fn retries(&self, error: &ActivityError, attempt: u32) -> bool {
        error.retryable
            && attempt < self.maximum_attempts
            && !self.non_retryable.iter().any(|c| c == &error.class)
    }
}

/// What an activity reports when it fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{class}: {message}")]
pub struct ActivityError {
    /// A stable class, matched against [`RetryPolicy::non_retryable`].
    pub class: String,
    pub message: String,
    pub retryable: bool,
}

impl ActivityError {
    pub fn retryable(class: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            class: class.into(),
            message: message.into(),
            retryable: true,
        }
    }

    pub fn permanent(class: impl Into<String>, message: impl Into<String>) -> Self {
        ActivityError {
            class: class.into(),
            message: message.into(),
            retryable: false,
        }
    }
}

/// What a workflow asks the engine to do. Commands are written to the outbox in the same
/// transaction as the state that issued them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Run activity `kind` as step `step`; its result comes back as an event.
    RunActivity {
        step: String,
        kind: String,
        input: Value,
        retry: RetryPolicy,
        timeout_ms: u64,
    },
    /// Deliver [`Event::TimerFired`] after `after_ms`.
    StartTimer { name: String, after_ms: u64 },
    /// Wait for signal `name`; if `deadline_ms` passes first, [`Event::TimerFired`] arrives
    /// with the name `deadline:<name>`. Whichever the instance sees first wins; the state
    /// machine ignores the other.
    WaitSignal {
        name: String,
        deadline_ms: Option<u64>,
    },
    /// Start an instance of another type as this one's child; when it finishes, this
    /// instance receives [`Event::ChildFinished`]. The business key makes the start
    /// idempotent.
    StartChild {
        workflow_type: String,
        business_key: String,
        input: Value,
    },
    /// Publish a domain event or webhook.
    Emit { topic: String, payload: Value },
    /// Finish successfully.
    Complete { output: Value },
    /// Finish in failure.
    Fail { reason: String },
    /// Finish after compensating the completed steps (a saga rolled back).
    Compensated { reason: String },
}

/// What the engine delivers to a workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    ActivityCompleted {
        step: String,
        output: Value,
    },
    /// The activity failed for good: not retryable, or out of attempts.
    ActivityFailed {
        step: String,
        error: ActivityError,
        attempts: u32,
    },
    TimerFired {
        name: String,
    },
    Signal {
        name: String,
        payload: Value,
    },
    /// A child started with [`Command::StartChild`] finished; `status` is `completed`,
    /// `failed` or `compensated`.
    ChildFinished {
        workflow_type: String,
        business_key: String,
        status: String,
        reason: String,
    },
}

/// The outcome of a transition: the new state, what to do, and why (kept in the history).
#[derive(Clone, Debug, PartialEq)]
pub struct Step<S> {
    pub state: S,
    pub commands: Vec<Command>,
    pub reason: String,
}

impl<S> Step<S> {
    pub fn to(state: S, reason: impl Into<String>) -> Self {
        Step {
            state,
            commands: Vec::new(),
            reason: reason.into(),
        }
    }

    pub fn then(mut self, command: Command) -> Self {
        self.commands.push(command);
        self
    }
}

/// The events a workflow type understands, read from what the engine delivers: activity
/// results as typed outcomes, timers and signals by name. A type that needs nothing more
/// uses the engine's [`Event`] itself.
pub trait WorkflowEvent: Sized + std::fmt::Debug {
    /// The typed event, or `None` for one this type does not know (recorded as ignored).
    fn from_engine(event: &Event) -> Option<Self>;
}

impl WorkflowEvent for Event {
    fn from_engine(event: &Event) -> Option<Self> {
        Some(event.clone())
    }
}

/// A workflow type: typed input, state and events, and a pure, deterministic transition;
/// all I/O happens in activities. An event the current state does not expect returns
/// `None` and is recorded as ignored.
pub trait Workflow: Send + Sync + 'static {
    /// The type's name, unique on the platform.
    const NAME: &'static str;
    /// Running instances keep the version they started on.
    const VERSION: i32;
    type Input: Serialize + DeserializeOwned + Send;
    type State: Serialize + DeserializeOwned + Clone + Send + std::fmt::Debug;
    type Event: WorkflowEvent;

    fn start(input: Self::Input) -> Step<Self::State>;
    fn on_event(state: &Self::State, event: &Self::Event) -> Option<Step<Self::State>>;
}

/// A workflow with its types erased, as the registry keeps it.
pub(crate) trait DynWorkflow: Send + Sync {
    fn start(&self, input: Value) -> Result<Step<Value>, serde_json::Error>;
    fn on_event(
        &self,
        state: Value,
        event: &Event,
    ) -> Result<Option<Step<Value>>, serde_json::Error>;
}

pub(crate) struct Erased<W>(pub std::marker::PhantomData<W>);

impl<W: Workflow> DynWorkflow for Erased<W> {
    fn start(&self, input: Value) -> Result<Step<Value>, serde_json::Error> {
        let step = W::start(serde_json::from_value(input)?);
        Ok(Step {
            state: serde_json::to_value(step.state)?,
            commands: step.commands,
            reason: step.reason,
        })
    }

    fn on_event(
        &self,
        state: Value,
        event: &Event,
    ) -> Result<Option<Step<Value>>, serde_json::Error> {
        let Some(event) = W::Event::from_engine(event) else {
            return Ok(None);
        };
        let state: W::State = serde_json::from_value(state)?;
        match W::on_event(&state, &event) {
            None => Ok(None),
            Some(step) => Ok(Some(Step {
                state: serde_json::to_value(step.state)?,
                commands: step.commands,
                reason: step.reason,
            })),
        }
    }
}

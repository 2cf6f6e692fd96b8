//! `bank_instruction`: one instruction to the custodial bank, from the maker's draft to the
//! bank's final word, as a durable workflow.
//!
//! ```text
//! pending approval ──approved──▶ planning ──▶ (waiting for the rail's window) ──▶ submitting
//!        │                                                                        │
//!        └─rejected / expired                  submitted ◀──accepted / pending────┘
//!                                                  │  no status by the deadline: query
//!                                     settled ◀────┴────▶ rejected (the hold is voided)
//!                                        │
//!                                        └─return within the window──▶ returned (reversed)
//! ```
//!
//! The treasury store is the source of truth for approvals and for the ledger; the workflow
//! sequences the work and never decides on its own what the bank did. Signals are the fast
//! path (`approval` when a checker acts, `bank_status` when a verified report arrived,
//! `returned` when the bank reports a return); every wait also has a durable timer that
//! asks the store or the bank again, so a lost signal only costs time.
//!
//! Domain events (`Emit`, posted to webhook subscribers): `treasury.instruction.settled` when
//! the bank settles, and `treasury.instruction.<outcome>` when the instance ends otherwise
//! (`rejected`, `expired`, `returned`, `failed`); each carries `instruction_id`.
//!
//! Activities (registered with [`register_activities`], over a [`treasury::execution::Executor`]):
//! - `treasury.check_approval`: where the approval chain stands (and expiry past the deadline);
//! - `treasury.plan`: the rail now, or how long to wait for a window;
//! - `treasury.sync`: submits the instruction's message, or queries the bank about the one
//!   sent before; idempotent by message id and end-to-end id, so running it again after a
//!   crash never pays twice;
//! - `treasury.return`: books a return reported by the bank; when only some tranches of an
//!   instruction came back, the instance goes back to waiting out a return window.
//!
//! An instruction above the 24x7 cap, outside the large-value hours, waits for the window
//! unless the policy in force allows tranches: then `treasury.plan` sends it now and
//! `treasury.sync` sends one message whose transactions are the tranches; it is settled when
//! the bank has settled them all (or, when the bank refused some, settled in part, the rest
//! of the hold released).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use treasury::execution::{ApprovalCheck, BankProgress, Executor, PlanOutcome};
use uuid::Uuid;

use crate::definition::{
    ActivityError, Command, Event, RetryPolicy, Step, Workflow, WorkflowEvent,
};
use crate::engine::Registry;

pub const CHECK_APPROVAL: &str = "treasury.check_approval";
pub const PLAN: &str = "treasury.plan";
pub const SYNC: &str = "treasury.sync";
pub const RETURN: &str = "treasury.return";

/// Signals the instance understands.
pub const SIGNAL_APPROVAL: &str = "approval";
pub const SIGNAL_BANK_STATUS: &str = "bank_status";
pub const SIGNAL_RETURNED: &str = "returned";

/// How long the instance waits for people and for the bank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// How often the approval chain is looked at when no signal came.
    pub approval_poll_ms: u64,
    /// After this, an instruction still pending approval expires.
    pub approval_deadline_ms: u64,
    /// The first wait for a status report before asking the bank; doubled after every
    /// unanswered query, up to `status_poll_max_ms`.
    pub status_poll_ms: u64,
    pub status_poll_max_ms: u64,
    /// How long after settlement a return is still expected.
    pub return_window_ms: u64,
    /// Longest time one activity may take.
    pub activity_timeout_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            approval_poll_ms: 60_000,
            approval_deadline_ms: 72 * 3_600_000,
            status_poll_ms: 5_000,
            status_poll_max_ms: 600_000,
            return_window_ms: 5 * 24 * 3_600_000,
            activity_timeout_ms: 30_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankInstructionInput {
    pub instruction_id: Uuid,
    #[serde(default)]
    pub timing: Timing,
}

/// Where the instance is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for checkers; `timer` is the poll that is due next.
    PendingApproval {
        waited_ms: u64,
        timer: String,
    },
    /// An approval check is running.
    CheckingApproval {
        waited_ms: u64,
        step: String,
    },
    /// The rail planner is running.
    Planning {
        step: String,
    },
    /// No rail is open for this payment; `timer` fires when the next window opens.
    WaitingForWindow {
        until: String,
        timer: String,
    },
    /// The message is being submitted (or the bank queried about it).
    Syncing {
        polls: u32,
        step: String,
    },
    /// The bank has the message and has not settled it; `timer` is the next query.
    Submitted {
        polls: u32,
        status: String,
        timer: String,
    },
    /// Settled; a return may still come until `timer` fires.
    Settled {
        timer: String,
    },
    /// A return is being booked.
    Returning {
        step: String,
    },
    Finished {
        outcome: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankInstructionState {
    pub input: BankInstructionInput,
    pub phase: Phase,
    /// Numbers every step and timer so that none repeats within the instance.
    pub seq: u64,
}

/// The workflow type.
pub struct BankInstruction;

fn store_retry() -> RetryPolicy {
    // Store and planner calls are idempotent: retry freely.
    RetryPolicy {
        initial_interval_ms: 500,
        backoff_coefficient: 2.0,
        maximum_interval_ms: 30_000,
        maximum_attempts: 10,
        non_retryable: vec!["bad_input".into(), "invalid_state".into()],
    }
}

fn sync_retry() -> RetryPolicy {
    // A failed sync is answered by the next poll, which queries before it sends again.
    RetryPolicy {
        initial_interval_ms: 1_000,
        backoff_coefficient: 2.0,
        maximum_interval_ms: 10_000,
        maximum_attempts: 1,
        non_retryable: vec![],
    }
}

impl BankInstructionState {
    fn next(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("{what}:{}", self.seq)
    }

    fn id(&self) -> Value {
        json!({ "instruction_id": self.input.instruction_id })
    }

    fn activity(&mut self, kind: &str, what: &str, input: Value, retry: RetryPolicy) -> Command {
        let step = self.next(what);
        Command::RunActivity {
            step,
            kind: kind.into(),
            input,
            retry,
            timeout_ms: self.input.timing.activity_timeout_ms,
        }
    }

    fn check_approval(mut self, waited_ms: u64, reason: &str) -> Step<Self> {
        let expired = waited_ms >= self.input.timing.approval_deadline_ms;
        let input = json!({ "instruction_id": self.input.instruction_id, "expire": expired });
        let command = self.activity(CHECK_APPROVAL, "approval", input, store_retry());
        let Command::RunActivity { step, .. } = &command else {
            unreachable!("activity() builds RunActivity")
        };
        self.phase = Phase::CheckingApproval {
            waited_ms,
            step: step.clone(),
        };
        Step::to(self, reason).then(command)
    }

    fn wait_for_approval(mut self, waited_ms: u64, reason: &str) -> Step<Self> {
        let timer = self.next("approval-poll");
        let after_ms = self.input.timing.approval_poll_ms;
        self.phase = Phase::PendingApproval {
            waited_ms,
            timer: timer.clone(),
        };
        Step::to(self, reason).then(Command::StartTimer {
            name: timer,
            after_ms,
        })
    }

    fn plan(mut self, reason: &str) -> Step<Self> {
        let command = self.activity(PLAN, "plan", self.id(), store_retry());
        let Command::RunActivity { step, .. } = &command else {
            unreachable!("activity() builds RunActivity")
        };
        self.phase = Phase::Planning { step: step.clone() };
        Step::to(self, reason).then(command)
    }

    fn sync(mut self, polls: u32, reason: &str) -> Step<Self> {
        let command = self.activity(SYNC, "sync", self.id(), sync_retry());
        let Command::RunActivity { step, .. } = &command else {
            unreachable!("activity() builds RunActivity")
        };
        self.phase = Phase::Syncing {
            polls,
            step: step.clone(),
        };
        Step::to(self, reason).then(command)
    }

    fn await_status(mut self, polls: u32, status: &str, reason: &str) -> Step<Self> {
        let t = &self.input.timing;
        let after_ms = t
            .status_poll_ms
            .saturating_mul(1u64 << polls.min(20))
            .min(t.status_poll_max_ms);
        let timer = self.next("status-poll");
        self.phase = Phase::Submitted {
            polls,
            status: status.to_owned(),
            timer: timer.clone(),
        };
        Step::to(self, reason).then(Command::StartTimer {
            name: timer,
            after_ms,
        })
    }

    fn settled(mut self) -> Step<Self> {
        let timer = self.next("return-window");
        let after_ms = self.input.timing.return_window_ms;
        let id = self.input.instruction_id;
        self.phase = Phase::Settled {
            timer: timer.clone(),
        };
        Step::to(self, "the bank settled the payment; the hold is posted")
            .then(Command::Emit {
                topic: "treasury.instruction.settled".into(),
                payload: json!({ "instruction_id": id }),
            })
            .then(Command::StartTimer {
                name: timer,
                after_ms,
            })
    }

    fn finish(mut self, outcome: &str, reason: String, failed: bool) -> Step<Self> {
        let id = self.input.instruction_id;
        self.phase = Phase::Finished {
            outcome: outcome.to_owned(),
        };
        // Settlement was announced when it happened; the window closing is no news.
        let emit = (outcome != "settled").then(|| Command::Emit {
            topic: format!("treasury.instruction.{outcome}"),
            payload: json!({ "instruction_id": id, "reason": reason }),
        });
        let end = if failed {
            Command::Fail {
                reason: reason.clone(),
            }
        } else {
            Command::Complete {
                output: json!({ "instruction_id": id, "outcome": outcome }),
            }
        };
        let step = Step::to(self, reason);
        match emit {
            Some(emit) => step.then(emit).then(end),
            None => step.then(end),
        }
    }
}

/// What the instance understands, typed: each activity's outcome, timers and signals.
#[derive(Clone, Debug, PartialEq)]
pub enum BankEvent {
    Signal {
        name: String,
        payload: Value,
    },
    Timer {
        name: String,
    },
    ApprovalChecked {
        step: String,
        check: ApprovalCheck,
    },
    Planned {
        step: String,
        plan: PlanOutcome,
    },
    Synced {
        step: String,
        progress: BankProgress,
    },
    ReturnBooked {
        step: String,
        reason: String,
        /// Whether everything that settled came back (false: some tranches only).
        whole: bool,
    },
    /// An activity failed for good, or answered something unreadable.
    StepFailed {
        step: String,
        error: ActivityError,
    },
}

impl WorkflowEvent for BankEvent {
    fn from_engine(event: &Event) -> Option<Self> {
        fn read<T: for<'de> Deserialize<'de>>(
            step: &str,
            output: &Value,
            wrap: impl FnOnce(T) -> BankEvent,
        ) -> BankEvent {
            match serde_json::from_value(output.clone()) {
                Ok(value) => wrap(value),
                Err(e) => BankEvent::StepFailed {
                    step: step.to_owned(),
                    error: ActivityError::permanent("output", format!("unreadable outcome: {e}")),
                },
            }
        }
        Some(match event {
            Event::Signal { name, payload } => BankEvent::Signal {
                name: name.clone(),
                payload: payload.clone(),
            },
            Event::TimerFired { name } => BankEvent::Timer { name: name.clone() },
            Event::ActivityCompleted { step, output } => {
                let s = step.clone();
                match step.split(':').next()? {
                    "approval" => read(step, output, |check| BankEvent::ApprovalChecked {
                        step: s,
                        check,
                    }),
                    "plan" => read(step, output, |plan| BankEvent::Planned { step: s, plan }),
                    "sync" => read(step, output, |progress| BankEvent::Synced {
                        step: s,
                        progress,
                    }),
                    "return" => BankEvent::ReturnBooked {
                        step: s,
                        reason: output
                            .get("reason")
                            .and_then(Value::as_str)
                            .unwrap_or("returned")
                            .to_owned(),
                        whole: output.get("whole").and_then(Value::as_bool).unwrap_or(true),
                    },
                    _ => return None,
                }
            }
            Event::ActivityFailed { step, error, .. } => BankEvent::StepFailed {
                step: step.clone(),
                error: error.clone(),
            },
            Event::ChildFinished { .. } => return None,
        })
    }
}

impl Workflow for BankInstruction {
    const NAME: &'static str = "bank_instruction";
    const VERSION: i32 = 1;
    type Input = BankInstructionInput;
    type State = BankInstructionState;
    type Event = BankEvent;

    fn start(input: BankInstructionInput) -> Step<BankInstructionState> {
        let state = BankInstructionState {
            input,
            phase: Phase::PendingApproval {
                waited_ms: 0,
                timer: String::new(),
            },
            seq: 0,
        };
        state.wait_for_approval(0, "created; waiting for approval")
    }

    fn on_event(
        state: &BankInstructionState,
        event: &BankEvent,
    ) -> Option<Step<BankInstructionState>> {
        use BankEvent as E;
        let s = state.clone();
        match (&state.phase, event) {
            // Approval: a signal or the poll looks at the chain.
            (Phase::PendingApproval { waited_ms, .. }, E::Signal { name, .. })
                if name == SIGNAL_APPROVAL =>
            {
                Some(s.check_approval(*waited_ms, "a checker acted"))
            }
            (Phase::PendingApproval { waited_ms, timer }, E::Timer { name }) if name == timer => {
                let waited = waited_ms + state.input.timing.approval_poll_ms;
                Some(s.check_approval(waited, "no word from the checkers; looking again"))
            }
            (
                Phase::CheckingApproval { waited_ms, step },
                E::ApprovalChecked { step: done, check },
            ) if done == step => Some(match check {
                ApprovalCheck::Pending { .. } => {
                    s.wait_for_approval(*waited_ms, "still pending approval")
                }
                ApprovalCheck::Approved => s.plan("approved; the debtor's funds are held"),
                ApprovalCheck::Rejected { reason } => {
                    s.finish("rejected", format!("rejected: {reason}"), false)
                }
                ApprovalCheck::Expired => {
                    s.finish("expired", "approval did not complete in time".into(), false)
                }
            }),
            (Phase::CheckingApproval { step, .. }, E::StepFailed { step: done, error })
                if done == step =>
            {
                // The store refused for good (an unknown instruction, a broken policy).
                Some(s.finish(
                    "failed",
                    format!("approval check failed: {}", error.message),
                    true,
                ))
            }

            // Planning: send now, or wait for the window.
            (Phase::Planning { step }, E::Planned { step: done, plan }) if done == step => {
                Some(match plan {
                    PlanOutcome::SendNow { rail, .. } => {
                        s.sync(0, &format!("sending now on the {rail} rail"))
                    }
                    PlanOutcome::Wait { until, wait_ms, .. } => {
                        let mut s = s;
                        let timer = s.next("window");
                        s.phase = Phase::WaitingForWindow {
                            until: until.clone(),
                            timer: timer.clone(),
                        };
                        Step::to(s, format!("no rail open for it; waiting until {until}")).then(
                            Command::StartTimer {
                                name: timer,
                                after_ms: *wait_ms,
                            },
                        )
                    }
                    PlanOutcome::Impossible { reason } => {
                        s.finish("failed", format!("cannot be sent: {reason}"), true)
                    }
                })
            }
            (Phase::Planning { step }, E::StepFailed { step: done, error }) if done == step => {
                Some(s.finish(
                    "failed",
                    format!("planning failed: {}", error.message),
                    true,
                ))
            }
            (Phase::WaitingForWindow { timer, .. }, E::Timer { name }) if name == timer => {
                Some(s.plan("the window opened; planning again"))
            }

            // The bank: submit, then status by signal or by query.
            (
                Phase::Syncing { polls, step },
                E::Synced {
                    step: done,
                    progress,
                },
            ) if done == step => {
                let polls = *polls;
                Some(match progress {
                    BankProgress::Settled => s.settled(),
                    BankProgress::Rejected { reason } => s.finish(
                        "rejected",
                        format!("the bank rejected it ({reason}); the hold is voided"),
                        false,
                    ),
                    BankProgress::Returned { reason } => s.finish(
                        "returned",
                        format!("returned after settlement ({reason}); reversed"),
                        false,
                    ),
                    BankProgress::InProgress { status } => {
                        s.await_status(polls, status, &format!("the bank reports {status}"))
                    }
                    BankProgress::Unknown { reason } => s.await_status(
                        polls,
                        "unknown",
                        &format!("outcome unknown ({reason}); the bank will be asked"),
                    ),
                })
            }
            (Phase::Syncing { polls, step }, E::StepFailed { step: done, error })
                if done == step =>
            {
                Some(s.await_status(
                    *polls,
                    "unknown",
                    &format!("sync failed ({}); the bank will be asked", error.message),
                ))
            }
            (Phase::Submitted { polls, .. }, E::Signal { name, .. })
                if name == SIGNAL_BANK_STATUS || name == SIGNAL_RETURNED =>
            {
                Some(s.sync(*polls, "a status report arrived"))
            }
            (Phase::Submitted { polls, timer, .. }, E::Timer { name }) if name == timer => {
                Some(s.sync(polls + 1, "no final status yet; asking the bank"))
            }

            // After settlement: a return, or the window closes.
            (Phase::Settled { .. }, E::Signal { name, payload }) if name == SIGNAL_RETURNED => {
                let mut s = s;
                let input = json!({
                    "instruction_id": s.input.instruction_id,
                    "reason": payload.get("reason").cloned().unwrap_or(Value::Null),
                });
                let command = s.activity(RETURN, "return", input, store_retry());
                let Command::RunActivity { step, .. } = &command else {
                    unreachable!("activity() builds RunActivity")
                };
                s.phase = Phase::Returning { step: step.clone() };
                Some(Step::to(s, "the bank reports a return").then(command))
            }
            (Phase::Settled { timer }, E::Timer { name }) if name == timer => {
                Some(s.finish("settled", "settled; the return window closed".into(), false))
            }
            (
                Phase::Returning { step },
                E::ReturnBooked {
                    step: done,
                    reason,
                    whole,
                },
            ) if done == step => Some(if *whole {
                s.finish(
                    "returned",
                    format!("returned after settlement ({reason}); reversed"),
                    false,
                )
            } else {
                // Some tranches came back; the others may still: a new return window.
                let mut s = s;
                let timer = s.next("return-window");
                let after_ms = s.input.timing.return_window_ms;
                s.phase = Phase::Settled {
                    timer: timer.clone(),
                };
                Step::to(
                    s,
                    format!("part of the payment came back ({reason}); that part is reversed"),
                )
                .then(Command::StartTimer {
                    name: timer,
                    after_ms,
                })
            }),
            (Phase::Returning { step }, E::StepFailed { step: done, error }) if done == step => {
                Some(s.finish(
                    "failed",
                    format!("a return could not be booked: {}", error.message),
                    true,
                ))
            }
            _ => None,
        }
    }
}

fn instruction_id(input: &Value) -> Result<Uuid, ActivityError> {
    serde_json::from_value(input["instruction_id"].clone())
        .map_err(|e| ActivityError::permanent("bad_input", format!("instruction_id: {e}")))
}

fn to_output<T: Serialize>(value: &T) -> Result<Value, ActivityError> {
    serde_json::to_value(value).map_err(|e| ActivityError::permanent("output", e.to_string()))
}

fn failure(error: treasury::execution::ExecutionError) -> ActivityError {
    if error.is_permanent() {
        ActivityError::permanent(error.class(), error.to_string())
    } else {
        ActivityError::retryable(error.class(), error.to_string())
    }
}

/// Registers the workflow's activities over `executor`.
pub fn register_activities(registry: Registry, executor: Arc<Executor>) -> Registry {
    let (a, b, c) = (executor.clone(), executor.clone(), executor.clone());
    registry
        .activity(CHECK_APPROVAL, move |_ctx, input| {
            let executor = a.clone();
            async move {
                let id = instruction_id(&input)?;
                let expire = input["expire"].as_bool().unwrap_or(false);
                to_output(&executor.check_approval(id, expire).await.map_err(failure)?)
            }
        })
        .activity(PLAN, move |_ctx, input| {
            let executor = b.clone();
            async move {
                let id = instruction_id(&input)?;
                to_output(&executor.plan(id).await.map_err(failure)?)
            }
        })
        .activity(SYNC, move |_ctx, input| {
            let executor = c.clone();
            async move {
                let id = instruction_id(&input)?;
                to_output(&executor.sync(id).await.map_err(failure)?)
            }
        })
        .activity(RETURN, move |_ctx, input| {
            let executor = executor.clone();
            async move {
                let id = instruction_id(&input)?;
                let reason = input["reason"].as_str().unwrap_or("returned").to_owned();
                let whole = executor.book_return(id, &reason).await.map_err(failure)?;
                Ok(json!({ "reason": reason, "whole": whole }))
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transition on an engine event, read as the engine reads it.
    fn on(state: &BankInstructionState, event: &Event) -> Option<Step<BankInstructionState>> {
        BankInstruction::on_event(state, &BankEvent::from_engine(event)?)
    }

    fn input() -> BankInstructionInput {
        BankInstructionInput {
            instruction_id: Uuid::nil(),
            timing: Timing {
                status_poll_ms: 100,
                status_poll_max_ms: 350,
                ..Timing::default()
            },
        }
    }

    /// The step name of the one activity a transition ran.
    fn ran(step: &Step<BankInstructionState>, kind: &str) -> String {
        step.commands
            .iter()
            .find_map(|c| match c {
                Command::RunActivity { step, kind: k, .. } if k == kind => Some(step.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {kind} activity in {:?}", step.commands))
    }

    fn timer(step: &Step<BankInstructionState>) -> (String, u64) {
        step.commands
            .iter()
            .find_map(|c| match c {
                Command::StartTimer { name, after_ms } => Some((name.clone(), *after_ms)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no timer in {:?}", step.commands))
    }

    fn done(step: &str, output: Value) -> Event {
        Event::ActivityCompleted {
            step: step.into(),
            output,
        }
    }

    fn approved_and_planned() -> Step<BankInstructionState> {
        let start = BankInstruction::start(input());
        let signal = Event::Signal {
            name: SIGNAL_APPROVAL.into(),
            payload: Value::Null,
        };
        let check = on(&start.state, &signal).unwrap();
        let step = ran(&check, CHECK_APPROVAL);
        let plan = on(&check.state, &done(&step, json!({ "outcome": "approved" }))).unwrap();
        let step = ran(&plan, PLAN);
        on(
            &plan.state,
            &done(
                &step,
                json!({ "outcome": "send_now", "rail": "intra_bank", "expected_arrival": "2026-11-23T02:00:00Z" }),
            ),
        )
        .unwrap()
    }

    #[test]
    fn an_instruction_waits_for_approval_and_polls_when_no_signal_comes() {
        let start = BankInstruction::start(input());
        let (name, after) = timer(&start);
        assert_eq!(after, Timing::default().approval_poll_ms);
        let polled = on(&start.state, &Event::TimerFired { name }).unwrap();
        let step = ran(&polled, CHECK_APPROVAL);
        let pending = on(
            &polled.state,
            &done(
                &step,
                json!({ "outcome": "pending", "waiting_for": "1 more" }),
            ),
        )
        .unwrap();
        assert!(matches!(
            pending.state.phase,
            Phase::PendingApproval { waited_ms, .. } if waited_ms == Timing::default().approval_poll_ms
        ));
    }

    #[test]
    fn past_the_deadline_the_check_asks_to_expire() {
        let mut state = BankInstruction::start(input()).state;
        state.phase = Phase::PendingApproval {
            waited_ms: Timing::default().approval_deadline_ms - Timing::default().approval_poll_ms,
            timer: "approval-poll:9".into(),
        };
        let step = on(
            &state,
            &Event::TimerFired {
                name: "approval-poll:9".into(),
            },
        )
        .unwrap();
        let Some(Command::RunActivity { input, .. }) = step.commands.first() else {
            panic!("{:?}", step.commands)
        };
        assert_eq!(input["expire"], json!(true));
        let expired = on(
            &step.state,
            &done(&ran(&step, CHECK_APPROVAL), json!({ "outcome": "expired" })),
        )
        .unwrap();
        assert!(
            matches!(expired.state.phase, Phase::Finished { ref outcome } if outcome == "expired")
        );
    }

    #[test]
    fn an_unknown_outcome_is_queried_with_growing_waits_and_never_resent_blindly() {
        let syncing = approved_and_planned();
        let mut state = syncing.state.clone();
        let mut step = ran(&syncing, SYNC);
        let mut waits = Vec::new();
        for _ in 0..4 {
            let after = on(
                &state,
                &done(&step, json!({ "outcome": "unknown", "reason": "timeout" })),
            )
            .unwrap();
            let (name, ms) = timer(&after);
            waits.push(ms);
            let next = on(&after.state, &Event::TimerFired { name }).unwrap();
            step = ran(&next, SYNC);
            state = next.state;
        }
        assert_eq!(waits, vec![100, 200, 350, 350]);
    }

    #[test]
    fn an_unreadable_outcome_fails_the_step_instead_of_being_ignored() {
        let syncing = approved_and_planned();
        let garbled = on(
            &syncing.state,
            &done(&ran(&syncing, SYNC), json!({ "outcome": "paid_probably" })),
        )
        .unwrap();
        // A failed sync is an unknown outcome: the bank is asked, nothing is sent blindly.
        assert!(
            matches!(garbled.state.phase, Phase::Submitted { ref status, .. } if status == "unknown"),
            "{:?}",
            garbled.state.phase
        );
    }

    #[test]
    fn a_stale_timer_or_an_unexpected_signal_changes_nothing() {
        let syncing = approved_and_planned();
        let stale = Event::TimerFired {
            name: "status-poll:1".into(),
        };
        assert!(on(&syncing.state, &stale).is_none());
        let early_return = Event::Signal {
            name: SIGNAL_RETURNED.into(),
            payload: Value::Null,
        };
        assert!(on(&syncing.state, &early_return).is_none());
    }

    #[test]
    fn settlement_waits_out_the_return_window_then_completes() {
        let syncing = approved_and_planned();
        let settled = on(
            &syncing.state,
            &done(&ran(&syncing, SYNC), json!({ "outcome": "settled" })),
        )
        .unwrap();
        let (name, after) = timer(&settled);
        assert_eq!(after, Timing::default().return_window_ms);
        let end = on(&settled.state, &Event::TimerFired { name }).unwrap();
        assert!(
            end.commands.iter().any(
                |c| matches!(c, Command::Complete { output } if output["outcome"] == "settled")
            )
        );
    }

    #[test]
    fn a_return_reported_inside_the_window_is_booked() {
        let syncing = approved_and_planned();
        let settled = on(
            &syncing.state,
            &done(&ran(&syncing, SYNC), json!({ "outcome": "settled" })),
        )
        .unwrap();
        let returned = on(
            &settled.state,
            &Event::Signal {
                name: SIGNAL_RETURNED.into(),
                payload: json!({ "reason": "AC04 account closed" }),
            },
        )
        .unwrap();
        let step = ran(&returned, RETURN);
        let end = on(
            &returned.state,
            &done(&step, json!({ "reason": "AC04 account closed" })),
        )
        .unwrap();
        assert!(
            matches!(end.state.phase, Phase::Finished { ref outcome } if outcome == "returned")
        );
    }

    #[test]
    fn a_return_of_some_tranches_waits_out_a_new_return_window() {
        let syncing = approved_and_planned();
        let settled = on(
            &syncing.state,
            &done(&ran(&syncing, SYNC), json!({ "outcome": "settled" })),
        )
        .unwrap();
        let returned = on(
            &settled.state,
            &Event::Signal {
                name: SIGNAL_RETURNED.into(),
                payload: json!({ "reason": "AC04 account closed" }),
            },
        )
        .unwrap();
        let step = ran(&returned, RETURN);
        let partly = on(
            &returned.state,
            &done(
                &step,
                json!({ "reason": "AC04 account closed", "whole": false }),
            ),
        )
        .unwrap();
        let Phase::Settled { timer } = &partly.state.phase else {
            panic!("{:?}", partly.state.phase)
        };
        assert_eq!(
            self::timer(&partly),
            (timer.clone(), Timing::default().return_window_ms)
        );
        assert!(
            !partly
                .commands
                .iter()
                .any(|c| matches!(c, Command::Complete { .. } | Command::Emit { .. })),
            "{:?}",
            partly.commands
        );
        // An output from before the field existed reads as a whole return.
        let whole = on(&returned.state, &done(&step, json!({ "reason": "AC04" }))).unwrap();
        assert!(
            matches!(whole.state.phase, Phase::Finished { ref outcome } if outcome == "returned")
        );
    }
}

//! `refund_approval`: one refund of a till payment, from the request to the money paid back.
//!
//! A refund of a sale in the till's open shift is paid back at once. A refund of a sale of
//! another shift waits for the station manager: the decision is taken in the store (a
//! conditional update from `pending_approval`, so that it happens once) and then signalled
//! here; a request nobody decides expires at its deadline. An approved refund is paid back
//! through the payment's channel, idempotent by the refund number, or out of the drawer for
//! cash, or, for a partner order, against what the partner owes; then booked and recorded.
//!
//! Domain event (`Emit`, posted to webhook subscribers): `partner_orders.refunded` when a
//! refund of a partner order is made, naming the partner in its `audience`, so that the
//! partner refunds its driver.
//!
//! Activities: `payments.refund` (pay back, book, record) and `payments.refund_expire`
//! (expire a request still waiting, or report the decision that beat the deadline) and
//! `payments.refund_attention` (a refund whose outcome stayed unknown after every retry).
//!
//! Signal: `decision` `{ "approved": bool }`, sent after the store recorded the decision.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::definition::{Command, Event, RetryPolicy, Step, Workflow};

pub const REFUND: &str = "payments.refund";
pub const REFUND_EXPIRE: &str = "payments.refund_expire";
pub const REFUND_ATTENTION: &str = "payments.refund_attention";
pub const SIGNAL_DECISION: &str = "decision";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefundInput {
    pub refund_no: String,
    pub needs_approval: bool,
    /// How long a request waits for the manager before it expires.
    pub approval_deadline_ms: u64,
    pub activity_timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    WaitingForApproval,
    Expiring,
    Refunding,
    MarkingAttention,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefundState {
    pub input: RefundInput,
    pub phase: Phase,
}

pub struct RefundApproval;

fn retrying() -> RetryPolicy {
    // The channel is idempotent on the refund number: retrying an unknown answer is safe.
    RetryPolicy {
        initial_interval_ms: 500,
        backoff_coefficient: 2.0,
        maximum_interval_ms: 60_000,
        maximum_attempts: 12,
        non_retryable: vec![],
    }
}

impl RefundState {
    fn run(&self, kind: &str, step: &str) -> Command {
        Command::RunActivity {
            step: step.into(),
            kind: kind.into(),
            input: json!({ "refund_no": self.input.refund_no }),
            retry: retrying(),
            timeout_ms: self.input.activity_timeout_ms,
        }
    }

    fn to(&self, phase: Phase, reason: impl Into<String>, command: Command) -> Step<RefundState> {
        let mut next = self.clone();
        next.phase = phase;
        Step::to(next, reason).then(command)
    }

    fn done(&self, status: &str) -> Step<RefundState> {
        Step::to(self.clone(), format!("refund {status}")).then(Command::Complete {
            output: json!({ "status": status }),
        })
    }

    /// The end of the refund, announcing the event the refund activity reported (a partner
    /// order's refund tells its partner), if any.
    fn refunded(&self, output: &serde_json::Value) -> Step<RefundState> {
        let status = status_of(output);
        let step = Step::to(self.clone(), format!("refund {status}"));
        let step = match (
            output["event"]["topic"].as_str(),
            &output["event"]["payload"],
        ) {
            (Some(topic), payload) if !payload.is_null() => step.then(Command::Emit {
                topic: topic.to_owned(),
                payload: payload.clone(),
            }),
            _ => step,
        };
        step.then(Command::Complete {
            output: json!({ "status": status }),
        })
    }
}

fn status_of(output: &serde_json::Value) -> &str {
    output["status"].as_str().unwrap_or("")
}

impl Workflow for RefundApproval {
    const NAME: &'static str = "refund_approval";
    const VERSION: i32 = 1;
    type Input = RefundInput;
    type State = RefundState;
    type Event = Event;

    fn start(input: RefundInput) -> Step<RefundState> {
        let waiting = input.needs_approval;
        let state = RefundState {
            phase: if waiting {
                Phase::WaitingForApproval
            } else {
                Phase::Refunding
            },
            input,
        };
        if waiting {
            let deadline = state.input.approval_deadline_ms;
            Step::to(state, "waiting for the station manager").then(Command::WaitSignal {
                name: SIGNAL_DECISION.into(),
                deadline_ms: Some(deadline),
            })
        } else {
            let command = state.run(REFUND, "refund");
            Step::to(state, "a sale of the open shift: refunding").then(command)
        }
    }

    fn on_event(state: &RefundState, event: &Event) -> Option<Step<RefundState>> {
        match (state.phase, event) {
            (Phase::WaitingForApproval, Event::Signal { name, payload })
                if name == SIGNAL_DECISION =>
            {
                if payload["approved"].as_bool() == Some(true) {
                    Some(state.to(
                        Phase::Refunding,
                        "approved by the station manager",
                        state.run(REFUND, "refund"),
                    ))
                } else {
                    Some(state.done("rejected"))
                }
            }
            (Phase::WaitingForApproval, Event::TimerFired { name })
                if name == &format!("deadline:{SIGNAL_DECISION}") =>
            {
                Some(state.to(
                    Phase::Expiring,
                    "nobody decided in time",
                    state.run(REFUND_EXPIRE, "expire"),
                ))
            }
            (Phase::Expiring, Event::ActivityCompleted { step, output }) if step == "expire" => {
                // The store decides between the deadline and a decision taken just before it.
                match status_of(output) {
                    "refunding" => Some(state.to(
                        Phase::Refunding,
                        "approved just before the deadline",
                        state.run(REFUND, "refund"),
                    )),
                    status => Some(state.done(status)),
                }
            }
            // Expiring and marking only write to storage: when a whole round of retries ran
            // out (storage down for minutes), another round starts; the refund and its
            // reservation must never be left without an owner.
            (Phase::Expiring, Event::ActivityFailed { step, error, .. }) if step == "expire" => {
                Some(state.to(
                    Phase::Expiring,
                    format!("expiry not recorded yet ({}); again", error.message),
                    state.run(REFUND_EXPIRE, "expire"),
                ))
            }
            (Phase::MarkingAttention, Event::ActivityFailed { step, error, .. })
                if step == "attention" =>
            {
                Some(state.to(
                    Phase::MarkingAttention,
                    format!("not recorded yet ({}); again", error.message),
                    Command::RunActivity {
                        step: "attention".into(),
                        kind: REFUND_ATTENTION.into(),
                        input: json!({
                            "refund_no": state.input.refund_no,
                            "reason": error.message,
                        }),
                        retry: retrying(),
                        timeout_ms: state.input.activity_timeout_ms,
                    },
                ))
            }
            (Phase::Refunding, Event::ActivityCompleted { step, output }) if step == "refund" => {
                Some(state.refunded(output))
            }
            (Phase::Refunding, Event::ActivityFailed { step, error, .. }) if step == "refund" => {
                Some(state.to(
                    Phase::MarkingAttention,
                    format!("the refund did not complete: {}", error.message),
                    Command::RunActivity {
                        step: "attention".into(),
                        kind: REFUND_ATTENTION.into(),
                        input: json!({
                            "refund_no": state.input.refund_no,
                            "reason": error.message,
                        }),
                        retry: retrying(),
                        timeout_ms: state.input.activity_timeout_ms,
                    },
                ))
            }
            (Phase::MarkingAttention, Event::ActivityCompleted { step, .. })
                if step == "attention" =>
            {
                Some(
                    Step::to(state.clone(), "left for an operator").then(Command::Fail {
                        reason:
                            "the refund's outcome is unknown: an operator must check the channel"
                                .into(),
                    }),
                )
            }
            _ => None,
        }
    }
}

/// Registers the refund activities over the ledger and the channel adapters.
pub fn register_refund_activities(
    registry: crate::engine::Registry,
    ledger: ledger::Ledger,
    channels: std::sync::Arc<crate::pos_payment::Channels>,
) -> crate::engine::Registry {
    use crate::definition::ActivityError;
    use crate::pos_payment::store_error;
    let for_expire = ledger.clone();
    let for_attention = ledger.clone();
    let refund_no = |input: &serde_json::Value| -> Result<String, ActivityError> {
        input["refund_no"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ActivityError::permanent("bad_input", "refund_no"))
    };
    registry
        .activity(REFUND, move |_ctx, input| {
            let ledger = ledger.clone();
            let channels = channels.clone();
            async move {
                let no = refund_no(&input)?;
                let refund = payments::sales::refund_by_no(ledger.db(), &no)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| ActivityError::permanent("unknown_refund", no.clone()))?;
                let channel = match payments::sales::payment_channel(ledger.db(), &refund)
                    .await
                    .map_err(store_error)?
                {
                    Some(id) => channels.get(&id).cloned(),
                    None => None,
                };
                let done = payments::sales::execute_refund(
                    &ledger,
                    &no,
                    channel.as_deref(),
                    chrono::Utc::now(),
                )
                .await
                .map_err(|e| match e {
                    payments::sales::RefundError::Retry(m) => {
                        ActivityError::retryable("refund_unknown", m)
                    }
                    payments::sales::RefundError::Permanent(m) => {
                        ActivityError::permanent("refund_impossible", m)
                    }
                })?;
                let event = payments::partners::refund_event(ledger.db(), &done)
                    .await
                    .map_err(store_error)?
                    .map(|(topic, payload)| json!({ "topic": topic, "payload": payload }));
                Ok(json!({ "status": done.status, "event": event }))
            }
        })
        .activity(REFUND_EXPIRE, move |_ctx, input| {
            let ledger = for_expire.clone();
            async move {
                let no = refund_no(&input)?;
                let row = payments::sales::finish_refund(
                    ledger.db(),
                    &no,
                    "expired",
                    None,
                    "the station manager did not decide in time",
                    chrono::Utc::now(),
                )
                .await
                .map_err(store_error)?;
                Ok(json!({ "status": row.status }))
            }
        })
        .activity(REFUND_ATTENTION, move |_ctx, input| {
            let ledger = for_attention.clone();
            async move {
                let no = refund_no(&input)?;
                let reason = input["reason"].as_str().unwrap_or("unknown").to_owned();
                let row = payments::sales::finish_refund(
                    ledger.db(),
                    &no,
                    "needs_attention",
                    None,
                    &format!("outcome unknown after every retry: {reason}"),
                    chrono::Utc::now(),
                )
                .await
                .map_err(store_error)?;
                Ok(json!({ "status": row.status }))
            }
        })
}

//! The payment state machine: pure, deterministic, every transition with a reason.
//!
//! The one rule it exists for: **a second channel is tried only when the first certainly did
//! not charge** — it declined, the request never left, or an unknown outcome was reversed
//! and the reversal confirmed by a query. An unknown outcome is queried on a timer, and
//! nothing else is charged meanwhile.
//!
//! The machine consumes [`PaymentEvent`]s and emits [`PaymentCommand`]s; the workflow runs
//! the commands (adapter calls as activities, timers as durable timers) and feeds the results
//! back. Events from an earlier attempt are recognised by their attempt number and ignored.

use std::collections::BTreeSet;

use ledger::money::Money;
use serde::{Deserialize, Serialize};

use crate::channels::{
    ChannelError, ChargeResult, PaymentNotification, QueryResult, ReverseResult,
};
use crate::model::{ChannelId, Method};
use crate::routing::RouteDecision;

/// Bounds and delays, passed explicitly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPolicy {
    /// Delay before the first query of an unknown outcome; doubled each time up to the cap.
    pub first_query_ms: u64,
    pub max_query_ms: u64,
    /// Queries before the payment is abandoned and reversed.
    pub max_queries: u32,
    /// Reversal attempts before the payment goes to the exception queue.
    pub max_reversals: u32,
    /// Delay between reversal attempts.
    pub reversal_retry_ms: u64,
    /// Channels tried at most (the first and its failovers).
    pub max_attempts: u32,
}

/// What the payment is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInput {
    /// Our payment id; attempt order numbers derive from it.
    pub payment_no: String,
    pub method: Method,
    pub amount: Money,
}

/// One submission to one channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub channel: ChannelId,
    /// The order number the channel knows this attempt by.
    pub out_trade_no: String,
    pub outcome: AttemptOutcome,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    InFlight,
    Charged {
        channel_txn_id: String,
    },
    /// Certainly nothing taken, with the reason.
    NotCharged {
        reason: String,
    },
    /// Unknown so far; being queried or reversed.
    Unknown {
        reason: String,
    },
}

/// Where the payment stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PaymentState {
    Created,
    /// Submitted to the last attempt's channel, awaiting the answer.
    Submitted,
    /// The last attempt's outcome is unknown; the next query is scheduled.
    Querying {
        queries: u32,
    },
    /// Reversing the last attempt; `then_failover` says whether to try another channel once
    /// the reversal is confirmed (the channel said "not charged" but could still take it).
    Reversing {
        tries: u32,
        then_failover: bool,
        confirming: bool,
    },
    Succeeded {
        channel_txn_id: String,
    },
    Failed {
        reason: String,
    },
    /// The last attempt was reversed and the reversal confirmed; the sale is released.
    Reversed,
    /// Reversal did not confirm within bounds: an operator must resolve it.
    NeedsAttention {
        reason: String,
    },
}

impl PaymentState {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            PaymentState::Succeeded { .. }
                | PaymentState::Failed { .. }
                | PaymentState::Reversed
                | PaymentState::NeedsAttention { .. }
        )
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PaymentEvent {
    Routed {
        decision: RouteDecision,
    },
    ChargeAnswered {
        attempt: usize,
        result: Result<ChargeResult, ChannelError>,
    },
    QueryDue {
        attempt: usize,
    },
    QueryAnswered {
        attempt: usize,
        result: Result<QueryResult, ChannelError>,
    },
    ReverseDue {
        attempt: usize,
    },
    ReverseAnswered {
        attempt: usize,
        result: Result<ReverseResult, ChannelError>,
    },
    Notified {
        notification: PaymentNotification,
    },
    /// The till stopped waiting: release the sale, reversing whatever may have been taken.
    Abandoned,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum PaymentCommand {
    Submit {
        attempt: usize,
        channel: ChannelId,
        out_trade_no: String,
    },
    ScheduleQuery {
        attempt: usize,
        after_ms: u64,
    },
    Query {
        attempt: usize,
        channel: ChannelId,
        out_trade_no: String,
    },
    ScheduleReverse {
        attempt: usize,
        after_ms: u64,
    },
    Reverse {
        attempt: usize,
        channel: ChannelId,
        out_trade_no: String,
    },
    /// Book the sale: exactly once per payment.
    PostSale {
        channel: ChannelId,
        channel_txn_id: String,
        amount: Money,
    },
    /// The payment is final.
    Finish,
}

/// The whole payment as the workflow stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub input: PaymentInput,
    pub state: PaymentState,
    pub decision: Option<RouteDecision>,
    pub attempts: Vec<Attempt>,
    pub abandoned: bool,
    /// Notification ids already applied, so that a duplicate counts once.
    pub notifications_seen: BTreeSet<String>,
    /// Why the last transition happened.
    pub reason: String,
}

/// One transition's result.
pub type Step = Vec<PaymentCommand>;

impl Payment {
    pub fn new(input: PaymentInput) -> Self {
        Payment {
            input,
            state: PaymentState::Created,
            decision: None,
            attempts: Vec::new(),
            abandoned: false,
            notifications_seen: BTreeSet::new(),
            reason: "created".into(),
        }
    }

    fn current(&self) -> Option<usize> {
        self.attempts.len().checked_sub(1)
    }

    fn tried(&self) -> Vec<ChannelId> {
        self.attempts.iter().map(|a| a.channel.clone()).collect()
    }

    /// Applies one event. Events that do not fit the state (late, duplicate, from an earlier
    /// attempt) change nothing and return no commands.
    pub fn apply(&mut self, event: &PaymentEvent, policy: &FlowPolicy) -> Step {
        let commands = match event {
            PaymentEvent::Routed { decision } => self.on_routed(decision, policy),
            PaymentEvent::ChargeAnswered { attempt, result } => {
                self.on_charge(*attempt, result, policy)
            }
            PaymentEvent::QueryDue { attempt } => self.on_query_due(*attempt),
            PaymentEvent::QueryAnswered { attempt, result } => {
                self.on_query(*attempt, result, policy)
            }
            PaymentEvent::ReverseDue { attempt } => self.on_reverse_due(*attempt),
            PaymentEvent::ReverseAnswered { attempt, result } => {
                self.on_reverse(*attempt, result, policy)
            }
            PaymentEvent::Notified { notification } => self.on_notified(notification),
            PaymentEvent::Abandoned => self.on_abandoned(),
        };
        self.check_invariants();
        commands
    }

    /// The invariants, asserted on every transition: at most one attempt can have charged or
    /// be unknown, and it is the last one.
    fn check_invariants(&self) {
        let open = self
            .attempts
            .iter()
            .filter(|a| !matches!(a.outcome, AttemptOutcome::NotCharged { .. }))
            .count();
        assert!(
            open <= 1,
            "two attempts may have charged: {:?}",
            self.attempts
        );
        if open == 1 {
            let last = self.attempts.last().expect("open attempt exists");
            assert!(
                !matches!(last.outcome, AttemptOutcome::NotCharged { .. }),
                "an earlier attempt is still open"
            );
        }
    }

    fn on_routed(&mut self, decision: &RouteDecision, policy: &FlowPolicy) -> Step {
        if self.state != PaymentState::Created {
            return vec![];
        }
        self.decision = Some(decision.clone());
        self.submit_next("routed", policy)
    }

    /// Submits to the best untried candidate, or fails when none is left.
    fn submit_next(&mut self, why: &str, policy: &FlowPolicy) -> Step {
        let tried = self.tried();
        let next = self
            .decision
            .as_ref()
            .and_then(|d| d.next_untried(&tried))
            .cloned();
        match next {
            Some(channel)
                if !self.abandoned && self.attempts.len() < policy.max_attempts as usize =>
            {
                let attempt = self.attempts.len();
                let out_trade_no = format!("{}-{}", self.input.payment_no, attempt + 1);
                self.attempts.push(Attempt {
                    channel: channel.clone(),
                    out_trade_no: out_trade_no.clone(),
                    outcome: AttemptOutcome::InFlight,
                });
                self.state = PaymentState::Submitted;
                self.reason = format!("{why}; submitted to {channel}");
                vec![PaymentCommand::Submit {
                    attempt,
                    channel,
                    out_trade_no,
                }]
            }
            _ => {
                let reason = if self.abandoned {
                    format!("{why}; abandoned by the till")
                } else if self.attempts.is_empty() {
                    format!("{why}; no channel can take this payment")
                } else {
                    format!("{why}; no channel left to try")
                };
                self.state = PaymentState::Failed {
                    reason: reason.clone(),
                };
                self.reason = reason;
                vec![PaymentCommand::Finish]
            }
        }
    }

    fn succeed(&mut self, attempt: usize, channel_txn_id: String, why: &str) -> Step {
        let channel = self.attempts[attempt].channel.clone();
        self.attempts[attempt].outcome = AttemptOutcome::Charged {
            channel_txn_id: channel_txn_id.clone(),
        };
        self.state = PaymentState::Succeeded {
            channel_txn_id: channel_txn_id.clone(),
        };
        self.reason = format!("{why} on {channel}");
        vec![
            PaymentCommand::PostSale {
                channel,
                channel_txn_id,
                amount: self.input.amount,
            },
            PaymentCommand::Finish,
        ]
    }

    fn not_charged(&mut self, attempt: usize, reason: String, policy: &FlowPolicy) -> Step {
        let why = format!(
            "{} did not charge: {reason}",
            self.attempts[attempt].channel
        );
        self.attempts[attempt].outcome = AttemptOutcome::NotCharged { reason };
        self.submit_next(&why, policy)
    }

    fn go_unknown(&mut self, attempt: usize, reason: String, policy: &FlowPolicy) -> Step {
        self.reason = format!(
            "outcome unknown on {}: {reason}",
            self.attempts[attempt].channel
        );
        self.attempts[attempt].outcome = AttemptOutcome::Unknown { reason };
        if self.abandoned {
            return self.start_reversal(attempt, false);
        }
        self.state = PaymentState::Querying { queries: 0 };
        vec![PaymentCommand::ScheduleQuery {
            attempt,
            after_ms: policy.first_query_ms,
        }]
    }

    fn on_charge(
        &mut self,
        attempt: usize,
        result: &Result<ChargeResult, ChannelError>,
        policy: &FlowPolicy,
    ) -> Step {
        if self.state != PaymentState::Submitted || Some(attempt) != self.current() {
            return vec![];
        }
        match result {
            Ok(ChargeResult::Succeeded { channel_txn_id, .. }) if self.abandoned => {
                // The till gave up before the answer came: give the money back.
                self.attempts[attempt].outcome = AttemptOutcome::Unknown {
                    reason: format!("charged as {channel_txn_id} after the till gave up"),
                };
                self.reason = "charged after the till gave up; reversing".into();
                self.start_reversal(attempt, false)
            }
            Ok(ChargeResult::Succeeded { channel_txn_id, .. }) => {
                self.succeed(attempt, channel_txn_id.clone(), "charged")
            }
            Ok(ChargeResult::Declined { code, message }) => {
                self.not_charged(attempt, format!("declined {code} {message}"), policy)
            }
            Err(ChannelError::NotSent { reason }) => {
                self.not_charged(attempt, format!("not sent: {reason}"), policy)
            }
            Err(ChannelError::Local { reason }) => {
                self.not_charged(attempt, format!("refused locally: {reason}"), policy)
            }
            Ok(ChargeResult::Pending { reason }) => {
                self.go_unknown(attempt, reason.clone(), policy)
            }
            Ok(ChargeResult::CodeIssued { .. }) => {
                self.go_unknown(attempt, "waiting for the customer to scan".into(), policy)
            }
            Err(ChannelError::Unknown { reason }) => {
                self.go_unknown(attempt, reason.clone(), policy)
            }
        }
    }

    fn on_query_due(&mut self, attempt: usize) -> Step {
        let querying = matches!(self.state, PaymentState::Querying { .. })
            || matches!(
                self.state,
                PaymentState::Reversing {
                    confirming: true,
                    ..
                }
            );
        if !querying || Some(attempt) != self.current() {
            return vec![];
        }
        let a = &self.attempts[attempt];
        vec![PaymentCommand::Query {
            attempt,
            channel: a.channel.clone(),
            out_trade_no: a.out_trade_no.clone(),
        }]
    }

    fn on_query(
        &mut self,
        attempt: usize,
        result: &Result<QueryResult, ChannelError>,
        policy: &FlowPolicy,
    ) -> Step {
        if Some(attempt) != self.current() {
            return vec![];
        }
        match self.state.clone() {
            PaymentState::Querying { queries } => {
                self.on_unknown_queried(attempt, queries + 1, result, policy)
            }
            PaymentState::Reversing {
                tries,
                then_failover,
                confirming: true,
            } => self.on_reversal_queried(attempt, tries, then_failover, result, policy),
            _ => vec![],
        }
    }

    fn on_unknown_queried(
        &mut self,
        attempt: usize,
        queries: u32,
        result: &Result<QueryResult, ChannelError>,
        policy: &FlowPolicy,
    ) -> Step {
        match result {
            Ok(QueryResult::Succeeded {
                channel_txn_id,
                amount,
            }) if *amount == self.input.amount => self.succeed(
                attempt,
                channel_txn_id.clone(),
                "the query found the charge",
            ),
            Ok(QueryResult::Succeeded { amount, .. }) => {
                let why = format!("the channel charged {amount}, not {}", self.input.amount);
                self.reason = why;
                self.start_reversal(attempt, false)
            }
            Ok(QueryResult::NotCharged { reason }) => {
                // The channel has nothing yet, but a late request could still land: close it
                // there and confirm before anything is charged elsewhere.
                self.reason = format!("the query found no charge ({reason}); closing the order");
                self.start_reversal(attempt, true)
            }
            Ok(QueryResult::Reversed) => {
                self.attempts[attempt].outcome = AttemptOutcome::NotCharged {
                    reason: "reversed at the channel".into(),
                };
                self.submit_next("reversed at the channel", policy)
            }
            Ok(QueryResult::Pending) | Err(_) if queries >= policy.max_queries => {
                self.reason = format!("still unknown after {queries} queries; reversing");
                self.start_reversal(attempt, false)
            }
            Ok(QueryResult::Pending) | Err(_) => {
                self.state = PaymentState::Querying { queries };
                self.reason = format!("still unknown after {queries} queries");
                let after_ms = policy
                    .first_query_ms
                    .saturating_mul(1_u64 << queries.min(16))
                    .min(policy.max_query_ms);
                vec![PaymentCommand::ScheduleQuery { attempt, after_ms }]
            }
        }
    }

    fn start_reversal(&mut self, attempt: usize, then_failover: bool) -> Step {
        self.state = PaymentState::Reversing {
            tries: 0,
            then_failover,
            confirming: false,
        };
        let a = &self.attempts[attempt];
        vec![PaymentCommand::Reverse {
            attempt,
            channel: a.channel.clone(),
            out_trade_no: a.out_trade_no.clone(),
        }]
    }

    fn on_reverse_due(&mut self, attempt: usize) -> Step {
        match self.state {
            PaymentState::Reversing {
                confirming: false, ..
            } if Some(attempt) == self.current() => {
                let a = &self.attempts[attempt];
                vec![PaymentCommand::Reverse {
                    attempt,
                    channel: a.channel.clone(),
                    out_trade_no: a.out_trade_no.clone(),
                }]
            }
            _ => vec![],
        }
    }

    fn on_reverse(
        &mut self,
        attempt: usize,
        result: &Result<ReverseResult, ChannelError>,
        policy: &FlowPolicy,
    ) -> Step {
        let PaymentState::Reversing {
            tries,
            then_failover,
            confirming: false,
        } = self.state
        else {
            return vec![];
        };
        if Some(attempt) != self.current() {
            return vec![];
        }
        match result {
            Ok(ReverseResult::Reversed) => {
                // A reversal counts only once a query confirms it.
                self.state = PaymentState::Reversing {
                    tries,
                    then_failover,
                    confirming: true,
                };
                self.reason = "reversal accepted; confirming".into();
                self.on_query_due(attempt)
            }
            Ok(ReverseResult::RetryLater { .. }) | Err(_) => {
                self.retry_reversal(attempt, tries + 1, then_failover, policy)
            }
        }
    }

    fn retry_reversal(
        &mut self,
        attempt: usize,
        tries: u32,
        then_failover: bool,
        policy: &FlowPolicy,
    ) -> Step {
        if tries >= policy.max_reversals {
            let reason = format!(
                "reversal on {} not confirmed after {tries} tries",
                self.attempts[attempt].channel
            );
            self.reason = reason.clone();
            self.state = PaymentState::NeedsAttention { reason };
            return vec![PaymentCommand::Finish];
        }
        self.state = PaymentState::Reversing {
            tries,
            then_failover,
            confirming: false,
        };
        vec![PaymentCommand::ScheduleReverse {
            attempt,
            after_ms: policy.reversal_retry_ms,
        }]
    }

    fn on_reversal_queried(
        &mut self,
        attempt: usize,
        tries: u32,
        then_failover: bool,
        result: &Result<QueryResult, ChannelError>,
        policy: &FlowPolicy,
    ) -> Step {
        match result {
            Ok(QueryResult::Reversed | QueryResult::NotCharged { .. }) => {
                self.attempts[attempt].outcome = AttemptOutcome::NotCharged {
                    reason: "reversal confirmed".into(),
                };
                if then_failover && !self.abandoned {
                    self.submit_next("reversal confirmed", policy)
                } else {
                    self.state = PaymentState::Reversed;
                    self.reason = "reversal confirmed; sale released".into();
                    vec![PaymentCommand::Finish]
                }
            }
            // The charge is still there (or we cannot tell): reverse again.
            Ok(QueryResult::Succeeded { .. } | QueryResult::Pending) | Err(_) => {
                self.retry_reversal(attempt, tries + 1, then_failover, policy)
            }
        }
    }

    fn on_notified(&mut self, notification: &PaymentNotification) -> Step {
        if !self
            .notifications_seen
            .insert(notification.notification_id.clone())
        {
            return vec![];
        }
        let Some(attempt) = self.current() else {
            return vec![];
        };
        let matches_current = self.attempts[attempt].out_trade_no == notification.out_trade_no;
        let waiting = matches!(
            self.state,
            PaymentState::Submitted | PaymentState::Querying { .. }
        );
        if matches_current
            && waiting
            && !self.abandoned
            && notification.succeeded
            && notification.amount == self.input.amount
        {
            return self.succeed(
                attempt,
                notification.channel_txn_id.clone(),
                "the channel notified the charge",
            );
        }
        // Anything else is only a hint: the state moves on answers and queries.
        vec![]
    }

    fn on_abandoned(&mut self) -> Step {
        if self.state.is_final() || self.abandoned {
            return vec![];
        }
        self.abandoned = true;
        match self.state {
            PaymentState::Created => {
                self.state = PaymentState::Failed {
                    reason: "abandoned before routing".into(),
                };
                self.reason = "abandoned before routing".into();
                vec![PaymentCommand::Finish]
            }
            // The answer is still coming; it decides (a charge found then is reversed).
            PaymentState::Submitted => {
                self.reason = "abandoned while submitted; waiting for the answer".into();
                vec![]
            }
            PaymentState::Querying { .. } => {
                let attempt = self.current().expect("querying has an attempt");
                self.reason = "abandoned while unknown; reversing".into();
                self.start_reversal(attempt, false)
            }
            PaymentState::Reversing { .. } => {
                self.reason = "abandoned while reversing".into();
                vec![]
            }
            _ => vec![],
        }
    }
}

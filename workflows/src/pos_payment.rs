//! `pos_payment`: one till payment as a durable workflow around the pure state machine in
//! [`payments::flow`]. The machine decides; this module maps its commands onto the engine
//! (adapter calls become activities, query and reversal delays become durable timers) and
//! the engine's events back onto the machine's events.
//!
//! Activities (registered by whoever runs the workers, with the channel adapters at hand):
//! - `payments.charge`, `payments.query`, `payments.reverse`: input `{channel, ...}`, output
//!   the adapter's `Result` serialised as JSON. An activity that fails outright (a worker
//!   lost, a timeout) counts as an unknown outcome, never as "not charged".
//! - `payments.settle`: books a charged sale in the ledger and then records the outcome on
//!   the payment's row, in one activity; the instance completes once it has.
//! - `payments.record`: records the final outcome of a payment that was not charged (or whose
//!   sale could not be booked) on the payment's row, which the till, the shift and the
//!   reports read; the instance completes once it has.
//! - `payments.post_sale`: books the sale only; instances started before `payments.settle`
//!   existed still run it, followed by `payments.record`.
//!
//! [`register_store_activities`] registers the last three over the payments store and the
//! ledger.
//!
//! Signals: `notification` (a verified [`payments::channels::PaymentNotification`]) and
//! `abandon` (the till stopped waiting).

use payments::channels::{ChannelError, ChargeRequest};
use payments::flow::{
    AttemptOutcome, FlowPolicy, Payment, PaymentCommand, PaymentEvent, PaymentInput, PaymentState,
};
use payments::health::AttemptSignal;
use payments::routing::RouteDecision;
use payments::routing::{PayerToken, Signal};
use payments::sales::Outcome;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::definition::{Command, Event, RetryPolicy, Step, Workflow, WorkflowEvent};

pub const CHARGE: &str = "payments.charge";
pub const QUERY: &str = "payments.query";
pub const REVERSE: &str = "payments.reverse";
pub const POST_SALE: &str = "payments.post_sale";
pub const RECORD: &str = "payments.record";
pub const SETTLE: &str = "payments.settle";
const POST_SALE_STEP: &str = "post-sale";
const RECORD_STEP: &str = "record";
const SETTLE_STEP: &str = "settle";

/// What starts a payment: the payment, its stored routing decision, the flow's bounds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PosPaymentInput {
    pub payment: PaymentInput,
    pub decision: RouteDecision,
    pub policy: FlowPolicy,
    /// The description the channels show the customer.
    pub description: String,
    /// The customer's payment code or card token, when the terminal read one.
    pub payer_code: Option<String>,
    /// How long one adapter call may take before the engine gives up on it.
    pub activity_timeout_ms: u64,
}

/// What the state keeps of its input: all of it but the routing decision, which the payment
/// keeps (once: the state is written with every transition and into every history row, and
/// the decision with its candidates and exclusions was a third of it). States stored before
/// carry the decision here too; it is ignored when they are read.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PosPaymentSettings {
    pub payment: PaymentInput,
    pub policy: FlowPolicy,
    pub description: String,
    pub payer_code: Option<String>,
    pub activity_timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PosPaymentState {
    pub payment: Payment,
    pub input: PosPaymentSettings,
    /// Numbers every step and timer so that none repeats within the instance.
    pub seq: u64,
    pub posting: bool,
}

/// What each attempt told about its channel: charged, declined (the payer's problem), or
/// failed (a refusal before sending, an unknown outcome, a timeout: the channel's).
pub fn signals_of(payment: &Payment, payer: Option<&str>) -> Vec<AttemptSignal> {
    let payer = payer.map(PayerToken::of);
    payment
        .attempts
        .iter()
        .map(|a| AttemptSignal {
            channel: a.channel.clone(),
            signal: match &a.outcome {
                AttemptOutcome::Charged { .. } => Signal::Succeeded,
                AttemptOutcome::NotCharged { reason } if reason.starts_with("declined") => {
                    Signal::Declined
                }
                _ => Signal::Failed,
            },
            payer: payer.clone(),
        })
        .collect()
}

/// The row's outcome for a final payment state.
pub fn outcome_of(payment: &Payment) -> Outcome {
    let (status, txn) = match &payment.state {
        PaymentState::Succeeded { channel_txn_id } => ("succeeded", Some(channel_txn_id.clone())),
        PaymentState::Reversed => ("reversed", None),
        PaymentState::NeedsAttention { .. } => ("needs_attention", None),
        _ => ("failed", None),
    };
    let charged = payment
        .attempts
        .iter()
        .find(|a| matches!(a.outcome, AttemptOutcome::Charged { .. }));
    let last = charged.or(payment.attempts.last());
    Outcome {
        status: status.into(),
        channel: last.map(|a| a.channel.clone()),
        channel_txn_id: txn,
        out_trade_no: charged.map(|a| a.out_trade_no.clone()),
        fee_minor: None,
        reason: payment.reason.clone(),
    }
}

/// The workflow type.
pub struct PosPayment;

fn once() -> RetryPolicy {
    // Adapter calls are not retried by the engine: the machine decides what comes next.
    RetryPolicy {
        initial_interval_ms: 100,
        backoff_coefficient: 2.0,
        maximum_interval_ms: 1_000,
        maximum_attempts: 1,
        non_retryable: vec![],
    }
}

fn posting_retry() -> RetryPolicy {
    // Booking and recording are idempotent, so they are retried for as long as storage may
    // take to come back (a minute apart, for about a day): a charged payment must not end
    // without its outcome on its row.
    RetryPolicy {
        initial_interval_ms: 200,
        backoff_coefficient: 2.0,
        maximum_interval_ms: 60_000,
        maximum_attempts: 1_500,
        non_retryable: vec![],
    }
}

impl PosPaymentState {
    /// Turns the machine's commands into engine commands.
    fn commands(&mut self, commands: Vec<PaymentCommand>) -> Vec<Command> {
        let mut out = Vec::new();
        let timeout_ms = self.input.activity_timeout_ms;
        for command in commands {
            self.seq += 1;
            let seq = self.seq;
            match command {
                PaymentCommand::Submit {
                    attempt,
                    channel,
                    out_trade_no,
                } => {
                    let request = ChargeRequest {
                        out_trade_no,
                        method: self.payment.input.method,
                        amount: self.payment.input.amount,
                        description: self.input.description.clone(),
                        payer_code: self.input.payer_code.clone(),
                    };
                    out.push(Command::RunActivity {
                        step: format!("charge:{attempt}:{seq}"),
                        kind: CHARGE.into(),
                        input: json!({ "channel": channel, "request": request }),
                        retry: once(),
                        timeout_ms,
                    });
                }
                PaymentCommand::ScheduleQuery { attempt, after_ms } => {
                    out.push(Command::StartTimer {
                        name: format!("query:{attempt}:{seq}"),
                        after_ms,
                    })
                }
                PaymentCommand::Query {
                    attempt,
                    channel,
                    out_trade_no,
                } => out.push(Command::RunActivity {
                    step: format!("query:{attempt}:{seq}"),
                    kind: QUERY.into(),
                    input: json!({ "channel": channel, "out_trade_no": out_trade_no }),
                    retry: once(),
                    timeout_ms,
                }),
                PaymentCommand::ScheduleReverse { attempt, after_ms } => {
                    out.push(Command::StartTimer {
                        name: format!("reverse:{attempt}:{seq}"),
                        after_ms,
                    })
                }
                PaymentCommand::Reverse {
                    attempt,
                    channel,
                    out_trade_no,
                } => out.push(Command::RunActivity {
                    step: format!("reverse:{attempt}:{seq}"),
                    kind: REVERSE.into(),
                    input: json!({ "channel": channel, "out_trade_no": out_trade_no }),
                    retry: once(),
                    timeout_ms,
                }),
                // The sale is booked and the outcome recorded by one activity: the machine
                // follows `PostSale` with `Finish`, and the payment is final (succeeded) here.
                PaymentCommand::PostSale {
                    channel,
                    channel_txn_id,
                    amount,
                } => {
                    self.posting = true;
                    out.push(Command::RunActivity {
                        step: SETTLE_STEP.into(),
                        kind: SETTLE.into(),
                        input: json!({
                            "payment_no": self.payment.input.payment_no,
                            "channel": channel,
                            "channel_txn_id": channel_txn_id,
                            "amount": amount,
                            "outcome": outcome_of(&self.payment),
                            "attempts": signals_of(&self.payment, self.input.payer_code.as_deref()),
                        }),
                        retry: posting_retry(),
                        timeout_ms,
                    });
                }
                // With a posting under way the instance completes when it is booked and recorded.
                PaymentCommand::Finish if self.posting => {}
                PaymentCommand::Finish => out.push(self.record()),
            }
        }
        out
    }

    /// Records the outcome on the payment's row; the instance finishes when it is recorded.
    fn record(&self) -> Command {
        Command::RunActivity {
            step: RECORD_STEP.into(),
            kind: RECORD.into(),
            input: json!({
                "payment_no": self.payment.input.payment_no,
                "outcome": outcome_of(&self.payment),
                "attempts": signals_of(&self.payment, self.input.payer_code.as_deref()),
            }),
            retry: posting_retry(),
            timeout_ms: self.input.activity_timeout_ms,
        }
    }

    fn finish(&self) -> Command {
        let output = json!({ "state": self.payment.state, "attempts": self.payment.attempts });
        match &self.payment.state {
            PaymentState::Failed { reason } | PaymentState::NeedsAttention { reason } => {
                Command::Fail {
                    reason: reason.clone(),
                }
            }
            _ => Command::Complete { output },
        }
    }
}

/// `kind:attempt:seq` → (kind, attempt).
fn parse_name(name: &str) -> Option<(&str, usize)> {
    let mut parts = name.split(':');
    let kind = parts.next()?;
    let attempt = parts.next()?.parse().ok()?;
    Some((kind, attempt))
}

fn unknown(reason: String) -> ChannelError {
    ChannelError::Unknown { reason }
}

/// Reads an activity's output as the adapter's result; an unreadable one is unknown.
fn result_of<T: for<'de> Deserialize<'de>>(output: &Value) -> Result<T, ChannelError> {
    serde_json::from_value::<Result<T, ChannelError>>(output.clone())
        .unwrap_or_else(|e| Err(unknown(format!("unreadable activity output: {e}"))))
}

fn to_payment_event(event: &Event) -> Option<PaymentEvent> {
    match event {
        Event::ActivityCompleted { step, output } => {
            let (kind, attempt) = parse_name(step)?;
            Some(match kind {
                "charge" => PaymentEvent::ChargeAnswered {
                    attempt,
                    result: result_of(output),
                },
                "query" => PaymentEvent::QueryAnswered {
                    attempt,
                    result: result_of(output),
                },
                "reverse" => PaymentEvent::ReverseAnswered {
                    attempt,
                    result: result_of(output),
                },
                _ => return None,
            })
        }
        Event::ActivityFailed { step, error, .. } => {
            let (kind, attempt) = parse_name(step)?;
            let failure = unknown(format!("activity failed: {}", error.message));
            Some(match kind {
                "charge" => PaymentEvent::ChargeAnswered {
                    attempt,
                    result: Err(failure),
                },
                "query" => PaymentEvent::QueryAnswered {
                    attempt,
                    result: Err(failure),
                },
                "reverse" => PaymentEvent::ReverseAnswered {
                    attempt,
                    result: Err(failure),
                },
                _ => return None,
            })
        }
        Event::TimerFired { name } => {
            let (kind, attempt) = parse_name(name)?;
            match kind {
                "query" => Some(PaymentEvent::QueryDue { attempt }),
                "reverse" => Some(PaymentEvent::ReverseDue { attempt }),
                _ => None,
            }
        }
        Event::Signal { name, payload } => match name.as_str() {
            "notification" => Some(PaymentEvent::Notified {
                notification: serde_json::from_value(payload.clone()).ok()?,
            }),
            "abandon" => Some(PaymentEvent::Abandoned),
            _ => None,
        },
        Event::ChildFinished { .. } => None,
    }
}

/// What a payment instance understands: the payment machine's own events, and the booking
/// of the sale.
#[derive(Clone, Debug)]
pub enum PosEvent {
    Payment(PaymentEvent),
    SaleBooked,
    SaleNotBooked { error: String },
    Recorded,
    NotRecorded { error: String },
}

impl WorkflowEvent for PosEvent {
    fn from_engine(event: &Event) -> Option<Self> {
        match event {
            Event::ActivityCompleted { step, .. } if step == POST_SALE_STEP => {
                Some(PosEvent::SaleBooked)
            }
            Event::ActivityFailed { step, error, .. } if step == POST_SALE_STEP => {
                Some(PosEvent::SaleNotBooked {
                    error: error.message.clone(),
                })
            }
            Event::ActivityCompleted { step, .. } if step == RECORD_STEP || step == SETTLE_STEP => {
                Some(PosEvent::Recorded)
            }
            // Settling failed for good before it recorded anything (a booking refused as bad
            // data: storage outages are retried): what was not booked is recorded as such.
            Event::ActivityFailed { step, error, .. } if step == SETTLE_STEP => {
                Some(PosEvent::SaleNotBooked {
                    error: error.message.clone(),
                })
            }
            Event::ActivityFailed { step, error, .. } if step == RECORD_STEP => {
                Some(PosEvent::NotRecorded {
                    error: error.message.clone(),
                })
            }
            other => to_payment_event(other).map(PosEvent::Payment),
        }
    }
}

impl Workflow for PosPayment {
    const NAME: &'static str = "pos_payment";
    const VERSION: i32 = 1;
    type Input = PosPaymentInput;
    type State = PosPaymentState;
    type Event = PosEvent;

    fn start(input: PosPaymentInput) -> Step<PosPaymentState> {
        let mut payment = Payment::new(input.payment.clone());
        let commands = payment.apply(
            &PaymentEvent::Routed {
                decision: input.decision.clone(),
            },
            &input.policy,
        );
        let input = PosPaymentSettings {
            payment: input.payment,
            policy: input.policy,
            description: input.description,
            payer_code: input.payer_code,
            activity_timeout_ms: input.activity_timeout_ms,
        };
        let mut state = PosPaymentState {
            payment,
            input,
            seq: 0,
            posting: false,
        };
        let commands = state.commands(commands);
        let reason = state.payment.reason.clone();
        let mut step = Step::to(state, reason);
        for command in commands {
            step = step.then(command);
        }
        step
    }

    fn on_event(state: &PosPaymentState, event: &PosEvent) -> Option<Step<PosPaymentState>> {
        let event = match event {
            PosEvent::SaleBooked => {
                let command = state.record();
                return Some(Step::to(state.clone(), "sale booked").then(command));
            }
            PosEvent::Recorded => {
                let command = state.finish();
                return Some(Step::to(state.clone(), "outcome recorded").then(command));
            }
            PosEvent::NotRecorded { error } => {
                return Some(
                    Step::to(state.clone(), "the outcome could not be recorded").then(
                        Command::Fail {
                            reason: format!("outcome not recorded: {error}"),
                        },
                    ),
                );
            }
            // The money is taken but not booked: that is for an operator, loudly.
            // The money is taken but the sale cannot be booked (bad data, not an outage: that
            // is retried): the row says so, for an operator, before the instance fails.
            PosEvent::SaleNotBooked { error } => {
                let mut next = state.clone();
                next.payment.state = PaymentState::NeedsAttention {
                    reason: format!("charged but not booked: {error}"),
                };
                next.payment.reason = format!("charged but not booked: {error}");
                next.posting = false;
                let command = next.record();
                return Some(Step::to(next, "the sale could not be booked").then(command));
            }
            PosEvent::Payment(event) => event,
        };
        let mut next = state.clone();
        let commands = next.payment.apply(event, &next.input.policy);
        if commands.is_empty() && next.payment == state.payment {
            return None;
        }
        let commands = next.commands(commands);
        let reason = next.payment.reason.clone();
        let mut step = Step::to(next, reason);
        for command in commands {
            step = step.then(command);
        }
        Some(step)
    }
}

/// The channel adapters the workers call, by channel id.
pub type Channels = std::collections::BTreeMap<
    payments::model::ChannelId,
    std::sync::Arc<dyn payments::channels::Channel>,
>;

fn field<T: for<'de> Deserialize<'de>>(
    input: &Value,
    name: &str,
) -> Result<T, crate::definition::ActivityError> {
    serde_json::from_value(input[name].clone()).map_err(|e| {
        crate::definition::ActivityError::permanent("bad_input", format!("{name}: {e}"))
    })
}

fn adapter(
    channels: &Channels,
    input: &Value,
) -> Result<std::sync::Arc<dyn payments::channels::Channel>, crate::definition::ActivityError> {
    let id: payments::model::ChannelId = field(input, "channel")?;
    channels.get(&id).cloned().ok_or_else(|| {
        crate::definition::ActivityError::permanent("unknown_channel", id.to_string())
    })
}

fn output<T: Serialize>(
    result: &Result<T, ChannelError>,
) -> Result<Value, crate::definition::ActivityError> {
    serde_json::to_value(result)
        .map_err(|e| crate::definition::ActivityError::permanent("output", e.to_string()))
}

/// Registers the adapter activities (`payments.charge`, `payments.query`,
/// `payments.reverse`). `payments.post_sale` is registered by the caller, who holds the
/// ledger and the station's accounts.
pub fn register_channel_activities(
    registry: crate::engine::Registry,
    channels: std::sync::Arc<Channels>,
) -> crate::engine::Registry {
    let for_charge = channels.clone();
    let for_query = channels.clone();
    registry
        .activity(CHARGE, move |_ctx, input| {
            let channels = for_charge.clone();
            async move {
                let channel = adapter(&channels, &input)?;
                let request: ChargeRequest = field(&input, "request")?;
                output(&channel.charge(&request).await)
            }
        })
        .activity(QUERY, move |_ctx, input| {
            let channels = for_query.clone();
            async move {
                let channel = adapter(&channels, &input)?;
                let no: String = field(&input, "out_trade_no")?;
                output(&channel.query(&no).await)
            }
        })
        .activity(REVERSE, move |_ctx, input| {
            let channels = channels.clone();
            async move {
                let channel = adapter(&channels, &input)?;
                let no: String = field(&input, "out_trade_no")?;
                output(&channel.reverse(&no).await)
            }
        })
}

/// A store failure as an activity error: the database or the ledger may come back, so
/// those are retried; bad or missing data is not.
pub(crate) fn store_error(
    error: payments::stations::StoreError,
) -> crate::definition::ActivityError {
    use payments::stations::StoreError;
    match error {
        StoreError::Db(_) | StoreError::Ledger(_) => {
            crate::definition::ActivityError::retryable("store", error.to_string())
        }
        StoreError::NotFound(_) | StoreError::Invalid(_) | StoreError::Conflict(_) => {
            crate::definition::ActivityError::permanent("store", error.to_string())
        }
    }
}

async fn payment_row(
    ledger: &ledger::Ledger,
    payment_no: &str,
) -> Result<entities::pos_payments::Model, crate::definition::ActivityError> {
    payments::sales::payment_by_no(ledger.db(), payment_no)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            crate::definition::ActivityError::permanent(
                "unknown_payment",
                format!("no payment {payment_no}"),
            )
        })
}

async fn station_channel(
    ledger: &ledger::Ledger,
    station_id: uuid::Uuid,
    channel: &payments::model::ChannelId,
) -> Result<payments::stations::StationChannel, crate::definition::ActivityError> {
    payments::stations::channel(ledger.db(), station_id, channel)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            crate::definition::ActivityError::permanent(
                "unknown_channel",
                format!("the station has no channel {channel}"),
            )
        })
}

/// The fee a channel's terms take on a payment, in minor units.
fn fee_minor(
    payment: &entities::pos_payments::Model,
    terms: &payments::stations::StationChannel,
) -> Result<i64, crate::definition::ActivityError> {
    let amount = payments::sales::stored_money(payment.amount_minor, &payment.currency)
        .map_err(store_error)?;
    let fee = terms
        .terms
        .fee_rate
        .fee_on(amount)
        .map_err(|e| crate::definition::ActivityError::permanent("fee", e.to_string()))?;
    fee.minor_units()
        .map_err(|e| crate::definition::ActivityError::permanent("fee", e.to_string()))
}

/// The attempts an activity's input carries (instances started before attempts were recorded
/// carry none).
fn attempts_of(input: &Value) -> Result<Vec<AttemptSignal>, crate::definition::ActivityError> {
    if input["attempts"].is_null() {
        Ok(Vec::new())
    } else {
        field(input, "attempts")
    }
}

/// Records a final outcome and the attempts behind it in one transaction, and wakes the
/// requests waiting on it (this process's directly, other processes' by the transaction's
/// notification). Recording again changes nothing.
async fn record(
    ledger: &ledger::Ledger,
    payment_no: &str,
    outcome: &Outcome,
    signals: &[AttemptSignal],
) -> Result<bool, crate::definition::ActivityError> {
    let at = chrono::Utc::now();
    let txn = entities::db::begin_write(ledger.db())
        .await
        .map_err(|e| store_error(e.into()))?;
    payments::health::record_attempts(&txn, payment_no, at, signals)
        .await
        .map_err(store_error)?;
    let recorded = payments::sales::record_outcome(&txn, payment_no, outcome, at)
        .await
        .map_err(store_error)?;
    if recorded {
        payments::sales::outcomes::notify(&txn, payment_no)
            .await
            .map_err(|e| store_error(e.into()))?;
    }
    txn.commit().await.map_err(|e| store_error(e.into()))?;
    if recorded {
        payments::sales::outcomes::announce(payment_no);
    }
    Ok(recorded)
}

/// Registers, over the payments store and the ledger: `payments.settle` (books a charged
/// sale, idempotent by the payment number, then records the outcome on the payment's row,
/// once), `payments.record` (records an outcome only) and `payments.post_sale` (books only,
/// for instances started before `payments.settle`).
///
/// `payments.settle` books before it records, and both halves are idempotent: a worker lost
/// between them leaves the sale booked and the row pending, and the retried activity finds
/// the booking (the ledger answers the first receipt) and records. A row therefore never
/// shows a sale as succeeded before it is booked, and no retry books it twice.
pub fn register_store_activities(
    registry: crate::engine::Registry,
    ledger: ledger::Ledger,
) -> crate::engine::Registry {
    let for_record = ledger.clone();
    let for_settle = ledger.clone();
    registry
        .activity(SETTLE, move |_ctx, input| {
            let ledger = for_settle.clone();
            async move {
                let no: String = field(&input, "payment_no")?;
                let channel: payments::model::ChannelId = field(&input, "channel")?;
                let mut outcome: Outcome = field(&input, "outcome")?;
                let signals = attempts_of(&input)?;
                let payment = payment_row(&ledger, &no).await?;
                let terms = station_channel(&ledger, payment.station_id, &channel).await?;
                // Everything that can refuse for good is checked before the booking.
                outcome.fee_minor = Some(fee_minor(&payment, &terms)?);
                let fee = payments::sales::book_channel_sale(&ledger, &payment, &terms)
                    .await
                    .map_err(store_error)?;
                let recorded = record(&ledger, &no, &outcome, &signals).await?;
                Ok(json!({ "fee": fee, "recorded": recorded }))
            }
        })
        .activity(POST_SALE, move |_ctx, input| {
            let ledger = ledger.clone();
            async move {
                let no: String = field(&input, "payment_no")?;
                let channel: payments::model::ChannelId = field(&input, "channel")?;
                let payment = payment_row(&ledger, &no).await?;
                let terms = station_channel(&ledger, payment.station_id, &channel).await?;
                let fee = payments::sales::book_channel_sale(&ledger, &payment, &terms)
                    .await
                    .map_err(store_error)?;
                Ok(json!({ "fee": fee }))
            }
        })
        .activity(RECORD, move |_ctx, input| {
            let ledger = for_record.clone();
            async move {
                let no: String = field(&input, "payment_no")?;
                let mut outcome: Outcome = field(&input, "outcome")?;
                if let (Some(channel), "succeeded") = (&outcome.channel, outcome.status.as_str()) {
                    let payment = payment_row(&ledger, &no).await?;
                    let terms = station_channel(&ledger, payment.station_id, channel).await?;
                    outcome.fee_minor = Some(fee_minor(&payment, &terms)?);
                }
                let signals = attempts_of(&input)?;
                let recorded = record(&ledger, &no, &outcome, &signals).await?;
                Ok(json!({ "recorded": recorded }))
            }
        })
}

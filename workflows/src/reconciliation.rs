//! `reconciliation`: the T+1 reconciliation of one channel's statement, started by a cron
//! schedule per channel once the party has published the day's file (10:00 Asia/Shanghai
//! unless told), for the day before the tick.
//!
//! The statement is fetched from the party over HTTP through the channel's adapter, matched
//! with our payments, the differences queried and queued, the matched orders settled in the
//! ledger and the run recorded ([`payments::reconcile::reconcile_day`]). A file not yet
//! published or a party that does not answer is retried with backoff; the run is idempotent,
//! so a retry or a second run of the same day posts nothing twice. A scheduled run also
//! reads the statements of the days after the channel's last run that ticks missed while
//! no scheduler ran (at most a week).
//!
//! A day that still fails after every retry is recorded as a failed run, so the gap shows
//! next to the days that reconciled.
//!
//! Activities: `payments.reconcile` and `payments.reconcile_failed`.

use std::sync::Arc;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;

use payments::channels::ChannelError;
use payments::model::ChannelId;
use payments::reconcile::ReconError;

use crate::definition::{ActivityError, Command, Event, RetryPolicy, Step, Workflow};
use crate::engine::{Engine, Registry};
use crate::pos_payment::Channels;
use crate::schedule::{MissedTicks, Schedule, ScheduleError};

pub const RECONCILE: &str = "payments.reconcile";
pub const RECONCILE_FAILED: &str = "payments.reconcile_failed";
/// The default schedule: 10:00 China Standard Time, after the parties publish T+1 files.
pub const DEFAULT_CRON: &str = "0 0 10 * * *";
pub const TIME_ZONE: &str = "Asia/Shanghai";

fn default_timeout_ms() -> u64 {
    120_000
}

fn default_retry() -> RetryPolicy {
    // A statement published late or a party that is down: try again for about an hour.
    RetryPolicy {
        initial_interval_ms: 60_000,
        backoff_coefficient: 2.0,
        maximum_interval_ms: 900_000,
        maximum_attempts: 8,
        non_retryable: vec!["bad_input".into(), "store".into(), "channel_config".into()],
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReconciliationInput {
    pub channel: ChannelId,
    /// The statement day `YYYY-MM-DD`; absent, the day before the schedule's tick.
    #[serde(default)]
    pub day: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub activity_timeout_ms: u64,
    #[serde(default = "default_retry")]
    pub retry: RetryPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Reconciling,
    RecordingFailure,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReconciliationState {
    pub input: ReconciliationInput,
    pub phase: Phase,
    /// Why the day could not be reconciled, once it could not.
    #[serde(default)]
    pub failure: Option<String>,
}

pub struct Reconciliation;

impl Workflow for Reconciliation {
    const NAME: &'static str = "reconciliation";
    const VERSION: i32 = 1;
    type Input = ReconciliationInput;
    type State = ReconciliationState;
    type Event = Event;

    fn start(input: ReconciliationInput) -> Step<ReconciliationState> {
        let command = Command::RunActivity {
            step: "reconcile".into(),
            kind: RECONCILE.into(),
            input: json!({ "channel": input.channel, "day": input.day }),
            retry: input.retry.clone(),
            timeout_ms: input.activity_timeout_ms,
        };
        let reason = format!("reconciling the statement of {}", input.channel);
        Step::to(
            ReconciliationState {
                input,
                phase: Phase::Reconciling,
                failure: None,
            },
            reason,
        )
        .then(command)
    }

    fn on_event(state: &ReconciliationState, event: &Event) -> Option<Step<ReconciliationState>> {
        match (state.phase, event) {
            (Phase::Reconciling, Event::ActivityCompleted { step, output })
                if step == "reconcile" =>
            {
                let reason = format!(
                    "{} of {} statement line(s) matched, {} exception(s) open",
                    output["matched"], output["statement_lines"], output["exceptions"]
                );
                Some(Step::to(state.clone(), reason).then(Command::Complete {
                    output: output.clone(),
                }))
            }
            (Phase::Reconciling, Event::ActivityFailed { step, error, .. })
                if step == "reconcile" =>
            {
                let mut next = state.clone();
                next.phase = Phase::RecordingFailure;
                next.failure = Some(error.to_string());
                let command = Command::RunActivity {
                    step: "record_failure".into(),
                    kind: RECONCILE_FAILED.into(),
                    input: json!({
                        "channel": state.input.channel,
                        "day": state.input.day,
                        "reason": error.to_string(),
                    }),
                    retry: RetryPolicy {
                        initial_interval_ms: 1_000,
                        backoff_coefficient: 2.0,
                        maximum_interval_ms: 60_000,
                        maximum_attempts: 10,
                        non_retryable: vec!["bad_input".into(), "store".into()],
                    },
                    timeout_ms: state.input.activity_timeout_ms,
                };
                Some(
                    Step::to(
                        next,
                        "the statement could not be reconciled: recording the gap",
                    )
                    .then(command),
                )
            }
            (
                Phase::RecordingFailure,
                Event::ActivityCompleted { step, .. } | Event::ActivityFailed { step, .. },
            ) if step == "record_failure" => {
                let reason = state
                    .failure
                    .clone()
                    .unwrap_or_else(|| "the statement could not be reconciled".into());
                Some(
                    Step::to(state.clone(), "the day is recorded as not reconciled")
                        .then(Command::Fail { reason }),
                )
            }
            _ => None,
        }
    }
}

fn recon_error(error: ReconError) -> ActivityError {
    match error {
        ReconError::Channel(ChannelError::Local { reason }) => {
            ActivityError::permanent("channel_config", reason)
        }
        ReconError::Channel(e) => ActivityError::retryable("channel", e.to_string()),
        ReconError::Store(e) => crate::pos_payment::store_error(e),
    }
}

/// Registers the `reconciliation` workflow and its activity over the ledger and the channel
/// adapters.
pub fn register_reconciliation(
    registry: Registry,
    ledger: ledger::Ledger,
    channels: Arc<Channels>,
) -> Registry {
    let for_failure = ledger.clone();
    registry
        .workflow::<Reconciliation>()
        .activity(RECONCILE, move |ctx, input| {
            let ledger = ledger.clone();
            let channels = channels.clone();
            async move {
                let channel_id: ChannelId = serde_json::from_value(input["channel"].clone())
                    .map_err(|e| ActivityError::permanent("bad_input", e.to_string()))?;
                let adapter = channels.get(&channel_id).cloned().ok_or_else(|| {
                    ActivityError::permanent(
                        "channel_config",
                        format!("no adapter for channel {channel_id}"),
                    )
                })?;
                let day = crate::daily_close::day_for(ledger.db(), ctx.instance_id, &input).await?;
                let date = payments::reconcile::parse_day(&day)
                    .map_err(|e| ActivityError::permanent("bad_input", e.to_string()))?;
                // A scheduled run also reads the statements its missed ticks would have.
                let dates = if input["day"].is_string() {
                    vec![date]
                } else {
                    payments::reconcile::days_to_reconcile(ledger.db(), &channel_id, date)
                        .await
                        .map_err(crate::pos_payment::store_error)?
                };
                let mut report = None;
                for d in &dates {
                    report = Some(
                        payments::reconcile::reconcile_day(
                            &ledger,
                            &channel_id,
                            adapter.as_ref(),
                            *d,
                            Utc::now(),
                        )
                        .await
                        .map_err(recon_error)?,
                    );
                }
                let report = report.expect("at least the day aimed at");
                Ok(json!({
                    "channel": channel_id,
                    "day": day,
                    "days": dates,
                    "run_id": report.run.id,
                    "status": report.run.status,
                    "statement_lines": report.run.statement_lines,
                    "matched": report.run.matched,
                    "exceptions": report.run.exceptions,
                    "settled_minor": report.run.settled_minor,
                }))
            }
        })
        .activity(RECONCILE_FAILED, move |ctx, input| {
            let ledger = for_failure.clone();
            async move {
                let channel_id: ChannelId = serde_json::from_value(input["channel"].clone())
                    .map_err(|e| ActivityError::permanent("bad_input", e.to_string()))?;
                let day = crate::daily_close::day_for(ledger.db(), ctx.instance_id, &input).await?;
                let reason = input["reason"].as_str().unwrap_or("unknown");
                let run = payments::reconcile::record_failed_run(
                    ledger.db(),
                    &channel_id,
                    &day,
                    reason,
                    Utc::now(),
                )
                .await
                .map_err(crate::pos_payment::store_error)?;
                Ok(json!({ "run_id": run.id, "status": run.status }))
            }
        })
}

/// The schedule that reconciles `channel`'s statements: `cron` (seconds first) in
/// Asia/Shanghai, [`DEFAULT_CRON`] when absent. A scheduler that was down reconciles the
/// last missed day once.
pub fn reconciliation_schedule(channel: &ChannelId, cron: Option<&str>) -> Schedule {
    Schedule {
        name: format!("reconciliation:{channel}"),
        cron: cron.unwrap_or(DEFAULT_CRON).to_owned(),
        time_zone: TIME_ZONE.into(),
        workflow_type: Reconciliation::NAME.into(),
        input: json!({ "channel": channel }),
        missed_ticks: MissedTicks::FireOnce,
    }
}

/// Puts (creates or replaces) the reconciliation schedule of every channel given.
pub async fn put_reconciliation_schedules<'a>(
    engine: &Engine,
    channels: impl IntoIterator<Item = &'a ChannelId>,
    cron: Option<&str>,
) -> Result<(), ScheduleError> {
    for channel in channels {
        engine
            .put_schedule(reconciliation_schedule(channel, cron))
            .await?;
    }
    Ok(())
}

//! `daily_close`: the daily close (日结) of one station, started by a cron schedule at the
//! start of each business day (00:00 Asia/Shanghai unless told), for the day before.
//!
//! The day to close comes from the tick that started the run (the schedule's business key
//! is `<schedule>@<tick>`), not from the clock of the worker that runs it: a run delayed by
//! downtime or retries still closes the day before its tick. An input `day` closes that day
//! instead (a rerun asked for by finance). A scheduled run also closes the days after the
//! station's last close that ticks missed while no scheduler ran (at most a month). The
//! close itself is idempotent: a second run rewrites the same rows.
//!
//! Activity: `payments.daily_close` (compute and store the station's and its station
//! company's close).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::definition::{ActivityError, Command, Event, RetryPolicy, Step, Workflow};
use crate::engine::{Engine, Registry};
use crate::schedule::{MissedTicks, Schedule, ScheduleError};

pub const DAILY_CLOSE: &str = "payments.daily_close";
/// The default schedule: midnight, China Standard Time.
pub const DEFAULT_CRON: &str = "0 0 0 * * *";
pub const TIME_ZONE: &str = "Asia/Shanghai";

fn default_timeout_ms() -> u64 {
    60_000
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DailyCloseInput {
    pub station_id: Uuid,
    /// The business day `YYYY-MM-DD` to close; absent, the day before the schedule's tick.
    #[serde(default)]
    pub day: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub activity_timeout_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Closing,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DailyCloseState {
    pub input: DailyCloseInput,
    pub phase: Phase,
}

pub struct DailyClose;

fn retrying() -> RetryPolicy {
    // Only storage can fail here, and a close is idempotent: retry patiently.
    RetryPolicy {
        initial_interval_ms: 1_000,
        backoff_coefficient: 2.0,
        maximum_interval_ms: 300_000,
        maximum_attempts: 10,
        non_retryable: vec!["bad_input".into()],
    }
}

impl Workflow for DailyClose {
    const NAME: &'static str = "daily_close";
    const VERSION: i32 = 1;
    type Input = DailyCloseInput;
    type State = DailyCloseState;
    type Event = Event;

    fn start(input: DailyCloseInput) -> Step<DailyCloseState> {
        let command = Command::RunActivity {
            step: "close".into(),
            kind: DAILY_CLOSE.into(),
            input: json!({ "station_id": input.station_id, "day": input.day }),
            retry: retrying(),
            timeout_ms: input.activity_timeout_ms,
        };
        Step::to(
            DailyCloseState {
                input,
                phase: Phase::Closing,
            },
            "closing the station's business day",
        )
        .then(command)
    }

    fn on_event(state: &DailyCloseState, event: &Event) -> Option<Step<DailyCloseState>> {
        match (state.phase, event) {
            (Phase::Closing, Event::ActivityCompleted { step, output }) if step == "close" => {
                let reason = if output["final"].as_bool() == Some(true) {
                    "closed: every shift closed, nothing unresolved".to_owned()
                } else {
                    format!(
                        "closed with {} shift(s) left open and {} unresolved item(s)",
                        output["open_shifts"], output["unresolved"]
                    )
                };
                Some(Step::to(state.clone(), reason).then(Command::Complete {
                    output: output.clone(),
                }))
            }
            (Phase::Closing, Event::ActivityFailed { step, error, .. }) if step == "close" => Some(
                Step::to(state.clone(), "the close could not be computed").then(Command::Fail {
                    reason: error.to_string(),
                }),
            ),
            _ => None,
        }
    }
}

/// The tick a schedule started an instance for, read from its business key
/// (`<schedule>@<RFC 3339 tick>`).
pub fn tick_of(business_key: &str) -> Option<DateTime<Utc>> {
    let (_, tick) = business_key.rsplit_once('@')?;
    DateTime::parse_from_rfc3339(tick)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The business day an activity of `instance_id` works on: the input's, or the day before
/// the tick that started the instance, or (started by hand without a day) yesterday.
pub(crate) async fn day_for(
    db: &sea_orm::DatabaseConnection,
    instance_id: Uuid,
    input: &Value,
) -> Result<String, ActivityError> {
    use sea_orm::EntityTrait;
    if let Some(day) = input["day"].as_str() {
        return Ok(day.to_owned());
    }
    let instance = entities::wf_instances::Entity::find_by_id(instance_id)
        .one(db)
        .await
        .map_err(|e| ActivityError::retryable("storage", e.to_string()))?;
    let at = instance
        .and_then(|i| tick_of(&i.business_key))
        .unwrap_or_else(Utc::now);
    Ok(payments::daily::previous_business_day(at))
}

/// Registers the `daily_close` workflow and its activity over the database.
pub fn register_daily_close(registry: Registry, db: sea_orm::DatabaseConnection) -> Registry {
    registry
        .workflow::<DailyClose>()
        .activity(DAILY_CLOSE, move |ctx, input| {
            let db = db.clone();
            async move {
                let station_id: Uuid = serde_json::from_value(input["station_id"].clone())
                    .map_err(|e| ActivityError::permanent("bad_input", e.to_string()))?;
                let day = day_for(&db, ctx.instance_id, &input).await?;
                // A scheduled run also closes the days its missed ticks would have closed.
                let days = if input["day"].is_string() {
                    vec![day.clone()]
                } else {
                    payments::daily::days_to_close(&db, station_id, &day)
                        .await
                        .map_err(crate::pos_payment::store_error)?
                };
                let mut closed = Vec::with_capacity(days.len());
                for d in &days {
                    closed.push(
                        payments::daily::close_day(&db, station_id, d, Utc::now())
                            .await
                            .map_err(crate::pos_payment::store_error)?,
                    );
                }
                let close = closed.last().expect("at least the day aimed at");
                let s = &close.station.summary;
                Ok(json!({
                    "station_id": station_id,
                    "day": day,
                    "days": days,
                    "close_id": close.station.row.id,
                    "company_close_id": close.company.as_ref().map(|c| c.row.id),
                    "net_minor": close.station.row.net_minor,
                    "open_shifts": s.open_shifts.len(),
                    "unresolved": s.unresolved.len(),
                    "final": s.is_final(),
                }))
            }
        })
}

/// The schedule that closes `station_id`'s day: `cron` (seconds first) in Asia/Shanghai,
/// [`DEFAULT_CRON`] when absent. A scheduler that was down closes the last missed day once.
pub fn daily_close_schedule(station_id: Uuid, cron: Option<&str>) -> Schedule {
    Schedule {
        name: format!("daily_close:{station_id}"),
        cron: cron.unwrap_or(DEFAULT_CRON).to_owned(),
        time_zone: TIME_ZONE.into(),
        workflow_type: DailyClose::NAME.into(),
        input: json!({ "station_id": station_id }),
        missed_ticks: MissedTicks::FireOnce,
    }
}

/// Puts (creates or replaces) the daily close schedule of every station given.
pub async fn put_daily_close_schedules(
    engine: &Engine,
    stations: &[Uuid],
    cron: Option<&str>,
) -> Result<(), ScheduleError> {
    for station in stations {
        engine
            .put_schedule(daily_close_schedule(*station, cron))
            .await?;
    }
    Ok(())
}

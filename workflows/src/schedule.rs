//! Cron schedules that start workflows.
//!
//! A schedule names a workflow type, its input, a cron 0.17 expression (seconds first) read
//! in a time zone (Asia/Shanghai unless told), and what to do with ticks missed while no
//! scheduler ran: `fire_once` starts one run for all of them, `skip` starts none. Each tick
//! starts the workflow with the business key `<schedule>@<tick time>`, which the engine keeps
//! unique per type, so a tick can never start twice; on PostgreSQL only the scheduler holding
//! the advisory lock fires at all (SQLite's write lock does the same), so schedulers do not
//! even race. What each tick did is kept on the schedule (`last_outcome`) and in the log.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use entities::wf_schedules;

use crate::engine::{Engine, EngineError, begin, now};

/// The advisory lock key only one scheduler may hold while it fires ticks.
const SCHEDULER_LOCK: i64 = 0x666f_7265_636f_7572; // "forecour"

/// What to do with ticks missed while no scheduler ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedTicks {
    FireOnce,
    Skip,
}

impl MissedTicks {
    fn as_str(self) -> &'static str {
        match self {
            MissedTicks::FireOnce => "fire_once",
            MissedTicks::Skip => "skip",
        }
    }
}

/// A schedule as an operator defines it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub workflow_type: String,
    pub input: Value,
    pub missed_ticks: MissedTicks,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {0:?}: {1}")]
    Cron(String, String),
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
    #[error("no workflow type {0} is registered")]
    UnknownWorkflow(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("storage error: {0}")]
    Storage(#[from] sea_orm::DbErr),
}

fn parse(cron: &str, time_zone: &str) -> Result<(cron::Schedule, Tz), ScheduleError> {
    let schedule = cron::Schedule::from_str(cron)
        .map_err(|e| ScheduleError::Cron(cron.to_owned(), e.to_string()))?;
    let tz = Tz::from_str(time_zone).map_err(|_| ScheduleError::TimeZone(time_zone.to_owned()))?;
    Ok((schedule, tz))
}

fn next_after(schedule: &cron::Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    schedule
        .after(&after.with_timezone(&tz))
        .next()
        .map(|t| t.with_timezone(&Utc))
}

impl Engine {
    /// Creates or replaces a schedule; its first tick is the first one after now.
    pub async fn put_schedule(&self, s: Schedule) -> Result<(), ScheduleError> {
        let (cron, tz) = parse(&s.cron, &s.time_zone)?;
        if self.registry().latest_version(&s.workflow_type).is_none() {
            return Err(ScheduleError::UnknownWorkflow(s.workflow_type));
        }
        let next = next_after(&cron, tz, now())
            .ok_or_else(|| ScheduleError::Cron(s.cron.clone(), "never fires".into()))?;
        let model = wf_schedules::ActiveModel {
            name: Set(s.name.clone()),
            cron: Set(s.cron),
            time_zone: Set(s.time_zone),
            workflow_type: Set(s.workflow_type),
            input: Set(s.input),
            missed_ticks: Set(s.missed_ticks.as_str().to_owned()),
            next_fire_at: Set(next),
            last_fired_at: Set(None),
            last_outcome: Set("not fired yet".into()),
            enabled: Set(true),
        };
        wf_schedules::Entity::delete_by_id(s.name)
            .exec(self.db())
            .await?;
        wf_schedules::Entity::insert(model)
            .exec_without_returning(self.db())
            .await?;
        Ok(())
    }

    /// Fires the due ticks of every schedule. Returns how many workflows it started; zero
    /// when another scheduler holds the lock.
    pub async fn fire_due_schedules(&self) -> Result<usize, ScheduleError> {
        // PostgreSQL: the transaction only holds the advisory lock; the starts and updates run
        // beside it. SQLite needs no lock of its own (each start takes the write lock, and the
        // business key refuses a second start of a tick).
        let lock = if self.db().get_database_backend() == DbBackend::Postgres {
            let txn = begin(self.db()).await?;
            let row = txn
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_try_advisory_xact_lock($1)",
                    [SCHEDULER_LOCK.into()],
                ))
                .await?;
            let locked: bool = row
                .map(|r| r.try_get_by_index(0))
                .transpose()?
                .unwrap_or(false);
            if !locked {
                txn.rollback().await?;
                return Ok(0);
            }
            Some(txn)
        } else {
            None
        };
        let at = now();
        let due = wf_schedules::Entity::find()
            .filter(wf_schedules::Column::Enabled.eq(true))
            .filter(wf_schedules::Column::NextFireAt.lte(at))
            .all(self.db())
            .await?;
        let mut started = 0;
        for s in due {
            let (cron, tz) = parse(&s.cron, &s.time_zone)?;
            // Every tick from the one due up to now.
            let mut ticks = vec![s.next_fire_at];
            while let Some(next) = next_after(&cron, tz, *ticks.last().expect("not empty")) {
                if next > at || ticks.len() > 10_000 {
                    break;
                }
                ticks.push(next);
            }
            let missed = ticks.len() - 1;
            let fire = match (missed, s.missed_ticks.as_str()) {
                (0, _) | (_, "fire_once") => ticks.last().copied(),
                _ => None,
            };
            let outcome = match (fire, missed) {
                (Some(tick), 0) => format!("fired the tick of {tick}"),
                (Some(tick), n) => {
                    format!("fired once for the tick of {tick}; {n} missed ticks folded into it")
                }
                (None, n) => format!("skipped {} missed ticks", n + 1),
            };
            if let Some(tick) = fire {
                let version = self
                    .registry()
                    .latest_version(&s.workflow_type)
                    .ok_or_else(|| ScheduleError::UnknownWorkflow(s.workflow_type.clone()))?;
                let key = format!("{}@{}", s.name, tick.to_rfc3339());
                self.start_named(&s.workflow_type, version, &key, s.input.clone())
                    .await?;
                started += 1;
            }
            tracing::info!(schedule = %s.name, %outcome, "schedule tick");
            let next = next_after(&cron, tz, at).unwrap_or(s.next_fire_at);
            wf_schedules::Entity::update_many()
                .col_expr(wf_schedules::Column::NextFireAt, Expr::value(next))
                .col_expr(
                    wf_schedules::Column::LastFiredAt,
                    Expr::value(fire.or(s.last_fired_at)),
                )
                .col_expr(wf_schedules::Column::LastOutcome, Expr::value(outcome))
                .filter(wf_schedules::Column::Name.eq(s.name.clone()))
                .filter(wf_schedules::Column::NextFireAt.eq(s.next_fire_at))
                .exec(self.db())
                .await?;
        }
        if let Some(lock) = lock {
            lock.commit().await?;
        }
        Ok(started)
    }
}

/// How often a scheduler looks for due ticks.
const TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// How often the scheduler prunes delivered messages.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a delivered outbox row stays (for inspection; history keeps every transition).
const OUTBOX_RETENTION: chrono::Duration = chrono::Duration::hours(24);
/// How long the inbox remembers a consumed message id. A broker redelivers within minutes;
/// a week is far beyond that.
const INBOX_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// Fires due schedule ticks, and once a minute prunes delivered messages, until `stop` turns
/// true.
pub async fn run_schedules(engine: Engine, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last_prune: Option<std::time::Instant> = None;
    while !*stop.borrow() {
        if let Err(err) = engine.fire_due_schedules().await {
            tracing::warn!(error = %err, "schedule round failed; retrying");
        }
        if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(std::time::Instant::now());
            let at = now();
            match engine
                .prune(at - OUTBOX_RETENTION, at - INBOX_RETENTION)
                .await
            {
                Ok((outbox, inbox)) if outbox + inbox > 0 => {
                    tracing::info!(outbox, inbox, "pruned delivered messages")
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "pruning failed; trying again later"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
    }
}

//! The engine: starting instances, delivering messages, running activities, signals and
//! queries. Every transition commits in one transaction: the new state (only on the revision
//! it read), its history rows, the outbox rows of its commands, the inbox row of the message
//! it consumed, and that message marked delivered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{LockBehavior, LockType};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use entities::{wf_history, wf_inbox, wf_instances, wf_outbox};

use crate::definition::{
    ActivityError, Command, DynWorkflow, Erased, Event, RetryPolicy, Step, Workflow,
};

/// Why the engine refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no workflow type {name} version {version} is registered")]
    UnknownWorkflow { name: String, version: i32 },
    #[error("no instance {0}")]
    UnknownInstance(String),
    #[error("instance {0} is finished and takes no more signals")]
    Finished(Uuid),
    #[error("state or message does not match its type: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("another transition of the instance committed first")]
    Conflict,
    #[error("storage error: {0}")]
    Storage(#[from] DbErr),
}

/// Instance status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Completed,
    Failed,
    Compensated,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Compensated => "compensated",
        }
    }

    fn parse(text: &str) -> Status {
        match text {
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "compensated" => Status::Compensated,
            _ => Status::Running,
        }
    }
}

/// A message on a queue. Its id is the outbox row's id.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub(crate) enum Message {
    /// For a workflow instance.
    Event { event: Event },
    /// For an activity worker.
    Task {
        step: String,
        kind: String,
        input: Value,
        attempt: u32,
        retry: RetryPolicy,
        timeout_ms: u64,
    },
    /// A domain event or webhook.
    Published { topic: String, payload: Value },
    /// Start a child instance (idempotent by business key).
    Start {
        workflow_type: String,
        business_key: String,
        input: Value,
        parent_id: Uuid,
    },
}

/// A message as a transport hands it over: the outbox row's id, instance, destination and
/// payload. Its id is the message id the inbox deduplicates on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub destination: String,
    pub payload: Value,
}

impl Delivered {
    pub(crate) fn from_row(row: &wf_outbox::Model) -> Self {
        Delivered {
            id: row.id,
            instance_id: row.instance_id,
            destination: row.destination.clone(),
            payload: row.payload.clone(),
        }
    }

    fn as_row(&self) -> wf_outbox::Model {
        wf_outbox::Model {
            id: self.id,
            instance_id: self.instance_id,
            destination: self.destination.clone(),
            payload: self.payload.clone(),
            available_at: now(),
            leased_until: None,
            delivered_at: None,
            created_at: now(),
        }
    }
}

/// What an activity gets besides its input.
#[derive(Clone, Debug)]
pub struct ActivityContext {
    pub instance_id: Uuid,
    pub step: String,
    pub attempt: u32,
    /// Stable across retries of the step: outside parties deduplicate on it.
    pub idempotency_key: String,
}

type ActivityFuture = std::pin::Pin<Box<dyn Future<Output = Result<Value, ActivityError>> + Send>>;
type ActivityFn = Arc<dyn Fn(ActivityContext, Value) -> ActivityFuture + Send + Sync>;

/// Workflow definitions and activities, by name.
#[derive(Default, Clone)]
pub struct Registry {
    workflows: HashMap<(String, i32), Arc<dyn DynWorkflow>>,
    activities: HashMap<String, ActivityFn>,
}

impl Registry {
    pub fn workflow<W: Workflow>(mut self) -> Self {
        self.workflows.insert(
            (W::NAME.to_owned(), W::VERSION),
            Arc::new(Erased::<W>(std::marker::PhantomData)),
        );
        self
    }

    pub fn activity<F, Fut>(mut self, kind: &str, f: F) -> Self
    where
        F: Fn(ActivityContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ActivityError>> + Send + 'static,
    {
        self.activities.insert(
            kind.to_owned(),
            Arc::new(move |ctx, input| Box::pin(f(ctx, input))),
        );
        self
    }

    /// The newest registered version of a workflow type.
    pub(crate) fn latest_version(&self, name: &str) -> Option<i32> {
        self.workflows
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .max()
    }

    fn get(&self, name: &str, version: i32) -> Result<Arc<dyn DynWorkflow>, EngineError> {
        self.workflows
            .get(&(name.to_owned(), version))
            .cloned()
            .ok_or_else(|| EngineError::UnknownWorkflow {
                name: name.to_owned(),
                version,
            })
    }
}

/// One history row, as queries return it.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryRow {
    pub seq: i64,
    pub kind: String,
    pub detail: Value,
    pub reason: String,
    pub recorded_at: DateTime<Utc>,
}

/// An instance with its full history.
#[derive(Clone, Debug, Serialize)]
pub struct Instance {
    pub id: Uuid,
    pub workflow_type: String,
    pub version: i32,
    pub business_key: String,
    pub state: Value,
    pub status: Status,
    pub status_reason: String,
    pub history: Vec<HistoryRow>,
}

/// How long a worker holds an activity beyond its timeout before another may take it over.
const LEASE_MARGIN_MS: i64 = 5_000;

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    db: DatabaseConnection,
    registry: Arc<Registry>,
    /// Wakes in-process consumers when a transition wrote to the outbox.
    pub(crate) wake: Arc<Notify>,
}

pub(crate) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

pub(crate) use entities::db::begin_write as begin;

impl Engine {
    pub fn new(db: DatabaseConnection, registry: Registry) -> Engine {
        Engine {
            db,
            registry: Arc::new(registry),
            wake: Arc::new(Notify::new()),
        }
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every queue the registered workflows and activities need: `workflow:<type>`,
    /// `activity:<kind>` and `events`.
    pub fn destinations(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .registry
            .workflows
            .keys()
            .map(|(name, _)| format!("workflow:{name}"))
            .chain(
                self.registry
                    .activities
                    .keys()
                    .map(|kind| format!("activity:{kind}")),
            )
            .chain(std::iter::once("events".to_owned()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Starts an instance of `W` for `business_key`, or returns the instance that key
    /// started before.
    pub async fn start<W: Workflow>(
        &self,
        business_key: &str,
        input: W::Input,
    ) -> Result<Uuid, EngineError> {
        self.start_named(
            W::NAME,
            W::VERSION,
            business_key,
            serde_json::to_value(input)?,
        )
        .await
    }

    /// Starts an instance of a registered type by name and version, or returns the instance
    /// the business key started before. Schedules start workflows this way.
    pub async fn start_named(
        &self,
        name: &str,
        version: i32,
        business_key: &str,
        input: Value,
    ) -> Result<Uuid, EngineError> {
        let txn = begin(&self.db).await?;
        let id = self
            .create_instance(&txn, name, version, business_key, input, None)
            .await?;
        txn.commit().await?;
        self.wake.notify_waiters();
        Ok(id)
    }

    /// Creates an instance in `txn`, or finds the one the business key created before.
    async fn create_instance(
        &self,
        txn: &DatabaseTransaction,
        name: &str,
        version: i32,
        business_key: &str,
        input: Value,
        parent_id: Option<Uuid>,
    ) -> Result<Uuid, EngineError> {
        if let Some(existing) = wf_instances::Entity::find()
            .filter(wf_instances::Column::WorkflowType.eq(name))
            .filter(wf_instances::Column::BusinessKey.eq(business_key))
            .one(txn)
            .await?
        {
            return Ok(existing.id);
        }
        let definition = self.registry.get(name, version)?;
        let step = definition.start(input)?;
        let id = Uuid::now_v7();
        let at = now();
        let (status, reason) = finish_status(&step);
        let status_reason = reason.unwrap_or_else(|| step.reason.clone());
        wf_instances::Entity::insert(wf_instances::ActiveModel {
            id: Set(id),
            workflow_type: Set(name.to_owned()),
            version: Set(version),
            business_key: Set(business_key.to_owned()),
            state: Set(step.state.clone()),
            status: Set(status.as_str().to_owned()),
            status_reason: Set(status_reason.clone()),
            revision: Set(1),
            parent_id: Set(parent_id),
            created_at: Set(at),
            updated_at: Set(at),
        })
        .exec_without_returning(txn)
        .await?;
        let detail = serde_json::json!({ "state": step.state, "commands": step.commands, "parent": parent_id });
        history(txn, id, 1, "started", detail, &step.reason, at).await?;
        emit_commands(txn, id, name, &step.commands, at).await?;
        if let (Some(parent), true) = (parent_id, status != Status::Running) {
            notify_parent(txn, parent, name, business_key, status, &status_reason, at).await?;
        }
        Ok(id)
    }

    /// Delivers signal `name` to an instance, durably: it is queued in the outbox and reaches
    /// the instance like any other event.
    pub async fn signal(
        &self,
        instance_id: Uuid,
        name: &str,
        payload: Value,
    ) -> Result<(), EngineError> {
        let instance = wf_instances::Entity::find_by_id(instance_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| EngineError::UnknownInstance(instance_id.to_string()))?;
        self.signal_instance(instance, name, payload).await
    }

    /// Delivers a signal to the instance of `workflow_type` started for `business_key`.
    pub async fn signal_by_key(
        &self,
        workflow_type: &str,
        business_key: &str,
        name: &str,
        payload: Value,
    ) -> Result<(), EngineError> {
        let instance = wf_instances::Entity::find()
            .filter(wf_instances::Column::WorkflowType.eq(workflow_type))
            .filter(wf_instances::Column::BusinessKey.eq(business_key))
            .one(&self.db)
            .await?
            .ok_or_else(|| {
                EngineError::UnknownInstance(format!("{workflow_type}/{business_key}"))
            })?;
        self.signal_instance(instance, name, payload).await
    }

    async fn signal_instance(
        &self,
        instance: wf_instances::Model,
        name: &str,
        payload: Value,
    ) -> Result<(), EngineError> {
        if Status::parse(&instance.status) != Status::Running {
            return Err(EngineError::Finished(instance.id));
        }
        let message = Message::Event {
            event: Event::Signal {
                name: name.to_owned(),
                payload,
            },
        };
        let at = now();
        outbox(
            &self.db,
            instance.id,
            &format!("workflow:{}", instance.workflow_type),
            &message,
            at,
        )
        .await?;
        self.wake.notify_waiters();
        Ok(())
    }

    /// An instance's state, status and full history.
    pub async fn instance(&self, id: Uuid) -> Result<Instance, EngineError> {
        let m = wf_instances::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or_else(|| EngineError::UnknownInstance(id.to_string()))?;
        let history = wf_history::Entity::find()
            .filter(wf_history::Column::InstanceId.eq(id))
            .order_by_asc(wf_history::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|h| HistoryRow {
                seq: h.seq,
                kind: h.kind,
                detail: h.detail,
                reason: h.reason,
                recorded_at: h.recorded_at,
            })
            .collect();
        Ok(Instance {
            id: m.id,
            workflow_type: m.workflow_type,
            version: m.version,
            business_key: m.business_key,
            state: m.state,
            status: Status::parse(&m.status),
            status_reason: m.status_reason,
            history,
        })
    }

    /// Ids of the instances of a type in a status, oldest first (at most `limit`).
    pub async fn list(
        &self,
        workflow_type: &str,
        status: Status,
        limit: u64,
    ) -> Result<Vec<Uuid>, EngineError> {
        Ok(wf_instances::Entity::find()
            .select_only()
            .column(wf_instances::Column::Id)
            .filter(wf_instances::Column::WorkflowType.eq(workflow_type))
            .filter(wf_instances::Column::Status.eq(status.as_str()))
            .order_by_asc(wf_instances::Column::CreatedAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await?)
    }

    /// Takes one due message for a workflow or for the `events` topic and processes it in one
    /// transaction. Returns whether there was one.
    pub async fn process_next_event(&self) -> Result<bool, EngineError> {
        let txn = begin(&self.db).await?;
        let Some(row) = due(&txn, DestinationKind::Workflows, now()).await? else {
            txn.rollback().await?;
            return Ok(false);
        };
        mark_delivered(&txn, row.id, now()).await?;
        // On error the transaction is dropped, which rolls it back.
        self.apply(&txn, &row).await?;
        txn.commit().await?;
        self.wake.notify_waiters();
        Ok(true)
    }

    /// Processes a message a broker delivered, in one transaction. A message processed
    /// before is dropped.
    pub async fn handle_delivery(&self, message: &Delivered) -> Result<(), EngineError> {
        let txn = begin(&self.db).await?;
        self.apply(&txn, &message.as_row()).await?;
        txn.commit().await?;
        Ok(())
    }

    async fn apply(
        &self,
        txn: &DatabaseTransaction,
        row: &wf_outbox::Model,
    ) -> Result<(), EngineError> {
        let at = now();
        if row.destination == "events" {
            // Domain events have no subscriber in this process yet; delivering them is logging.
            tracing::info!(message = %row.id, payload = %row.payload, "domain event");
            return Ok(());
        }
        if !consume(txn, row.id, "workflow", at).await? {
            return Ok(()); // the same message was processed before: dropped
        }
        let event = match serde_json::from_value::<Message>(row.payload.clone())? {
            Message::Event { event } => event,
            Message::Start {
                workflow_type,
                business_key,
                input,
                parent_id,
            } => {
                let version = self
                    .registry
                    .latest_version(&workflow_type)
                    .ok_or_else(|| EngineError::UnknownWorkflow {
                        name: workflow_type.clone(),
                        version: 0,
                    })?;
                let parent = Some(parent_id);
                self.create_instance(txn, &workflow_type, version, &business_key, input, parent)
                    .await?;
                return Ok(());
            }
            Message::Task { .. } | Message::Published { .. } => return Ok(()),
        };
        let instance = wf_instances::Entity::find_by_id(row.instance_id)
            .one(txn)
            .await?
            .ok_or_else(|| EngineError::UnknownInstance(row.instance_id.to_string()))?;
        let seq = next_history_seq(txn, instance.id).await?;
        let step = if Status::parse(&instance.status) != Status::Running {
            Err("the instance is finished")
        } else {
            let definition = self
                .registry
                .get(&instance.workflow_type, instance.version)?;
            definition
                .on_event(instance.state.clone(), &event)?
                .ok_or("not expected in this state")
        };
        let step = match step {
            Ok(step) => step,
            Err(reason) => {
                let detail = serde_json::json!({ "event": event });
                return history(txn, instance.id, seq, "ignored", detail, reason, at).await;
            }
        };
        let (status, final_reason) = finish_status(&step);
        let status_reason = final_reason.unwrap_or_else(|| step.reason.clone());
        if let (Some(parent), true) = (instance.parent_id, status != Status::Running) {
            let (name, key) = (&instance.workflow_type, &instance.business_key);
            notify_parent(txn, parent, name, key, status, &status_reason, at).await?;
        }
        let updated = wf_instances::Entity::update_many()
            .col_expr(
                wf_instances::Column::State,
                sea_orm::sea_query::Expr::value(step.state.clone()),
            )
            .col_expr(
                wf_instances::Column::Status,
                sea_orm::sea_query::Expr::value(status.as_str()),
            )
            .col_expr(
                wf_instances::Column::StatusReason,
                sea_orm::sea_query::Expr::value(status_reason),
            )
            .col_expr(
                wf_instances::Column::Revision,
                sea_orm::sea_query::Expr::value(instance.revision + 1),
            )
            .col_expr(
                wf_instances::Column::UpdatedAt,
                sea_orm::sea_query::Expr::value(at),
            )
            .filter(wf_instances::Column::Id.eq(instance.id))
            .filter(wf_instances::Column::Revision.eq(instance.revision))
            .exec(txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(EngineError::Conflict);
        }
        let detail =
            serde_json::json!({ "event": event, "state": step.state, "commands": step.commands });
        history(txn, instance.id, seq, "event", detail, &step.reason, at).await?;
        emit_commands(
            txn,
            instance.id,
            &instance.workflow_type,
            &step.commands,
            at,
        )
        .await
    }

    /// Takes one due activity task, runs it outside any transaction under a lease, and
    /// reports its result to the instance. Returns whether there was one.
    pub async fn run_next_activity(&self) -> Result<bool, EngineError> {
        let Some(row) = self.lease_task().await? else {
            return Ok(false);
        };
        let delivered = Delivered::from_row(&row);
        let result = self.execute(&delivered).await?;
        self.finish_activity(&delivered, result).await?;
        Ok(true)
    }

    /// Runs the activity a task names, with its timeout. The error is the activity's.
    pub async fn execute(
        &self,
        task: &Delivered,
    ) -> Result<Result<Value, ActivityError>, EngineError> {
        let Message::Task {
            step,
            kind,
            input,
            attempt,
            timeout_ms,
            ..
        } = serde_json::from_value(task.payload.clone())?
        else {
            return Ok(Err(ActivityError::permanent(
                "not_a_task",
                "the message is not an activity task",
            )));
        };
        let ctx = ActivityContext {
            instance_id: task.instance_id,
            idempotency_key: format!("{}:{step}", task.instance_id),
            step,
            attempt,
        };
        Ok(match self.registry.activities.get(&kind) {
            None => Err(ActivityError::permanent(
                "unknown_activity",
                format!("no activity {kind} is registered"),
            )),
            Some(f) => {
                match tokio::time::timeout(Duration::from_millis(timeout_ms), f(ctx, input)).await {
                    Ok(result) => result,
                    Err(_) => Err(ActivityError::retryable(
                        "timeout",
                        format!("no result within {timeout_ms} ms"),
                    )),
                }
            }
        })
    }

    /// Reports an activity's result in one transaction: the result event for the instance, or
    /// the next attempt after its backoff. A task finished before is dropped.
    pub async fn finish_activity(
        &self,
        task: &Delivered,
        result: Result<Value, ActivityError>,
    ) -> Result<(), EngineError> {
        let Message::Task {
            step,
            kind,
            input,
            attempt,
            retry,
            timeout_ms,
        } = serde_json::from_value(task.payload.clone())?
        else {
            return Ok(());
        };
        let txn = begin(&self.db).await?;
        let at = now();
        mark_delivered(&txn, task.id, at).await?;
        if !consume(&txn, task.id, "activity", at).await? {
            txn.commit().await?;
            return Ok(()); // another worker finished this attempt already
        }
        let instance = wf_instances::Entity::find_by_id(task.instance_id)
            .one(&txn)
            .await?
            .ok_or_else(|| EngineError::UnknownInstance(task.instance_id.to_string()))?;
        let destination = format!("workflow:{}", instance.workflow_type);
        match result {
            Ok(output) => {
                let message = Message::Event {
                    event: Event::ActivityCompleted { step, output },
                };
                outbox(&txn, task.instance_id, &destination, &message, at).await?;
            }
            Err(error) if retry.retries(&error, attempt) => {
                let backoff_ms = retry.backoff_ms(attempt + 1);
                let retry_at = at + chrono::Duration::milliseconds(backoff_ms as i64);
                let next = Message::Task {
                    step: step.clone(),
                    kind,
                    input,
                    attempt: attempt + 1,
                    retry,
                    timeout_ms,
                };
                outbox(&txn, task.instance_id, &task.destination, &next, retry_at).await?;
                let seq = next_history_seq(&txn, task.instance_id).await?;
                let detail = serde_json::json!({ "step": step, "attempt": attempt, "error": error, "backoff_ms": backoff_ms });
                history(
                    &txn,
                    task.instance_id,
                    seq,
                    "retry_scheduled",
                    detail,
                    &error.to_string(),
                    at,
                )
                .await?;
            }
            Err(error) => {
                let message = Message::Event {
                    event: Event::ActivityFailed {
                        step,
                        error,
                        attempts: attempt,
                    },
                };
                outbox(&txn, task.instance_id, &destination, &message, at).await?;
            }
        }
        txn.commit().await?;
        self.wake.notify_waiters();
        Ok(())
    }

    async fn lease_task(&self) -> Result<Option<wf_outbox::Model>, EngineError> {
        let txn = begin(&self.db).await?;
        let at = now();
        let Some(row) = due(&txn, DestinationKind::Activities, at).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let task: Message = serde_json::from_value(row.payload.clone())?;
        let timeout_ms = match &task {
            Message::Task { timeout_ms, .. } => *timeout_ms as i64,
            _ => 0,
        };
        let until = at + chrono::Duration::milliseconds(timeout_ms + LEASE_MARGIN_MS);
        wf_outbox::Entity::update_many()
            .col_expr(
                wf_outbox::Column::LeasedUntil,
                sea_orm::sea_query::Expr::value(until),
            )
            .filter(wf_outbox::Column::Id.eq(row.id))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(row))
    }
}

#[derive(Clone, Copy)]
enum DestinationKind {
    Workflows,
    Activities,
}

/// The oldest due, undelivered message of a kind, locked for this transaction (on
/// PostgreSQL, skipping rows other workers hold; SQLite's write lock serialises workers).
async fn due(
    txn: &DatabaseTransaction,
    kind: DestinationKind,
    at: DateTime<Utc>,
) -> Result<Option<wf_outbox::Model>, DbErr> {
    let mut select = wf_outbox::Entity::find()
        .filter(wf_outbox::Column::DeliveredAt.is_null())
        .filter(wf_outbox::Column::AvailableAt.lte(at));
    select = match kind {
        DestinationKind::Workflows => select.filter(
            wf_outbox::Column::Destination
                .starts_with("workflow:")
                .or(wf_outbox::Column::Destination.eq("events")),
        ),
        DestinationKind::Activities => select
            .filter(wf_outbox::Column::Destination.starts_with("activity:"))
            .filter(
                wf_outbox::Column::LeasedUntil
                    .is_null()
                    .or(wf_outbox::Column::LeasedUntil.lt(at)),
            ),
    };
    select
        .order_by_asc(wf_outbox::Column::AvailableAt)
        .order_by_asc(wf_outbox::Column::Id)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .one(txn)
        .await
}

async fn mark_delivered(
    txn: &DatabaseTransaction,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    wf_outbox::Entity::update_many()
        .col_expr(
            wf_outbox::Column::DeliveredAt,
            sea_orm::sea_query::Expr::value(at),
        )
        .filter(wf_outbox::Column::Id.eq(id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Records that `consumer` consumed message `id`; false if it had before.
async fn consume(
    txn: &DatabaseTransaction,
    id: Uuid,
    consumer: &str,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    if wf_inbox::Entity::find_by_id(id).one(txn).await?.is_some() {
        return Ok(false);
    }
    wf_inbox::Entity::insert(wf_inbox::ActiveModel {
        message_id: Set(id),
        consumer: Set(consumer.to_owned()),
        consumed_at: Set(at),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(true)
}

async fn next_history_seq(txn: &DatabaseTransaction, instance_id: Uuid) -> Result<i64, DbErr> {
    let last: Option<i64> = wf_history::Entity::find()
        .select_only()
        .column(wf_history::Column::Seq)
        .filter(wf_history::Column::InstanceId.eq(instance_id))
        .order_by_desc(wf_history::Column::Seq)
        .limit(1)
        .into_tuple()
        .one(txn)
        .await?;
    Ok(last.unwrap_or(0) + 1)
}

async fn history<C: ConnectionTrait>(
    db: &C,
    instance_id: Uuid,
    seq: i64,
    kind: &str,
    detail: Value,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), EngineError> {
    wf_history::Entity::insert(wf_history::ActiveModel {
        instance_id: Set(instance_id),
        seq: Set(seq),
        kind: Set(kind.to_owned()),
        detail: Set(detail),
        reason: Set(reason.to_owned()),
        recorded_at: Set(at),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

async fn outbox<C: ConnectionTrait>(
    db: &C,
    instance_id: Uuid,
    destination: &str,
    message: &Message,
    available_at: DateTime<Utc>,
) -> Result<(), EngineError> {
    wf_outbox::Entity::insert(wf_outbox::ActiveModel {
        id: Set(Uuid::now_v7()),
        instance_id: Set(instance_id),
        destination: Set(destination.to_owned()),
        payload: Set(serde_json::to_value(message)?),
        available_at: Set(available_at),
        leased_until: Set(None),
        delivered_at: Set(None),
        created_at: Set(now()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

fn finish_status<S>(step: &Step<S>) -> (Status, Option<String>) {
    for command in &step.commands {
        match command {
            Command::Complete { .. } => return (Status::Completed, None),
            Command::Fail { reason } => return (Status::Failed, Some(reason.clone())),
            Command::Compensated { reason } => return (Status::Compensated, Some(reason.clone())),
            _ => {}
        }
    }
    (Status::Running, None)
}

/// Writes the outbox rows of a transition's commands.
async fn emit_commands(
    txn: &DatabaseTransaction,
    instance_id: Uuid,
    workflow_type: &str,
    commands: &[Command],
    at: DateTime<Utc>,
) -> Result<(), EngineError> {
    let to_self = format!("workflow:{workflow_type}");
    for command in commands {
        match command {
            Command::RunActivity {
                step,
                kind,
                input,
                retry,
                timeout_ms,
            } => {
                let task = Message::Task {
                    step: step.clone(),
                    kind: kind.clone(),
                    input: input.clone(),
                    attempt: 1,
                    retry: retry.clone(),
                    timeout_ms: *timeout_ms,
                };
                outbox(txn, instance_id, &format!("activity:{kind}"), &task, at).await?;
            }
            Command::StartTimer { name, after_ms } => {
                let fire_at = at + chrono::Duration::milliseconds(*after_ms as i64);
                let message = Message::Event {
                    event: Event::TimerFired { name: name.clone() },
                };
                outbox(txn, instance_id, &to_self, &message, fire_at).await?;
            }
            Command::WaitSignal { name, deadline_ms } => {
                if let Some(deadline_ms) = deadline_ms {
                    let fire_at = at + chrono::Duration::milliseconds(*deadline_ms as i64);
                    let message = Message::Event {
                        event: Event::TimerFired {
                            name: format!("deadline:{name}"),
                        },
                    };
                    outbox(txn, instance_id, &to_self, &message, fire_at).await?;
                }
            }
            Command::StartChild {
                workflow_type: child,
                business_key,
                input,
            } => {
                let message = Message::Start {
                    workflow_type: child.clone(),
                    business_key: business_key.clone(),
                    input: input.clone(),
                    parent_id: instance_id,
                };
                outbox(txn, instance_id, &format!("workflow:{child}"), &message, at).await?;
            }
            Command::Emit { topic, payload } => {
                let message = Message::Published {
                    topic: topic.clone(),
                    payload: payload.clone(),
                };
                outbox(txn, instance_id, "events", &message, at).await?;
            }
            Command::Complete { .. } | Command::Fail { .. } | Command::Compensated { .. } => {}
        }
    }
    Ok(())
}

/// Tells a parent instance that its child finished.
async fn notify_parent(
    txn: &DatabaseTransaction,
    parent_id: Uuid,
    workflow_type: &str,
    business_key: &str,
    status: Status,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), EngineError> {
    let parent = wf_instances::Entity::find_by_id(parent_id)
        .one(txn)
        .await?
        .ok_or_else(|| EngineError::UnknownInstance(parent_id.to_string()))?;
    let event = Event::ChildFinished {
        workflow_type: workflow_type.to_owned(),
        business_key: business_key.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
    };
    let destination = format!("workflow:{}", parent.workflow_type);
    outbox(txn, parent_id, &destination, &Message::Event { event }, at).await
}

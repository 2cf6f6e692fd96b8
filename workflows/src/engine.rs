//! The engine: starting instances, delivering messages, running activities, signals and
//! queries. Every transition commits in one transaction: the new state (only on the revision
//! it read), its history rows, the outbox rows of its commands, the inbox row of the message
//! it consumed, and that message marked delivered.
//!
//! An activity's result is applied to its instance by the same transaction that consumes the
//! finished task (the transition's message is then the task itself), so the instance's next
//! commands are queued without a result message and a transaction of their own; when that
//! transaction fails (another transition of the instance committed first), the result is
//! queued as an event for the instance instead, as a signal or a timer is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{LockBehavior, LockType, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use entities::{wf_history, wf_instances, wf_outbox};

use crate::definition::{
    ActivityError, Command, DynWorkflow, Erased, Event, RetryPolicy, Step, Workflow,
};
use crate::writes::{Writes, update_outbox};

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

    pub(crate) fn parse(text: &str) -> Status {
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

/// The PostgreSQL notification channel on which a transaction that queued a message due now
/// tells the transports of every process (see [`Engine::listen_for_messages`]), followed by
/// `:` and the schema: notifications are per database, and deployments (or tests) that share
/// a database in schemas of their own do not wake each other.
pub const OUTBOX_CHANNEL: &str = "wf_outbox";

/// The outbox channel of a schema.
fn outbox_channel_of(schema: &str) -> String {
    format!("{OUTBOX_CHANNEL}:{schema}")
}

/// The outbox channel of the pool's schema.
pub async fn outbox_channel(pool: &sea_orm::sqlx::PgPool) -> Result<String, sea_orm::sqlx::Error> {
    let schema: String = sea_orm::sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(pool)
        .await?;
    Ok(outbox_channel_of(&schema))
}

/// How long a message that failed on its own waits before it is tried again (in-process).
const POISON_DELAY_MS: i64 = 30_000;

/// How long a worker holds an activity beyond its timeout before another may take it over.
const LEASE_MARGIN_MS: i64 = 5_000;

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    db: DatabaseConnection,
    registry: Arc<Registry>,
    /// Wakes in-process consumers when a transition wrote to the outbox.
    pub(crate) wake: Arc<Notify>,
    /// Whether commits announce their messages to other processes (until
    /// [`Engine::consumes_in_process`]).
    announce: Arc<std::sync::atomic::AtomicBool>,
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
            announce: Arc::new(std::sync::atomic::AtomicBool::new(true)),
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
        let mut writes = self.writes();
        let id = self
            .create_instance(&txn, &mut writes, name, version, business_key, input, None)
            .await?;
        writes.flush(&txn, now()).await?;
        txn.commit().await?;
        self.wake.notify_waiters();
        Ok(id)
    }

    /// Starts an instance of `W` inside the caller's transaction, beside the caller's own
    /// writes (the row the instance is about): both commit, or neither does. Call
    /// [`Engine::wake`] after the commit so that in-process workers look at once.
    pub async fn start_in<W: Workflow>(
        &self,
        txn: &DatabaseTransaction,
        business_key: &str,
        input: W::Input,
    ) -> Result<Uuid, EngineError> {
        let mut writes = self.writes();
        let id = self
            .create_instance(
                txn,
                &mut writes,
                W::NAME,
                W::VERSION,
                business_key,
                serde_json::to_value(input)?,
                None,
            )
            .await?;
        writes.flush(txn, now()).await?;
        Ok(id)
    }

    /// Delivers signal `name` to the instance of `workflow_type` started for `business_key`,
    /// inside the caller's transaction: the signal is queued if and only if the caller's own
    /// writes commit. Call [`Engine::wake`] after the commit.
    pub async fn signal_in(
        &self,
        txn: &DatabaseTransaction,
        workflow_type: &str,
        business_key: &str,
        name: &str,
        payload: Value,
    ) -> Result<(), EngineError> {
        let instance = wf_instances::Entity::find()
            .filter(wf_instances::Column::WorkflowType.eq(workflow_type))
            .filter(wf_instances::Column::BusinessKey.eq(business_key))
            .one(txn)
            .await?
            .ok_or_else(|| {
                EngineError::UnknownInstance(format!("{workflow_type}/{business_key}"))
            })?;
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
        let mut writes = self.writes();
        writes.outbox(
            instance.id,
            &format!("workflow:{}", instance.workflow_type),
            &message,
            at,
        )?;
        writes.flush(txn, at).await?;
        Ok(())
    }

    /// Says that this process runs relays or in-process workers over this engine: a message
    /// its own commits queue then wakes them directly, and those commits no longer announce
    /// it to other processes on PostgreSQL (a process without them, such as a separate API
    /// process, still does, so that the relays and workers elsewhere start at once).
    pub fn consumes_in_process(&self) {
        self.announce
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn writes(&self) -> Writes {
        let mut writes = Writes::default();
        writes.announce = self.announce.load(std::sync::atomic::Ordering::Relaxed);
        writes
    }

    /// Tells in-process workers that new messages are waiting.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Wakes this process's relays and in-process workers whenever another process commits a
    /// message that is due now (the flush notifies [`OUTBOX_CHANNEL`]), until `stop`. On
    /// PostgreSQL only; returns at once on SQLite, which is one process. Holds one connection
    /// of the pool; a lost connection is opened again, and what was queued meanwhile is found
    /// by the next idle poll.
    pub async fn listen_for_messages(&self, stop: tokio::sync::watch::Receiver<bool>) {
        entities::db::listen(&self.db, outbox_channel_of, stop, |_, listener| {
            // A burst of commits is one wake: what arrived meanwhile is drained first.
            while listener.next_buffered().is_some() {}
            self.wake();
        })
        .await
    }

    /// Creates an instance in `txn`, or finds the one the business key created before.
    #[allow(clippy::too_many_arguments)]
    async fn create_instance(
        &self,
        txn: &DatabaseTransaction,
        writes: &mut Writes,
        name: &str,
        version: i32,
        business_key: &str,
        input: Value,
        parent_id: Option<Uuid>,
    ) -> Result<Uuid, EngineError> {
        let definition = self.registry.get(name, version)?;
        let step = definition.start(input)?;
        let id = Uuid::now_v7();
        let at = now();
        let (status, reason) = finish_status(&step);
        let status_reason = reason.unwrap_or_else(|| step.reason.clone());
        let model = wf_instances::Model {
            id,
            workflow_type: name.to_owned(),
            version,
            business_key: business_key.to_owned(),
            state: step.state.clone(),
            status: status.as_str().to_owned(),
            status_reason: status_reason.clone(),
            revision: 1,
            parent_id,
            created_at: at,
            updated_at: at,
        };
        // The business key's unique index decides: the instance is written once, and a key
        // started before (or by a concurrent transaction that committed first) answers its
        // instance, with no read first on the usual path of a new key.
        let inserted = wf_instances::Entity::insert(wf_instances::ActiveModel {
            id: Set(id),
            workflow_type: Set(model.workflow_type.clone()),
            version: Set(version),
            business_key: Set(model.business_key.clone()),
            state: Set(model.state.clone()),
            status: Set(model.status.clone()),
            status_reason: Set(status_reason.clone()),
            revision: Set(1),
            parent_id: Set(parent_id),
            created_at: Set(at),
            updated_at: Set(at),
        })
        .on_conflict(
            OnConflict::columns([
                wf_instances::Column::WorkflowType,
                wf_instances::Column::BusinessKey,
            ])
            .do_nothing()
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
        if inserted == 0 {
            let existing = wf_instances::Entity::find()
                .filter(wf_instances::Column::WorkflowType.eq(name))
                .filter(wf_instances::Column::BusinessKey.eq(business_key))
                .one(txn)
                .await?
                .ok_or_else(|| EngineError::UnknownInstance(format!("{name}/{business_key}")))?;
            return Ok(existing.id);
        }
        writes.inserted(model);
        let detail = serde_json::json!({ "state": step.state, "commands": step.commands, "parent": parent_id });
        writes.history(id, "started", detail, &step.reason, at);
        emit_commands(writes, id, name, &step.commands, at)?;
        if let (Some(parent), true) = (parent_id, status != Status::Running) {
            let finished = (name, business_key, status, status_reason.as_str());
            notify_parent(txn, writes, parent, finished, at).await?;
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
        let mut writes = self.writes();
        let destination = format!("workflow:{}", instance.workflow_type);
        writes.outbox(instance.id, &destination, &message, at)?;
        writes.flush(&self.db, at).await?;
        self.wake.notify_waiters();
        Ok(())
    }

    /// The instance of `workflow_type` started for `business_key`, if any, with its history.
    pub async fn instance_by_key(
        &self,
        workflow_type: &str,
        business_key: &str,
    ) -> Result<Option<Instance>, EngineError> {
        let found = wf_instances::Entity::find()
            .filter(wf_instances::Column::WorkflowType.eq(workflow_type))
            .filter(wf_instances::Column::BusinessKey.eq(business_key))
            .one(&self.db)
            .await?;
        match found {
            Some(m) => self.instance(m.id).await.map(Some),
            None => Ok(None),
        }
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

    /// Deletes delivered outbox rows created before `outbox_before` and inbox rows of
    /// messages created before `inbox_before`, in bounded batches. Unsent rows always stay.
    /// Ids are UUIDv7, so "created before" is a range of the primary key. Returns the rows
    /// deleted from each table.
    pub async fn prune(
        &self,
        outbox_before: DateTime<Utc>,
        inbox_before: DateTime<Utc>,
    ) -> Result<(u64, u64), EngineError> {
        let outbox = self
            .prune_table(
                "DELETE FROM wf_outbox WHERE id IN (SELECT id FROM wf_outbox \
                 WHERE id < {bound} AND delivered_at IS NOT NULL LIMIT {limit})",
                outbox_before,
            )
            .await?;
        let inbox = self
            .prune_table(
                "DELETE FROM wf_inbox WHERE message_id IN (SELECT message_id FROM wf_inbox \
                 WHERE message_id < {bound} LIMIT {limit})",
                inbox_before,
            )
            .await?;
        Ok((outbox, inbox))
    }

    async fn prune_table(&self, template: &str, before: DateTime<Utc>) -> Result<u64, DbErr> {
        const LIMIT: u64 = 5_000;
        const MOST_ROUNDS: usize = 20;
        let backend = self.db.get_database_backend();
        let bound = match backend {
            sea_orm::DbBackend::Postgres => "$1",
            _ => "?",
        };
        let sql = template
            .replace("{bound}", bound)
            .replace("{limit}", &LIMIT.to_string());
        // The smallest UUIDv7 of the instant: its 48-bit millisecond time, then zeros.
        let millis = Ord::max(before.timestamp_millis(), 0) as u128;
        let bound = Uuid::from_u128(millis << 80);
        let mut deleted = 0;
        for _ in 0..MOST_ROUNDS {
            let statement =
                sea_orm::Statement::from_sql_and_values(backend, sql.clone(), [bound.into()]);
            let n = self.db.execute_raw(statement).await?.rows_affected();
            deleted += n;
            if n < LIMIT {
                break;
            }
        }
        Ok(deleted)
    }

    /// Takes one due message for a workflow or for the `events` topic and processes it in one
    /// transaction. Returns whether there was one.
    pub async fn process_next_event(&self) -> Result<bool, EngineError> {
        Ok(self.process_next_events(1).await? > 0)
    }

    /// Takes up to `limit` due messages for workflows or for the `events` topic and processes
    /// them in order, in one transaction. Returns how many there were.
    pub async fn process_next_events(&self, limit: u64) -> Result<usize, EngineError> {
        let txn = begin(&self.db).await?;
        let rows = due(&txn, DestinationKind::Workflows, now(), limit).await?;
        if rows.is_empty() {
            txn.rollback().await?;
            return Ok(0);
        }
        let messages: Vec<Delivered> = rows.iter().map(Delivered::from_row).collect();
        let mut writes = self.writes();
        for message in &messages {
            writes.delivered(message.id);
        }
        let applied = async {
            self.apply_all(&txn, &mut writes, &messages).await?;
            writes.flush(&txn, now()).await?;
            Ok::<_, EngineError>(())
        }
        .await;
        let committed = match applied {
            Ok(()) => txn.commit().await.map_err(EngineError::from),
            Err(err) => {
                // Release the rows before they are taken one by one.
                let _ = txn.rollback().await;
                Err(err)
            }
        };
        if let Err(err) = committed {
            // One bad message must not hold up the others: each goes on its own, and one
            // that fails alone waits a while before it is tried again.
            tracing::warn!(error = %err, batch = messages.len(), "batch failed; one by one");
            for message in &messages {
                self.process_alone(message).await?;
            }
        }
        self.wake.notify_waiters();
        Ok(messages.len())
    }

    /// Processes one message in its own transaction; if that fails, the message is put
    /// back `POISON_DELAY` later (it stays in the outbox, undelivered, and is logged).
    async fn process_alone(&self, message: &Delivered) -> Result<(), EngineError> {
        let txn = begin(&self.db).await?;
        let mut writes = self.writes();
        writes.delivered(message.id);
        let result = async {
            self.apply_all(&txn, &mut writes, std::slice::from_ref(message))
                .await?;
            writes.flush(&txn, now()).await?;
            Ok::<_, EngineError>(())
        }
        .await;
        match result {
            Ok(()) => Ok(txn.commit().await?),
            Err(err) => {
                let _ = txn.rollback().await;
                tracing::error!(
                    message = %message.id,
                    destination = %message.destination,
                    error = %err,
                    "message failed; tried again later"
                );
                let later = now() + chrono::Duration::milliseconds(POISON_DELAY_MS);
                wf_outbox::Entity::update_many()
                    .col_expr(
                        wf_outbox::Column::AvailableAt,
                        sea_orm::sea_query::Expr::value(later),
                    )
                    .filter(wf_outbox::Column::Id.eq(message.id))
                    .filter(wf_outbox::Column::DeliveredAt.is_null())
                    .exec(&self.db)
                    .await?;
                Ok(())
            }
        }
    }

    /// Processes a message a broker delivered, in one transaction. A message processed
    /// before is dropped.
    pub async fn handle_delivery(&self, message: &Delivered) -> Result<(), EngineError> {
        self.handle_deliveries(std::slice::from_ref(message)).await
    }

    /// Processes messages a broker delivered, in order, in one transaction: all of them or,
    /// on any error, none. Messages processed before are dropped.
    pub async fn handle_deliveries(&self, messages: &[Delivered]) -> Result<(), EngineError> {
        let txn = begin(&self.db).await?;
        let mut writes = self.writes();
        self.apply_all(&txn, &mut writes, messages).await?;
        writes.flush(&txn, now()).await?;
        txn.commit().await?;
        Ok(())
    }

    async fn apply_all(
        &self,
        txn: &DatabaseTransaction,
        writes: &mut Writes,
        messages: &[Delivered],
    ) -> Result<(), EngineError> {
        let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
        let instances: Vec<Uuid> = messages.iter().map(|m| m.instance_id).collect();
        writes.preload(txn, &ids, &instances).await?;
        for message in messages {
            self.apply(txn, writes, message).await?;
        }
        Ok(())
    }

    async fn apply(
        &self,
        txn: &DatabaseTransaction,
        writes: &mut Writes,
        message: &Delivered,
    ) -> Result<(), EngineError> {
        let at = now();
        if message.destination == "events" {
            if !writes.consume(message.id, "events", at) {
                return Ok(()); // fanned out before
            }
            if let Message::Published { topic, payload } =
                serde_json::from_value::<Message>(message.payload.clone())?
            {
                let n = crate::webhooks::fan_out(txn, message.id, &topic, &payload, at).await?;
                tracing::info!(message = %message.id, %topic, deliveries = n, "domain event");
            }
            return Ok(());
        }
        if !writes.consume(message.id, "workflow", at) {
            return Ok(()); // the same message was processed before: dropped
        }
        let event = match serde_json::from_value::<Message>(message.payload.clone())? {
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
                self.create_instance(
                    txn,
                    writes,
                    &workflow_type,
                    version,
                    &business_key,
                    input,
                    parent,
                )
                .await?;
                return Ok(());
            }
            Message::Task { .. } | Message::Published { .. } => return Ok(()),
        };
        self.transition(txn, writes, message.instance_id, event, at)
            .await
    }

    /// Applies one event to an instance: the transition with its history row and the outbox
    /// rows of its commands, or an `ignored` history row.
    async fn transition(
        &self,
        txn: &DatabaseTransaction,
        writes: &mut Writes,
        instance_id: Uuid,
        event: Event,
        at: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        let instance = writes.instance(txn, instance_id).await?;
        let running = instance.status() == Status::Running;
        let instance = instance.model.clone();
        let step = if !running {
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
                writes.history(instance.id, "ignored", detail, reason, at);
                return Ok(());
            }
        };
        let (status, final_reason) = finish_status(&step);
        let status_reason = final_reason.unwrap_or_else(|| step.reason.clone());
        if let (Some(parent), true) = (instance.parent_id, status != Status::Running) {
            let (name, key) = (&instance.workflow_type, &instance.business_key);
            let finished = (name.as_str(), key.as_str(), status, status_reason.as_str());
            notify_parent(txn, writes, parent, finished, at).await?;
        }
        let detail =
            serde_json::json!({ "event": event, "state": step.state, "commands": step.commands });
        writes.transition(instance.id, step.state, status, status_reason, at);
        writes.history(instance.id, "event", detail, &step.reason, at);
        emit_commands(
            writes,
            instance.id,
            &instance.workflow_type,
            &step.commands,
            at,
        )
    }

    /// Takes one due activity task, runs it outside any transaction under a lease, and
    /// reports its result to the instance. Returns whether there was one.
    pub async fn run_next_activity(&self) -> Result<bool, EngineError> {
        Ok(self.run_next_activities(1).await? > 0)
    }

    /// Takes up to `limit` due activity tasks, runs them concurrently outside any transaction
    /// under a lease, and reports their results in one transaction. Returns how many there
    /// were.
    pub async fn run_next_activities(&self, limit: u64) -> Result<usize, EngineError> {
        let tasks: Vec<Delivered> = self
            .lease_tasks(limit)
            .await?
            .iter()
            .map(Delivered::from_row)
            .collect();
        if tasks.is_empty() {
            return Ok(0);
        }
        let results = self.execute_all(&tasks).await?;
        let count = results.len();
        self.finish(results, MarkDelivered::Yes).await?;
        Ok(count)
    }

    /// Runs activity tasks concurrently; pairs each task with its result.
    pub async fn execute_all(
        &self,
        tasks: &[Delivered],
    ) -> Result<Vec<(Delivered, Result<Value, ActivityError>)>, EngineError> {
        let results =
            futures_util::future::join_all(tasks.iter().map(|task| self.execute(task))).await;
        tasks
            .iter()
            .cloned()
            .zip(results)
            .map(|(task, result)| Ok((task, result?)))
            .collect()
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

    /// Reports the result of an activity task a broker delivered, in one transaction: the
    /// result event for the instance, or the next attempt after its backoff. A task finished
    /// before is dropped.
    pub async fn finish_activity(
        &self,
        task: &Delivered,
        result: Result<Value, ActivityError>,
    ) -> Result<(), EngineError> {
        self.finish_activities(vec![(task.clone(), result)]).await
    }

    /// Reports the results of several activity tasks a broker delivered in one transaction:
    /// all of them or, on any error, none. Tasks finished before are dropped.
    pub async fn finish_activities(
        &self,
        results: Vec<(Delivered, Result<Value, ActivityError>)>,
    ) -> Result<(), EngineError> {
        self.finish(results, MarkDelivered::No).await
    }

    /// Reports results, applying each result event to its instance in the same transaction
    /// (the instance's next commands are queued by the commit that consumes the task, with no
    /// message and transaction of its own in between). If that fails (another transition of
    /// an instance committed first, or an instance cannot take the event), the results are
    /// reported again the plain way: as events queued for the instances.
    async fn finish(
        &self,
        results: Vec<(Delivered, Result<Value, ActivityError>)>,
        mark: MarkDelivered,
    ) -> Result<(), EngineError> {
        match self.finish_with(&results, mark, Apply::Inline).await {
            Ok(()) => Ok(()),
            Err(err) => {
                tracing::debug!(error = %err, batch = results.len(), "results not applied at once; queued as events");
                self.finish_with(&results, mark, Apply::Queued).await
            }
        }
    }

    async fn finish_with(
        &self,
        results: &[(Delivered, Result<Value, ActivityError>)],
        mark: MarkDelivered,
        apply: Apply,
    ) -> Result<(), EngineError> {
        let txn = begin(&self.db).await?;
        let at = now();
        let mut writes = self.writes();
        let ids: Vec<Uuid> = results.iter().map(|(task, _)| task.id).collect();
        let instances: Vec<Uuid> = results.iter().map(|(task, _)| task.instance_id).collect();
        let applied = async {
            writes.preload(&txn, &ids, &instances).await?;
            for (task, result) in results {
                if let MarkDelivered::Yes = mark {
                    writes.delivered(task.id);
                }
                self.finish_one(&txn, &mut writes, task, result.clone(), at, apply)
                    .await?;
            }
            writes.flush(&txn, at).await
        }
        .await;
        match applied {
            Ok(()) => txn.commit().await?,
            Err(err) => {
                let _ = txn.rollback().await;
                return Err(err);
            }
        }
        self.wake.notify_waiters();
        Ok(())
    }

    /// Reports one activity result into `writes`: the result event (applied to the instance
    /// or queued for it), or the next attempt after its backoff with a `retry_scheduled`
    /// history row.
    async fn finish_one(
        &self,
        txn: &DatabaseTransaction,
        writes: &mut Writes,
        task: &Delivered,
        result: Result<Value, ActivityError>,
        at: DateTime<Utc>,
        apply: Apply,
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
        if !writes.consume(task.id, "activity", at) {
            return Ok(()); // another worker finished this attempt already
        }
        let instance = writes.instance(txn, task.instance_id).await?;
        let destination = format!("workflow:{}", instance.model.workflow_type);
        let event = match result {
            Ok(output) => Event::ActivityCompleted { step, output },
            Err(error) if retry.retries(&error, attempt) => {
                let backoff_ms = retry.backoff_ms(attempt + 1);
                let retry_at = at + chrono::Duration::milliseconds(backoff_ms as i64);
                let detail = serde_json::json!({ "step": step, "attempt": attempt, "error": error, "backoff_ms": backoff_ms });
                let next = Message::Task {
                    step,
                    kind,
                    input,
                    attempt: attempt + 1,
                    retry,
                    timeout_ms,
                };
                writes.outbox(task.instance_id, &task.destination, &next, retry_at)?;
                let reason = error.to_string();
                writes.history(task.instance_id, "retry_scheduled", detail, &reason, at);
                return Ok(());
            }
            Err(error) => Event::ActivityFailed {
                step,
                error,
                attempts: attempt,
            },
        };
        match apply {
            Apply::Inline => {
                self.transition(txn, writes, task.instance_id, event, at)
                    .await
            }
            Apply::Queued => writes.outbox(
                task.instance_id,
                &destination,
                &Message::Event { event },
                at,
            ),
        }
    }

    async fn lease_tasks(&self, limit: u64) -> Result<Vec<wf_outbox::Model>, EngineError> {
        let txn = begin(&self.db).await?;
        let at = now();
        let rows = due(&txn, DestinationKind::Activities, at, limit).await?;
        if rows.is_empty() {
            txn.rollback().await?;
            return Ok(rows);
        }
        // Each task is leased for its own timeout plus a margin; tasks of one timeout share
        // one update.
        let mut by_timeout: HashMap<i64, Vec<Uuid>> = HashMap::new();
        for row in &rows {
            let timeout_ms = match serde_json::from_value::<Message>(row.payload.clone())? {
                Message::Task { timeout_ms, .. } => timeout_ms as i64,
                _ => 0,
            };
            by_timeout.entry(timeout_ms).or_default().push(row.id);
        }
        for (timeout_ms, ids) in by_timeout {
            let until = at + chrono::Duration::milliseconds(timeout_ms + LEASE_MARGIN_MS);
            update_outbox(&txn, "leased_until", until.into(), ids).await?;
        }
        txn.commit().await?;
        Ok(rows)
    }
}

/// How a finished task's result reaches its instance.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Apply {
    /// Applied to the instance in the transaction that finishes the task.
    Inline,
    /// Queued as an event for the instance's queue.
    Queued,
}

/// Whether finishing a task also marks its outbox row delivered: the in-process transport
/// does; on a broker the relay marked it sent already (and may still hold its row lock).
#[derive(Clone, Copy)]
enum MarkDelivered {
    Yes,
    No,
}

#[derive(Clone, Copy)]
enum DestinationKind {
    Workflows,
    Activities,
}

/// The oldest due, undelivered messages of a kind (at most `limit`), locked for this transaction (on
/// PostgreSQL, skipping rows other workers hold; SQLite's write lock serialises workers).
async fn due(
    txn: &DatabaseTransaction,
    kind: DestinationKind,
    at: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<wf_outbox::Model>, DbErr> {
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
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .all(txn)
        .await
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
fn emit_commands(
    writes: &mut Writes,
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
                writes.outbox(instance_id, &format!("activity:{kind}"), &task, at)?;
            }
            Command::StartTimer { name, after_ms } => {
                let fire_at = at + chrono::Duration::milliseconds(*after_ms as i64);
                let message = Message::Event {
                    event: Event::TimerFired { name: name.clone() },
                };
                writes.outbox(instance_id, &to_self, &message, fire_at)?;
            }
            Command::WaitSignal { name, deadline_ms } => {
                if let Some(deadline_ms) = deadline_ms {
                    let fire_at = at + chrono::Duration::milliseconds(*deadline_ms as i64);
                    let message = Message::Event {
                        event: Event::TimerFired {
                            name: format!("deadline:{name}"),
                        },
                    };
                    writes.outbox(instance_id, &to_self, &message, fire_at)?;
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
                writes.outbox(instance_id, &format!("workflow:{child}"), &message, at)?;
            }
            Command::Emit { topic, payload } => {
                let message = Message::Published {
                    topic: topic.clone(),
                    payload: payload.clone(),
                };
                writes.outbox(instance_id, "events", &message, at)?;
            }
            Command::Complete { .. } | Command::Fail { .. } | Command::Compensated { .. } => {}
        }
    }
    Ok(())
}

/// Tells a parent instance that its child finished: `(type, business key, status, reason)`.
async fn notify_parent(
    txn: &DatabaseTransaction,
    writes: &mut Writes,
    parent_id: Uuid,
    (workflow_type, business_key, status, reason): (&str, &str, Status, &str),
    at: DateTime<Utc>,
) -> Result<(), EngineError> {
    let parent = writes.instance(txn, parent_id).await?;
    let destination = format!("workflow:{}", parent.model.workflow_type);
    let event = Event::ChildFinished {
        workflow_type: workflow_type.to_owned(),
        business_key: business_key.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
    };
    writes.outbox(parent_id, &destination, &Message::Event { event }, at)
}

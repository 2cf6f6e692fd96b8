//! The writes of one engine transaction, gathered and then written set-wise.
//!
//! A transaction may apply one message or a batch of them (a consumer's prefetch window, an
//! in-process worker's due rows). Reads happen once per batch (inbox, then instances with
//! their last history sequence); every transition is applied to the loaded instances in
//! memory, in message order; [`Writes::flush`] then writes each changed instance once, guarded
//! by the revision it was read at, with the inbox, history and outbox rows. On PostgreSQL the
//! flush is one statement of typed arrays (stable SQL, so the prepared statement is reused);
//! on SQLite one statement per table. A batch commits or rolls back as a whole, like a single
//! message.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, Statement, Value,
};
use uuid::Uuid;

use entities::{wf_history, wf_inbox, wf_instances, wf_outbox};

use crate::engine::{EngineError, Message, Status};

/// An instance as this transaction sees it.
pub(crate) struct Loaded {
    pub model: wf_instances::Model,
    /// The revision the row had when read (or was inserted with); the update is guarded by it.
    read_revision: i64,
    next_seq: i64,
    changed: bool,
}

impl Loaded {
    pub fn status(&self) -> Status {
        Status::parse(&self.model.status)
    }
}

#[derive(Default)]
pub(crate) struct Writes {
    instances: HashMap<Uuid, Loaded>,
    /// Messages consumed before this transaction, or earlier in it.
    consumed: HashSet<Uuid>,
    inbox: Vec<wf_inbox::Model>,
    history: Vec<wf_history::Model>,
    outbox: Vec<wf_outbox::Model>,
    delivered: Vec<Uuid>,
    /// Whether the flush announces a message due now to other processes (see
    /// [`crate::engine::Engine::consumes_in_process`]).
    pub(crate) announce: bool,
}

/// `col = ANY($n)` on PostgreSQL (one statement text for any number of ids), `col IN (?, …)`
/// on SQLite.
fn any_of(backend: DbBackend, column: &str, ids: &[Uuid]) -> (String, Vec<Value>) {
    match backend {
        DbBackend::Postgres => (
            format!("{column} = ANY($1::uuid[])"),
            vec![Value::from(ids.to_vec())],
        ),
        _ => {
            let marks = vec!["?"; ids.len()].join(", ");
            let values = ids.iter().map(|id| Value::from(*id)).collect();
            (format!("{column} IN ({marks})"), values)
        }
    }
}

/// Sets one column of the outbox rows `ids` (at most a batch of them) to `value`.
pub(crate) async fn update_outbox<C: ConnectionTrait>(
    db: &C,
    column: &str,
    value: Value,
    ids: Vec<Uuid>,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let (sql, values) = match backend {
        DbBackend::Postgres => (
            format!("UPDATE wf_outbox SET {column} = $1 WHERE id = ANY($2::uuid[])"),
            vec![value, Value::from(ids)],
        ),
        _ => {
            let marks = vec!["?"; ids.len()].join(", ");
            let mut values = vec![value];
            values.extend(ids.into_iter().map(Value::from));
            (
                format!("UPDATE wf_outbox SET {column} = ? WHERE id IN ({marks})"),
                values,
            )
        }
    };
    db.execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    Ok(())
}

impl Writes {
    /// Reads, in two statements, what applying `messages` to `instances` needs: which
    /// messages were consumed before, and the instances with their last history sequence.
    pub async fn preload<C: ConnectionTrait>(
        &mut self,
        db: &C,
        messages: &[Uuid],
        instances: &[Uuid],
    ) -> Result<(), DbErr> {
        let backend = db.get_database_backend();
        if !messages.is_empty() {
            let (condition, values) = any_of(backend, "message_id", messages);
            let sql = format!("SELECT message_id FROM wf_inbox WHERE {condition}");
            let rows = db
                .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            for row in rows {
                self.consumed.insert(row.try_get("", "message_id")?);
            }
        }
        let wanted: Vec<Uuid> = instances
            .iter()
            .filter(|id| !self.instances.contains_key(id))
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // The correlated MAX reads the end of each instance's primary-key range.
        let (condition, values) = any_of(backend, "i.id", &wanted);
        let sql = format!(
            "SELECT i.*, (SELECT MAX(h.seq) FROM wf_history h WHERE h.instance_id = i.id) AS last_seq \
             FROM wf_instances i WHERE {condition}"
        );
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        for row in rows {
            let model = wf_instances::Model::from_query_result(&row, "")?;
            let last_seq: Option<i64> = row.try_get("", "last_seq")?;
            let loaded = Loaded {
                read_revision: model.revision,
                model,
                next_seq: last_seq.unwrap_or(0) + 1,
                changed: false,
            };
            self.instances.insert(loaded.model.id, loaded);
        }
        Ok(())
    }

    /// The instance, read now if the batch did not preload it.
    pub async fn instance<C: ConnectionTrait>(
        &mut self,
        db: &C,
        id: Uuid,
    ) -> Result<&mut Loaded, EngineError> {
        if !self.instances.contains_key(&id) {
            self.preload(db, &[], &[id]).await?;
        }
        self.instances
            .get_mut(&id)
            .ok_or_else(|| EngineError::UnknownInstance(id.to_string()))
    }

    /// An instance this transaction inserted.
    pub fn inserted(&mut self, model: wf_instances::Model) {
        let loaded = Loaded {
            read_revision: model.revision,
            model,
            next_seq: 1,
            changed: false,
        };
        self.instances.insert(loaded.model.id, loaded);
    }

    /// Records that `consumer` consumed message `id`; false if it was consumed before.
    pub fn consume(&mut self, id: Uuid, consumer: &str, at: DateTime<Utc>) -> bool {
        if !self.consumed.insert(id) {
            return false;
        }
        self.inbox.push(wf_inbox::Model {
            message_id: id,
            consumer: consumer.to_owned(),
            consumed_at: at,
        });
        true
    }

    /// Marks an outbox row delivered (the in-process transport; the relay marks its own).
    pub fn delivered(&mut self, id: Uuid) {
        self.delivered.push(id);
    }

    /// A transition of a loaded instance to a new state and status.
    pub fn transition(
        &mut self,
        id: Uuid,
        state: serde_json::Value,
        status: Status,
        reason: String,
        at: DateTime<Utc>,
    ) {
        let loaded = self
            .instances
            .get_mut(&id)
            .expect("transitions apply to loaded instances");
        loaded.model.state = state;
        loaded.model.status = status.as_str().to_owned();
        loaded.model.status_reason = reason;
        loaded.model.revision += 1;
        loaded.model.updated_at = at;
        loaded.changed = true;
    }

    /// Appends a history row of a loaded instance with its next sequence number.
    pub fn history(
        &mut self,
        instance_id: Uuid,
        kind: &str,
        detail: serde_json::Value,
        reason: &str,
        at: DateTime<Utc>,
    ) {
        let loaded = self
            .instances
            .get_mut(&instance_id)
            .expect("history rows belong to loaded instances");
        let seq = loaded.next_seq;
        loaded.next_seq += 1;
        self.history.push(wf_history::Model {
            instance_id,
            seq,
            kind: kind.to_owned(),
            detail,
            reason: reason.to_owned(),
            recorded_at: at,
        });
    }

    /// Queues a message; it is not deliverable before `available_at`.
    pub fn outbox(
        &mut self,
        instance_id: Uuid,
        destination: &str,
        message: &Message,
        available_at: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        self.outbox.push(wf_outbox::Model {
            id: Uuid::now_v7(),
            instance_id,
            destination: destination.to_owned(),
            payload: serde_json::to_value(message)?,
            available_at,
            leased_until: None,
            delivered_at: None,
            created_at: crate::engine::now(),
        });
        Ok(())
    }

    /// Writes everything: each changed instance once, only on the revision it was read at
    /// (otherwise [`EngineError::Conflict`], and the caller's transaction rolls back); the
    /// inbox, history and outbox rows; the delivered marks.
    pub async fn flush<C: ConnectionTrait>(
        self,
        db: &C,
        at: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        match db.get_database_backend() {
            DbBackend::Postgres => self.flush_postgres(db, at).await,
            _ => self.flush_each(db, at).await,
        }
    }

    async fn flush_postgres<C: ConnectionTrait>(
        self,
        db: &C,
        at: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        fn column<T, U>(rows: &[T], f: impl Fn(&T) -> U) -> Value
        where
            Value: From<Vec<U>>,
        {
            Value::from(rows.iter().map(f).collect::<Vec<U>>())
        }
        let changed: Vec<&Loaded> = self.instances.values().filter(|l| l.changed).collect();
        let (i, ib, h, o) = (&changed, &self.inbox, &self.history, &self.outbox);
        let values = vec![
            column(i, |l| l.model.id),
            column(i, |l| l.model.state.to_string()),
            column(i, |l| l.model.status.clone()),
            column(i, |l| l.model.status_reason.clone()),
            column(i, |l| l.model.revision),
            column(i, |l| l.read_revision),
            column(i, |l| l.model.updated_at),
            column(ib, |r| r.message_id),
            column(ib, |r| r.consumer.clone()),
            column(ib, |r| r.consumed_at),
            column(h, |r| r.instance_id),
            column(h, |r| r.seq),
            column(h, |r| r.kind.clone()),
            column(h, |r| r.detail.to_string()),
            column(h, |r| r.reason.clone()),
            column(h, |r| r.recorded_at),
            column(o, |r| r.id),
            column(o, |r| r.instance_id),
            column(o, |r| r.destination.clone()),
            column(o, |r| r.payload.to_string()),
            column(o, |r| r.available_at),
            column(o, |r| r.created_at),
            Value::from(at),
            Value::from(self.delivered.clone()),
            Value::from(self.announce),
        ];
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                PG_FLUSH,
                values,
            ))
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("the flush returned no row".into()))?;
        let updated: i64 = row.try_get("", "updated")?;
        if updated != changed.len() as i64 {
            return Err(EngineError::Conflict);
        }
        Ok(())
    }

    async fn flush_each<C: ConnectionTrait>(
        self,
        db: &C,
        at: DateTime<Utc>,
    ) -> Result<(), EngineError> {
        for loaded in self.instances.values().filter(|l| l.changed) {
            let m = &loaded.model;
            let updated = wf_instances::Entity::update_many()
                .col_expr(wf_instances::Column::State, Expr::value(m.state.clone()))
                .col_expr(wf_instances::Column::Status, Expr::value(m.status.clone()))
                .col_expr(
                    wf_instances::Column::StatusReason,
                    Expr::value(m.status_reason.clone()),
                )
                .col_expr(wf_instances::Column::Revision, Expr::value(m.revision))
                .col_expr(wf_instances::Column::UpdatedAt, Expr::value(m.updated_at))
                .filter(wf_instances::Column::Id.eq(m.id))
                .filter(wf_instances::Column::Revision.eq(loaded.read_revision))
                .exec(db)
                .await?;
            if updated.rows_affected != 1 {
                return Err(EngineError::Conflict);
            }
        }
        if !self.inbox.is_empty() {
            let rows = self.inbox.into_iter().map(|r| wf_inbox::ActiveModel {
                message_id: Set(r.message_id),
                consumer: Set(r.consumer),
                consumed_at: Set(r.consumed_at),
            });
            wf_inbox::Entity::insert_many(rows)
                .exec_without_returning(db)
                .await?;
        }
        if !self.history.is_empty() {
            let rows = self.history.into_iter().map(|r| wf_history::ActiveModel {
                instance_id: Set(r.instance_id),
                seq: Set(r.seq),
                kind: Set(r.kind),
                detail: Set(r.detail),
                reason: Set(r.reason),
                recorded_at: Set(r.recorded_at),
            });
            wf_history::Entity::insert_many(rows)
                .exec_without_returning(db)
                .await?;
        }
        if !self.outbox.is_empty() {
            let rows = self.outbox.into_iter().map(|r| wf_outbox::ActiveModel {
                id: Set(r.id),
                instance_id: Set(r.instance_id),
                destination: Set(r.destination),
                payload: Set(r.payload),
                available_at: Set(r.available_at),
                leased_until: Set(r.leased_until),
                delivered_at: Set(r.delivered_at),
                created_at: Set(r.created_at),
            });
            wf_outbox::Entity::insert_many(rows)
                .exec_without_returning(db)
                .await?;
        }
        if !self.delivered.is_empty() {
            update_outbox(db, "delivered_at", Value::from(at), self.delivered).await?;
        }
        Ok(())
    }
}

/// The whole flush on PostgreSQL, one statement. Every part runs whatever the others do; the
/// caller compares the count of updated instances with the count it expected. When it queues
/// a message that is due now, and the process has no relay or worker of its own ($25), it
/// notifies [`crate::engine::OUTBOX_CHANNEL`] (delivered at commit), which wakes the relays and
/// in-process workers of other processes at once instead of at their next poll. (A notifying
/// transaction takes a database-wide lock for its commit, so a process that consumes its own
/// messages does not notify: measured, it cost about 40% more p95 at 200 payments/s.)
const PG_FLUSH: &str = r#"
WITH i AS (
    UPDATE wf_instances t
    SET state = v.state::jsonb, status = v.status, status_reason = v.reason,
        revision = v.revision, updated_at = v.updated_at
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                $7::timestamptz[]) AS v(id, state, status, reason, revision, read_revision, updated_at)
    WHERE t.id = v.id AND t.revision = v.read_revision
    RETURNING 1
), ib AS (
    INSERT INTO wf_inbox (message_id, consumer, consumed_at)
    SELECT * FROM unnest($8::uuid[], $9::text[], $10::timestamptz[])
    RETURNING 1
), h AS (
    INSERT INTO wf_history (instance_id, seq, kind, detail, reason, recorded_at)
    SELECT x.instance_id, x.seq, x.kind, x.detail::jsonb, x.reason, x.recorded_at
    FROM unnest($11::uuid[], $12::int8[], $13::text[], $14::text[], $15::text[],
                $16::timestamptz[]) AS x(instance_id, seq, kind, detail, reason, recorded_at)
    RETURNING 1
), o AS (
    INSERT INTO wf_outbox (id, instance_id, destination, payload, available_at, created_at)
    SELECT x.id, x.instance_id, x.destination, x.payload::jsonb, x.available_at, x.created_at
    FROM unnest($17::uuid[], $18::uuid[], $19::text[], $20::text[], $21::timestamptz[],
                $22::timestamptz[]) AS x(id, instance_id, destination, payload, available_at, created_at)
    RETURNING available_at
), d AS (
    UPDATE wf_outbox SET delivered_at = $23::timestamptz WHERE id = ANY($24::uuid[])
    RETURNING 1
)
SELECT (SELECT count(*) FROM i) AS updated, (SELECT count(*) FROM ib) AS inbox,
       (SELECT count(*) FROM h) AS history, (SELECT count(*) FROM o) AS outbox,
       (SELECT count(*) FROM d) AS delivered,
       (SELECT count(*) FROM (SELECT pg_notify('wf_outbox:' || current_schema(), '')
                              WHERE $25::bool
                                AND EXISTS (SELECT 1 FROM o WHERE o.available_at <= $23::timestamptz)) n)
           AS woken
"#;

//! The RabbitMQ transport (lapin 4): topology, the outbox relay, and consumers.
//!
//! - Topology: a durable direct exchange `<prefix>`; one durable quorum queue per destination
//!   (`<prefix>.workflow.<type>`, `<prefix>.activity.<kind>`, `<prefix>.events`), bound by the
//!   destination as routing key; each dead-letters at least once (`x-dead-letter-strategy`,
//!   `x-overflow = reject-publish`) to the fanout exchange `<prefix>.dlx` and its queue
//!   `<prefix>.dead` after `x-delivery-limit` deliveries.
//! - Relay: takes due, unsent outbox rows in the order they became due, then by id (UUIDv7,
//!   so creation order), with `FOR UPDATE SKIP LOCKED` so several relays can run; publishes
//!   them persistent and mandatory with the outbox id as message id, waits for every
//!   publisher confirm, and only then marks them sent. A crash
//!   between publish and mark re-publishes; the inbox drops the repeat. Timers and retry
//!   backoff are rows not due yet: the relay is the timer poller.
//! - Consumers: manual acks, sent only after the processing transaction committed; bounded
//!   prefetch. What the broker has already sent (up to the prefetch) is processed in one
//!   transaction and acked with one frame; if that fails, each message is processed and settled
//!   on its own, and a failure nacks with requeue.
//! - Reconnection: automatic, and the handle's own (see [`Broker`]): when the broker goes away,
//!   relay and consumers reopen channels on a fresh connection. Deliveries of the old channel
//!   cannot be acked any more; the broker redelivers them and the inbox drops what was done.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::watch;
use uuid::Uuid;

use entities::wf_outbox;

use crate::engine::{Delivered, Engine, begin, now};
use crate::writes::update_outbox;

/// Deliveries of one message before the broker dead-letters it. RabbitMQ 3.x counts every
/// return, including those of a consumer that died holding the message, so the limit is far
/// above the 20 of RabbitMQ 4's default: a worker fleet in a crash loop must not park healthy
/// messages (a test kills workers ~90 times in one run). A message that fails on its own is
/// still parked after this many attempts.
const DELIVERY_LIMIT: i32 = 500;
/// Most outbox rows one relay round publishes.
const RELAY_BATCH: u64 = 500;
/// How long a message the broker did not take waits before the relay tries it again.
const REFUSED_RETRY_MS: i64 = 10_000;
/// How long the relay sleeps when nothing is due, unless a commit of this process (or, on
/// PostgreSQL, a notification from another) wakes it first. Timers and retry backoff become
/// due without a commit, so the pause is also their resolution.
const RELAY_IDLE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker cancelled the consumer")]
    Cancelled,
    #[error("no publisher confirm for message {0} in time")]
    Unconfirmed(Uuid),
    #[error("the channel did not recover in time")]
    NotRecovered,
    #[error(transparent)]
    Engine(#[from] crate::EngineError),
    #[error("storage: {0}")]
    Storage(#[from] sea_orm::DbErr),
}

/// A connection to RabbitMQ and the names of this deployment's exchange and queues.
///
/// Reconnection is the handle's own, not lapin's: lapin's automatic recovery was seen to stall
/// for good after `rabbitmqctl stop_app`/`start_app` (connections stuck `Reconnecting` or
/// `Connecting`). A channel request on a connection that is not connected opens a fresh
/// connection; channels and consumers on the old one fail and are opened again by their loops.
pub struct Broker {
    url: String,
    name: String,
    prefix: String,
    conn: tokio::sync::Mutex<(Connection, Option<std::time::Instant>)>,
}

/// Longest wait for a new connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect(url: &str, name: &str) -> Result<Connection, TransportError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties))
        .await
        .map_err(|_| TransportError::NotRecovered)?
        .map_err(TransportError::from)
}

impl Broker {
    /// Connects with automatic recovery on. `name` shows in the broker's management view.
    pub async fn connect(url: &str, prefix: &str, name: &str) -> Result<Broker, TransportError> {
        let conn = connect(url, name).await?;
        Ok(Broker {
            url: url.to_owned(),
            name: name.to_owned(),
            prefix: prefix.to_owned(),
            conn: tokio::sync::Mutex::new((conn, None)),
        })
    }

    /// A new channel, on a fresh connection if the current one is down.
    pub async fn channel(&self) -> Result<Channel, TransportError> {
        let mut guard = self.conn.lock().await;
        if !guard.0.status().connected() {
            tracing::warn!("the broker connection is down; opening a fresh one");
            let fresh = connect(&self.url, &self.name).await?;
            let stale = std::mem::replace(&mut guard.0, fresh);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    stale.close(320, "replaced".into()),
                )
                .await;
            });
        }
        guard.1 = None;
        tokio::time::timeout(CONNECT_TIMEOUT, guard.0.create_channel())
            .await
            .map_err(|_| TransportError::NotRecovered)?
            .map_err(TransportError::from)
    }

    fn exchange(&self) -> String {
        self.prefix.clone()
    }

    /// The queue of a destination.
    pub fn queue(&self, destination: &str) -> String {
        format!("{}.{}", self.prefix, destination.replace(':', "."))
    }

    /// Declares the exchange, the dead-letter exchange and queue, and a queue per destination.
    /// Declaring is idempotent; every process does it at start.
    pub async fn declare(&self, destinations: &[String]) -> Result<(), TransportError> {
        let channel = self.channel().await?;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let dlx = format!("{}.dlx", self.prefix);
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                dlx.clone().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        let dead = format!("{}.dead", self.prefix);
        channel
            .queue_declare(
                dead.clone().into(),
                QueueDeclareOptions::durable(),
                quorum(None),
            )
            .await?;
        channel
            .queue_bind(
                dead.into(),
                dlx.clone().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        for destination in destinations {
            let queue = self.queue(destination);
            channel
                .queue_declare(
                    queue.clone().into(),
                    QueueDeclareOptions::durable(),
                    quorum(Some(&dlx)),
                )
                .await?;
            channel
                .queue_bind(
                    queue.into(),
                    self.exchange().into(),
                    destination.clone().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        channel.close(200, "declared".into()).await?;
        Ok(())
    }

    /// Deletes the queues and exchanges of this prefix: for tests and for retiring a
    /// deployment, never for a running one.
    pub async fn delete(&self, destinations: &[String]) -> Result<(), TransportError> {
        let channel = self.channel().await?;
        for destination in destinations {
            channel
                .queue_delete(self.queue(destination).into(), Default::default())
                .await?;
        }
        channel
            .queue_delete(format!("{}.dead", self.prefix).into(), Default::default())
            .await?;
        channel
            .exchange_delete(format!("{}.dlx", self.prefix).into(), Default::default())
            .await?;
        channel
            .exchange_delete(self.exchange().into(), Default::default())
            .await?;
        channel.close(200, "deleted".into()).await?;
        Ok(())
    }

    pub async fn close(&self) -> Result<(), TransportError> {
        self.conn
            .lock()
            .await
            .0
            .close(200, "shutting down".into())
            .await?;
        Ok(())
    }
}

fn quorum(dead_letter_exchange: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(dlx) = dead_letter_exchange {
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.into()),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DELIVERY_LIMIT),
        );
    }
    args
}

/// Runs `count` relays (each on its own channel) until `stop` turns true.
pub async fn run_relays(
    engine: Engine,
    broker: Arc<Broker>,
    count: usize,
    stop: watch::Receiver<bool>,
) -> Result<(), TransportError> {
    engine.consumes_in_process();
    let mut relays = tokio::task::JoinSet::new();
    for _ in 0..count.max(1) {
        relays.spawn(run_relay(engine.clone(), broker.clone(), stop.clone()));
    }
    let listener = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move { engine.listen_for_messages(stop).await })
    };
    while let Some(result) = relays.join_next().await {
        result.expect("relays do not panic")?;
    }
    listener.abort();
    Ok(())
}

/// Publishes due outbox rows until `stop` turns true. A broker outage pauses it: lapin
/// reconnects, and if the channel cannot be recovered a new one is opened.
pub async fn run_relay(
    engine: Engine,
    broker: Arc<Broker>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), TransportError> {
    while !*stop.borrow() {
        let channel = match open_channel(&broker, None).await {
            Ok(channel) => channel,
            Err(err) => {
                tracing::warn!(error = %err, "relay cannot open a channel; retrying");
                pause(&mut stop, REOPEN_DELAY).await;
                continue;
            }
        };
        if let Err(err) = channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
        {
            tracing::warn!(error = %err, "relay cannot enable confirms; retrying");
            pause(&mut stop, REOPEN_DELAY).await;
            continue;
        }
        while !*stop.borrow() {
            // Listen before looking: a message committed while this round looks (and finds
            // nothing yet) wakes the relay at once instead of after the idle pause.
            let woken = engine.wake.notified();
            // Any broker call can hang while lapin reconnects: a round that takes too long is
            // abandoned (its rows stay unsent) and the channel replaced.
            let round =
                tokio::time::timeout(RELAY_ROUND_TIMEOUT, relay_once(&engine, &broker, &channel))
                    .await;
            let Ok(round) = round else {
                tracing::warn!("relay round timed out; opening a new channel");
                break;
            };
            match round {
                Ok(n) if n > 0 => continue,
                Ok(_) => {
                    tokio::select! {
                        _ = woken => {}
                        _ = pause(&mut stop, RELAY_IDLE) => {}
                    }
                }
                Err(TransportError::Broker(err)) => {
                    tracing::warn!(error = %err, "relay lost the broker; opening a new channel");
                    pause(&mut stop, REOPEN_DELAY).await;
                    break;
                }
                Err(TransportError::Unconfirmed(id)) => {
                    tracing::warn!(message = %id, "no publisher confirm; opening a new channel");
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "relay round failed; retrying");
                    pause(&mut stop, RELAY_IDLE).await;
                }
            }
        }
        let _ = channel.close(200, "relay stopped".into()).await;
    }
    Ok(())
}

/// Longest relay round before its channel is abandoned.
const RELAY_ROUND_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for an ack or nack to be written.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for a publisher confirm.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time a consumer's channel may stay down before it is abandoned.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long to wait before opening a channel again after the broker refused one.
const REOPEN_DELAY: Duration = Duration::from_millis(500);

async fn pause(stop: &mut watch::Receiver<bool>, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = stop.changed() => {}
    }
}

async fn open_channel(broker: &Broker, prefetch: Option<u16>) -> Result<Channel, TransportError> {
    let channel = broker.channel().await?;
    if let Some(prefetch) = prefetch {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
    }
    Ok(channel)
}

/// The rows a relay round publishes: due and unsent, oldest first, locked for this round and
/// skipping rows another relay holds. A row waits while an earlier unsent row of its instance
/// for the same destination exists, locked by another relay or taken in this round, so
/// messages of one instance reach each queue in order however many relays run.
async fn ready(
    txn: &sea_orm::DatabaseTransaction,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<wf_outbox::Model>, sea_orm::DbErr> {
    use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};
    let backend = txn.get_database_backend();
    let (param, lock) = match backend {
        DbBackend::Postgres => ("$1", "FOR UPDATE OF o SKIP LOCKED"),
        // SQLite's write transaction already excludes every other relay.
        _ => ("?", ""),
    };
    let sql = format!(
        "SELECT o.* FROM wf_outbox o \
         WHERE o.delivered_at IS NULL AND o.available_at <= {param} \
           AND NOT EXISTS (SELECT 1 FROM wf_outbox p \
             WHERE p.instance_id = o.instance_id AND p.destination = o.destination \
               AND p.delivered_at IS NULL \
               AND (p.available_at < o.available_at \
                 OR (p.available_at = o.available_at AND p.id < o.id))) \
         ORDER BY o.available_at, o.id LIMIT {RELAY_BATCH} {lock}"
    );
    let rows = txn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [at.into()]))
        .await?;
    rows.iter()
        .map(|row| wf_outbox::Model::from_query_result(row, ""))
        .collect()
}

/// One relay round: returns how many rows it published and marked sent.
pub async fn relay_once(
    engine: &Engine,
    broker: &Broker,
    channel: &Channel,
) -> Result<usize, TransportError> {
    let started = std::time::Instant::now();
    let txn = begin(engine.db()).await?;
    let rows = ready(&txn, now()).await?;
    if rows.is_empty() {
        txn.rollback().await?;
        return Ok(0);
    }
    let mut confirms = Vec::with_capacity(rows.len());
    for row in &rows {
        let body = serde_json::to_vec(&Delivered::from_row(row)).expect("messages serialise");
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(row.id.to_string().into())
            .with_content_type("application/json".into());
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = channel
            .basic_publish(
                broker.exchange().into(),
                row.destination.clone().into(),
                options,
                &body,
                properties,
            )
            .await?;
        confirms.push((row.id, confirm));
    }
    let mut sent = Vec::with_capacity(rows.len());
    let mut refused = Vec::new();
    for (id, confirm) in confirms {
        // A confirm can stay unanswered when the connection drops under it: give up on the
        // round (the rows stay unsent) instead of waiting forever.
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| TransportError::Unconfirmed(id))??;
        match confirmation {
            Confirmation::Ack(None) => sent.push(id),
            // Returned as unroutable (no queue for its destination yet), or refused (a full
            // queue): the row stays unsent and is tried again later; the rest go on.
            Confirmation::Ack(Some(_)) | Confirmation::Nack(_) | Confirmation::NotRequested => {
                tracing::warn!(message = %id, "the broker did not take the message; retrying later");
                refused.push(id);
            }
        }
    }
    let at = now();
    if !sent.is_empty() {
        update_outbox(&txn, "delivered_at", at.into(), sent).await?;
    }
    if !refused.is_empty() {
        let retry_at = at + chrono::Duration::milliseconds(REFUSED_RETRY_MS);
        update_outbox(&txn, "available_at", retry_at.into(), refused).await?;
    }
    txn.commit().await?;
    tracing::trace!(rows = rows.len(), elapsed = ?started.elapsed(), "relay round");
    Ok(rows.len())
}

/// Consumes every destination of the engine with `per_queue` consumers each, until `stop`.
/// A consumer whose channel cannot be recovered opens a new one and consumes again.
pub async fn run_consumers(
    engine: Engine,
    broker: Arc<Broker>,
    per_queue: usize,
    prefetch: u16,
    stop: watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut tasks = tokio::task::JoinSet::new();
    for destination in engine.destinations() {
        for n in 0..per_queue {
            let (engine, broker, mut stop, destination) = (
                engine.clone(),
                broker.clone(),
                stop.clone(),
                destination.clone(),
            );
            tasks.spawn(async move {
                while !*stop.borrow() {
                    if let Err(err) = consume(&engine, &broker, &destination, n, prefetch, &mut stop).await {
                        tracing::warn!(error = %err, %destination, "consumer failed; consuming again");
                        pause(&mut stop, REOPEN_DELAY).await;
                    }
                }
            });
        }
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn consume(
    engine: &Engine,
    broker: &Broker,
    destination: &str,
    n: usize,
    prefetch: u16,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let channel = open_channel(broker, Some(prefetch)).await?;
    let tag = format!(
        "{}-{n}-{}",
        destination.replace(':', "."),
        Uuid::new_v4().simple()
    );
    let mut consumer = channel
        .basic_consume(
            broker.queue(destination).into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let result = deliveries(
        engine,
        &channel,
        &mut consumer,
        destination,
        usize::from(prefetch),
        stop,
    )
    .await;
    let _ = channel.close(200, "consumer stopped".into()).await;
    result
}

async fn deliveries(
    engine: &Engine,
    channel: &Channel,
    consumer: &mut lapin::Consumer,
    destination: &str,
    max_batch: usize,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), TransportError> {
    let mut health = tokio::time::interval(Duration::from_secs(2));
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        let next = tokio::select! {
            next = consumer.next() => next,
            _ = stop.changed() => return Ok(()),
            _ = health.tick() => {
                // A consumer whose channel stays down gets no error from lapin, only silence.
                if channel.status().connected() {
                    down_since = None;
                } else if down_since.get_or_insert_with(std::time::Instant::now).elapsed() > RECOVERY_TIMEOUT {
                    return Err(TransportError::NotRecovered);
                }
                continue;
            }
        };
        let Some(delivery) = next else {
            return Err(TransportError::Cancelled);
        };
        let mut batch = vec![delivery.inspect_err(|err| {
            tracing::warn!(error = %err, %destination, "consumer lost the broker");
        })?];
        // What the broker has sent already (up to the prefetch) joins this transaction.
        while batch.len() < max_batch {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => batch.push(delivery?),
                Some(None) | None => break,
            }
        }
        settle_batch(engine, destination, batch).await?;
    }
}

/// Processes deliveries in one transaction and acks them with one frame. If the batch fails,
/// each message is processed and settled on its own, so one bad message does not hold up the
/// others. An unreadable message is dead-lettered.
async fn settle_batch(
    engine: &Engine,
    destination: &str,
    batch: Vec<lapin::message::Delivery>,
) -> Result<(), TransportError> {
    let mut messages = Vec::with_capacity(batch.len());
    let mut deliveries = Vec::with_capacity(batch.len());
    for delivery in batch {
        match serde_json::from_slice::<Delivered>(&delivery.data) {
            Ok(message) => {
                messages.push(message);
                deliveries.push(delivery);
            }
            Err(err) => {
                tracing::error!(error = %err, %destination, "unreadable message: dead-lettered");
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
            }
        }
    }
    let Some(last) = deliveries.last() else {
        return Ok(());
    };
    let activities = destination.starts_with("activity:");
    // Activities run once per delivery, even when their results are then reported one by one.
    let results = if activities {
        match engine.execute_all(&messages).await {
            Ok(results) => Some(results),
            Err(err) => return settle_each(engine, &messages, &deliveries, None, err).await,
        }
    } else {
        None
    };
    tracing::trace!(%destination, messages = messages.len(), "batch");
    let outcome = match &results {
        Some(results) => engine.finish_activities(results.clone()).await,
        None => engine.handle_deliveries(&messages).await,
    };
    match outcome {
        // Acks every delivery of this channel up to the last one: all of them are this batch's
        // or were settled before.
        Ok(()) => settle(last, Ok(()), true).await,
        Err(err) => settle_each(engine, &messages, &deliveries, results, err).await,
    }
}

async fn settle_each(
    engine: &Engine,
    messages: &[Delivered],
    deliveries: &[lapin::message::Delivery],
    results: Option<Vec<(Delivered, Result<serde_json::Value, crate::ActivityError>)>>,
    err: crate::EngineError,
) -> Result<(), TransportError> {
    if messages.len() > 1 {
        tracing::debug!(error = %err, "batch failed; processing its messages one by one");
    }
    let mut results = results.map(Vec::into_iter);
    for (message, delivery) in messages.iter().zip(deliveries) {
        let outcome = match results.as_mut().and_then(Iterator::next) {
            Some((task, result)) => engine.finish_activity(&task, result).await,
            None if message.destination.starts_with("activity:") => {
                match engine.execute(message).await {
                    Ok(result) => engine.finish_activity(message, result).await,
                    Err(err) => Err(err),
                }
            }
            None => engine.handle_delivery(message).await,
        };
        if let Err(err) = &outcome {
            tracing::debug!(error = %err, message = %message.id, "processing failed; requeued");
        }
        settle(delivery, outcome, false).await?;
    }
    Ok(())
}

/// Acks after a commit, or nacks with requeue. An ack or nack on a channel recovered since the
/// delivery is refused: the broker redelivers and the inbox drops what was done. A hung ack
/// means a dead channel: it is given up, and the broker redelivers what it held.
async fn settle(
    delivery: &lapin::message::Delivery,
    outcome: Result<(), crate::EngineError>,
    multiple: bool,
) -> Result<(), TransportError> {
    let settled = match outcome {
        Ok(()) => {
            let ack = delivery.ack(BasicAckOptions { multiple });
            tokio::time::timeout(ACK_TIMEOUT, ack).await
        }
        Err(_) => {
            let requeue = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            tokio::time::timeout(ACK_TIMEOUT, delivery.nack(requeue)).await
        }
    };
    settled.map_err(|_| TransportError::NotRecovered)??;
    Ok(())
}

//! The RabbitMQ transport (lapin 4): topology, the outbox relay, and consumers.
//!
//! - Topology: a durable direct exchange `<prefix>`; one durable quorum queue per destination
//!   (`<prefix>.workflow.<type>`, `<prefix>.activity.<kind>`, `<prefix>.events`), bound by the
//!   destination as routing key; each dead-letters at least once (`x-dead-letter-strategy`,
//!   `x-overflow = reject-publish`) to the fanout exchange `<prefix>.dlx` and its queue
//!   `<prefix>.dead` after `x-delivery-limit` deliveries.
//! - Relay: takes due, unsent outbox rows in creation order (`FOR UPDATE SKIP LOCKED`, so
//!   several relays can run), publishes them persistent and mandatory with the outbox id as
//!   message id, waits for every publisher confirm, and only then marks them sent. A crash
//!   between publish and mark re-publishes; the inbox drops the repeat. Timers and retry
//!   backoff are rows not due yet: the relay is the timer poller.
//! - Consumers: manual acks, sent only after the processing transaction committed; bounded
//!   prefetch; a failure nacks with requeue.
//! - Reconnection: automatic, and the handle's own (see [`Broker`]): when the broker goes away,
//!   relay and consumers reopen channels on a fresh connection. Deliveries of the old channel
//!   cannot be acked any more; the broker redelivers them and the inbox drops what was done.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::watch;
use uuid::Uuid;

use entities::wf_outbox;

use crate::engine::{Delivered, Engine, begin, now};

/// Deliveries of one message before the broker dead-letters it.
const DELIVERY_LIMIT: i32 = 20;
/// Most outbox rows one relay round publishes.
const RELAY_BATCH: u64 = 500;
/// How long the relay sleeps when nothing is due.
const RELAY_IDLE: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused message {0}")]
    Refused(Uuid),
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
                Ok(_) => pause(&mut stop, RELAY_IDLE).await,
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

/// One relay round: returns how many rows it published and marked sent.
pub async fn relay_once(
    engine: &Engine,
    broker: &Broker,
    channel: &Channel,
) -> Result<usize, TransportError> {
    let txn = begin(engine.db()).await?;
    let rows = wf_outbox::Entity::find()
        .filter(wf_outbox::Column::DeliveredAt.is_null())
        .filter(wf_outbox::Column::AvailableAt.lte(now()))
        .order_by_asc(wf_outbox::Column::CreatedAt)
        .order_by_asc(wf_outbox::Column::Id)
        .limit(RELAY_BATCH)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .all(&txn)
        .await?;
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
    for (id, confirm) in confirms {
        // A confirm can stay unanswered when the connection drops under it: give up on the
        // round (the rows stay unsent) instead of waiting forever.
        let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
            .await
            .map_err(|_| TransportError::Unconfirmed(id))??;
        match confirmation {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) | Confirmation::Nack(_) | Confirmation::NotRequested => {
                txn.rollback().await?;
                return Err(TransportError::Refused(id));
            }
        }
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    wf_outbox::Entity::update_many()
        .col_expr(wf_outbox::Column::DeliveredAt, Expr::value(now()))
        .filter(wf_outbox::Column::Id.is_in(ids))
        .exec(&txn)
        .await?;
    txn.commit().await?;
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
    let result = deliveries(engine, &channel, &mut consumer, destination, stop).await;
    let _ = channel.close(200, "consumer stopped".into()).await;
    result
}

async fn deliveries(
    engine: &Engine,
    channel: &Channel,
    consumer: &mut lapin::Consumer,
    destination: &str,
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
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(err) => {
                tracing::warn!(error = %err, %destination, "consumer lost the broker");
                return Err(err.into());
            }
        };
        let message: Delivered = match serde_json::from_slice(&delivery.data) {
            Ok(message) => message,
            Err(err) => {
                tracing::error!(error = %err, %destination, "unreadable message: dead-lettered");
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                continue;
            }
        };
        let outcome = if destination.starts_with("activity:") {
            match engine.execute(&message).await {
                Ok(result) => engine.finish_activity(&message, result).await,
                Err(err) => Err(err),
            }
        } else {
            engine.handle_delivery(&message).await
        };
        // An ack or nack on a channel recovered since the delivery is refused (Ok(false)):
        // the broker redelivers and the inbox drops what was done.
        let settled = match outcome {
            Ok(()) => {
                tokio::time::timeout(ACK_TIMEOUT, delivery.ack(BasicAckOptions::default())).await
            }
            Err(err) => {
                tracing::debug!(error = %err, message = %message.id, "processing failed; requeued");
                let requeue = BasicNackOptions {
                    requeue: true,
                    multiple: false,
                };
                tokio::time::timeout(ACK_TIMEOUT, delivery.nack(requeue)).await
            }
        };
        // A hung ack means a dead channel: give it up; the broker redelivers what it held.
        settled.map_err(|_| TransportError::NotRecovered)??;
    }
}

//! Queue topology, declared identically by publisher and consumer so either may start first.
//!
//! ```text
//! {prefix}.events (direct exchange) --"event"--> {prefix}.events queue
//!        dead letters: {prefix}.dlx (fanout) --> {prefix}.events.dead
//! ```
//! Everything is durable and messages are persistent: a broker restart loses nothing confirmed.

use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
};
use std::time::Duration;

/// Names derived from one prefix, so tests (and several installations) can share a broker.
#[derive(Debug, Clone)]
pub struct Topology {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
    pub dead_exchange: String,
    pub dead_queue: String,
}

impl Topology {
    pub fn new(prefix: &str) -> Self {
        Self {
            exchange: format!("{prefix}.events"),
            queue: format!("{prefix}.events"),
            routing_key: "event".to_string(),
            dead_exchange: format!("{prefix}.dlx"),
            dead_queue: format!("{prefix}.events.dead"),
        }
    }

    /// Declares exchanges, queues and bindings (idempotent).
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange.as_str().into(),
                ExchangeKind::Fanout,
                durable,
                FieldTable::default(),
            )
            .await?;
        let queue_opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(
                self.dead_queue.as_str().into(),
                queue_opts,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                self.dead_queue.as_str().into(),
                self.dead_exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut args = FieldTable::default();
        args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(self.dead_exchange.as_str().into()),
        );
        channel
            .queue_declare(self.queue.as_str().into(), queue_opts, args)
            .await?;
        channel
            .queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

/// How long opening a connection (TCP, AMQP handshake, vhost) may take. Without it, one connect
/// attempt that never resolves — seen once in a test while a restarted node was booting, with no
/// socket left open — would stall a reconnect loop for good.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection named after the binary (visible in the RabbitMQ management UI); gives up
/// with a `TimedOut` I/O error after [`CONNECT_TIMEOUT`].
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let connect = Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(name.into()),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no AMQP connection within {CONNECT_TIMEOUT:?}"),
        )
        .into()),
    }
}

/// Follows the broker's `connection.blocked` and `connection.unblocked` on `conn`: the value is the
/// broker's reason while it blocks the connection (a memory or disk alarm), `None` otherwise. A
/// blocked connection's socket is not read: its publishes wait unconfirmed, and so does every
/// frame sent after them, acks included. The broker blocks a connection when it next publishes
/// during an alarm, so a connection that only consumes is never blocked. The watch ends with the
/// connection.
pub fn watch_blocked(conn: &Connection) -> tokio::sync::watch::Receiver<Option<String>> {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::watch::channel(None);
    let mut events = conn.events_listener();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let now = match event {
                lapin::Event::ConnectionBlocked(reason) => Some(reason.to_string()),
                lapin::Event::ConnectionUnblocked => None,
                _ => continue,
            };
            if tx.send(now).is_err() {
                return;
            }
        }
    });
    rx
}

/// Messages waiting in the queue and consumers attached, via a passive declare.
pub async fn queue_depth(channel: &Channel, queue: &str) -> lapin::Result<(u32, u32)> {
    let q = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((q.message_count(), q.consumer_count()))
}

//! The dead-letter exchange, reached through a connection of the worker's own.
//!
//! A broker in a memory or disk alarm blocks every connection that publishes, and stops reading
//! its socket: acks sent on it after the publish wait too. Were dead letters published on the
//! consuming connection, one bad event during an alarm would hold back every ack; a worker that
//! cannot ack cannot drain the backlog that may be the alarm's cause, so the alarm would never
//! lift. On a connection of their own, a blocked dead letter holds back only its own batch, and
//! only until [`DeadLetters::publish`] gives up on it: the consumer then rejects the messages
//! that carried the bad events, and the broker dead-letters those whole by itself, which needs
//! no publish (see `consumer::dead_letter_batch`).

use faultline_shared::queue::{self, Topology};
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use std::time::Duration;
use tokio::sync::watch;

/// How long a batch waits for the broker to confirm its dead letters before they are sent the
/// other way. A confirm normally takes milliseconds; a blocked connection is noticed at once
/// (`connection.blocked`), so this bounds only the cases the broker does not announce.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection and a channel in confirm mode for dead letters, and whether the broker blocks it.
pub struct DeadLetters {
    conn: Connection,
    channel: Channel,
    blocked: watch::Receiver<Option<String>>,
    topology: Topology,
}

impl DeadLetters {
    pub async fn open(amqp_url: &str, topology: &Topology) -> lapin::Result<Self> {
        let conn = queue::connect(amqp_url, "faultline-worker-dead-letters").await?;
        let blocked = queue::watch_blocked(&conn);
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(DeadLetters {
            conn,
            channel,
            blocked,
            topology: topology.clone(),
        })
    }

    /// Closes the connection; a blocked one cannot close cleanly, so this gives up after 2 s.
    pub async fn close(&self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(2), self.conn.close(200, "bye".into())).await;
    }

    /// Publishes each `(body, headers)` as a persistent message to the dead-letter exchange and
    /// waits until the broker confirmed them all. `Err` says why they are not safe: the broker
    /// blocks this connection (nothing is published while it does), refused one, the connection
    /// failed, or no confirm came within [`CONFIRM_TIMEOUT`]. Letters already written to a
    /// blocked connection are still delivered once the alarm lifts, so after an `Err` some may
    /// arrive twice: alone, and inside the message rejected instead.
    pub async fn publish(&self, letters: Vec<(Vec<u8>, FieldTable)>) -> Result<(), String> {
        // lapin writes nothing on a connection the broker blocks, so a publish would wait there
        // (the broker announces the block to a connection opened during an alarm before it
        // publishes anything); the watch may not have heard of it yet, the status has.
        if self.conn.status().blocked() {
            return Err(self.blocked_reason());
        }
        let all_confirmed = async {
            let mut confirms = Vec::with_capacity(letters.len());
            for (body, headers) in letters {
                let confirm = self
                    .channel
                    .basic_publish(
                        self.topology.dead_exchange.as_str().into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("application/json".into())
                            .with_headers(headers),
                    )
                    .await
                    .map_err(|e| format!("publishing a dead letter: {e}"))?;
                confirms.push(confirm);
            }
            for confirm in confirms {
                match confirm.await {
                    Ok(c) if c.is_ack() => {}
                    Ok(_) => return Err("the broker refused a dead letter".to_string()),
                    Err(e) => return Err(format!("no confirm for a dead letter: {e}")),
                }
            }
            Ok(())
        };
        let mut blocked = self.blocked.clone();
        tokio::select! {
            done = all_confirmed => done,
            now = blocked.wait_for(Option::is_some) => Err(match now {
                Ok(_) => self.blocked_reason(),
                Err(_) => "the dead-letter connection closed".to_string(),
            }),
            _ = tokio::time::sleep(CONFIRM_TIMEOUT) => {
                Err(format!("no confirm within {CONFIRM_TIMEOUT:?}"))
            }
        }
    }

    fn blocked_reason(&self) -> String {
        let reason = self.blocked.borrow().clone().unwrap_or_default();
        format!("the broker blocks publishing: {reason}")
    }
}

//! The group-commit publisher on a RabbitMQ node of the test's own, which the test freezes
//! (SIGSTOP) so that no confirm can come back: what the publisher sends meanwhile shows how it
//! packs events into messages. The shared broker is never touched.

use faultline_shared::{
    queue::{self, Topology},
    testkit::{self, OwnRabbit},
};
use ingest::publisher::{PublishError, Publisher, PublisherConfig};
use std::time::Duration;
use tokio::task::JoinHandle;

fn start(rabbit: &OwnRabbit, max_events: usize) -> (Publisher, Topology) {
    start_lingering(rabbit, max_events, Duration::ZERO)
}

fn start_lingering(
    rabbit: &OwnRabbit,
    max_events: usize,
    linger: Duration,
) -> (Publisher, Topology) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let topology = Topology::new(&format!("test_{}", testkit::unique_tag()));
    let publisher = Publisher::start(PublisherConfig {
        amqp_url: rabbit.url(),
        topology: topology.clone(),
        max_in_flight: 16,
        max_events,
        confirm_timeout: Duration::from_secs(30),
        linger,
    });
    (publisher, topology)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One single-event publish, as one `POST /api/errors` makes.
fn publish(publisher: &Publisher, n: usize) -> JoinHandle<Result<(), PublishError>> {
    let publisher = publisher.clone();
    tokio::spawn(async move {
        publisher
            .publish(vec![format!("{{\"n\":{n}}}").into_bytes()])
            .await
    })
}

/// A connected publisher whose broker is then frozen with one single-event message sent to it
/// and unconfirmed (the request behind it is returned).
async fn frozen_with_one_unconfirmed(
    rabbit: &OwnRabbit,
    max_events: usize,
) -> (Publisher, Topology, JoinHandle<Result<(), PublishError>>) {
    let (publisher, topology) = start(rabbit, max_events);
    until("the publisher to connect", || publisher.is_connected()).await;
    rabbit.pause();
    let first = publish(&publisher, 0);
    until("the first message", || publisher.messages_sent() == 1).await;
    (publisher, topology, first)
}

/// A connected publisher with a linger whose first single-event message is already confirmed, so
/// the next message that is not full lingers.
async fn lingering_after_one_confirmed(
    rabbit: &OwnRabbit,
    max_events: usize,
    linger: Duration,
) -> (Publisher, Topology) {
    let (publisher, topology) = start_lingering(rabbit, max_events, linger);
    until("the publisher to connect", || publisher.is_connected()).await;
    publish(&publisher, 0)
        .await
        .unwrap()
        .expect("the first event is confirmed");
    assert_eq!(publisher.messages_sent(), 1);
    (publisher, topology)
}

async fn messages_in_queue(rabbit: &OwnRabbit, topology: &Topology) -> u32 {
    let conn = queue::connect(&rabbit.url(), "faultline-test")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let (messages, _) = queue::queue_depth(&channel, &topology.queue).await.unwrap();
    let _ = conn.close(200, "done".into()).await;
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_while_a_message_awaits_its_confirm_share_the_next_message() {
    let rabbit = OwnRabbit::new().await;
    let slow_before = waits_over_250ms();
    let (publisher, topology, first) = frozen_with_one_unconfirmed(&rabbit, 500).await;
    let rest: Vec<_> = (1..=50).map(|n| publish(&publisher, n)).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        publisher.messages_sent(),
        1,
        "the next requests wait for the first message's confirm instead of going out one by one"
    );

    rabbit.resume();
    first.await.unwrap().expect("the first event is confirmed");
    for request in rest {
        request.await.unwrap().expect("every event is confirmed");
    }
    assert_eq!(publisher.messages_sent(), 2, "the 50 went out together");
    assert_eq!(messages_in_queue(&rabbit, &topology).await, 2);
    // Their wait for the frozen confirm is `ingest_publish_wait_seconds`. Other tests of this
    // process (`cargo test`) only add waits, so at least these 50 are over 250 ms.
    assert!(
        waits_over_250ms() - slow_before >= 50,
        "the 50 requests' wait behind the unconfirmed message is measured"
    );
}

/// Publishes recorded so far whose events waited over 250 ms for their message to go out.
fn waits_over_250ms() -> u64 {
    let text = faultline_shared::telemetry::metrics_handle().render();
    let bucket = |le: &str| -> u64 {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "ingest_publish_wait_seconds_bucket{{le=\"{le}\"}} "
                ))
            })
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    bucket("+Inf") - bucket("0.25")
}

/// The linger: requests arriving after the last message was confirmed, but within the linger
/// after it went out, still share the next message, so a steady load reaches the broker as fewer,
/// fuller messages (its CPU goes per message). The broker is not frozen here: every confirm comes
/// at once, and without a linger each of these requests would go out alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_within_the_linger_of_the_last_message_share_the_next_one() {
    let rabbit = OwnRabbit::new().await;
    let (publisher, topology) =
        lingering_after_one_confirmed(&rabbit, 500, Duration::from_secs(2)).await;
    let mut rest = Vec::new();
    for n in 1..=5 {
        rest.push(publish(&publisher, n));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for request in rest {
        request.await.unwrap().expect("every event is confirmed");
    }
    assert_eq!(publisher.messages_sent(), 2, "the five went out together");
    assert_eq!(messages_in_queue(&rabbit, &topology).await, 2);
}

/// A client that sends its next request as soon as the last is answered (one connection, one
/// request at a time) is not held back by the linger: its connection was the only one in the
/// previous message and is back, so waiting could only delay it. With a one-hour linger, every
/// request is still confirmed within the 30 s confirm timeout, each in a message of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_one_request_at_a_time_does_not_wait_out_the_linger() {
    let rabbit = OwnRabbit::new().await;
    let (publisher, topology) = start_lingering(&rabbit, 500, Duration::from_secs(3600));
    until("the publisher to connect", || publisher.is_connected()).await;
    let client: std::net::SocketAddr = "192.0.2.7:50123".parse().unwrap();
    for n in 0..5 {
        publisher
            .publish_from(Some(client), vec![format!("{{\"n\":{n}}}").into_bytes()])
            .await
            .expect("confirmed without waiting out the linger");
    }
    assert_eq!(publisher.messages_sent(), 5);
    assert_eq!(messages_in_queue(&rabbit, &topology).await, 5);
}

/// A message that fills up does not wait out the linger: with a linger far longer than the
/// confirm timeout, the requests that fill one are still confirmed (they would time out if it
/// waited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_message_does_not_wait_out_the_linger() {
    let rabbit = OwnRabbit::new().await;
    let (publisher, topology) =
        lingering_after_one_confirmed(&rabbit, 3, Duration::from_secs(3600)).await;
    let rest: Vec<_> = (1..=3).map(|n| publish(&publisher, n)).collect();
    for request in rest {
        request
            .await
            .unwrap()
            .expect("the full message is confirmed");
    }
    assert_eq!(publisher.messages_sent(), 2);
    assert_eq!(messages_in_queue(&rabbit, &topology).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_messages_go_out_without_waiting_for_the_confirm_of_an_earlier_one() {
    let rabbit = OwnRabbit::new().await;
    let (publisher, topology, first) = frozen_with_one_unconfirmed(&rabbit, 10).await;
    let rest: Vec<_> = (1..=30).map(|n| publish(&publisher, n)).collect();
    // Three full messages of 10 events, sent while the first is still unconfirmed: a slow broker
    // does not cap throughput at one message per round trip.
    until("three full messages besides the first", || {
        publisher.messages_sent() >= 4
    })
    .await;

    rabbit.resume();
    first.await.unwrap().expect("the first event is confirmed");
    for request in rest {
        request.await.unwrap().expect("every event is confirmed");
    }
    assert_eq!(
        publisher.messages_sent(),
        4,
        "the 31 events went out as 1 + 3 full messages"
    );
    assert_eq!(messages_in_queue(&rabbit, &topology).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_broker_dies_under_an_unconfirmed_message_the_waiting_requests_fail_and_publishing_resumes_once_it_is_back()
 {
    let mut rabbit = OwnRabbit::new().await;
    let (publisher, _, first) = frozen_with_one_unconfirmed(&rabbit, 500).await;
    let waiting = publish(&publisher, 1);
    rabbit.kill().await;
    // Neither is confirmed: both requests would answer 503, never 202.
    assert!(first.await.unwrap().is_err());
    assert!(waiting.await.unwrap().is_err());

    // Same node, same data: the publisher reconnects by itself, and its one slot for a partly
    // filled message was given back (a leaked slot would hold every later request until timeout).
    rabbit.start().await;
    let sent_before_restart = publisher.messages_sent();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match publish(&publisher, 2).await.unwrap() {
            Ok(()) => break,
            // Refused while reconnecting, as a client would be told with a 503: it retries.
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still refused 60 s after the broker came back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let next = publish(&publisher, 3);
    next.await.unwrap().expect("publishing goes on normally");
    assert_eq!(publisher.messages_sent() - sent_before_restart, 2);
}

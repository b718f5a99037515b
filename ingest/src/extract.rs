//! Request-body extraction that answers with our error body: 415 for a non-JSON content type,
//! 413 over the size limit, 408 for a body that does not arrive in time, 400 with the parser's
//! position for malformed JSON.

use crate::{AppState, error::ApiError};
use axum::{
    extract::{FromRequest, Request},
    http::header,
};
use http_body_util::BodyExt;
use serde_json::Value;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bounds the bytes of event bodies in hand at once, from reading a body until its events are
/// confirmed by the broker. A body in processing costs a few times its size (the parsed tree, the
/// serialised events, their share of a broker message), so without a bound memory grows with the
/// number of clients sending batches at once: 256 connections posting 900-event batches took
/// ingest to 1 GB (benches/RESULTS.md, 2026-12-01). A request reserves its declared size before
/// its body is read, so bodies beyond the budget wait in the kernel's socket buffers rather than
/// in ingest. A body larger than the whole budget waits for all of it, so it still gets through
/// alone. Waiting is first come, first served.
///
/// A body keeps that reservation only while it arrives promptly: a client that declares large
/// bodies and sends them slowly (a phone on a poor link, or a hostile one with a browser SDK's
/// public key) must not hold room that others wait for. A body that arrives slower than
/// [`MIN_ARRIVAL_RATE`], or is still arriving after [`HOLD_WHILE_ARRIVING`], gives its room back,
/// goes on arriving outside the budget, and reserves its size again once it is complete.
#[derive(Clone)]
pub struct BodyBudget {
    permits: Arc<Semaphore>,
    /// The budget in KiB (one permit each), so a whole body fits `acquire_many`'s `u32`.
    capacity_kib: u32,
}

/// A body's share of the [`BodyBudget`], given back when dropped.
pub struct BodyPermit {
    _held: Option<OwnedSemaphorePermit>,
}

impl BodyPermit {
    /// A permit that holds nothing: for bodies outside the budget.
    fn none() -> Self {
        Self { _held: None }
    }
}

impl BodyBudget {
    /// A budget of `bytes`, raised to `max_body_bytes` so that the largest accepted body fits.
    pub fn new(bytes: usize, max_body_bytes: usize) -> Self {
        let capacity_kib = bytes
            .max(max_body_bytes)
            .div_ceil(1024)
            .clamp(1, u32::MAX as usize) as u32;
        Self {
            permits: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
        }
    }

    /// Waits until `bytes` (at least 1 KiB, at most the whole budget) are free and takes them.
    pub async fn reserve(&self, bytes: usize) -> BodyPermit {
        let kib = bytes.div_ceil(1024).clamp(1, self.capacity_kib as usize) as u32;
        if let Ok(permit) = self.permits.clone().try_acquire_many_owned(kib) {
            return BodyPermit {
                _held: Some(permit),
            };
        }
        metrics::counter!("ingest_body_budget_waits_total").increment(1);
        // The semaphore is never closed, so this only fails if that changes; a request then goes
        // unbounded rather than failing.
        BodyPermit {
            _held: self.permits.clone().acquire_many_owned(kib).await.ok(),
        }
    }

    /// Bytes of the budget not held by any request.
    pub fn available_bytes(&self) -> usize {
        self.permits.available_permits() * 1024
    }
}

/// How long a body may hold the room it reserved while it is still arriving. A body that a client
/// on a reasonable link sends arrives well within it (1 MiB takes ~0.1 s at 100 Mbit/s).
pub const HOLD_WHILE_ARRIVING: Duration = Duration::from_millis(250);

/// The slowest a body may arrive and keep its room, in bytes a second, checked every
/// [`ARRIVAL_CHECK`] from the reservation on (a body must have arrived, or have `rate × elapsed`
/// bytes of it, at each check). A client on a reasonable link sends far faster, and a body already
/// in the kernel's buffers is read at once whenever ingest gets to it, so a busy ingest does not
/// make bodies look slow (the storm of 900-event batches in benches/RESULTS.md). What it sets is
/// what holding room costs an abuser: bandwidth, 2 MiB/s for each MiB held (16 MiB/s to keep the
/// default 8 MiB full), on top of the 32 new requests a second that [`HOLD_WHILE_ARRIVING`] asks;
/// with the hold alone, trickling a few bytes was enough.
pub const MIN_ARRIVAL_RATE: usize = 2 * 1024 * 1024;

/// How often a body still arriving is checked against [`MIN_ARRIVAL_RATE`]. Most bodies are
/// complete before the first check, so they never start the timer again.
pub const ARRIVAL_CHECK: Duration = Duration::from_millis(50);

/// Reads a body under `budget`: reserves `expected` bytes (the declared length, or the limit when
/// none is declared), reads, and returns the body with its share. A body arriving slower than
/// [`MIN_ARRIVAL_RATE`], or still arriving after [`HOLD_WHILE_ARRIVING`], gives the share back and
/// reserves its actual size once complete.
pub async fn read_body_within(
    budget: &BodyBudget,
    body: axum::body::Body,
    expected: usize,
    limit: usize,
    timeout: Duration,
) -> Result<(bytes::Bytes, BodyPermit), ApiError> {
    let permit = budget.reserve(expected).await;
    let arrived = Arc::new(AtomicUsize::new(0));
    let counted = arrived.clone();
    let body = axum::body::Body::new(body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counted.fetch_add(data.len(), Ordering::Relaxed);
        }
        frame
    }));
    let read = read_body(body, limit, timeout);
    tokio::pin!(read);
    let mut held = Duration::ZERO;
    while held < HOLD_WHILE_ARRIVING {
        // `timeout` polls the read before its timer, so whatever has reached the socket is
        // counted before the check.
        if let Ok(bytes) = tokio::time::timeout(ARRIVAL_CHECK, &mut read).await {
            return Ok((bytes?, permit));
        }
        held += ARRIVAL_CHECK;
        let due = (MIN_ARRIVAL_RATE as f64 * held.as_secs_f64()) as usize;
        if arrived.load(Ordering::Relaxed) < due.min(expected) {
            break;
        }
    }
    drop(permit);
    metrics::counter!("ingest_body_budget_slow_bodies_total").increment(1);
    let bytes = read.await?;
    let permit = budget.reserve(bytes.len()).await;
    Ok((bytes, permit))
}

/// Reads a whole body of at most `limit` bytes within `timeout` (counted from the first read, not
/// per chunk, so a body that trickles one byte at a time cannot hold the request open for long).
/// Every body ingest reads goes through here.
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::RequestTimeout {
            timeout_ms: timeout.as_millis() as u64,
        }),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(ApiError::PayloadTooLarge { limit }),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "Request body unreadable.");
            Err(ApiError::UnreadableBody)
        }
    }
}

/// The body's declared `Content-Length`, if any; 413 at once when it is over `limit`, so a body
/// that cannot be accepted is refused before it is read (or waits for room in the budget).
pub fn declared_length(
    headers: &axum::http::HeaderMap,
    limit: usize,
) -> Result<Option<usize>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match declared {
        Some(n) if n > limit => Err(ApiError::PayloadTooLarge { limit }),
        _ => Ok(declared),
    }
}

/// Parses a JSON body. serde_json refuses nesting deeper than 128 levels, so a hostile body of
/// 100,000 nested arrays is a 400, not a stack overflow.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::MalformedJson(e.to_string()))
}

/// Whether a body error is the size limit (rather than a broken connection or framing).
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// A JSON body parsed to a `Value`; handlers validate its shape field by field so that every bad
/// field is reported, not only the first one serde meets.
pub struct JsonBody(pub Value);

fn is_json_content_type(req: &Request) -> bool {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(ct) = ct.to_str() else { return false };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// Checks the content type and the declared length, then reads and parses the body.
async fn read_json(
    req: Request,
    state: &AppState,
    budget: Option<&BodyBudget>,
) -> Result<(Value, BodyPermit), ApiError> {
    if !is_json_content_type(&req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let limit = state.settings.max_body_bytes;
    let declared = declared_length(req.headers(), limit)?;
    let timeout = state.settings.http.body_timeout;
    let (bytes, permit) = match budget {
        Some(budget) => {
            let expected = declared.unwrap_or(limit);
            read_body_within(budget, req.into_body(), expected, limit, timeout).await?
        }
        None => (
            read_body(req.into_body(), limit, timeout).await?,
            BodyPermit::none(),
        ),
    };
    Ok((parse_json(&bytes)?, permit))
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(JsonBody(read_json(req, state, None).await?.0))
    }
}

/// An event body (`POST /api/errors`, `/api/errors/batch`): a [`JsonBody`] read under the
/// [`BodyBudget`] ([`read_body_within`]) that holds its share for as long as the handler keeps
/// `permit`, which should be until its events are confirmed.
pub struct EventBody {
    pub json: Value,
    pub permit: BodyPermit,
}

impl FromRequest<AppState> for EventBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (json, permit) = read_json(req, state, Some(&state.body_budget)).await?;
        Ok(EventBody { json, permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_never_smaller_than_the_largest_body() {
        assert_eq!(
            BodyBudget::new(10_000, 1024 * 1024).available_bytes(),
            1024 * 1024
        );
        assert_eq!(
            BodyBudget::new(8 << 20, 1024 * 1024).available_bytes(),
            8 << 20
        );
    }

    #[tokio::test]
    async fn bodies_take_their_size_in_kib_and_give_it_back_when_dropped() {
        let budget = BodyBudget::new(64 * 1024, 1024);
        let a = budget.reserve(1).await;
        let b = budget.reserve(10 * 1024 + 1).await;
        assert_eq!(budget.available_bytes(), (64 - 1 - 11) * 1024);
        drop(a);
        drop(b);
        assert_eq!(budget.available_bytes(), 64 * 1024);
    }

    /// Reserves `bytes` of `budget` in a task of its own.
    fn spawn_reserve(budget: &BodyBudget, bytes: usize) -> tokio::task::JoinHandle<BodyPermit> {
        let budget = budget.clone();
        tokio::spawn(async move { budget.reserve(bytes).await })
    }

    #[tokio::test]
    async fn a_body_waits_for_room_and_gets_it_when_another_finishes() {
        let budget = BodyBudget::new(64 * 1024, 1024);
        let first = budget.reserve(40 * 1024).await;
        let waiting = spawn_reserve(&budget, 40 * 1024);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "admitted over the budget");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("admitted once the first body is done")
            .expect("task");
        assert_eq!(budget.available_bytes(), 24 * 1024);
        drop(second);
    }

    /// A body whose chunks are sent through the returned sender; dropping it ends the body.
    fn streamed_body() -> (
        tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
        axum::body::Body,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        (tx, axum::body::Body::from_stream(stream))
    }

    /// Reads `body` under `budget` in a task of its own, declaring `expected` bytes (the limit is
    /// 64 KiB, or `expected` when larger).
    fn spawn_read(
        budget: &BodyBudget,
        body: axum::body::Body,
        expected: usize,
    ) -> tokio::task::JoinHandle<Result<(bytes::Bytes, BodyPermit), ApiError>> {
        let budget = budget.clone();
        tokio::spawn(async move {
            let limit = expected.max(64 * 1024);
            read_body_within(&budget, body, expected, limit, Duration::from_secs(30)).await
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_holds_its_declared_size_while_it_arrives_and_its_own_size_once_read() {
        let budget = BodyBudget::new(64 * 1024, 1024);
        let (tx, body) = streamed_body();
        let reading = spawn_read(&budget, body, 40 * 1024);
        tokio::time::sleep(ARRIVAL_CHECK / 2).await;
        assert_eq!(
            budget.available_bytes(),
            24 * 1024,
            "declared size reserved"
        );
        tx.send(Ok(bytes::Bytes::from_static(b"[1,2]")))
            .await
            .unwrap();
        drop(tx);
        let (bytes, permit) = reading.await.unwrap().expect("read");
        assert_eq!(&bytes[..], b"[1,2]");
        assert_eq!(
            budget.available_bytes(),
            24 * 1024,
            "held until the events are done"
        );
        drop(permit);
        assert_eq!(budget.available_bytes(), 64 * 1024);
    }

    /// Sends `chunks` chunks of 20 KiB, one every 5 ms: ~4 MB/s, twice the minimum rate.
    async fn send_promptly(
        tx: &tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
        chunks: usize,
    ) {
        let chunk = bytes::Bytes::from(vec![b' '; 20 * 1024]);
        assert!(chunk.len() as f64 / 0.005 >= 1.5 * MIN_ARRIVAL_RATE as f64);
        for _ in 0..chunks {
            tx.send(Ok(chunk.clone())).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_still_arriving_after_the_hold_gives_its_room_back_however_fast_it_comes() {
        let budget = BodyBudget::new(2 << 20, 1024);
        let (tx, body) = streamed_body();
        let reading = spawn_read(&budget, body, 2 << 20);
        // 60 chunks take 300 ms: past HOLD_WHILE_ARRIVING (250 ms), 1.2 MB of the 2 MiB declared.
        send_promptly(&tx, 60).await;
        assert!(Duration::from_millis(300) > HOLD_WHILE_ARRIVING);
        assert_eq!(
            budget.available_bytes(),
            2 << 20,
            "a body kept its room past HOLD_WHILE_ARRIVING"
        );
        assert!(!reading.is_finished());
        tx.send(Ok(bytes::Bytes::from(vec![b' '; 1024])))
            .await
            .unwrap();
        drop(tx);
        let (bytes, permit) = reading.await.unwrap().expect("read");
        assert_eq!(bytes.len(), 60 * 20 * 1024 + 1024);
        assert_eq!(
            budget.available_bytes(),
            (2 << 20) - bytes.len(),
            "its actual size, once complete"
        );
        drop(permit);
    }

    /// On a paused clock (it moves only when every task waits), so the checks' times are exact.
    #[tokio::test(start_paused = true)]
    async fn a_body_arriving_slower_than_the_minimum_rate_gives_its_room_back_at_the_first_check() {
        let budget = BodyBudget::new(64 * 1024, 1024);
        let (tx, body) = streamed_body();
        let reading = spawn_read(&budget, body, 60 * 1024);
        tx.send(Ok(bytes::Bytes::from_static(b"[1,")))
            .await
            .unwrap();
        tokio::time::sleep(ARRIVAL_CHECK / 2).await;
        assert_eq!(budget.available_bytes(), 4 * 1024, "declared size held");
        tokio::time::sleep(ARRIVAL_CHECK).await;
        assert!(ARRIVAL_CHECK * 2 < HOLD_WHILE_ARRIVING);
        assert_eq!(
            budget.available_bytes(),
            64 * 1024,
            "a body trickling bytes kept its room past the first check"
        );
        tx.send(Ok(bytes::Bytes::from_static(b"2]"))).await.unwrap();
        drop(tx);
        let (bytes, _permit) = reading.await.unwrap().expect("read");
        assert_eq!(&bytes[..], b"[1,2]");
        assert_eq!(budget.available_bytes(), 63 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_arriving_faster_than_the_minimum_rate_keeps_its_room_until_complete() {
        let budget = BodyBudget::new(256 * 1024, 1024);
        let (tx, body) = streamed_body();
        let reading = spawn_read(&budget, body, 200 * 1024);
        send_promptly(&tx, 9).await;
        // Past the first check (at 50 ms), before the second.
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert_eq!(
            budget.available_bytes(),
            56 * 1024,
            "a body arriving in time lost its room"
        );
        send_promptly(&tx, 1).await;
        drop(tx);
        let (bytes, permit) = reading.await.unwrap().expect("read");
        assert_eq!(bytes.len(), 200 * 1024);
        assert_eq!(budget.available_bytes(), 56 * 1024, "held until dropped");
        drop(permit);
        assert_eq!(budget.available_bytes(), 256 * 1024);
    }

    #[tokio::test]
    async fn a_body_larger_than_the_budget_waits_for_all_of_it_and_then_goes_alone() {
        let budget = BodyBudget::new(64 * 1024, 1024);
        let small = budget.reserve(1024).await;
        let huge = spawn_reserve(&budget, 10 << 20);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!huge.is_finished(), "went past a body in hand");
        drop(small);
        let huge = tokio::time::timeout(Duration::from_secs(5), huge)
            .await
            .expect("admitted once alone")
            .expect("task");
        assert_eq!(budget.available_bytes(), 0);
        drop(huge);
        assert_eq!(budget.available_bytes(), 64 * 1024);
    }
}

//! The worker's SQL, in one place. Every write takes the batch's transaction; rows are written
//! with `UNNEST` arrays (one statement per table per batch) in a fixed key order, so concurrent
//! workers never deadlock on each other's rows.

use chrono::{DateTime, Utc};
use faultline_shared::domain::StoredEvent;
use serde_json::{Value, value::RawValue};
use sqlx::{PgConnection, PgPool, Postgres, Row, postgres::PgArguments, query::Query};

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;
use uuid::Uuid;

/// The columns an event and a group's latest sample share, one element per row. They borrow
/// from the decoded events: a batch is not copied a second time to be written.
#[derive(Default)]
pub struct SampleColumns<'a> {
    pub level: Vec<&'static str>,
    pub message: Vec<&'a str>,
    pub stack_trace: Vec<Option<&'a str>>,
    /// As the text the event carried, stored as such (json, not jsonb: see
    /// migrations/0009_json_as_sent.sql). Sent as text and cast, so Postgres only checks the syntax.
    pub context: Vec<Option<&'a str>>,
    pub source: Vec<&'a str>,
    pub environment: Vec<&'a str>,
    pub url: Vec<Option<&'a str>>,
    pub user_agent: Vec<Option<&'a str>>,
    pub ip_address: Vec<Option<&'a str>>,
    pub release: Vec<Option<&'a str>>,
}

impl<'a> SampleColumns<'a> {
    /// Binds the ten sample columns to `query`, in the order both statements list them (events and
    /// group upserts store the same sample).
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.level)
            .bind(&self.message)
            .bind(&self.stack_trace)
            .bind(&self.context)
            .bind(&self.source)
            .bind(&self.environment)
            .bind(&self.url)
            .bind(&self.user_agent)
            .bind(&self.ip_address)
            .bind(&self.release)
    }

    pub fn push(&mut self, e: &'a StoredEvent) {
        self.level.push(e.level.as_str());
        self.message.push(&e.message);
        self.stack_trace.push(e.stack_trace.as_deref());
        self.context.push(e.context.as_deref().map(RawValue::get));
        self.source.push(&e.source);
        self.environment.push(&e.environment);
        self.url.push(e.url.as_deref());
        self.user_agent.push(e.user_agent.as_deref());
        self.ip_address.push(e.ip_address.as_deref());
        self.release.push(e.release.as_deref());
    }
}

/// Column arrays of the events to insert (one element per event).
#[derive(Default)]
pub struct EventRows<'a> {
    pub id: Vec<Uuid>,
    pub project_id: Vec<Uuid>,
    pub group_id: Vec<Uuid>,
    pub received_at: Vec<DateTime<Utc>>,
    pub sample: SampleColumns<'a>,
    /// As `context`.
    pub extra: Vec<Option<&'a str>>,
}

/// Inserts events, skipping ids already stored; returns the ids that were new. This is where a
/// redelivered event is recognised and kept from being counted twice.
///
/// Almost every batch is new events only, so they go in with `COPY` (binary), inside a savepoint:
/// no `ON CONFLICT` check per row, no arrays to unpack, the heap written a page at a time. A
/// stored id makes the `COPY` fail on `events_pkey`; the batch then rolls back to the savepoint
/// and goes in with [`insert_events_skipping_stored`], which skips it. A batch racing a
/// redelivery of the same events waits on the other's rows either way, then takes that path.
/// (`COPY` against `INSERT … SELECT FROM UNNEST … ON CONFLICT`: benches/RESULTS.md, twelfth
/// session.)
#[tracing::instrument(skip_all, fields(events = rows.id.len()))]
pub async fn insert_events(
    conn: &mut PgConnection,
    rows: &EventRows<'_>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::raw_sql("SAVEPOINT copy_events")
        .execute(&mut *conn)
        .await?;
    match copy_events(&mut *conn, rows).await {
        Ok(()) => {
            sqlx::raw_sql("RELEASE SAVEPOINT copy_events")
                .execute(&mut *conn)
                .await?;
            Ok(rows.id.clone())
        }
        Err(e) if is_stored_id(&e) => {
            sqlx::raw_sql("ROLLBACK TO SAVEPOINT copy_events")
                .execute(&mut *conn)
                .await?;
            insert_events_skipping_stored(conn, rows).await
        }
        Err(e) => Err(e),
    }
}

/// Whether `e` is `COPY` meeting an event id already stored (or being stored by another batch
/// that has since committed).
fn is_stored_id(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| {
        d.code().as_deref() == Some("23505") && d.constraint() == Some("events_pkey")
    })
}

/// An event's columns, in the order [`CopyEncoder`] lays each row out and
/// [`insert_events_skipping_stored`] binds its arrays (a macro, so both statements stay literals).
macro_rules! event_columns {
    () => {
        "id, project_id, group_id, received_at, level, message, stack_trace, context, source, \
         environment, url, user_agent, ip_address, release, extra"
    };
}

/// Bytes of `COPY` data encoded and sent at a time. The rows are streamed in pieces of about this
/// size instead of as one buffer: a batch of 10,000 events of 1 KB is ~11 MB, and one buffer
/// would be held twice (encoded, and copied into the connection's write buffer, which keeps its
/// capacity for the connection's life) for every transaction in flight.
const COPY_CHUNK_BYTES: usize = 256 * 1024;

async fn copy_events(conn: &mut PgConnection, rows: &EventRows<'_>) -> Result<(), sqlx::Error> {
    let mut copy = conn
        .copy_in_raw(concat!(
            "COPY events (",
            event_columns!(),
            ") FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let mut encoder = CopyEncoder::new(rows);
    let mut chunk = Vec::with_capacity(COPY_CHUNK_BYTES + 4096);
    while encoder.fill(&mut chunk, COPY_CHUNK_BYTES) {
        copy.send(chunk.as_slice()).await?;
        chunk.clear();
    }
    copy.send(chunk.as_slice()).await?;
    copy.finish().await?;
    Ok(())
}

/// Microseconds from 2000-01-01 UTC, Postgres's timestamp epoch.
fn pg_micros(t: DateTime<Utc>) -> i64 {
    const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;
    // Out of i64's range cannot happen for a chrono time; should it, Postgres refuses the value
    // as out of range (SQLSTATE 22008), like any time it cannot store.
    (t.timestamp() - PG_EPOCH_UNIX_SECS)
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(i64::from(t.timestamp_subsec_micros())))
        .unwrap_or(i64::MAX)
}

/// The rows in `COPY … (FORMAT binary)`, piece by piece: a header, then per row the field count
/// and each field as its length and its bytes (-1 for NULL), then -1.
struct CopyEncoder<'r, 'a> {
    rows: &'r EventRows<'a>,
    /// The next row to encode; the header goes before row 0.
    next: usize,
}

impl<'r, 'a> CopyEncoder<'r, 'a> {
    fn new(rows: &'r EventRows<'a>) -> Self {
        Self { rows, next: 0 }
    }

    /// Appends rows to `out` until it holds at least `limit` bytes or the rows run out (then the
    /// trailer too). Returns whether anything is left to encode. Each call adds at least one row
    /// and never splits one, so a piece may pass `limit` by one row; once it returned `false` it
    /// must not be called again.
    fn fill(&mut self, out: &mut Vec<u8>, limit: usize) -> bool {
        // Every call adds a row, so only the first starts at row 0.
        if self.next == 0 {
            out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
            out.extend_from_slice(&0i32.to_be_bytes()); // flags
            out.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        }
        let (rows, s) = (self.rows, &self.rows.sample);
        while self.next < rows.id.len() {
            let i = self.next;
            self.next += 1;
            out.extend_from_slice(&15i16.to_be_bytes());
            field(out, rows.id[i].as_bytes());
            field(out, rows.project_id[i].as_bytes());
            field(out, rows.group_id[i].as_bytes());
            field(out, &pg_micros(rows.received_at[i]).to_be_bytes());
            field(out, s.level[i].as_bytes());
            field(out, s.message[i].as_bytes());
            optional(out, s.stack_trace[i]);
            optional(out, s.context[i]);
            field(out, s.source[i].as_bytes());
            field(out, s.environment[i].as_bytes());
            optional(out, s.url[i]);
            optional(out, s.user_agent[i]);
            optional(out, s.ip_address[i]);
            optional(out, s.release[i]);
            optional(out, rows.extra[i]);
            if out.len() >= limit && self.next < rows.id.len() {
                return true;
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        false
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    // No field comes near i32::MAX bytes: it came in a broker message, and RabbitMQ refuses
    // messages over its max_message_size (128 MiB by default, 512 MiB at most).
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn optional(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(v) => field(out, v.as_bytes()),
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
    }
}

/// Inserts events, skipping ids already stored; returns the ids that were new.
async fn insert_events_skipping_stored(
    conn: &mut PgConnection,
    rows: &EventRows<'_>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let query = sqlx::query(concat!(
        "INSERT INTO events (",
        event_columns!(),
        ")
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::text[],
                              $6::text[], $7::text[], $8::text[]::json[], $9::text[], $10::text[],
                              $11::text[], $12::text[], $13::text[], $14::text[], $15::text[]::json[])
         ON CONFLICT (id) DO NOTHING
         RETURNING id"
    ))
    .bind(&rows.id)
    .bind(&rows.project_id)
    .bind(&rows.group_id)
    .bind(&rows.received_at);
    let rows = rows
        .sample
        .bind(query)
        .bind(&rows.extra)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|row| row.try_get::<Uuid, _>(0)).collect()
}

/// Column arrays of the group upserts, one element per (project, fingerprint), sorted by id.
#[derive(Default)]
pub struct GroupRows<'a> {
    pub id: Vec<Uuid>,
    pub project_id: Vec<Uuid>,
    pub fingerprint: Vec<&'a str>,
    pub version: Vec<i32>,
    pub normalized_message: Vec<&'a str>,
    pub frames: Vec<Value>,
    pub custom: Vec<bool>,
    pub sample: SampleColumns<'a>,
    pub latest_event_id: Vec<Uuid>,
    pub count: Vec<i64>,
    pub first_seen: Vec<DateTime<Utc>>,
    pub last_seen: Vec<DateTime<Utc>>,
}

/// Adds the batch's counts to the groups, keeping the newest sample. A resolved group that sees an
/// event newer than its resolution is reopened and marked regressed, stamped with this transaction's
/// id (`regressed_xid`, what regression rules follow). A group created here also gets its companion
/// row (`error_group_search`: its searchable text, and by default this transaction's id as
/// `created_xid`, what new_error rules follow), written once so the hot row needs neither index.
#[tracing::instrument(skip_all, fields(groups = rows.id.len()))]
pub async fn upsert_groups(
    conn: &mut PgConnection,
    rows: &GroupRows<'_>,
) -> Result<(), sqlx::Error> {
    let query = sqlx::query(
        "WITH up AS (
         INSERT INTO error_groups AS g (id, project_id, fingerprint, grouping_version,
                normalized_message, grouping_frames, custom_fingerprint, level, message, stack_trace,
                context, source, environment, url, user_agent, ip_address, release,
                latest_event_id, count, first_seen, last_seen)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::text[],
                              $6::jsonb[], $7::bool[], $8::text[], $9::text[], $10::text[],
                              $11::text[]::json[], $12::text[], $13::text[], $14::text[], $15::text[],
                              $16::text[], $17::text[], $18::uuid[], $19::bigint[],
                              $20::timestamptz[], $21::timestamptz[])
         ON CONFLICT (id) DO UPDATE SET
            count = g.count + EXCLUDED.count,
            first_seen = LEAST(g.first_seen, EXCLUDED.first_seen),
            last_seen = GREATEST(g.last_seen, EXCLUDED.last_seen),
            level = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.level ELSE g.level END,
            message = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.message ELSE g.message END,
            stack_trace = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.stack_trace ELSE g.stack_trace END,
            context = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.context ELSE g.context END,
            environment = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.environment ELSE g.environment END,
            url = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.url ELSE g.url END,
            user_agent = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.user_agent ELSE g.user_agent END,
            ip_address = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.ip_address ELSE g.ip_address END,
            release = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.release ELSE g.release END,
            latest_event_id = CASE WHEN EXCLUDED.last_seen >= g.last_seen THEN EXCLUDED.latest_event_id ELSE g.latest_event_id END,
            regressed = g.regressed OR (g.resolved AND EXCLUDED.last_seen > COALESCE(g.resolved_at, '-infinity')),
            regressed_at = CASE WHEN g.resolved AND EXCLUDED.last_seen > COALESCE(g.resolved_at, '-infinity')
                                THEN now() ELSE g.regressed_at END,
            regressed_xid = CASE WHEN g.resolved AND EXCLUDED.last_seen > COALESCE(g.resolved_at, '-infinity')
                                 THEN pg_current_xact_id() ELSE g.regressed_xid END,
            resolved = g.resolved AND EXCLUDED.last_seen <= COALESCE(g.resolved_at, '-infinity'),
            resolved_at = CASE WHEN g.resolved AND EXCLUDED.last_seen > COALESCE(g.resolved_at, '-infinity')
                               THEN NULL ELSE g.resolved_at END,
            updated_at = now()
         RETURNING id, project_id, message, xmax = 0 AS created)
         INSERT INTO error_group_search (group_id, project_id, message)
         SELECT id, project_id, message FROM up WHERE created ORDER BY id
         ON CONFLICT (group_id) DO NOTHING",
    )
    .bind(&rows.id)
    .bind(&rows.project_id)
    .bind(&rows.fingerprint)
    .bind(&rows.version)
    .bind(&rows.normalized_message)
    .bind(&rows.frames)
    .bind(&rows.custom);
    rows.sample
        .bind(query)
        .bind(&rows.latest_event_id)
        .bind(&rows.count)
        .bind(&rows.first_seen)
        .bind(&rows.last_seen)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Adds the batch's counts to the groups' activity rows (the list's sort keys, see
/// migrations/0007_group_activity.sql), in the same transaction and with the same figures as
/// [`upsert_groups`], so the two never disagree. Rows come sorted by id, as for the groups, so
/// concurrent batches lock them in one order.
#[tracing::instrument(skip_all, fields(groups = rows.id.len()))]
pub async fn upsert_activity(
    conn: &mut PgConnection,
    rows: &GroupRows<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO error_group_activity AS a (group_id, project_id, count, last_seen)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::bigint[], $4::timestamptz[])
         ON CONFLICT (group_id) DO UPDATE SET
            count = a.count + EXCLUDED.count,
            last_seen = GREATEST(a.last_seen, EXCLUDED.last_seen)",
    )
    .bind(&rows.id)
    .bind(&rows.project_id)
    .bind(&rows.count)
    .bind(&rows.last_seen)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Per-minute counts, sorted by primary key.
#[derive(Default)]
pub struct RollupRows<'a> {
    pub project_id: Vec<Uuid>,
    pub minute: Vec<DateTime<Utc>>,
    pub group_id: Vec<Uuid>,
    pub level: Vec<&'static str>,
    pub environment: Vec<&'a str>,
    pub count: Vec<i64>,
}

#[tracing::instrument(skip_all, fields(rows = rows.count.len()))]
pub async fn upsert_rollups(
    conn: &mut PgConnection,
    rows: &RollupRows<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO error_counts_minute AS c (project_id, minute, group_id, level, environment, count)
         SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], $5::text[], $6::bigint[])
         ON CONFLICT (project_id, minute, group_id, level, environment)
         DO UPDATE SET count = c.count + EXCLUDED.count",
    )
    .bind(&rows.project_id)
    .bind(&rows.minute)
    .bind(&rows.group_id)
    .bind(&rows.level)
    .bind(&rows.environment)
    .bind(&rows.count)
    .execute(&mut *conn)
    .await?;
    // The hourly totals behind stats and trends (no group: a few rows per project and hour).
    // Key order keeps concurrent workers from deadlocking on them.
    sqlx::query(
        "INSERT INTO error_counts_hour AS h (project_id, hour, level, environment, count)
         SELECT p, date_trunc('hour', m, 'UTC'), l, e, sum(c)
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[]) AS t(p, m, l, e, c)
         GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
         ON CONFLICT (project_id, hour, level, environment)
         DO UPDATE SET count = h.count + EXCLUDED.count",
    )
    .bind(&rows.project_id)
    .bind(&rows.minute)
    .bind(&rows.level)
    .bind(&rows.environment)
    .bind(&rows.count)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes at most `limit` events received before `cutoff`; returns how many went. Small batches
/// keep each statement's locks and WAL burst short.
pub async fn delete_expired_events(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM events WHERE id IN (
             SELECT id FROM events WHERE received_at < $1 ORDER BY received_at LIMIT $2
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(cutoff)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Which of `project_ids` name no project (deleted while their events were queued). Asked only
/// when Postgres has refused a batch, so events of a deleted project are set aside at once instead
/// of being found one by one.
pub async fn missing_projects(
    pool: &PgPool,
    project_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM unnest($1::uuid[]) AS asked (id)
         WHERE NOT EXISTS (SELECT 1 FROM projects p WHERE p.id = asked.id)",
    )
    .bind(project_ids)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn times_are_counted_in_microseconds_from_postgres_epoch() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(pg_micros(at("2000-01-01T00:00:00Z")), 0);
        assert_eq!(pg_micros(at("2000-01-01T00:00:01.000002Z")), 1_000_002);
        assert_eq!(pg_micros(at("1999-12-31T23:59:59.5Z")), -500_000);
        assert_eq!(
            pg_micros(at("2026-12-01T12:00:00.123456Z")),
            849_441_600_123_456
        );
        let far = Utc.with_ymd_and_hms(-10000, 1, 1, 0, 0, 0).unwrap();
        assert!(
            pg_micros(far) < 0,
            "far in the past stays a (negative) count"
        );
    }

    /// Adds a row of project 2, group 3, level `error`, source `api`, environment `prod`, without
    /// url, user agent, ip address or extra.
    fn push_row<'a>(
        rows: &mut EventRows<'a>,
        id: u128,
        at: DateTime<Utc>,
        message: &'a str,
        stack_trace: Option<&'a str>,
        context: Option<&'a str>,
        release: Option<&'a str>,
    ) {
        rows.id.push(Uuid::from_u128(id));
        rows.project_id.push(Uuid::from_u128(2));
        rows.group_id.push(Uuid::from_u128(3));
        rows.received_at.push(at);
        let s = &mut rows.sample;
        s.level.push("error");
        s.message.push(message);
        s.stack_trace.push(stack_trace);
        s.context.push(context);
        s.source.push("api");
        s.environment.push("prod");
        s.url.push(None);
        s.user_agent.push(None);
        s.ip_address.push(None);
        s.release.push(release);
        rows.extra.push(None);
    }

    /// The pieces `CopyEncoder` gives with `limit`, joined.
    fn encode_all(rows: &EventRows<'_>, limit: usize) -> Vec<u8> {
        let mut encoder = CopyEncoder::new(rows);
        let (mut out, mut piece) = (Vec::new(), Vec::new());
        while encoder.fill(&mut piece, limit) {
            assert!(!piece.is_empty(), "a piece that is not the last holds rows");
            out.append(&mut piece);
        }
        out.append(&mut piece);
        out
    }

    #[test]
    fn copy_rows_in_pieces_join_up_to_the_whole() {
        let mut rows = EventRows::default();
        let messages: Vec<String> = (0..50).map(|i| "m".repeat(i * 7)).collect();
        let at = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        for (i, m) in messages.iter().enumerate() {
            let stack_trace = (i % 2 == 0).then_some("at f");
            push_row(&mut rows, i as u128, at, m, stack_trace, None, Some("1.0"));
        }
        let whole = encode_all(&rows, usize::MAX);
        assert_eq!(&whole[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&whole[whole.len() - 2..], &[0xff, 0xff]);
        for limit in [0, 1, 100, 1000, whole.len() - 1, whole.len()] {
            assert_eq!(encode_all(&rows, limit), whole, "pieces of {limit} bytes");
        }
        // With a small limit every piece but the last ends after the row that passed it.
        let mut encoder = CopyEncoder::new(&rows);
        let mut pieces = 0;
        let mut piece = Vec::new();
        while encoder.fill(&mut piece, 1000) {
            assert!(
                piece.len() >= 1000 && piece.len() < 1000 + 600,
                "{}",
                piece.len()
            );
            piece.clear();
            pieces += 1;
        }
        assert!(pieces > 5, "{pieces} pieces");
    }

    #[test]
    fn copy_rows_are_laid_out_as_postgres_binary_format() {
        let mut rows = EventRows::default();
        let at = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap();
        push_row(&mut rows, 1, at, "boom", None, Some("{}"), None);
        let out = encode_all(&rows, usize::MAX);
        let mut expected = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0\0\x0f".to_vec();
        for id in 1u128..=3 {
            expected.extend_from_slice(&[0, 0, 0, 16]);
            expected.extend_from_slice(&id.to_be_bytes());
        }
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(&1_000_000i64.to_be_bytes());
        for (len, text) in [(5u8, "error"), (4, "boom")] {
            expected.extend_from_slice(&[0, 0, 0, len]);
            expected.extend_from_slice(text.as_bytes());
        }
        expected.extend_from_slice(&[0xff; 4]); // stack_trace NULL
        expected.extend_from_slice(&[0, 0, 0, 2, b'{', b'}']);
        expected.extend_from_slice(&[0, 0, 0, 3, b'a', b'p', b'i']);
        expected.extend_from_slice(&[0, 0, 0, 4, b'p', b'r', b'o', b'd']);
        for _ in 0..5 {
            expected.extend_from_slice(&[0xff; 4]);
        }
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(out, expected);
    }
}

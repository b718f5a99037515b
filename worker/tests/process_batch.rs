//! The worker's unit of work against a real Postgres: grouping, counting, deduplication,
//! regression and retention.

#[path = "common.rs"]
mod common;

use chrono::{DurationRound, TimeDelta, TimeZone, Utc};
use common::*;
use faultline_shared::{domain::stored, testkit::TestDb};
use serde_json::value::RawValue;
use uuid::Uuid;
use worker::{consumer::commit_isolating, process::process_batch};

const TEMPLATES: [&str; 10] = [
    "user {} not found",
    "timeout after {} ms talking to 10.0.{}.7",
    "order {} failed: card declined",
    "cannot parse id={} in request {}",
    "disk {} of volume group is {}% full",
    "retry {} of 5 for job {}",
    "connection reset by peer after {} bytes",
    "invalid token for session {}",
    "queue depth {} exceeds limit",
    "payment {} refunded twice",
];

#[tokio::test]
async fn a_thousand_events_from_ten_templates_make_ten_groups() {
    let db = TestDb::new().await;
    // Whole seconds: Postgres keeps microseconds, not nanoseconds.
    let start = (Utc::now() - TimeDelta::minutes(30))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap();
    let mut events = Vec::new();
    for i in 0..1000usize {
        let template = TEMPLATES[i % 10];
        let mut msg = template.to_string();
        while let Some(pos) = msg.find("{}") {
            msg.replace_range(pos..pos + 2, &((i * 7919) % 250 + 1).to_string());
        }
        let mut e = event(&msg);
        e.received_at = start + TimeDelta::seconds(i as i64);
        events.push(e);
    }
    // In several batches, out of order, as competing consumers would see them.
    events.reverse();
    for chunk in events.chunks(137) {
        process_batch(&db.pool, &stored(chunk)).await.unwrap();
    }
    let groups: Vec<(i64, chrono::DateTime<Utc>, chrono::DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT count, first_seen, last_seen, normalized_message FROM error_groups ORDER BY normalized_message",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(groups.len(), 10, "{groups:#?}");
    assert_eq!(groups.iter().map(|g| g.0).sum::<i64>(), 1000);
    for (count, first, last, normalized) in &groups {
        assert_eq!(*count, 100, "{normalized}");
        let k = TEMPLATES
            .iter()
            .position(|t| normalized.starts_with(&t[..4]))
            .expect("known template") as i64;
        assert_eq!(*first, start + TimeDelta::seconds(k), "{normalized}");
        assert_eq!(*last, start + TimeDelta::seconds(990 + k), "{normalized}");
    }
    assert_eq!(stored_events(&db.pool).await, 1000);
    assert_eq!(rollup_total(&db.pool).await, 1000);
    assert_activity_matches_groups(&db.pool, 10).await;
}

/// Each group has its activity row (the list's sort keys), with the same project, count and
/// last_seen as the group row.
async fn assert_activity_matches_groups(pool: &sqlx::PgPool, groups: i64) {
    let (rows, mismatched): (i64, i64) = sqlx::query_as(
        "SELECT count(a.group_id),
                count(*) FILTER (WHERE a.group_id IS NULL OR g.id IS NULL
                                 OR a.project_id <> g.project_id OR a.count <> g.count
                                 OR a.last_seen <> g.last_seen)
         FROM error_groups g FULL JOIN error_group_activity a ON a.group_id = g.id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!((rows, mismatched), (groups, 0));
}

/// Every batch rewrites a group's count, last_seen and latest sample. With none of those in an
/// index of error_groups, Postgres can update the row in place (HOT) instead of adding an entry to
/// each index: ~40 % of its CPU per event (migrations/0007_group_activity.sql). The list's sort
/// keys are indexed on error_group_activity instead.
#[tokio::test]
async fn no_index_of_error_groups_holds_what_every_batch_rewrites() {
    let db = TestDb::new().await;
    let indexed: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexrelid::regclass::text, a.attname::text
         FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
         WHERE i.indrelid = 'error_groups'::regclass
           AND a.attname IN ('count', 'last_seen', 'updated_at', 'latest_event_id', 'message',
                             'stack_trace', 'context', 'url', 'user_agent', 'ip_address', 'release')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(indexed.is_empty(), "{indexed:?}");
    let expressions: Vec<(String,)> = sqlx::query_as(
        "SELECT indexrelid::regclass::text FROM pg_index
         WHERE indrelid = 'error_groups'::regclass AND (indexprs IS NOT NULL OR 0 = ANY (indkey))",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(expressions.is_empty(), "{expressions:?}");
    // The sort keys are indexed on the activity rows.
    let sort_indexes: (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'error_group_activity'
         AND (indexdef LIKE '%(project_id, last_seen DESC, group_id DESC)%'
              OR indexdef LIKE '%(project_id, count DESC, group_id DESC)%')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(sort_indexes.0, 2);
}

/// Postgres refuses events of a batch for what they hold: a time before the years it can store,
/// and events of a project that no longer exists (deleted while its events were queued). Exactly
/// those are found and returned with their SQLSTATEs; every other event is stored and counted
/// once, including numbers no jsonb could hold (kept as sent since `context` and `extra` are json).
/// Done again (as after an outage mid-split), nothing is counted twice.
#[tokio::test]
async fn a_batch_postgres_refuses_is_split_until_the_refused_events_are_found() {
    let db = TestDb::new().await;
    let mut events = stored(
        &(0..100)
            .map(|i| event(&format!("job {} failed", i % 7)))
            .collect::<Vec<_>>(),
    );
    events[13].received_at = Utc.with_ymd_and_hms(-10000, 1, 1, 0, 0, 0).unwrap();
    events[58].received_at = Utc.with_ymd_and_hms(-5000, 6, 1, 12, 0, 0).unwrap();
    events[21].extra = Some(RawValue::from_string(r#"{"n": 1e200000}"#.into()).unwrap());
    events[22].context = Some(RawValue::from_string(r#"[-1e999999]"#.into()).unwrap());
    let deleted = Uuid::now_v7();
    for i in [40, 77, 78] {
        events[i].project_id = deleted;
    }
    process_batch(&db.pool, &events)
        .await
        .expect_err("Postgres refuses the whole batch");
    assert_eq!(counted(&db.pool).await, 0);

    let (outcome, refused) = commit_isolating(&db.pool, &events).await.unwrap();
    let mut found: Vec<(Uuid, &str)> = refused
        .iter()
        .map(|(e, r)| (e.event_id, r.sqlstate.as_str()))
        .collect();
    found.sort();
    let mut expected = vec![
        (events[13].event_id, "22008"),
        (events[58].event_id, "22008"),
        (events[40].event_id, "23503"),
        (events[77].event_id, "23503"),
        (events[78].event_id, "23503"),
    ];
    expected.sort();
    assert_eq!(found, expected);
    assert!(
        refused.iter().all(|(_, r)| !r.error.is_empty()),
        "{refused:?}"
    );
    assert_eq!((outcome.received, outcome.inserted), (95, 95));
    assert_eq!(counted(&db.pool).await, 95);
    assert_eq!(stored_events(&db.pool).await, 95);
    assert_eq!(rollup_total(&db.pool).await, 95);
    // Numbers no jsonb could hold are kept as the text that was sent.
    let (extra, context): (String, String) = sqlx::query_as(
        "SELECT (SELECT extra::text FROM events WHERE id = $1),
                (SELECT context::text FROM events WHERE id = $2)",
    )
    .bind(events[21].event_id)
    .bind(events[22].event_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (extra.as_str(), context.as_str()),
        (r#"{"n": 1e200000}"#, "[-1e999999]")
    );

    let (outcome, refused) = commit_isolating(&db.pool, &events).await.unwrap();
    assert_eq!(
        (outcome.inserted, outcome.duplicates, refused.len()),
        (0, 95, 5)
    );
    assert_eq!(counted(&db.pool).await, 95);
    assert_eq!(rollup_total(&db.pool).await, 95);
}

#[tokio::test]
async fn the_same_event_delivered_twice_is_counted_once() {
    let db = TestDb::new().await;
    let e = event("payment failed");
    let first = process_batch(&db.pool, &stored(&[e.clone(), e.clone()]))
        .await
        .unwrap();
    assert_eq!((first.inserted, first.duplicates), (1, 1));
    let again = process_batch(&db.pool, &stored(std::slice::from_ref(&e)))
        .await
        .unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 1));
    assert_eq!(counted(&db.pool).await, 1);
    assert_eq!(rollup_total(&db.pool).await, 1);
    assert_activity_matches_groups(&db.pool, 1).await;
}

#[tokio::test]
async fn a_resolved_group_that_sees_a_new_event_is_reopened_and_marked_regressed() {
    let db = TestDb::new().await;
    process_batch(&db.pool, &stored(&[event("cache miss storm")]))
        .await
        .unwrap();
    sqlx::query("UPDATE error_groups SET resolved = true, resolved_at = now()")
        .execute(&db.pool)
        .await
        .unwrap();
    // An old event delivered late does not reopen it...
    let mut late = event("cache miss storm");
    late.received_at = Utc::now() - TimeDelta::hours(1);
    process_batch(&db.pool, &stored(&[late])).await.unwrap();
    let (resolved, regressed, stamped): (bool, bool, bool) =
        sqlx::query_as("SELECT resolved, regressed, regressed_xid IS NOT NULL FROM error_groups")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(resolved && !regressed && !stamped);
    // ...a new one does.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    process_batch(&db.pool, &stored(&[event("cache miss storm")]))
        .await
        .unwrap();
    // Stamped with the id of the transaction that reopened it (what regression rules follow),
    // a later one than the group's creation.
    let (resolved, regressed, count, stamped_later): (bool, bool, i64, bool) = sqlx::query_as(
        "SELECT resolved, regressed, count, g.regressed_xid > s.created_xid
         FROM error_groups g JOIN error_group_search s ON s.group_id = g.id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!resolved && regressed && stamped_later);
    assert_eq!(count, 3);
}

#[tokio::test]
async fn the_group_keeps_the_newest_sample_and_why_it_was_grouped() {
    let db = TestDb::new().await;
    let mut old = event("user 1 not found");
    old.received_at = Utc::now() - TimeDelta::minutes(5);
    old.environment = "staging".into();
    let new = event("user 2 not found");
    process_batch(&db.pool, &stored(&[new.clone(), old]))
        .await
        .unwrap();
    let (message, environment, latest, version, normalized): (String, String, uuid::Uuid, i32, String) =
        sqlx::query_as(
            "SELECT message, environment, latest_event_id, grouping_version, normalized_message FROM error_groups",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(message, "user 2 not found");
    assert_eq!(environment, "production");
    assert_eq!(latest, new.event_id);
    assert_eq!(version, faultline_shared::fingerprint::GROUPING_VERSION);
    assert_eq!(normalized, "user <int> not found");
}

#[tokio::test]
async fn expired_events_are_purged_in_batches_while_counts_stay() {
    let db = TestDb::new().await;
    let mut events = Vec::new();
    for i in 0..25 {
        let mut e = event("old failure");
        e.received_at = Utc::now() - TimeDelta::days(40) + TimeDelta::seconds(i);
        events.push(e);
    }
    events.push(event("old failure"));
    process_batch(&db.pool, &stored(&events)).await.unwrap();
    let deleted = worker::retention::purge_expired(&db.pool, 30, 10)
        .await
        .unwrap();
    assert_eq!(deleted, 25);
    assert_eq!(stored_events(&db.pool).await, 1);
    assert_eq!(counted(&db.pool).await, 26);
}

/// Events go in with `COPY` (binary): every field comes back as it was sent, set or absent,
/// times to the microsecond and non-ASCII text included. A batch holding ids stored before falls
/// back to the statement that skips them, and counts only the new ones.
#[tokio::test]
async fn every_field_of_an_event_is_stored_as_sent_and_a_batch_with_stored_ids_counts_the_rest() {
    let db = TestDb::new().await;
    let mut full = event("Zahlung fehlgeschlagen: 'ü' \\ \"quoted\"");
    full.received_at = Utc
        .with_ymd_and_hms(2026, 12, 1, 11, 59, 58)
        .unwrap()
        .checked_add_signed(TimeDelta::microseconds(123_457))
        .unwrap();
    full.stack_trace = Some("Error: boom\n    at f (app.js:1:2)".into());
    full.context = Some(serde_json::json!({"user": {"id": 7}, "tags": ["a", "é"]}));
    full.url = Some("https://example.com/checkout?x=1".into());
    full.user_agent = Some("Mozilla/5.0".into());
    full.ip_address = Some("203.0.113.9".into());
    full.release = Some("v1.2.3".into());
    full.extra = Some(serde_json::json!([1, null, "x"]));
    let bare = event("bare");
    let outcome = process_batch(&db.pool, &stored(&[full.clone(), bare.clone()]))
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (2, 0));

    type Row = (
        Uuid,
        chrono::DateTime<Utc>,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let read = |id: Uuid| {
        sqlx::query_as::<_, Row>(
            "SELECT project_id, received_at, level, message, stack_trace, context::text, source,
                    environment, url, user_agent, ip_address, release, extra::text
             FROM events WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&db.pool)
    };
    let row = read(full.event_id).await.unwrap();
    assert_eq!(
        (&row.0, &row.1, &row.2, &row.3, &row.4, &row.5, &row.6),
        (
            &full.project_id,
            &full.received_at,
            &"error".to_string(),
            &full.message,
            &full.stack_trace,
            &Some(serde_json::to_string(full.context.as_ref().unwrap()).unwrap()),
            &full.source,
        )
    );
    assert_eq!(
        (&row.7, &row.8, &row.9, &row.10, &row.11, &row.12),
        (
            &full.environment,
            &full.url,
            &full.user_agent,
            &full.ip_address,
            &full.release,
            &Some(serde_json::to_string(full.extra.as_ref().unwrap()).unwrap()),
        )
    );
    let row = read(bare.event_id).await.unwrap();
    assert_eq!(
        (row.4, row.5, row.8, row.9, row.10, row.11, row.12),
        (None, None, None, None, None, None, None)
    );

    // Three of these five were stored above or are in the batch twice.
    let fresh: Vec<_> = (0..3).map(|i| event(&format!("fresh {i}"))).collect();
    let again = [
        full.clone(),
        fresh[0].clone(),
        bare.clone(),
        fresh[1].clone(),
        fresh[2].clone(),
        fresh[2].clone(),
    ];
    let outcome = process_batch(&db.pool, &stored(&again)).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (3, 3));
    assert_eq!(stored_events(&db.pool).await, 5);
    assert_eq!(counted(&db.pool).await, 5);
    assert_eq!(rollup_total(&db.pool).await, 5);
}

#[tokio::test]
async fn a_batch_larger_than_one_copy_piece_is_stored_whole_and_once() {
    let db = TestDb::new().await;
    // 800 events of ~1.1 KB: the COPY goes out in several pieces of 256 KiB.
    let pad = "x".repeat(1024);
    let events: Vec<_> = (0..800)
        .map(|i| {
            let mut e = event(TEMPLATES[i % 10]);
            e.context = Some(serde_json::json!({ "pad": pad, "i": i }));
            e
        })
        .collect();
    let every_other: Vec<_> = events.iter().step_by(2).cloned().collect();
    let first = process_batch(&db.pool, &stored(&every_other))
        .await
        .unwrap();
    assert_eq!((first.inserted, first.duplicates), (400, 0));
    // Now all of them: the stored half sits in every piece, so the COPY fails part way and the
    // batch goes in again skipping them.
    let all = process_batch(&db.pool, &stored(&events)).await.unwrap();
    assert_eq!((all.inserted, all.duplicates), (400, 400));
    assert_eq!(counted(&db.pool).await, 800);
    assert_eq!(stored_events(&db.pool).await, 800);
    assert_eq!(rollup_total(&db.pool).await, 800);
    let (intact, sum_i): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE context::jsonb ->> 'pad' = $1),
                sum((context::jsonb ->> 'i')::bigint)::bigint
         FROM events",
    )
    .bind(&pad)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((intact, sum_i), (800, (0..800).sum::<i64>()));
    assert_activity_matches_groups(&db.pool, 10).await;
}

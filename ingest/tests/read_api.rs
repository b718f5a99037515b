//! The dashboard read API against real Postgres, Redis and RabbitMQ: errors (filters, sorting,
//! paging, detail, events, resolve/reopen/delete), tenant isolation, stats and trends against
//! hand-computed figures, the Redis cache (hit, invalidation by a processed event, ETag/304,
//! Redis down), performance, monitoring and uptime.
//!
//! Data is placed at known times by calling the worker's unit of work (`process_batch`) directly;
//! the cache test goes through the whole pipeline.

mod support;

use chrono::{
    DateTime, Datelike, Duration as ChronoDuration, DurationRound, NaiveTime, TimeZone, Utc,
};
use faultline_shared::{
    db,
    domain::{ApiKey, DEFAULT_PROJECT_ID, ErrorEvent, Level, Permission, Permissions, stored},
};
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::time::Duration;
use support::TestApp;
use uuid::Uuid;
use worker::process::process_batch;

fn event(message: &str, level: Level, source: &str, env: &str, at: DateTime<Utc>) -> ErrorEvent {
    ErrorEvent {
        event_id: Uuid::now_v7(),
        project_id: DEFAULT_PROJECT_ID,
        received_at: at,
        level,
        message: message.to_string(),
        source: source.to_string(),
        environment: env.to_string(),
        stack_trace: None,
        context: Some(json!({"user_id": "u1"})),
        url: None,
        user_agent: None,
        ip_address: None,
        release: None,
        fingerprint: None,
        frames: None,
        extra: None,
    }
}

async fn call(app: &TestApp, method: Method, path: &str, key: &str) -> Response {
    app.client
        .request(method, format!("{}{}", app.addr, path))
        .header("x-api-key", key)
        .send()
        .await
        .expect("request sent")
}

async fn get_json(app: &TestApp, path: &str) -> Value {
    let resp = app.get(path).await;
    assert_eq!(resp.status(), 200, "GET {path}");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "success", "{body}");
    body["data"].clone()
}

async fn group_id(app: &TestApp, message: &str) -> Uuid {
    let (id,): (Uuid,) = sqlx::query_as("SELECT id FROM error_groups WHERE message = $1")
        .bind(message)
        .fetch_one(&app.db.pool)
        .await
        .expect("group");
    id
}

/// A key of another project, with every permission.
async fn other_project_key(app: &TestApp) -> String {
    let project = db::ensure_project(&app.db.pool, "other").await.unwrap();
    let key = ApiKey::generate();
    db::insert_key(
        &app.db.pool,
        project,
        "other",
        &key,
        &Permissions::new(Permission::ALL.to_vec()),
        None,
    )
    .await
    .unwrap();
    key.expose().to_string()
}

fn messages(data: &Value) -> Vec<String> {
    data["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

/// Five groups: alpha (3 events, error, backend, production), beta (1, warning, frontend,
/// staging), gamma (2, info, backend, staging), delta (1, error, api, production, oldest),
/// epsilon (4, debug, frontend, production).
async fn seed_five(app: &TestApp) -> DateTime<Utc> {
    let now = Utc::now();
    let m = |mins: i64| now - ChronoDuration::minutes(mins);
    let events = vec![
        event(
            "alpha failure",
            Level::Error,
            "backend",
            "production",
            m(50),
        ),
        event(
            "alpha failure",
            Level::Error,
            "backend",
            "production",
            m(30),
        ),
        event(
            "alpha failure",
            Level::Error,
            "backend",
            "production",
            m(10),
        ),
        event("beta warning", Level::Warning, "frontend", "staging", m(40)),
        event("gamma notice", Level::Info, "backend", "staging", m(45)),
        event("gamma notice", Level::Info, "backend", "staging", m(20)),
        event("delta crash", Level::Error, "api", "production", m(300)),
        event(
            "epsilon trace",
            Level::Debug,
            "frontend",
            "production",
            m(60),
        ),
        event(
            "epsilon trace",
            Level::Debug,
            "frontend",
            "production",
            m(35),
        ),
        event(
            "epsilon trace",
            Level::Debug,
            "frontend",
            "production",
            m(25),
        ),
        event(
            "epsilon trace",
            Level::Debug,
            "frontend",
            "production",
            m(5),
        ),
    ];
    process_batch(&app.db.pool, &stored(&events))
        .await
        .expect("batch");
    now
}

#[tokio::test]
async fn listing_filters_sorts_and_pages_the_callers_errors() {
    let app = TestApp::spawn().await;
    let now = seed_five(&app).await;

    let all = get_json(&app, "/api/errors").await;
    assert_eq!(all["total"], 5);
    assert_eq!(all["page"], 1);
    assert_eq!(all["limit"], 50);
    // Default order: last_seen, newest first.
    assert_eq!(
        messages(&all),
        [
            "epsilon trace",
            "alpha failure",
            "gamma notice",
            "beta warning",
            "delta crash"
        ]
    );
    let alpha = &all["errors"][1];
    for field in [
        "id",
        "timestamp",
        "level",
        "message",
        "context",
        "source",
        "environment",
        "fingerprint",
        "resolved",
        "count",
        "first_seen",
        "last_seen",
        "created_at",
        "updated_at",
    ] {
        assert!(alpha.get(field).is_some(), "missing {field}: {alpha}");
    }
    assert_eq!(alpha["count"], 3);
    assert_eq!(alpha["resolved"], false);

    let by = |q: String| {
        let app = &app;
        async move { messages(&get_json(app, &format!("/api/errors?{q}")).await) }
    };
    let by = |q: &str| by(q.to_string());
    assert_eq!(by("level=error").await, ["alpha failure", "delta crash"]);
    assert_eq!(
        by("source=frontend").await,
        ["epsilon trace", "beta warning"]
    );
    assert_eq!(
        by("environment=staging").await,
        ["gamma notice", "beta warning"]
    );
    assert_eq!(by("level=error&source=api").await, ["delta crash"]);
    assert_eq!(
        by("level=error&environment=staging").await,
        Vec::<String>::new()
    );
    assert_eq!(by("q=ALPHA").await, ["alpha failure"]);
    assert_eq!(by("q=%25").await, Vec::<String>::new(), "% is literal");
    assert_eq!(
        by("sort=count&order=desc").await[..2],
        ["epsilon trace", "alpha failure"]
    );
    // beta and delta both count 1 (ties are broken by id): check the rest of the order.
    let asc = by("sort=count&order=asc").await;
    assert_eq!(asc[2..], ["gamma notice", "alpha failure", "epsilon trace"]);
    assert_eq!(by("sort=-first_seen").await[0], "beta warning");
    assert_eq!(by("sort=first_seen&order=asc").await[0], "delta crash");
    let stamp = |mins: i64| {
        (now - ChronoDuration::minutes(mins)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    assert_eq!(
        by(&format!("since={}", stamp(15))).await,
        ["epsilon trace", "alpha failure"]
    );
    assert_eq!(
        by(&format!("until={}&source=frontend", stamp(38))).await,
        ["beta warning"]
    );
    assert_eq!(
        by(&format!("since={}&until={}", stamp(45), stamp(15))).await,
        ["gamma notice", "beta warning"]
    );
    // The total is counted three ways (groups alone, activity rows alone, both joined): each must
    // agree with the list.
    for (q, expected) in [
        ("level=error".to_string(), 2),
        (format!("since={}", stamp(15)), 2),
        (format!("until={}&source=frontend", stamp(38)), 1),
        (format!("since={}&until={}", stamp(45), stamp(15)), 2),
        ("resolved=false".to_string(), 5),
    ] {
        let page = get_json(&app, &format!("/api/errors?{q}")).await;
        assert_eq!(page["total"], expected, "{q}");
    }

    // Paging: totals stay, pages move.
    let page2 = get_json(&app, "/api/errors?limit=2&offset=2").await;
    assert_eq!(page2["total"], 5);
    assert_eq!(page2["page"], 2);
    assert_eq!(page2["limit"], 2);
    assert_eq!(messages(&page2), ["gamma notice", "beta warning"]);
    let last = get_json(&app, "/api/errors?limit=2&offset=4").await;
    assert_eq!(
        (last["page"].clone(), messages(&last)),
        (json!(3), vec!["delta crash".to_string()])
    );

    // Resolved filter.
    let delta = group_id(&app, "delta crash").await;
    let resp = call(
        &app,
        Method::PUT,
        &format!("/api/errors/{delta}/resolve"),
        &app.key,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(by("resolved=true").await, ["delta crash"]);
    assert_eq!(by("resolved=false").await.len(), 4);
    assert_eq!(by("resolved=false&level=error").await, ["alpha failure"]);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_list_parameters_get_400_naming_each_parameter() {
    let app = TestApp::spawn().await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("level=fatal", "level"),
        ("resolved=maybe", "resolved"),
        ("sort=name", "sort"),
        ("order=up", "order"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        (
            "since=2026-11-02T00:00:00Z&until=2026-11-01T00:00:00Z",
            "since",
        ),
    ] {
        let resp = app.get(&format!("/api/errors?{query}")).await;
        assert_eq!(resp.status(), 400, "{query}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "error");
        assert_eq!(body["code"], "validation_error");
        assert!(body["details"].get(param).is_some(), "{query}: {body}");
        assert!(body["request_id"].is_string());
    }
    // Every bad parameter is named at once.
    let body: Value = app
        .get("/api/errors?limit=500&level=nope")
        .await
        .json()
        .await
        .unwrap();
    assert!(body["details"]["limit"].is_string() && body["details"]["level"].is_string());
    // Boundaries are accepted.
    assert_eq!(app.get("/api/errors?limit=1").await.status(), 200);
    assert_eq!(
        app.get("/api/errors?limit=100&offset=0").await.status(),
        200
    );
    app.shutdown().await;
}

/// Postgres keeps `context` as the JSON text sent (json). A number beyond f64 has no tree form;
/// ingest refuses one, but a message put on the queue by hand (dead letters moved back) can carry
/// it. The group's detail, its events and the list return that context as its text instead of
/// failing.
#[tokio::test]
async fn a_stored_context_no_json_tree_can_hold_is_returned_as_its_text() {
    let app = TestApp::spawn().await;
    let mut events = stored(&[event(
        "huge number",
        Level::Error,
        "backend",
        "production",
        Utc::now(),
    )]);
    let raw = r#"{"n": 1e400}"#;
    events[0].context = Some(serde_json::value::RawValue::from_string(raw.into()).unwrap());
    process_batch(&app.db.pool, &events).await.unwrap();
    let (id,): (Uuid,) = sqlx::query_as("SELECT id FROM error_groups")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    let detail = get_json(&app, &format!("/api/errors/{id}")).await;
    assert_eq!(detail["context"], raw, "{detail}");
    assert_eq!(detail["recent_events"][0]["context"], raw, "{detail}");
    let page = get_json(&app, &format!("/api/errors/{id}/events")).await;
    assert_eq!(page["events"][0]["context"], raw, "{page}");
    let resp = app.get("/api/errors").await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_error_detail_explains_its_grouping_and_pages_its_events() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    let events: Vec<_> = (0..12)
        .map(|i| {
            let mut e = event(
                &format!("user {} not found", 100 + i),
                Level::Error,
                "backend",
                "production",
                now - ChronoDuration::minutes(60 - i),
            );
            e.stack_trace = Some(
                "Error: not found\n    at findUser (users.js:10:5)\n    at main (app.js:3:1)"
                    .into(),
            );
            e.context = Some(json!({"i": i}));
            e
        })
        .collect();
    process_batch(&app.db.pool, &stored(&events)).await.unwrap();
    let (id,): (Uuid,) = sqlx::query_as("SELECT id FROM error_groups")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    let detail = get_json(&app, &format!("/api/errors/{id}")).await;
    assert_eq!(detail["id"], id.to_string());
    assert_eq!(detail["count"], 12);
    assert_eq!(detail["message"], "user 111 not found", "latest sample");
    assert!(detail["stack_trace"].as_str().unwrap().contains("findUser"));
    let grouping = &detail["grouping"];
    assert!(
        grouping["normalized_message"]
            .as_str()
            .unwrap()
            .contains("user")
    );
    assert!(
        !grouping["normalized_message"]
            .as_str()
            .unwrap()
            .contains("111")
    );
    assert!(grouping["version"].as_i64().unwrap() >= 1);
    assert!(grouping["frames"].is_array());
    assert_eq!(detail["events_stored"], 12);
    let recent = detail["recent_events"].as_array().unwrap();
    assert_eq!(recent.len(), 10);
    assert_eq!(
        recent[0]["context"],
        json!({"i": 11}),
        "newest first, with context"
    );

    let page = get_json(&app, &format!("/api/errors/{id}/events?limit=5&offset=10")).await;
    assert_eq!(page["total"], 12);
    assert_eq!(page["page"], 3);
    let contexts: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["context"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(contexts, [1, 0]);
    assert_eq!(
        app.get(&format!("/api/errors/{id}/events?limit=0"))
            .await
            .status(),
        400
    );

    // Malformed and unknown ids.
    for path in ["/api/errors/not-a-uuid", "/api/errors/123/events"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["details"]["id"].is_string());
    }
    let unknown = Uuid::new_v4();
    for path in [
        format!("/api/errors/{unknown}"),
        format!("/api/errors/{unknown}/events"),
    ] {
        let resp = app.get(&path).await;
        assert_eq!(resp.status(), 404, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "not_found");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn another_projects_key_gets_404_for_every_error_route() {
    let app = TestApp::spawn().await;
    seed_five(&app).await;
    let id = group_id(&app, "alpha failure").await;
    let other = other_project_key(&app).await;
    for (method, path) in [
        (Method::GET, format!("/api/errors/{id}")),
        (Method::GET, format!("/api/errors/{id}/events")),
        (Method::PUT, format!("/api/errors/{id}/resolve")),
        (Method::PUT, format!("/api/errors/{id}/reopen")),
        (Method::DELETE, format!("/api/errors/{id}")),
    ] {
        let resp = call(&app, method.clone(), &path, &other).await;
        assert_eq!(resp.status(), 404, "{method} {path}");
    }
    let resp = call(&app, Method::GET, "/api/errors", &other).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"]["total"], 0);
    let resp = call(&app, Method::GET, "/api/stats", &other).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"]["total_errors"], 0);
    assert_eq!(body["data"]["errors_today"], 0);
    // Nothing changed for the owner.
    let detail = get_json(&app, &format!("/api/errors/{id}")).await;
    assert_eq!(detail["resolved"], false);
    assert_eq!(detail["count"], 3);
    app.shutdown().await;
}

#[tokio::test]
async fn resolve_reopen_and_delete_need_write_and_change_the_group() {
    let app = TestApp::spawn().await;
    seed_five(&app).await;
    let id = group_id(&app, "alpha failure").await;
    let reader = app.create_key(&[Permission::Read]).await;
    let ingest_only = app.create_key(&[Permission::Ingest]).await;
    for (method, path) in [
        (Method::PUT, format!("/api/errors/{id}/resolve")),
        (Method::PUT, format!("/api/errors/{id}/reopen")),
        (Method::DELETE, format!("/api/errors/{id}")),
    ] {
        let resp = call(&app, method.clone(), &path, &reader).await;
        assert_eq!(resp.status(), 403, "{method} {path}");
    }
    assert_eq!(
        call(&app, Method::GET, "/api/errors", &ingest_only)
            .await
            .status(),
        403
    );
    assert_eq!(
        call(&app, Method::GET, "/api/errors", &reader)
            .await
            .status(),
        200
    );
    assert_eq!(
        call(&app, Method::GET, "/api/errors", "nope")
            .await
            .status(),
        401
    );

    let resp = call(
        &app,
        Method::PUT,
        &format!("/api/errors/{id}/resolve"),
        &app.key,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"data": {"id": id, "status": "resolved"}, "status": "success"})
    );
    let detail = get_json(&app, &format!("/api/errors/{id}")).await;
    assert_eq!(detail["resolved"], true);
    assert!(detail["resolved_at"].is_string());
    // Resolving twice records one resolution.
    call(
        &app,
        Method::PUT,
        &format!("/api/errors/{id}/resolve"),
        &app.key,
    )
    .await;
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM error_resolutions")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);

    let resp = call(
        &app,
        Method::PUT,
        &format!("/api/errors/{id}/reopen"),
        &app.key,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let detail = get_json(&app, &format!("/api/errors/{id}")).await;
    assert_eq!(detail["resolved"], false);

    let resp = call(&app, Method::DELETE, &format!("/api/errors/{id}"), &app.key).await;
    assert_eq!(resp.status(), 204);
    assert_eq!(app.get(&format!("/api/errors/{id}")).await.status(), 404);
    assert_eq!(
        call(&app, Method::DELETE, &format!("/api/errors/{id}"), &app.key)
            .await
            .status(),
        404
    );
    let (events, counts, resolutions): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE group_id = $1),
                (SELECT count(*) FROM error_counts_minute WHERE group_id = $1),
                (SELECT count(*) FROM error_resolutions WHERE group_id = $1)",
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((events, counts, resolutions), (0, 0, 0));
    // The hourly totals lost exactly the deleted group's occurrences.
    let (hourly, minutes): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT sum(count) FROM error_counts_hour)::bigint,
                (SELECT sum(count) FROM error_counts_minute)::bigint",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((hourly, minutes), (8, 8));
    assert_eq!(get_json(&app, "/api/errors").await["total"], 4);
    for bad in ["/api/errors/xyz/resolve", "/api/errors/xyz/reopen"] {
        assert_eq!(call(&app, Method::PUT, bad, &app.key).await.status(), 400);
    }
    assert_eq!(
        call(&app, Method::DELETE, "/api/errors/xyz", &app.key)
            .await
            .status(),
        400
    );
    app.shutdown().await;
}

#[tokio::test]
async fn stats_match_hand_computed_figures() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    let today = Utc.from_utc_datetime(&now.date_naive().and_time(NaiveTime::MIN));
    let week = today - ChronoDuration::days(i64::from(now.weekday().num_days_from_monday()));
    let month = Utc.from_utc_datetime(
        &now.date_naive()
            .with_day(1)
            .unwrap()
            .and_time(NaiveTime::MIN),
    );
    // Occurrences at known ages (minutes), in three groups.
    let ages = [
        ("one", 1i64),
        ("one", 2),
        ("one", 90),
        ("two", 60 * 20),
        ("two", 60 * 23),
        // Either side of the 24-hour boundary (inside and outside the partial first hour).
        ("two", 60 * 24 - 1),
        ("two", 60 * 24 + 1),
        ("three", 60 * 24 * 3),
        ("three", 60 * 24 * 9),
        ("three", 60 * 24 * 40),
    ];
    let events: Vec<_> = ages
        .iter()
        .map(|(m, age)| {
            event(
                &format!("stats {m}"),
                Level::Error,
                "backend",
                "production",
                now - ChronoDuration::minutes(*age),
            )
        })
        .collect();
    process_batch(&app.db.pool, &stored(&events)).await.unwrap();
    let at = |age: i64| now - ChronoDuration::minutes(age);
    let count_since =
        |from: DateTime<Utc>| ages.iter().filter(|(_, a)| at(*a) >= from).count() as i64;

    // Resolve "three" (first seen 40 days ago): one resolution of about 40 days.
    let three = group_id(&app, "stats three").await;
    call(
        &app,
        Method::PUT,
        &format!("/api/errors/{three}/resolve"),
        &app.key,
    )
    .await;

    let s = get_json(&app, "/api/stats").await;
    assert_eq!(s["total_errors"], 3);
    assert_eq!(s["resolved_errors"], 1);
    assert_eq!(s["errors_today"], count_since(today));
    assert_eq!(s["errors_this_week"], count_since(week));
    assert_eq!(s["errors_this_month"], count_since(month));
    let last_24h = count_since(now - ChronoDuration::hours(24));
    assert_eq!(last_24h, 6);
    assert_eq!(s["events_24h"], 6);
    assert_eq!(
        s["error_rate_24h"],
        json!(((6.0f64 / 24.0) * 100.0).round() / 100.0)
    );
    assert_eq!(s["resolution_rate"], json!(33.3));
    let avg = s["avg_resolution_seconds"].as_f64().unwrap();
    let expected = 40.0 * 86400.0;
    assert!((avg - expected).abs() < 60.0, "{avg} vs {expected}");
    assert_eq!(s["avg_resolution_time"], "40d 0h");
    app.shutdown().await;
}

#[tokio::test]
async fn trends_put_events_in_utc_buckets_with_empty_ones_included() {
    let app = TestApp::spawn().await;
    let now = Utc::now();
    let current = now.duration_trunc(ChronoDuration::hours(1)).unwrap();
    // Two errors and a warning in the current hour, one error five hours ago, one warning at the
    // very start of the hour 23 hours ago.
    let five_ago = current - ChronoDuration::hours(5) + ChronoDuration::minutes(30);
    let start_23 = current - ChronoDuration::hours(23);
    let events = vec![
        event("trend a", Level::Error, "backend", "production", now),
        event("trend a", Level::Error, "backend", "production", now),
        event("trend b", Level::Warning, "backend", "production", now),
        event("trend a", Level::Error, "backend", "production", five_ago),
        event("trend b", Level::Warning, "backend", "production", start_23),
    ];
    process_batch(&app.db.pool, &stored(&events)).await.unwrap();
    let b = group_id(&app, "trend b").await;
    call(
        &app,
        Method::PUT,
        &format!("/api/errors/{b}/resolve"),
        &app.key,
    )
    .await;

    let t = get_json(&app, "/api/analytics/trends?period=day&group_by=hour").await;
    assert_eq!(t["period"], "day");
    let points = t["data_points"].as_array().unwrap();
    // From the hour holding now - 24h to the current hour: 25 buckets.
    assert_eq!(points.len(), 25);
    let at = |ts: DateTime<Utc>| {
        points
            .iter()
            .find(|p| {
                p["timestamp"]
                    .as_str()
                    .unwrap()
                    .parse::<DateTime<Utc>>()
                    .unwrap()
                    == ts
            })
            .unwrap_or_else(|| panic!("no bucket {ts}"))
    };
    let last = at(current);
    assert_eq!(
        (
            last["error_count"].clone(),
            last["critical_count"].clone(),
            last["resolved_count"].clone()
        ),
        (json!(3), json!(2), json!(1))
    );
    let five = at(current - ChronoDuration::hours(5));
    assert_eq!(
        (five["error_count"].clone(), five["critical_count"].clone()),
        (json!(1), json!(1))
    );
    let early = at(start_23);
    assert_eq!(
        (
            early["error_count"].clone(),
            early["critical_count"].clone()
        ),
        (json!(1), json!(0))
    );
    let total: i64 = points
        .iter()
        .map(|p| p["error_count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 5);
    let empty = points.iter().filter(|p| p["error_count"] == 0).count();
    assert_eq!(empty, 22);

    let week = get_json(&app, "/api/analytics/trends").await;
    assert_eq!(week["period"], "week");
    let days = week["data_points"].as_array().unwrap();
    assert_eq!(days.len(), 8);
    let total: i64 = days
        .iter()
        .map(|p| p["error_count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 5);
    let year = get_json(&app, "/api/analytics/trends?period=year&group_by=month").await;
    let months = year["data_points"].as_array().unwrap();
    assert!((12..=13).contains(&months.len()), "{}", months.len());

    for bad in [
        "period=decade",
        "group_by=minute",
        "period=week&group_by=year",
    ] {
        let resp = app.get(&format!("/api/analytics/trends?{bad}")).await;
        assert_eq!(resp.status(), 400, "{bad}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_cached_list_is_served_until_a_processed_event_bumps_the_generation() {
    let app = TestApp::spawn_with_worker().await;
    let post = |m: &'static str| {
        let app = &app;
        async move {
            let resp = app
                .post_event(&json!({"message": m, "source": "backend"}))
                .await;
            assert_eq!(resp.status(), 202);
        }
    };
    post("cache first").await;
    app.wait_for_count(1, 30).await;

    let first = app.get("/api/errors").await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["data"]["total"], 1);
    // The worker's bump for the first event may land just after the first read: wait for a hit.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let (etag, body) = loop {
        let resp = app.get("/api/errors").await;
        let hit = resp.headers()["x-cache"] == "HIT";
        let tag = resp.headers()["etag"].to_str().unwrap().to_string();
        let again: Value = resp.json().await.unwrap();
        if hit {
            assert_eq!(again, body);
            break (tag, again);
        }
        assert!(tokio::time::Instant::now() < deadline, "never a cache hit");
        // Poll, don't spin: a tight loop would run into the key's rate limit.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let second = app.get("/api/errors").await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(second.json::<Value>().await.unwrap(), body);

    // A matching If-None-Match gets 304 without a body; another ETag gets the body.
    let not_modified = app
        .client
        .get(format!("{}/api/errors", app.addr))
        .header("x-api-key", &app.key)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(not_modified.headers()["etag"].to_str().unwrap(), etag);
    let other = app
        .client
        .get(format!("{}/api/errors", app.addr))
        .header("x-api-key", &app.key)
        .header("if-none-match", "\"0000\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    // A new event, once processed, makes the cached list stale within about a second.
    post("cache second").await;
    app.wait_for_count(2, 30).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let resp = app.get("/api/errors").await;
        let cache = resp.headers()["x-cache"].to_str().unwrap().to_string();
        let body: Value = resp.json().await.unwrap();
        if body["data"]["total"] == 2 {
            assert_eq!(cache, "MISS");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cache never invalidated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = app.get("/api/errors").await;
    assert_eq!(resp.headers()["x-cache"], "HIT");
    assert_ne!(resp.headers()["etag"].to_str().unwrap(), etag);

    // Resolve invalidates at once.
    let stats = app.get("/api/stats").await;
    assert_eq!(stats.headers()["x-cache"], "MISS");
    assert_eq!(app.get("/api/stats").await.headers()["x-cache"], "HIT");
    let id = group_id(&app, "cache first").await;
    call(
        &app,
        Method::PUT,
        &format!("/api/errors/{id}/resolve"),
        &app.key,
    )
    .await;
    let stats = app.get("/api/stats").await;
    assert_eq!(stats.headers()["x-cache"], "MISS");
    let body: Value = stats.json().await.unwrap();
    assert_eq!(body["data"]["resolved_errors"], 1);

    // Hits and misses are counted in the metrics.
    let metrics = app
        .client
        .get(format!("{}/metrics", app.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hits = metrics
        .lines()
        .find(|l| {
            l.starts_with("read_cache_requests_total{")
                && l.contains("endpoint=\"errors\"")
                && l.contains("result=\"hit\"")
        })
        .unwrap_or_else(|| panic!("no hit counter in {metrics}"));
    assert!(hits.rsplit(' ').next().unwrap().parse::<f64>().unwrap() >= 2.0);
    app.shutdown().await;
}

#[tokio::test]
async fn with_redis_unreachable_reads_answer_uncached_and_health_says_so() {
    let app = TestApp::spawn_with(|s| s.services.redis_url = "redis://127.0.0.1:1".into()).await;
    seed_five(&app).await;
    let started = std::time::Instant::now();
    for _ in 0..3 {
        let resp = app.get("/api/errors").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-cache"], "BYPASS");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["data"]["total"], 5);
    }
    assert_eq!(get_json(&app, "/api/stats").await["total_errors"], 5);
    let id = group_id(&app, "alpha failure").await;
    let resp = call(
        &app,
        Method::PUT,
        &format!("/api/errors/{id}/resolve"),
        &app.key,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    let health: Value = app
        .client
        .get(format!("{}/health", app.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["redis"]["status"], "unhealthy");
    app.shutdown().await;
}

#[tokio::test]
async fn performance_and_system_metrics_are_measured() {
    let app = TestApp::spawn().await;
    for _ in 0..5 {
        app.get("/api/errors").await;
    }
    app.get("/api/errors?limit=0").await;
    // The recorder checks every second in tests: wait for the first "api" check.
    wait_for_row(
        &app,
        "SELECT count(*) FROM health_checks WHERE component = 'api'",
    )
    .await;
    let perf = get_json(&app, "/api/analytics/performance").await;
    assert!(perf["requests"].as_u64().unwrap() >= 6, "{perf}");
    assert!(perf["avg_response_time"].as_f64().unwrap() > 0.0);
    // Per minute of the window this process was up in: one minute, or two when the test runs
    // across a minute's turn (it then failed, asking for 6 a minute from 6 requests in 2).
    let minutes = perf["window_minutes"].as_f64().unwrap();
    assert!((1.0..=2.0).contains(&minutes), "{perf}");
    let per_minute = perf["requests"].as_f64().unwrap() / minutes;
    assert_eq!(
        perf["throughput_rpm"].as_f64().unwrap(),
        (per_minute * 100.0).round() / 100.0,
        "{perf}"
    );
    assert!(per_minute >= 3.0, "{perf}");
    assert_eq!(
        perf["error_rate_percent"],
        json!(0.0),
        "400s are not server errors"
    );
    assert_eq!(perf["availability_percent"], json!(100.0));
    let score = perf["performance_score"].as_f64().unwrap();
    assert!((0.0..=10.0).contains(&score));

    let m = get_json(&app, "/api/monitoring/metrics?timeframe=24h").await;
    assert_eq!(m["timeframe"], "24h");
    for field in [
        "cpu_usage_percent",
        "memory_usage_percent",
        "disk_usage_percent",
    ] {
        let v = m[field].as_f64().unwrap_or_else(|| panic!("{field}: {m}"));
        assert!((0.0..=100.0).contains(&v), "{field} {v}");
    }
    assert!(m["network_io"]["bytes_in"].is_u64());
    assert!(m["active_connections"].as_u64().unwrap() >= 1);
    assert!(m["requests_per_minute"].as_f64().unwrap() > 0.0);
    assert_eq!(
        app.get("/api/monitoring/metrics?timeframe=2h")
            .await
            .status(),
        400
    );
    app.shutdown().await;
}

#[tokio::test]
async fn monitoring_services_reports_dependencies_and_worker_liveness() {
    let app = TestApp::spawn_with_worker().await;
    let resp = app
        .post_event(&json!({"message": "monitor me", "source": "backend"}))
        .await;
    assert_eq!(resp.status(), 202);
    app.wait_for_count(1, 30).await;
    // The worker's heartbeat (every 5 s) reports its last batch's delay once it committed one.
    wait_for_row(
        &app,
        "SELECT count(*) FROM service_heartbeats
         WHERE service = 'worker' AND details->>'ingest_to_visible_ms' IS NOT NULL",
    )
    .await;
    let data = get_json(&app, "/api/monitoring/services").await;
    let services = data["services"].as_array().unwrap();
    let by = |c: &str| {
        services
            .iter()
            .find(|s| s["component"] == c)
            .unwrap()
            .clone()
    };
    let db = by("postgres");
    assert_eq!(db["name"], "Database");
    assert_eq!(db["status"], "healthy");
    assert!(db["response_time_ms"].as_f64().unwrap() > 0.0);
    assert!(db["details"]["max_connections"].as_i64().unwrap() > 0);
    assert!(db["details"]["connections"].as_i64().unwrap() > 0);
    assert_eq!(by("redis")["status"], "healthy");
    let mq = by("rabbitmq");
    assert_eq!(mq["status"], "healthy");
    assert_eq!(mq["details"]["consumers"], 1);
    assert!(mq["details"]["queue_depth"].is_u64());
    let worker = by("worker");
    assert_eq!(worker["status"], "healthy");
    assert!(worker["details"]["ingest_to_visible_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        worker["details"]["consumer_lag_messages"],
        mq["details"]["queue_depth"]
    );
    assert!(worker["last_checked"].is_string());
    assert_eq!(
        by("alerter")["status"],
        "unknown",
        "no alerter ever ran here"
    );
    assert_eq!(data["overall_health"], "healthy");
    // A worker that stops cleanly removes its heartbeat at once.
    let mut app = app;
    app.stop_worker().await;
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM service_heartbeats WHERE service = 'worker'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(n, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn uptime_comes_from_recorded_health_checks() {
    // No recorder check during the test: only the checks placed below count.
    let app = TestApp::spawn_with(|s| s.health_check_interval = Duration::from_secs(3600)).await;
    let now = Utc::now();
    let down_at = now - ChronoDuration::hours(2);
    for (hours_ago, healthy) in [
        (3, true),
        (2, false),
        (1, true),
        (24 * 3, true),
        (24 * 10, false),
    ] {
        sqlx::query(
            "INSERT INTO health_checks (checked_at, instance, component, healthy, response_time_ms)
             VALUES ($1, 'elsewhere', 'api', $2, 1.0)",
        )
        .bind(if hours_ago == 2 {
            down_at
        } else {
            now - ChronoDuration::hours(hours_ago)
        })
        .bind(healthy)
        .execute(&app.db.pool)
        .await
        .unwrap();
    }
    let u = get_json(&app, "/api/monitoring/uptime").await;
    // 24 h: 3 h, 2 h (down), 1 h → 2 of 3; 7 d: + 3 d → 3 of 4; 30 d: + 10 d (down) → 3 of 5.
    assert_eq!(u["uptime_percent_24h"], json!(66.667));
    assert_eq!(u["uptime_percent_7d"], json!(75.0));
    assert_eq!(u["uptime_percent_30d"], json!(60.0));
    // Healthy 3 d ago → down 10 d ago is not a transition (older first): 10 d down, 3 d up, 3 h
    // up, 2 h down: one incident.
    assert_eq!(u["incidents_count"], 1);
    let last: DateTime<Utc> = u["last_downtime"].as_str().unwrap().parse().unwrap();
    assert!((last - down_at).num_milliseconds().abs() < 2);
    let hours = u["current_uptime_hours"].as_f64().unwrap();
    assert!((hours - 1.0).abs() < 0.05, "{hours}");
    app.shutdown().await;
}

/// Polls `sql` (a count) until it is at least 1, for up to 15 seconds.
async fn wait_for_row(app: &TestApp, sql: &'static str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&app.db.pool).await.unwrap();
        if n >= 1 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {sql}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_worker_coalesces_generation_bumps_to_about_one_a_second() {
    use worker::invalidate::{Progress, bump_loop};
    let prefix = format!("test_{}", faultline_shared::testkit::unique_tag());
    let progress = Progress::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(bump_loop(
        faultline_shared::testkit::redis_url(),
        prefix.clone(),
        progress.clone(),
        stop_rx,
    ));
    let other = Uuid::new_v4();
    // A commit every 10 ms for 2.5 s touching the default project; one commit for another project.
    let started = tokio::time::Instant::now();
    progress.committed([other], 1, Some(Utc::now()));
    while started.elapsed() < Duration::from_millis(2500) {
        progress.committed([DEFAULT_PROJECT_ID], 1, Some(Utc::now()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    task.await.unwrap();
    let client = redis::Client::open(faultline_shared::testkit::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let generation = |p: Uuid| faultline_shared::cache::generation_key(&prefix, p);
    let busy: u64 = redis::cmd("GET")
        .arg(generation(DEFAULT_PROJECT_ID))
        .query_async(&mut conn)
        .await
        .unwrap();
    let quiet: u64 = redis::cmd("GET")
        .arg(generation(other))
        .query_async(&mut conn)
        .await
        .unwrap();
    // ~250 commits: bumped at once, then at most once a second, and once more on stop.
    assert!((3..=5).contains(&busy), "busy project bumped {busy} times");
    assert_eq!(quiet, 1);
    let _: () = redis::cmd("DEL")
        .arg(generation(DEFAULT_PROJECT_ID))
        .arg(generation(other))
        .query_async(&mut conn)
        .await
        .unwrap();
}

//! The web dashboard in a real browser: a real ingest and worker hold a few error groups, then
//! `tests/browser/dashboard.test.mjs` drives Debian's Chromium (playwright-core) through the key
//! prompt, the errors list, a detail (resolve, delete), the overview chart, health and settings.
//! Needs /usr/bin/chromium and `npm ci` in tests/browser (scripts/browser-setup.sh does both);
//! without them the test fails and says so. Screenshots land in target/dashboard-screenshots.

mod support;

use serde_json::json;
use std::{path::PathBuf, time::Duration};
use support::TestApp;

const CHROMIUM: &str = "/usr/bin/chromium";

/// (message, level, occurrences, in-app module): three groups, six events.
const GROUPS: [(&str, &str, i64, &str); 3] = [
    ("Database connection refused", "error", 3, "db"),
    ("Slow query on the orders table", "warning", 2, "orders"),
    ("Cache miss storm", "info", 1, "cache"),
];

/// A Node.js stack with two in-app frames (which the fingerprint uses) and two library ones.
fn stack(message: &str, module: &str) -> String {
    format!(
        "Error: {message}\n    at {module}Call (/srv/app/src/{module}.js:42:11)\n    \
         at handler (/srv/app/src/routes/{module}.js:17:5)\n    \
         at Layer.handle (/srv/app/node_modules/express/lib/router/layer.js:95:5)\n    \
         at process.processTicksAndRejections (node:internal/process/task_queues:95:5)"
    )
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_resolves_and_charts_posted_errors_in_a_real_browser() {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/browser-setup.sh (apt-get install chromium) before this test"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run scripts/browser-setup.sh (npm ci in ingest/tests/browser)"
    );

    let app = TestApp::spawn_with_worker().await;
    let mut total = 0;
    for (message, level, n, module) in GROUPS {
        for i in 0..n {
            let event = json!({
                "message": message,
                "level": level,
                "source": "checkout",
                "environment": "production",
                "release": "2.4.1",
                "stack_trace": stack(message, module),
                "context": {"request": i, "user_id": format!("u{i}")},
            });
            let response = app.post_event(&event).await;
            assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
            total += 1;
        }
    }
    app.wait_for_count(total, 20).await;

    let expect = json!({
        "groups": GROUPS.iter().map(|(m, l, n, _)| json!({"message": m, "level": l, "count": n})).collect::<Vec<_>>(),
        "events": total,
    });
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/dashboard-screenshots");
    let run = tokio::process::Command::new("node")
        .arg("dashboard.test.mjs")
        .current_dir(browser_dir())
        .env("FAULTLINE_URL", &app.addr)
        .env("FAULTLINE_KEY", &app.key)
        .env("FAULTLINE_EXPECT", expect.to_string())
        .env("FAULTLINE_SCREENSHOTS", &shots)
        .env("CHROMIUM_PATH", CHROMIUM)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test finishes within 240 s")
        .expect("node runs (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nscreenshots in {}",
        output.status,
        shots.display()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sparklines_count_each_groups_events_per_hour_for_the_last_day() {
    let app = TestApp::spawn_with_worker().await;
    for (message, n) in [("first failure", 3), ("second failure", 1)] {
        for _ in 0..n {
            let event = json!({"message": message, "level": "error", "source": "web"});
            assert_eq!(app.post_event(&event).await.status(), 202);
        }
    }
    app.wait_for_count(4, 20).await;
    let list: serde_json::Value = app.get("/api/errors").await.json().await.unwrap();
    let ids: Vec<String> = list["data"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let unknown = support::new_uuid().to_string();
    let path = format!("/api/errors/sparklines?ids={},{unknown}", ids.join(","));
    let body: serde_json::Value = app.get(&path).await.json().await.unwrap();
    let lines = &body["data"]["sparklines"];
    let totals: Vec<i64> = ids
        .iter()
        .chain([&unknown])
        .map(|id| {
            let counts = lines[id].as_array().expect("one line per id");
            assert_eq!(counts.len(), 24);
            counts.iter().map(|c| c.as_i64().unwrap()).sum()
        })
        .collect();
    let mut sorted = totals[..2].to_vec();
    sorted.sort();
    assert_eq!(sorted, [1, 3], "each group's own events, this hour");
    assert_eq!(totals[2], 0, "an unknown id is all zeros");
    // The last slot is the current hour (the previous one if the hour turned meanwhile).
    let first = lines[&ids[0]].as_array().unwrap();
    assert_eq!(
        first[22].as_i64().unwrap() + first[23].as_i64().unwrap(),
        totals[0],
        "the events are in the latest hours"
    );
    let bad = app.get("/api/errors/sparklines?ids=nope").await;
    assert_eq!(bad.status(), 400);
    app.shutdown().await;
}

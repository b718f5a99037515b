//! The alerting API against a real ingest and Postgres: rules, incidents, integrations (secrets
//! never echoed), test sends, and deliveries made by the real alerter code.

mod support;

use chrono::{TimeDelta, Utc};
use faultline_shared::{
    db,
    domain::{ApiKey, DEFAULT_PROJECT_ID, ErrorEvent, Level, Permission, Permissions, stored},
};
use reqwest::Response;
use serde_json::{Value, json};
use support::TestApp;
use uuid::Uuid;

async fn send(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> Response {
    send_as(app, &app.key, method, path, body).await
}

async fn send_as(
    app: &TestApp,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Response {
    let mut req = app
        .client
        .request(method.parse().unwrap(), format!("{}{}", app.addr, path))
        .header("x-api-key", key);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    req.send().await.expect("request sent")
}

async fn json_of(resp: Response) -> Value {
    resp.json().await.expect("JSON body")
}

fn rule_body() -> Value {
    json!({
        "name": "High Error Rate",
        "condition": "error_count > threshold in time_window",
        "threshold": 50,
        "time_window": "5m",
        "notifications": ["email", "slack"],
        "enabled": true
    })
}

#[tokio::test]
async fn rules_are_created_listed_updated_and_deleted_in_the_contract_shape() {
    let app = TestApp::spawn().await;
    let resp = send(&app, "POST", "/api/alerts/rules", Some(rule_body())).await;
    assert_eq!(resp.status(), 201);
    let body = json_of(resp).await;
    assert_eq!(body["status"], "success");
    let rule = &body["data"];
    assert_eq!(rule["name"], "High Error Rate");
    assert_eq!(rule["condition"], "error_count > 50 in 5 minutes");
    assert_eq!(rule["threshold"], 50);
    assert_eq!(rule["time_window"], "5m");
    assert_eq!(rule["notifications"], json!(["email", "slack"]));
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["kind"], "threshold");
    assert_eq!(rule["cooldown"], "10m");
    assert!(rule["last_triggered"].is_null());
    let id = rule["id"].as_str().unwrap().to_string();

    let list = json_of(send(&app, "GET", "/api/alerts/rules", None).await).await;
    assert_eq!(list["data"]["rules"].as_array().unwrap().len(), 1);

    let mut changed = rule_body();
    changed["threshold"] = json!(10);
    changed["time_window"] = json!("1h");
    changed["filters"] = json!({"level": "error", "source": "backend"});
    changed["cooldown"] = json!("30m");
    let resp = send(
        &app,
        "PUT",
        &format!("/api/alerts/rules/{id}"),
        Some(changed),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let updated = json_of(resp).await["data"].clone();
    assert_eq!(
        updated["condition"],
        "error_count > 10 in 1 hour where level = error and source = backend"
    );
    assert_eq!(updated["cooldown"], "30m");
    assert_eq!(updated["filters"]["source"], "backend");

    let resp = send(&app, "DELETE", &format!("/api/alerts/rules/{id}"), None).await;
    assert_eq!(resp.status(), 204);
    let resp = send(&app, "DELETE", &format!("/api/alerts/rules/{id}"), None).await;
    assert_eq!(resp.status(), 404);
    let list = json_of(send(&app, "GET", "/api/alerts/rules", None).await).await;
    assert!(list["data"]["rules"].as_array().unwrap().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_windows_thresholds_and_channels_are_refused_with_details() {
    let app = TestApp::spawn().await;
    let bad = json!({
        "name": "x",
        "threshold": -1,
        "time_window": "5x",
        "notifications": ["email", "sms"],
        "filters": {"level": "fatal", "colour": "red"},
        "kind": "sometimes",
    });
    let resp = send(&app, "POST", "/api/alerts/rules", Some(bad)).await;
    assert_eq!(resp.status(), 400);
    let body = json_of(resp).await;
    assert_eq!(body["code"], "validation_error");
    for field in [
        "threshold",
        "time_window",
        "notifications",
        "filters.level",
        "filters.colour",
        "kind",
    ] {
        assert!(
            body["details"].get(field).is_some(),
            "{field} missing in {body}"
        );
    }
    for window in ["0m", "31d", "5", "m", "1.5h"] {
        let mut b = rule_body();
        b["time_window"] = json!(window);
        let resp = send(&app, "POST", "/api/alerts/rules", Some(b)).await;
        assert_eq!(resp.status(), 400, "{window}");
    }
    let mut b = rule_body();
    b.as_object_mut().unwrap().remove("threshold");
    let resp = send(&app, "POST", "/api/alerts/rules", Some(b)).await;
    assert_eq!(resp.status(), 400);
    let resp = send(
        &app,
        "PUT",
        "/api/alerts/rules/not-a-uuid",
        Some(rule_body()),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let resp = send(
        &app,
        "PUT",
        &format!("/api/alerts/rules/{}", Uuid::now_v7()),
        Some(rule_body()),
    )
    .await;
    assert_eq!(resp.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn another_projects_rules_and_incidents_answer_404() {
    let app = TestApp::spawn().await;
    let rule = json_of(send(&app, "POST", "/api/alerts/rules", Some(rule_body())).await).await;
    let rule_id = rule["data"]["id"].as_str().unwrap().to_string();
    let incident = json_of(
        send(
            &app,
            "POST",
            "/api/alerts/incidents",
            Some(json!({"title": "t", "severity": "low"})),
        )
        .await,
    )
    .await;
    let incident_id = incident["data"]["id"].as_str().unwrap().to_string();

    let other = db::ensure_project(&app.db.pool, "other").await.unwrap();
    let key = ApiKey::generate();
    db::insert_key(
        &app.db.pool,
        other,
        "other",
        &key,
        &Permissions::new(Permission::ALL.to_vec()),
        None,
    )
    .await
    .unwrap();
    let k = key.expose();
    let resp = send_as(
        &app,
        k,
        "PUT",
        &format!("/api/alerts/rules/{rule_id}"),
        Some(rule_body()),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let resp = send_as(
        &app,
        k,
        "DELETE",
        &format!("/api/alerts/rules/{rule_id}"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 404);
    let resp = send_as(
        &app,
        k,
        "PUT",
        &format!("/api/alerts/incidents/{incident_id}"),
        Some(json!({"status": "resolved"})),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let list = json_of(send_as(&app, k, "GET", "/api/alerts/rules", None).await).await;
    assert!(list["data"]["rules"].as_array().unwrap().is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn incidents_are_created_filtered_and_updated() {
    let app = TestApp::spawn().await;
    let resp = send(
        &app,
        "POST",
        "/api/alerts/incidents",
        Some(json!({
            "title": "Database Connection Timeout",
            "severity": "critical",
            "description": "Multiple database connection timeouts detected",
            "assigned_to": "user-123"
        })),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let inc = json_of(resp).await["data"].clone();
    assert_eq!(inc["status"], "open");
    assert_eq!(inc["severity"], "critical");
    assert_eq!(inc["assigned_to"], "user-123");
    let id = inc["id"].as_str().unwrap().to_string();
    send(
        &app,
        "POST",
        "/api/alerts/incidents",
        Some(json!({"title": "Minor", "severity": "low"})),
    )
    .await;

    let crit =
        json_of(send(&app, "GET", "/api/alerts/incidents?severity=critical", None).await).await;
    assert_eq!(crit["data"]["incidents"].as_array().unwrap().len(), 1);
    let all = json_of(send(&app, "GET", "/api/alerts/incidents", None).await).await;
    assert_eq!(all["data"]["incidents"].as_array().unwrap().len(), 2);

    let resp = send(
        &app,
        "PUT",
        &format!("/api/alerts/incidents/{id}"),
        Some(json!({"status": "investigating"})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let updated = json_of(resp).await["data"].clone();
    assert_eq!(updated["status"], "investigating");
    assert_eq!(
        updated["title"], "Database Connection Timeout",
        "absent fields are kept"
    );
    let inv = json_of(
        send(
            &app,
            "GET",
            "/api/alerts/incidents?status=investigating",
            None,
        )
        .await,
    )
    .await;
    assert_eq!(inv["data"]["incidents"].as_array().unwrap().len(), 1);

    let resolved = json_of(
        send(
            &app,
            "PUT",
            &format!("/api/alerts/incidents/{id}"),
            Some(json!({"status": "resolved"})),
        )
        .await,
    )
    .await;
    assert!(resolved["data"]["resolved_at"].is_string());

    let resp = send(
        &app,
        "PUT",
        &format!("/api/alerts/incidents/{id}"),
        Some(json!({"severity": "urgent"})),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let resp = send(
        &app,
        "POST",
        "/api/alerts/incidents",
        Some(json!({"severity": "low"})),
    )
    .await;
    assert_eq!(resp.status(), 400, "title is required");
    let resp = send(&app, "GET", "/api/alerts/incidents?status=closed", None).await;
    assert_eq!(resp.status(), 400);
    app.shutdown().await;
}

#[tokio::test]
async fn integration_secrets_are_never_echoed() {
    let app = TestApp::spawn().await;
    let secret = "whsec-0123456789abcdef";
    let resp = send(
        &app,
        "PUT",
        "/api/settings/integrations/webhook",
        Some(json!({"config": {"url": "https://hooks.example.com/faultline", "secret": secret}, "enabled": true})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(secret), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["data"]["config"]["secret_set"], true);

    let slack_token = "T0000/B0000/SECRETSLACKTOKEN";
    let resp = send(
        &app,
        "PUT",
        "/api/settings/integrations/slack",
        Some(json!({"config": {"webhook_url": format!("https://hooks.slack.com/services/{slack_token}"), "channel": "#alerts"}})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.text().await.unwrap().contains("SECRETSLACKTOKEN"));

    let resp = send(
        &app,
        "PUT",
        "/api/settings/integrations/email",
        Some(json!({"config": {"smtp_server": "smtp.example.com", "port": 587, "tls": "starttls",
                               "username": "alerts", "password": "hunter2-smtp-password",
                               "from_email": "alerts@example.com", "recipients": ["oncall@example.com"]}})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(!resp.text().await.unwrap().contains("hunter2"));

    let resp = send(&app, "GET", "/api/settings/integrations", None).await;
    let text = resp.text().await.unwrap();
    for s in [secret, "SECRETSLACKTOKEN", "hunter2"] {
        assert!(!text.contains(s), "{s} in {text}");
    }
    let body: Value = serde_json::from_str(&text).unwrap();
    let list = body["data"]["integrations"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    let slack = list.iter().find(|i| i["name"] == "slack").unwrap();
    assert_eq!(slack["status"], "configured");
    assert_eq!(slack["config"]["webhook_url"], "https://hooks.slack.com/…");
    assert_eq!(slack["config"]["channel"], "#alerts");
    let email = list.iter().find(|i| i["name"] == "email").unwrap();
    assert_eq!(email["config"]["password_set"], true);
    assert_eq!(email["config"]["from_email"], "alerts@example.com");

    // Changing the URL without the secret keeps the stored secret.
    let resp = send(
        &app,
        "PUT",
        "/api/settings/integrations/webhook",
        Some(json!({"config": {"url": "https://hooks.example.com/v2"}})),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (config,): (Value,) =
        sqlx::query_as("SELECT config FROM integrations WHERE name = 'webhook'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(config["secret"], secret);
    assert_eq!(config["url"], "https://hooks.example.com/v2");
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_integration_configs_are_refused() {
    let app = TestApp::spawn().await;
    let resp = send(
        &app,
        "PUT",
        "/api/settings/integrations/webhook",
        Some(json!({"config": {"url": "ftp://x", "secret": "short"}})),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body = json_of(resp).await;
    assert!(body["details"]["config.url"].is_string(), "{body}");
    assert!(body["details"]["config.secret"].is_string(), "{body}");
    let resp = send(
        &app,
        "PUT",
        "/api/settings/integrations/email",
        Some(json!({"config": {"host": "smtp.example.com", "from": "not an address", "recipients": []}})),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let resp = send(
        &app,
        "PUT",
        "/api/settings/integrations/sms",
        Some(json!({"config": {}})),
    )
    .await;
    assert_eq!(resp.status(), 404);
    let resp = send(&app, "POST", "/api/settings/integrations/slack/test", None).await;
    assert_eq!(resp.status(), 404, "nothing configured to test");
    app.shutdown().await;
}

#[tokio::test]
async fn a_test_send_reports_the_delivery_error() {
    let app = TestApp::spawn().await;
    // Nothing listens on port 9 (and loopback is refused unless allowed): the send fails either way.
    send(
        &app,
        "PUT",
        "/api/settings/integrations/webhook",
        Some(json!({"config": {"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef"}})),
    )
    .await;
    let resp = send(
        &app,
        "POST",
        "/api/settings/integrations/webhook/test",
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = json_of(resp).await;
    assert_eq!(body["data"]["success"], false);
    assert!(
        body["data"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    let list = json_of(send(&app, "GET", "/api/settings/integrations", None).await).await;
    let webhook = list["data"]["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "webhook")
        .unwrap()
        .clone();
    assert_eq!(webhook["last_test_ok"], false);
    assert!(webhook["last_test"].is_string());
    app.shutdown().await;
}

#[tokio::test]
async fn deliveries_show_every_attempt_and_a_failing_channel_shows_unhealthy() {
    let app = TestApp::spawn().await;
    alerter::install_crypto();
    let rule = json_of(
        send(
            &app,
            "POST",
            "/api/alerts/rules",
            Some(json!({"name": "Burst", "threshold": 2, "time_window": "5m", "notifications": ["webhook"]})),
        )
        .await,
    )
    .await;
    let rule_id = rule["data"]["id"].as_str().unwrap().to_string();
    send(
        &app,
        "PUT",
        "/api/settings/integrations/webhook",
        Some(json!({"config": {"url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef"}})),
    )
    .await;
    let events: Vec<ErrorEvent> = (0..3)
        .map(|_| ErrorEvent {
            event_id: Uuid::now_v7(),
            project_id: DEFAULT_PROJECT_ID,
            received_at: Utc::now(),
            level: Level::Error,
            message: "boom".into(),
            source: "backend".into(),
            environment: "production".into(),
            stack_trace: None,
            context: None,
            url: None,
            user_agent: None,
            ip_address: None,
            release: None,
            fingerprint: None,
            frames: None,
            extra: None,
        })
        .collect();
    worker::process::process_batch(&app.db.pool, &stored(&events))
        .await
        .unwrap();
    let now = Utc::now();
    assert_eq!(alerter::evaluate(&app.db.pool, now).await.unwrap().len(), 1);
    let delivery = alerter::Delivery::new(alerter::DeliveryConfig {
        max_attempts: 3,
        backoff_base: std::time::Duration::from_secs(1),
        backoff_max: std::time::Duration::from_secs(60),
        timeout: std::time::Duration::from_secs(5),
        lease: std::time::Duration::from_secs(60),
        allow_private_targets: true,
        public_url: "http://faultline.test".into(),
        batch: 16,
    });
    for minutes in 0..4 {
        delivery
            .deliver_due(&app.db.pool, now + TimeDelta::minutes(minutes))
            .await
            .unwrap();
    }

    let resp = send(
        &app,
        "GET",
        &format!("/api/alerts/deliveries?rule_id={rule_id}&status=failed"),
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = json_of(resp).await;
    let list = body["data"]["deliveries"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["channel"], "webhook");
    let attempts = list[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(
        attempts
            .iter()
            .all(|a| a["success"] == false && a["error"].is_string())
    );

    let none =
        json_of(send(&app, "GET", "/api/alerts/deliveries?status=delivered", None).await).await;
    assert!(none["data"]["deliveries"].as_array().unwrap().is_empty());
    let resp = send(&app, "GET", "/api/alerts/deliveries?channel=pager", None).await;
    assert_eq!(resp.status(), 400);

    let list = json_of(send(&app, "GET", "/api/settings/integrations", None).await).await;
    let webhook = list["data"]["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "webhook")
        .unwrap()
        .clone();
    assert_eq!(webhook["status"], "unhealthy", "{webhook}");
    assert_eq!(webhook["health"]["consecutive_failures"], 3);

    let rules = json_of(send(&app, "GET", "/api/alerts/rules", None).await).await;
    assert!(rules["data"]["rules"][0]["last_triggered"].is_string());
    let incidents =
        json_of(send(&app, "GET", "/api/alerts/incidents?status=open", None).await).await;
    assert_eq!(incidents["data"]["incidents"][0]["title"], "Burst");
    app.shutdown().await;
}

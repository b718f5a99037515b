//! Access control against the real Postgres and Redis: API keys (shown once, stored as sha256,
//! never minting more than their creator has, revoked within the cache TTL, last use coalesced),
//! projects, the team, the permission matrix endpoint by endpoint, and 404 across projects.

mod support;

use faultline_shared::domain::{ApiKey, Permission, Permissions};
use ingest::key_usage::KeyUsage;
use reqwest::{Method, Response};
use serde_json::{Value, json};
use std::time::Duration;
use support::TestApp;
use uuid::Uuid;

async fn json_of(resp: Response) -> Value {
    resp.json().await.expect("JSON body")
}

/// Creates a key through the API with the app's admin key; returns (id, secret).
async fn mint(app: &TestApp, body: Value) -> (String, String) {
    let resp = app
        .call(Method::POST, "/api/settings/api-keys", &app.key, Some(body))
        .await;
    assert_eq!(resp.status(), 201);
    let b = json_of(resp).await;
    (
        b["data"]["id"].as_str().unwrap().to_string(),
        b["data"]["api_key"].as_str().unwrap().to_string(),
    )
}

/// A second project through the API, returning (project id, its admin key).
async fn other_project(app: &TestApp, name: &str) -> (String, String) {
    let resp = app
        .call(
            Method::POST,
            "/api/projects",
            &app.key,
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let b = json_of(resp).await;
    (
        b["data"]["id"].as_str().unwrap().to_string(),
        b["data"]["api_key"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_new_key_is_shown_once_and_stored_only_as_its_sha256() {
    let app = TestApp::spawn().await;
    let resp = app.call(Method::POST,
        "/api/settings/api-keys",
        &app.key,
        Some(json!({"name": "Development Key", "permissions": ["read"], "expires_at": "2099-12-31T23:59:59Z"})),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let b = json_of(resp).await;
    assert_eq!(b["status"], "success");
    let data = &b["data"];
    let secret = data["api_key"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("fl_") && secret.len() >= 3 + 43,
        "{secret}"
    );
    assert_eq!(data["name"], "Development Key");
    assert_eq!(data["permissions"], json!(["read"]));
    assert_eq!(data["expires_at"], "2099-12-31T23:59:59Z");
    assert!(data["created_at"].is_string());

    // Stored as its sha256 and preview; the secret is nowhere in the row.
    let (hash, preview): (Vec<u8>, String) =
        sqlx::query_as("SELECT key_hash, key_preview FROM api_keys WHERE id = $1::uuid")
            .bind(data["id"].as_str().unwrap())
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(hash, ApiKey::parse(&secret).unwrap().hash().0.to_vec());
    assert!(!preview.contains(&secret[3..12]));

    // Listed with preview, permissions and project, never with the secret.
    let list = json_of(
        app.call(Method::GET, "/api/settings/api-keys", &app.key, None)
            .await,
    )
    .await;
    let keys = list["data"]["api_keys"].as_array().unwrap();
    let listed = keys.iter().find(|k| k["id"] == data["id"]).unwrap();
    assert_eq!(listed["key_preview"], preview);
    assert_eq!(
        listed["project_id"],
        faultline_shared::domain::DEFAULT_PROJECT_ID.to_string()
    );
    assert!(listed.get("api_key").is_none());
    assert!(!list.to_string().contains(&secret));

    // The key works, for what it may do.
    assert_eq!(
        app.call(Method::GET, "/api/errors", &secret, None)
            .await
            .status(),
        200
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_cannot_mint_a_key_with_more_permission_than_it_has() {
    let app = TestApp::spawn().await;
    let writer = app.create_key(&[Permission::Write]).await;
    let reader = app.create_key(&[Permission::Read]).await;
    let create = |perms: Value| json!({"name": "derived", "permissions": perms});

    for (perms, missing) in [
        (json!(["read"]), "read"),
        (json!(["admin"]), "admin"),
        (json!(["ingest", "read"]), "read"),
    ] {
        let resp = app
            .call(
                Method::POST,
                "/api/settings/api-keys",
                &writer,
                Some(create(perms.clone())),
            )
            .await;
        assert_eq!(resp.status(), 403, "{perms}");
        let b = json_of(resp).await;
        assert_eq!(b["code"], "permission_denied");
        assert_eq!(b["details"]["required"], missing);
    }
    // Within its own permissions it may (write implies ingest).
    let resp = app
        .call(
            Method::POST,
            "/api/settings/api-keys",
            &writer,
            Some(create(json!(["ingest", "write"]))),
        )
        .await;
    assert_eq!(resp.status(), 201);
    // Rate limits are for admins to set.
    let resp = app
        .call(
            Method::POST,
            "/api/settings/api-keys",
            &writer,
            Some(
                json!({"name": "x", "permissions": ["ingest"], "rate_limits": {"ingest": 100000}}),
            ),
        )
        .await;
    assert_eq!(resp.status(), 403);
    // A read key may not create keys at all.
    let resp = app
        .call(
            Method::POST,
            "/api/settings/api-keys",
            &reader,
            Some(create(json!(["read"]))),
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(json_of(resp).await["details"]["required"], "write");

    // A key never outlives its creator.
    let (_, expiring) = mint(
        &app,
        json!({"name": "short", "permissions": ["write"], "expires_at": "2090-01-01T00:00:00Z"}),
    )
    .await;
    let resp = app.call(Method::POST,
        "/api/settings/api-keys",
        &expiring,
        Some(json!({"name": "longer", "permissions": ["ingest"], "expires_at": "2095-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(json_of(resp).await["details"]["expires_at"].is_string());
    let resp = app
        .call(
            Method::POST,
            "/api/settings/api-keys",
            &expiring,
            Some(create(json!(["ingest"]))),
        )
        .await;
    assert_eq!(resp.status(), 201);
    assert_eq!(
        json_of(resp).await["data"]["expires_at"],
        "2090-01-01T00:00:00Z"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_key_requests_name_every_bad_field() {
    let app = TestApp::spawn().await;
    let resp = app.call(Method::POST,
        "/api/settings/api-keys",
        &app.key,
        Some(json!({"name": "", "permissions": ["root"], "expires_at": "2001-01-01T00:00:00Z", "rate_limits": {"ingest": 0}})),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let b = json_of(resp).await;
    assert_eq!(b["code"], "validation_error");
    for field in ["name", "permissions", "expires_at", "rate_limits.ingest"] {
        assert!(b["details"][field].is_string(), "{field} in {b}");
    }
    let resp = app
        .call(
            Method::POST,
            "/api/settings/api-keys",
            &app.key,
            Some(json!({"name": "n"})),
        )
        .await;
    assert_eq!(json_of(resp).await["details"]["permissions"], "is required");
    app.shutdown().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_the_key_cache_ttl() {
    let app = TestApp::spawn().await;
    let (id, secret) = mint(&app, json!({"name": "soon gone", "permissions": ["read"]})).await;
    assert_eq!(
        app.call(Method::GET, "/api/errors", &secret, None)
            .await
            .status(),
        200
    );

    let resp = app
        .call(
            Method::DELETE,
            &format!("/api/settings/api-keys/{id}"),
            &app.key,
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    // The bound is the key cache TTL (500 ms in tests, KEY_CACHE_TTL_MS in production).
    let deadline =
        tokio::time::Instant::now() + app.settings.key_cache_ttl + Duration::from_secs(3);
    loop {
        let resp = app.call(Method::GET, "/api/errors", &secret, None).await;
        if resp.status() == 401 {
            assert_eq!(json_of(resp).await["code"], "unauthorized");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "revoked key still accepted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Gone from the listing; revoking again (or an unknown id) is 404, a malformed id 400.
    let list = json_of(
        app.call(Method::GET, "/api/settings/api-keys", &app.key, None)
            .await,
    )
    .await;
    assert!(
        list["data"]["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["id"] != id.as_str())
    );
    let again = app
        .call(
            Method::DELETE,
            &format!("/api/settings/api-keys/{id}"),
            &app.key,
            None,
        )
        .await;
    assert_eq!(again.status(), 404);
    let bad = app
        .call(
            Method::DELETE,
            "/api/settings/api-keys/nope",
            &app.key,
            None,
        )
        .await;
    assert_eq!(bad.status(), 400);
    app.shutdown().await;
}

#[tokio::test]
async fn last_used_is_recorded_at_most_once_per_interval_per_key() {
    let app = TestApp::spawn().await;
    let (id, secret) = mint(&app, json!({"name": "busy", "permissions": ["read"]})).await;
    for _ in 0..20 {
        assert_eq!(
            app.call(Method::GET, "/api/errors", &secret, None)
                .await
                .status(),
            200
        );
    }
    // The app's background flush writes it (every 100 ms in tests).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list = json_of(
            app.call(Method::GET, "/api/settings/api-keys", &app.key, None)
                .await,
        )
        .await;
        let key = list["data"]["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .cloned()
            .unwrap();
        if key["last_used"].is_string() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "last_used never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The coalescing itself: many uses within the interval are one write.
    let usage = KeyUsage::new(Duration::from_secs(60));
    let key_id: Uuid = id.parse().unwrap();
    for _ in 0..1000 {
        usage.touch(key_id);
    }
    assert_eq!(usage.flush(&app.db.pool).await.unwrap(), 1);
    usage.touch(key_id);
    assert_eq!(
        usage.flush(&app.db.pool).await.unwrap(),
        0,
        "written again within the interval"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn team_invitations_are_listed_and_a_duplicate_email_conflicts() {
    let app = TestApp::spawn().await;
    let resp = app
        .call(
            Method::POST,
            "/api/settings/team/invite",
            &app.key,
            Some(json!({"email": "newuser@company.com", "role": "viewer"})),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let member = json_of(resp).await["data"].clone();
    assert_eq!(member["email"], "newuser@company.com");
    assert_eq!(member["role"], "viewer");
    assert_eq!(member["status"], "invited");
    assert_eq!(member["name"], "newuser");
    assert!(member["id"].is_string() && member["created_at"].is_string());

    let team = json_of(
        app.call(Method::GET, "/api/settings/team", &app.key, None)
            .await,
    )
    .await;
    assert_eq!(team["status"], "success");
    assert_eq!(team["data"]["members"], json!([member]));

    // The same address in another case is the same person.
    let resp = app
        .call(
            Method::POST,
            "/api/settings/team/invite",
            &app.key,
            Some(json!({"email": "NewUser@Company.com", "role": "admin"})),
        )
        .await;
    assert_eq!(resp.status(), 409);
    let b = json_of(resp).await;
    assert_eq!(b["code"], "conflict");
    assert!(b["details"]["email"].is_string());
    assert!(b["request_id"].is_string());

    for (body, field) in [
        (json!({"email": "not-an-email", "role": "viewer"}), "email"),
        (json!({"email": "a@b.co", "role": "superuser"}), "role"),
        (json!({"role": "viewer"}), "email"),
        (json!({"email": "a@b.co"}), "role"),
    ] {
        let resp = app
            .call(
                Method::POST,
                "/api/settings/team/invite",
                &app.key,
                Some(body.clone()),
            )
            .await;
        assert_eq!(resp.status(), 400, "{body}");
        assert!(json_of(resp).await["details"][field].is_string(), "{body}");
    }

    // The same address may be invited to another project; it does not see this one's team.
    let (_, other) = other_project(&app, "second").await;
    let resp = app
        .call(
            Method::POST,
            "/api/settings/team/invite",
            &other,
            Some(json!({"email": "newuser@company.com", "role": "owner"})),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let team = json_of(
        app.call(Method::GET, "/api/settings/team", &other, None)
            .await,
    )
    .await;
    assert_eq!(team["data"]["members"].as_array().unwrap().len(), 1);
    assert_eq!(team["data"]["members"][0]["role"], "owner");
    app.shutdown().await;
}

#[tokio::test]
async fn a_new_project_comes_with_an_admin_key_that_sees_only_that_project() {
    let app = TestApp::spawn().await;
    let resp = app
        .call(
            Method::POST,
            "/api/projects",
            &app.key,
            Some(json!({"name": "checkout"})),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let b = json_of(resp).await;
    let project = b["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(b["data"]["name"], "checkout");
    let key = b["data"]["api_key"].as_str().unwrap().to_string();
    assert!(key.starts_with("fl_"));

    let list = json_of(app.call(Method::GET, "/api/projects", &key, None).await).await;
    assert_eq!(list["data"]["projects"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"]["projects"][0]["id"], project.as_str());
    let keys = json_of(
        app.call(Method::GET, "/api/settings/api-keys", &key, None)
            .await,
    )
    .await;
    let keys = keys["data"]["api_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["project_id"], project.as_str());
    assert_eq!(keys[0]["permissions"], json!(["admin"]));

    // Names are unique; bad names and non-admin keys are refused.
    let dup = app
        .call(
            Method::POST,
            "/api/projects",
            &app.key,
            Some(json!({"name": "checkout"})),
        )
        .await;
    assert_eq!(dup.status(), 409);
    assert_eq!(json_of(dup).await["details"]["name"], "already taken");
    let bad = app
        .call(
            Method::POST,
            "/api/projects",
            &app.key,
            Some(json!({"name": "  "})),
        )
        .await;
    assert_eq!(bad.status(), 400);
    let writer = app.create_key(&[Permission::Write, Permission::Read]).await;
    let denied = app
        .call(
            Method::POST,
            "/api/projects",
            &writer,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(denied.status(), 403);
    assert_eq!(json_of(denied).await["details"]["required"], "admin");
    app.shutdown().await;
}

#[tokio::test]
async fn another_projects_keys_and_members_answer_404_or_are_absent() {
    let app = TestApp::spawn().await;
    let (mine, _) = mint(&app, json!({"name": "mine", "permissions": ["read"]})).await;
    app.call(
        Method::POST,
        "/api/settings/team/invite",
        &app.key,
        Some(json!({"email": "me@a.io", "role": "viewer"})),
    )
    .await;
    let (_, other) = other_project(&app, "tenant-b").await;

    // Revoking this project's key with the other project's admin key: 404, and the key still works.
    let resp = app
        .call(
            Method::DELETE,
            &format!("/api/settings/api-keys/{mine}"),
            &other,
            None,
        )
        .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(json_of(resp).await["code"], "not_found");
    let still = json_of(
        app.call(Method::GET, "/api/settings/api-keys", &app.key, None)
            .await,
    )
    .await;
    assert!(
        still["data"]["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == mine.as_str())
    );

    // Listings of the other project never contain this one's keys, members or project.
    let keys = json_of(
        app.call(Method::GET, "/api/settings/api-keys", &other, None)
            .await,
    )
    .await;
    assert!(
        keys["data"]["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["id"] != mine.as_str())
    );
    let team = json_of(
        app.call(Method::GET, "/api/settings/team", &other, None)
            .await,
    )
    .await;
    assert_eq!(team["data"]["members"], json!([]));
    let projects = json_of(app.call(Method::GET, "/api/projects", &other, None).await).await;
    assert!(
        !projects
            .to_string()
            .contains("00000000-0000-0000-0000-000000000001")
    );
    app.shutdown().await;
}

/// Every endpoint with the permission it requires (README "Permissions"), called with each kind
/// of key: allowed keys never get 401/403; the others get 403 naming the requirement.
#[tokio::test]
async fn the_permission_matrix_is_enforced_endpoint_by_endpoint() {
    let app = TestApp::spawn().await;
    let unknown = Uuid::new_v4();
    let event = json!({"message": "boom", "source": "matrix"});
    let matrix: Vec<(Method, String, Option<Value>, Permission)> = vec![
        (
            Method::POST,
            "/api/errors".into(),
            Some(event.clone()),
            Permission::Ingest,
        ),
        (
            Method::POST,
            "/api/errors/batch".into(),
            Some(json!([event])),
            Permission::Ingest,
        ),
        (Method::GET, "/api/errors".into(), None, Permission::Read),
        (
            Method::GET,
            format!("/api/errors/{unknown}"),
            None,
            Permission::Read,
        ),
        (
            Method::GET,
            format!("/api/errors/{unknown}/events"),
            None,
            Permission::Read,
        ),
        (
            Method::PUT,
            format!("/api/errors/{unknown}/resolve"),
            None,
            Permission::Write,
        ),
        (
            Method::PUT,
            format!("/api/errors/{unknown}/reopen"),
            None,
            Permission::Write,
        ),
        (
            Method::DELETE,
            format!("/api/errors/{unknown}"),
            None,
            Permission::Write,
        ),
        (Method::GET, "/api/stats".into(), None, Permission::Read),
        (
            Method::GET,
            "/api/analytics/trends".into(),
            None,
            Permission::Read,
        ),
        (
            Method::GET,
            "/api/analytics/performance".into(),
            None,
            Permission::Read,
        ),
        (
            Method::GET,
            "/api/monitoring/services".into(),
            None,
            Permission::Read,
        ),
        (
            Method::GET,
            "/api/monitoring/metrics".into(),
            None,
            Permission::Read,
        ),
        (
            Method::GET,
            "/api/monitoring/uptime".into(),
            None,
            Permission::Read,
        ),
        (Method::GET, "/api/projects".into(), None, Permission::Read),
        (
            Method::POST,
            "/api/projects".into(),
            Some(json!({"name": ""})),
            Permission::Admin,
        ),
        (
            Method::GET,
            "/api/settings/api-keys".into(),
            None,
            Permission::Admin,
        ),
        (
            Method::POST,
            "/api/settings/api-keys".into(),
            Some(json!({"name": "m", "permissions": ["ingest"]})),
            Permission::Write,
        ),
        (
            Method::DELETE,
            format!("/api/settings/api-keys/{unknown}"),
            None,
            Permission::Admin,
        ),
        (
            Method::GET,
            "/api/settings/team".into(),
            None,
            Permission::Read,
        ),
        (
            Method::POST,
            "/api/settings/team/invite".into(),
            Some(json!({"email": "x"})),
            Permission::Admin,
        ),
        (Method::GET, "/api/usage".into(), None, Permission::Read),
        (
            Method::GET,
            "/api/alerts/rules".into(),
            None,
            Permission::Read,
        ),
        (
            Method::POST,
            "/api/alerts/rules".into(),
            Some(json!({})),
            Permission::Write,
        ),
        (
            Method::PUT,
            format!("/api/alerts/rules/{unknown}"),
            Some(json!({})),
            Permission::Write,
        ),
        (
            Method::DELETE,
            format!("/api/alerts/rules/{unknown}"),
            None,
            Permission::Write,
        ),
        (
            Method::GET,
            "/api/alerts/incidents".into(),
            None,
            Permission::Read,
        ),
        (
            Method::POST,
            "/api/alerts/incidents".into(),
            Some(json!({})),
            Permission::Write,
        ),
        (
            Method::PUT,
            format!("/api/alerts/incidents/{unknown}"),
            Some(json!({})),
            Permission::Write,
        ),
        (
            Method::GET,
            "/api/alerts/deliveries".into(),
            None,
            Permission::Read,
        ),
        (
            Method::GET,
            "/api/settings/integrations".into(),
            None,
            Permission::Read,
        ),
        (
            Method::PUT,
            "/api/settings/integrations/nope".into(),
            Some(json!({})),
            Permission::Admin,
        ),
        (
            Method::POST,
            "/api/settings/integrations/nope/test".into(),
            None,
            Permission::Admin,
        ),
        (
            Method::GET,
            "/api/errors/sparklines".into(),
            None,
            Permission::Read,
        ),
        (
            Method::POST,
            "/api/1/store/".into(),
            Some(json!({"message": "x"})),
            Permission::Ingest,
        ),
    ];
    let mut keys = Vec::new();
    for p in Permission::ALL {
        keys.push((p, app.create_key(&[p]).await));
    }
    for (method, path, body, required) in &matrix {
        for (has, key) in &keys {
            let allowed = faultline_shared::domain::Permissions::new(vec![*has]).allows(*required);
            let resp = app.call(method.clone(), path, key, body.clone()).await;
            let status = resp.status().as_u16();
            if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} with {has}: {status}"
                );
            } else {
                assert_eq!(status, 403, "{method} {path} with {has}");
                let b = json_of(resp).await;
                assert_eq!(b["code"], "permission_denied");
                assert_eq!(
                    b["details"]["required"],
                    required.as_str(),
                    "{method} {path}"
                );
            }
        }
        // No key, or a wrong one: 401.
        let resp = app
            .client
            .request(method.clone(), format!("{}{}", app.addr, path))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method} {path} without a key");
        assert_eq!(
            app.call(method.clone(), path, "fl_wrong", body.clone())
                .await
                .status(),
            401
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn browsers_on_allowed_origins_may_post_errors_and_others_get_no_cors_headers() {
    let app =
        TestApp::spawn_with(|s| s.access.cors_origins = vec!["https://app.example".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, format!("{}/api/errors", app.addr))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-api-key")
            .send()
    };
    let resp = preflight("https://app.example").await.unwrap();
    assert!(resp.status().is_success());
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let allowed = resp.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(allowed.contains("x-api-key"), "{allowed}");
    let resp = preflight("https://evil.example").await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    let resp = app
        .client
        .post(format!("{}/api/errors", app.addr))
        .header("origin", "https://app.example")
        .header("x-api-key", &app.key)
        .header("content-type", "application/json")
        .body(json!({"message": "from a browser", "source": "web"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(exposed.contains("x-ratelimit-remaining"), "{exposed}");
    app.shutdown().await;
}

/// Revocation on one instance reaches another (which cached the key) within the key cache TTL.
#[tokio::test]
async fn a_key_revoked_on_one_instance_is_refused_by_another_within_the_ttl() {
    let app = TestApp::spawn().await;
    let second = ingest::Application::build(app.settings.clone())
        .await
        .expect("second ingest builds");
    let second_addr = format!("http://127.0.0.1:{}", second.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(second.run_until(async move {
        let _ = stopped.await;
    }));
    let (id, secret) = mint(&app, json!({"name": "shared", "permissions": ["read"]})).await;
    let on_second = || {
        app.client
            .get(format!("{second_addr}/api/errors"))
            .header("x-api-key", &secret)
            .send()
    };
    assert_eq!(
        on_second().await.unwrap().status(),
        200,
        "cached on the second instance"
    );

    let resp = app
        .call(
            Method::DELETE,
            &format!("/api/settings/api-keys/{id}"),
            &app.key,
            None,
        )
        .await;
    assert_eq!(resp.status(), 204);
    assert_eq!(
        app.call(Method::GET, "/api/errors", &secret, None)
            .await
            .status(),
        401
    );
    let deadline =
        tokio::time::Instant::now() + app.settings.key_cache_ttl + Duration::from_secs(3);
    while on_second().await.unwrap().status() != 401 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "second instance still accepts the key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    app.shutdown().await;
}

/// Every operation the OpenAPI document marks as needing a key, called with no key, a malformed
/// one, a well-formed key nobody issued, a revoked one and an expired one: each answers 401 with
/// the error body, before looking at anything else in the request.
#[tokio::test]
async fn every_secured_endpoint_refuses_missing_malformed_unknown_revoked_and_expired_keys() {
    let app = TestApp::spawn().await;
    let all = Permissions::new(Permission::ALL.to_vec());
    // Revoked before it is ever used, so no cache can still hold it.
    let (revoked_id, revoked) = mint(
        &app,
        json!({"name": "revoked", "permissions": ["ingest", "read", "write", "admin"]}),
    )
    .await;
    let resp = app
        .call(
            Method::DELETE,
            &format!("/api/settings/api-keys/{revoked_id}"),
            &app.key,
            None,
        )
        .await;
    assert!(resp.status().is_success(), "revoke: {}", resp.status());
    // Expired an hour ago; the API refuses to issue such a key, so it goes straight to the table.
    let (project_id,): (Uuid,) = sqlx::query_as("SELECT project_id FROM api_keys LIMIT 1")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let expired = ApiKey::generate();
    faultline_shared::db::insert_key(
        &app.db.pool,
        project_id,
        "expired",
        &expired,
        &all,
        Some(chrono::Utc::now() - chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    let unknown = ApiKey::generate();
    let bad_keys: [(&str, Option<&str>); 5] = [
        ("missing", None),
        ("malformed", Some("not-a-key")),
        ("unknown", Some(unknown.expose())),
        ("revoked", Some(&revoked)),
        ("expired", Some(expired.expose())),
    ];

    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()));
            if !secured {
                continue;
            }
            // Path parameters get well-formed values: the key check must come first anyway.
            let url = path
                .split('/')
                .map(|seg| match seg {
                    s if s.starts_with('{') => Uuid::now_v7().to_string(),
                    s => s.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for (what, key) in &bad_keys {
                let mut req = app
                    .client
                    .request(method.clone(), format!("{}{url}", app.addr))
                    .header("content-type", "application/json")
                    .body("{}");
                if let Some(key) = key {
                    req = req.header("x-api-key", *key);
                }
                let resp = req.send().await.unwrap();
                assert_eq!(resp.status(), 401, "{method} {path} with a {what} key");
                let body = json_of(resp).await;
                assert_eq!(
                    body["status"], "error",
                    "{method} {path} with a {what} key: {body}"
                );
                checked += 1;
            }
        }
    }
    // The document lists every secured route; a handful would mean it lost them.
    assert!(checked >= 5 * 30, "only {checked} requests checked");
    app.shutdown().await;
}

/// Key lookups of this test's database that are waiting on a lock (the `LOCK TABLE` below).
async fn blocked_key_lookups(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = $1 AND wait_event_type = 'Lock' AND query LIKE '%WHERE key_hash = $1%'",
    )
    .bind(&app.db.name)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

/// Holds `api_keys` locked against every reader until the returned transaction ends, so a key
/// lookup that reaches Postgres waits and shows in `pg_stat_activity`.
async fn lock_api_keys(app: &TestApp) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// Once a cached key passes the TTL, requests keep being answered from the entry while one query
/// refreshes it: with that query held on a lock, twenty concurrent requests all answer (none
/// waits on Postgres) and only one lookup reaches it. Before, each request past the TTL queried
/// Postgres itself and waited.
#[tokio::test]
async fn a_stale_key_is_refreshed_by_one_query_while_requests_are_answered_from_the_cache() {
    let app = TestApp::spawn().await;
    let (_, secret) = mint(&app, json!({"name": "busy", "permissions": ["read"]})).await;
    let call = || app.call(Method::GET, "/api/errors", &secret, None);
    assert_eq!(call().await.status(), 200, "cached");
    tokio::time::sleep(app.settings.key_cache_ttl + Duration::from_millis(100)).await;

    let lock = lock_api_keys(&app).await;
    let answers = tokio::time::timeout(
        Duration::from_secs(3),
        futures_util::future::join_all((0..20).map(|_| call())),
    )
    .await
    .expect("requests past the TTL waited on Postgres");
    assert!(answers.iter().all(|r| r.status() == 200));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while blocked_key_lookups(&app).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no refresh started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More requests while the refresh waits: still answered, still one query.
    for _ in 0..5 {
        assert_eq!(call().await.status(), 200);
    }
    assert_eq!(blocked_key_lookups(&app).await, 1);
    lock.rollback().await.unwrap();
    assert_eq!(call().await.status(), 200);
    app.shutdown().await;
}

/// A key not cached yet, asked for by many requests at once (an instance restarted under load):
/// one query, all requests answered by it.
#[tokio::test]
async fn concurrent_requests_for_an_uncached_key_share_one_query() {
    let app = TestApp::spawn().await;
    let (_, secret) = mint(&app, json!({"name": "new", "permissions": ["read"]})).await;
    let lock = lock_api_keys(&app).await;
    let requests = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}/api/errors", app.addr);
        let secret = secret.clone();
        async move {
            let all = (0..20).map(|_| client.get(&url).header("x-api-key", &secret).send());
            futures_util::future::join_all(all).await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while blocked_key_lookups(&app).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no lookup started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Time for the other nineteen to have queried, had they been going to.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(blocked_key_lookups(&app).await, 1);
    assert!(!requests.is_finished(), "answered before the key was read");
    lock.rollback().await.unwrap();
    let answers = requests.await.unwrap();
    assert!(answers.into_iter().all(|r| r.unwrap().status() == 200));
    app.shutdown().await;
}

//! The served OpenAPI document against the router: every route in `routes::router` is documented
//! (read from its source, the one place routes are listed), and every documented operation is
//! really routed (a request to it is neither 404-unmatched nor 405).

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use support::TestApp;

/// (method, path) of every `.route(...)` in `routes/mod.rs` and the router it merges from
/// `routes/dashboard.rs`; `{*rest}` wildcards are written `{rest}` as in OpenAPI.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let source = [
        include_str!("../src/routes/mod.rs"),
        include_str!("../src/routes/dashboard.rs"),
    ]
    .join("\n");
    let mut routes = BTreeSet::new();
    for segment in source.split(".route(").skip(1) {
        let segment = segment.split(';').next().unwrap_or(segment);
        let path = segment
            .split('"')
            .nth(1)
            .expect("a route's first argument is its path");
        for method in ["get", "post", "put", "delete", "patch"] {
            let call = format!("{method}(");
            let found = segment.match_indices(&call).any(|(i, _)| {
                i == 0 || !segment[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
            });
            if found {
                routes.insert((method.to_string(), path.replace("{*", "{")));
            }
        }
    }
    routes
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.insert((method.clone(), path.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn the_served_openapi_document_lists_every_route_of_the_router() {
    let app = TestApp::spawn().await;
    let resp = app.get("/openapi.json").await;
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented = operations(&doc);
    let routed = routes_in_source();
    assert!(routed.len() >= 20, "parsed too few routes: {routed:?}");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from /openapi.json: {undocumented:?}"
    );
    let stale: Vec<_> = documented.difference(&routed).collect();
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");

    // And the router really answers each documented operation (no key: 401, or 2xx for the
    // public ones; never 404-unmatched nor 405).
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{project_id}", "1")
            .replace("{name}", "slack")
            .replace("{path}", "app.js");
        let resp = app
            .client
            .request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{}", app.addr, concrete),
            )
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !(status == 404 && body.is_empty()),
            "{method} {path} is not routed"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_docs_page_is_self_contained() {
    let app = TestApp::spawn().await;
    let resp = app.get("/docs").await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("/openapi.json"));
    // Nothing loaded from elsewhere: it must work offline.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external reference"
    );
    app.shutdown().await;
}

/// What schemathesis (scripts/schemathesis.sh) checks at length, pinned here in a fast test: the
/// document names the answers every operation can give, and success schemas are the `{data,
/// status}` envelope the handlers really answer with.
#[tokio::test]
async fn every_authenticated_operation_documents_its_error_answers_and_envelope() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if op["security"].as_array().is_some_and(|s| !s.is_empty()) {
                for code in ["401", "403", "429", "503"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            }
            if op.get("requestBody").is_some() && !path.starts_with("/api/{project_id}") {
                for code in ["400", "408", "413", "415"] {
                    assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                }
            }
        }
    }
    let list = &doc["paths"]["/api/errors"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        list["properties"]["data"]["$ref"],
        "#/components/schemas/ErrorList"
    );
    assert_eq!(list["required"], serde_json::json!(["data", "status"]));
    // And the answer has that shape.
    let body: Value = app.get("/api/errors").await.json().await.unwrap();
    assert!(body["data"]["errors"].is_array() && body["status"] == "success");
    app.shutdown().await;
}

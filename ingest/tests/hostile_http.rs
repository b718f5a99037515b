//! Hostile HTTP against a real ingest over real TCP sockets: slowloris headers and trickled
//! bodies, thousands of idle connections, running out of file descriptors, oversized heads,
//! invalid UTF-8 and absurdly nested JSON. Each test ends by showing the server still answers a
//! normal request, which is the property that matters: one bad client must not take ingest from
//! everybody else.

mod support;

use faultline_shared::{config::HttpSettings, domain::DEFAULT_PROJECT_ID};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::{
    process::Stdio,
    time::{Duration, Instant},
};
use support::TestApp;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};

fn port_of(app: &TestApp) -> u16 {
    app.addr.rsplit(':').next().unwrap().parse().unwrap()
}

async fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects")
}

/// Reads what the server sends until it closes the connection (EOF or reset), for at most
/// `within`. Returns the bytes and whether the connection was closed.
async fn read_until_closed(
    stream: &mut (impl AsyncReadExt + Unpin),
    within: Duration,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// The status code of a raw HTTP/1.1 response.
fn status_of(response: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(response);
    let line = text.lines().next()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// The JSON body of a raw response with a `Content-Length` (as every answer of ours has).
fn json_of(response: &[u8]) -> Value {
    let at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    serde_json::from_slice(&response[at + 4..]).expect("a JSON body")
}

/// Asserts the project's error body (`ApiError`) with the given code.
fn assert_error_body(body: &Value, code: &str) {
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
}

/// A normal client still gets its event accepted.
async fn still_serves(app: &TestApp) {
    let r = app
        .post_event(&json!({"message": "a normal client", "source": "hostile-test"}))
        .await;
    assert_eq!(r.status(), 202, "the server stopped serving normal clients");
}

async fn spawn_with_http(tweak: impl FnOnce(&mut HttpSettings)) -> TestApp {
    TestApp::spawn_with(|s| tweak(&mut s.http)).await
}

#[tokio::test]
async fn slowloris_headers_and_silent_connections_are_closed_after_the_header_timeout() {
    let app = spawn_with_http(|h| h.header_timeout = Duration::from_secs(2)).await;
    let port = port_of(&app);

    // Headers one byte a second: they never complete.
    let (mut reader, mut writer) = connect(port).await.into_split();
    let slow = tokio::spawn(async move {
        let head = b"POST /api/errors HTTP/1.1\r\nHost: ingest\r\nX-Slow: ";
        let mut sent = 0usize;
        for byte in head.iter().chain(std::iter::repeat(&b'a')).take(60) {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        sent
    });
    // A connection that says nothing at all.
    let mut silent = connect(port).await;

    let (answer, closed) = read_until_closed(&mut reader, Duration::from_secs(30)).await;
    assert!(closed, "the slowloris connection was left open");
    assert!(
        answer.is_empty() || status_of(&answer) == Some(408),
        "unexpected answer: {}",
        String::from_utf8_lossy(&answer)
    );
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(30)).await;
    assert!(closed, "the silent connection was left open");
    let sent = slow.await.unwrap();
    assert!(
        sent < 60,
        "the server read all {sent} bytes without closing"
    );
    still_serves(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_trickling_body_gets_408_and_the_connection_is_closed() {
    let app = spawn_with_http(|h| h.body_timeout = Duration::from_millis(1500)).await;
    let (mut reader, mut writer) = connect(port_of(&app)).await.into_split();
    let head = format!(
        "POST /api/errors HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n\
         X-API-Key: {}\r\nContent-Length: 2000\r\n\r\n",
        app.key
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    // One byte every 200 ms: each arrives well within any per-chunk timeout, the whole never.
    let trickle = tokio::spawn(async move {
        for _ in 0..150 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let (answer, closed) = read_until_closed(&mut reader, Duration::from_secs(25)).await;
    assert_eq!(
        status_of(&answer),
        Some(408),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_error_body(&json_of(&answer), "request_timeout");
    assert!(closed, "the connection stayed open after the 408");
    trickle.abort();
    still_serves(&app).await;
    app.shutdown().await;
}

/// Sends `request` (possibly far more than the server reads) and returns the answer and whether
/// the server closed the connection.
async fn send_raw(port: u16, request: Vec<u8>) -> (Vec<u8>, bool) {
    let (mut reader, mut writer) = connect(port).await.into_split();
    // Write in the background: the server may stop reading (and reset) before the end.
    let write = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let result = read_until_closed(&mut reader, Duration::from_secs(15)).await;
    drop(write.await);
    result
}

#[tokio::test]
async fn oversized_heads_get_431_and_the_server_keeps_serving() {
    let app = TestApp::spawn().await;
    let port = port_of(&app);
    let limits = HttpSettings::default();

    // A 100 KB header value, and 10,000 headers: both larger than the head limit. The server
    // stops reading at the limit, so the 431 may be lost to the reset of the unread rest.
    let big_value = format!(
        "GET /health HTTP/1.1\r\nHost: ingest\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let mut many = String::from("GET /health HTTP/1.1\r\nHost: ingest\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    for request in [big_value, many] {
        let (answer, closed) = send_raw(port, request.into_bytes()).await;
        assert!(closed, "an oversized head left the connection open");
        assert!(
            answer.is_empty() || status_of(&answer) == Some(431),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }

    // More headers than allowed in a small head: read whole, so the 431 always arrives.
    let mut too_many = String::from("GET /health HTTP/1.1\r\nHost: ingest\r\n");
    for i in 0..limits.max_headers + 50 {
        too_many.push_str(&format!("X-H{i}: v\r\n"));
    }
    too_many.push_str("\r\n");
    let (answer, closed) = send_raw(port, too_many.into_bytes()).await;
    assert_eq!(
        status_of(&answer),
        Some(431),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(closed);

    // A large but allowed head (40 KB in 80 headers) is served as usual.
    let mut req = app
        .client
        .post(format!("{}/api/errors", app.addr))
        .header("content-type", "application/json")
        .header("x-api-key", &app.key);
    for i in 0..80 {
        req = req.header(format!("x-pad-{i}"), "p".repeat(500));
    }
    let r = req
        .body(json!({"message": "big head", "source": "hostile-test"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    still_serves(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_in_bodies_headers_and_queries_gets_a_4xx_with_our_error_body() {
    let app = TestApp::spawn().await;
    let port = port_of(&app);

    let bad_event = b"{\"message\":\"\xff\xfe broken\",\"source\":\"x\"}".to_vec();
    let r = app
        .post_raw(
            "/api/errors",
            Some("application/json"),
            Some(&app.key),
            bad_event.clone(),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_error_body(&r.json().await.unwrap(), "malformed_json");

    let mut bad_batch = b"[".to_vec();
    bad_batch.extend_from_slice(&bad_event);
    bad_batch.push(b']');
    let r = app
        .post_raw(
            "/api/errors/batch",
            Some("application/json"),
            Some(&app.key),
            bad_batch,
        )
        .await;
    assert_eq!(r.status(), 400);
    assert_error_body(&r.json().await.unwrap(), "malformed_json");

    // The Sentry endpoints: a store body and an envelope item.
    let project = ingest::sentry::auth::project_segment(DEFAULT_PROJECT_ID);
    let auth = format!("Sentry sentry_key={}, sentry_version=7", app.key);
    let r = app
        .client
        .post(format!("{}/api/{project}/store/", app.addr))
        .header("x-sentry-auth", &auth)
        .body(bad_event.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_error_body(&r.json().await.unwrap(), "malformed_json");
    let mut envelope = b"{}\n{\"type\":\"event\"}\n".to_vec();
    envelope.extend_from_slice(&bad_event);
    let r = app
        .client
        .post(format!("{}/api/{project}/envelope/", app.addr))
        .header("x-sentry-auth", &auth)
        .body(envelope)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_error_body(&r.json().await.unwrap(), "validation_error");

    // An API key of bytes that are not UTF-8, on a write and on a read.
    for target in ["POST /api/errors", "GET /api/errors"] {
        let mut request = format!("{target} HTTP/1.1\r\nHost: ingest\r\nX-API-Key: ").into_bytes();
        request.extend_from_slice(b"\xff\xfe\xfd key");
        request.extend_from_slice(
            b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        );
        let (answer, _) = send_raw(port, request).await;
        assert_eq!(
            status_of(&answer),
            Some(401),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert_error_body(&json_of(&answer), "unauthorized");
    }

    // A query parameter that percent-decodes to invalid UTF-8 is decoded lossily (U+FFFD), as
    // form decoding does: an ordinary filter that matches nothing, not an error.
    let r = app.get("/api/errors?source=%FF%FE").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["data"]["total"], 0);

    // A raw non-ASCII byte in the request line is refused by the HTTP parser itself: 400.
    let (answer, _) = send_raw(
        port,
        b"GET /api/errors\xff HTTP/1.1\r\nHost: ingest\r\nConnection: close\r\n\r\n".to_vec(),
    )
    .await;
    assert_eq!(
        status_of(&answer),
        Some(400),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    still_serves(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_with_broken_chunked_framing_gets_400_unreadable_body_not_413() {
    let app = TestApp::spawn().await;
    let request = format!(
        "POST /api/errors HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n\
         X-API-Key: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5\r\n{{\"me\r\nnot-a-chunk-size\r\n",
        app.key
    );
    let (answer, _) = send_raw(port_of(&app), request.into_bytes()).await;
    assert_eq!(
        status_of(&answer),
        Some(400),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_error_body(&json_of(&answer), "unreadable_body");
    still_serves(&app).await;
    app.shutdown().await;
}

/// `depth` nested arrays around a number.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test]
async fn json_nested_100000_deep_is_a_400_not_a_stack_overflow() {
    let app = TestApp::spawn().await;
    let deep = nested(100_000);
    let cases = [
        (
            "/api/errors",
            format!(r#"{{"message":"m","source":"s","context":{{"a":{deep}}}}}"#),
        ),
        (
            "/api/errors/batch",
            format!(r#"[{{"message":"m","source":"s","context":{{"a":{deep}}}}}]"#),
        ),
        ("/api/errors", "[".repeat(100_000)),
        ("/api/errors", "{\"a\":".repeat(100_000)),
    ];
    for (path, body) in cases {
        let r = app
            .post_raw(path, Some("application/json"), Some(&app.key), body)
            .await;
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_error_body(&body, "malformed_json");
        assert!(
            body["details"]["body"]
                .as_str()
                .is_some_and(|d| d.contains("recursion limit")),
            "{body}"
        );
    }
    let project = ingest::sentry::auth::project_segment(DEFAULT_PROJECT_ID);
    let auth = format!("Sentry sentry_key={}, sentry_version=7", app.key);
    let sentry_event = format!(r#"{{"message":"m","extra":{{"a":{deep}}}}}"#);
    for (path, body) in [
        (format!("/api/{project}/store/"), sentry_event.clone()),
        (
            format!("/api/{project}/envelope/"),
            format!("{{}}\n{{\"type\":\"event\"}}\n{sentry_event}\n"),
        ),
    ] {
        let r = app
            .client
            .post(format!("{}{path}", app.addr))
            .header("x-sentry-auth", &auth)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "error");
    }
    still_serves(&app).await;
    app.shutdown().await;
}

/// A Sentry event nested just inside the parser's limit is accepted; ingest trims it so that the
/// worker, which decodes a whole broker message (this event and its neighbours) under the same
/// limit, can decode it. Untrimmed, the message was dead-lettered whole and the events lost.
#[tokio::test]
async fn a_sentry_event_nested_near_the_parser_limit_is_stored_with_its_neighbours() {
    let app = TestApp::spawn_with_worker().await;
    let project = ingest::sentry::auth::project_segment(DEFAULT_PROJECT_ID);
    let auth = format!("Sentry sentry_key={}, sentry_version=7", app.key);
    let mut bodies = vec![r#"{"message":"a neighbour"}"#.to_string()];
    // Up to the parser's limit (the deepest of these are refused with a 400, which is fine).
    for depth in 118..=127 {
        let deep = nested(depth);
        bodies.push(format!(
            r#"{{"message":"deep extra","extra":{{"a":{deep}}}}}"#
        ));
        bodies.push(format!(
            r#"{{"message":"deep contexts","contexts":{{"a":{deep}}}}}"#
        ));
        bodies.push(format!(r#"{{"message":"deep user","user":{deep}}}"#));
    }
    let mut accepted = 0;
    for body in bodies {
        let r = app
            .client
            .post(format!("{}/api/{project}/store/", app.addr))
            .header("x-sentry-auth", &auth)
            .body(body)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => accepted += 1,
            400 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(accepted > 10, "only {accepted} accepted");
    // Every accepted event is stored: none was dead-lettered by the worker.
    app.wait_for_count(accepted, 30).await;
    app.shutdown().await;
}

/// Starts the real `ingest` binary on a free port against `app`'s database and queue prefix,
/// through `prlimit` when `nofile` is given; its log (stdout) goes to `log`.
async fn spawn_binary(
    app: &TestApp,
    env: &[(&str, &str)],
    nofile: Option<u64>,
    log: &std::path::Path,
) -> (Child, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = env!("CARGO_BIN_EXE_ingest");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env("DATABASE_URL", &app.db.url)
        .env("AMQP_URL", &app.settings.services.amqp_url)
        .env("REDIS_URL", &app.settings.services.redis_url)
        .env("QUEUE_PREFIX", &app.prefix)
        .env("REDIS_PREFIX", &app.prefix)
        .env("PORT", port.to_string())
        .envs(env.iter().copied())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .expect("ingest binary starts (is prlimit installed?)");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let healthy = app
            .client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if healthy {
            return (child, port);
        }
        assert!(Instant::now() < deadline, "ingest did not become healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts an event on a new connection (a new client, no pooled connection to reuse): what a new
/// client gets.
async fn post_to(app: &TestApp, port: u16, message: &str) -> reqwest::StatusCode {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/api/errors"))
        .header("content-type", "application/json")
        .header("x-api-key", &app.key)
        .body(json!({"message": message, "source": "hostile-test"}).to_string())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the normal request is answered")
        .status()
}

fn log_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "faultline-{name}-{}.log",
        faultline_shared::testkit::unique_tag()
    ))
}

/// Opens `n` connections to `port`, 200 at a time; all must connect.
async fn open_idle(port: u16, n: usize) -> Vec<TcpStream> {
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)))
        .buffer_unordered(200)
        .collect()
        .await;
    results
        .into_iter()
        .map(|r| r.expect("an idle connection opens"))
        .collect()
}

/// The server's `http_open_connections` gauge, from its `/metrics`.
async fn open_connections(app: &TestApp, port: u16) -> f64 {
    let text = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("http_open_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn ten_thousand_idle_connections_do_not_shut_out_a_normal_client_and_are_closed() {
    // Each idle connection costs this process one descriptor (the server is another process).
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    let n = 10_000usize.min(limit.saturating_sub(500) as usize);
    eprintln!("RLIMIT_NOFILE soft limit {limit}: opening {n} idle connections");
    assert!(
        n >= 1000,
        "the open-file limit ({limit}) is too low for this test"
    );

    let app = TestApp::spawn().await;
    let log = log_path("idle");
    let (mut child, port) = spawn_binary(
        &app,
        &[("HTTP_HEADER_TIMEOUT_MS", "30000"), ("RUST_LOG", "warn")],
        None,
        &log,
    )
    .await;

    // Open them in steps, each time until the server holds them all: a burst beyond the listen
    // backlog would only measure the kernel dropping handshakes.
    let started = Instant::now();
    let mut idle = Vec::with_capacity(n);
    let mut held = 0.0;
    while idle.len() < n {
        let step = 1000.min(n - idle.len());
        idle.extend(open_idle(port, step).await);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The scrape itself is one more connection.
            held = open_connections(&app, port).await - 1.0;
            if held >= idle.len() as f64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server holds {held} of {}",
                idle.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "{n} idle connections held by the server after {:?}",
        started.elapsed()
    );
    assert!(held >= n as f64);

    // With every one of them held open, another client is served.
    assert_eq!(post_to(&app, port, "while 10,000 wait").await, 202);

    // Then the server closes every one of them (the header timeout is also the idle timeout).
    let closed: Vec<bool> = futures_util::stream::iter(idle.iter_mut())
        .map(|s| async move { read_until_closed(s, Duration::from_secs(120)).await.1 })
        .buffer_unordered(n)
        .collect()
        .await;
    let closed = closed.into_iter().filter(|c| *c).count();
    assert_eq!(closed, n, "idle connections left open by the server");
    drop(idle);

    assert!(child.try_wait().unwrap().is_none(), "ingest died");
    assert_eq!(post_to(&app, port, "after the idle flood").await, 202);
    let _ = child.kill().await;
    let _ = std::fs::remove_file(&log);
    app.shutdown().await;
}

#[tokio::test]
async fn out_of_file_descriptors_ingest_pauses_accepting_and_recovers() {
    let app = TestApp::spawn().await;
    let log = log_path("emfile");
    // 128 descriptors: the pools and the broker take a few dozen, the rest go to connections.
    let (mut child, port) = spawn_binary(
        &app,
        &[
            ("HTTP_HEADER_TIMEOUT_MS", "3000"),
            ("DB_MAX_CONNECTIONS", "2"),
            ("KEY_CACHE_TTL_MS", "600000"),
            ("RUST_LOG", "ingest=info,warn"),
        ],
        Some(128),
        &log,
    )
    .await;
    // Warm the key cache, so the request below needs no new database connection.
    assert_eq!(post_to(&app, port, "before").await, 202);

    let idle = open_idle(port, 300).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("Cannot accept connections")
    {
        assert!(
            Instant::now() < deadline,
            "ingest never ran out of descriptors; log:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(child.try_wait().unwrap().is_none(), "ingest died on EMFILE");

    // The idle connections time out, descriptors come back, and a normal client is served.
    assert_eq!(post_to(&app, port, "after EMFILE").await, 202);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Accepting connections again"), "{text}");
    assert!(child.try_wait().unwrap().is_none(), "ingest died");
    drop(idle);
    let _ = child.kill().await;
    let _ = std::fs::remove_file(&log);
    app.shutdown().await;
}

/// NUL characters, which Postgres stores neither in text nor in jsonb, in the read API's filters
/// and in a management body: a 400 that says so, never a 500, and the next request is served.
#[tokio::test]
async fn nul_characters_in_filters_and_bodies_are_a_clear_400() {
    let app = TestApp::spawn().await;
    for path in [
        "/api/errors?environment=prod%00",
        "/api/errors?source=%00",
        "/api/errors?q=a%00b",
    ] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 400, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "validation_error", "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("NUL"), "{body}");
    }
    let rule = json!({
        "name": "rate\u{0}",
        "condition": "error_count > threshold in time_window",
        "threshold": 5,
        "time_window": "5m",
        "notifications": ["email"],
    });
    let resp = app
        .call(
            reqwest::Method::POST,
            "/api/alerts/rules",
            &app.key,
            Some(rule),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "validation_error", "{body}");
    still_serves(&app).await;
}

/// A body holds the room it declared only while it arrives promptly: a client that declares
/// bodies as large as the whole budget and sends them slowly gives the room back within
/// `HOLD_WHILE_ARRIVING` each, and others' events go through while its bodies are still arriving.
#[tokio::test]
async fn bodies_that_arrive_slowly_give_their_budget_back_to_other_clients() {
    let app = TestApp::spawn_with(|s| {
        s.max_body_bytes = 16 * 1024;
        s.body_budget_bytes = 16 * 1024;
        s.http.body_timeout = Duration::from_secs(120);
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(port_of(&app)).await;
        let head = format!(
            "POST /api/errors/batch HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n\
             X-API-Key: {}\r\nContent-Length: 16000\r\n\r\n[",
            app.key
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    // Give ingest time to take the heads and start reading the bodies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Far sooner than the slow bodies' 120 s timeout: had they kept the size they declared, these
    // would wait for it.
    let others = tokio::time::timeout(Duration::from_secs(20), async {
        for i in 0..3 {
            let r = app
                .post_event(&json!({"message": format!("meanwhile {i}"), "source": "web"}))
                .await;
            assert_eq!(r.status(), 202);
        }
    })
    .await;
    assert!(others.is_ok(), "events waited behind bodies still arriving");
    // The slow bodies, finished, are accepted too.
    let item = json!({"message": "slow", "source": "web"}).to_string();
    let mut rest = item.clone();
    while rest.len() + item.len() + 2 < 16000 {
        rest.push(',');
        rest.push_str(&item);
    }
    rest.push(']');
    rest.push_str(&" ".repeat(16000 - 1 - rest.len()));
    for mut stream in slow {
        stream.write_all(rest.as_bytes()).await.unwrap();
        // The connection stays open (keep-alive): read until the answer's head has arrived.
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("an answer to the finished body")
                .unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            status_of(&answer),
            Some(202),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
    app.shutdown().await;
}

//! The three ways a notification leaves Faultline: a signed JSON webhook, a Slack incoming
//! webhook and SMTP email. Each sender takes the channel's stored config and the outbox payload,
//! makes one outbound call bounded by a timeout, and reports success or a [`SendError`] whose
//! message never contains a secret (URLs are stripped from HTTP errors, since a Slack webhook URL
//! is itself a credential).
//!
//! # Webhook signature
//! Every webhook carries `X-Faultline-Signature: t=<unix seconds>,v1=<hex>` where `<hex>` is the
//! HMAC-SHA256, keyed with the integration's `secret`, of `"<t>.<raw body>"`. A receiver recomputes
//! it over the body bytes as received, compares in constant time, and rejects a `t` older than a
//! few minutes (replays). `Idempotency-Key` (also in the body) lets it drop redelivered copies.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

/// Why a send failed: what is recorded on the attempt and shown by the API.
#[derive(Debug, Clone)]
pub struct SendError {
    pub message: String,
    pub http_status: Option<u16>,
    /// The receiver asked us to come back later (429/503 with `Retry-After`).
    pub retry_after: Option<Duration>,
    /// Retrying cannot help (bad configuration, refused target).
    pub permanent: bool,
}

impl SendError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            http_status: None,
            retry_after: None,
            permanent: false,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            permanent: true,
            ..Self::new(message)
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A successful send.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    pub http_status: Option<u16>,
}

/// The signature header's value for `body` sent at `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header against `body`, as a receiver would (used by the tests and usable as
/// reference code).
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

/// Settings of the webhook channel.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WebhookConfig {
    pub url: String,
    pub secret: String,
}

/// Settings of the Slack channel. The contract calls the URL `webhook_url`; both names are read.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SlackConfig {
    #[serde(alias = "webhook_url")]
    pub url: String,
    #[serde(default)]
    pub channel: Option<String>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text (a local relay or a test server only).
    None,
    /// Plain connection upgraded with STARTTLS (usually port 587); required, not opportunistic.
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// Settings of the email channel. The contract's `smtp_server` and `from_email` are read too.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct EmailConfig {
    #[serde(alias = "smtp_server")]
    pub host: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default = "default_tls")]
    pub tls: TlsMode,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(alias = "from_email")]
    pub from: String,
    pub recipients: Vec<String>,
}

fn default_tls() -> TlsMode {
    TlsMode::Starttls
}

/// Checks a channel's config as given to the API and returns it in its stored (canonical) form, or
/// a reason per field. Values are never quoted back (they may be secrets).
pub fn validate_config(
    channel: crate::rule::Channel,
    config: &Value,
) -> Result<Value, serde_json::Map<String, Value>> {
    use crate::rule::Channel;
    let mut errors = serde_json::Map::new();
    let mut fail = |field: &str, msg: &str| {
        errors.insert(format!("config.{field}"), Value::String(msg.to_string()));
    };
    let http_url = |u: &str| {
        reqwest::Url::parse(u)
            .ok()
            .filter(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some())
            .is_some()
    };
    let canonical = match channel {
        Channel::Webhook => match parse_config::<WebhookConfig>(config) {
            Ok(c) => {
                if !http_url(&c.url) {
                    fail("url", "must be an http or https URL");
                }
                if c.secret.len() < 16 {
                    fail("secret", "must be at least 16 characters");
                }
                serde_json::to_value(c).ok()
            }
            Err(e) => {
                fail("", &e);
                None
            }
        },
        Channel::Slack => match parse_config::<SlackConfig>(config) {
            Ok(c) => {
                if !http_url(&c.url) {
                    fail(
                        "url",
                        "must be an http or https URL (the Slack incoming-webhook URL)",
                    );
                }
                serde_json::to_value(c).ok()
            }
            Err(e) => {
                fail("", &e);
                None
            }
        },
        Channel::Email => match parse_config::<EmailConfig>(config) {
            Ok(c) => {
                if c.host.trim().is_empty() {
                    fail("host", "must not be empty");
                }
                if c.port == Some(0) {
                    fail("port", "must be 1-65535");
                }
                if c.from.parse::<lettre::message::Mailbox>().is_err() {
                    fail("from", "must be an e-mail address");
                }
                if c.recipients.is_empty() {
                    fail("recipients", "must name at least one address");
                }
                if c.recipients
                    .iter()
                    .any(|r| r.parse::<lettre::message::Mailbox>().is_err())
                {
                    fail("recipients", "every recipient must be an e-mail address");
                }
                if c.username.is_some() != c.password.is_some() {
                    fail("username", "username and password go together");
                }
                serde_json::to_value(c).ok()
            }
            Err(e) => {
                fail("", &e);
                None
            }
        },
    };
    match canonical {
        Some(v) if errors.is_empty() => Ok(v),
        _ => {
            // serde's own message has no field prefix: put it under "config".
            if let Some(msg) = errors.remove("config.") {
                errors.insert("config".into(), msg);
            }
            Err(errors)
        }
    }
}

/// Parses a channel's config, naming the problem (never the values) on failure.
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T, String> {
    serde_json::from_value(config.clone()).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.split(" at line").next().unwrap_or(&msg);
        // "invalid type: string \"…\", expected u16" quotes the value, which may be a secret.
        match (msg.strip_prefix("invalid "), msg.rsplit_once(", expected ")) {
            (Some(_), Some((_, expected))) => {
                format!("a field has the wrong type (expected {expected})")
            }
            _ if msg.starts_with("invalid ") => "a field has an invalid value".to_string(),
            _ => msg.to_string(),
        }
    })
}

/// Whether an address is reachable only inside this host or network (SSRF targets).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || o[0] >= 240
}

/// A checked destination: the URL and, for a host name, the addresses it was checked against. The
/// request is made to exactly those addresses, so a DNS answer that changes between the check and
/// the connection (DNS rebinding) cannot redirect it to a private address.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: reqwest::Url,
    pinned: Option<(String, Vec<SocketAddr>)>,
}

/// Refuses URLs that are not http(s) or whose host resolves to a loopback or private address,
/// unless `allow_private` (development). Every resolved address must be public, so a name with one
/// public and one private record is refused too.
pub async fn check_target(url: &str, allow_private: bool) -> Result<Target, SendError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| SendError::permanent("the configured URL is not a valid URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(SendError::permanent(
            "the configured URL must be http or https",
        ));
    }
    if allow_private {
        return Ok(Target {
            url: parsed,
            pinned: None,
        });
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| SendError::permanent("the configured URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let (addrs, is_name): (Vec<SocketAddr>, bool) = match host.parse::<IpAddr>() {
        Ok(ip) => (vec![SocketAddr::new(ip, port)], false),
        Err(_) => (
            tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::lookup_host((host.as_str(), port)),
            )
            .await
            .map_err(|_| SendError::new("resolving the target host timed out"))?
            .map_err(|_| SendError::new("the target host could not be resolved"))?
            .collect(),
            true,
        ),
    };
    if addrs.is_empty() || addrs.iter().any(|a| is_private(a.ip())) {
        return Err(SendError::permanent(
            "refused: the target resolves to a loopback or private address \
             (set ALERTER_ALLOW_PRIVATE_TARGETS=true to allow, e.g. in development)",
        ));
    }
    Ok(Target {
        url: parsed,
        pinned: is_name.then_some((host, addrs)),
    })
}

/// Seconds from a `Retry-After` header (the delay form; an HTTP date is not supported and ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Faultline-Alerter/", env!("CARGO_PKG_VERSION")))
}

/// Outbound HTTP for the senders: a timeout on every call, no redirects (a redirect could lead past
/// the SSRF check), and requests to a checked host name pinned to the checked addresses.
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    timeout: Duration,
}

impl Http {
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: client_builder(timeout)
                .build()
                .expect("a client with rustls and no custom roots builds"),
            timeout,
        }
    }

    fn client_for(&self, target: &Target) -> Result<reqwest::Client, SendError> {
        match &target.pinned {
            None => Ok(self.client.clone()),
            Some((host, addrs)) => client_builder(self.timeout)
                .resolve_to_addrs(host, addrs)
                .build()
                .map_err(|_| SendError::new("could not build the HTTP client")),
        }
    }
}

async fn post_json(
    http: &Http,
    target: Target,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
) -> Result<Sent, SendError> {
    let client = http.client_for(&target)?;
    let mut req = client
        .post(target.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let resp = req.send().await.map_err(|e| {
        let e = e.without_url();
        if e.is_timeout() {
            SendError::new("the receiver did not answer in time")
        } else if e.is_connect() {
            SendError::new(format!("could not connect to the receiver: {e}"))
        } else {
            SendError::new(format!("request failed: {e}"))
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(Sent {
            http_status: Some(status.as_u16()),
        });
    }
    let retry = if matches!(status.as_u16(), 429 | 503) {
        retry_after(resp.headers())
    } else {
        None
    };
    Err(SendError {
        message: format!("the receiver answered {status}"),
        http_status: Some(status.as_u16()),
        retry_after: retry,
        permanent: false,
    })
}

/// Sends the payload as a signed JSON POST.
pub async fn send_webhook(
    http: &Http,
    config: &WebhookConfig,
    payload: &Value,
    idempotency_key: &str,
    allow_private: bool,
) -> Result<Sent, SendError> {
    let target = check_target(&config.url, allow_private).await?;
    let body = serde_json::to_vec(payload).map_err(|e| SendError::new(e.to_string()))?;
    let signature = sign(&config.secret, chrono::Utc::now().timestamp(), &body);
    post_json(
        http,
        target,
        body,
        vec![
            ("X-Faultline-Signature", signature),
            ("Idempotency-Key", idempotency_key.to_string()),
            ("X-Faultline-Event", str_at(payload, "/type").to_string()),
        ],
    )
    .await
}

/// Sends a Slack incoming-webhook message.
pub async fn send_slack(
    http: &Http,
    config: &SlackConfig,
    payload: &Value,
    idempotency_key: &str,
    allow_private: bool,
) -> Result<Sent, SendError> {
    let target = check_target(&config.url, allow_private).await?;
    let mut message = json!({ "text": slack_text(payload) });
    if let Some(channel) = config.channel.as_deref().filter(|c| !c.is_empty()) {
        message["channel"] = json!(channel);
    }
    let body = serde_json::to_vec(&message).map_err(|e| SendError::new(e.to_string()))?;
    post_json(
        http,
        target,
        body,
        vec![("Idempotency-Key", idempotency_key.to_string())],
    )
    .await
}

/// Sends an email through the configured SMTP server, one message to all recipients.
pub async fn send_email(
    config: &EmailConfig,
    payload: &Value,
    idempotency_key: &str,
    timeout: Duration,
) -> Result<Sent, SendError> {
    use lettre::{
        AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
        message::{Mailbox, header::ContentType},
        transport::smtp::authentication::Credentials,
    };
    let from: Mailbox = config
        .from
        .parse()
        .map_err(|_| SendError::permanent("the configured from address is invalid"))?;
    let mut builder = Message::builder()
        .from(from)
        .subject(email_subject(payload))
        // Receivers and mail clients drop duplicates by Message-ID: derived from the idempotency key.
        .message_id(Some(format!(
            "<{}@faultline>",
            idempotency_key.replace(':', ".")
        )))
        .header(ContentType::TEXT_PLAIN);
    if config.recipients.is_empty() {
        return Err(SendError::permanent("no recipients are configured"));
    }
    for r in &config.recipients {
        let mb: Mailbox = r
            .parse()
            .map_err(|_| SendError::permanent("a configured recipient address is invalid"))?;
        builder = builder.to(mb);
    }
    let message = builder
        .body(email_body(payload))
        .map_err(|e| SendError::permanent(format!("building the message failed: {e}")))?;
    let transport = match config.tls {
        TlsMode::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port.unwrap_or(25)),
        TlsMode::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)
            .map_err(|e| SendError::permanent(format!("SMTP TLS set-up failed: {e}")))?
            .port(config.port.unwrap_or(587)),
        TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)
            .map_err(|e| SendError::permanent(format!("SMTP TLS set-up failed: {e}")))?
            .port(config.port.unwrap_or(465)),
    };
    let mut transport = transport.timeout(Some(timeout));
    if let (Some(user), Some(pass)) = (&config.username, &config.password) {
        transport = transport.credentials(Credentials::new(user.clone(), pass.clone()));
    }
    let transport = transport.build();
    match tokio::time::timeout(timeout, transport.send(message)).await {
        Ok(Ok(_)) => Ok(Sent::default()),
        Ok(Err(e)) => {
            let mut err = SendError::new(format!("SMTP delivery failed: {e}"));
            err.permanent = e.is_permanent();
            Err(err)
        }
        Err(_) => Err(SendError::new("the SMTP server did not answer in time")),
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn window_words(payload: &Value) -> String {
    let d = str_at(payload, "/rule/time_window");
    crate::rule::parse_duration(d)
        .map(|d| crate::rule::describe_duration(d.as_secs()))
        .unwrap_or_else(|_| d.to_string())
}

/// One line saying what happened, e.g. `High Error Rate: 57 events in 5 minutes (threshold 50)`.
pub fn headline(payload: &Value) -> String {
    let name = str_at(payload, "/rule/name");
    let count = payload.get("count").and_then(Value::as_i64).unwrap_or(0);
    match str_at(payload, "/rule/kind") {
        "threshold" => format!(
            "{name}: {count} events in {} (threshold {})",
            window_words(payload),
            payload
                .pointer("/rule/threshold")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        ),
        "new_error" => format!("{name}: {count} new error(s)"),
        "regression" => format!("{name}: {count} resolved error(s) came back"),
        "test" => "Faultline test notification".to_string(),
        _ => format!("{name}: fired"),
    }
}

fn details(payload: &Value) -> Vec<String> {
    let mut lines = Vec::new();
    let condition = str_at(payload, "/rule/condition");
    if !condition.is_empty() {
        lines.push(format!(
            "Rule: {} ({condition})",
            str_at(payload, "/rule/name")
        ));
    }
    let sev = str_at(payload, "/rule/severity");
    if !sev.is_empty() {
        lines.push(format!("Severity: {sev}"));
    }
    if let Some(src) = payload.get("source").and_then(Value::as_str) {
        lines.push(format!("Source: {src}"));
    }
    if let Some(top) = payload.get("top_error").filter(|t| t.is_object()) {
        lines.push(format!(
            "Top error: {} ({}, {}, {} events)",
            str_at(top, "/message"),
            str_at(top, "/level"),
            str_at(top, "/source"),
            top.get("count").and_then(Value::as_i64).unwrap_or(0)
        ));
    }
    let link = str_at(payload, "/link");
    if !link.is_empty() {
        lines.push(format!("Link: {link}"));
    }
    let incident = str_at(payload, "/incident/id");
    if !incident.is_empty() {
        lines.push(format!("Incident: {incident}"));
    }
    lines
}

/// Slack's message text (mrkdwn): the headline in bold, then the details.
pub fn slack_text(payload: &Value) -> String {
    let mut text = format!(":rotating_light: *{}*", headline(payload));
    for line in details(payload) {
        text.push('\n');
        text.push_str(&line);
    }
    text
}

pub fn email_subject(payload: &Value) -> String {
    format!("[Faultline] {}", headline(payload))
}

pub fn email_body(payload: &Value) -> String {
    let mut body = headline(payload);
    body.push_str("\n\n");
    for line in details(payload) {
        body.push_str(&line);
        body.push('\n');
    }
    body.push_str(&format!(
        "\nIdempotency key: {}\n",
        str_at(payload, "/idempotency_key")
    ));
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_secret_only() {
        let body = br#"{"a":1}"#;
        let h = sign("s3cret", 1_700_000_000, body);
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify("s3cret", &h, body));
        assert!(!verify("other", &h, body));
        assert!(!verify("s3cret", &h, br#"{"a":2}"#));
    }

    #[test]
    fn loopback_and_private_addresses_are_private() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn private_targets_are_refused_unless_allowed() {
        let err = check_target("http://127.0.0.1:9/hook", false)
            .await
            .unwrap_err();
        assert!(err.permanent && err.message.contains("private"));
        assert!(
            check_target("http://localhost:9/hook", false)
                .await
                .is_err()
        );
        assert!(check_target("http://127.0.0.1:9/hook", true).await.is_ok());
        assert!(check_target("ftp://example.com/", true).await.is_err());
    }
}

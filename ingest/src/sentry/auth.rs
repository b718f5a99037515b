//! Where a Sentry SDK puts its key, and how a project is named in a DSN.
//!
//! A DSN is `http://<public key>@<host>/<project>`. Our ingest key is the public key, so an existing
//! key is a DSN without anything new to store. SDKs insist that the project is a decimal number
//! (the Python SDK runs `int()` on it, the JavaScript SDK matches `^\d+$`), while our projects are
//! UUIDs: the DSN therefore carries the UUID's 128-bit value in decimal (the default project,
//! `00000000-0000-0000-0000-000000000001`, is `1`). The path also accepts the UUID spelled out.

use uuid::Uuid;

/// The project segment of a DSN for `project`.
pub fn project_segment(project: Uuid) -> String {
    project.as_u128().to_string()
}

/// The DSN of a key: `public_url` is where SDKs reach ingest (e.g. `https://faultline.example.com`).
pub fn dsn(public_url: &str, key: &str, project: Uuid) -> String {
    let base = public_url.trim_end_matches('/');
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    format!("{scheme}://{key}@{rest}/{}", project_segment(project))
}

/// Where the asking client reached ingest, for the DSN shown with a new key: its `Host`, over
/// `https` when a trusted proxy says so (`X-Forwarded-Proto`). `None` without a usable `Host`.
pub fn base_url_of(headers: &axum::http::HeaderMap, trust_proxy: bool) -> Option<String> {
    let host = headers.get(axum::http::header::HOST)?.to_str().ok()?.trim();
    let plausible = |c: char| c.is_ascii_alphanumeric() || ".-:[]_".contains(c);
    if host.is_empty() || host.len() > 255 || !host.chars().all(plausible) {
        return None;
    }
    let scheme = trust_proxy
        .then(|| headers.get("x-forwarded-proto")?.to_str().ok())
        .flatten()
        .map(str::trim)
        .filter(|p| p.eq_ignore_ascii_case("https"))
        .map_or("http", |_| "https");
    Some(format!("{scheme}://{host}"))
}

/// Reads the project of a Sentry URL path: decimal (as in our DSNs) or a UUID.
pub fn parse_project(segment: &str) -> Option<Uuid> {
    let segment = segment.trim();
    if !segment.is_empty() && segment.len() <= 39 && segment.bytes().all(|b| b.is_ascii_digit()) {
        return segment.parse::<u128>().ok().map(Uuid::from_u128);
    }
    Uuid::parse_str(segment).ok()
}

/// The `sentry_key` of an `X-Sentry-Auth` (or `Authorization: Sentry ...`) header:
/// `Sentry sentry_key=<key>, sentry_version=7, sentry_client=sentry.python/2.0`.
pub fn key_from_auth_header(value: &str) -> Option<String> {
    let value = value.trim();
    let params = match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("sentry ") => &value[7..],
        _ => value,
    };
    params.split(',').find_map(|pair| {
        let (name, v) = pair.split_once('=')?;
        (name.trim() == "sentry_key")
            .then(|| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// The `sentry_key` query parameter (browser SDKs use it to avoid a CORS pre-flight).
pub fn key_from_query(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, v) = pair.split_once('=')?;
        (name == "sentry_key")
            .then(|| percent_decode(v))
            .flatten()
            .filter(|v| !v.is_empty())
    })
}

/// The key and project segment of a DSN (`scheme://key[:secret]@host[:port]/[path/]project`), as
/// sent in an envelope header.
pub fn key_from_dsn(dsn: &str) -> Option<(String, String)> {
    let (_, rest) = dsn.split_once("://")?;
    let (userinfo, location) = rest.split_once('@')?;
    let key = userinfo.split(':').next()?;
    let project = location.trim_end_matches('/').rsplit('/').next()?;
    if key.is_empty() || project.is_empty() || !location.contains('/') {
        return None;
    }
    Some((percent_decode(key)?, project.to_string()))
}

/// `%XX` and `+` decoding; `None` when the result is not UTF-8 or an escape is broken.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dsn_names_the_project_by_its_decimal_value_and_parses_back() {
        let project = Uuid::now_v7();
        let dsn = dsn("https://errors.example.com/", "fl_abc", project);
        assert!(dsn.starts_with("https://fl_abc@errors.example.com/"));
        let (key, segment) = key_from_dsn(&dsn).unwrap();
        assert_eq!(key, "fl_abc");
        assert_eq!(parse_project(&segment), Some(project));
        assert_eq!(
            dsn_default(),
            "http://k@localhost:8080/1",
            "the default project is /1"
        );
    }

    fn dsn_default() -> String {
        dsn(
            "http://localhost:8080",
            "k",
            faultline_shared::domain::DEFAULT_PROJECT_ID,
        )
    }

    #[test]
    fn the_base_url_comes_from_the_host_and_a_trusted_proxy() {
        use axum::http::{HeaderMap, HeaderValue};
        let mut h = HeaderMap::new();
        assert_eq!(base_url_of(&h, false), None);
        h.insert("host", HeaderValue::from_static("errors.example.com:8080"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(
            base_url_of(&h, false).as_deref(),
            Some("http://errors.example.com:8080")
        );
        assert_eq!(
            base_url_of(&h, true).as_deref(),
            Some("https://errors.example.com:8080")
        );
        h.insert("host", HeaderValue::from_static("evil.com/x@y"));
        assert_eq!(base_url_of(&h, false), None);
    }

    #[test]
    fn the_project_may_also_be_spelled_as_a_uuid() {
        let project = Uuid::now_v7();
        assert_eq!(parse_project(&project.to_string()), Some(project));
        assert_eq!(parse_project("abc"), None);
        assert_eq!(parse_project(""), None);
        assert_eq!(parse_project(&"9".repeat(40)), None);
    }

    #[test]
    fn the_key_is_found_in_the_auth_header_and_the_query() {
        assert_eq!(
            key_from_auth_header(
                "Sentry sentry_key=fl_x, sentry_version=7, sentry_client=sentry.python/2.0"
            )
            .as_deref(),
            Some("fl_x")
        );
        assert_eq!(
            key_from_auth_header("sentry_version=7,sentry_key=fl_y").as_deref(),
            Some("fl_y")
        );
        assert_eq!(key_from_auth_header("Sentry sentry_version=7"), None);
        assert_eq!(
            key_from_query("sentry_version=7&sentry_key=fl%5Fz").as_deref(),
            Some("fl_z")
        );
        assert_eq!(key_from_query("sentry_key="), None);
    }

    #[test]
    fn a_dsn_without_key_or_project_is_refused() {
        assert_eq!(key_from_dsn("http://host/1"), None);
        assert_eq!(key_from_dsn("http://key@host"), None);
        assert_eq!(
            key_from_dsn("https://key:secret@host:9000/sub/path/42"),
            Some(("key".to_string(), "42".to_string()))
        );
    }
}

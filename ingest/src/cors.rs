//! CORS, so a browser SDK (or a dashboard on another origin) can call the API: allowed origins
//! from `CORS_ALLOWED_ORIGINS` (`*` for any); empty turns CORS off (no headers, no pre-flight
//! answers). The rate-limit and request-id headers are exposed to scripts.

use axum::http::{HeaderName, HeaderValue, Method, header};
use std::time::Duration;
use tower::util::Either;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub fn layer(origins: &[String]) -> Either<CorsLayer, tower::layer::util::Identity> {
    if origins.is_empty() {
        return Either::Right(tower::layer::util::Identity::new());
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    Either::Left(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::CONTENT_ENCODING,
                header::IF_NONE_MATCH,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-sentry-auth"),
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("x-ratelimit-limit"),
                HeaderName::from_static("x-ratelimit-remaining"),
                HeaderName::from_static("x-ratelimit-reset"),
                header::RETRY_AFTER,
                // Sentry browser SDKs hold back events for as long as it says.
                HeaderName::from_static("x-sentry-rate-limits"),
                header::ETAG,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

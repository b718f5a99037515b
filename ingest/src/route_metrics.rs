//! The Prometheus series every request updates (`http_requests_total`,
//! `http_request_duration_seconds`), with their handles kept per route, method and status. Naming
//! a series by its labels on each request built the labels as new strings and looked the series
//! up in the recorder's registry: ~9 % of the allocations a single-event request made
//! (benches/RESULTS.md, eleventh session). The handles are the recorder's own, so `/metrics` is
//! unchanged.

use axum::http::Method;
use metrics::{Counter, Histogram};
use std::{
    collections::HashMap,
    sync::{PoisonError, RwLock},
    time::Duration,
};

/// One route's series.
struct Route {
    duration: Histogram,
    requests: HashMap<(Method, u16), Counter>,
}

#[derive(Default)]
pub struct RouteMetrics {
    routes: RwLock<HashMap<String, Route>>,
}

/// The method as a label: the standard ones by name, any other as `OTHER`, so a client inventing
/// methods cannot add series without end.
fn method_label(method: &Method) -> Method {
    match *method {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::DELETE
        | Method::PATCH
        | Method::HEAD
        | Method::OPTIONS
        | Method::CONNECT
        | Method::TRACE => method.clone(),
        _ => Method::from_bytes(b"OTHER").unwrap_or(Method::GET),
    }
}

impl RouteMetrics {
    /// Counts one answered request of `route` (its matched path, or `unmatched`).
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let method = method_label(method);
        let seconds = elapsed.as_secs_f64();
        {
            let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = routes.get(route)
                && let Some(requests) = r.requests.get(&(method.clone(), status))
            {
                requests.increment(1);
                r.duration.record(seconds);
                return;
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        let r = routes.entry(route.to_string()).or_insert_with(|| Route {
            duration: metrics::histogram!("http_request_duration_seconds", "route" => route.to_string()),
            requests: HashMap::new(),
        });
        r.requests
            .entry((method.clone(), status))
            .or_insert_with(|| {
                metrics::counter!("http_requests_total", "route" => route.to_string(),
                    "method" => method.as_str().to_string(), "status" => status.to_string())
            })
            .increment(1);
        r.duration.record(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::PrometheusBuilder;

    #[test]
    fn requests_are_counted_by_route_method_and_status_with_invented_methods_folded() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let m = RouteMetrics::default();
            let ms = Duration::from_millis(3);
            m.record("/api/errors", &Method::POST, 202, ms);
            m.record("/api/errors", &Method::POST, 202, ms);
            m.record("/api/errors", &Method::POST, 400, ms);
            m.record("unmatched", &Method::from_bytes(b"BREW").unwrap(), 404, ms);
            m.record("unmatched", &Method::from_bytes(b"WHEN").unwrap(), 404, ms);
        });
        let text = handle.render();
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.starts_with("http_requests_total") && l.contains(needle))
                .unwrap_or_else(|| panic!("no series with {needle}:\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        assert_eq!(line("status=\"202\""), "2");
        assert_eq!(line("status=\"400\""), "1");
        assert_eq!(line("method=\"OTHER\""), "2");
        assert!(!text.contains("BREW"), "{text}");
        assert!(
            text.contains("http_request_duration_seconds_count{route=\"/api/errors\"} 3"),
            "{text}"
        );
    }
}

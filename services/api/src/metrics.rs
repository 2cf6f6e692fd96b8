//! Prometheus metrics in the text exposition format (version 0.0.4), kept by hand: a few
//! counters and one histogram, which no dependency would make simpler.
//!
//! - `forecourt_http_requests_total{method,route,status}`: requests answered.
//! - `forecourt_http_request_duration_seconds{method,route}`: latency histogram.
//! - `forecourt_workflow_instances{workflow_type,status}`: instances per status, counted at
//!   scrape time.
//! - `forecourt_outbox_undelivered{due}`: outbox messages not delivered yet; `due="true"` are
//!   deliverable now, `due="false"` are timers and backoff waiting for their time.
//!
//! `route` is the route's template (`/v1/accounts/{id}`), or `unmatched`, so the number of
//! series is bounded by the number of routes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};

use entities::{wf_instances, wf_outbox};

use crate::state::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    /// Count per bucket (not cumulative; summed when written).
    counts: [u64; BUCKETS.len()],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
}

/// The process's HTTP metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// The route template of a response, copied from the request by [`capture_route`].
#[derive(Clone)]
pub(crate) struct RouteTemplate(pub String);

impl Metrics {
    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let mut inner = self.inner.lock().expect("metrics lock");
        *inner
            .requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        inner
            .latency
            .entry((method.to_owned(), route.to_owned()))
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    fn write_http(&self, out: &mut String) {
        let inner = self.inner.lock().expect("metrics lock");
        out.push_str("# HELP forecourt_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE forecourt_http_requests_total counter\n");
        for ((method, route, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "forecourt_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        out.push_str(
            "# HELP forecourt_http_request_duration_seconds Time to answer HTTP requests.\n",
        );
        out.push_str("# TYPE forecourt_http_request_duration_seconds histogram\n");
        for ((method, route), h) in &inner.latency {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "forecourt_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "forecourt_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "forecourt_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum_seconds
            );
            let _ = writeln!(
                out,
                "forecourt_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}

/// Escapes a label value.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Route layer: copies the matched route template into the response, where the outer
/// [`track`] middleware (which runs before routing) can read it.
pub(crate) async fn capture_route(req: Request, next: Next) -> Response {
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let mut response = next.run(req).await;
    if let Some(template) = template {
        response.extensions_mut().insert(RouteTemplate(template));
    }
    response
}

/// Outer middleware: counts and times every request.
pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    let route = response
        .extensions()
        .get::<RouteTemplate>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| "unmatched".to_owned());
    state.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The whole exposition: HTTP metrics, then workflow and outbox gauges read from the
/// database now.
pub async fn render(metrics: &Metrics, db: &DatabaseConnection) -> Result<String, sea_orm::DbErr> {
    let mut out = String::new();
    metrics.write_http(&mut out);
    let instances: Vec<(String, String, i64)> = wf_instances::Entity::find()
        .select_only()
        .column(wf_instances::Column::WorkflowType)
        .column(wf_instances::Column::Status)
        .column_as(wf_instances::Column::Id.count(), "n")
        .group_by(wf_instances::Column::WorkflowType)
        .group_by(wf_instances::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let mut instances: Vec<_> = instances.into_iter().collect();
    instances.sort();
    out.push_str("# HELP forecourt_workflow_instances Workflow instances by type and status.\n");
    out.push_str("# TYPE forecourt_workflow_instances gauge\n");
    for (workflow_type, status, n) in instances {
        let _ = writeln!(
            out,
            "forecourt_workflow_instances{{workflow_type=\"{}\",status=\"{}\"}} {n}",
            escape(&workflow_type),
            escape(&status)
        );
    }
    let now = crate::directory::now();
    let due = wf_outbox::Entity::find()
        .filter(wf_outbox::Column::DeliveredAt.is_null())
        .filter(wf_outbox::Column::AvailableAt.lte(now))
        .count(db)
        .await?;
    let waiting = wf_outbox::Entity::find()
        .filter(wf_outbox::Column::DeliveredAt.is_null())
        .filter(wf_outbox::Column::AvailableAt.gt(now))
        .count(db)
        .await?;
    out.push_str("# HELP forecourt_outbox_undelivered Outbox messages not delivered yet; due=\"false\" are timers waiting for their time.\n");
    out.push_str("# TYPE forecourt_outbox_undelivered gauge\n");
    let _ = writeln!(out, "forecourt_outbox_undelivered{{due=\"true\"}} {due}");
    let _ = writeln!(
        out,
        "forecourt_outbox_undelivered{{due=\"false\"}} {waiting}"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_the_count() {
        let metrics = Metrics::default();
        metrics.record("GET", "/v1/x", 200, Duration::from_millis(3));
        metrics.record("GET", "/v1/x", 200, Duration::from_millis(30));
        metrics.record("GET", "/v1/x", 404, Duration::from_secs(20));
        let mut out = String::new();
        metrics.write_http(&mut out);
        assert!(out.contains(
            "forecourt_http_requests_total{method=\"GET\",route=\"/v1/x\",status=\"200\"} 2"
        ));
        assert!(out.contains("le=\"0.005\"} 1"), "{out}");
        assert!(out.contains("le=\"0.05\"} 2"), "{out}");
        assert!(out.contains("le=\"10\"} 2"), "{out}");
        assert!(out.contains("le=\"+Inf\"} 3"), "{out}");
        assert!(
            out.contains("_count{method=\"GET\",route=\"/v1/x\"} 3"),
            "{out}"
        );
    }
}

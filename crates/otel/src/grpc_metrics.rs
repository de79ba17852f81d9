//! gRPC server latency by method, for
//! `tonic::transport::Server::builder().layer(..)`:
//! `tributary_grpc_server_handling_seconds{service,method,code}`.
//!
//! What is timed: from the moment the server hands the request to the
//! routes until the response headers are ready. For a unary call that is
//! the whole call (tonic runs the handler before it answers with headers);
//! for a server-streaming call (`Subscribe`) it is the set-up, never the
//! life of the stream, which has no useful upper bound.
//!
//! The `code` label is the `grpc-status` of the response headers, which is
//! where an error answered by a handler travels ("trailers only"). A
//! response whose headers carry no status is counted as `OK`: its status
//! comes in the trailers, after the message(s), and reading trailers would
//! mean timing the body, i.e. the stream. The rare unary call whose handler
//! succeeded but whose response then failed to encode is therefore counted
//! `OK`. A call the client abandons before the headers are ready (the
//! future is dropped) is counted `CANCELLED`.
//!
//! Label cardinality is bounded: the service and method are taken from the
//! request path only when it has the form `/package.Service/Method` with
//! name characters (`[A-Za-z0-9_.]`) and segments of at most
//! [`MAX_SEGMENT_LEN`] bytes, and only when the server did not answer
//! `UNIMPLEMENTED` (what it answers for a route it does not have, so made-up
//! paths cannot mint series). Anything else is `service="unknown",
//! method="unknown"`. The code is one of the 17 gRPC code names or
//! `UNKNOWN`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Longest service or method name used as a label value.
pub const MAX_SEGMENT_LEN: usize = 64;

/// The label value of a service or method that is not used verbatim.
const UNKNOWN_NAME: &str = "unknown";

/// `grpc-status` 12: what tonic's router answers for a path it has no route for.
const UNIMPLEMENTED: i64 = 12;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: String,
    method: String,
    code: &'static str,
}

type Histograms = Family<CallLabels, Histogram, fn() -> Histogram>;

fn handling_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The gRPC server metrics of one process. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct GrpcMetrics {
    handling_seconds: Histograms,
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self {
            handling_seconds: Family::new_with_constructor(handling_histogram),
        }
    }
}

impl GrpcMetrics {
    /// Creates the metrics and registers them under `tributary_grpc_server_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry
            .sub_registry_with_prefix("tributary_grpc_server")
            .register(
                "handling_seconds",
                "gRPC call latency until the response headers (the whole call if unary, \
                 the set-up if streaming), by service, method and status code",
                m.handling_seconds.clone(),
            );
        m
    }

    /// The layer that records into these metrics:
    /// `Server::builder().layer(metrics.layer())`.
    pub fn layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics: self.clone(),
        }
    }
}

/// See [`GrpcMetrics::layer`].
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: GrpcMetrics,
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: GrpcMetrics,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = GrpcMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timer = CallTimer {
            histograms: self.metrics.handling_seconds.clone(),
            route: route(req.uri().path()),
            start: Instant::now(),
            done: false,
        };
        GrpcMetricsFuture {
            inner: self.inner.call(req),
            timer,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcMetricsService`].
    #[derive(Debug)]
    pub struct GrpcMetricsFuture<F> {
        #[pin]
        inner: F,
        timer: CallTimer,
    }
}

impl<F, R, E> Future for GrpcMetricsFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        let status = match &out {
            Ok(resp) => resp
                .headers()
                .get("grpc-status")
                .map_or(Some(0), |v| v.to_str().ok().and_then(|v| v.parse().ok())),
            // The transport failed the call: no status reached the client.
            Err(_) => None,
        };
        this.timer.finish(status);
        Poll::Ready(out)
    }
}

/// Times one call; records it once, when finished or else when dropped
/// (the client went away first: `CANCELLED`).
#[derive(Debug)]
struct CallTimer {
    histograms: Histograms,
    /// `(service, method)` if the path is a well-formed method name.
    route: Option<(String, String)>,
    start: Instant,
    done: bool,
}

impl CallTimer {
    /// Records the call with its `grpc-status` (`None`: unreadable).
    fn finish(&mut self, status: Option<i64>) {
        if self.done {
            return;
        }
        self.done = true;
        let seconds = self.start.elapsed().as_secs_f64();
        let (service, method) = match self.route.take() {
            Some(route) if status != Some(UNIMPLEMENTED) => route,
            _ => (UNKNOWN_NAME.to_owned(), UNKNOWN_NAME.to_owned()),
        };
        self.histograms
            .get_or_create(&CallLabels {
                service,
                method,
                code: code_name(status),
            })
            .observe(seconds);
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        self.finish(Some(1));
    }
}

/// `(service, method)` of a `/package.Service/Method` path, or `None`.
fn route(path: &str) -> Option<(String, String)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid = service.len() <= MAX_SEGMENT_LEN
        && method.len() <= MAX_SEGMENT_LEN
        && !method.is_empty()
        && method.chars().all(name_char)
        && service
            .split('.')
            .all(|part| !part.is_empty() && part.chars().all(name_char))
        && service.contains('.');
    valid.then(|| (service.to_owned(), method.to_owned()))
}

/// The name of a gRPC status code, as in the gRPC specification.
fn code_name(status: Option<i64>) -> &'static str {
    match status {
        Some(0) => "OK",
        Some(1) => "CANCELLED",
        Some(3) => "INVALID_ARGUMENT",
        Some(4) => "DEADLINE_EXCEEDED",
        Some(5) => "NOT_FOUND",
        Some(6) => "ALREADY_EXISTS",
        Some(7) => "PERMISSION_DENIED",
        Some(8) => "RESOURCE_EXHAUSTED",
        Some(9) => "FAILED_PRECONDITION",
        Some(10) => "ABORTED",
        Some(11) => "OUT_OF_RANGE",
        Some(12) => "UNIMPLEMENTED",
        Some(13) => "INTERNAL",
        Some(14) => "UNAVAILABLE",
        Some(15) => "DATA_LOSS",
        Some(16) => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;

    use tower_layer::Layer as _;
    use tower_service::Service as _;

    use super::*;

    /// Answers with `grpc-status: <status>` in the headers, or no status;
    /// never answers if `pending`.
    #[derive(Clone)]
    struct Answer {
        status: Option<&'static str>,
        pending: bool,
    }

    impl tower_service::Service<http::Request<()>> for Answer {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<http::Response<()>, Infallible>>>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            if self.pending {
                return Box::pin(std::future::pending());
            }
            let mut resp = http::Response::new(());
            if let Some(status) = self.status {
                resp.headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static(status));
            }
            Box::pin(std::future::ready(Ok(resp)))
        }
    }

    fn answer(status: Option<&'static str>) -> Answer {
        Answer {
            status,
            pending: false,
        }
    }

    /// Calls `path` on `svc` behind the layer; polls once, then drops the
    /// future (a pending one is a call the client abandoned).
    fn call(metrics: &GrpcMetrics, svc: Answer, path: &str) {
        let mut svc = metrics.layer().layer(svc);
        let req = http::Request::builder()
            .uri(format!("http://h{path}"))
            .body(())
            .unwrap();
        let mut fut = Box::pin(svc.call(req));
        let waker = std::task::Waker::noop();
        let _ = fut.as_mut().poll(&mut Context::from_waker(waker));
    }

    /// `_count` samples of the histogram, keyed by their label set.
    fn counts(registry: &Registry) -> BTreeMap<String, u64> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("tributary_grpc_server_handling_seconds_count"))
            .map(|l| {
                let (labels, n) = l.rsplit_once(' ').unwrap();
                (labels.to_owned(), n.parse().unwrap())
            })
            .collect()
    }

    fn labels(service: &str, method: &str, code: &str) -> String {
        format!("{{service=\"{service}\",method=\"{method}\",code=\"{code}\"}}")
    }

    #[test]
    fn calls_are_counted_by_service_method_and_header_status() {
        let mut registry = Registry::default();
        let m = GrpcMetrics::register(&mut registry);
        for _ in 0..3 {
            call(&m, answer(None), "/tributary.v1.QueryService/QueryRange");
        }
        call(&m, answer(Some("0")), "/tributary.v1.QueryService/Latest");
        call(&m, answer(Some("16")), "/tributary.v1.QueryService/Latest");
        call(
            &m,
            answer(Some("5")),
            "/tributary.v1.RegistryService/GetDevice",
        );
        call(&m, answer(Some("garbage")), "/grpc.health.v1.Health/Check");
        call(&m, answer(Some("99")), "/grpc.health.v1.Health/Check");
        let q = "tributary.v1.QueryService";
        assert_eq!(
            counts(&registry),
            BTreeMap::from([
                (labels(q, "QueryRange", "OK"), 3),
                (labels(q, "Latest", "OK"), 1),
                (labels(q, "Latest", "UNAUTHENTICATED"), 1),
                (
                    labels("tributary.v1.RegistryService", "GetDevice", "NOT_FOUND"),
                    1
                ),
                (labels("grpc.health.v1.Health", "Check", "UNKNOWN"), 2),
            ])
        );
    }

    #[test]
    fn odd_paths_and_unknown_routes_share_one_label_set() {
        let mut registry = Registry::default();
        let m = GrpcMetrics::register(&mut registry);
        let longest = "M".repeat(MAX_SEGMENT_LEN);
        let too_long = "M".repeat(MAX_SEGMENT_LEN + 1);
        call(&m, answer(None), &format!("/a.b/{longest}"));
        for path in [
            format!("/a.b/{too_long}"),
            format!("/a.{too_long}/C"),
            "/".to_owned(),
            "/a.b".to_owned(),
            "/a.b/C/D".to_owned(),
            "/nodot/C".to_owned(),
            "/a..b/C".to_owned(),
            "/a.b/".to_owned(),
            "/a.b/C%22".to_owned(),
        ] {
            call(&m, answer(Some("13")), &path);
        }
        // A well-formed path the server has no route for.
        call(&m, answer(Some("12")), "/made.Up/Anything");
        assert_eq!(
            counts(&registry),
            BTreeMap::from([
                (labels("a.b", &longest, "OK"), 1),
                (labels("unknown", "unknown", "INTERNAL"), 9),
                (labels("unknown", "unknown", "UNIMPLEMENTED"), 1),
            ])
        );
    }

    #[test]
    fn a_call_abandoned_before_its_headers_is_cancelled() {
        let mut registry = Registry::default();
        let m = GrpcMetrics::register(&mut registry);
        let pending = Answer {
            status: None,
            pending: true,
        };
        call(&m, pending, "/tributary.v1.QueryService/Aggregate");
        assert_eq!(
            counts(&registry),
            BTreeMap::from([(
                labels("tributary.v1.QueryService", "Aggregate", "CANCELLED"),
                1
            )])
        );
    }
}

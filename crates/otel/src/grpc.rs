//! One span per gRPC call, for `tonic::transport::Server::builder().layer(..)`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::instrument::{Instrument, Instrumented};
use tracing::{Span, field};

/// Longest request path used as a span name; longer ones (no real method
/// is that long) are named `grpc.request`.
const MAX_PATH_LEN: usize = 256;

/// The layer: `Server::builder().layer(tributary_otel::grpc_trace_layer())`.
///
/// Each call gets a span named after its method
/// (`tributary.v1.QueryService/Scan`) with the `rpc.*` attributes, child of
/// the caller's `traceparent` metadata when it sent one, and the
/// `grpc-status` of error responses. The span ends when the response
/// headers are ready: for a unary call that is the whole call, for a
/// streaming one its setup. Free when trace export is off.
pub fn grpc_trace_layer() -> GrpcTraceLayer {
    GrpcTraceLayer
}

/// See [`grpc_trace_layer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl<S> tower_layer::Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTrace { inner }
    }
}

/// The service [`GrpcTraceLayer`] wraps around the server's routes.
#[derive(Debug, Clone)]
pub struct GrpcTrace<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<http::Request<B>> for GrpcTrace<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = GrpcTraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = request_span(&req);
        GrpcTraceFuture {
            inner: self.inner.call(req).instrument(span),
        }
    }
}

fn request_span<B>(req: &http::Request<B>) -> Span {
    let span = tracing::debug_span!(
        target: crate::TARGET,
        "grpc.request",
        otel.name = field::Empty,
        otel.kind = "server",
        otel.status_code = field::Empty,
        rpc.system = "grpc",
        rpc.service = field::Empty,
        rpc.method = field::Empty,
        rpc.grpc.status_code = field::Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let path = req.uri().path().trim_start_matches('/');
    if path.len() <= MAX_PATH_LEN
        && let Some((service, method)) = path.split_once('/')
    {
        span.record("otel.name", path);
        span.record("rpc.service", service);
        span.record("rpc.method", method);
    }
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let traceparent = header("traceparent");
    if !traceparent.is_empty() {
        crate::set_remote_parent(&span, traceparent, header("tracestate"));
    }
    span
}

pin_project_lite::pin_project! {
    /// The response future of [`GrpcTrace`].
    #[derive(Debug)]
    pub struct GrpcTraceFuture<F> {
        #[pin]
        inner: Instrumented<F>,
    }
}

impl<F, R, E> Future for GrpcTraceFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let out = std::task::ready!(this.inner.as_mut().poll(cx));
        let span = this.inner.span();
        if !span.is_disabled() {
            match &out {
                // An error response carries its status in the headers
                // ("trailers only"); a success has it in the trailers.
                Ok(resp) => {
                    if let Some(code) = resp
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                    {
                        span.record("rpc.grpc.status_code", code);
                        if code != 0 {
                            span.record("otel.status_code", "ERROR");
                        }
                    }
                }
                Err(_) => {
                    span.record("otel.status_code", "ERROR");
                }
            }
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry::{Key, Value};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tower_layer::Layer as _;
    use tower_service::Service as _;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone)]
    struct Answer(Option<&'static str>);

    impl tower_service::Service<http::Request<()>> for Answer {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<http::Response<()>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            let mut resp = http::Response::new(());
            if let Some(status) = self.0 {
                resp.headers_mut()
                    .insert("grpc-status", http::HeaderValue::from_static(status));
            }
            std::future::ready(Ok(resp))
        }
    }

    fn call(svc: Answer, req: http::Request<()>) {
        let mut svc = grpc_trace_layer().layer(svc);
        let fut = svc.call(req);
        let waker = std::task::Waker::noop();
        let mut fut = std::pin::pin!(fut);
        assert!(
            fut.as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_ready()
        );
    }

    #[test]
    fn one_span_per_call_named_after_the_method_under_the_callers_trace() {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let req = http::Request::builder()
                .uri("http://h/tributary.v1.QueryService/Scan")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(())
                .unwrap();
            call(Answer(None), req);
            let req = http::Request::builder()
                .uri("http://h/tributary.v1.RegistryService/GetDevice")
                .body(())
                .unwrap();
            call(Answer(Some("5")), req);
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let names: Vec<_> = spans.iter().map(|s| s.name.to_string()).collect();
        assert_eq!(
            names,
            [
                "tributary.v1.QueryService/Scan",
                "tributary.v1.RegistryService/GetDevice"
            ]
        );
        let attr = |i: usize, k: &str| {
            spans[i]
                .attributes
                .iter()
                .find(|kv| kv.key == Key::from(k.to_owned()))
                .map(|kv| kv.value.clone())
        };
        assert_eq!(
            spans[0].span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "child of the caller's traceparent"
        );
        assert_eq!(spans[0].parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(attr(0, "rpc.method"), Some(Value::from("Scan")));
        assert_eq!(attr(0, "rpc.grpc.status_code"), None);
        assert_eq!(
            attr(1, "rpc.service"),
            Some(Value::from("tributary.v1.RegistryService"))
        );
        assert_eq!(attr(1, "rpc.grpc.status_code"), Some(Value::I64(5)));
        assert_eq!(spans[1].status, opentelemetry::trace::Status::error(""));
    }
}

//! OpenTelemetry traces for Tributary.
//!
//! * [`init`] (feature `export`, on by default) installs the process's
//!   `tracing` subscriber: the log lines on stderr (text or JSON, filtered by
//!   `TRIBUTARY_LOG`) and, only when an OTLP endpoint is configured, a
//!   [`tracing_opentelemetry`] layer that exports the platform's trace spans
//!   over OTLP/gRPC with a parent-based ratio sampler. Without an endpoint
//!   there is no exporter and the trace spans are disabled at their call
//!   sites: tracing off costs nothing.
//! * The propagation helpers ([`parent_from_traceparent`],
//!   [`set_remote_parent`], [`current_traceparent`], [`span_traceparent`])
//!   carry W3C trace context (`traceparent`/`tracestate`) across process
//!   boundaries: device request headers, Kafka record headers, gRPC metadata.
//!   They need only the OpenTelemetry API, so libraries depend on this crate
//!   with `default-features = false`.
//! * [`grpc_trace_layer`] (feature `export`) is a tower layer for
//!   `tonic::transport::Server::builder().layer(..)`: one span per call.
//! * [`GrpcMetrics`] (feature `export`) is the Prometheus side of the same
//!   calls: its [`GrpcMetrics::layer`] records
//!   `tributary_grpc_server_handling_seconds{service,method,code}`.
//!
//! The platform's trace spans use the target [`TARGET`] at DEBUG level, so
//! the log filter never turns them on by accident (only `TRIBUTARY_LOG=debug`
//! shows them in logs) and the OpenTelemetry layer sees nothing else but
//! WARN and ERROR events (attached to the span they happen in).
//!
//! This crate must not make tracing mandatory: nothing here may fail a
//! request, and invalid trace context from a device is ignored, never an
//! error.

mod propagation;

#[cfg(feature = "export")]
mod export;
#[cfg(feature = "export")]
mod grpc;
#[cfg(feature = "export")]
mod grpc_metrics;
#[cfg(feature = "testing")]
pub mod testing;

pub use propagation::{
    current_traceparent, is_sampled_traceparent, parent_from_traceparent, set_remote_parent,
    span_traceparent,
};

#[cfg(feature = "export")]
pub use export::{OtelConfig, OtelError, OtelGuard, env_filter, init};
#[cfg(feature = "export")]
pub use grpc::{GrpcTrace, GrpcTraceFuture, GrpcTraceLayer, grpc_trace_layer};
#[cfg(feature = "export")]
pub use grpc_metrics::{
    GrpcMetrics, GrpcMetricsFuture, GrpcMetricsLayer, GrpcMetricsService, MAX_SEGMENT_LEN,
};

/// The `tracing` target of every span meant for export (`ingest.append`,
/// `processor.store_write`, gRPC calls). Create them at DEBUG level:
///
/// ```
/// let span = tracing::debug_span!(target: tributary_otel::TARGET, "ingest.append");
/// // Disabled (free) unless an exporter or `TRIBUTARY_LOG=debug` wants it.
/// assert!(span.is_disabled());
/// ```
pub const TARGET: &str = "tributary::trace";

//! The process's subscriber: log lines, and OTLP export when configured.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Most spans a process buffers for export (the queue's upper bound).
const MAX_QUEUE_LIMIT: usize = 1_000_000;
/// Longest export timeout accepted.
const MAX_EXPORT_TIMEOUT: Duration = Duration::from_secs(300);

/// Trace export settings of one service.
#[derive(Debug, Clone)]
pub struct OtelConfig {
    /// OTLP/gRPC collector endpoint, `http://host:4317`. `None` turns
    /// export off: no exporter, no sampler, and the trace spans stay
    /// disabled at their call sites.
    pub endpoint: Option<String>,
    /// `service.name` of every span (`tributary-ingest`, ...).
    pub service_name: String,
    /// Share of new traces sampled, 0 to 1. A span whose parent came with
    /// a sampling decision (a device's `traceparent`, a record header)
    /// follows that decision instead.
    pub sample_ratio: f64,
    /// Longest one export call may take before the batch is dropped.
    pub export_timeout: Duration,
    /// Most finished spans buffered for export; past it new spans are
    /// dropped (never blocking the request that made them).
    pub max_queue: usize,
    /// How often buffered spans are sent.
    pub export_interval: Duration,
}

impl Default for OtelConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "tributary".into(),
            sample_ratio: 0.01,
            export_timeout: Duration::from_secs(10),
            max_queue: 2048,
            export_interval: Duration::from_secs(5),
        }
    }
}

/// Why [`init`] refused to start.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("invalid trace settings: {0}")]
    Config(String),
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

impl OtelConfig {
    fn validate(&self) -> Result<(), OtelError> {
        let bad = |m: String| Err(OtelError::Config(m));
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return bad(format!(
                "sample ratio {} is not between 0 and 1",
                self.sample_ratio
            ));
        }
        if self.max_queue == 0 || self.max_queue > MAX_QUEUE_LIMIT {
            return bad(format!(
                "export queue of {} spans: expected 1 to {MAX_QUEUE_LIMIT}",
                self.max_queue
            ));
        }
        for (name, d) in [
            ("export timeout", self.export_timeout),
            ("export interval", self.export_interval),
        ] {
            if d.is_zero() || d > MAX_EXPORT_TIMEOUT {
                return bad(format!(
                    "{name} {d:?}: expected more than 0 and at most 5 min"
                ));
            }
        }
        if self.service_name.is_empty() || self.service_name.len() > 255 {
            return bad("service name: expected 1 to 255 bytes".into());
        }
        if let Some(endpoint) = &self.endpoint {
            let uri: http::Uri = endpoint.parse().map_err(|e| {
                OtelError::Config(format!(
                    "OTLP endpoint {endpoint:?}: {e}; expected http://host:port"
                ))
            })?;
            match uri.scheme_str() {
                Some("http") if uri.host().is_some() => {}
                Some("https") => {
                    return bad(format!(
                        "OTLP endpoint {endpoint:?}: TLS is not supported; send to a collector agent over http://"
                    ));
                }
                _ => {
                    return bad(format!(
                        "OTLP endpoint {endpoint:?}: expected http://host:port"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The log filter from the environment variable `var` (`TRIBUTARY_LOG`), or
/// `default` when it is unset or invalid.
pub fn env_filter(var: &str, default: &str) -> EnvFilter {
    EnvFilter::try_from_env(var).unwrap_or_else(|_| EnvFilter::new(default))
}

/// Flushes and shuts the exporter down when dropped, so spans buffered at
/// shutdown (SIGTERM) are sent. Drop it while the Tokio runtime that
/// [`init`] ran in is still alive: the exporter's connection lives there.
#[derive(Debug)]
#[must_use = "dropping the guard stops trace export"]
pub struct OtelGuard {
    provider: Option<SdkTracerProvider>,
    timeout: Duration,
}

impl OtelGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Waits for the last export (bounded by the export timeout).
            if let Err(e) = provider.shutdown_with_timeout(self.timeout) {
                tracing::warn!(error = %e, "trace export did not shut down cleanly; buffered spans may be lost");
            }
        }
    }
}

/// Installs the process's `tracing` subscriber: log lines on stderr (JSON
/// or text, filtered by `filter`) and, when `config.endpoint` is set, the
/// OpenTelemetry layer exporting spans of target [`crate::TARGET`] in
/// batches over OTLP/gRPC, sampled `ParentBased(TraceIdRatioBased(ratio))`.
///
/// With an endpoint, call it inside a Tokio runtime (`Runtime::enter`):
/// the exporter's gRPC channel runs there. Keep the guard until shutdown.
pub fn init(
    config: OtelConfig,
    log_format_json: bool,
    filter: EnvFilter,
) -> Result<OtelGuard, OtelError> {
    config.validate()?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if log_format_json {
        fmt.json().flatten_event(true).with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let (otel, provider) = match &config.endpoint {
        None => (None, None),
        Some(endpoint) => {
            let provider = provider(&config, endpoint)?;
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("tributary"))
                .with_location(false)
                .with_threads(false)
                .with_level(false)
                .with_target(false)
                .with_filter(filter_fn(|m| {
                    m.target() == crate::TARGET
                        || (m.is_event() && *m.level() <= tracing::Level::WARN)
                }));
            (Some(layer), Some(provider))
        }
    };
    let layers: Vec<Box<dyn Layer<Registry> + Send + Sync>> = match otel {
        Some(otel) => vec![fmt, otel.boxed()],
        None => vec![fmt],
    };
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|_| OtelError::AlreadyInstalled)?;
    if let Some(endpoint) = &config.endpoint {
        tracing::info!(
            endpoint,
            service = config.service_name,
            sample_ratio = config.sample_ratio,
            "exporting traces over OTLP"
        );
    }
    Ok(OtelGuard {
        provider,
        timeout: config.export_timeout + Duration::from_secs(1),
    })
}

fn provider(config: &OtelConfig, endpoint: &str) -> Result<SdkTracerProvider, OtelError> {
    if tokio_runtime_missing() {
        return Err(OtelError::Exporter(
            "the OTLP exporter must be started inside a Tokio runtime".into(),
        ));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(config.export_timeout)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(config.max_queue)
        .with_max_export_batch_size(config.max_queue.min(512))
        .with_scheduled_delay(config.export_interval)
        .build();
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .build(),
        )
        .build())
}

/// The exporter's gRPC channel spawns onto the current Tokio runtime, and
/// panics without one.
fn tokio_runtime_missing() -> bool {
    tokio::runtime::Handle::try_current().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut OtelConfig)) -> OtelConfig {
        let mut c = OtelConfig {
            endpoint: Some("http://127.0.0.1:4317".into()),
            ..OtelConfig::default()
        };
        f(&mut c);
        c
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        for (config, expect) in [
            (with(|c| c.sample_ratio = 1.5), "between 0 and 1"),
            (with(|c| c.sample_ratio = f64::NAN), "between 0 and 1"),
            (with(|c| c.max_queue = 0), "export queue"),
            (
                with(|c| c.export_timeout = Duration::ZERO),
                "export timeout",
            ),
            (
                with(|c| c.endpoint = Some("collector:4317".into())),
                "http://host:port",
            ),
            (with(|c| c.endpoint = Some("https://c:4317".into())), "TLS"),
            (
                with(|c| c.endpoint = Some("http://".into())),
                "OTLP endpoint",
            ),
            (with(|c| c.service_name = String::new()), "service name"),
        ] {
            let e = config.validate().unwrap_err().to_string();
            assert!(e.contains(expect), "{e:?} should mention {expect:?}");
        }
        assert!(with(|_| {}).validate().is_ok());
        assert!(OtelConfig::default().validate().is_ok(), "off by default");
    }
}

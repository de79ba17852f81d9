//! The ingest path reports each refusal once, through its event: one log
//! line at the reason's level and one count under the reason, never a
//! second line of its own.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use prometheus_client::registry::Registry;
use tributary_core::directory::{Authenticator, DirectoryError, Principal, TenantPolicy};
use tributary_core::{Point, Value};
use tributary_ingest::{IngestConfig, IngestError, IngestMetrics, Ingestor, RequestContext};
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};

/// Knows no token: the test below needs no directory.
#[derive(Debug)]
struct NoAuth;

#[async_trait]
impl Authenticator for NoAuth {
    async fn authenticate(&self, _token: &str) -> Result<Principal, DirectoryError> {
        Err(DirectoryError::Unauthenticated)
    }
    async fn tenant_policy(&self, _tenant: &str) -> Result<TenantPolicy, DirectoryError> {
        Err(DirectoryError::Unauthenticated)
    }
    async fn ensure_device(
        &self,
        _tenant: &str,
        _device: &str,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), DirectoryError> {
        Err(DirectoryError::Unauthenticated)
    }
}

/// Log lines written by the subscriber under test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn device() -> Principal {
    Principal::Device {
        tenant: "acme".into(),
        device: "d1".into(),
    }
}

fn point(ts_ns: i64) -> Point {
    Point {
        metric: "temp".into(),
        ts_ns,
        value: Value::F64(1.0),
    }
}

// One thread, so that the subscriber set here sees everything.
#[tokio::test(flavor = "current_thread")]
async fn a_failed_append_and_a_bad_timestamp_are_one_line_and_one_count_each() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish(),
    );
    let dir = tempfile::tempdir().unwrap();
    // A log that takes no record of this size: every append fails.
    let log = EmbeddedLog::open(
        dir.path(),
        EmbeddedLogConfig {
            max_record_bytes: 64,
            ..EmbeddedLogConfig::new("telemetry", 1)
        },
    )
    .await
    .unwrap();
    let mut registry = Registry::default();
    let ingestor = Ingestor::new(
        log,
        Arc::new(NoAuth),
        IngestConfig::default(),
        IngestMetrics::register(&mut registry),
    );
    let now = tributary_core::time::now_ns();
    let ctx = RequestContext::default();

    let failed = ingestor
        .ingest_device(&device(), vec![point(now)], &ctx)
        .await;
    assert!(
        matches!(failed, Err(IngestError::TooLarge(_))),
        "{failed:?}"
    );
    let future = now + 365 * 24 * 3600 * 1_000_000_000;
    let refused = ingestor
        .ingest_device(&device(), vec![point(future)], &ctx)
        .await;
    assert!(
        matches!(refused, Err(IngestError::Invalid(_))),
        "{refused:?}"
    );

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("tributary_ingest"))
        .collect();
    assert_eq!(ours.len(), 2, "one line per refusal: {text}");
    for (line, parts) in ours.iter().zip([
        ["WARN", "reason=\"log\"", "tenant acme"],
        ["DEBUG", "reason=\"timestamp\"", "d1/temp"],
    ]) {
        assert!(line.contains("event=\"ingest.rejected\""), "{text}");
        for part in parts {
            assert!(line.contains(part), "{part} in {text}");
        }
    }

    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &registry).unwrap();
    for line in [
        "tributary_ingest_requests_rejected_total{reason=\"log\"} 1\n",
        "tributary_ingest_requests_rejected_total{reason=\"timestamp\"} 1\n",
        "tributary_ingest_points_received_total{tenant=\"acme\"} 1\n",
        "tributary_ingest_log_append_seconds_count 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(
        !metrics.contains("tributary_ingest_points_acked_total{"),
        "nothing acknowledged: {metrics}"
    );
}

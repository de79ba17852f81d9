//! [`RecordedPresence`]: a device's presence, as the frontends report it
//! to the registry, also appended to the telemetry log as the point
//! [`PRESENCE_METRIC`] (`true` when its first connection opens, `false`
//! when its last one closes), keyed like its telemetry, with content type
//! [`PRESENCE_CONTENT_TYPE`]. The processor judges it against offline
//! rules, in order with the device's points, and does not store it (it
//! would be a series outside the tenant's quota).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tributary_core::directory::{DirectoryError, PresenceSink};
use tributary_core::envelope::{self, Envelope, Kind};
use tributary_core::model::PRESENCE_METRIC;
use tributary_core::{Point, Value};
use tributary_log::{Log, Record};

pub use tributary_core::model::PRESENCE_CONTENT_TYPE;

/// Reports presence to `inner` (the registry), then appends it to the
/// telemetry log. Best effort like the report itself: a failed append is
/// logged and the connection goes on.
#[derive(Debug, Clone)]
pub struct RecordedPresence {
    inner: Arc<dyn PresenceSink>,
    log: Arc<dyn Log>,
}

impl RecordedPresence {
    pub fn new(inner: Arc<dyn PresenceSink>, log: Arc<dyn Log>) -> Self {
        Self { inner, log }
    }
}

#[async_trait]
impl PresenceSink for RecordedPresence {
    async fn report(
        &self,
        tenant: &str,
        device: &str,
        online: bool,
        at_ns: i64,
        frontend: &str,
    ) -> Result<(), DirectoryError> {
        self.inner
            .report(tenant, device, online, at_ns, frontend)
            .await?;
        let env = Envelope {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
            received_at_ns: at_ns,
            traceparent: String::new(),
            tracestate: String::new(),
            content_type: PRESENCE_CONTENT_TYPE.to_owned(),
            kind: Kind::Telemetry,
            points: vec![Point {
                metric: PRESENCE_METRIC.to_owned(),
                ts_ns: at_ns,
                value: Value::Bool(online),
            }],
        };
        let record = Record {
            key: Bytes::from(envelope::record_key(tenant, device)),
            value: Bytes::from(env.encode()),
            headers: Vec::new(),
            timestamp_ms: tributary_core::time::now_ns() / 1_000_000,
        };
        if let Err(e) = self.log.append(record).await {
            tracing::warn!(tenant, device, online, error = %e, "presence not recorded in the log");
        }
        Ok(())
    }
}

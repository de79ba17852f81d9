//! The alert history seam: each alert's newest state, kept per tenant by
//! when it started, so that listing a tenant's alerts reads that tenant's
//! history only, newest first, and old alerts expire.
//!
//! A history consumer folds the alerts log (`tributary.alerts.v1`) into it;
//! the alerts API reads it. Values are opaque here (the caller's encoding
//! of the alert, `tributary.v1.Alert`).

use std::fmt::Debug;

use async_trait::async_trait;

use crate::StoreError;

/// One alert as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAlert {
    pub tenant: String,
    /// Unique within the tenant; 1 to [`MAX_ALERT_ID`] bytes.
    pub alert_id: String,
    /// When the alert started; it never changes (the id is derived from it).
    pub started_at_ns: i64,
    /// When it last changed: what expiry counts from.
    pub updated_at_ns: i64,
    /// The alert, encoded by the caller; at most [`MAX_ALERT_VALUE`] bytes.
    pub value: Vec<u8>,
}

/// Longest alert id, and value, in bytes.
pub const MAX_ALERT_ID: usize = 64;
pub const MAX_ALERT_VALUE: usize = 16 * 1024;

/// Where the alert history is kept. See the [module docs](self).
#[async_trait]
pub trait AlertStore: Send + Sync + Debug {
    /// Writes alerts, each replacing the one stored with its tenant and id.
    /// Durable when it returns. An id or value over the limits fails the
    /// call with [`StoreError::Invalid`] before anything is written.
    async fn put_alerts(&self, alerts: Vec<StoredAlert>) -> Result<(), StoreError>;

    /// One alert.
    async fn get_alert(
        &self,
        tenant: &str,
        alert_id: &str,
    ) -> Result<Option<StoredAlert>, StoreError>;

    /// Up to `limit` alerts of `tenant` that started in `[from_ns, to_ns)`,
    /// newest first (then by id, descending). `before` continues a listing
    /// after the (started, id) of the last alert of the previous page.
    async fn list_alerts(
        &self,
        tenant: &str,
        range: (i64, i64),
        before: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<StoredAlert>, StoreError>;

    /// Deletes the alerts that last changed before `before_ns`; returns
    /// how many. A store that expires alerts by itself (a TTL) returns 0.
    async fn expire_alerts(&self, before_ns: i64) -> Result<u64, StoreError>;
}

/// Checks the sizes [`AlertStore::put_alerts`] bounds.
pub fn check_alerts(alerts: &[StoredAlert]) -> Result<(), StoreError> {
    for a in alerts {
        if a.alert_id.is_empty() || a.alert_id.len() > MAX_ALERT_ID {
            return Err(StoreError::Invalid(format!(
                "alert id of {} bytes: 1 to {MAX_ALERT_ID}",
                a.alert_id.len()
            )));
        }
        if a.value.len() > MAX_ALERT_VALUE {
            return Err(StoreError::Invalid(format!(
                "alert of {} bytes: at most {MAX_ALERT_VALUE}",
                a.value.len()
            )));
        }
    }
    Ok(())
}

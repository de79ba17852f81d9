//! The series gate: new time series are admitted before their points are
//! acknowledged, so that the store never refuses a point a device was told
//! is durable.
//!
//! A store with a series limit (the embedded store's `max_series`, a
//! tenant's `series` quota) implements [`SeriesGate`]; the ingest path asks
//! it before the log append. A series it admits exists from then on: the
//! store's later write of its points cannot fail for the limit.

use async_trait::async_trait;

/// Why new series were not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesRefused {
    /// The tenant holds its `series` quota.
    #[error("the tenant holds its quota of {limit} series")]
    TenantQuota {
        /// The quota.
        limit: u64,
    },
    /// The store holds its own limit of series, for every tenant.
    #[error("the store holds its limit of {limit} series")]
    StoreFull {
        /// The store's limit.
        limit: u64,
    },
    /// The gate's backend could not be asked (a distributed store that is
    /// down or overloaded): nothing is admitted, the client retries.
    #[error("new series cannot be admitted now: {0}")]
    Unavailable(String),
}

/// Admits new series ahead of their points (see the module docs).
#[async_trait]
pub trait SeriesGate: Send + Sync + std::fmt::Debug + 'static {
    /// Admits the series `(tenant, device, metric)` of each of `metrics`:
    /// known ones cost nothing, new ones are created, unless that would
    /// take the tenant past `tenant_quota` series or the store past its
    /// own limit, in which case none of them is created.
    async fn admit(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[&str],
        tenant_quota: u64,
    ) -> Result<(), SeriesRefused>;
}

//! Per-tenant quotas on the ingest path: the message and byte rates every
//! frontend charges before it parses a message, and the metrics that show
//! each tenant's use of each quota.
//!
//! Rates are token buckets per tenant and per replica (each frontend
//! replica enforces the tenant's rate on its own: N replicas let a tenant
//! through at up to N times the rate, which the operator sizes for). The
//! quota values come from the tenant's policy, cached by the directory and
//! read again at most once a second, so a quota change takes effect within
//! a second of the registry's event.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tributary_core::quota::{Quota, QuotaExceeded, Quotas};
use tributary_core::rate::TokenBucket;

/// How long a tenant's quota values are used before they are read again.
const REFRESH: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabels {
    tenant: String,
    quota: &'static str,
}

/// `tributary_tenant_quota_{limit,used}` and
/// `tributary_tenant_quota_exceeded_total`, by tenant and quota: how close
/// each tenant is to each of its quotas, and how often it hit one. Shared by
/// every component that enforces a quota in the process. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct QuotaMetrics {
    limit: Family<QuotaLabels, Gauge>,
    used: Family<QuotaLabels, Gauge>,
    exceeded: Family<QuotaLabels, Counter>,
}

impl QuotaMetrics {
    /// Creates the metrics and registers them under `tributary_tenant_quota_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("tributary_tenant_quota");
        r.register(
            "limit",
            "The quota in force, by tenant and quota (rates per second)",
            m.limit.clone(),
        );
        r.register(
            "used",
            "Use of the quota, by tenant and quota: a count now, or for rates the amount admitted in the last full second",
            m.used.clone(),
        );
        r.register(
            "exceeded",
            "Requests refused for a quota, by tenant and quota",
            m.exceeded.clone(),
        );
        m
    }

    fn labels(tenant: &str, quota: Quota) -> QuotaLabels {
        QuotaLabels {
            tenant: tenant.to_owned(),
            quota: quota.name(),
        }
    }

    /// Records the quota in force and its use now.
    pub fn observe(&self, tenant: &str, quota: Quota, limit: u64, used: u64) {
        let labels = Self::labels(tenant, quota);
        self.limit
            .get_or_create(&labels)
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
        self.used
            .get_or_create(&labels)
            .set(i64::try_from(used).unwrap_or(i64::MAX));
    }

    /// Event `quota.exceeded`: a request was refused for a quota. Counts it
    /// and logs it at DEBUG (one per refusal: the counter is the signal).
    pub fn exceeded(&self, e: &QuotaExceeded) {
        self.exceeded
            .get_or_create(&Self::labels(&e.tenant, e.quota))
            .inc();
        tracing::debug!(
            event = "quota.exceeded",
            tenant = %e.tenant,
            reason = e.quota.name(),
            limit = e.limit,
            "refused: over a tenant quota"
        );
    }
}

/// A tenant's rate buckets on this replica.
#[derive(Debug)]
struct TenantRates {
    quotas: Quotas,
    read_at: Instant,
    messages: TokenBucket,
    bytes: TokenBucket,
    /// What was admitted in the current second, and when it started.
    window_start: Instant,
    window_messages: u64,
    window_bytes: u64,
}

impl TenantRates {
    fn new(quotas: Quotas, now: Instant) -> Self {
        let rate = |q| quotas.get(q) as f64;
        Self {
            messages: TokenBucket::new(
                rate(Quota::MessagesPerSec),
                rate(Quota::MessagesBurst),
                now,
            ),
            bytes: TokenBucket::new(rate(Quota::BytesPerSec), rate(Quota::BytesBurst), now),
            quotas,
            read_at: now,
            window_start: now,
            window_messages: 0,
            window_bytes: 0,
        }
    }

    fn update(&mut self, quotas: Quotas, now: Instant) {
        if quotas != self.quotas {
            let rate = |q| quotas.get(q) as f64;
            self.messages
                .reconfigure(rate(Quota::MessagesPerSec), rate(Quota::MessagesBurst), now);
            self.bytes
                .reconfigure(rate(Quota::BytesPerSec), rate(Quota::BytesBurst), now);
            self.quotas = quotas;
        }
        self.read_at = now;
    }
}

/// The tenants' rate buckets of one replica.
#[derive(Debug, Default)]
pub(crate) struct RateQuotas {
    tenants: Mutex<HashMap<String, TenantRates>>,
}

/// Whether the rates of `tenant` need its quotas read (again).
pub(crate) enum Admission {
    /// The quotas are current; here is the verdict.
    Decided(Result<(), QuotaExceeded>),
    /// Read the tenant's quotas and call [`RateQuotas::admit`] with them.
    NeedQuotas,
}

impl RateQuotas {
    /// The value of `quota` for `tenant` as last read, if it was.
    pub(crate) fn cached(&self, tenant: &str, quota: Quota) -> Option<u64> {
        let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants.get(tenant).map(|rates| rates.quotas.get(quota))
    }

    /// Charges one message of `bytes` to `tenant`, if its quota values are
    /// current (or `fresh` gives them).
    ///
    /// `stale_ok` uses quota values however old (the registry cannot be
    /// asked right now).
    pub(crate) fn admit(
        &self,
        tenant: &str,
        bytes: u64,
        fresh: Option<Quotas>,
        stale_ok: bool,
        metrics: &QuotaMetrics,
        now: Instant,
    ) -> Admission {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        // Fresh quota values are shown at once, not at the next second.
        let refreshed = fresh.is_some();
        let rates = match fresh {
            Some(quotas) => {
                let rates = tenants
                    .entry(tenant.to_owned())
                    .or_insert_with(|| TenantRates::new(quotas.clone(), now));
                rates.update(quotas, now);
                rates
            }
            None => match tenants.get_mut(tenant) {
                Some(rates) if stale_ok || now.duration_since(rates.read_at) < REFRESH => rates,
                _ => return Admission::NeedQuotas,
            },
        };
        let second_over = now.duration_since(rates.window_start) >= Duration::from_secs(1);
        if second_over || refreshed {
            let q = &rates.quotas;
            metrics.observe(
                tenant,
                Quota::MessagesPerSec,
                q.get(Quota::MessagesPerSec),
                rates.window_messages,
            );
            metrics.observe(
                tenant,
                Quota::BytesPerSec,
                q.get(Quota::BytesPerSec),
                rates.window_bytes,
            );
            if second_over {
                rates.window_start = now;
                rates.window_messages = 0;
                rates.window_bytes = 0;
            }
        }
        let refuse = |quota: Quota, wait: Duration| {
            QuotaExceeded::rate(tenant, quota, rates.quotas.get(quota), wait)
        };
        if let Err(wait) = rates.messages.try_take_n(1.0, now) {
            return Admission::Decided(Err(refuse(Quota::MessagesPerSec, wait)));
        }
        if let Err(wait) = rates.bytes.try_take_n(bytes as f64, now) {
            return Admission::Decided(Err(refuse(Quota::BytesPerSec, wait)));
        }
        rates.window_messages += 1;
        rates.window_bytes += bytes;
        Admission::Decided(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(a: Admission) -> Result<(), QuotaExceeded> {
        match a {
            Admission::Decided(r) => r,
            Admission::NeedQuotas => panic!("quotas were current"),
        }
    }

    #[test]
    fn a_tenant_over_its_rate_is_refused_and_others_are_not() {
        let r = RateQuotas::default();
        let m = QuotaMetrics::default();
        let t0 = Instant::now();
        let tight = Quotas::from_named([("messages_per_sec", 10), ("messages_burst", 5)]).unwrap();
        assert!(matches!(
            r.admit("a", 10, None, false, &m, t0),
            Admission::NeedQuotas
        ));
        assert!(decided(r.admit("a", 10, Some(tight), false, &m, t0)).is_ok());
        for _ in 0..4 {
            assert!(decided(r.admit("a", 10, None, false, &m, t0)).is_ok());
        }
        let e = decided(r.admit("a", 10, None, false, &m, t0)).unwrap_err();
        assert_eq!(
            (e.quota, e.limit, e.retry_after_secs),
            (Quota::MessagesPerSec, 10, Some(1))
        );
        // Another tenant, with the defaults, is not affected.
        assert!(decided(r.admit("b", 10, Some(Quotas::default()), false, &m, t0)).is_ok());
        // A refill later, "a" gets through again; its quotas are read again
        // once a second.
        let later = t0 + Duration::from_millis(500);
        assert!(decided(r.admit("a", 10, None, false, &m, later)).is_ok());
        assert!(matches!(
            r.admit("a", 10, None, false, &m, t0 + Duration::from_secs(2)),
            Admission::NeedQuotas
        ));
    }

    #[test]
    fn bytes_are_a_quota_of_their_own() {
        let r = RateQuotas::default();
        let m = QuotaMetrics::default();
        let t0 = Instant::now();
        let q = Quotas::from_named([("bytes_per_sec", 1000), ("bytes_burst", 1500)]).unwrap();
        assert!(decided(r.admit("a", 1200, Some(q.clone()), false, &m, t0)).is_ok());
        let e = decided(r.admit("a", 1200, None, false, &m, t0)).unwrap_err();
        assert_eq!(e.quota, Quota::BytesPerSec);
        // A message larger than the burst can never pass: say so.
        let later = t0 + Duration::from_secs(5);
        let e = decided(r.admit("a", 2000, Some(q), false, &m, later)).unwrap_err();
        assert_eq!(e.retry_after_secs, Some(60));
    }
}

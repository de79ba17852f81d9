//! The query logic behind the gRPC methods, on validated requests of an
//! already authorized tenant: resolve the target, read the store, build the
//! response, and hold every response to the configured limits.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt as _, TryStreamExt as _};
use tributary_core::directory::{DeviceCatalog, DeviceInfo};
use tributary_core::envelope::value_to_pb;
use tributary_core::retention::{Keep, RetentionPolicy};
use tributary_core::rollup::Tiers;
use tributary_proto::v1 as pb;
use tributary_store::Store;

use crate::aggregate::{self, AggregateQuery, Budget};
use crate::config::QueryConfig;
use crate::error::QueryError;
use crate::range::{self, RangeQuery};
use crate::target::TargetSpec;

/// Samples per store scan when aggregating.
const SCAN_CHUNK: usize = 8192;
/// How long the store's rollup tiers are trusted before being asked again.
const TIERS_REFRESH: Duration = Duration::from_secs(5);

/// The store's rollup tiers (width, complete since) and when they were read.
type KnownTiers = (Instant, Vec<(i64, i64)>);

/// Reads for one service instance.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    store: Arc<dyn Store>,
    catalog: Arc<dyn DeviceCatalog>,
    config: QueryConfig,
    /// The tiers the store keeps and from when, as last asked.
    tiers_known: Arc<Mutex<Option<KnownTiers>>>,
    /// How long each tenant's data is kept.
    retention: Arc<RetentionPolicy>,
}

impl Engine {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        catalog: Arc<dyn DeviceCatalog>,
        config: QueryConfig,
    ) -> Self {
        Self {
            store,
            catalog,
            config,
            tiers_known: Arc::default(),
            retention: Arc::new(RetentionPolicy::new(Keep::Forever, Tiers::none())),
        }
    }

    pub(crate) fn set_retention(&mut self, policy: Arc<RetentionPolicy>) {
        self.retention = policy;
    }

    pub(crate) fn config(&self) -> &QueryConfig {
        &self.config
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The devices of `tenant` that `target` covers, sorted by id.
    pub(crate) async fn resolve(
        &self,
        tenant: &str,
        target: &TargetSpec,
    ) -> Result<Vec<DeviceInfo>, QueryError> {
        target
            .resolve(self.catalog.as_ref(), tenant, self.config.max_devices)
            .await
    }

    /// Every (device, metric) of the target, sorted.
    pub(crate) async fn list_metrics(
        &self,
        tenant: &str,
        target: &TargetSpec,
    ) -> Result<pb::ListMetricsResponse, QueryError> {
        let devices = self.resolve(tenant, target).await?;
        let mut per_device = std::pin::pin!(
            futures::stream::iter(devices)
                .map(|device| async move {
                    let metrics = self.store.list_metrics(tenant, &device.id).await?;
                    Ok::<_, QueryError>((device.id, metrics))
                })
                .buffered(self.config.store_concurrency.max(1))
        );
        let mut series = Vec::new();
        while let Some((device, metrics)) = per_device.try_next().await? {
            self.check_series(series.len() + metrics.len())?;
            series.extend(metrics.into_iter().map(|metric| pb::SeriesInfo {
                device: device.clone(),
                metric,
            }));
        }
        series.sort_unstable_by(|a, b| (&a.device, &a.metric).cmp(&(&b.device, &b.metric)));
        self.check_size(pb::ListMetricsResponse { series })
    }

    /// One page of points.
    pub(crate) async fn range(
        &self,
        tenant: &str,
        target: &TargetSpec,
        query: &RangeQuery,
    ) -> Result<pb::QueryRangeResponse, QueryError> {
        let devices = self.resolve(tenant, target).await?;
        let mut page = range::run(
            self.store.as_ref(),
            tenant,
            &devices,
            query,
            self.config.max_response_bytes,
        )
        .await?;
        let kept_from = self
            .retention
            .of(tenant)
            .raw
            .floor(tributary_core::time::now_ns());
        if query.range.from_ns < kept_from {
            page.retained_from_ns = kept_from;
        }
        Ok(page)
    }

    /// Windowed aggregates.
    pub(crate) async fn aggregate(
        &self,
        tenant: &str,
        target: &TargetSpec,
        query: &AggregateQuery,
    ) -> Result<pb::AggregateResponse, QueryError> {
        let devices = self.resolve(tenant, target).await?;
        let budget = Budget {
            max_buckets: self.config.max_buckets,
            max_scanned_points: self.config.max_scanned_points,
            scan_chunk: SCAN_CHUNK,
            concurrency: self.config.store_concurrency,
        };
        let now = tributary_core::time::now_ns();
        let retention = self.retention.of(tenant);
        let tier_floors: Vec<(i64, i64)> = self
            .config
            .rollup_tiers
            .iter()
            .map(|&w| (w, retention.tier(w).bucket_floor(now, w)))
            .collect();
        let floor_of = |w: i64| {
            tier_floors
                .iter()
                .find(|(fw, _)| *fw == w)
                .map_or(i64::MIN, |(_, f)| *f)
        };
        let tiering = aggregate::Tiering {
            // A tier answers from when it is complete and still kept.
            tiers: self
                .rollup_tiers()
                .await?
                .into_iter()
                .map(|(w, since)| (w, since.max(floor_of(w))))
                .collect(),
            // Buckets that may lack points written since the processor's
            // last rollup update are read raw.
            horizon_ns: now
                .saturating_sub(
                    i64::try_from(self.config.rollup_min_age_secs)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(tributary_core::time::NS_PER_SEC),
                )
                .min(self.store.rollups_pending_from().unwrap_or(i64::MAX)),
            raw_floor_ns: retention.raw.floor(now),
            tier_floors,
        };
        let response = aggregate::run(
            self.store.as_ref(),
            tenant,
            &devices,
            query,
            budget,
            &tiering,
        )
        .await?;
        self.check_size(response)
    }

    /// The configured tiers the store keeps, with from when each is
    /// complete; asked of the store at most every [`TIERS_REFRESH`].
    pub(crate) async fn rollup_tiers(&self) -> Result<Vec<(i64, i64)>, QueryError> {
        if let Some((at, tiers)) = &*self
            .tiers_known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            && at.elapsed() < TIERS_REFRESH
        {
            return Ok(tiers.clone());
        }
        let mut tiers = Vec::new();
        for &width in &self.config.rollup_tiers {
            if let Some(since) = self.store.rollups_since(width).await? {
                tiers.push((width, since));
            }
        }
        *self
            .tiers_known
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), tiers.clone()));
        Ok(tiers)
    }

    /// The newest value of each requested metric (all when `metrics` is empty)
    /// of each device, in (device, metric) order.
    pub(crate) async fn latest(
        &self,
        tenant: &str,
        target: &TargetSpec,
        metrics: &[String],
    ) -> Result<pb::LatestResponse, QueryError> {
        let devices = self.resolve(tenant, target).await?;
        let mut per_device = std::pin::pin!(
            futures::stream::iter(devices)
                .map(|device| async move {
                    let latest = self.store.latest(tenant, &device.id, metrics).await?;
                    Ok::<_, QueryError>((device.id, latest))
                })
                .buffered(self.config.store_concurrency.max(1))
        );
        let mut values = Vec::new();
        while let Some((device, latest)) = per_device.try_next().await? {
            self.check_series(values.len() + latest.len())?;
            values.extend(latest.into_iter().map(|l| pb::LatestValue {
                device: device.clone(),
                metric: l.metric,
                ts_ns: l.ts_ns,
                value: Some(value_to_pb(&l.value)),
            }));
        }
        values.sort_by(|a, b| (&a.device, &a.metric).cmp(&(&b.device, &b.metric)));
        self.check_size(pb::LatestResponse { values })
    }

    fn check_series(&self, n: usize) -> Result<(), QueryError> {
        if n > self.config.max_series {
            return Err(QueryError::ResourceExhausted {
                subject: "series",
                message: format!(
                    "the target has more than {} series; name metrics or narrow the target",
                    self.config.max_series
                ),
            });
        }
        Ok(())
    }

    fn check_size<M: prost::Message>(&self, response: M) -> Result<M, QueryError> {
        let size = response.encoded_len();
        if size > self.config.max_response_bytes {
            return Err(QueryError::ResourceExhausted {
                subject: "response_bytes",
                message: format!(
                    "the response would be {size} bytes, more than the limit of {}; narrow the query",
                    self.config.max_response_bytes
                ),
            });
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use tributary_core::Value;
    use tributary_core::selector::Selector;

    use super::*;
    use crate::testkit::{MemCatalog, MemStore};

    fn engine(config: QueryConfig) -> Engine {
        let store = MemStore::default();
        let catalog = MemCatalog::default();
        for (id, fleet, kind) in [
            ("t2", "West", "truck"),
            ("t1", "West", "truck"),
            ("v1", "West", "van"),
            ("e1", "East", "truck"),
        ] {
            catalog.put("acme", id, &[("fleet", fleet), ("type", kind)]);
            store.put(
                "acme",
                id,
                "lat",
                &[(1, Value::F64(50.0)), (2, Value::F64(50.5))],
            );
            store.put("acme", id, "lon", &[(2, Value::F64(8.0))]);
            store.put("acme", id, "fw", &[(3, Value::Str("1.2".into()))]);
        }
        catalog.put("other", "t1", &[("fleet", "West"), ("type", "truck")]);
        store.put("other", "t1", "lat", &[(9, Value::F64(-1.0))]);
        Engine::new(Arc::new(store), Arc::new(catalog), config)
    }

    fn selector(s: &str) -> TargetSpec {
        TargetSpec::Selector(Selector::parse(s).unwrap())
    }

    #[tokio::test]
    async fn latest_by_selector_returns_each_truck_of_the_fleet() {
        let e = engine(QueryConfig::default());
        let metrics = vec!["lat".to_string(), "lon".to_string()];
        let resp = e
            .latest("acme", &selector("fleet=West,type=truck"), &metrics)
            .await
            .unwrap();
        let got: Vec<_> = resp
            .values
            .iter()
            .map(|v| (v.device.as_str(), v.metric.as_str(), v.ts_ns))
            .collect();
        assert_eq!(
            got,
            [
                ("t1", "lat", 2),
                ("t1", "lon", 2),
                ("t2", "lat", 2),
                ("t2", "lon", 2)
            ]
        );
        assert_eq!(resp.values[0].value, Some(value_to_pb(&Value::F64(50.5))));
    }

    #[tokio::test]
    async fn list_metrics_is_sorted_and_limited() {
        let e = engine(QueryConfig::default());
        let resp = e
            .list_metrics("acme", &selector("type=truck"))
            .await
            .unwrap();
        let got: Vec<_> = resp
            .series
            .iter()
            .map(|s| format!("{}/{}", s.device, s.metric))
            .collect();
        assert_eq!(
            got,
            [
                "e1/fw", "e1/lat", "e1/lon", "t1/fw", "t1/lat", "t1/lon", "t2/fw", "t2/lat",
                "t2/lon"
            ]
        );

        let e = engine(QueryConfig {
            max_series: 8,
            ..QueryConfig::default()
        });
        let err = e
            .list_metrics("acme", &selector("type=truck"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                QueryError::ResourceExhausted {
                    subject: "series",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn oversized_responses_are_refused() {
        let e = engine(QueryConfig {
            max_response_bytes: 64,
            ..QueryConfig::default()
        });
        let err = e.latest("acme", &selector(""), &[]).await.unwrap_err();
        assert!(
            matches!(
                err,
                QueryError::ResourceExhausted {
                    subject: "response_bytes",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn unknown_devices_are_not_found() {
        let e = engine(QueryConfig::default());
        let err = e
            .latest("acme", &TargetSpec::Device("nope".into()), &[])
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::NotFound { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_range_past_the_raw_retention_says_where_the_data_ends() {
        let day = tributary_core::time::NS_PER_DAY;
        let mut e = engine(QueryConfig::default());
        let policy = RetentionPolicy::new(Keep::Forever, Tiers::none());
        policy.set(
            "acme",
            &tributary_core::retention::RetentionSettings::from_named([("raw", "1d")]).unwrap(),
        );
        e.set_retention(Arc::new(policy));
        let now = tributary_core::time::now_ns();
        let range = |from_ns: i64| pb::QueryRangeRequest {
            from_ns,
            to_ns: now,
            limit: 10,
            ..Default::default()
        };
        let target = TargetSpec::Device("t1".into());
        let old = RangeQuery::from_pb("acme", &target, &range(now - 3 * day), 100, now).unwrap();
        let resp = e.range("acme", &target, &old).await.unwrap();
        let kept_from = resp.retained_from_ns;
        assert!(
            (now - day..=now - day + 60_000_000_000).contains(&kept_from),
            "reported {kept_from}, expected about {}",
            now - day
        );
        let recent = RangeQuery::from_pb("acme", &target, &range(now - day / 2), 100, now).unwrap();
        assert_eq!(
            e.range("acme", &target, &recent)
                .await
                .unwrap()
                .retained_from_ns,
            0
        );
    }
}

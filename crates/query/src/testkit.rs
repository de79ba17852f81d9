//! In-memory fakes of the store and the catalog for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use tributary_core::directory::{DeviceCatalog, DeviceInfo, DirectoryError};
use tributary_core::rollup::{Rollup, RollupKey};
use tributary_core::selector::Selector;
use tributary_core::{Sample, SeriesKey, Value};
use tributary_store::{DevicePoints, Latest, Order, Store, StoreError};

/// A store in a `BTreeMap`, counting its scans.
#[derive(Debug, Default)]
pub(crate) struct MemStore {
    series: Mutex<BTreeMap<SeriesKey, BTreeMap<i64, Value>>>,
    rollups: Mutex<BTreeMap<RollupKey, Rollup>>,
    rollups_since: Mutex<BTreeMap<i64, i64>>,
    pub(crate) scans: AtomicUsize,
    pub(crate) rollup_scans: AtomicUsize,
}

impl MemStore {
    pub(crate) fn put(&self, tenant: &str, device: &str, metric: &str, points: &[(i64, Value)]) {
        let mut series = self.series.lock().unwrap();
        let s = series
            .entry(SeriesKey::new(tenant, device, metric))
            .or_default();
        for (ts, v) in points {
            s.insert(*ts, v.clone());
        }
    }
}

#[async_trait]
impl Store for MemStore {
    async fn write(&self, batch: &[DevicePoints]) -> Result<(), StoreError> {
        for dp in batch {
            for p in &dp.points {
                self.put(
                    &dp.tenant,
                    &dp.device,
                    &p.metric,
                    &[(p.ts_ns, p.value.clone())],
                );
            }
        }
        Ok(())
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list_metrics(&self, tenant: &str, device: &str) -> Result<Vec<String>, StoreError> {
        let series = self.series.lock().unwrap();
        Ok(series
            .keys()
            .filter(|k| k.tenant == tenant && k.device == device)
            .map(|k| k.metric.clone())
            .collect())
    }

    async fn scan(
        &self,
        key: &SeriesKey,
        from_ns: i64,
        to_ns: i64,
        order: Order,
        limit: usize,
    ) -> Result<Vec<Sample>, StoreError> {
        self.scans.fetch_add(1, Ordering::Relaxed);
        let series = self.series.lock().unwrap();
        let Some(s) = series.get(key) else {
            return Ok(Vec::new());
        };
        if from_ns >= to_ns {
            return Ok(Vec::new());
        }
        let range = s.range(from_ns..to_ns).map(|(ts, v)| Sample {
            ts_ns: *ts,
            value: v.clone(),
        });
        Ok(match order {
            Order::Asc => range.take(limit).collect(),
            Order::Desc => range.rev().take(limit).collect(),
        })
    }

    async fn latest(
        &self,
        tenant: &str,
        device: &str,
        metrics: &[String],
    ) -> Result<Vec<Latest>, StoreError> {
        let series = self.series.lock().unwrap();
        Ok(series
            .iter()
            .filter(|(k, _)| k.tenant == tenant && k.device == device)
            .filter(|(k, _)| metrics.is_empty() || metrics.contains(&k.metric))
            .filter_map(|(k, s)| {
                s.last_key_value().map(|(ts, v)| Latest {
                    metric: k.metric.clone(),
                    ts_ns: *ts,
                    value: v.clone(),
                })
            })
            .collect())
    }

    async fn get_rollups(&self, keys: &[RollupKey]) -> Result<Vec<Option<Rollup>>, StoreError> {
        let rollups = self.rollups.lock().unwrap();
        Ok(keys.iter().map(|k| rollups.get(k).cloned()).collect())
    }

    async fn write_rollups(&self, rows: &[(RollupKey, Rollup)]) -> Result<(), StoreError> {
        let mut rollups = self.rollups.lock().unwrap();
        for (k, r) in rows {
            rollups.insert(k.clone(), r.clone());
        }
        Ok(())
    }

    async fn scan_rollups(
        &self,
        series: &SeriesKey,
        width_ns: i64,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Rollup)>, StoreError> {
        self.rollup_scans.fetch_add(1, Ordering::Relaxed);
        if from_ns >= to_ns {
            return Ok(Vec::new());
        }
        let key = |start_ns| RollupKey {
            series: series.clone(),
            width_ns,
            start_ns,
        };
        let rollups = self.rollups.lock().unwrap();
        Ok(rollups
            .range(key(from_ns)..key(to_ns))
            .take(limit)
            .map(|(k, r)| (k.start_ns, r.clone()))
            .collect())
    }

    async fn rollups_since(&self, width_ns: i64) -> Result<Option<i64>, StoreError> {
        Ok(self.rollups_since.lock().unwrap().get(&width_ns).copied())
    }

    async fn mark_rollups_since(&self, width_ns: i64, since_ns: i64) -> Result<i64, StoreError> {
        Ok(*self
            .rollups_since
            .lock()
            .unwrap()
            .entry(width_ns)
            .or_insert(since_ns))
    }

    async fn apply_retention(&self, _now_ns: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// The in-memory store keeps everything: tests of retention use the
    /// embedded store.
    fn set_retention(&self, _policy: std::sync::Arc<tributary_core::retention::RetentionPolicy>) {}
}

/// A catalog of (tenant, device) → labels.
#[derive(Debug, Default)]
pub(crate) struct MemCatalog {
    devices: Mutex<BTreeMap<(String, String), DeviceInfo>>,
}

impl MemCatalog {
    pub(crate) fn put(&self, tenant: &str, device: &str, labels: &[(&str, &str)]) {
        let info = DeviceInfo {
            id: device.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            disabled: false,
        };
        self.devices
            .lock()
            .unwrap()
            .insert((tenant.into(), device.into()), info);
    }
}

#[async_trait]
impl DeviceCatalog for MemCatalog {
    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError> {
        Ok(self
            .devices
            .lock()
            .unwrap()
            .get(&(tenant.to_string(), device.to_string()))
            .cloned())
    }

    async fn select(
        &self,
        tenant: &str,
        selector: &Selector,
    ) -> Result<Vec<DeviceInfo>, DirectoryError> {
        Ok(self
            .devices
            .lock()
            .unwrap()
            .iter()
            .filter(|((t, _), d)| t == tenant && selector.matches(&d.labels))
            .map(|(_, d)| d.clone())
            .collect())
    }
}

//! The alert history: every transition of the alerts log folded into each
//! alert's newest state ([`fold`]) and kept in an [`AlertStore`], per
//! tenant, for `ListAlerts` to read without reading the log. Alerts expire
//! a while after their last change ([`DEFAULT_KEEP`]).
//!
//! [`keep_history`] is a consumer group on the alerts log
//! ([`HISTORY_GROUP`]) that commits after the batch's alerts are stored:
//! after a crash it folds the uncommitted transitions again, in the same
//! order, to the same result.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use tributary_log::{ConsumerOptions, Log, LogError, StartFrom};
use tributary_proto::v1 as pb;
use tributary_store::{AlertStore, StoreError, StoredAlert};

/// The consumer group of the history on the alerts log.
pub const HISTORY_GROUP: &str = "tributary-alerts-history";
/// How long an alert is kept after its last change, by default.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(30 * 86_400);
/// How often expired alerts are deleted.
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);
/// Transitions taken per poll.
const POLL: usize = 1024;

/// Folds a transition into its alert. An acknowledgement leaves the state
/// as it was.
pub(crate) fn fold(into: &mut pb::Alert, e: &pb::AlertEvent) {
    if e.state == pb::AlertState::Acknowledged as i32 {
        if into.acknowledged_at_ns == 0 {
            into.acknowledged_at_ns = e.at_ns;
            into.acknowledged_by = e.by.clone();
        }
        return;
    }
    into.state = e.state;
    into.value = e.value;
    into.summary = e.summary.clone();
    into.silenced_until_ns = e.silenced_until_ns;
    match pb::AlertState::try_from(e.state) {
        Ok(pb::AlertState::Firing) => into.fired_at_ns = e.at_ns,
        Ok(pb::AlertState::Resolved) => into.resolved_at_ns = e.at_ns,
        _ => {}
    }
}

/// A new alert from its first transition (not folded yet).
pub(crate) fn new_alert(e: &pb::AlertEvent) -> pb::Alert {
    pb::Alert {
        alert_id: e.alert_id.clone(),
        tenant: e.tenant.clone(),
        rule: e.rule.clone(),
        device: e.device.clone(),
        metric: e.metric.clone(),
        severity: e.severity,
        started_at_ns: e.started_at_ns,
        ..Default::default()
    }
}

/// An alert as the history stores it, changed at `updated_at_ns`.
pub(crate) fn stored(a: &pb::Alert, updated_at_ns: i64) -> StoredAlert {
    StoredAlert {
        tenant: a.tenant.clone(),
        alert_id: a.alert_id.clone(),
        started_at_ns: a.started_at_ns,
        updated_at_ns,
        value: a.encode_to_vec(),
    }
}

/// A stored alert, decoded.
pub(crate) fn decoded(s: &StoredAlert) -> Result<pb::Alert, StoreError> {
    pb::Alert::decode(s.value.as_slice())
        .map_err(|e| StoreError::Backend(format!("alert {}: undecodable: {e}", s.alert_id)))
}

/// Why the history stopped.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("alerts log: {0}")]
    Log(#[from] LogError),
    #[error("alert history: {0}")]
    Store(#[from] StoreError),
}

/// Folds the alerts log into `store` until `stop`; deletes alerts that
/// last changed more than `keep` ago, hourly.
pub async fn keep_history(
    alerts: Arc<dyn Log>,
    store: Arc<dyn AlertStore>,
    keep: Duration,
    stop: impl Future<Output = ()>,
) -> Result<(), HistoryError> {
    let mut consumer = alerts
        .consumer(ConsumerOptions {
            group: Some(HISTORY_GROUP.into()),
            start: StartFrom::Earliest,
        })
        .await?;
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    tokio::pin!(stop);
    loop {
        let records = tokio::select! {
            () = &mut stop => return Ok(()),
            _ = expire.tick() => {
                let cutoff = tributary_core::time::now_ns()
                    .saturating_sub(i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX));
                match store.expire_alerts(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "old alerts deleted from the history"),
                    Err(e) => tracing::warn!(error = %e, "expiring old alerts failed; next hour"),
                }
                continue;
            }
            r = consumer.poll(POLL, Duration::from_millis(200)) => r?,
        };
        if records.is_empty() {
            continue;
        }
        let mut offsets = std::collections::BTreeMap::new();
        // The alerts of this batch, in the order first seen.
        let mut changed: HashMap<(String, String), (pb::Alert, i64)> = HashMap::new();
        let mut order = Vec::new();
        for r in &records {
            offsets.insert(r.partition, r.offset + 1);
            let Ok(e) = pb::AlertEvent::decode(r.value.as_ref()) else {
                continue;
            };
            if e.alert_id.is_empty() || e.alert_id.len() > tributary_store::alerts::MAX_ALERT_ID {
                continue;
            }
            // When the transition was appended: what expiry counts from.
            let appended = r.timestamp_ms.saturating_mul(1_000_000);
            let key = (e.tenant.clone(), e.alert_id.clone());
            if !changed.contains_key(&key) {
                let alert = match store.get_alert(&e.tenant, &e.alert_id).await? {
                    Some(s) => decoded(&s)?,
                    None => new_alert(&e),
                };
                changed.insert(key.clone(), (alert, appended));
                order.push(key.clone());
            }
            if let Some((alert, updated)) = changed.get_mut(&key) {
                fold(alert, &e);
                *updated = (*updated).max(appended);
            }
        }
        let rows: Vec<StoredAlert> = order
            .iter()
            .filter_map(|k| changed.get(k))
            .map(|(a, updated)| stored(a, *updated))
            .collect();
        if !rows.is_empty() {
            store.put_alerts(rows).await?;
        }
        let offsets: Vec<(u32, u64)> = offsets.into_iter().collect();
        if let Err(e) = consumer.commit(&offsets).await {
            tracing::warn!(error = %e, "alert history: commit failed; the batch is folded again");
        }
    }
}

#[cfg(test)]
mod tests {
    use tributary_log::Record;
    use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
    use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};

    use super::*;

    fn event(tenant: &str, id: &str, state: pb::AlertState, at_s: i64) -> Record {
        let e = pb::AlertEvent {
            alert_id: id.into(),
            tenant: tenant.into(),
            rule: "warm".into(),
            device: "d1".into(),
            metric: "temp".into(),
            state: state as i32,
            started_at_ns: 1_000,
            at_ns: at_s * 1_000_000_000,
            by: if state == pb::AlertState::Acknowledged {
                "ops".into()
            } else {
                String::new()
            },
            ..Default::default()
        };
        Record {
            key: format!("{tenant}/d1").into_bytes().into(),
            value: e.encode_to_vec().into(),
            headers: Vec::new(),
            timestamp_ms: tributary_core::time::now_ns() / 1_000_000,
        }
    }

    async fn until_stored(store: &EmbeddedStore, tenant: &str, id: &str, state: i32) -> pb::Alert {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = store.get_alert(tenant, id).await.unwrap() {
                let a = decoded(&s).unwrap();
                if a.state == state {
                    return a;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{tenant}/{id} never reached {state}"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_history_folds_each_alert_once_per_tenant_across_restarts() {
        use pb::AlertState as S;
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = EmbeddedLog::open(
            dir.path().join("log"),
            EmbeddedLogConfig::new("tributary.alerts.v1", 1),
        )
        .await
        .unwrap();
        let store =
            EmbeddedStore::open(&dir.path().join("store"), EmbeddedStoreConfig::default()).unwrap();
        log.append_batch(vec![
            event("acme", "a1", S::Pending, 1),
            event("acme", "a1", S::Firing, 2),
            event("acme", "a1", S::Acknowledged, 3),
            event("other", "a1", S::Firing, 2),
        ])
        .await
        .unwrap();
        let run = |stop: tokio::sync::oneshot::Receiver<()>| {
            tokio::spawn(keep_history(
                log.clone(),
                store.clone(),
                DEFAULT_KEEP,
                async move {
                    let _ = stop.await;
                },
            ))
        };
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = run(stopped);
        let a = until_stored(&store, "acme", "a1", S::Firing as i32).await;
        assert_eq!(a.fired_at_ns, 2_000_000_000);
        assert_eq!(a.acknowledged_by, "ops", "acknowledged, still firing");
        let other = until_stored(&store, "other", "a1", S::Firing as i32).await;
        assert_eq!(
            other.acknowledged_at_ns, 0,
            "the same id in another tenant is another alert"
        );
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();

        // A new run resumes after what the last one committed.
        log.append(event("acme", "a1", S::Resolved, 4))
            .await
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = run(stopped);
        let a = until_stored(&store, "acme", "a1", S::Resolved as i32).await;
        assert_eq!(
            (a.fired_at_ns, a.resolved_at_ns, a.acknowledged_by.as_str()),
            (2_000_000_000, 4_000_000_000, "ops")
        );
        let listed = store
            .list_alerts("acme", (i64::MIN, i64::MAX), None, 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), 1, "one alert, however many transitions");
        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    }
}

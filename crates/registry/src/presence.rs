//! Presence reports, written in groups: every connect and disconnect of a
//! device is a presence report, and a fleet that reconnects after an outage
//! sends thousands of them a second. Each one written on its own would be a
//! durable write of its own (a commit, an fsync, a round trip to the
//! cluster), one after another. Here one writer task takes every report
//! queued while it wrote the last group as the next group: two reads and
//! one [`PresenceStore::set_presences`](crate::store::PresenceStore::set_presences) for all of them. Callers only wait
//! for their answer: no lock is handed from caller to caller, which under a
//! storm would cost a trip through the scheduler's run queue per report. A report is
//! answered only once its group is durable, so a caller still knows, when
//! its report returns, which frontend holds the device.
//!
//! Within a group, reports are applied in arrival order, each against the
//! presence the ones before it left (the store's, for the first report of a
//! device). Because one group is written at a time per registry, two
//! reports for the same device no longer race between their read and their
//! write, as they could when each read and wrote on its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::error::{Entity, RegistryError};
use crate::store::{PresenceRecord, RegistryStore};

/// Most reports written in one group; the rest wait for the next.
pub const MAX_GROUP: usize = 1024;

/// One report, waiting for its group.
struct Report {
    tenant: String,
    device: String,
    online: bool,
    at_ns: i64,
    frontend: String,
    done: oneshot::Sender<Result<PresenceRecord, RegistryError>>,
}

/// Reports queued for the writer before callers wait to queue theirs.
const QUEUE: usize = 16 * 1024;

/// Presence reports, gathered and written in groups (see the [module
/// docs](self)) by one writer task, started with the first report.
#[derive(Debug, Default)]
pub(crate) struct PresenceWriter {
    /// The writer task's queue; `None` until the first report, or after
    /// the task ended with its runtime.
    queue: Mutex<Option<mpsc::Sender<Report>>>,
    /// Groups written, and reports in them (for tests and metrics).
    stats: Arc<Mutex<GroupStats>>,
}

/// Groups written so far and the reports they held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GroupStats {
    /// Groups written (store calls).
    pub groups: u64,
    /// Reports in them.
    pub reports: u64,
}

impl PresenceWriter {
    /// Records that `frontend` saw `device` connect (`online`) or disconnect
    /// at `at_ns`, once the group it joins is durable. The arguments are
    /// validated by the caller.
    pub(crate) async fn report(
        &self,
        store: &Arc<dyn RegistryStore>,
        tenant: &str,
        device: &str,
        online: bool,
        at_ns: i64,
        frontend: &str,
    ) -> Result<PresenceRecord, RegistryError> {
        let (done, answer) = oneshot::channel();
        let mut report = Report {
            tenant: tenant.to_owned(),
            device: device.to_owned(),
            online,
            at_ns,
            frontend: frontend.to_owned(),
            done,
        };
        // A second try only if the writer ended with the runtime it was
        // started on (a registry that outlives one, as in tests).
        for _ in 0..2 {
            match self.writer(store).send(report).await {
                Ok(()) => return answer.await.unwrap_or_else(|_| Err(lost())),
                Err(mpsc::error::SendError(back)) => {
                    report = back;
                    lock(&self.queue).take();
                }
            }
        }
        Err(lost())
    }

    /// The writer task's queue, starting the task if there is none.
    fn writer(&self, store: &Arc<dyn RegistryStore>) -> mpsc::Sender<Report> {
        let mut queue = lock(&self.queue);
        if let Some(tx) = queue.as_ref().filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_groups(store.clone(), rx, self.stats.clone()));
        *queue = Some(tx.clone());
        tx
    }

    /// Groups written so far.
    pub(crate) fn stats(&self) -> GroupStats {
        *lock(&self.stats)
    }
}

/// The writer: takes every report queued (up to [`MAX_GROUP`]) as one
/// group, writes it, answers it, and goes on until the queue closes.
async fn write_groups(
    store: Arc<dyn RegistryStore>,
    mut queue: mpsc::Receiver<Report>,
    stats: Arc<Mutex<GroupStats>>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        {
            let mut stats = lock(&stats);
            stats.groups += 1;
            stats.reports += group.len() as u64;
        }
        write_group(&store, std::mem::take(&mut group)).await;
    }
}

fn lost() -> RegistryError {
    RegistryError::Internal("the presence writer stopped".into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Applies `group` in order and writes what changed in one store call,
/// then answers every report.
async fn write_group(store: &Arc<dyn RegistryStore>, group: Vec<Report>) {
    // The presence each device had before the group (read once per
    // device, concurrently); `None` for a device that does not exist.
    let mut keys: Vec<(String, String)> = group
        .iter()
        .map(|r| (r.tenant.clone(), r.device.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    // Two reads for the whole group: which devices exist, and their
    // presence.
    let read = async {
        let exist = store.devices_exist(&keys).await?;
        let presence = store.get_presences_of(&keys).await?;
        Ok::<_, RegistryError>((exist, presence))
    };
    let mut current: HashMap<(String, String), Result<Option<PresenceRecord>, String>> =
        match read.await {
            Ok((exist, presence)) => keys
                .into_iter()
                .zip(exist.into_iter().zip(presence))
                .map(|(k, (exists, p))| (k, Ok(exists.then(|| p.unwrap_or_default()))))
                .collect(),
            Err(e) => {
                let e = e.to_string();
                keys.into_iter().map(|k| (k, Err(e.clone()))).collect()
            }
        };

    let mut answers = Vec::with_capacity(group.len());
    let mut changed: HashMap<(String, String), PresenceRecord> = HashMap::new();
    for r in group {
        let key = (r.tenant.clone(), r.device.clone());
        let result = match current.get_mut(&key).expect("read above") {
            Err(e) => Err(RegistryError::Unavailable(e.clone())),
            Ok(None) => Err(RegistryError::not_found(Entity::Device, &r.device)),
            Ok(Some(now)) => {
                let next = apply(now, r.online, r.at_ns, &r.frontend);
                if let Some(next) = next {
                    *now = next.clone();
                    changed.insert(key, next);
                }
                Ok(now.clone())
            }
        };
        answers.push((r.done, result));
    }

    let writes: Vec<(String, String, PresenceRecord)> = changed
        .into_iter()
        .map(|((tenant, device), p)| (tenant, device, p))
        .collect();
    let failed = if writes.is_empty() {
        None
    } else {
        store
            .set_presences(&writes)
            .await
            .err()
            .map(|e| e.to_string())
    };
    for (done, result) in answers {
        let result = match (&failed, result) {
            (Some(e), Ok(_)) => Err(RegistryError::Unavailable(e.clone())),
            (_, result) => result,
        };
        let _ = done.send(result);
    }
}

/// The presence after a report of `online` at `at_ns` from `frontend`,
/// given the presence `now`; `None` when the report changes nothing.
///
/// A report older than the last one is ignored, and so is a disconnect
/// from a frontend other than the one the device is online at (the device
/// reconnected elsewhere). The frontend is kept when the device goes
/// offline: a persistent session stays in that replica's memory, and
/// commands for the device are routed there (ARCHITECTURE.md, "Commands").
pub(crate) fn apply(
    now: &PresenceRecord,
    online: bool,
    at_ns: i64,
    frontend: &str,
) -> Option<PresenceRecord> {
    let stale = at_ns < now.last_seen_ns;
    let moved = !online && now.online && now.frontend != frontend;
    if stale || moved {
        return None;
    }
    Some(PresenceRecord {
        online,
        last_seen_ns: at_ns,
        frontend: frontend.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(online: bool, ns: i64, frontend: &str) -> PresenceRecord {
        PresenceRecord {
            online,
            last_seen_ns: ns,
            frontend: frontend.into(),
        }
    }

    #[test]
    fn reports_apply_in_time_order_and_a_disconnect_elsewhere_is_ignored() {
        let never = PresenceRecord::default();
        assert_eq!(apply(&never, true, 10, "a"), Some(at(true, 10, "a")));
        // Older than the last: ignored.
        assert_eq!(apply(&at(true, 10, "a"), false, 9, "a"), None);
        // The device moved to b; a's late disconnect does not take it offline.
        assert_eq!(apply(&at(true, 10, "b"), false, 11, "a"), None);
        // Its own frontend's disconnect does, and the frontend is kept.
        assert_eq!(
            apply(&at(true, 10, "b"), false, 11, "b"),
            Some(at(false, 11, "b"))
        );
    }
}

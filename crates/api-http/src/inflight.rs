//! Requests of one tenant in flight on this replica, within
//! `[api] max_inflight_per_tenant`: a tenant (a busy dashboard, a runaway
//! script) cannot take every request slot of the API for itself. Event
//! streams are not counted here: they have their `live_streams` quota.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Each tenant's requests in flight.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inflight {
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

/// One request in flight; given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    inflight: Inflight,
    tenant: String,
}

impl Inflight {
    /// A slot for `tenant`, unless it holds `limit` already.
    pub(crate) fn try_acquire(&self, tenant: &str, limit: usize) -> Option<Slot> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let held = counts.entry(tenant.to_owned()).or_insert(0);
        if *held >= limit {
            return None;
        }
        *held += 1;
        Some(Slot {
            inflight: self.clone(),
            tenant: tenant.to_owned(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .inflight
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_holds_at_most_its_limit_and_gets_slots_back() {
        let inflight = Inflight::default();
        let a = inflight.try_acquire("acme", 2).unwrap();
        let _b = inflight.try_acquire("acme", 2).unwrap();
        assert!(inflight.try_acquire("acme", 2).is_none());
        assert!(
            inflight.try_acquire("globex", 2).is_some(),
            "others are not held back"
        );
        drop(a);
        assert!(inflight.try_acquire("acme", 2).is_some());
    }
}

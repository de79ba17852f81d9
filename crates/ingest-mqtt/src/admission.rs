//! Admission control for CONNECTs: a frontend takes at most
//! `max_connect_rate` new connections a second (with a burst of
//! `connect_burst`), whatever a fleet that comes back after an outage
//! throws at it. A CONNECT above the rate waits its turn, for at most
//! `max_connect_wait_ms`; one that would wait longer is refused at once
//! with 0x9F Connection rate exceeded (3.1.1: 3 Server unavailable) and a
//! retry hint, instead of timing out in a backlog on the client's side.
//!
//! The schedule is a generic cell rate algorithm (GCRA): one instant, the
//! theoretical arrival time of the next CONNECT, moved forward by one
//! interval per admission. Admitting is O(1) under a short lock, and the
//! wait happens outside it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tributary_core::rate::TokenBucket;

/// What [`ConnectAdmission::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go on now.
    Now,
    /// Go on after waiting this long (the slot is taken).
    After(Duration),
    /// Refused: the wait would exceed the maximum. A client should try
    /// again after about this long.
    Refused { retry_after: Duration },
}

/// The connect-rate schedule of one frontend.
#[derive(Debug)]
pub(crate) struct ConnectAdmission {
    /// Time between two admissions at the sustained rate; `None`: no limit.
    interval: Option<Duration>,
    /// How far ahead of the sustained rate a burst may run.
    tolerance: Duration,
    /// The longest a CONNECT may wait for its slot.
    max_wait: Duration,
    /// When the next CONNECT would be admitted at the sustained rate.
    next: Mutex<Instant>,
}

impl ConnectAdmission {
    /// At most `rate` connects a second (0: no limit) after a burst of
    /// `burst`, each waiting at most `max_wait`.
    pub(crate) fn new(rate: f64, burst: u32, max_wait: Duration) -> Self {
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(1.0 / rate));
        let tolerance = interval.map_or(Duration::ZERO, |i| i * burst.saturating_sub(1));
        Self {
            interval,
            tolerance,
            max_wait,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Takes a slot for a CONNECT arriving `now`.
    pub(crate) fn admit(&self, now: Instant) -> Admit {
        let Some(interval) = self.interval else {
            return Admit::Now;
        };
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let due = (*next).max(now);
        // The burst lets `due` run up to `tolerance` ahead of now.
        let wait = due.saturating_duration_since(now + self.tolerance);
        if wait > self.max_wait {
            return Admit::Refused {
                retry_after: wait.max(Duration::from_secs(1)),
            };
        }
        *next = due + interval;
        if wait.is_zero() {
            Admit::Now
        } else {
            Admit::After(wait)
        }
    }
}

/// Tenants whose buckets are kept before full (idle) ones are forgotten.
const TENANTS_KEPT: usize = 4_096;

/// The `connects_per_sec` quota: a token bucket per tenant, charged once a
/// CONNECT is authenticated (the tenant is known then). A tenant over it
/// is refused at once with a retry hint, so that its storm takes neither
/// sessions nor presence writes from the others.
#[derive(Debug, Default)]
pub(crate) struct TenantConnectRates {
    tenants: Mutex<HashMap<String, TokenBucket>>,
}

impl TenantConnectRates {
    /// Charges one CONNECT to `tenant`, at `rate` a second with `burst`.
    /// `Err`: how long until one would fit (`Duration::MAX`: never, the
    /// rate is 0).
    pub(crate) fn admit(
        &self,
        tenant: &str,
        rate: u64,
        burst: u64,
        now: Instant,
    ) -> Result<(), Duration> {
        if rate == 0 {
            return Err(Duration::MAX);
        }
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if tenants.len() >= TENANTS_KEPT && !tenants.contains_key(tenant) {
            // A full bucket is the same as a new one: forgetting loses nothing.
            tenants.retain(|_, b| !b.is_full(now));
        }
        let bucket = tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| TokenBucket::new(rate as f64, burst as f64, now));
        // Cheap, and it picks up a quota change at the next CONNECT.
        bucket.reconfigure(rate as f64, burst as f64, now);
        bucket.try_take_n(1.0, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_rate_everything_goes_now() {
        let a = ConnectAdmission::new(0.0, 0, Duration::ZERO);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(a.admit(now), Admit::Now);
        }
    }

    #[test]
    fn a_burst_goes_now_then_connects_are_spaced_then_refused() {
        // 100/s, a burst of 10, at most 50 ms of waiting.
        let a = ConnectAdmission::new(100.0, 10, Duration::from_millis(50));
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(a.admit(t0), Admit::Now);
        }
        // Then one per 10 ms: waits of 10, 20, ..., 50 ms.
        for n in 1..=5u64 {
            let got = a.admit(t0);
            let Admit::After(wait) = got else {
                panic!("{got:?}")
            };
            assert!(wait.abs_diff(Duration::from_millis(10 * n)) < Duration::from_millis(1));
        }
        // The sixth would wait 60 ms: refused, and it takes no slot.
        assert!(
            matches!(a.admit(t0), Admit::Refused { retry_after } if retry_after >= Duration::from_secs(1))
        );
        assert!(matches!(a.admit(t0), Admit::Refused { .. }));
        // A second later the schedule has caught up: a burst again.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(a.admit(t1), Admit::Now);
        }
    }

    #[test]
    fn the_sustained_rate_holds_over_time() {
        // 1,000/s with no burst: over 2 s of arrivals every 0.1 ms (20,000
        // CONNECTs), about 2,000 are admitted plus the allowed waiting.
        let a = ConnectAdmission::new(1000.0, 1, Duration::from_millis(100));
        let t0 = Instant::now();
        let admitted = (0..20_000u64)
            .filter(|i| {
                !matches!(
                    a.admit(t0 + Duration::from_micros(100 * i)),
                    Admit::Refused { .. }
                )
            })
            .count();
        assert!((2_000..=2_101).contains(&admitted), "{admitted}");
    }

    #[test]
    fn one_tenant_over_its_connect_rate_leaves_the_others_alone() {
        let r = TenantConnectRates::default();
        let t0 = Instant::now();
        // 10/s with a burst of 5: five now, then refused with a hint.
        for _ in 0..5 {
            assert!(r.admit("storm", 10, 5, t0).is_ok());
        }
        let wait = r.admit("storm", 10, 5, t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another tenant is untouched.
        assert!(r.admit("calm", 10, 5, t0).is_ok());
        // 100 ms later one more fits.
        assert!(
            r.admit("storm", 10, 5, t0 + Duration::from_millis(100))
                .is_ok()
        );
        // A rate of 0 refuses everything (a suspended tenant).
        assert_eq!(r.admit("suspended", 0, 1, t0), Err(Duration::MAX));
    }

    #[test]
    fn idle_tenants_are_forgotten_when_many() {
        let r = TenantConnectRates::default();
        let t0 = Instant::now();
        for i in 0..TENANTS_KEPT {
            assert!(r.admit(&format!("t{i}"), 100, 10, t0).is_ok());
        }
        // A second later every bucket is full again: room for new tenants.
        assert!(r.admit("new", 100, 10, t0 + Duration::from_secs(1)).is_ok());
        assert!(r.tenants.lock().unwrap().len() <= 2);
    }
}

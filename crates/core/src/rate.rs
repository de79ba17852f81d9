//! A token bucket: the rate limits of devices and tenants.
//!
//! Time is passed in, so the bucket is pure and its tests need no clock.

use std::time::{Duration, Instant};

/// Allows `rate` units per second on average, and bursts of `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. A burst below 1 is taken as 1.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate: rate.max(0.0),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Changes the rate and burst, keeping the tokens (capped at the burst).
    pub fn reconfigure(&mut self, rate: f64, burst: f64, now: Instant) {
        self.refill(now);
        self.rate = rate.max(0.0);
        self.burst = burst.max(1.0);
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Whether the bucket has refilled completely: forgetting it then loses
    /// nothing.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_n(1.0, now).is_ok()
    }

    /// Takes `n` tokens if there are that many; otherwise takes none and
    /// says how long until there will be (`Duration::MAX` when never: `n`
    /// is more than the burst, or the rate is 0).
    pub fn try_take_n(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        if n > self.burst || self.rate <= 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::from_secs_f64((n - self.tokens) / self.rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0), "burst spent");
        assert!(
            b.try_take(t0 + Duration::from_millis(100)),
            "one token after 1/rate"
        );
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(60);
        assert!(b.is_full(later));
        assert_eq!(
            (0..10).filter(|_| b.try_take(later)).count(),
            3,
            "never more than the burst"
        );
        assert!(!b.is_full(later));
    }

    #[test]
    fn many_tokens_at_once_and_the_wait_for_them() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, 1000.0, t0);
        assert!(b.try_take_n(900.0, t0).is_ok());
        let wait = b.try_take_n(200.0, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-9, "{wait:?}");
        assert!(b.try_take_n(200.0, t0 + wait).is_ok());
        assert_eq!(
            b.try_take_n(2000.0, t0),
            Err(Duration::MAX),
            "over the burst"
        );
        b.reconfigure(0.0, 10.0, t0);
        assert_eq!(b.try_take_n(50.0, t0), Err(Duration::MAX), "rate 0");
    }
}

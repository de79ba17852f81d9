//! When a sender may send its next message.

use std::time::Duration;

use tokio::time::Instant;

use crate::scenario::LoadMode;

/// Lateness of an open-loop send that is not charged to the server: the
/// timer wheel fires up to a millisecond late, and that is the generator's
/// delay, not the server's.
pub const TIMER_SLACK: Duration = Duration::from_millis(2);

/// One sender's schedule: closed loop (send whenever the window allows) or
/// open loop at a fixed rate, with an optional message quota.
#[derive(Debug, Clone)]
pub struct Pace {
    period: Option<Duration>,
    next: Instant,
    left: Option<u64>,
    idle: bool,
}

impl Pace {
    /// A schedule for one sender.
    ///
    /// `rate` is this sender's messages per second (ignored in the closed
    /// loop); `phase` in `[0, 1)` staggers open-loop senders so that they do
    /// not all fire at once; `quota` is the number of messages it sends, if
    /// bounded.
    pub fn new(mode: LoadMode, rate: f64, phase: f64, start: Instant, quota: Option<u64>) -> Self {
        let period = match mode {
            LoadMode::Rate | LoadMode::TotalRate if rate > 0.0 => {
                Some(Duration::from_secs_f64((1.0 / rate).min(86_400.0)))
            }
            _ => None,
        };
        let next = match period {
            Some(p) => start + p.mul_f64(phase.clamp(0.0, 1.0)),
            None => start,
        };
        Self {
            period,
            next,
            left: quota,
            idle: mode == LoadMode::Idle,
        }
    }

    /// When the next message is due; `None` when the sender has nothing more
    /// to send (quota used up, or idle).
    pub fn due(&self) -> Option<Instant> {
        if self.idle || self.left == Some(0) {
            return None;
        }
        Some(self.next)
    }

    /// Whether every message of the quota was taken (never, without quota).
    pub fn exhausted(&self) -> bool {
        self.idle || self.left == Some(0)
    }

    /// Takes the next message: returns the instant its latency counts from:
    /// now in the closed loop; in the open loop its scheduled time, or now
    /// when it is late by no more than [`TIMER_SLACK`].
    pub fn take(&mut self, now: Instant) -> Instant {
        if let Some(left) = self.left.as_mut() {
            *left = left.saturating_sub(1);
        }
        match self.period {
            Some(p) => {
                let scheduled = self.next;
                self.next += p;
                if now.saturating_duration_since(scheduled) <= TIMER_SLACK {
                    now.max(scheduled)
                } else {
                    scheduled
                }
            }
            None => {
                self.next = now;
                now
            }
        }
    }

    /// Pushes the next send back to at least `at` (a server's Retry-After).
    /// In the open loop the schedule itself is kept, so the missed messages
    /// go out late and their latency shows it.
    pub fn hold_until(&mut self, at: Instant) {
        if self.period.is_none() {
            self.next = self.next.max(at);
        }
    }
}

/// The quota of sender `index` of `senders` when `total` messages are split
/// as evenly as possible.
pub fn share(total: u64, senders: usize, index: usize) -> u64 {
    let senders = senders.max(1) as u64;
    let index = index as u64;
    total / senders + u64::from(index < total % senders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        let total: u64 = (0..7).map(|i| share(100, 7, i)).sum();
        assert_eq!(total, 100);
        assert_eq!(share(5, 10, 4), 1);
        assert_eq!(share(5, 10, 5), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_keeps_its_schedule_and_quota() {
        let start = Instant::now();
        let mut p = Pace::new(LoadMode::Rate, 10.0, 0.5, start, Some(3));
        assert_eq!(p.due(), Some(start + Duration::from_millis(50)));
        // Late by a second: the scheduled times still advance by 100 ms.
        let late = start + Duration::from_secs(1);
        assert_eq!(p.take(late), start + Duration::from_millis(50));
        assert_eq!(p.take(late), start + Duration::from_millis(150));
        p.hold_until(late + Duration::from_secs(5));
        assert_eq!(p.due(), Some(start + Duration::from_millis(250)));
        // Late within the timer's slack: counted from the actual send.
        let slightly = start + Duration::from_millis(251);
        assert_eq!(p.take(slightly), slightly);
        assert!(p.exhausted());
        assert_eq!(p.due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_counts_from_now_and_honours_retry_after() {
        let start = Instant::now();
        let mut p = Pace::new(LoadMode::Closed, 0.0, 0.0, start, None);
        let now = start + Duration::from_millis(7);
        assert_eq!(p.take(now), now);
        p.hold_until(now + Duration::from_secs(1));
        assert_eq!(p.due(), Some(now + Duration::from_secs(1)));
        assert!(!p.exhausted());
        assert_eq!(Pace::new(LoadMode::Idle, 0.0, 0.0, start, None).due(), None);
    }
}

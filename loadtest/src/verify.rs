//! Loss verification: count every device's points back through the query
//! API and compare them with what the server acknowledged.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tributary_proto::v1 as pb;

use crate::engine::DeviceTally;
use crate::error::Error;
use crate::provision::Query;

/// Query calls in flight at once.
const VERIFY_CONCURRENCY: usize = 16;
/// Devices listed individually in a report.
const MAX_LISTED: usize = 20;

/// One device whose stored count differs from its acknowledged count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mismatch {
    /// Device id.
    pub device: String,
    /// Points sent.
    pub sent: u64,
    /// Points acknowledged.
    pub acked: u64,
    /// Points found in the store.
    pub stored: u64,
    /// Of them, acknowledged but not stored.
    pub acked_not_stored: u64,
    /// Stored but not acknowledged.
    pub stored_not_acked: u64,
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Devices that sent anything.
    pub devices: usize,
    /// Points sent.
    pub points_sent: u64,
    /// Points acknowledged.
    pub points_acked: u64,
    /// Points found in the store.
    pub points_stored: u64,
    /// Acknowledged but not stored: data loss. Must be 0.
    pub acked_not_stored: u64,
    /// Stored but never acknowledged (QoS 0, timeouts, answers lost on the
    /// way back): not loss, but the client could not know.
    pub stored_not_acked: u64,
    /// Sent but not stored (includes refused messages).
    pub sent_not_stored: u64,
    /// Whether the counts settled (nothing missing and no change between two
    /// rounds) before the timeout.
    pub settled: bool,
    /// Whether every unacknowledged message's timestamps were known, so
    /// that loss and unacknowledged data were told apart exactly (a device
    /// with more unacknowledged messages than are tracked is compared by
    /// count, where one lost and one unacknowledged point cancel out).
    pub exact: bool,
    /// Seconds spent waiting for the store.
    pub waited_s: f64,
    /// Devices with acknowledged points missing first, then devices with
    /// unacknowledged points stored; at most 20.
    pub mismatches: Vec<Mismatch>,
}

impl VerifyReport {
    /// True when no acknowledged point is missing.
    pub fn passed(&self) -> bool {
        self.acked_not_stored == 0
    }
}

/// The number of points of `device` stored in `[from, to]`; 0 when the
/// device does not exist.
async fn stored_points(mut q: Query, device: &str, from: i64, to: i64) -> Result<u64, Error> {
    let req = pb::AggregateRequest {
        target: Some(pb::Target {
            devices: Some(pb::target::Devices::Device(device.to_string())),
            ..Default::default()
        }),
        from_ns: from,
        to_ns: to.saturating_add(1),
        functions: vec![pb::AggregateFunction::Count as i32],
        ..Default::default()
    };
    match q.aggregate(req).await {
        Ok(r) => Ok(r
            .into_inner()
            .series
            .iter()
            .flat_map(|s| &s.buckets)
            .map(|b| b.count)
            .sum()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(0),
        Err(s) => Err(Error::Verify(format!(
            "counting {device}: {:?}: {}",
            s.code(),
            s.message()
        ))),
    }
}

/// What the store holds of one device: all its points in the run's range,
/// and those inside the ranges of its unacknowledged messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stored {
    total: u64,
    unacked: u64,
}

async fn count_device(q: Query, t: &DeviceTally) -> Result<Stored, Error> {
    let total = stored_points(q.clone(), &t.device, t.min_ts, t.max_ts).await?;
    let mut unacked = 0;
    if total > 0 {
        for &(first, last) in &t.unacked.ranges {
            unacked += stored_points(q.clone(), &t.device, first, last).await?;
        }
    }
    Ok(Stored { total, unacked })
}

/// One device's acknowledged-but-missing and stored-but-unacknowledged
/// points. Exact when every unacknowledged message's range is known; by
/// count otherwise.
fn compare(t: &DeviceTally, s: Stored) -> (u64, u64) {
    if t.unacked.overflow {
        (
            t.acked.saturating_sub(s.total),
            s.total.saturating_sub(t.acked),
        )
    } else {
        let stored_acked = s.total.saturating_sub(s.unacked);
        (t.acked.saturating_sub(stored_acked), s.unacked)
    }
}

/// Counts every device's points until nothing acknowledged is missing and
/// the counts stop changing, or until `timeout`; `progress` is told each
/// round's missing count.
pub async fn verify(
    query: &Query,
    tallies: &[DeviceTally],
    timeout: Duration,
    progress: impl Fn(u64),
) -> Result<VerifyReport, Error> {
    let started = Instant::now();
    let deadline = started + timeout;
    let active: Vec<&DeviceTally> = tallies.iter().filter(|t| t.sent > 0).collect();
    let mut previous: Option<u64> = None;
    loop {
        let stored: Vec<Stored> = futures::stream::iter(active.iter())
            .map(|t| count_device(query.clone(), t))
            .buffered(VERIFY_CONCURRENCY)
            .try_collect()
            .await?;
        let total: u64 = stored.iter().map(|s| s.total).sum();
        let missing: u64 = active
            .iter()
            .zip(&stored)
            .map(|(t, s)| compare(t, *s).0)
            .sum();
        progress(missing);
        let settled = missing == 0 && previous == Some(total);
        if settled || Instant::now() >= deadline {
            return Ok(report(&active, &stored, settled, started.elapsed()));
        }
        previous = Some(total);
        tokio::time::sleep_until((Instant::now() + Duration::from_millis(500)).min(deadline)).await;
    }
}

fn report(
    active: &[&DeviceTally],
    stored: &[Stored],
    settled: bool,
    waited: Duration,
) -> VerifyReport {
    let mut r = VerifyReport {
        devices: active.len(),
        settled,
        exact: true,
        waited_s: waited.as_secs_f64(),
        ..VerifyReport::default()
    };
    let mut lost = Vec::new();
    let mut extra = Vec::new();
    for (t, s) in active.iter().zip(stored) {
        let (missing, unacked) = compare(t, *s);
        r.exact &= !t.unacked.overflow;
        r.points_sent += t.sent;
        r.points_acked += t.acked;
        r.points_stored += s.total;
        r.acked_not_stored += missing;
        r.stored_not_acked += unacked;
        r.sent_not_stored += t.sent.saturating_sub(s.total);
        let m = Mismatch {
            device: t.device.clone(),
            sent: t.sent,
            acked: t.acked,
            stored: s.total,
            acked_not_stored: missing,
            stored_not_acked: unacked,
        };
        if missing > 0 {
            lost.push(m);
        } else if unacked > 0 {
            extra.push(m);
        }
    }
    lost.sort_by_key(|m| std::cmp::Reverse(m.acked_not_stored));
    r.mismatches = lost.into_iter().chain(extra).take(MAX_LISTED).collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::UnackedRanges;

    fn tally(device: &str, sent: u64, acked: u64, unacked: &[(i64, i64)]) -> DeviceTally {
        let mut u = UnackedRanges::default();
        for &(a, b) in unacked {
            u.push(a, b);
        }
        DeviceTally {
            device: device.into(),
            sent,
            acked,
            min_ts: 1,
            max_ts: 100,
            unacked: u,
        }
    }

    #[test]
    fn report_separates_loss_from_unacknowledged_data() {
        // a: all fine. b: 2 points of an unacknowledged message stored. c: 3
        // acknowledged points missing. d: both at once, which counts alone
        // would cancel out.
        let t = [
            tally("a", 10, 10, &[]),
            tally("b", 10, 8, &[(5, 5)]),
            tally("c", 10, 10, &[]),
            tally("d", 10, 8, &[(7, 7)]),
        ];
        let active: Vec<&DeviceTally> = t.iter().collect();
        let stored = [
            Stored {
                total: 10,
                unacked: 0,
            },
            Stored {
                total: 10,
                unacked: 2,
            },
            Stored {
                total: 7,
                unacked: 0,
            },
            Stored {
                total: 8,
                unacked: 2,
            },
        ];
        let r = report(&active, &stored, false, Duration::from_secs(1));
        assert_eq!(r.points_acked, 36);
        assert_eq!(r.points_stored, 35);
        assert_eq!(r.acked_not_stored, 5, "c lost 3, d lost 2");
        assert_eq!(r.stored_not_acked, 4, "b and d have 2 each");
        assert!(r.exact);
        assert!(!r.passed());
        let order: Vec<&str> = r.mismatches.iter().map(|m| m.device.as_str()).collect();
        assert_eq!(order, ["c", "d", "b"]);
    }

    #[test]
    fn without_ranges_it_falls_back_to_counts() {
        let mut t = tally("d", 10, 8, &[]);
        t.unacked.overflow = true;
        let r = report(
            &[&t],
            &[Stored {
                total: 8,
                unacked: 0,
            }],
            true,
            Duration::ZERO,
        );
        assert_eq!((r.acked_not_stored, r.stored_not_acked), (0, 0));
        assert!(!r.exact);
    }
}

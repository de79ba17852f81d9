//! The senders of one process: which devices it simulates, and how their
//! outcomes come back.

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::coap::CoapSettings;
use crate::error::Error;
use crate::http::HttpSettings;
use crate::mqtt::MqttSettings;
use crate::pace::{Pace, share};
use crate::payload::{DeviceGen, Shape};
use crate::scenario::{HttpFormat, LoadMode, Scenario, Transport};
use crate::stats::Stats;

/// A device's id and the token it authenticates with (empty: none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Device id.
    pub device: String,
    /// Access token; empty for servers without authentication.
    pub token: String,
}

/// What one run needs beyond its scenario: who the devices are and how they
/// authenticate. Worker processes get it as a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The effective scenario.
    pub scenario: Scenario,
    /// Identifies the run; part of every device id.
    pub run_id: String,
    /// One per device.
    pub credentials: Vec<Credential>,
    /// The tenant ingest token for line protocol (Tributary).
    pub ingest_token: Option<String>,
}

/// The most timestamp ranges of unacknowledged messages kept per device;
/// beyond it, verification of that device falls back to comparing counts.
pub const MAX_UNACKED_RANGES: usize = 1_000;

/// Timestamp ranges `[first, last]` of a device's messages that were sent
/// but not acknowledged (refused, timed out, lost with their connection).
///
/// Each message of a device covers timestamps no other message of the
/// device has, so counting the store inside these ranges separates "stored
/// but never acknowledged" from "acknowledged but lost" exactly, even when a
/// device has both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnackedRanges {
    /// The ranges, at most [`MAX_UNACKED_RANGES`].
    pub ranges: Vec<(i64, i64)>,
    /// More messages went unacknowledged than ranges are kept.
    pub overflow: bool,
}

impl UnackedRanges {
    /// Records one unacknowledged message (or a device's part of a batch).
    pub fn push(&mut self, first: i64, last: i64) {
        if self.ranges.len() < MAX_UNACKED_RANGES {
            self.ranges.push((first, last));
        } else {
            self.overflow = true;
        }
    }
}

/// One device's outcome, in points: what verification compares with the
/// store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTally {
    /// Device id.
    pub device: String,
    /// Points sent.
    pub sent: u64,
    /// Points acknowledged.
    pub acked: u64,
    /// Smallest timestamp sent (0 when nothing was sent).
    pub min_ts: i64,
    /// Largest timestamp sent (0 when nothing was sent).
    pub max_ts: i64,
    /// Messages sent but not acknowledged (empty for MQTT QoS 0, which has
    /// no acknowledgements).
    #[serde(default)]
    pub unacked: UnackedRanges,
}

impl DeviceTally {
    /// The tally of a generator that sent `sent` and got `acked` acknowledged.
    pub fn of(dev: &DeviceGen, sent: u64, acked: u64, unacked: UnackedRanges) -> Self {
        let (min_ts, max_ts) = if dev.min_ts == i64::MAX {
            (0, 0)
        } else {
            (dev.min_ts, dev.max_ts())
        };
        Self {
            device: dev.id.clone(),
            sent,
            acked,
            min_ts,
            max_ts,
            unacked,
        }
    }
}

/// What every sender of a process shares.
#[derive(Debug)]
pub struct SenderCtx {
    /// Where records go.
    pub stats: Arc<Stats>,
    /// The message shape.
    pub shape: Shape,
    /// Pacing mode.
    pub mode: LoadMode,
    /// Messages per second of one sender (open loop).
    pub rate_per_sender: f64,
    /// Messages unanswered per sender.
    pub in_flight: u32,
    /// When the load started.
    pub start: Instant,
    /// New connections per second of this process (0: all at once).
    pub ramp: f64,
    /// Source addresses, round-robin.
    pub source_addrs: Vec<IpAddr>,
    /// How long a message may stay unanswered.
    pub ack_timeout: std::time::Duration,
    /// Idle mode: how long a connection is held before its device is done.
    pub hold: Option<std::time::Duration>,
}

impl SenderCtx {
    /// The schedule of sender `index` (of the whole run) with `quota`.
    pub fn pace(&self, index: usize, quota: Option<u64>, connected_at: Instant) -> Pace {
        // A fixed, well-spread phase per sender (golden-ratio sequence).
        let phase = (index as f64 * 0.618_033_988_749_895).fract();
        Pace::new(
            self.mode,
            self.rate_per_sender,
            phase,
            connected_at.max(self.start),
            quota,
        )
    }

    /// When the `local`-th connection of this process may open.
    pub fn connect_at(&self, local: usize) -> Instant {
        if self.ramp > 0.0 {
            self.start + std::time::Duration::from_secs_f64(local as f64 / self.ramp)
        } else {
            self.start
        }
    }

    /// The source address of the `local`-th connection, if any are set.
    pub fn source(&self, local: usize) -> Option<IpAddr> {
        (!self.source_addrs.is_empty()).then(|| self.source_addrs[local % self.source_addrs.len()])
    }
}

/// The part of a run one process carries: worker `index` of `count` takes
/// the senders whose number is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This worker.
    pub index: usize,
    /// All workers.
    pub count: usize,
}

/// Runs this shard's senders until they are done (quota) or `stop` turns
/// true; returns one tally per device of the shard.
pub async fn run_shard(
    plan: &Plan,
    shard: Shard,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<DeviceTally>, Error> {
    let sc = &plan.scenario;
    let senders = sc.senders();
    let workers = shard.count.max(1);
    let rate_per_sender = match sc.load.mode {
        LoadMode::TotalRate => sc.load.rate / senders as f64,
        _ => sc.load.rate,
    };
    let ctx = Arc::new(SenderCtx {
        stats,
        shape: Shape::new(&sc.payload),
        mode: sc.load.mode,
        rate_per_sender,
        in_flight: sc.load.in_flight,
        start: Instant::now(),
        ramp: sc.load.ramp / workers as f64,
        source_addrs: sc.target.source_addrs.clone(),
        ack_timeout: sc.load.ack_timeout.0,
        hold: sc.load.hold.map(|h| h.0),
    });
    let quota = |sender: usize| sc.load.messages.map(|m| share(m, senders, sender));
    let mine: Vec<usize> = (0..senders)
        .filter(|i| i % workers == shard.index)
        .collect();
    let mut tasks = JoinSet::new();
    match &sc.transport {
        Transport::Mqtt(m) => {
            let settings = Arc::new(MqttSettings::new(sc, m).await?);
            for (local, &i) in mine.iter().enumerate() {
                let Some(cred) = plan.credentials.get(i).cloned() else {
                    continue;
                };
                let (ctx, settings, stop) = (ctx.clone(), settings.clone(), stop.clone());
                let q = quota(i);
                tasks.spawn(async move {
                    vec![crate::mqtt::run_device(ctx, settings, cred, i, local, q, stop).await]
                });
            }
        }
        Transport::Coap(c) => {
            let settings = Arc::new(CoapSettings::new(sc, c).await?);
            for (local, &i) in mine.iter().enumerate() {
                let Some(cred) = plan.credentials.get(i).cloned() else {
                    continue;
                };
                let (ctx, settings, stop) = (ctx.clone(), settings.clone(), stop.clone());
                let q = quota(i);
                tasks.spawn(async move {
                    vec![crate::coap::run_device(ctx, settings, cred, i, local, q, stop).await]
                });
            }
        }
        Transport::Http(h) => {
            let settings = Arc::new(HttpSettings::new(sc, h, plan.ingest_token.clone())?);
            if h.format == HttpFormat::LineProtocol {
                for (local, &c) in mine.iter().enumerate() {
                    let devices: Vec<String> = plan
                        .credentials
                        .iter()
                        .skip(c)
                        .step_by(h.clients)
                        .map(|cr| cr.device.clone())
                        .collect();
                    let (ctx, settings, stop) = (ctx.clone(), settings.clone(), stop.clone());
                    let q = quota(c);
                    tasks.spawn(async move {
                        crate::http::run_lp_client(ctx, settings, devices, c, local, q, stop).await
                    });
                }
            } else {
                for (local, &i) in mine.iter().enumerate() {
                    let Some(cred) = plan.credentials.get(i).cloned() else {
                        continue;
                    };
                    let (ctx, settings, stop) = (ctx.clone(), settings.clone(), stop.clone());
                    let q = quota(i);
                    tasks.spawn(async move {
                        vec![crate::http::run_device(ctx, settings, cred, i, local, q, stop).await]
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(t) => out.extend(t),
            Err(e) => {
                return Err(Error::Worker {
                    index: shard.index,
                    message: format!("a sender task failed: {e}"),
                });
            }
        }
    }
    Ok(out)
}

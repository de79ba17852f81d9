//! The live feed: points the processor has stored, fanned out to `Subscribe`
//! streams. Bounded: a subscriber that falls behind loses the oldest batches
//! and is told how many it lost, instead of making anything wait.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::Point;

/// Points of one device, as stored.
#[derive(Debug, Clone)]
pub struct LiveBatch {
    pub tenant: String,
    pub device: String,
    pub points: Vec<Point>,
}

/// An in-process fan-out of stored points.
#[derive(Debug, Clone)]
pub struct LiveHub {
    tx: broadcast::Sender<Arc<LiveBatch>>,
}

impl LiveHub {
    /// `capacity` batches are kept for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        Self { tx: broadcast::channel(capacity.max(1)).0 }
    }

    /// Publishes a batch. Cheap when nobody listens.
    pub fn publish(&self, batch: LiveBatch) {
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(batch));
        }
    }

    /// Whether anyone listens; lets publishers skip building batches.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveBatch>> {
        self.tx.subscribe()
    }
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new(4096)
    }
}

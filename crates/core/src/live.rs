//! The live feed: points the processor has stored, fanned out to `Subscribe`
//! streams. Bounded: a subscriber that falls behind loses the oldest batches
//! and is told how many it lost, instead of making anything wait.

use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::broadcast;

use crate::model::Point;

/// Points of one device, as stored.
#[derive(Debug, Clone)]
pub struct LiveBatch {
    pub tenant: String,
    pub device: String,
    pub points: Vec<Point>,
}

/// An in-process fan-out of stored points. Clones share one feed.
#[derive(Debug, Clone)]
pub struct LiveHub {
    /// `None` once closed: receivers then see the end of the feed.
    tx: Arc<RwLock<Option<broadcast::Sender<Arc<LiveBatch>>>>>,
}

impl LiveHub {
    /// `capacity` batches are kept for slow subscribers.
    pub fn new(capacity: usize) -> Self {
        Self {
            tx: Arc::new(RwLock::new(Some(broadcast::channel(capacity.max(1)).0))),
        }
    }

    /// Publishes a batch. Cheap when nobody listens; a no-op once closed.
    pub fn publish(&self, batch: LiveBatch) {
        let guard = self.tx.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = guard.as_ref().filter(|tx| tx.receiver_count() > 0) {
            let _ = tx.send(Arc::new(batch));
        }
    }

    /// Whether anyone listens; lets publishers skip building batches.
    pub fn has_subscribers(&self) -> bool {
        let guard = self.tx.read().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().is_some_and(|tx| tx.receiver_count() > 0)
    }

    /// A receiver of every batch published from now on. After [`close`],
    /// receivers drain what was sent and then see `RecvError::Closed`.
    ///
    /// [`close`]: LiveHub::close
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveBatch>> {
        let guard = self.tx.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// Ends the feed for every subscriber, so live streams finish and a
    /// server can shut down gracefully.
    pub fn close(&self) {
        self.tx
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new(4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> LiveBatch {
        LiveBatch {
            tenant: "t".into(),
            device: "d".into(),
            points: vec![],
        }
    }

    #[tokio::test]
    async fn close_ends_every_subscription() {
        let hub = LiveHub::new(8);
        assert!(!hub.has_subscribers());
        let mut rx = hub.subscribe();
        assert!(hub.has_subscribers());
        hub.clone().publish(batch());
        hub.close();
        assert_eq!(
            rx.recv().await.unwrap().device,
            "d",
            "sent batches are still delivered"
        );
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        let mut late = hub.subscribe();
        assert!(matches!(
            late.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        hub.publish(batch());
    }
}

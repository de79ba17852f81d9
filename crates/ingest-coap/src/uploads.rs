//! Block-wise uploads (RFC 7959, Block1): a body larger than one datagram
//! arrives as numbered blocks, each its own confirmable request, and is put
//! back together here before it is parsed and appended as one request.
//!
//! Bounded everywhere: one upload in progress per endpoint (a new block 0
//! starts over), at most `max_upload_bytes` per body, a budget of bytes
//! held for all uploads and a share of it per tenant, and an upload that
//! sees no block for `idle` is dropped. Blocks must come in order; a gap is
//! 4.08 Request Entity Incomplete, and the client starts again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tributary_coap_codec::Block;

/// The bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UploadBounds {
    pub max_upload_bytes: usize,
    pub max_total_bytes: usize,
    pub max_tenant_bytes: usize,
    pub idle: Duration,
}

/// What a block did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Taken; ask for the next (2.31 Continue).
    Continue,
    /// The last block: the whole body.
    Complete(Vec<u8>),
    /// Out of order, or no upload to continue: 4.08.
    Incomplete,
    /// Over `max_upload_bytes`: 4.13.
    TooLarge,
    /// The byte budget, the server's or the tenant's, is spent: 5.03.
    Busy,
    /// A block other than the last whose size is not the block size: 4.00.
    BadBlock,
}

#[derive(Debug)]
struct Upload {
    tenant: String,
    body: Vec<u8>,
    last_seen: Instant,
}

/// Uploads in progress.
#[derive(Debug)]
pub(crate) struct Uploads {
    bounds: UploadBounds,
    by_peer: HashMap<SocketAddr, Upload>,
    total: usize,
    tenants: HashMap<String, usize>,
}

impl Uploads {
    pub(crate) fn new(bounds: UploadBounds) -> Self {
        Uploads {
            bounds,
            by_peer: HashMap::new(),
            total: 0,
            tenants: HashMap::new(),
        }
    }

    /// Takes block `block` of `peer`'s upload for `tenant`, with `payload`.
    pub(crate) fn add(
        &mut self,
        peer: SocketAddr,
        tenant: &str,
        block: Block,
        payload: &[u8],
        now: Instant,
    ) -> Step {
        self.expire(now);
        if block.more && payload.len() != block.size() {
            self.drop_upload(peer);
            return Step::BadBlock;
        }
        if payload.len() > block.size() {
            self.drop_upload(peer);
            return Step::BadBlock;
        }
        if block.num == 0 {
            self.drop_upload(peer);
            self.by_peer.insert(
                peer,
                Upload {
                    tenant: tenant.to_owned(),
                    body: Vec::new(),
                    last_seen: now,
                },
            );
        }
        let Some(upload) = self.by_peer.get(&peer) else {
            return Step::Incomplete;
        };
        if upload.tenant != tenant || upload.body.len() != block.offset() {
            self.drop_upload(peer);
            return Step::Incomplete;
        }
        let grown = upload.body.len() + payload.len();
        if grown > self.bounds.max_upload_bytes {
            self.drop_upload(peer);
            return Step::TooLarge;
        }
        let tenant_held = self.tenants.get(tenant).copied().unwrap_or(0);
        if self.total + payload.len() > self.bounds.max_total_bytes
            || tenant_held + payload.len() > self.bounds.max_tenant_bytes
        {
            self.drop_upload(peer);
            return Step::Busy;
        }
        self.total += payload.len();
        *self.tenants.entry(tenant.to_owned()).or_insert(0) += payload.len();
        let Some(upload) = self.by_peer.get_mut(&peer) else {
            return Step::Incomplete;
        };
        upload.body.extend_from_slice(payload);
        upload.last_seen = now;
        if block.more {
            return Step::Continue;
        }
        match self.take(peer) {
            Some(body) => Step::Complete(body),
            None => Step::Incomplete,
        }
    }

    /// Bytes held, for the gauge.
    pub(crate) fn held(&self) -> usize {
        self.total
    }

    fn take(&mut self, peer: SocketAddr) -> Option<Vec<u8>> {
        let upload = self.by_peer.remove(&peer)?;
        self.release(&upload.tenant, upload.body.len());
        Some(upload.body)
    }

    fn drop_upload(&mut self, peer: SocketAddr) {
        let _ = self.take(peer);
    }

    fn release(&mut self, tenant: &str, bytes: usize) {
        self.total -= bytes;
        if let Some(n) = self.tenants.get_mut(tenant) {
            *n -= bytes;
            if *n == 0 {
                self.tenants.remove(tenant);
            }
        }
    }

    /// Drops uploads idle for longer than the bound. A scan: uploads are
    /// few (one per endpoint, within the byte budget).
    fn expire(&mut self, now: Instant) {
        let idle = self.bounds.idle;
        let stale: Vec<SocketAddr> = self
            .by_peer
            .iter()
            .filter(|(_, u)| now.duration_since(u.last_seen) > idle)
            .map(|(p, _)| *p)
            .collect();
        for peer in stale {
            self.drop_upload(peer);
        }
    }
}

/// The uploads behind a lock, with the gauge of bytes held.
#[derive(Debug)]
pub(crate) struct SharedUploads {
    uploads: std::sync::Mutex<Uploads>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl SharedUploads {
    pub(crate) fn new(
        bounds: UploadBounds,
        gauge: prometheus_client::metrics::gauge::Gauge,
    ) -> Self {
        SharedUploads {
            uploads: std::sync::Mutex::new(Uploads::new(bounds)),
            gauge,
        }
    }

    /// [`Uploads::add`], now. The lock is held for a copy of at most one
    /// block (1,024 bytes).
    pub(crate) fn add(&self, peer: SocketAddr, tenant: &str, block: Block, payload: &[u8]) -> Step {
        let mut u = self
            .uploads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let step = u.add(peer, tenant, block, payload, Instant::now());
        self.gauge.set(u.held() as i64);
        step
    }

    pub(crate) fn max_upload_bytes(&self) -> usize {
        self.uploads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .bounds
            .max_upload_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> UploadBounds {
        UploadBounds {
            max_upload_bytes: 64,
            max_total_bytes: 80,
            max_tenant_bytes: 48,
            idle: Duration::from_secs(10),
        }
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn block(num: u32, more: bool) -> Block {
        Block::new(num, more, 16).unwrap()
    }

    #[test]
    fn blocks_in_order_make_the_body() {
        let mut u = Uploads::new(bounds());
        let t = Instant::now();
        assert_eq!(
            u.add(peer(1), "a", block(0, true), &[1; 16], t),
            Step::Continue
        );
        assert_eq!(
            u.add(peer(1), "a", block(1, true), &[2; 16], t),
            Step::Continue
        );
        let Step::Complete(body) = u.add(peer(1), "a", block(2, false), &[3; 5], t) else {
            panic!("complete")
        };
        assert_eq!(body.len(), 37);
        assert_eq!(&body[32..], &[3; 5]);
        assert_eq!(u.held(), 0, "nothing held after the last block");
    }

    #[test]
    fn gaps_sizes_and_budgets_are_refused_and_free_what_they_held() {
        let mut u = Uploads::new(bounds());
        let t = Instant::now();
        // A gap.
        assert_eq!(
            u.add(peer(1), "a", block(0, true), &[0; 16], t),
            Step::Continue
        );
        assert_eq!(
            u.add(peer(1), "a", block(2, true), &[0; 16], t),
            Step::Incomplete
        );
        assert_eq!(u.held(), 0);
        // No block 0.
        assert_eq!(
            u.add(peer(1), "a", block(1, false), &[0; 4], t),
            Step::Incomplete
        );
        // A middle block of the wrong size.
        assert_eq!(
            u.add(peer(1), "a", block(0, true), &[0; 15], t),
            Step::BadBlock
        );
        // Over the body limit (64): the fifth block of 16.
        let mut roomy = Uploads::new(UploadBounds {
            max_total_bytes: 1000,
            max_tenant_bytes: 1000,
            ..bounds()
        });
        for n in 0..4 {
            assert_eq!(
                roomy.add(peer(1), "a", block(n, true), &[0; 16], t),
                Step::Continue
            );
        }
        assert_eq!(
            roomy.add(peer(1), "a", block(4, true), &[0; 16], t),
            Step::TooLarge
        );
        assert_eq!(roomy.held(), 0);
        // The tenant's share (48): a's fourth block waits; b is not held back.
        for n in 0..3 {
            assert_eq!(
                u.add(peer(2), "a", block(n, true), &[0; 16], t),
                Step::Continue
            );
        }
        assert_eq!(u.add(peer(3), "a", block(0, true), &[0; 16], t), Step::Busy);
        assert_eq!(
            u.add(peer(4), "b", block(0, true), &[0; 16], t),
            Step::Continue
        );
        // The total (80): 48 + 16 held; b's second takes it to 80, a third
        // would pass it.
        assert_eq!(
            u.add(peer(4), "b", block(1, true), &[0; 16], t),
            Step::Continue
        );
        assert_eq!(u.add(peer(5), "c", block(0, true), &[0; 16], t), Step::Busy);
        // Idle uploads go, and their bytes with them.
        let later = t + Duration::from_secs(11);
        assert_eq!(
            u.add(peer(5), "c", block(0, true), &[0; 16], later),
            Step::Continue
        );
        assert_eq!(u.held(), 16);
    }
}

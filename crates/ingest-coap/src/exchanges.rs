//! The exchanges a server remembers: each request it took, by endpoint and
//! message id, for EXCHANGE_LIFETIME, so that a retransmission is answered
//! with the same response and never processed twice (RFC 7252 section
//! 4.5).
//!
//! Only what must be remembered is kept that long: a request that was
//! refused appended nothing, so it is forgotten once answered (a
//! retransmission is refused again, just the same). What is kept is
//! bounded: the exchanges in all and per tenant, the exchanges being
//! processed per endpoint (NSTART), and the endpoints. Work under the lock
//! is a hash-map step; nothing a client sizes is done while holding it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The limits of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// How long an exchange is remembered.
    pub lifetime: Duration,
    /// Exchanges remembered in all.
    pub max_exchanges: usize,
    /// Exchanges one tenant's devices may have remembered.
    pub max_per_tenant: u32,
    /// Requests of one endpoint being processed at once.
    pub max_pending_per_peer: u32,
    /// Endpoints with exchanges remembered.
    pub max_peers: usize,
    /// Of them, from one IP address (ports are cheap to a flooder).
    pub max_peers_per_ip: u32,
}

type Key = (SocketAddr, u16);

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Being processed; `acked` once an empty ACK told the client that the
    /// response will come separately.
    Pending { acked: bool },
    /// Answered: the datagram to send again for a retransmission.
    Done(Box<[u8]>),
}

/// What to do with a request that arrived.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// New: process it (the table holds it as pending).
    New,
    /// A retransmission of a request in hand.
    Duplicate(State),
    /// Over a bound: refuse it, with the bound's name.
    Refused(&'static str),
}

#[derive(Debug)]
struct Entry {
    state: State,
    /// Tells this entry from an earlier one of the same key in the expiry
    /// queue.
    seq: u64,
    /// The tenant it counts against, once its device is known.
    tenant: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Peer {
    /// Exchanges remembered.
    exchanges: u32,
    /// Of them, being processed.
    pending: u32,
}

/// The table.
#[derive(Debug)]
pub(crate) struct Exchanges {
    bounds: Bounds,
    entries: HashMap<Key, Entry>,
    peers: HashMap<SocketAddr, Peer>,
    /// Endpoints per IP address.
    ips: HashMap<IpAddr, u32>,
    tenants: HashMap<Arc<str>, u32>,
    /// Keys by when they expire (the lifetime is one for all, so insertion
    /// order is expiry order), with the entry's `seq`.
    expiry: VecDeque<(Instant, Key, u64)>,
    next_seq: u64,
}

impl Exchanges {
    pub(crate) fn new(bounds: Bounds) -> Self {
        Exchanges {
            bounds,
            entries: HashMap::new(),
            peers: HashMap::new(),
            ips: HashMap::new(),
            tenants: HashMap::new(),
            expiry: VecDeque::new(),
            next_seq: 0,
        }
    }

    /// Takes a request from `peer` with `message_id`, at `now`.
    pub(crate) fn admit(&mut self, peer: SocketAddr, message_id: u16, now: Instant) -> Admission {
        self.expire(now);
        let key = (peer, message_id);
        if let Some(entry) = self.entries.get(&key) {
            return Admission::Duplicate(entry.state.clone());
        }
        if self.entries.len() >= self.bounds.max_exchanges {
            return Admission::Refused("exchanges");
        }
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.bounds.max_peers {
                return Admission::Refused("peers");
            }
            let from_ip = self.ips.entry(peer.ip()).or_insert(0);
            if *from_ip >= self.bounds.max_peers_per_ip {
                return Admission::Refused("peers_per_ip");
            }
            *from_ip += 1;
        }
        let p = self.peers.entry(peer).or_default();
        if p.pending >= self.bounds.max_pending_per_peer {
            return Admission::Refused("pending_per_peer");
        }
        p.pending += 1;
        p.exchanges += 1;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            key,
            Entry {
                state: State::Pending { acked: false },
                seq,
                tenant: None,
            },
        );
        self.expiry
            .push_back((now + self.bounds.lifetime, key, seq));
        Admission::New
    }

    /// Counts a pending request against its device's tenant. False when the
    /// tenant has its share of the table already: the request is to be
    /// refused (and forgotten).
    pub(crate) fn claim(&mut self, peer: SocketAddr, message_id: u16, tenant: &str) -> bool {
        let Some(entry) = self.entries.get_mut(&(peer, message_id)) else {
            return false;
        };
        if entry.tenant.is_some() {
            return true;
        }
        let held = self.tenants.get(tenant).copied().unwrap_or(0);
        if held >= self.bounds.max_per_tenant {
            return false;
        }
        let name: Arc<str> = match self.tenants.get_key_value(tenant) {
            Some((name, _)) => Arc::clone(name),
            None => Arc::from(tenant),
        };
        self.tenants.insert(Arc::clone(&name), held + 1);
        entry.tenant = Some(name);
        true
    }

    /// Notes that the client got an empty ACK for a pending request.
    pub(crate) fn acked(&mut self, peer: SocketAddr, message_id: u16) {
        if let Some(Entry {
            state: State::Pending { acked },
            ..
        }) = self.entries.get_mut(&(peer, message_id))
        {
            *acked = true;
        }
    }

    /// Records the answer to a pending request, for retransmissions.
    pub(crate) fn done(&mut self, peer: SocketAddr, message_id: u16, answer: Box<[u8]>) {
        let Some(entry) = self.entries.get_mut(&(peer, message_id)) else {
            return;
        };
        if matches!(entry.state, State::Pending { .. }) {
            entry.state = State::Done(answer);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.pending = p.pending.saturating_sub(1);
            }
        }
    }

    /// Forgets a request that was refused: nothing of it was appended, so
    /// a retransmission may be taken as new.
    pub(crate) fn forget(&mut self, peer: SocketAddr, message_id: u16) {
        if let Some(entry) = self.entries.remove(&(peer, message_id)) {
            self.release(peer, entry);
        }
    }

    /// Exchanges remembered, and endpoints they belong to.
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.entries.len(), self.peers.len())
    }

    fn release(&mut self, peer: SocketAddr, entry: Entry) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.exchanges = p.exchanges.saturating_sub(1);
            if matches!(entry.state, State::Pending { .. }) {
                p.pending = p.pending.saturating_sub(1);
            }
            if p.exchanges == 0 {
                self.peers.remove(&peer);
                if let Some(n) = self.ips.get_mut(&peer.ip()) {
                    *n -= 1;
                    if *n == 0 {
                        self.ips.remove(&peer.ip());
                    }
                }
            }
        }
        if let Some(tenant) = entry.tenant
            && let Some(n) = self.tenants.get_mut(&tenant)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tenants.remove(&tenant);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key, seq)) = self.expiry.front() {
            if at > now {
                break;
            }
            self.expiry.pop_front();
            if self.entries.get(&key).is_some_and(|e| e.seq == seq)
                && let Some(entry) = self.entries.remove(&key)
            {
                self.release(key.0, entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            lifetime: Duration::from_secs(10),
            max_exchanges: 5,
            max_per_tenant: 2,
            max_pending_per_peer: 2,
            max_peers: 2,
            max_peers_per_ip: 2,
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_retransmission_gets_the_same_answer_until_the_lifetime_ends() {
        let mut x = Exchanges::new(bounds());
        let t0 = Instant::now();
        assert_eq!(x.admit(addr(1), 7, t0), Admission::New);
        assert_eq!(
            x.admit(addr(1), 7, t0),
            Admission::Duplicate(State::Pending { acked: false })
        );
        x.acked(addr(1), 7);
        assert_eq!(
            x.admit(addr(1), 7, t0),
            Admission::Duplicate(State::Pending { acked: true })
        );
        x.done(addr(1), 7, Box::new([1, 2, 3]));
        assert_eq!(
            x.admit(addr(1), 7, t0 + Duration::from_secs(9)),
            Admission::Duplicate(State::Done(Box::new([1, 2, 3])))
        );
        // Another endpoint's message id 7 is another exchange.
        assert_eq!(x.admit(addr(2), 7, t0), Admission::New);
        // After the lifetime, the id is new again, and the table is empty.
        let later = t0 + Duration::from_secs(11);
        x.done(addr(2), 7, Box::new([]));
        assert_eq!(x.admit(addr(1), 7, later), Admission::New);
        assert_eq!(x.len(), (1, 1));
    }

    #[test]
    fn every_bound_holds_and_frees_up() {
        let mut x = Exchanges::new(bounds());
        let t0 = Instant::now();
        assert_eq!(x.admit(addr(1), 1, t0), Admission::New);
        assert_eq!(x.admit(addr(1), 2, t0), Admission::New);
        assert_eq!(
            x.admit(addr(1), 3, t0),
            Admission::Refused("pending_per_peer")
        );
        x.done(addr(1), 1, Box::new([]));
        assert_eq!(
            x.admit(addr(1), 3, t0),
            Admission::New,
            "one finished, one more"
        );
        assert_eq!(x.admit(addr(2), 1, t0), Admission::New);
        assert_eq!(x.admit(addr(3), 1, t0), Admission::Refused("peers"));
        assert_eq!(x.admit(addr(2), 2, t0), Admission::New);
        assert_eq!(x.admit(addr(2), 3, t0), Admission::Refused("exchanges"));
        // Everything expires, pending or not, and the counts with it.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(x.admit(addr(3), 1, later), Admission::New);
        assert_eq!(x.len(), (1, 1));
    }

    #[test]
    fn one_address_holds_at_most_its_share_of_endpoints() {
        let mut x = Exchanges::new(Bounds {
            max_peers: 10,
            max_peers_per_ip: 2,
            ..bounds()
        });
        let t0 = Instant::now();
        let other = SocketAddr::from(([10, 0, 0, 1], 5683));
        assert_eq!(x.admit(addr(1), 1, t0), Admission::New);
        assert_eq!(x.admit(addr(2), 1, t0), Admission::New);
        assert_eq!(x.admit(addr(3), 1, t0), Admission::Refused("peers_per_ip"));
        assert_eq!(
            x.admit(addr(1), 2, t0),
            Admission::New,
            "a known endpoint goes on"
        );
        assert_eq!(
            x.admit(other, 1, t0),
            Admission::New,
            "another address is not held back"
        );
        // An endpoint whose exchanges are gone frees its place.
        x.forget(addr(2), 1);
        assert_eq!(x.admit(addr(3), 1, t0), Admission::New);
    }

    #[test]
    fn refused_requests_are_forgotten_and_tenants_hold_a_share() {
        let mut x = Exchanges::new(bounds());
        let t0 = Instant::now();
        assert_eq!(x.admit(addr(1), 1, t0), Admission::New);
        x.forget(addr(1), 1);
        assert_eq!(x.len(), (0, 0), "a refused request leaves nothing behind");
        // Taken as new again, and its old expiry does not end the new one.
        assert_eq!(
            x.admit(addr(1), 1, t0 + Duration::from_secs(5)),
            Admission::New
        );
        assert!(x.claim(addr(1), 1, "acme"));
        x.done(addr(1), 1, Box::new([9]));
        assert_eq!(
            x.admit(addr(1), 1, t0 + Duration::from_secs(12)),
            Admission::Duplicate(State::Done(Box::new([9]))),
            "remembered for its own lifetime"
        );
        // A tenant holds at most its share; others are not held back.
        assert_eq!(x.admit(addr(1), 2, t0), Admission::New);
        assert!(x.claim(addr(1), 2, "acme"));
        assert_eq!(x.admit(addr(2), 1, t0), Admission::New);
        assert!(!x.claim(addr(2), 1, "acme"), "acme has 2 already");
        x.forget(addr(2), 1);
        assert_eq!(x.admit(addr(2), 1, t0), Admission::New);
        assert!(x.claim(addr(2), 1, "globex"));
        assert!(x.claim(addr(2), 1, "globex"), "claiming twice counts once");
        // Expiry gives the share back.
        let later = t0 + Duration::from_secs(16);
        assert_eq!(x.admit(addr(2), 9, later), Admission::New);
        assert!(x.claim(addr(2), 9, "acme"));
    }
}

//! The exchanges a server remembers: each request it took, by endpoint and
//! message id, for EXCHANGE_LIFETIME, so that a retransmission is answered
//! with the same response and never processed twice (RFC 7252 section
//! 4.5).
//!
//! Everything here is bounded: the exchanges in all, the exchanges being
//! processed per endpoint (NSTART), and the endpoints. Work under the lock
//! is a hash-map step; nothing a client sizes is done while holding it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The limits of the table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// How long an exchange is remembered.
    pub lifetime: Duration,
    /// Exchanges remembered in all.
    pub max_exchanges: usize,
    /// Requests of one endpoint being processed at once.
    pub max_pending_per_peer: u32,
    /// Endpoints with exchanges remembered.
    pub max_peers: usize,
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
    states: HashMap<Key, State>,
    peers: HashMap<SocketAddr, Peer>,
    /// Keys by when they expire (the lifetime is one for all, so insertion
    /// order is expiry order).
    expiry: VecDeque<(Instant, Key)>,
}

impl Exchanges {
    pub(crate) fn new(bounds: Bounds) -> Self {
        Exchanges {
            bounds,
            states: HashMap::new(),
            peers: HashMap::new(),
            expiry: VecDeque::new(),
        }
    }

    /// Takes a request from `peer` with `message_id`, at `now`.
    pub(crate) fn admit(&mut self, peer: SocketAddr, message_id: u16, now: Instant) -> Admission {
        self.expire(now);
        let key = (peer, message_id);
        if let Some(state) = self.states.get(&key) {
            return Admission::Duplicate(state.clone());
        }
        if self.states.len() >= self.bounds.max_exchanges {
            return Admission::Refused("exchanges");
        }
        let peers = self.peers.len();
        let entry = match self.peers.get_mut(&peer) {
            Some(p) => p,
            None if peers >= self.bounds.max_peers => return Admission::Refused("peers"),
            None => self.peers.entry(peer).or_default(),
        };
        if entry.pending >= self.bounds.max_pending_per_peer {
            return Admission::Refused("pending_per_peer");
        }
        entry.pending += 1;
        entry.exchanges += 1;
        self.states.insert(key, State::Pending { acked: false });
        self.expiry.push_back((now + self.bounds.lifetime, key));
        Admission::New
    }

    /// Notes that the client got an empty ACK for a pending request.
    pub(crate) fn acked(&mut self, peer: SocketAddr, message_id: u16) {
        if let Some(State::Pending { acked }) = self.states.get_mut(&(peer, message_id)) {
            *acked = true;
        }
    }

    /// Records the answer to a pending request, for retransmissions.
    pub(crate) fn done(&mut self, peer: SocketAddr, message_id: u16, answer: Box<[u8]>) {
        let Some(state) = self.states.get_mut(&(peer, message_id)) else {
            return;
        };
        if matches!(state, State::Pending { .. }) {
            *state = State::Done(answer);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.pending = p.pending.saturating_sub(1);
            }
        }
    }

    /// Exchanges remembered, and endpoints they belong to.
    pub(crate) fn len(&self) -> (usize, usize) {
        (self.states.len(), self.peers.len())
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.expiry.front() {
            if at > now {
                break;
            }
            self.expiry.pop_front();
            let Some(state) = self.states.remove(&key) else {
                continue;
            };
            if let Some(p) = self.peers.get_mut(&key.0) {
                p.exchanges = p.exchanges.saturating_sub(1);
                if matches!(state, State::Pending { .. }) {
                    p.pending = p.pending.saturating_sub(1);
                }
                if p.exchanges == 0 {
                    self.peers.remove(&key.0);
                }
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
            max_pending_per_peer: 2,
            max_peers: 2,
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
}

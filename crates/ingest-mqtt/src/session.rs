//! Sessions: what outlives a connection (MQTT 5.0 §4.1).
//!
//! A session has two halves:
//!
//! - its **mailbox** ([`Session`]), shared with the router: the bounded queue
//!   of messages waiting to be sent, behind a `std::sync::Mutex` that is
//!   never held across an `.await`, and a [`Notify`] that wakes the
//!   connection when a message arrives;
//! - its **connection-owned state** ([`Owned`]): the outbound packets in
//!   flight (sent, not yet acknowledged) and the inbound QoS 2 packet ids
//!   awaiting PUBREL. The connection task owns it outright while attached (no
//!   lock on the acknowledgement path) and parks it in the router when it
//!   detaches, so a persistent session resumes it on reconnect.
//!
//! Sessions are held in memory only: a process restart loses every session,
//! its subscriptions, queued messages and retained messages. Telemetry is not
//! affected: it is acknowledged only once it is durable in the log.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;
use tributary_mqtt_codec::{PayloadFormat, QoS, UserProperty};

/// A session's number, unique within the process.
pub(crate) type SessionId = u64;

/// An application message as the router carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic name.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// The payload format indicator (5.0).
    pub payload_format: Option<PayloadFormat>,
    /// The content type (5.0).
    pub content_type: Option<String>,
    /// The response topic (5.0 request/response).
    pub response_topic: Option<String>,
    /// The correlation data (5.0 request/response).
    pub correlation_data: Option<Bytes>,
    /// User properties, in order (5.0).
    pub user_properties: Vec<UserProperty>,
    /// When the message expires (from the Message Expiry Interval).
    pub expires_at: Option<Instant>,
}

impl Message {
    /// A QoS 0 message without properties.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retain: false,
            payload_format: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
            expires_at: None,
        }
    }

    /// What keeping the message costs, counted against a tenant's retained
    /// bytes: topic, payload and properties.
    pub(crate) fn retained_size(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.topic.len()
            + self.payload.len()
            + text(&self.content_type)
            + text(&self.response_topic)
            + self.correlation_data.as_ref().map_or(0, Bytes::len)
            + self
                .user_properties
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    /// Whether the message has expired at `now`.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// A message on its way to one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) message: Arc<Message>,
    /// The QoS of this delivery: the lower of the message's and the
    /// subscription's.
    pub(crate) qos: QoS,
    /// The RETAIN flag to send.
    pub(crate) retain: bool,
    /// Subscription identifiers of the matching subscriptions.
    pub(crate) subscription_ids: Vec<NonZeroU32>,
}

/// The shared half of a session: its mailbox.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: SessionId,
    /// Wakes the attached connection when a delivery is queued.
    pub(crate) notify: Notify,
    mailbox: Mutex<Mailbox>,
}

#[derive(Debug, Default)]
struct Mailbox {
    queue: VecDeque<Delivery>,
    online: bool,
}

/// Why a delivery was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// QoS 0 to a session without a connection.
    Offline,
    /// The queue is at its limit.
    QueueFull,
}

impl Session {
    pub(crate) fn new(id: SessionId) -> Self {
        Self {
            id,
            notify: Notify::new(),
            mailbox: Mutex::new(Mailbox::default()),
        }
    }

    fn mailbox(&self) -> std::sync::MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a delivery and wakes the connection. QoS 0 messages are not
    /// kept for an offline session (MQTT 5.0 §4.1 lets the server choose).
    pub(crate) fn enqueue(&self, delivery: Delivery, max_queued: usize) -> Result<(), Refused> {
        {
            let mut mb = self.mailbox();
            if !mb.online && delivery.qos == QoS::AtMostOnce {
                return Err(Refused::Offline);
            }
            if mb.queue.len() >= max_queued {
                return Err(Refused::QueueFull);
            }
            mb.queue.push_back(delivery);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Takes up to `max` queued deliveries, oldest first, of which at most
    /// `room` of QoS 1 or 2 (the client's free receive window), and about
    /// `max_bytes` of topics and payloads (at least one delivery). Expired
    /// deliveries are dropped on the way and counted in the second value.
    pub(crate) fn take(
        &self,
        max: usize,
        mut room: usize,
        max_bytes: usize,
        now: Instant,
    ) -> (Vec<Delivery>, usize) {
        let mut mb = self.mailbox();
        let mut out = Vec::new();
        let mut expired = 0;
        let mut bytes = 0usize;
        while out.len() < max {
            let Some(front) = mb.queue.front() else { break };
            if front.message.expired(now) {
                mb.queue.pop_front();
                expired += 1;
                continue;
            }
            let size = front.message.payload.len() + front.message.topic.len();
            if !out.is_empty() && bytes.saturating_add(size) > max_bytes {
                break;
            }
            if front.qos != QoS::AtMostOnce {
                if room == 0 {
                    break;
                }
                room -= 1;
            }
            bytes = bytes.saturating_add(size);
            out.extend(mb.queue.pop_front());
        }
        (out, expired)
    }

    /// Whether deliveries are waiting.
    #[cfg(test)]
    pub(crate) fn has_queued(&self) -> bool {
        !self.mailbox().queue.is_empty()
    }

    /// How many deliveries are waiting.
    pub(crate) fn queued(&self) -> usize {
        self.mailbox().queue.len()
    }

    /// Whether a connection is attached.
    pub(crate) fn is_online(&self) -> bool {
        self.mailbox().online
    }

    pub(crate) fn set_online(&self, online: bool) {
        self.mailbox().online = online;
    }

    /// Drops every queued delivery (a clean start).
    pub(crate) fn clear(&self) {
        self.mailbox().queue.clear();
    }
}

/// Where an outbound QoS 1 or 2 delivery is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    Ack,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    Received,
    /// QoS 2 PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// An outbound delivery in flight.
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    pub(crate) delivery: Delivery,
    pub(crate) stage: Stage,
}

/// The connection-owned half of a session.
#[derive(Debug, Default)]
pub(crate) struct Owned {
    /// Outbound QoS 1 and 2 deliveries in flight, by packet id.
    pub(crate) outbound: BTreeMap<u16, Outbound>,
    /// The last packet id used.
    pub(crate) last_pid: u16,
    /// Inbound QoS 2 packet ids that got a PUBREC and await PUBREL: a
    /// re-sent PUBLISH with one of these ids is a duplicate.
    pub(crate) incoming_qos2: HashSet<u16>,
}

impl Owned {
    /// The next free packet id, or `None` when all 65,535 are in flight.
    pub(crate) fn next_pid(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last_pid = if self.last_pid == u16::MAX {
                1
            } else {
                self.last_pid + 1
            };
            if !self.outbound.contains_key(&self.last_pid) {
                return Some(self.last_pid);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(qos: QoS, expires_at: Option<Instant>) -> Delivery {
        let mut m = Message::new("t", "p");
        m.expires_at = expires_at;
        Delivery {
            message: Arc::new(m),
            qos,
            retain: false,
            subscription_ids: Vec::new(),
        }
    }

    #[test]
    fn mailbox_is_bounded_and_keeps_no_qos0_offline() {
        let s = Session::new(1);
        assert_eq!(
            s.enqueue(delivery(QoS::AtMostOnce, None), 2),
            Err(Refused::Offline)
        );
        assert!(s.enqueue(delivery(QoS::AtLeastOnce, None), 2).is_ok());
        s.set_online(true);
        assert!(s.enqueue(delivery(QoS::AtMostOnce, None), 2).is_ok());
        assert_eq!(
            s.enqueue(delivery(QoS::AtLeastOnce, None), 2),
            Err(Refused::QueueFull)
        );
        let (taken, expired) = s.take(10, 0, usize::MAX, Instant::now());
        assert_eq!(
            (taken.len(), expired),
            (0, 0),
            "no room for the QoS 1 message first in line"
        );
        let (taken, expired) = s.take(10, 1, usize::MAX, Instant::now());
        assert_eq!((taken.len(), expired), (2, 0));
    }

    #[test]
    fn expired_messages_are_not_taken() {
        let s = Session::new(1);
        let past = Instant::now();
        s.enqueue(delivery(QoS::AtLeastOnce, Some(past)), 10)
            .unwrap();
        s.enqueue(delivery(QoS::AtLeastOnce, None), 10).unwrap();
        let (taken, expired) = s.take(
            10,
            10,
            usize::MAX,
            past + std::time::Duration::from_millis(1),
        );
        assert_eq!((taken.len(), expired), (1, 1));
    }

    #[test]
    fn packet_ids_skip_those_in_flight_and_wrap() {
        let mut o = Owned {
            last_pid: u16::MAX - 1,
            ..Owned::default()
        };
        let d = Outbound {
            delivery: delivery(QoS::AtLeastOnce, None),
            stage: Stage::Ack,
        };
        o.outbound.insert(1, d);
        assert_eq!(o.next_pid(), Some(u16::MAX));
        assert_eq!(o.next_pid(), Some(2), "wraps past 0 and skips 1, in flight");
    }
}

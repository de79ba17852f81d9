//! Packets to the client: deliveries taken from the session's mailbox
//! within the client's receive window and the write buffer, and the
//! re-sending of what was in flight when a resumed session last closed.

use std::collections::VecDeque;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tributary_mqtt_codec::{Packet, PubRel, Publish, PublishProperties, QoS};

use super::{Connection, DELIVERY_BATCH, aliases};
use crate::metrics::MessageDrop;
use crate::session::{Delivery, Outbound, Stage};
use crate::trie::SubOptions;

/// Retained messages still to send for recent subscriptions: one cursor per
/// filter, so there are never more than the session's subscriptions.
#[derive(Debug, Default)]
pub(super) struct RetainedCursors(VecDeque<RetainedCursor>);

#[derive(Debug)]
struct RetainedCursor {
    filter: String,
    options: SubOptions,
    /// The topic of the last retained message examined.
    after: Option<String>,
}

impl RetainedCursors {
    /// Sends the retained messages of `filter` (again, from the start).
    pub(super) fn start(&mut self, filter: String, options: SubOptions) {
        match self.0.iter_mut().find(|c| c.filter == filter) {
            Some(c) => {
                c.options = options;
                c.after = None;
            }
            None => self.0.push_back(RetainedCursor {
                filter,
                options,
                after: None,
            }),
        }
    }

    /// Stops sending the retained messages of `filter` (unsubscribed).
    pub(super) fn cancel(&mut self, filter: &str) {
        self.0.retain(|c| c.filter != filter);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Whether retained messages wait for room in the session's mailbox,
    /// and there is room.
    pub(super) fn retained_ready(&self) -> bool {
        !self.retained.is_empty() && self.session.queued() < DELIVERY_BATCH
    }

    /// Moves one page of retained messages for a recent subscription into
    /// the session's mailbox, when it is nearly empty. Paging bounds the
    /// router lock to one page's scan however many messages are retained,
    /// and paces one SUBSCRIBE's retained messages by the client's
    /// acknowledgements instead of dropping what the mailbox cannot hold.
    pub(super) fn pump_retained(&mut self) {
        if !self.retained_ready() {
            return;
        }
        let Some(cursor) = self.retained.0.front_mut() else {
            return;
        };
        let page = self.shared.router().retained_page(
            &self.tenant,
            &cursor.filter,
            cursor.after.as_deref(),
            DELIVERY_BATCH,
        );
        let options = cursor.options;
        match page.next {
            Some(next) => cursor.after = Some(next),
            None => {
                self.retained.0.pop_front();
            }
        }
        for message in page.messages {
            let delivery = Delivery {
                qos: message.qos.min(options.qos),
                retain: true,
                subscription_ids: options.id.into_iter().collect(),
                message,
            };
            if self
                .session
                .enqueue(delivery, self.shared.config.max_queued_messages)
                .is_err()
            {
                self.shared.metrics.dropped(MessageDrop::QueueFull);
            }
        }
    }

    /// Moves queued deliveries into the write buffer, within the client's
    /// receive maximum and the write buffer limit.
    pub(super) fn pump_deliveries(&mut self) {
        while self.wbuf.len() < self.shared.config.max_write_buffer {
            let room = self
                .outbound_window
                .saturating_sub(self.owned.outbound.len());
            let budget = self.shared.config.max_write_buffer - self.wbuf.len();
            let (batch, expired) = self
                .session
                .take(DELIVERY_BATCH, room, budget, Instant::now());
            for _ in 0..expired {
                self.shared.metrics.dropped(MessageDrop::Expired);
            }
            if batch.is_empty() {
                return;
            }
            for delivery in batch {
                self.deliver(delivery);
            }
        }
    }

    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let packet_id = if delivery.qos == QoS::AtMostOnce {
            None
        } else {
            match self.owned.next_pid() {
                Some(id) => Some(id),
                None => {
                    self.shared.metrics.dropped(MessageDrop::NoPacketId);
                    return;
                }
            }
        };
        let mut publish = publish_from(&delivery, packet_id, false);
        // A topic delivered before goes by its alias, if the client takes
        // aliases.
        let topic = publish.topic.clone();
        let plan = self.out_aliases.plan(&topic);
        match plan {
            aliases::Plan::Plain => {}
            aliases::Plan::Establish(alias) => {
                publish.properties.topic_alias = std::num::NonZeroU16::new(alias);
            }
            aliases::Plan::Use(alias) => {
                publish.properties.topic_alias = std::num::NonZeroU16::new(alias);
                publish.topic = String::new();
            }
        }
        // Never send a packet larger than the client accepts: it is dropped
        // as if delivered (MQTT 5.0 §3.1.2.11.4).
        let fits = |p: &Publish| {
            Packet::Publish(p.clone())
                .encoded_len(self.version)
                .is_ok_and(|n| n <= self.client_max_packet)
        };
        let plan = if fits(&publish) {
            plan
        } else {
            // The alias property may be what tips it over: try without.
            publish.properties.topic_alias = None;
            publish.topic = topic.clone();
            if !fits(&publish) {
                self.shared.metrics.dropped(MessageDrop::TooLargeForClient);
                return;
            }
            aliases::Plan::Plain
        };
        self.out_aliases.commit(&topic, plan);
        if let Some(id) = packet_id {
            let stage = if delivery.qos == QoS::AtLeastOnce {
                Stage::Ack
            } else {
                Stage::Received
            };
            self.owned.outbound.insert(id, Outbound { delivery, stage });
        }
        self.shared.metrics.delivered();
        self.send(publish.into());
    }

    /// Re-sends what was in flight when a resumed session's last connection
    /// ended: PUBLISH with DUP set, or PUBREL.
    pub(super) fn resend_in_flight(&mut self) {
        let resend: Vec<(u16, Outbound)> = self
            .owned
            .outbound
            .iter()
            .map(|(id, o)| (*id, o.clone()))
            .collect();
        for (id, o) in resend {
            match o.stage {
                Stage::Ack | Stage::Received => {
                    let publish = publish_from(&o.delivery, Some(id), true);
                    self.send(publish.into());
                }
                Stage::Released => self.send(PubRel::new(id).into()),
            }
        }
    }
}

/// The PUBLISH that carries a delivery.
fn publish_from(d: &Delivery, packet_id: Option<u16>, dup: bool) -> Publish {
    let m = &d.message;
    let remaining = m.expires_at.map(|t| {
        let left = t.saturating_duration_since(Instant::now());
        u32::try_from(left.as_secs() + u64::from(left.subsec_nanos() > 0))
            .unwrap_or(u32::MAX)
            .max(1)
    });
    Publish {
        dup: dup && d.qos != QoS::AtMostOnce,
        qos: d.qos,
        retain: d.retain,
        topic: m.topic.clone(),
        packet_id,
        payload: m.payload.clone(),
        properties: PublishProperties {
            payload_format_indicator: m.payload_format,
            message_expiry_interval: remaining,
            topic_alias: None,
            response_topic: m.response_topic.clone(),
            correlation_data: m.correlation_data.clone(),
            user_properties: m.user_properties.clone(),
            subscription_identifiers: d.subscription_ids.clone(),
            content_type: m.content_type.clone(),
        },
    }
}

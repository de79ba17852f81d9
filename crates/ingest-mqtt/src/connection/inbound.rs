//! Packets from the client: PUBLISH (telemetry appended to the log and
//! acknowledged once durable, or plain pub/sub routed at once), the
//! acknowledgement of finished appends, SUBSCRIBE and UNSUBSCRIBE.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tributary_ingest::{IngestError, Kind, RequestContext};
use tributary_mqtt_codec::topic::{level_count, parse_shared};
use tributary_mqtt_codec::{
    PayloadFormat, ProtocolVersion, PubAck, PubRec, Publish, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, UnsubAck, Unsubscribe, Will,
};

use super::{Connection, Done, End, Outcome};
use crate::metrics::{DisconnectReason, PublishRejection};
use crate::router::SubscribeError;
use crate::session::Message;
use crate::telemetry::{self, DeviceTopic};
use crate::trie::SubOptions;

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Refuses a PUBLISH: a 5.0 client gets the reason code in its PUBACK or
    /// PUBREC (nothing at QoS 0); a 3.1.1 client, which has no way to hear
    /// it, is disconnected.
    pub(super) fn refuse_publish(
        &mut self,
        p: &Publish,
        code: ReasonCode,
        rejection: PublishRejection,
        why: String,
    ) -> Result<(), End> {
        self.shared.metrics.rejected(rejection);
        if self.version == ProtocolVersion::V311 {
            return Err(End::Server(code, rejection.into()));
        }
        if let Some(id) = p.packet_id {
            self.inflight_ids.insert(id);
            let done = Done {
                packet_id: Some(id),
                qos: p.qos,
                outcome: Outcome::Refused(code, why),
            };
            self.inflight.push_back(Box::pin(std::future::ready(done)));
        }
        Ok(())
    }

    pub(super) fn publish(&mut self, mut p: Publish) -> Result<(), End> {
        // The level limit bounds the work one topic costs the router (an
        // aliased topic passed it when the alias was set).
        let levels = level_count(&p.topic);
        let max_levels = self.shared.config.max_topic_levels;
        if !p.topic.is_empty() && levels > max_levels {
            let why = format!("the topic has {levels} levels, more than the limit of {max_levels}");
            return self.refuse_publish(
                &p,
                ReasonCode::TopicNameInvalid,
                PublishRejection::TopicInvalid,
                why,
            );
        }
        // Topic aliases (5.0): set on first use, then stand for the topic.
        if let Some(alias) = p.properties.topic_alias {
            if alias.get() > self.shared.config.topic_alias_maximum {
                return Err(End::Server(
                    ReasonCode::TopicAliasInvalid,
                    DisconnectReason::TopicAlias,
                ));
            }
            if p.topic.is_empty() {
                match self.aliases.get(&alias.get()) {
                    Some(topic) => p.topic = topic.clone(),
                    None => {
                        return Err(End::Server(
                            ReasonCode::ProtocolError,
                            DisconnectReason::TopicAlias,
                        ));
                    }
                }
            } else {
                self.aliases.insert(alias.get(), p.topic.clone());
            }
        }
        // A re-sent QoS 2 PUBLISH that already got its PUBREC is answered
        // again without being processed again; a re-sent PUBLISH still in
        // flight will be answered when it completes.
        if let Some(id) = p.packet_id {
            if p.qos == QoS::ExactlyOnce && self.owned.incoming_qos2.contains(&id) {
                self.send(PubRec::new(id).into());
                return Ok(());
            }
            if self.inflight_ids.contains(&id) {
                return Ok(());
            }
        }
        if let Some(bucket) = &self.bucket {
            let allowed = bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_take(Instant::now());
            if !allowed {
                self.shared.metrics.rejected(PublishRejection::Rate);
                return Err(End::Server(
                    ReasonCode::MessageRateTooHigh,
                    DisconnectReason::Rate,
                ));
            }
        }
        if !self.identity.may_publish(&p.topic) {
            let why = format!("not authorized to publish to {}", p.topic);
            return self.refuse_publish(
                &p,
                ReasonCode::NotAuthorized,
                PublishRejection::NotAuthorized,
                why,
            );
        }
        if p.properties.payload_format_indicator == Some(PayloadFormat::Utf8)
            && std::str::from_utf8(&p.payload).is_err()
        {
            let why = "the payload format indicator says UTF-8, the payload is not".to_owned();
            return self.refuse_publish(
                &p,
                ReasonCode::PayloadFormatInvalid,
                PublishRejection::Invalid,
                why,
            );
        }
        let message = message_from(&p);
        // A retained message must fit the tenant's retained quotas (only
        // then is the router locked for it).
        let retain_check = if message.retain && !message.payload.is_empty() {
            self.shared.router().check_retain(&self.tenant, &message)
        } else {
            Ok(())
        };
        if let Err(e) = retain_check {
            self.shared.ingestor.quota_metrics().exceeded(&e);
            return self.refuse_publish(
                &p,
                ReasonCode::QuotaExceeded,
                PublishRejection::Quota,
                e.to_string(),
            );
        }
        // Device topics are telemetry only for devices (the ACL keeps each
        // in its own); for applications every topic is plain pub/sub.
        let device_topic = self
            .principal
            .as_ref()
            .and_then(|principal| Some((DeviceTopic::parse(&p.topic)?, principal.clone())));
        let Some((topic, principal)) = device_topic else {
            // Plain pub/sub within the tenant, charged to its message and
            // byte rates like telemetry; routed in order once admitted.
            let ingestor = self.shared.ingestor.clone();
            let tenant = self.tenant.clone();
            let (packet_id, qos, bytes) = (p.packet_id, p.qos, p.payload.len());
            if let Some(id) = packet_id {
                self.inflight_ids.insert(id);
            }
            self.inflight.push_back(Box::pin(async move {
                let outcome = match ingestor.admit(&tenant, bytes).await {
                    Ok(()) => Outcome::Admitted(message),
                    Err(e) => Outcome::Failed(e),
                };
                Done {
                    packet_id,
                    qos,
                    outcome,
                }
            }));
            return Ok(());
        };
        let limits = self.shared.ingestor.limits();
        let parsed = telemetry::parse(
            topic,
            &p.payload,
            p.properties.content_type.as_deref(),
            &self.tenant,
            tributary_core::time::now_ns(),
            limits,
        );
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                let (code, rejection) = if e.too_large {
                    (ReasonCode::QuotaExceeded, PublishRejection::TooLarge)
                } else {
                    (ReasonCode::PayloadFormatInvalid, PublishRejection::Invalid)
                };
                return self.refuse_publish(&p, code, rejection, e.to_string());
            }
        };
        let permit = match self.shared.ingestor.reserve(p.payload.len()) {
            Ok(permit) => permit,
            Err(_) => {
                self.shared.metrics.rejected(PublishRejection::Overloaded);
                return Err(End::Server(
                    ReasonCode::ServerBusy,
                    DisconnectReason::Overloaded,
                ));
            }
        };
        let user = |name: &str| {
            p.properties
                .user_properties
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let ctx = RequestContext {
            content_type: parsed.content_type.to_owned(),
            traceparent: user("traceparent"),
            tracestate: user("tracestate"),
            kind: match topic {
                DeviceTopic::Event { .. } => Kind::Event,
                DeviceTopic::Telemetry { .. } | DeviceTopic::Metric { .. } => Kind::Telemetry,
            },
        };
        let ingestor = self.shared.ingestor.clone();
        let (packet_id, qos) = (p.packet_id, p.qos);
        if let Some(id) = packet_id {
            self.inflight_ids.insert(id);
        }
        let bytes = p.payload.len();
        self.inflight.push_back(Box::pin(async move {
            // The tenant's message and byte rates, then the append.
            let result = match ingestor.admit(principal.tenant(), bytes).await {
                Ok(()) => {
                    ingestor
                        .ingest_device(&principal, parsed.points, &ctx)
                        .await
                }
                Err(e) => Err(e),
            };
            drop(permit);
            let outcome = match result {
                Ok(()) => Outcome::Ingested(message),
                Err(e) => Outcome::Failed(e),
            };
            Done {
                packet_id,
                qos,
                outcome,
            }
        }));
        Ok(())
    }

    /// Acknowledges a finished PUBLISH. `live` is false while a closing
    /// connection drains: failures then end nothing more.
    pub(super) fn complete(&mut self, done: Done, live: bool) -> Result<(), End> {
        if let Some(id) = done.packet_id {
            self.inflight_ids.remove(&id);
        }
        let (code, why) = match done.outcome {
            Outcome::Ingested(message) => {
                self.shared
                    .router()
                    .route(&self.tenant, message, Some(self.session.id));
                (ReasonCode::Success, None)
            }
            Outcome::Admitted(message) => {
                let reached =
                    self.shared
                        .router()
                        .route(&self.tenant, message, Some(self.session.id));
                if reached == 0 {
                    (ReasonCode::NoMatchingSubscribers, None)
                } else {
                    (ReasonCode::Success, None)
                }
            }
            Outcome::Refused(code, why) => (code, Some(why)),
            Outcome::Failed(e) => {
                let (code, rejection, transient) = ingest_reason(&e);
                self.shared.metrics.rejected(rejection);
                if transient || self.version == ProtocolVersion::V311 {
                    // A PUBACK is a final answer: a retryable failure is
                    // reported by closing without one, so that the client
                    // sends the message again.
                    tracing::debug!(tenant = %self.tenant, error = %e, "append failed; disconnecting");
                    return if live && done.qos != QoS::AtMostOnce {
                        Err(End::Server(
                            if transient {
                                ReasonCode::ServerBusy
                            } else {
                                code
                            },
                            rejection.into(),
                        ))
                    } else {
                        Ok(())
                    };
                }
                (code, Some(e.to_string()))
            }
        };
        let Some(id) = done.packet_id else {
            return Ok(());
        };
        let code =
            if self.version == ProtocolVersion::V311 && code == ReasonCode::NoMatchingSubscribers {
                ReasonCode::Success
            } else {
                code
            };
        if !code.is_error() {
            self.shared.metrics.acked();
        }
        let mut properties = tributary_mqtt_codec::AckProperties::default();
        if self.problem_info && self.version == ProtocolVersion::V5 {
            properties.reason_string = why.map(|w| w.chars().take(256).collect());
        }
        match done.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(
                PubAck {
                    packet_id: id,
                    reason_code: code,
                    properties,
                }
                .into(),
            ),
            QoS::ExactlyOnce => {
                if !code.is_error() {
                    self.owned.incoming_qos2.insert(id);
                }
                self.send(
                    PubRec {
                        packet_id: id,
                        reason_code: code,
                        properties,
                    }
                    .into(),
                );
            }
        }
        Ok(())
    }

    /// Subscribes. A filter repeated in the packet is handled once, with
    /// its last options (as if the repeats came in later packets), and
    /// counts once toward `max_filters_per_subscribe`; every occurrence
    /// gets the same reason code. Retained messages are not sent from here:
    /// the subscription gets a cursor that the delivery loop pages through.
    pub(super) fn subscribe(&mut self, s: Subscribe) {
        let max_levels = self.shared.config.max_topic_levels;
        let max_filters = self.shared.config.max_filters_per_subscribe;
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        // Per distinct filter, the index of its last occurrence.
        let mut distinct: Vec<usize> = Vec::new();
        // Per occurrence, the index of its distinct filter.
        let mut slot: Vec<usize> = Vec::with_capacity(s.subscriptions.len());
        for (i, sub) in s.subscriptions.iter().enumerate() {
            match first_seen.entry(sub.filter.as_str()) {
                Entry::Occupied(e) => {
                    distinct[*e.get()] = i;
                    slot.push(*e.get());
                }
                Entry::Vacant(e) => {
                    e.insert(distinct.len());
                    slot.push(distinct.len());
                    distinct.push(i);
                }
            }
        }
        let mut distinct_codes = Vec::with_capacity(distinct.len());
        let mut retained = Vec::new();
        {
            let mut router = self.shared.router();
            for (n, &i) in distinct.iter().enumerate() {
                let sub = &s.subscriptions[i];
                let shared_sub = parse_shared(&sub.filter).ok().flatten();
                let inner = shared_sub.map_or(sub.filter.as_str(), |shared| shared.filter);
                let refused = if n >= max_filters {
                    Some((ReasonCode::QuotaExceeded, PublishRejection::TooManyFilters))
                } else if level_count(inner) > max_levels {
                    Some((
                        ReasonCode::TopicFilterInvalid,
                        PublishRejection::FilterInvalid,
                    ))
                } else if !self.identity.may_subscribe(&sub.filter) {
                    Some((
                        ReasonCode::NotAuthorized,
                        PublishRejection::SubscribeNotAuthorized,
                    ))
                } else {
                    None
                };
                if let Some((code, why)) = refused {
                    self.shared.metrics.rejected(why);
                    distinct_codes.push(code);
                    continue;
                }
                let options = SubOptions {
                    qos: sub.options.qos,
                    no_local: sub.options.no_local,
                    retain_as_published: sub.options.retain_as_published,
                    id: s.properties.subscription_identifier,
                };
                match router.subscribe(self.session.id, &sub.filter, options) {
                    Ok(existed) => {
                        distinct_codes.push(ReasonCode::granted(sub.options.qos));
                        let send_retained = match sub.options.retain_handling {
                            RetainHandling::SendAtSubscribe => true,
                            RetainHandling::SendAtNewSubscribe => !existed,
                            RetainHandling::DoNotSend => false,
                        };
                        // Shared subscriptions get no retained messages
                        // (MQTT 5.0 §4.8.2).
                        if send_retained && shared_sub.is_none() {
                            retained.push((sub.filter.clone(), options));
                        }
                    }
                    Err(SubscribeError::TooMany) => distinct_codes.push(ReasonCode::QuotaExceeded),
                    Err(SubscribeError::NoSession) => {
                        distinct_codes.push(ReasonCode::UnspecifiedError);
                    }
                }
            }
        }
        let codes = slot.iter().map(|&d| distinct_codes[d]).collect();
        self.send(
            SubAck {
                packet_id: s.packet_id,
                properties: Default::default(),
                reason_codes: codes,
            }
            .into(),
        );
        for (filter, options) in retained {
            self.retained.start(filter, options);
        }
    }

    pub(super) fn unsubscribe(&mut self, u: Unsubscribe) {
        let max_levels = self.shared.config.max_topic_levels;
        for f in &u.filters {
            self.retained.cancel(f);
        }
        let codes: Vec<ReasonCode> = {
            let mut router = self.shared.router();
            u.filters
                .iter()
                .map(|f| {
                    let inner = parse_shared(f)
                        .ok()
                        .flatten()
                        .map_or(f.as_str(), |s| s.filter);
                    if level_count(inner) > max_levels {
                        self.shared
                            .metrics
                            .rejected(PublishRejection::FilterInvalid);
                        ReasonCode::TopicFilterInvalid
                    } else if router.unsubscribe(self.session.id, f) {
                        ReasonCode::Success
                    } else {
                        ReasonCode::NoSubscriptionExisted
                    }
                })
                .collect()
        };
        let reason_codes = if self.version == ProtocolVersion::V5 {
            codes
        } else {
            Vec::new()
        };
        self.send(
            UnsubAck {
                packet_id: u.packet_id,
                properties: Default::default(),
                reason_codes,
            }
            .into(),
        );
    }
}

/// Maps an append failure to a reason code, the rejection it is, and
/// whether it is transient (worth a retry).
fn ingest_reason(e: &IngestError) -> (ReasonCode, PublishRejection, bool) {
    use PublishRejection as R;
    match e {
        IngestError::Unauthenticated
        | IngestError::Forbidden(_)
        | IngestError::UnknownDevice(_) => (ReasonCode::NotAuthorized, R::NotAuthorized, false),
        IngestError::Invalid(_) => (ReasonCode::PayloadFormatInvalid, R::Invalid, false),
        IngestError::TooLarge(_) => (ReasonCode::QuotaExceeded, R::TooLarge, false),
        IngestError::Overloaded { .. } => (ReasonCode::ServerBusy, R::Overloaded, true),
        IngestError::Unavailable(_) => (ReasonCode::ServerBusy, R::Unavailable, true),
        // A final answer: the reason string says when a retry can pass.
        IngestError::Quota(_) => (ReasonCode::QuotaExceeded, R::Quota, false),
    }
}

/// The routed message of a client's PUBLISH.
fn message_from(p: &Publish) -> Message {
    let props = &p.properties;
    Message {
        topic: p.topic.clone(),
        payload: p.payload.clone(),
        qos: p.qos,
        retain: p.retain,
        payload_format: props.payload_format_indicator,
        content_type: props.content_type.clone(),
        response_topic: props.response_topic.clone(),
        correlation_data: props.correlation_data.clone(),
        user_properties: props.user_properties.clone(),
        expires_at: props
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
    }
}

pub(super) fn message_from_will(will: Will) -> Message {
    let props = will.properties;
    Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        payload_format: props.payload_format_indicator,
        content_type: props.content_type,
        response_topic: props.response_topic,
        correlation_data: props.correlation_data,
        user_properties: props.user_properties,
        expires_at: props
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s))),
    }
}

#[cfg(test)]
mod tests {
    use tributary_mqtt_codec::PacketType;

    use super::*;

    #[test]
    fn transient_failures_are_not_final_answers() {
        assert!(
            ingest_reason(&IngestError::Overloaded {
                retry_after_secs: 1
            })
            .2
        );
        assert!(ingest_reason(&IngestError::Unavailable("x".into())).2);
        let (code, _, transient) = ingest_reason(&IngestError::Forbidden("x".into()));
        assert_eq!((code, transient), (ReasonCode::NotAuthorized, false));
        for e in [
            IngestError::Unauthenticated,
            IngestError::TooLarge("x".into()),
            IngestError::Invalid(tributary_core::formats::ParseError::new("a", "b")),
        ] {
            assert!(ingest_reason(&e).0.is_allowed_in(PacketType::PubAck), "{e}");
        }
    }
}

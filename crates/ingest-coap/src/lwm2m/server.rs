//! The server's side of LwM2M observations: after a client registers, the
//! server observes its mapped resources (a CoAP request from server to
//! device), and stores each notification as the device's telemetry.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tributary_coap_codec::{Code, Message, MessageType, option};
use tributary_core::directory::Principal;
use tributary_core::model::Point;
use tributary_ingest::RequestContext;

use super::{Observed, mapping};
use crate::{CoapServer, Delivery, Link, dtls, lock};

impl CoapServer {
    /// Observes every mapped resource of registration `id`, one request
    /// at a time (NSTART 1 towards the device), storing each first value.
    pub(crate) async fn observe_registration(&self, link: &Link, id: &str) {
        let lwm2m = &self.inner.lwm2m;
        let Some(reg) = lwm2m.registration(id) else {
            return;
        };
        let tenant = match self.inner.ingestor.lwm2m_metrics(&reg.tenant).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(tenant = %reg.tenant, error = %e, "the tenant's LwM2M metric names could not be read; using the defaults");
                Default::default()
            }
        };
        for (path, metric, float) in mapping::observable(&reg.objects, &tenant) {
            let Some((token, peer)) = lwm2m.observe(id, path, metric, float) else {
                return;
            };
            let mut get = Message::new(MessageType::Confirmable, Code::GET, self.next_id());
            get.token = token;
            get.set_uint_option(option::OBSERVE, 0);
            for segment in [path.0, path.1, path.2] {
                get.add_option(option::URI_PATH, segment.to_string().into_bytes());
            }
            let answer = self.request_device(link, peer, get).await;
            match answer {
                Some(a) if a.code == Code::CONTENT && a.observe().ok().flatten().is_some() => {
                    if let Some(observed) = lwm2m.observed(&token) {
                        self.store_notification(&observed, &a).await;
                    }
                }
                other => {
                    tracing::info!(
                        %peer,
                        object = path.0,
                        instance = path.1,
                        resource = path.2,
                        answer = ?other.map(|a| a.code.to_string()),
                        "an LwM2M client did not accept an observation"
                    );
                    lwm2m.unobserve(&token);
                }
            }
        }
        let (registrations, observations) = lwm2m.len();
        self.inner.metrics.lwm2m(registrations, observations);
    }

    /// Sends a request to a device and waits for its response, fetching
    /// the rest of a body the device sends in blocks (Block2, RFC 7959),
    /// up to `max_upload_bytes` (beyond that the answer becomes 4.13).
    /// Observations are not continued block-wise.
    pub(crate) async fn request_device(
        &self,
        link: &Link,
        peer: SocketAddr,
        msg: Message,
    ) -> Option<Message> {
        let again = msg.clone();
        let mut answer = self.request_device_once(link, peer, msg).await?;
        if again.observe().ok().flatten().is_some() {
            return Some(answer);
        }
        let max = self.inner.config.max_upload_bytes;
        while answer.code == Code::CONTENT {
            let Ok(Some(block)) = answer.block2() else {
                break;
            };
            if !block.more {
                break;
            }
            if answer.payload.len() + block.size() > max
                || block.num >= tributary_coap_codec::Block::MAX_NUM
            {
                answer.code = Code::REQUEST_ENTITY_TOO_LARGE;
                answer.payload =
                    format!("the device's answer is larger than {max} bytes").into_bytes();
                break;
            }
            let next = tributary_coap_codec::Block::new(block.num + 1, false, block.size())?;
            let mut ask = Message::new(MessageType::Confirmable, again.code, self.next_id());
            ask.token = tributary_coap_codec::Token::new(&rand::random::<u64>().to_be_bytes())?;
            for o in again.options() {
                if o.number != option::BLOCK2 {
                    ask.add_option(o.number, o.value.clone());
                }
            }
            ask.add_option(option::BLOCK2, next.encode());
            let mut part = self.request_device_once(link, peer, ask).await?;
            if part.code != Code::CONTENT {
                return Some(part);
            }
            let mut body = std::mem::take(&mut answer.payload);
            body.extend_from_slice(&part.payload);
            part.payload = body;
            answer = part;
        }
        Some(answer)
    }

    /// One request and its response: piggybacked on the ACK, or separate
    /// after an empty one.
    async fn request_device_once(
        &self,
        link: &Link,
        peer: SocketAddr,
        msg: Message,
    ) -> Option<Message> {
        let token = msg.token;
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.responses).insert(token, tx);
        struct Forget<'a>(&'a CoapServer, tributary_coap_codec::Token);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                lock(&self.0.inner.responses).remove(&self.1);
            }
        }
        let _forget = Forget(self, token);
        let (delivery, ack) = self.deliver_answer(link, peer, msg).await;
        match (delivery, ack) {
            (Delivery::Acked, Some(ack)) if !ack.code.is_empty() => Some(ack),
            (Delivery::Acked, _) => {
                let wait = Duration::from_secs(self.inner.config.device_request_secs);
                tokio::time::timeout(wait, rx).await.ok()?.ok()
            }
            _ => None,
        }
    }

    /// A notification of an observed resource, from `session` if it came
    /// in one: stored, or not (and then not acknowledged).
    pub(crate) async fn notification(
        &self,
        msg: &Message,
        session: Option<&dtls::SessionAuth>,
    ) -> bool {
        let Some(observed) = self.inner.lwm2m.observed(&msg.token) else {
            return false;
        };
        // In a DTLS session, only the registered device's own session may
        // notify for it.
        if session
            .is_some_and(|s| s.device() != (observed.tenant.as_str(), observed.device.as_str()))
        {
            self.inner.metrics.lwm2m_notification("refused");
            return false;
        }
        if msg.code != Code::CONTENT {
            // An error notification ends the observation (RFC 7641 3.2).
            self.inner.lwm2m.unobserve(&msg.token);
            return true;
        }
        self.inner
            .lwm2m
            .seen(&observed.registration, Instant::now());
        self.store_notification(&observed, msg).await
    }

    /// Stores one notification's value as the observed metric.
    pub(crate) async fn store_notification(&self, observed: &Observed, msg: &Message) -> bool {
        let inner = &self.inner;
        let ingestor = &inner.ingestor;
        let format = msg.content_format().ok().flatten();
        let value = match mapping::value(
            observed.path,
            observed.float,
            format,
            &msg.payload,
            ingestor.limits(),
        ) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(device = %observed.device, error = %e, "an LwM2M notification could not be read");
                inner.metrics.lwm2m_notification("undecodable");
                return false;
            }
        };
        let principal = Principal::Device {
            tenant: observed.tenant.clone(),
            device: observed.device.clone(),
        };
        let point = Point {
            metric: observed.metric.clone(),
            ts_ns: tributary_core::time::now_ns(),
            value,
        };
        let size = msg.payload.len();
        let stored = async {
            ingestor.admit(&observed.tenant, size).await?;
            let _permit = ingestor.reserve(size)?;
            let ctx = RequestContext {
                content_type: "application/vnd.oma.lwm2m".to_owned(),
                ..RequestContext::default()
            };
            ingestor.ingest_device(&principal, vec![point], &ctx).await
        }
        .await;
        match stored {
            Ok(_) => {
                inner.metrics.lwm2m_notification("stored");
                true
            }
            Err(e) => {
                tracing::debug!(device = %observed.device, error = %e, "an LwM2M notification was refused");
                inner.metrics.lwm2m_notification("refused");
                false
            }
        }
    }

    /// Ends LwM2M registrations past their lifetime; their devices go
    /// offline.
    pub(crate) fn expire_lwm2m(&self) {
        let expired = self.inner.lwm2m.expire(Instant::now());
        let (registrations, observations) = self.inner.lwm2m.len();
        self.inner.metrics.lwm2m(registrations, observations);
        if expired.is_empty() {
            return;
        }
        let server = self.clone();
        tokio::spawn(async move {
            for reg in expired {
                tracing::info!(tenant = %reg.tenant, device = %reg.device, "an LwM2M registration's lifetime passed");
                server
                    .inner
                    .commands
                    .report(&reg.tenant, &reg.device, false)
                    .await;
            }
        });
    }
}

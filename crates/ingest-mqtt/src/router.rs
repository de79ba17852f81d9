//! The router: every session, subscription and retained message of every
//! tenant, and the deliveries from publishers to sessions.
//!
//! One [`Router`] lives behind a `std::sync::Mutex` in the server. Every
//! method is synchronous and short (a tree walk, map updates, pushes into
//! bounded mailboxes), and the lock is never held across an `.await`, so a
//! plain mutex costs less than an actor's channel round trip on the publish
//! path and keeps the tables in one place. Lock order: router, then a
//! session's mailbox; never the other way round.
//!
//! Tenants are isolated by construction: subscriptions, retained messages
//! and sessions are keyed by tenant first, so nothing a client sends can
//! name another tenant's topics.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{oneshot, watch};
use tributary_mqtt_codec::topic::{matches, parse_shared};

use tributary_core::directory::Credential;
use tributary_core::quota::{Quota, QuotaExceeded, Quotas};
use tributary_ingest::QuotaMetrics;

use crate::acl::Identity;
use crate::config::MqttConfig;
use crate::metrics::{MessageDrop, MqttMetrics};
use crate::session::{Delivery, Message, Owned, Refused, Session, SessionId};
use crate::trie::{SubOptions, Subscriber, Trie};
use tributary_core::rate::TokenBucket;

/// Why an attached connection is told to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// Another connection took the session over.
    TakenOver,
    /// The device was disabled or deleted, or a credential revoked.
    Revoked,
}

/// A connection's hold on a session.
#[derive(Debug)]
struct Attachment {
    kick: Option<oneshot::Sender<Kick>>,
    released: watch::Receiver<()>,
}

#[derive(Debug)]
struct Entry {
    session: Arc<Session>,
    tenant: String,
    client_id: String,
    /// The device the attached connection authenticated as (`None` for
    /// applications); see [`Router::bind`].
    device: Option<String>,
    /// The credential the attached connection authenticated with.
    credential: Option<Credential>,
    /// The device whose session this is, counted in `device_sessions`.
    owner: Option<String>,
    /// Full filter (with any `$share/{group}/` prefix) to its options.
    subscriptions: HashMap<String, SubOptions>,
    generation: u64,
    attachment: Option<Attachment>,
    parked: Option<Owned>,
}

#[derive(Debug, Default)]
struct Tenant {
    /// The tenant's quotas, as its latest CONNECT read them.
    quotas: Quotas,
    /// Sessions, connected or parked.
    sessions: usize,
    /// Bytes of the retained messages ([`Message::retained_size`]).
    retained_bytes: usize,
    trie: Trie,
    /// By topic, in order: a filter's retained messages are a range scan
    /// from its literal prefix, done a page at a time.
    retained: BTreeMap<String, Arc<Message>>,
}

#[derive(Debug)]
struct DeviceEntry {
    connections: usize,
    bucket: Option<Arc<Mutex<TokenBucket>>>,
}

#[derive(Debug)]
struct Waiter {
    correlation: Bytes,
    /// The only device whose sessions may answer.
    device: String,
    tx: oneshot::Sender<Arc<Message>>,
}

/// The outcome of [`Router::attach`].
#[derive(Debug)]
pub(crate) enum Attach {
    /// Another connection holds the session; it has been told to go. Wait
    /// for the receiver to close, then attach again.
    Busy(watch::Receiver<()>),
    /// The session is this connection's.
    Attached(Attached),
    /// The session table is full.
    TooManySessions,
    /// A new session would take the tenant over a quota: its sessions, or
    /// the sessions of the device.
    Quota(QuotaExceeded),
}

/// A session, attached.
#[derive(Debug)]
pub(crate) struct Attached {
    pub(crate) session: Arc<Session>,
    pub(crate) generation: u64,
    /// Whether an existing session was resumed.
    pub(crate) present: bool,
    pub(crate) owned: Owned,
    /// Fires when another connection takes the session over.
    pub(crate) kick: oneshot::Receiver<Kick>,
    /// Dropped when the connection has let the session go.
    pub(crate) released: watch::Sender<()>,
}

/// The outcome of [`Router::detach`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detached {
    /// The session ended with the connection.
    Removed,
    /// The session is kept; expire it after its expiry interval.
    Parked,
    /// Another connection holds the session now (a forced takeover).
    Stale,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    /// The session holds its maximum number of subscriptions.
    TooMany,
    /// The session is gone (taken over with a clean start).
    NoSession,
}

/// Where a routed message went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Reach {
    /// Sessions with a connection attached that queued it for sending.
    pub(crate) online: usize,
    /// Sessions without a connection (persistent, offline) that queued it
    /// until their client reconnects or the message expires.
    pub(crate) queued: usize,
    /// In-process requests it answered.
    pub(crate) answered: usize,
}

impl Reach {
    /// Sessions and requests reached, in all.
    pub(crate) fn total(self) -> usize {
        self.online + self.queued + self.answered
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Router {
    config: Arc<MqttConfig>,
    metrics: MqttMetrics,
    next_id: SessionId,
    keys: HashMap<(String, String), SessionId>,
    sessions: HashMap<SessionId, Entry>,
    tenants: HashMap<String, Tenant>,
    devices: HashMap<(String, String), DeviceEntry>,
    waiters: HashMap<(String, String), Vec<Waiter>>,
    waiter_count: usize,
    /// Sessions of each device, by (tenant, device).
    device_sessions: HashMap<(String, String), usize>,
    quota_metrics: QuotaMetrics,
}

/// Most retained messages one [`Router::retained_page`] examines.
pub(crate) const RETAINED_SCAN: usize = 256;

/// A page of retained messages for a subscription.
#[derive(Debug, Default)]
pub(crate) struct RetainedPage {
    pub(crate) messages: Vec<Arc<Message>>,
    /// The topic the next page starts after; `None` when there is no more.
    pub(crate) next: Option<String>,
}

/// Most in-process requests waiting for a response at once.
pub(crate) const MAX_WAITERS: usize = 65_536;

impl Router {
    pub(crate) fn new(
        config: Arc<MqttConfig>,
        metrics: MqttMetrics,
        quota_metrics: QuotaMetrics,
    ) -> Self {
        Self {
            device_sessions: HashMap::new(),
            quota_metrics,
            config,
            metrics,
            next_id: 1,
            keys: HashMap::new(),
            sessions: HashMap::new(),
            tenants: HashMap::new(),
            devices: HashMap::new(),
            waiters: HashMap::new(),
            waiter_count: 0,
        }
    }

    /// Attaches a connection to the session `(tenant, client_id)`, creating
    /// it (or replacing it, on a clean start) as needed. When another
    /// connection holds the session, it is kicked and [`Attach::Busy`]
    /// returned, unless `force` (the other connection did not let go in
    /// time), which detaches it here.
    /// A new session is also checked against the tenant's `quotas` (its
    /// sessions, and those of `device`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attach(
        &mut self,
        tenant: &str,
        client_id: &str,
        device: Option<&str>,
        quotas: &Quotas,
        clean_start: bool,
        force: bool,
    ) -> Attach {
        let t = self.tenants.entry(tenant.to_owned()).or_default();
        if t.quotas != *quotas {
            t.quotas = quotas.clone();
        }
        let key = (tenant.to_owned(), client_id.to_owned());
        if let Some(&id) = self.keys.get(&key)
            && let Some(entry) = self.sessions.get_mut(&id)
        {
            if let Some(att) = entry.attachment.as_mut() {
                if !force {
                    if let Some(kick) = att.kick.take() {
                        let _ = kick.send(Kick::TakenOver);
                    }
                    return Attach::Busy(att.released.clone());
                }
                entry.attachment = None;
                entry.session.set_online(false);
            }
            if !clean_start {
                entry.generation += 1;
                let (kick_tx, kick) = oneshot::channel();
                let (released, released_rx) = watch::channel(());
                entry.attachment = Some(Attachment {
                    kick: Some(kick_tx),
                    released: released_rx,
                });
                entry.session.set_online(true);
                return Attach::Attached(Attached {
                    session: entry.session.clone(),
                    generation: entry.generation,
                    present: true,
                    owned: entry.parked.take().unwrap_or_default(),
                    kick,
                    released,
                });
            }
            self.remove_session(id);
        }
        if self.sessions.len() >= self.config.max_sessions {
            return Attach::TooManySessions;
        }
        let over = |quota: Quota, used: usize| {
            let limit = quotas.get(quota);
            (used as u64 >= limit).then(|| QuotaExceeded {
                tenant: tenant.to_owned(),
                quota,
                limit,
                retry_after_secs: None,
            })
        };
        let tenant_sessions = self.tenants.get(tenant).map_or(0, |t| t.sessions);
        if let Some(e) = over(Quota::Sessions, tenant_sessions) {
            return Attach::Quota(e);
        }
        let device_key = device.map(|d| (tenant.to_owned(), d.to_owned()));
        if let Some(key) = &device_key {
            let used = self.device_sessions.get(key).copied().unwrap_or(0);
            if let Some(e) = over(Quota::SessionsPerDevice, used) {
                return Attach::Quota(e);
            }
        }
        if let Some(key) = device_key {
            *self.device_sessions.entry(key).or_insert(0) += 1;
        }
        let t = self.tenants.entry(tenant.to_owned()).or_default();
        t.sessions += 1;
        let used = t.sessions;
        self.quota_metrics.observe(
            tenant,
            Quota::Sessions,
            quotas.get(Quota::Sessions),
            used as u64,
        );
        let id = self.next_id;
        self.next_id += 1;
        let session = Arc::new(Session::new(id));
        session.set_online(true);
        let (kick_tx, kick) = oneshot::channel();
        let (released, released_rx) = watch::channel(());
        self.sessions.insert(
            id,
            Entry {
                session: session.clone(),
                tenant: tenant.to_owned(),
                client_id: client_id.to_owned(),
                device: None,
                credential: None,
                owner: device.map(str::to_owned),
                subscriptions: HashMap::new(),
                generation: 1,
                attachment: Some(Attachment {
                    kick: Some(kick_tx),
                    released: released_rx,
                }),
                parked: None,
            },
        );
        self.keys.insert(key, id);
        self.metrics.set_sessions(self.sessions.len());
        Attach::Attached(Attached {
            session,
            generation: 1,
            present: false,
            owned: Owned::default(),
            kick,
            released,
        })
    }

    /// Whether a connection is attached to the session `(tenant, client_id)`
    /// (a CONNECT with that client id would take it over).
    pub(crate) fn is_attached(&self, tenant: &str, client_id: &str) -> bool {
        self.keys
            .get(&(tenant.to_owned(), client_id.to_owned()))
            .and_then(|id| self.sessions.get(id))
            .is_some_and(|e| e.attachment.is_some())
    }

    /// Records who the connection attached to session `id` is and with
    /// which credential, so that [`Router::kick_device`],
    /// [`Router::kick_credential`] and [`Router::attached_credentials`] find
    /// it.
    pub(crate) fn bind(&mut self, id: SessionId, identity: &Identity, credential: &Credential) {
        if let Some(entry) = self.sessions.get_mut(&id) {
            entry.device = identity.device().map(str::to_owned);
            entry.credential = Some(credential.clone());
        }
    }

    /// The sessions with a connection attached: (session, tenant, device,
    /// credential), to check every credential again.
    pub(crate) fn attached_credentials(
        &self,
    ) -> Vec<(SessionId, String, Option<String>, Credential)> {
        self.sessions
            .iter()
            .filter(|(_, e)| e.attachment.is_some())
            .filter_map(|(id, e)| {
                let credential = e.credential.clone()?;
                Some((*id, e.tenant.clone(), e.device.clone(), credential))
            })
            .collect()
    }

    /// Tells the connection attached to session `id` to go (its credential
    /// is no longer valid). Returns whether one was told.
    pub(crate) fn kick_session(&mut self, id: SessionId) -> bool {
        self.sessions
            .get_mut(&id)
            .and_then(|e| e.attachment.as_mut())
            .and_then(|a| a.kick.take())
            .is_some_and(|kick| kick.send(Kick::Revoked).is_ok())
    }

    /// Tells every connection that authenticated with the credential
    /// `credential` to go (it was revoked). Returns how many.
    pub(crate) fn kick_credential(&mut self, tenant: &str, credential: &str) -> usize {
        let mut kicked = 0;
        for entry in self.sessions.values_mut() {
            if entry.tenant == tenant
                && entry
                    .credential
                    .as_ref()
                    .is_some_and(|c| c.id == credential)
                && let Some(kick) = entry.attachment.as_mut().and_then(|a| a.kick.take())
            {
                let _ = kick.send(Kick::Revoked);
                kicked += 1;
            }
        }
        kicked
    }

    /// Tells the connections of `device` that authenticated with
    /// `credential`, or with a credential whose id is not known, to go (it
    /// was revoked). Connections of the device with another credential
    /// stay: revoking an old token after a rotation closes only what still
    /// uses it. Returns how many were told.
    pub(crate) fn kick_device_credential(
        &mut self,
        tenant: &str,
        device: &str,
        credential: &str,
    ) -> usize {
        let mut kicked = 0;
        for entry in self.sessions.values_mut() {
            if entry.tenant == tenant
                && entry.device.as_deref() == Some(device)
                && entry
                    .credential
                    .as_ref()
                    .is_none_or(|c| c.id.is_empty() || c.id == credential)
                && let Some(kick) = entry.attachment.as_mut().and_then(|a| a.kick.take())
            {
                let _ = kick.send(Kick::Revoked);
                kicked += 1;
            }
        }
        kicked
    }

    /// Tells every connection of `device` to go (its credentials were
    /// revoked, or the device disabled or deleted). Returns how many were
    /// told. Revocations are rare, so a scan of the sessions is fine.
    pub(crate) fn kick_device(&mut self, tenant: &str, device: &str) -> usize {
        let mut kicked = 0;
        for entry in self.sessions.values_mut() {
            if entry.tenant == tenant
                && entry.device.as_deref() == Some(device)
                && let Some(kick) = entry.attachment.as_mut().and_then(|a| a.kick.take())
            {
                let _ = kick.send(Kick::Revoked);
                kicked += 1;
            }
        }
        kicked
    }

    /// Lets a session go: ends it when `expiry_secs` is 0, parks the
    /// connection-owned state otherwise.
    pub(crate) fn detach(
        &mut self,
        id: SessionId,
        generation: u64,
        owned: Owned,
        expiry_secs: u32,
    ) -> Detached {
        let Some(entry) = self
            .sessions
            .get_mut(&id)
            .filter(|e| e.generation == generation)
        else {
            return Detached::Stale;
        };
        entry.attachment = None;
        entry.session.set_online(false);
        if expiry_secs == 0 {
            self.remove_session(id);
            return Detached::Removed;
        }
        entry.parked = Some(owned);
        Detached::Parked
    }

    /// Ends a parked session whose expiry interval has passed, unless a
    /// connection resumed it since.
    pub(crate) fn expire(&mut self, id: SessionId, generation: u64) {
        let expired = self
            .sessions
            .get(&id)
            .is_some_and(|e| e.generation == generation && e.attachment.is_none());
        if expired {
            self.remove_session(id);
        }
    }

    /// Whether a connection resumed the session after the detach of
    /// `generation` (a pending will is then not published).
    pub(crate) fn resumed_since(&self, id: SessionId, generation: u64) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|e| e.generation != generation)
    }

    fn remove_session(&mut self, id: SessionId) {
        let Some(entry) = self.sessions.remove(&id) else {
            return;
        };
        self.keys
            .remove(&(entry.tenant.clone(), entry.client_id.clone()));
        if let Some(device) = entry.owner.clone() {
            let key = (entry.tenant.clone(), device);
            if let Some(n) = self.device_sessions.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.device_sessions.remove(&key);
                }
            }
        }
        if let Some(tenant) = self.tenants.get_mut(&entry.tenant) {
            for filter in entry.subscriptions.keys() {
                let (group, inner) = split_filter(filter);
                tenant.trie.remove(inner, group, id);
            }
            tenant.sessions = tenant.sessions.saturating_sub(1);
            self.quota_metrics.observe(
                &entry.tenant,
                Quota::Sessions,
                tenant.quotas.get(Quota::Sessions),
                tenant.sessions as u64,
            );
        }
        entry.session.clear();
        self.metrics.set_sessions(self.sessions.len());
    }

    /// Adds or replaces a subscription of a session. Returns whether it
    /// existed before.
    pub(crate) fn subscribe(
        &mut self,
        id: SessionId,
        filter: &str,
        options: SubOptions,
    ) -> Result<bool, SubscribeError> {
        let entry = self
            .sessions
            .get_mut(&id)
            .ok_or(SubscribeError::NoSession)?;
        if !entry.subscriptions.contains_key(filter)
            && entry.subscriptions.len() >= self.config.max_subscriptions_per_session
        {
            return Err(SubscribeError::TooMany);
        }
        entry.subscriptions.insert(filter.to_owned(), options);
        let (group, inner) = split_filter(filter);
        let tenant = self.tenants.entry(entry.tenant.clone()).or_default();
        Ok(tenant.trie.insert(
            inner,
            group,
            Subscriber {
                session: id,
                options,
            },
        ))
    }

    /// Removes every subscription of session `id` whose filter `keep`
    /// refuses; returns how many went.
    pub(crate) fn retain_subscriptions(
        &mut self,
        id: SessionId,
        keep: impl Fn(&str) -> bool,
    ) -> usize {
        let Some(entry) = self.sessions.get(&id) else {
            return 0;
        };
        let refused: Vec<String> = entry
            .subscriptions
            .keys()
            .filter(|f| !keep(f))
            .cloned()
            .collect();
        for filter in &refused {
            self.unsubscribe(id, filter);
        }
        refused.len()
    }

    /// Removes a subscription; returns whether it existed.
    pub(crate) fn unsubscribe(&mut self, id: SessionId, filter: &str) -> bool {
        let Some(entry) = self.sessions.get_mut(&id) else {
            return false;
        };
        if entry.subscriptions.remove(filter).is_none() {
            return false;
        }
        let (group, inner) = split_filter(filter);
        if let Some(tenant) = self.tenants.get_mut(&entry.tenant) {
            tenant.trie.remove(inner, group, id);
        }
        true
    }

    /// A page of the unexpired retained messages of `tenant` that `filter`
    /// (a plain filter, not `$share/...`) matches, in topic order, starting
    /// after the topic `after`. It examines at most [`RETAINED_SCAN`]
    /// retained messages and returns at most `max`, so the router lock is
    /// held for a bounded time however many messages are retained; the
    /// page's `next` is where the following page starts (`None`: done).
    pub(crate) fn retained_page(
        &self,
        tenant: &str,
        filter: &str,
        after: Option<&str>,
        max: usize,
    ) -> RetainedPage {
        let mut page = RetainedPage::default();
        let Some(t) = self.tenants.get(tenant) else {
            return page;
        };
        let now = Instant::now();
        let prefix = literal_prefix(filter);
        if prefix.len() == filter.len() {
            // No wildcard: one lookup.
            if after.is_none()
                && let Some(m) = t.retained.get(filter)
                && !m.expired(now)
            {
                page.messages.push(m.clone());
            }
            return page;
        }
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Included(prefix),
        };
        let mut last: Option<&str> = None;
        let range = t.retained.range::<str, _>((start, Bound::Unbounded));
        for (scanned, (topic, m)) in range.enumerate() {
            if !topic.starts_with(prefix) {
                break;
            }
            if scanned == RETAINED_SCAN || page.messages.len() == max {
                page.next = last.map(str::to_owned);
                return page;
            }
            last = Some(topic);
            if !m.expired(now) && matches(filter, topic) {
                page.messages.push(m.clone());
            }
        }
        page
    }

    /// Routes a message published in `tenant` (by session `from`, if a
    /// session published it) to every matching subscription and waiting
    /// request, and updates the retained store. Returns how many sessions
    /// or requests it reached.
    pub(crate) fn route(
        &mut self,
        tenant: &str,
        message: Message,
        from: Option<SessionId>,
    ) -> usize {
        self.route_reach(tenant, message, from).total()
    }

    /// [`Router::route`], telling connected sessions, offline sessions and
    /// answered requests apart.
    pub(crate) fn route_reach(
        &mut self,
        tenant: &str,
        message: Message,
        from: Option<SessionId>,
    ) -> Reach {
        let message = Arc::new(message);
        if message.retain {
            self.retain(tenant, &message);
        }
        let mut reach = Reach {
            answered: self.answer_waiter(tenant, &message, from),
            ..Reach::default()
        };
        let Some(t) = self.tenants.get_mut(tenant) else {
            return reach;
        };
        let found = t.trie.matches(&message.topic);
        if found.plain.is_empty() && found.shared.is_empty() {
            return reach;
        }
        // One delivery per session, at the highest QoS of its matching
        // subscriptions, with all their identifiers (MQTT 5.0 §4.5).
        let mut targets: Vec<(SessionId, Delivery)> = Vec::with_capacity(found.plain.len());
        for s in &found.plain {
            if s.options.no_local && Some(s.session) == from {
                continue;
            }
            let qos = message.qos.min(s.options.qos);
            let retain = message.retain && s.options.retain_as_published;
            match targets.iter_mut().find(|(id, _)| *id == s.session) {
                Some((_, d)) => {
                    d.qos = d.qos.max(qos);
                    d.retain |= retain;
                    d.subscription_ids.extend(s.options.id);
                }
                None => targets.push((
                    s.session,
                    Delivery {
                        message: message.clone(),
                        qos,
                        retain,
                        subscription_ids: s.options.id.into_iter().collect(),
                    },
                )),
            }
        }
        for (members, start) in &found.shared {
            let n = members.len();
            let pick = (0..n)
                .map(|i| &members[(start + i) % n])
                .find(|m| {
                    self.sessions
                        .get(&m.session)
                        .is_some_and(|e| e.session.is_online())
                })
                .or_else(|| members.get(start % n.max(1)));
            if let Some(m) = pick {
                targets.push((
                    m.session,
                    Delivery {
                        message: message.clone(),
                        qos: message.qos.min(m.options.qos),
                        retain: message.retain && m.options.retain_as_published,
                        subscription_ids: m.options.id.into_iter().collect(),
                    },
                ));
            }
        }
        for (id, delivery) in targets {
            let Some(entry) = self.sessions.get(&id) else {
                continue;
            };
            // Attach and detach change `online` under the router lock, which
            // is held here: the answer cannot change before the enqueue.
            let online = entry.session.is_online();
            match entry
                .session
                .enqueue(delivery, self.config.max_queued_messages)
            {
                Ok(()) if online => reach.online += 1,
                Ok(()) => reach.queued += 1,
                Err(Refused::Offline) => self.metrics.dropped(MessageDrop::OfflineQos0),
                Err(Refused::QueueFull) => self.metrics.dropped(MessageDrop::QueueFull),
            }
        }
        reach
    }

    /// Whether `message`, published with the retain flag, fits the tenant's
    /// retained-message quotas (count and bytes: topic, properties and
    /// payload), counting what it replaces. A publisher is refused when it
    /// does not (0x97), rather than having its message silently not kept.
    pub(crate) fn check_retain(
        &self,
        tenant: &str,
        message: &Message,
    ) -> Result<(), QuotaExceeded> {
        if !message.retain || message.payload.is_empty() {
            return Ok(());
        }
        let Some(t) = self.tenants.get(tenant) else {
            return Ok(());
        };
        let replaced = t.retained.get(&message.topic);
        let count = t.retained.len() + usize::from(replaced.is_none());
        let bytes =
            t.retained_bytes - replaced.map_or(0, |m| m.retained_size()) + message.retained_size();
        for (quota, used) in [
            (Quota::RetainedMessages, count),
            (Quota::RetainedBytes, bytes),
        ] {
            let limit = t.quotas.get(quota);
            if used as u64 > limit {
                return Err(QuotaExceeded {
                    tenant: tenant.to_owned(),
                    quota,
                    limit,
                    retry_after_secs: None,
                });
            }
        }
        Ok(())
    }

    fn retain(&mut self, tenant: &str, message: &Arc<Message>) {
        let t = self.tenants.entry(tenant.to_owned()).or_default();
        if message.payload.is_empty() {
            if let Some(old) = t.retained.remove(&message.topic) {
                t.retained_bytes -= old.retained_size();
                self.metrics.retained_delta(-1);
            }
        } else if message.payload.len() > self.config.max_retained_payload {
            self.metrics.dropped(MessageDrop::RetainedTooLarge);
            return;
        } else {
            let replaced = t.retained.get(&message.topic).map(|m| m.retained_size());
            let is_new = replaced.is_none();
            let count = t.retained.len() + usize::from(is_new);
            let bytes = t.retained_bytes - replaced.unwrap_or(0) + message.retained_size();
            if (is_new && t.retained.len() >= self.config.max_retained_per_tenant)
                || count as u64 > t.quotas.get(Quota::RetainedMessages)
                || bytes as u64 > t.quotas.get(Quota::RetainedBytes)
            {
                self.metrics.dropped(MessageDrop::RetainedLimit);
                return;
            }
            let mut stored = (**message).clone();
            stored.retain = true;
            t.retained.insert(message.topic.clone(), Arc::new(stored));
            t.retained_bytes = bytes;
            if is_new {
                self.metrics.retained_delta(1);
            }
        }
        let (count, bytes) = (t.retained.len() as u64, t.retained_bytes as u64);
        let quotas = &t.quotas;
        self.quota_metrics.observe(
            tenant,
            Quota::RetainedMessages,
            quotas.get(Quota::RetainedMessages),
            count,
        );
        self.quota_metrics.observe(
            tenant,
            Quota::RetainedBytes,
            quotas.get(Quota::RetainedBytes),
            bytes,
        );
    }

    /// Hands a message to the in-process request waiting on its topic, if a
    /// session of the request's device published it (never another device,
    /// an application or the platform): the request with the same
    /// correlation data, or, when the message has none (a 3.1.1 device
    /// cannot echo it), the device's oldest request on the topic.
    fn answer_waiter(
        &mut self,
        tenant: &str,
        message: &Arc<Message>,
        from: Option<SessionId>,
    ) -> usize {
        if self.waiters.is_empty() {
            return 0;
        }
        let Some(publisher) = from
            .and_then(|id| self.sessions.get(&id))
            .and_then(|e| e.device.as_deref())
        else {
            return 0;
        };
        let key = (tenant.to_owned(), message.topic.clone());
        let Some(list) = self.waiters.get_mut(&key) else {
            return 0;
        };
        let index = match &message.correlation_data {
            Some(c) => list
                .iter()
                .position(|w| w.correlation == *c && w.device == publisher),
            None => list.iter().position(|w| w.device == publisher),
        };
        let Some(index) = index else { return 0 };
        let waiter = list.remove(index);
        if list.is_empty() {
            self.waiters.remove(&key);
        }
        self.waiter_count -= 1;
        usize::from(waiter.tx.send(message.clone()).is_ok())
    }

    /// Registers an in-process request waiting for a message on `topic`
    /// with `correlation` data. `None` when too many are waiting.
    pub(crate) fn add_waiter(
        &mut self,
        tenant: &str,
        device: &str,
        topic: &str,
        correlation: Bytes,
    ) -> Option<oneshot::Receiver<Arc<Message>>> {
        if self.waiter_count >= MAX_WAITERS {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.waiters
            .entry((tenant.to_owned(), topic.to_owned()))
            .or_default()
            .push(Waiter {
                correlation,
                device: device.to_owned(),
                tx,
            });
        self.waiter_count += 1;
        Some(rx)
    }

    /// Forgets a waiting request (it timed out or was answered).
    pub(crate) fn remove_waiter(&mut self, tenant: &str, topic: &str, correlation: &Bytes) {
        let key = (tenant.to_owned(), topic.to_owned());
        let Some(list) = self.waiters.get_mut(&key) else {
            return;
        };
        let before = list.len();
        list.retain(|w| w.correlation != *correlation);
        self.waiter_count -= before - list.len();
        if list.is_empty() {
            self.waiters.remove(&key);
        }
    }

    /// Whether the device has a connection (past CONNACK) right now.
    pub(crate) fn device_online(&self, tenant: &str, device: &str) -> bool {
        self.devices
            .get(&(tenant.to_owned(), device.to_owned()))
            .is_some_and(|e| e.connections > 0)
    }

    /// Counts a connection of a device. Returns whether it is the device's
    /// first (it just came online) and its publish rate bucket.
    pub(crate) fn device_connected(
        &mut self,
        tenant: &str,
        device: &str,
    ) -> (bool, Option<Arc<Mutex<TokenBucket>>>) {
        let rate = self.config.publish_rate_per_device;
        let burst = self.config.publish_burst_per_device;
        let entry = self
            .devices
            .entry((tenant.to_owned(), device.to_owned()))
            .or_insert_with(|| DeviceEntry {
                connections: 0,
                bucket: (rate > 0.0).then(|| {
                    Arc::new(Mutex::new(TokenBucket::new(
                        rate,
                        f64::from(burst),
                        Instant::now(),
                    )))
                }),
            });
        entry.connections += 1;
        (entry.connections == 1, entry.bucket.clone())
    }

    /// Counts a connection of a device gone. Returns whether it was the
    /// device's last (it just went offline). The device's rate bucket is
    /// kept until it has refilled, so reconnecting does not reset the limit.
    pub(crate) fn device_disconnected(&mut self, tenant: &str, device: &str) -> bool {
        let key = (tenant.to_owned(), device.to_owned());
        let Some(entry) = self.devices.get_mut(&key) else {
            return false;
        };
        entry.connections = entry.connections.saturating_sub(1);
        let last = entry.connections == 0;
        if last {
            let now = Instant::now();
            let spent = |e: &DeviceEntry| {
                e.bucket.as_ref().is_some_and(|b| {
                    !b.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_full(now)
                })
            };
            if !spent(entry) {
                self.devices.remove(&key);
            }
            // Forget offline devices whose buckets have refilled, so the
            // table stays about as large as the connections.
            if self.devices.len() > 2 * self.config.max_connections {
                self.devices.retain(|_, e| e.connections > 0 || spent(e));
            }
        }
        last
    }
}

/// The part of a valid topic filter before its first wildcard level, which
/// every topic it matches starts with (`a/b/#` gives `a/b`: `#` matches the
/// parent level too). The whole filter when it has no wildcard.
fn literal_prefix(filter: &str) -> &str {
    match filter.find(['+', '#']) {
        Some(i) if filter[i..].starts_with('#') => filter[..i].strip_suffix('/').unwrap_or(""),
        Some(i) => &filter[..i],
        None => filter,
    }
}

/// Splits `$share/{group}/{filter}` into its group and filter; a plain
/// filter has no group.
fn split_filter(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Ok(Some(shared)) => (Some(shared.group), shared.filter),
        _ => (None, filter),
    }
}

#[cfg(test)]
mod tests {
    use tributary_mqtt_codec::QoS;

    use super::*;

    fn router() -> Router {
        Router::new(
            Arc::new(MqttConfig {
                max_queued_messages: 10,
                ..MqttConfig::default()
            }),
            MqttMetrics::default(),
            QuotaMetrics::default(),
        )
    }

    fn attach(r: &mut Router, tenant: &str, client: &str, clean: bool) -> Attached {
        match r.attach(tenant, client, None, &Quotas::default(), clean, false) {
            Attach::Attached(a) => a,
            other => panic!("expected attached, got {other:?}"),
        }
    }

    fn opts(qos: QoS) -> SubOptions {
        SubOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            id: None,
        }
    }

    fn publish(qos: QoS, topic: &str, retain: bool) -> Message {
        let mut m = Message::new(topic, "x");
        m.qos = qos;
        m.retain = retain;
        m
    }

    #[test]
    fn tenants_do_not_see_each_other() {
        let mut r = router();
        let a = attach(&mut r, "acme", "d1", true);
        let b = attach(&mut r, "other", "d1", true);
        r.subscribe(a.session.id, "devices/d1/#", opts(QoS::AtLeastOnce))
            .unwrap();
        r.subscribe(b.session.id, "devices/d1/#", opts(QoS::AtLeastOnce))
            .unwrap();
        assert_eq!(
            r.route(
                "acme",
                publish(QoS::AtLeastOnce, "devices/d1/x", true),
                None
            ),
            1
        );
        assert!(a.session.has_queued());
        assert!(!b.session.has_queued(), "the other tenant got nothing");
        assert_eq!(
            r.retained_page("acme", "devices/d1/#", None, 10)
                .messages
                .len(),
            1
        );
        assert!(
            r.retained_page("other", "devices/d1/#", None, 10)
                .messages
                .is_empty()
        );
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
        let mut r = router();
        let a = attach(&mut r, "t", "c", true);
        r.subscribe(a.session.id, "x/#", opts(QoS::AtMostOnce))
            .unwrap();
        r.subscribe(a.session.id, "x/+", opts(QoS::ExactlyOnce))
            .unwrap();
        r.route("t", publish(QoS::ExactlyOnce, "x/y", false), None);
        let (got, _) = a.session.take(10, 10, usize::MAX, Instant::now());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].qos, QoS::ExactlyOnce);
    }

    #[test]
    fn takeover_kicks_then_resumes_or_cleans() {
        let mut r = router();
        let first = attach(&mut r, "t", "c", false);
        r.subscribe(first.session.id, "a", opts(QoS::AtLeastOnce))
            .unwrap();
        let Attach::Busy(_) = r.attach("t", "c", None, &Quotas::default(), false, false) else {
            panic!("expected busy")
        };
        let mut kick = first.kick;
        assert_eq!(kick.try_recv(), Ok(Kick::TakenOver));
        assert_eq!(
            r.detach(first.session.id, first.generation, Owned::default(), 60),
            Detached::Parked
        );
        // Offline persistent session: QoS 1 is queued, QoS 0 is not.
        assert_eq!(
            r.route_reach("t", publish(QoS::AtLeastOnce, "a", false), None),
            Reach {
                online: 0,
                queued: 1,
                answered: 0
            }
        );
        assert_eq!(r.route("t", publish(QoS::AtMostOnce, "a", false), None), 0);
        let second = attach(&mut r, "t", "c", false);
        assert!(second.present);
        assert_eq!(
            second
                .session
                .take(10, 10, usize::MAX, Instant::now())
                .0
                .len(),
            1
        );
        assert!(r.resumed_since(first.session.id, first.generation));
        // A clean start drops the old session and its subscription.
        assert_eq!(
            r.detach(second.session.id, second.generation, Owned::default(), 60),
            Detached::Parked
        );
        let third = attach(&mut r, "t", "c", true);
        assert!(!third.present);
        assert_eq!(r.route("t", publish(QoS::AtLeastOnce, "a", false), None), 0);
    }

    fn device_identity(device: &str) -> Identity {
        Identity::Device {
            tenant: "t".into(),
            device: device.into(),
        }
    }

    #[test]
    fn waiters_get_their_response_from_their_device_by_correlation() {
        let mut r = router();
        let d1 = attach(&mut r, "t", "d1", true);
        r.bind(
            d1.session.id,
            &device_identity("d1"),
            &Credential::default(),
        );
        let d2 = attach(&mut r, "t", "d2", true);
        r.bind(
            d2.session.id,
            &device_identity("d2"),
            &Credential::default(),
        );
        let app = attach(&mut r, "t", "$app/dash/x", true);
        let mut rx1 = r
            .add_waiter("t", "d1", "resp", Bytes::from_static(b"1"))
            .unwrap();
        let mut rx2 = r
            .add_waiter("t", "d1", "resp", Bytes::from_static(b"2"))
            .unwrap();
        let reply = |c: Option<&'static [u8]>| {
            let mut m = publish(QoS::AtLeastOnce, "resp", false);
            m.correlation_data = c.map(Bytes::from_static);
            m
        };
        // Not from the device: another device, an application, the platform.
        assert_eq!(r.route("t", reply(Some(b"2")), Some(d2.session.id)), 0);
        assert_eq!(r.route("t", reply(Some(b"2")), Some(app.session.id)), 0);
        assert_eq!(r.route("t", reply(Some(b"2")), None), 0);
        // Wrong correlation data.
        assert_eq!(r.route("t", reply(Some(b"9")), Some(d1.session.id)), 0);
        assert!(rx1.try_recv().is_err() && rx2.try_recv().is_err());
        // The device, with the right correlation data.
        assert_eq!(r.route("t", reply(Some(b"2")), Some(d1.session.id)), 1);
        assert!(rx2.try_recv().is_ok());
        assert!(rx1.try_recv().is_err());
        // A 3.1.1 device cannot echo correlation data: its oldest request.
        assert_eq!(r.route("t", reply(None), Some(d1.session.id)), 1);
        assert!(rx1.try_recv().is_ok());
        assert_eq!(r.waiter_count, 0);
    }

    #[test]
    fn retained_messages_come_in_bounded_pages_from_the_filter_prefix() {
        let mut r = router();
        for i in 0..1_000 {
            r.route(
                "acme",
                publish(QoS::AtMostOnce, &format!("devices/d{i:04}/state"), true),
                None,
            );
        }
        r.route(
            "acme",
            publish(QoS::AtMostOnce, "devices/d0007", true),
            None,
        );
        // A literal prefix is a range, not a scan of the tenant.
        let page = r.retained_page("acme", "devices/d0007/#", None, 64);
        let topics: Vec<&str> = page.messages.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["devices/d0007", "devices/d0007/state"]);
        assert_eq!(page.next, None);
        // A filter that matches everything is served a page at a time,
        // each examining at most RETAINED_SCAN messages, and loses none.
        let mut seen = 0;
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = r.retained_page("acme", "devices/+/state", after.as_deref(), 64);
            assert!(page.messages.len() <= 64);
            seen += page.messages.len();
            pages += 1;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, 1_000);
        assert!(pages >= 1_001 / RETAINED_SCAN, "{pages} pages");
        assert_eq!(literal_prefix("#"), "");
        assert_eq!(literal_prefix("a/+/b"), "a/");
        assert_eq!(literal_prefix("a/b"), "a/b");
    }

    #[test]
    fn sessions_are_bounded_per_tenant_and_per_device() {
        let mut r = router();
        let q = Quotas::from_named([("sessions", 3), ("sessions_per_device", 2)]).unwrap();
        let open = |r: &mut Router, tenant: &str, client: &str, device: &str| {
            r.attach(tenant, client, Some(device), &q, true, false)
        };
        assert!(matches!(open(&mut r, "t", "d1", "d1"), Attach::Attached(_)));
        assert!(matches!(
            open(&mut r, "t", "d1/a", "d1"),
            Attach::Attached(_)
        ));
        let Attach::Quota(e) = open(&mut r, "t", "d1/b", "d1") else {
            panic!("a third session of d1")
        };
        assert_eq!((e.quota, e.limit), (Quota::SessionsPerDevice, 2));
        assert!(matches!(open(&mut r, "t", "d2", "d2"), Attach::Attached(_)));
        let Attach::Quota(e) = open(&mut r, "t", "d3", "d3") else {
            panic!("a fourth session of the tenant")
        };
        assert_eq!((e.quota, e.limit), (Quota::Sessions, 3));
        // Another tenant is not affected.
        assert!(matches!(open(&mut r, "u", "d3", "d3"), Attach::Attached(_)));
        // A session that ends gives its place back.
        let id = r.keys[&("t".to_owned(), "d1/a".to_owned())];
        r.remove_session(id);
        assert!(matches!(
            open(&mut r, "t", "d1/b", "d1"),
            Attach::Attached(_)
        ));
    }

    #[test]
    fn retained_quotas_count_messages_and_bytes_of_every_part() {
        let mut r = router();
        let q = Quotas::from_named([("retained_messages", 2), ("retained_bytes", 100)]).unwrap();
        let _ = r.attach("t", "c", None, &q, true, false);
        let retained = |topic: &str, payload: &str| {
            let mut m = Message::new(topic, payload.to_owned());
            m.retain = true;
            m
        };
        let a = retained("a", "1234567890");
        assert!(r.check_retain("t", &a).is_ok());
        r.route("t", a, None);
        r.route("t", retained("b", "x"), None);
        // A third topic is over the count; replacing one is not.
        let e = r.check_retain("t", &retained("c", "x")).unwrap_err();
        assert_eq!(e.quota, Quota::RetainedMessages);
        assert!(r.check_retain("t", &retained("b", "y")).is_ok());
        // Bytes count the topic and the properties, not the payload alone.
        let mut big = retained("b", "y");
        big.user_properties.push(("k".into(), "v".repeat(90)));
        let e = r.check_retain("t", &big).unwrap_err();
        assert_eq!(e.quota, Quota::RetainedBytes);
        // Deleting a retained message frees its place.
        r.route("t", retained("b", ""), None);
        assert!(r.check_retain("t", &retained("c", "x")).is_ok());
    }
}

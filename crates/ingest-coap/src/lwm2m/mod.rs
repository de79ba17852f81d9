//! An LwM2M 1.1 server (OMA LwM2M Core): the registration interface on
//! `/rd`, and telemetry from observations.
//!
//! A device registers with `POST /rd?ep=…&lt=…&lwm2m=1.1&b=U` and its
//! objects in link format; it is then **online** (presence), until it
//! deregisters (`DELETE /rd/{id}`) or its lifetime passes without an
//! update (`POST /rd/{id}`). It authenticates as for every CoAP request: by
//! its DTLS session, or by its token in option 65003 on plain CoAP.
//!
//! After registering, the server observes the resources it has a metric
//! name for ([`mapping`]: IPSO temperature, humidity, voltage, and the
//! device's battery level), and stores each notification as a point of the
//! device, acknowledging a confirmable one only once it is durable.
//!
//! Every table is bounded: registrations in all and per tenant, object
//! links per registration, observations per registration.

pub(crate) mod commands;
pub(crate) mod interface;
pub(crate) mod link;
pub(crate) mod mapping;
mod server;
pub(crate) mod tlv;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tributary_coap_codec::Token;

use crate::lock;
use link::ObjectLink;

/// The bounds of the registration table.
#[derive(Debug, Clone)]
pub(crate) struct Lwm2mBounds {
    pub max_registrations: usize,
    pub max_per_tenant: usize,
    pub max_lifetime: Duration,
}

/// One resource observed for a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    pub registration: String,
    pub tenant: String,
    pub device: String,
    pub path: (u16, u16, u16),
    pub metric: String,
    pub float: bool,
}

/// A registered LwM2M client.
#[derive(Debug, Clone)]
pub(crate) struct Registration {
    pub id: String,
    pub tenant: String,
    pub device: String,
    pub credential: String,
    /// The endpoint name the client gave (`ep`).
    pub endpoint: String,
    pub peer: SocketAddr,
    pub lifetime: Duration,
    pub expires: Instant,
    /// When the client last sent something (registered, updated,
    /// notified): a client in queue mode is reachable only for a while
    /// after that.
    pub last_seen: Instant,
    pub binding: String,
    pub queue: bool,
    pub version: String,
    pub objects: Vec<ObjectLink>,
    /// Tokens of its observations.
    pub tokens: Vec<Token>,
}

#[derive(Debug, Default)]
struct Table {
    by_id: HashMap<String, Registration>,
    by_device: HashMap<(String, String), String>,
    per_tenant: HashMap<String, usize>,
    observations: HashMap<Token, Observed>,
}

/// The LwM2M registrations of one CoAP listener.
#[derive(Debug)]
pub(crate) struct Lwm2m {
    table: Mutex<Table>,
    bounds: Lwm2mBounds,
    /// Woken by every update: requests held for queue-mode clients go out.
    updated: tokio::sync::Notify,
    /// Requests held for queue-mode clients.
    held: std::sync::atomic::AtomicUsize,
}

/// What a register request asks for, from its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegisterParams {
    pub endpoint: String,
    pub lifetime: Duration,
    pub version: String,
    pub binding: String,
    pub queue: bool,
}

/// The longest endpoint name taken.
pub(crate) const MAX_ENDPOINT_BYTES: usize = 128;

/// Reads a register (`update: false`) or update request's query. Unknown
/// parameters are ignored, as the specification asks; a bad value is an
/// error naming it.
pub(crate) fn params<'a>(
    query: impl Iterator<Item = &'a [u8]>,
    update: bool,
    max_lifetime: Duration,
) -> Result<(Option<RegisterParams>, Option<Duration>), String> {
    let mut endpoint = None;
    let mut lifetime = None;
    let mut version = "1.0".to_owned();
    let mut binding = "U".to_owned();
    let mut queue = false;
    for q in query {
        let q = std::str::from_utf8(q).map_err(|_| "a Uri-Query is not UTF-8".to_owned())?;
        let (key, value) = q.split_once('=').unwrap_or((q, ""));
        match key {
            "ep" => {
                if value.is_empty() || value.len() > MAX_ENDPOINT_BYTES {
                    return Err(format!("ep: 1 to {MAX_ENDPOINT_BYTES} bytes"));
                }
                endpoint = Some(value.to_owned());
            }
            "lt" => {
                let secs: u64 = value
                    .parse()
                    .ok()
                    .filter(|s| *s > 0 && *s <= max_lifetime.as_secs())
                    .ok_or_else(|| format!("lt: 1 to {} seconds", max_lifetime.as_secs()))?;
                lifetime = Some(Duration::from_secs(secs));
            }
            "lwm2m" => {
                if !["1.0", "1.1", "1.2"].contains(&value) {
                    return Err("lwm2m: 1.0, 1.1 or 1.2".into());
                }
                version = value.to_owned();
            }
            "b" => {
                if value.is_empty()
                    || value.len() > 8
                    || !value.bytes().all(|c| c.is_ascii_uppercase())
                {
                    return Err("b: a binding such as U".into());
                }
                // LwM2M 1.0 wrote queue mode as a binding ("UQ").
                queue |= value.contains('Q');
                binding = value.to_owned();
            }
            "Q" => queue = true,
            // sms, et, … : known to the specification, not used here.
            _ => {}
        }
    }
    if update {
        return Ok((None, lifetime));
    }
    let endpoint = endpoint.ok_or("ep: the endpoint name is required")?;
    Ok((
        Some(RegisterParams {
            endpoint,
            lifetime: lifetime.unwrap_or(Duration::from_secs(86_400).min(max_lifetime)),
            version,
            binding,
            queue,
        }),
        lifetime,
    ))
}

impl Lwm2m {
    pub(crate) fn new(bounds: Lwm2mBounds) -> Self {
        Lwm2m {
            table: Mutex::new(Table::default()),
            bounds,
            updated: tokio::sync::Notify::new(),
            held: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub(crate) fn max_lifetime(&self) -> Duration {
        self.bounds.max_lifetime
    }

    /// Registers a device, replacing its earlier registration here (whose
    /// observations end). Returns the new registration, or the bound that
    /// refused it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn register(
        &self,
        tenant: &str,
        device: &str,
        credential: &str,
        peer: SocketAddr,
        params: RegisterParams,
        objects: Vec<ObjectLink>,
        now: Instant,
    ) -> Result<Registration, &'static str> {
        let mut t = lock(&self.table);
        let key = (tenant.to_owned(), device.to_owned());
        let replacing = t.by_device.get(&key).cloned();
        if replacing.is_none() {
            if t.by_id.len() >= self.bounds.max_registrations {
                return Err("registrations");
            }
            if t.per_tenant.get(tenant).copied().unwrap_or(0) >= self.bounds.max_per_tenant {
                return Err("tenant_registrations");
            }
        }
        if let Some(old) = replacing {
            Self::remove(&mut t, &old);
        }
        let id = format!("{:016x}", rand::random::<u64>());
        let reg = Registration {
            id: id.clone(),
            tenant: tenant.to_owned(),
            device: device.to_owned(),
            credential: credential.to_owned(),
            endpoint: params.endpoint,
            peer,
            lifetime: params.lifetime,
            expires: now + params.lifetime,
            last_seen: now,
            binding: params.binding,
            queue: params.queue,
            version: params.version,
            objects,
            tokens: Vec::new(),
        };
        t.by_device.insert(key, id.clone());
        *t.per_tenant.entry(tenant.to_owned()).or_default() += 1;
        t.by_id.insert(id, reg.clone());
        Ok(reg)
    }

    fn remove(t: &mut Table, id: &str) -> Option<Registration> {
        let reg = t.by_id.remove(id)?;
        t.by_device
            .remove(&(reg.tenant.clone(), reg.device.clone()));
        if let Some(n) = t.per_tenant.get_mut(&reg.tenant) {
            *n -= 1;
            if *n == 0 {
                t.per_tenant.remove(&reg.tenant);
            }
        }
        for token in &reg.tokens {
            t.observations.remove(token);
        }
        Some(reg)
    }

    /// An update from `device`: a new lifetime if given, the endpoint's
    /// current address. `None` when `id` is not this device's.
    pub(crate) fn update(
        &self,
        id: &str,
        tenant: &str,
        device: &str,
        peer: SocketAddr,
        lifetime: Option<Duration>,
        now: Instant,
    ) -> Option<Registration> {
        let mut t = lock(&self.table);
        let reg = t.by_id.get_mut(id)?;
        if reg.tenant != tenant || reg.device != device {
            return None;
        }
        if let Some(lt) = lifetime {
            reg.lifetime = lt;
        }
        reg.peer = peer;
        reg.expires = now + reg.lifetime;
        reg.last_seen = now;
        let reg = reg.clone();
        drop(t);
        self.updated.notify_waiters();
        Some(reg)
    }

    /// Deregisters `id` if it is `device`'s.
    pub(crate) fn deregister(&self, id: &str, tenant: &str, device: &str) -> Option<Registration> {
        let mut t = lock(&self.table);
        let reg = t.by_id.get(id)?;
        if reg.tenant != tenant || reg.device != device {
            return None;
        }
        Self::remove(&mut t, id)
    }

    /// Ends the registration of `device` (all of them with `credential:
    /// None`, else only one made with that credential).
    pub(crate) fn end_device(
        &self,
        tenant: &str,
        device: &str,
        credential: Option<&str>,
    ) -> Option<Registration> {
        let mut t = lock(&self.table);
        let id = t
            .by_device
            .get(&(tenant.to_owned(), device.to_owned()))?
            .clone();
        if credential.is_some_and(|c| t.by_id.get(&id).is_some_and(|r| r.credential != c)) {
            return None;
        }
        Self::remove(&mut t, &id)
    }

    /// Registrations past their lifetime, removed.
    pub(crate) fn expire(&self, now: Instant) -> Vec<Registration> {
        let mut t = lock(&self.table);
        let expired: Vec<String> = t
            .by_id
            .values()
            .filter(|r| r.expires <= now)
            .map(|r| r.id.clone())
            .collect();
        expired
            .iter()
            .filter_map(|id| Self::remove(&mut t, id))
            .collect()
    }

    /// Every registration's device and credential.
    pub(crate) fn registrations(&self) -> Vec<(String, String, String)> {
        lock(&self.table)
            .by_id
            .values()
            .map(|r| (r.tenant.clone(), r.device.clone(), r.credential.clone()))
            .collect()
    }

    pub(crate) fn len(&self) -> (usize, usize) {
        let t = lock(&self.table);
        (t.by_id.len(), t.observations.len())
    }

    /// Records an observation of `path` for registration `id` under a new
    /// token; `None` if the registration is gone.
    pub(crate) fn observe(
        &self,
        id: &str,
        path: (u16, u16, u16),
        metric: String,
        float: bool,
    ) -> Option<(Token, SocketAddr)> {
        let mut t = lock(&self.table);
        let reg = t.by_id.get(id)?;
        if reg.tokens.len() >= mapping::MAX_OBSERVED {
            return None;
        }
        let (tenant, device, peer) = (reg.tenant.clone(), reg.device.clone(), reg.peer);
        let token = loop {
            let candidate = Token::new(&rand::random::<u64>().to_be_bytes())
                .unwrap_or_else(|| unreachable!("8 bytes"));
            if !t.observations.contains_key(&candidate) {
                break candidate;
            }
        };
        t.observations.insert(
            token,
            Observed {
                registration: id.to_owned(),
                tenant,
                device,
                path,
                metric,
                float,
            },
        );
        if let Some(reg) = t.by_id.get_mut(id) {
            reg.tokens.push(token);
        }
        Some((token, peer))
    }

    /// Drops one observation (the device refused it).
    pub(crate) fn unobserve(&self, token: &Token) {
        let mut t = lock(&self.table);
        if let Some(o) = t.observations.remove(token)
            && let Some(reg) = t.by_id.get_mut(&o.registration)
        {
            reg.tokens.retain(|k| k != token);
        }
    }

    /// The device's registration, if it has one.
    pub(crate) fn registration_of(&self, tenant: &str, device: &str) -> Option<Registration> {
        let t = lock(&self.table);
        let id = t.by_device.get(&(tenant.to_owned(), device.to_owned()))?;
        t.by_id.get(id).cloned()
    }

    /// Ends the observation of `path` for registration `id`; whether there
    /// was one.
    pub(crate) fn unobserve_path(&self, id: &str, path: (u16, u16, u16)) -> bool {
        let token = {
            let t = lock(&self.table);
            t.by_id.get(id).and_then(|r| {
                r.tokens
                    .iter()
                    .find(|k| t.observations.get(k).is_some_and(|o| o.path == path))
                    .copied()
            })
        };
        token.map(|k| self.unobserve(&k)).is_some()
    }

    /// Waits, at most `limit`, until the queue-mode client of registration
    /// `id` is reachable: it sent something within `window`, or updates.
    /// Returns its registration then (its address may have changed), or
    /// `None` when the registration ends or the time runs out.
    pub(crate) async fn reachable(
        &self,
        id: &str,
        window: Duration,
        limit: Duration,
    ) -> Option<Registration> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut holding = false;
        let found = loop {
            let woken = self.updated.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let reg = lock(&self.table).by_id.get(id).cloned();
            match reg {
                None => break None,
                Some(r) if !r.queue || r.last_seen.elapsed() < window => break Some(r),
                Some(_) => {}
            }
            if !holding {
                holding = true;
                self.held.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                break None;
            }
        };
        if holding {
            self.held.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        found
    }

    /// Requests held for queue-mode clients now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Notes that the registration's client sent something (a
    /// notification).
    pub(crate) fn seen(&self, id: &str, now: Instant) {
        if let Some(reg) = lock(&self.table).by_id.get_mut(id) {
            reg.last_seen = now;
        }
    }

    /// One registration.
    pub(crate) fn registration(&self, id: &str) -> Option<Registration> {
        lock(&self.table).by_id.get(id).cloned()
    }

    /// The observation a notification's token belongs to.
    pub(crate) fn observed(&self, token: &Token) -> Option<Observed> {
        lock(&self.table).observations.get(token).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Lwm2mBounds {
        Lwm2mBounds {
            max_registrations: 3,
            max_per_tenant: 2,
            max_lifetime: Duration::from_secs(3600),
        }
    }

    fn q(items: &[&str]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    fn p(ep: &str) -> RegisterParams {
        RegisterParams {
            endpoint: ep.into(),
            lifetime: Duration::from_secs(60),
            version: "1.1".into(),
            binding: "U".into(),
            queue: false,
        }
    }

    #[test]
    fn register_queries_are_read_and_checked() {
        let max = Duration::from_secs(3600);
        let items = q(&["ep=urn:dev:1", "lt=300", "lwm2m=1.1", "b=UQ", "sms=1"]);
        let (reg, _) = params(items.iter().map(Vec::as_slice), false, max).unwrap();
        let reg = reg.unwrap();
        assert_eq!(reg.endpoint, "urn:dev:1");
        assert_eq!(reg.lifetime, Duration::from_secs(300));
        assert!(reg.queue);
        let items = q(&["ep=x"]);
        let (reg, _) = params(items.iter().map(Vec::as_slice), false, max).unwrap();
        assert_eq!(
            reg.unwrap().lifetime,
            Duration::from_secs(3600),
            "capped default"
        );
        for bad in [
            &["lt=60"][..],
            &["ep=x", "lt=0"],
            &["ep=x", "lt=99999"],
            &["ep=x", "lwm2m=2.0"],
            &["ep=x", "b=u"],
            &["ep="],
        ] {
            let items = q(bad);
            assert!(
                params(items.iter().map(Vec::as_slice), false, max).is_err(),
                "{bad:?}"
            );
        }
        let items = q(&["lt=120"]);
        assert_eq!(
            params(items.iter().map(Vec::as_slice), true, max).unwrap(),
            (None, Some(Duration::from_secs(120)))
        );
    }

    #[test]
    fn registrations_are_bounded_replaced_updated_and_expire() {
        let l = Lwm2m::new(bounds());
        let now = Instant::now();
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let a = l
            .register("t1", "d1", "k1", peer, p("a"), vec![], now)
            .unwrap();
        let b = l
            .register("t1", "d2", "k2", peer, p("b"), vec![], now)
            .unwrap();
        assert_eq!(
            l.register("t1", "d3", "k3", peer, p("c"), vec![], now)
                .unwrap_err(),
            "tenant_registrations"
        );
        // Registering again replaces, within the tenant's share.
        let a2 = l
            .register("t1", "d1", "k1", peer, p("a"), vec![], now)
            .unwrap();
        assert_ne!(a.id, a2.id);
        assert!(
            l.update(&a.id, "t1", "d1", peer, None, now).is_none(),
            "the old id is gone"
        );
        l.register("t2", "d1", "k", peer, p("x"), vec![], now)
            .unwrap();
        assert_eq!(
            l.register("t3", "d1", "k", peer, p("y"), vec![], now)
                .unwrap_err(),
            "registrations"
        );
        // Another device cannot update or deregister it.
        assert!(l.update(&b.id, "t1", "d1", peer, None, now).is_none());
        assert!(l.deregister(&b.id, "t2", "d1").is_none());
        let later = now + Duration::from_secs(50);
        assert!(
            l.update(
                &b.id,
                "t1",
                "d2",
                peer,
                Some(Duration::from_secs(600)),
                later
            )
            .is_some()
        );
        let expired = l.expire(now + Duration::from_secs(61));
        let mut gone: Vec<_> = expired.iter().map(|r| r.device.as_str()).collect();
        gone.sort();
        assert_eq!(gone, ["d1", "d1"], "d2 was updated in time");
        assert_eq!(l.len().0, 1);
        // Observations go with their registration.
        let (token, _) = l
            .observe(&b.id, (3303, 0, 5700), "temperature".into(), true)
            .unwrap();
        assert!(l.observed(&token).is_some());
        assert!(l.end_device("t1", "d2", Some("other")).is_none());
        assert!(l.end_device("t1", "d2", Some("k2")).is_some());
        assert!(l.observed(&token).is_none());
        assert_eq!(l.len(), (0, 0));
    }
}

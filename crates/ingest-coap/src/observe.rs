//! Commands to CoAP devices, over Observe (RFC 7641) on `/c`.
//!
//! A device registers (GET `/c` with Observe 0 and its token) and keeps the
//! registration for `observe_lifetime_secs`, or until it deregisters
//! (Observe 1), resets a notification, or stops acknowledging them. A
//! command is one confirmable notification of `/c`:
//!
//! ```json
//! {"id": "3f9c0a1b2d4e5f60", "name": "blink", "content_type": "text/plain", "payload": "3 times"}
//! ```
//!
//! (`payload_base64` instead of `payload` when it is not UTF-8), and the
//! device answers with a POST to `/c/{id}`, whose payload and
//! Content-Format are the reply. Registration is presence: the device is
//! online on this frontend while it is registered, so that commands are
//! routed here in distributed mode.
//!
//! Bounded: registrations in all and per tenant, and commands waiting for
//! a reply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tributary_coap_codec::Token;
use tributary_core::directory::PresenceSink;

/// How long a presence report may take before it is logged and given up.
const PRESENCE_TIMEOUT: Duration = Duration::from_secs(5);

/// A device's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observer {
    pub peer: SocketAddr,
    pub token: Token,
    /// The last Observe sequence number sent.
    pub seq: u32,
    expires: Instant,
    /// The credential the device registered with ("" when not known):
    /// revoking it ends the registration.
    credential: String,
}

/// The bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ObserveBounds {
    pub max_observers: usize,
    pub max_per_tenant: usize,
    pub lifetime: Duration,
    pub max_pending: usize,
}

type DeviceKey = (String, String);

/// A reply from a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceReply {
    pub payload: Vec<u8>,
    pub content_type: String,
}

struct Waiting {
    tenant: String,
    device: String,
    tx: oneshot::Sender<DeviceReply>,
}

#[derive(Default)]
struct State {
    observers: HashMap<DeviceKey, Observer>,
    per_tenant: HashMap<String, usize>,
    waiting: HashMap<String, Waiting>,
}

/// Registrations and commands waiting for replies.
pub(crate) struct Commands {
    bounds: ObserveBounds,
    state: Mutex<State>,
    presence: std::sync::OnceLock<(Arc<dyn PresenceSink>, String)>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("bounds", &self.bounds)
            .finish_non_exhaustive()
    }
}

impl Commands {
    pub(crate) fn new(bounds: ObserveBounds) -> Self {
        Commands {
            bounds,
            state: Mutex::new(State::default()),
            presence: std::sync::OnceLock::new(),
        }
    }

    /// Reports registrations as presence, as frontend `frontend` (once).
    pub(crate) fn set_presence(&self, presence: Arc<dyn PresenceSink>, frontend: String) {
        let _ = self.presence.set((presence, frontend));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `device`'s observation of `/c` from `peer` with `token`,
    /// replacing an earlier one. Returns the first sequence number, or the
    /// name of the bound that is full.
    pub(crate) fn register(
        &self,
        tenant: &str,
        device: &str,
        credential: &str,
        peer: SocketAddr,
        token: Token,
        now: Instant,
    ) -> Result<u32, &'static str> {
        let mut st = self.lock();
        let key = (tenant.to_owned(), device.to_owned());
        let expires = now + self.bounds.lifetime;
        if let Some(o) = st.observers.get_mut(&key) {
            *o = Observer {
                peer,
                token,
                seq: o.seq.wrapping_add(1) & 0xff_ffff,
                expires,
                credential: credential.to_owned(),
            };
            return Ok(o.seq);
        }
        if st.observers.len() >= self.bounds.max_observers {
            return Err("observers");
        }
        let held = st.per_tenant.get(tenant).copied().unwrap_or(0);
        if held >= self.bounds.max_per_tenant {
            return Err("tenant_observers");
        }
        st.per_tenant.insert(tenant.to_owned(), held + 1);
        st.observers.insert(
            key,
            Observer {
                peer,
                token,
                seq: 1,
                expires,
                credential: credential.to_owned(),
            },
        );
        Ok(1)
    }

    /// Ends `device`'s registration; with `token`, only when it is that
    /// registration's (a reset of an old notification must not end a newer
    /// one). Returns whether one ended.
    pub(crate) fn deregister(&self, tenant: &str, device: &str, token: Option<Token>) -> bool {
        let mut st = self.lock();
        let key = (tenant.to_owned(), device.to_owned());
        if st
            .observers
            .get(&key)
            .is_none_or(|o| token.is_some_and(|t| t != o.token))
        {
            return false;
        }
        st.observers.remove(&key);
        if let Some(n) = st.per_tenant.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                st.per_tenant.remove(tenant);
            }
        }
        true
    }

    /// Ends `device`'s registration when it was made with `credential`, or
    /// with a credential not known (it was revoked). Returns whether one
    /// ended.
    pub(crate) fn deregister_credential(
        &self,
        tenant: &str,
        device: &str,
        credential: &str,
    ) -> bool {
        let token = {
            let st = self.lock();
            match st.observers.get(&(tenant.to_owned(), device.to_owned())) {
                Some(o) if o.credential.is_empty() || o.credential == credential => o.token,
                _ => return false,
            }
        };
        self.deregister(tenant, device, Some(token))
    }

    /// The registration a notification goes to, with its next sequence
    /// number; `None` when the device has none in force.
    pub(crate) fn notify(&self, tenant: &str, device: &str, now: Instant) -> Option<Observer> {
        let mut st = self.lock();
        let o = st
            .observers
            .get_mut(&(tenant.to_owned(), device.to_owned()))?;
        if o.expires <= now {
            return None;
        }
        o.seq = o.seq.wrapping_add(1) & 0xff_ffff;
        Some(o.clone())
    }

    /// Whether `device` has a registration in force.
    pub(crate) fn observed(&self, tenant: &str, device: &str, now: Instant) -> bool {
        self.lock()
            .observers
            .get(&(tenant.to_owned(), device.to_owned()))
            .is_some_and(|o| o.expires > now)
    }

    /// Ends the registrations past their lifetime; returns their devices.
    pub(crate) fn expire(&self, now: Instant) -> Vec<(String, String)> {
        let expired: Vec<(DeviceKey, Token)> = self
            .lock()
            .observers
            .iter()
            .filter(|(_, o)| o.expires <= now)
            .map(|(k, o)| (k.clone(), o.token))
            .collect();
        expired
            .into_iter()
            .filter(|((t, d), token)| self.deregister(t, d, Some(*token)))
            .map(|(k, _)| k)
            .collect()
    }

    /// Every registration: (tenant, device, credential id), to check the
    /// credentials again.
    pub(crate) fn registrations(&self) -> Vec<(String, String, String)> {
        self.lock()
            .observers
            .iter()
            .map(|((t, d), o)| (t.clone(), d.clone(), o.credential.clone()))
            .collect()
    }

    /// Registrations, for the gauge.
    pub(crate) fn observers(&self) -> usize {
        self.lock().observers.len()
    }

    /// Waits for the reply to command `id` of `device`. `None` when as many
    /// commands wait as may.
    pub(crate) fn expect(
        &self,
        id: &str,
        tenant: &str,
        device: &str,
    ) -> Option<oneshot::Receiver<DeviceReply>> {
        let mut st = self.lock();
        if st.waiting.len() >= self.bounds.max_pending {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        st.waiting.insert(
            id.to_owned(),
            Waiting {
                tenant: tenant.to_owned(),
                device: device.to_owned(),
                tx,
            },
        );
        Some(rx)
    }

    /// Stops waiting for command `id`.
    pub(crate) fn forget(&self, id: &str) {
        self.lock().waiting.remove(id);
    }

    /// A device's reply to command `id`. False when no command of that
    /// device with that id waits (a device answers only its own commands).
    pub(crate) fn reply(&self, tenant: &str, device: &str, id: &str, reply: DeviceReply) -> bool {
        let mut st = self.lock();
        let mine = st
            .waiting
            .get(id)
            .is_some_and(|w| w.tenant == tenant && w.device == device);
        if !mine {
            return false;
        }
        st.waiting
            .remove(id)
            .is_some_and(|w| w.tx.send(reply).is_ok())
    }

    /// Reports `device` online or offline on this frontend, when a presence
    /// sink is set.
    pub(crate) async fn report(&self, tenant: &str, device: &str, online: bool) {
        let Some((sink, frontend)) = self.presence.get() else {
            return;
        };
        let now = tributary_core::time::now_ns();
        let report = sink.report(tenant, device, online, now, frontend);
        match tokio::time::timeout(PRESENCE_TIMEOUT, report).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(tenant, device, online, error = %e, "presence report failed")
            }
            Err(_) => tracing::warn!(tenant, device, online, "presence report timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands() -> Commands {
        Commands::new(ObserveBounds {
            max_observers: 3,
            max_per_tenant: 2,
            lifetime: Duration::from_secs(10),
            max_pending: 1,
        })
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn token(b: u8) -> Token {
        Token::new(&[b]).unwrap()
    }

    #[test]
    fn registrations_are_bounded_replaced_and_expire() {
        let c = commands();
        let t = Instant::now();
        assert_eq!(c.register("a", "d1", "k1", peer(1), token(1), t), Ok(1));
        assert_eq!(c.register("a", "d2", "k2", peer(2), token(2), t), Ok(1));
        assert_eq!(
            c.register("a", "d3", "k3", peer(3), token(3), t),
            Err("tenant_observers")
        );
        assert_eq!(c.register("b", "d1", "k4", peer(4), token(4), t), Ok(1));
        assert_eq!(
            c.register("c", "d1", "k5", peer(5), token(5), t),
            Err("observers")
        );
        // Re-registering moves it (a new address after NAT rebinding).
        assert!(c.register("a", "d1", "k9", peer(9), token(9), t).is_ok());
        let o = c.notify("a", "d1", t).unwrap();
        assert_eq!((o.peer, o.token), (peer(9), token(9)));
        assert!(
            c.notify("a", "d1", t).unwrap().seq > o.seq,
            "sequence numbers grow"
        );
        // Revoking another credential leaves it; revoking its own ends it
        // (re-registered just after).
        assert!(!c.deregister_credential("a", "d1", "k1"));
        assert!(c.deregister_credential("a", "d1", "k9"));
        assert!(c.register("a", "d1", "k9", peer(9), token(9), t).is_ok());
        // A reset of an old token does not end the new registration.
        assert!(!c.deregister("a", "d1", Some(token(1))));
        assert!(c.deregister("a", "d1", Some(token(9))));
        assert!(c.notify("a", "d1", t).is_none());
        // Expiry.
        let later = t + Duration::from_secs(11);
        assert!(!c.observed("a", "d2", later));
        let mut gone = c.expire(later);
        gone.sort();
        assert_eq!(
            gone,
            [
                ("a".to_string(), "d2".to_string()),
                ("b".into(), "d1".into())
            ]
        );
        assert_eq!(c.observers(), 0);
        assert_eq!(
            c.register("a", "d3", "k3", peer(3), token(3), later),
            Ok(1),
            "the share is back"
        );
    }

    #[test]
    fn replies_reach_their_command_from_its_device_only() {
        let c = commands();
        let mut rx = c.expect("id1", "a", "d1").unwrap();
        assert!(c.expect("id2", "a", "d1").is_none(), "one waiting at most");
        let reply = DeviceReply {
            payload: b"ok".to_vec(),
            content_type: "text/plain".into(),
        };
        assert!(!c.reply("a", "d2", "id1", reply.clone()), "another device");
        assert!(!c.reply("b", "d1", "id1", reply.clone()), "another tenant");
        assert!(!c.reply("a", "d1", "nope", reply.clone()));
        assert!(c.reply("a", "d1", "id1", reply.clone()));
        assert_eq!(rx.try_recv().unwrap(), reply);
        assert!(!c.reply("a", "d1", "id1", reply), "answered once");
        assert!(c.expect("id2", "a", "d1").is_some());
        c.forget("id2");
        assert!(c.expect("id3", "a", "d1").is_some());
    }
}

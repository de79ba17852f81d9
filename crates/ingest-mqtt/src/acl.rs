//! Who is connected, and what they may publish and subscribe to.
//!
//! The ACL model:
//!
//! - Every topic lives inside the connection's tenant: the router keys every
//!   subscription, retained message and delivery by tenant, so no topic name
//!   or filter can reach another tenant.
//! - A device may publish to, and subscribe to filters within,
//!   `devices/{its id}/#` (which includes `devices/{its id}` itself), and
//!   nothing else: not `devices/+/...`, not `#`, not `$`-topics.
//! - Tenant applications (`app:<name>` user names, issued by the registry)
//!   are the seam for wider grants such as `#` within the tenant; the
//!   registry does not issue them yet, so such user names are refused with
//!   0x87 Not authorized.

use tributary_mqtt_codec::topic::parse_shared;

/// The authenticated party behind a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A device, by its access token.
    Device {
        /// The device's tenant.
        tenant: String,
        /// The device id.
        device: String,
    },
}

impl Identity {
    /// The tenant every topic of this connection belongs to.
    pub fn tenant(&self) -> &str {
        match self {
            Self::Device { tenant, .. } => tenant,
        }
    }

    /// The device, for a device connection.
    pub fn device(&self) -> Option<&str> {
        match self {
            Self::Device { device, .. } => Some(device),
        }
    }

    /// Whether this identity may publish to `topic` (a valid topic name).
    pub fn may_publish(&self, topic: &str) -> bool {
        match self {
            Self::Device { device, .. } => within_device(topic, device),
        }
    }

    /// Whether this identity may subscribe to `filter` (a valid topic
    /// filter, possibly `$share/{group}/{filter}`): every topic the filter
    /// can match must be one the identity may read.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        let inner = match parse_shared(filter) {
            Ok(Some(shared)) => shared.filter,
            Ok(None) => filter,
            Err(_) => return false,
        };
        match self {
            Self::Device { device, .. } => within_device(inner, device),
        }
    }
}

/// Whether a topic name, or a filter whose first two levels are literal,
/// lies within `devices/{device}/#`.
fn within_device(topic: &str, device: &str) -> bool {
    let Some(rest) = topic.strip_prefix("devices/") else {
        return false;
    };
    match rest.strip_prefix(device) {
        Some("") => true,
        Some(tail) => tail.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d1() -> Identity {
        Identity::Device {
            tenant: "acme".into(),
            device: "d1".into(),
        }
    }

    #[test]
    fn devices_stay_in_their_namespace() {
        let id = d1();
        for ok in [
            "devices/d1",
            "devices/d1/telemetry",
            "devices/d1/commands/reboot/response",
        ] {
            assert!(id.may_publish(ok), "{ok}");
        }
        for no in [
            "devices/d10/telemetry",
            "devices/d",
            "devices/d2/x",
            "other",
            "$SYS/x",
            "devices",
        ] {
            assert!(!id.may_publish(no), "{no}");
        }
        for ok in [
            "devices/d1/#",
            "devices/d1/commands/+",
            "$share/g/devices/d1/x",
            "devices/d1",
        ] {
            assert!(id.may_subscribe(ok), "{ok}");
        }
        for no in [
            "#",
            "+/d1/#",
            "devices/+/telemetry",
            "devices/#",
            "devices/d10/#",
            "$share/g/#",
            "$share//x",
        ] {
            assert!(!id.may_subscribe(no), "{no}");
        }
    }
}

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
//! - A tenant application (user name `app:<name>`, a token the registry
//!   issued with grants) may publish to topics matched by one of its
//!   publish filters, and subscribe to filters *covered* by one of its
//!   subscribe filters: every topic the requested filter can match must be
//!   matched by the grant (`devices/+/telemetry` is covered by `devices/#`,
//!   `#` is not). Wildcards in a grant never reach `$`-topics, as in MQTT
//!   matching; a grant must name `$`-levels literally.

use tributary_core::directory::AppGrants;
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
    /// A tenant application, by its application token.
    Application {
        /// The application's tenant.
        tenant: String,
        /// The application's name (the user name without `app:`).
        name: String,
        /// What it may publish and subscribe to.
        grants: AppGrants,
    },
}

impl Identity {
    /// The tenant every topic of this connection belongs to.
    pub fn tenant(&self) -> &str {
        match self {
            Self::Device { tenant, .. } | Self::Application { tenant, .. } => tenant,
        }
    }

    /// The device, for a device connection.
    pub fn device(&self) -> Option<&str> {
        match self {
            Self::Device { device, .. } => Some(device),
            Self::Application { .. } => None,
        }
    }

    /// Whether this identity may publish to `topic` (a valid topic name).
    pub fn may_publish(&self, topic: &str) -> bool {
        match self {
            Self::Device { device, .. } => within_device(topic, device),
            Self::Application { grants, .. } => grants.publish.iter().any(|g| covers(g, topic)),
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
            Self::Application { grants, .. } => grants.subscribe.iter().any(|g| covers(g, inner)),
        }
    }
}

/// Whether every topic that `filter` (a topic name or filter) can match is
/// matched by `grant`. Levels compare one by one: a grant level `#` covers
/// the rest (and the parent level, as MQTT matching does), `+` covers any
/// single level but not `#`, and a literal level only itself. Grant
/// wildcards do not cover a first level starting with `$`.
fn covers(grant: &str, filter: &str) -> bool {
    let mut grant = grant.split('/');
    let mut filter = filter.split('/');
    let mut first = true;
    loop {
        match (grant.next(), filter.next()) {
            (Some("#"), f) => {
                return !(first && f.is_some_and(|f| f.starts_with('$')));
            }
            (Some(_), None) | (None, Some(_)) => return false,
            (None, None) => return true,
            (Some("+"), Some(f)) => {
                if f == "#" || (first && f.starts_with('$')) {
                    return false;
                }
            }
            (Some(g), Some(f)) => {
                if g != f {
                    return false;
                }
            }
        }
        first = false;
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

    fn app(publish: &[&str], subscribe: &[&str]) -> Identity {
        Identity::Application {
            tenant: "acme".into(),
            name: "dash".into(),
            grants: AppGrants {
                publish: publish.iter().map(|s| (*s).to_owned()).collect(),
                subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
            },
        }
    }

    #[test]
    fn applications_stay_within_their_grants() {
        let all = app(&["#"], &["#"]);
        for ok in ["devices/d1/commands/x", "alerts", "a/b/c"] {
            assert!(all.may_publish(ok), "{ok}");
        }
        assert!(!all.may_publish("$SYS/x"), "# never reaches $-topics");
        for ok in ["#", "devices/+/telemetry", "$share/g/alerts/#", "+/x"] {
            assert!(all.may_subscribe(ok), "{ok}");
        }
        for no in ["$SYS/#", "$share/g/$SYS/x"] {
            assert!(!all.may_subscribe(no), "{no}");
        }

        let narrow = app(
            &["devices/+/commands/#"],
            &["devices/+/telemetry", "alerts/#"],
        );
        for ok in ["devices/d1/commands/reboot", "devices/d2/commands"] {
            assert!(narrow.may_publish(ok), "{ok}");
        }
        for no in ["devices/d1/telemetry", "alerts/x", "devices/commands"] {
            assert!(!narrow.may_publish(no), "{no}");
        }
        for ok in [
            "devices/d1/telemetry",
            "devices/+/telemetry",
            "alerts",
            "alerts/#",
            "alerts/+/fire",
        ] {
            assert!(narrow.may_subscribe(ok), "{ok}");
        }
        for no in [
            "#",
            "devices/#",
            "devices/+/+",
            "devices/d1/telemetry/temp",
            "alert",
            "+/x",
        ] {
            assert!(!narrow.may_subscribe(no), "{no}");
        }
        assert_eq!(narrow.device(), None);
        assert_eq!(narrow.tenant(), "acme");
    }

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

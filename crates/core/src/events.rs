//! [`RegistryEvent`]: a change in the device registry that can make a cached
//! view of it stale, and its wire encoding.
//!
//! The registry announces every change that can affect authentication or a
//! device lookup. In standalone mode caches read the events from the
//! registry's in-process channel; in distributed mode the registry process
//! publishes them to the log topic [`DEVICE_EVENTS_TOPIC`], encoded with
//! [`RegistryEvent::encode`] (protobuf `tributary.v1.RegistryEvent`,
//! `proto/tributary/v1/events.proto`), and every frontend and query replica
//! tails that topic and decodes them with [`RegistryEvent::decode`].

use prost::Message;
use serde::{Deserialize, Serialize};
use tributary_proto::v1 as pb;
use tributary_proto::v1::registry_event::Event as PbEvent;

/// The log topic registry events are published to.
pub const DEVICE_EVENTS_TOPIC: &str = "tributary.device-events.v1";

/// A change that can make a cached view of the registry stale.
///
/// Serializable (JSON, `{"event": "device_changed", ...}`) for logs and
/// tools; the wire form on the log is protobuf ([`RegistryEvent::encode`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RegistryEvent {
    /// A tenant was created or its settings changed.
    TenantChanged {
        /// The tenant.
        tenant: String,
    },
    /// A device was created, or its labels, metadata or disabled flag changed.
    DeviceChanged {
        /// The device's tenant.
        tenant: String,
        /// The device.
        device: String,
        /// Whether the device is disabled after the change: frontends close
        /// the connections of a device that was disabled.
        #[serde(default)]
        disabled: bool,
    },
    /// A device was deleted.
    DeviceDeleted {
        /// The device's tenant.
        tenant: String,
        /// The device.
        device: String,
    },
    /// A credential was revoked.
    CredentialRevoked {
        /// The credential's tenant.
        tenant: String,
        /// The credential.
        credential_id: String,
        /// The device of a device token or certificate; `None` for tenant
        /// ingest and application credentials.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// Events may have been lost: a cache must drop everything it holds.
    ///
    /// The registry itself never announces this. It is sent by whatever
    /// carries events between processes when it cannot vouch for having
    /// carried all of them: a publisher that fell behind the registry or
    /// (re)started, a reader that (re)connected to the log.
    Resync,
}

impl RegistryEvent {
    /// The log record key: `<tenant>/<device>` for a device's events (and
    /// revocations of its credentials), `<tenant>` for tenant-wide ones,
    /// empty for [`RegistryEvent::Resync`]. One device's events keep their
    /// order.
    pub fn key(&self) -> String {
        match self {
            RegistryEvent::TenantChanged { tenant }
            | RegistryEvent::CredentialRevoked {
                tenant,
                device: None,
                ..
            } => tenant.clone(),
            RegistryEvent::DeviceChanged { tenant, device, .. }
            | RegistryEvent::DeviceDeleted { tenant, device }
            | RegistryEvent::CredentialRevoked {
                tenant,
                device: Some(device),
                ..
            } => format!("{tenant}/{device}"),
            RegistryEvent::Resync => String::new(),
        }
    }

    /// The protobuf encoding (`tributary.v1.RegistryEvent`).
    pub fn encode(&self) -> Vec<u8> {
        let event = match self.clone() {
            RegistryEvent::TenantChanged { tenant } => {
                PbEvent::TenantChanged(pb::registry_event::TenantChanged { tenant })
            }
            RegistryEvent::DeviceChanged {
                tenant,
                device,
                disabled,
            } => PbEvent::DeviceChanged(pb::registry_event::DeviceChanged {
                tenant,
                device,
                disabled,
            }),
            RegistryEvent::DeviceDeleted { tenant, device } => {
                PbEvent::DeviceDeleted(pb::registry_event::DeviceDeleted { tenant, device })
            }
            RegistryEvent::CredentialRevoked {
                tenant,
                credential_id,
                device,
            } => PbEvent::CredentialRevoked(pb::registry_event::CredentialRevoked {
                tenant,
                credential_id,
                device,
            }),
            RegistryEvent::Resync => PbEvent::Resync(pb::registry_event::Resync {}),
        };
        pb::RegistryEvent { event: Some(event) }.encode_to_vec()
    }

    /// Decodes [`RegistryEvent::encode`]'s output.
    ///
    /// A well-formed event of a kind this version does not know (from a
    /// newer publisher) is [`EventDecodeError::UnknownKind`]: a cache cannot
    /// apply it precisely and should treat it as
    /// [`RegistryEvent::Resync`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EventDecodeError> {
        let message = pb::RegistryEvent::decode(bytes)
            .map_err(|e| EventDecodeError::Malformed(e.to_string()))?;
        Ok(match message.event.ok_or(EventDecodeError::UnknownKind)? {
            PbEvent::TenantChanged(e) => RegistryEvent::TenantChanged { tenant: e.tenant },
            PbEvent::DeviceChanged(e) => RegistryEvent::DeviceChanged {
                tenant: e.tenant,
                device: e.device,
                disabled: e.disabled,
            },
            PbEvent::DeviceDeleted(e) => RegistryEvent::DeviceDeleted {
                tenant: e.tenant,
                device: e.device,
            },
            PbEvent::CredentialRevoked(e) => RegistryEvent::CredentialRevoked {
                tenant: e.tenant,
                credential_id: e.credential_id,
                device: e.device,
            },
            PbEvent::Resync(_) => RegistryEvent::Resync,
        })
    }
}

/// Why bytes did not decode as a [`RegistryEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventDecodeError {
    /// Not a `tributary.v1.RegistryEvent` protobuf message.
    #[error("malformed registry event: {0}")]
    Malformed(String),
    /// A well-formed message whose event kind this version does not know.
    #[error("registry event of an unknown kind")]
    UnknownKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<RegistryEvent> {
        vec![
            RegistryEvent::TenantChanged {
                tenant: "acme".into(),
            },
            RegistryEvent::DeviceChanged {
                tenant: "acme".into(),
                device: "pump-1".into(),
                disabled: false,
            },
            RegistryEvent::DeviceChanged {
                tenant: "acme".into(),
                device: "pump-1".into(),
                disabled: true,
            },
            RegistryEvent::DeviceDeleted {
                tenant: "acme".into(),
                device: "pump-2".into(),
            },
            RegistryEvent::CredentialRevoked {
                tenant: "acme".into(),
                credential_id: "c1".into(),
                device: Some("pump-1".into()),
            },
            RegistryEvent::CredentialRevoked {
                tenant: "acme".into(),
                credential_id: "c2".into(),
                device: None,
            },
            // An empty device is not the same as none.
            RegistryEvent::CredentialRevoked {
                tenant: "acme".into(),
                credential_id: "c3".into(),
                device: Some(String::new()),
            },
            RegistryEvent::Resync,
        ]
    }

    #[test]
    fn every_event_round_trips_through_the_wire_encoding() {
        for event in every_kind() {
            let bytes = event.encode();
            assert_eq!(
                RegistryEvent::decode(&bytes),
                Ok(event.clone()),
                "{event:?}"
            );
        }
    }

    #[test]
    fn every_event_round_trips_through_json() {
        for event in every_kind() {
            let json = serde_json::to_string(&event).expect("serialize");
            assert_eq!(
                serde_json::from_str::<RegistryEvent>(&json).expect("deserialize"),
                event,
                "{json}"
            );
        }
        assert_eq!(
            serde_json::to_string(&RegistryEvent::Resync).expect("serialize"),
            r#"{"event":"resync"}"#
        );
    }

    #[test]
    fn keys_group_a_devices_events() {
        let revoked = RegistryEvent::CredentialRevoked {
            tenant: "acme".into(),
            credential_id: "c1".into(),
            device: Some("pump-1".into()),
        };
        let changed = RegistryEvent::DeviceChanged {
            tenant: "acme".into(),
            device: "pump-1".into(),
            disabled: true,
        };
        assert_eq!(revoked.key(), "acme/pump-1");
        assert_eq!(changed.key(), revoked.key());
        let ingest = RegistryEvent::CredentialRevoked {
            tenant: "acme".into(),
            credential_id: "c2".into(),
            device: None,
        };
        assert_eq!(ingest.key(), "acme");
        assert_eq!(RegistryEvent::Resync.key(), "");
    }

    #[test]
    fn garbage_and_unknown_kinds_are_errors() {
        assert!(matches!(
            RegistryEvent::decode(&[0xff, 0xff, 0xff]),
            Err(EventDecodeError::Malformed(_))
        ));
        // An empty message is valid protobuf with no known event: what a
        // newer publisher's new kind looks like to this version.
        assert_eq!(
            RegistryEvent::decode(&[]),
            Err(EventDecodeError::UnknownKind)
        );
        // Field 99, a length-delimited payload this version does not know.
        assert_eq!(
            RegistryEvent::decode(&[0x9a, 0x06, 0x00]),
            Err(EventDecodeError::UnknownKind)
        );
    }
}

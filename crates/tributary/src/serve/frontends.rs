//! The device frontends' listeners, shared by `standalone` and `ingest`.

use std::fmt;
use std::net::SocketAddr;

use anyhow::Context;
use std::sync::Arc;

use prometheus_client::registry::Registry as MetricsRegistry;
use tokio::sync::{broadcast, watch};
use tributary_core::commands::{Command, CommandError, CommandOutcome, CommandSink};
use tributary_core::directory::PresenceSink;
use tributary_core::events::RegistryEvent;
use tributary_ingest::Ingestor;
use tributary_ingest_coap::{CoapConfig, CoapMetrics, CoapServer};
use tributary_ingest_mqtt::{MqttServer, MqttTls};

use super::args::{CoapArgs, HttpArgs, MqttArgs};
use super::ops::{Tasks, bind, stopped};

/// Where the frontends listen.
#[derive(Debug, Clone, Copy)]
pub struct FrontendAddrs {
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    pub mqtt_ws: SocketAddr,
    /// MQTT over TLS, when a certificate is configured.
    pub mqtts: Option<SocketAddr>,
    /// MQTT over WebSocket over TLS, when a certificate is configured.
    pub mqtt_wss: Option<SocketAddr>,
    /// Plain CoAP (UDP), when switched on.
    pub coap: Option<SocketAddr>,
    /// CoAP over DTLS, when switched on.
    pub coaps: Option<SocketAddr>,
}

impl fmt::Display for FrontendAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "http={} mqtt={} mqtt-ws={}",
            self.http, self.mqtt, self.mqtt_ws
        )?;
        if let Some(a) = self.mqtts {
            write!(f, " mqtts={a}")?;
        }
        if let Some(a) = self.mqtt_wss {
            write!(f, " mqtt-wss={a}")?;
        }
        if let Some(a) = self.coap {
            write!(f, " coap={a}")?;
        }
        if let Some(a) = self.coaps {
            write!(f, " coaps={a}")?;
        }
        Ok(())
    }
}

/// Binds the HTTP and MQTT listeners and serves them until `stop`. Routes
/// given with the ingestor (the HTTP API, in standalone) share the HTTP
/// listener.
pub async fn start(
    http_args: &HttpArgs,
    mqtt_args: &MqttArgs,
    (ingestor, shared): (Ingestor, Option<axum::Router>),
    mqtt: &MqttServer,
    stop: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<FrontendAddrs> {
    let http = bind(http_args.http_addr, "HTTP ingest").await?;
    let mqtt_listener = bind(mqtt_args.mqtt_addr, "MQTT").await?;
    let mqtt_ws_listener = bind(mqtt_args.mqtt_ws_addr, "MQTT over WebSocket").await?;
    let mut addrs = FrontendAddrs {
        http: http.local_addr()?,
        mqtt: mqtt_listener.local_addr()?,
        mqtt_ws: mqtt_ws_listener.local_addr()?,
        mqtts: None,
        mqtt_wss: None,
        coap: None,
        coaps: None,
    };
    if let (Some(cert), Some(key)) = (&mqtt_args.tls_cert, &mqtt_args.tls_key) {
        let tls = MqttTls::from_pem_files(cert, key, mqtt_args.tls_client_ca.as_deref())
            .context("loading the MQTT TLS certificate")?;
        let tls_listener = bind(mqtt_args.mqtt_tls_addr, "MQTT TLS").await?;
        let wss_listener = bind(mqtt_args.mqtt_wss_addr, "MQTT over WebSocket over TLS").await?;
        addrs.mqtts = Some(tls_listener.local_addr()?);
        addrs.mqtt_wss = Some(wss_listener.local_addr()?);
        let (tls_mqtt, tls_stop, wss_tls) = (mqtt.clone(), stopped(stop.clone()), tls.clone());
        tasks.spawn("mqtt-tls", async move {
            tls_mqtt
                .serve_tls(tls_listener, tls, tls_stop)
                .await
                .context("MQTT TLS server")
        });
        let (wss_mqtt, wss_stop) = (mqtt.clone(), stopped(stop.clone()));
        tasks.spawn("mqtt-wss", async move {
            wss_mqtt
                .serve_wss(wss_listener, wss_tls, wss_stop)
                .await
                .context("MQTT over WebSocket over TLS server")
        });
    }
    let http_limits = http_args.limits()?;
    let http_stop = stopped(stop.clone());
    tasks.spawn("http", async move {
        let router = match shared {
            Some(routes) => tributary_ingest_http::router(ingestor).merge(routes),
            None => tributary_ingest_http::router(ingestor),
        };
        tributary_http_server::serve(http, router, http_limits, http_stop)
            .await
            .context("HTTP server")
    });
    let (ws_mqtt, ws_stop) = (mqtt.clone(), stopped(stop.clone()));
    tasks.spawn("mqtt-ws", async move {
        ws_mqtt
            .serve_ws(mqtt_ws_listener, ws_stop)
            .await
            .context("MQTT over WebSocket server")
    });
    let (tcp_mqtt, mqtt_stop) = (mqtt.clone(), stopped(stop.clone()));
    tasks.spawn("mqtt", async move {
        tcp_mqtt
            .serve(mqtt_listener, mqtt_stop)
            .await
            .context("MQTT server")
    });
    Ok(addrs)
}

/// The CoAP frontend's listeners, bound but not yet serving: plain CoAP
/// and CoAP over DTLS, each with its own server (and tables), sharing the
/// metrics.
#[derive(Default)]
pub struct Coap {
    plain: Option<(CoapServer, tokio::net::UdpSocket)>,
    dtls: Option<(CoapServer, tokio::net::UdpSocket)>,
}

/// Where the CoAP listeners serve.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoapAddrs {
    pub plain: Option<SocketAddr>,
    pub dtls: Option<SocketAddr>,
}

impl Coap {
    /// The servers, to take commands from now on.
    pub fn servers(&self) -> Vec<CoapServer> {
        self.plain
            .iter()
            .chain(&self.dtls)
            .map(|(s, _)| s.clone())
            .collect()
    }
}

/// Binds the CoAP listeners that are switched on: plain CoAP with
/// `--coap-addr`, CoAP over DTLS with `--coaps-addr`. Their servers can
/// take commands from now on; [`serve_coap`] starts them.
pub async fn bind_coap(
    args: &CoapArgs,
    ingestor: Ingestor,
    presence: Arc<dyn PresenceSink>,
    frontend_id: &str,
    metrics: &mut MetricsRegistry,
) -> anyhow::Result<Coap> {
    let mut coap = Coap::default();
    if args.coap_addr.is_none() && args.coaps_addr.is_none() {
        return Ok(coap);
    }
    let config = super::config_file::section("coap", CoapConfig::default(), &[])?;
    let shared = CoapMetrics::register(metrics);
    let listener = |addr: SocketAddr, what: &'static str| {
        let (ingestor, config, presence) = (ingestor.clone(), config.clone(), presence.clone());
        let metrics = shared.for_listener();
        async move {
            let socket = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding the {what} listener on {addr}"))?;
            let server = CoapServer::new(ingestor, config, metrics)
                .map_err(|e| anyhow::anyhow!("configuring the CoAP server: {e}"))?;
            server.set_presence(presence, frontend_id.to_owned());
            anyhow::Ok((server, socket))
        }
    };
    if let Some(addr) = args.coap_addr {
        coap.plain = Some(listener(addr, "CoAP").await?);
    }
    if let Some(addr) = args.coaps_addr {
        coap.dtls = Some(listener(addr, "CoAP over DTLS").await?);
    }
    Ok(coap)
}

/// Serves the CoAP listeners until `stop`; returns where they listen.
pub fn serve_coap(
    coap: Coap,
    stop: &watch::Receiver<bool>,
    tasks: &mut Tasks,
) -> anyhow::Result<CoapAddrs> {
    let mut addrs = CoapAddrs::default();
    if let Some((server, socket)) = coap.plain {
        let bound = socket.local_addr()?;
        tracing::warn!(
            %bound,
            "plain CoAP is on: device tokens and data cross the network unencrypted"
        );
        let coap_stop = stopped(stop.clone());
        tasks.spawn("coap", async move {
            server.serve(socket, coap_stop).await.context("CoAP server")
        });
        addrs.plain = Some(bound);
    }
    if let Some((server, socket)) = coap.dtls {
        addrs.dtls = Some(socket.local_addr()?);
        let coap_stop = stopped(stop.clone());
        tasks.spawn("coaps", async move {
            server
                .serve_dtls(socket, coap_stop)
                .await
                .context("CoAP over DTLS server")
        });
    }
    Ok(addrs)
}

/// Commands to the devices this process holds: over CoAP to a device
/// registered on one of its listeners (Observe on `/c`), otherwise over
/// MQTT.
#[derive(Debug, Clone)]
pub struct DeviceSinks {
    pub mqtt: MqttServer,
    pub coap: Vec<CoapServer>,
}

#[async_trait::async_trait]
impl CommandSink for DeviceSinks {
    async fn send_command(&self, command: Command) -> Result<CommandOutcome, CommandError> {
        match self
            .coap
            .iter()
            .find(|c| c.observed(&command.tenant, &command.device))
        {
            Some(coap) => coap.send_command(command).await,
            None => CommandSink::send_command(&self.mqtt, command).await,
        }
    }
}

/// Checks every MQTT connection's and CoAP registration's credential with
/// the registry, in the background.
fn revalidate(mqtt: &MqttServer, coap: &[CoapServer]) {
    let mqtt = mqtt.clone();
    tokio::spawn(async move { mqtt.revalidate().await });
    for coap in coap {
        let coap = coap.clone();
        tokio::spawn(async move { coap.revalidate().await });
    }
}

/// Closes the MQTT connections of devices that were disabled or deleted, or
/// whose credential was revoked, and of applications whose credential was
/// revoked, as the registry's events arrive; ends such devices' CoAP
/// registrations for commands.
pub async fn close_revoked(
    mut events: broadcast::Receiver<RegistryEvent>,
    sinks: DeviceSinks,
    stop: impl Future<Output = ()>,
) {
    let DeviceSinks { mqtt, coap } = sinks;
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            () = &mut stop => return,
            e = events.recv() => e,
        };
        match event {
            Ok(RegistryEvent::DeviceChanged {
                tenant,
                device,
                disabled: true,
            })
            | Ok(RegistryEvent::DeviceDeleted { tenant, device }) => {
                mqtt.disconnect_device(&tenant, &device);
                for coap in &coap {
                    coap.end_registration(&tenant, &device, None).await;
                }
            }
            // One credential of a device: only what used it goes.
            Ok(RegistryEvent::CredentialRevoked {
                tenant,
                credential_id,
                device: Some(device),
            }) => {
                mqtt.disconnect_device_credential(&tenant, &device, &credential_id);
                for coap in &coap {
                    coap.end_registration(&tenant, &device, Some(&credential_id))
                        .await;
                }
            }
            Ok(RegistryEvent::CredentialRevoked {
                tenant,
                credential_id,
                device: None,
            }) => {
                mqtt.disconnect_credential(&tenant, &credential_id);
            }
            Ok(RegistryEvent::Resync) => {
                // Events may have been lost upstream: check every
                // connection's and registration's credential with the
                // registry.
                revalidate(&mqtt, &coap);
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // The directory cleared its caches; connections of devices
                // revoked in the gap would stay open: check them all.
                tracing::warn!(
                    missed = n,
                    "revocation watcher lagged behind registry events; checking every connection's credential"
                );
                revalidate(&mqtt, &coap);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

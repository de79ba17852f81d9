//! A query server on `127.0.0.1:0` over an `EmbeddedStore` in a temp dir
//! holding a small fleet, and the helpers its tests share.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tributary_auth::{JwtKeys, OperatorClaims, Role};
use tributary_core::directory::{DeviceCatalog, DeviceInfo, DirectoryError};
use tributary_core::live::LiveHub;
use tributary_core::selector::Selector;
use tributary_core::time::NS_PER_DAY;
use tributary_core::{Point, Value};
use tributary_proto::v1 as pb;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_query::{QueryConfig, QueryGrpc};
use tributary_store::embedded::{EmbeddedStore, EmbeddedStoreConfig};
use tributary_store::{DevicePoints, Store};

/// Midnight UTC of the fixture's day.
pub const DAY0: i64 = 19_800 * NS_PER_DAY;
pub const HOUR: i64 = 3_600_000_000_000;

/// acme: trucks t1, t2 (fleet West), e1 (fleet East), van v1 (fleet West);
/// other: t1.
const FLEET: &[(&str, &str, &str, &str, f64)] = &[
    ("acme", "e1", "East", "truck", 10.0),
    ("acme", "t1", "West", "truck", 1.0),
    ("acme", "t2", "West", "truck", 2.0),
    ("acme", "v1", "West", "van", 3.0),
];

/// A running server and what a test needs to talk to it.
pub struct Fixture {
    pub addr: SocketAddr,
    pub live: LiveHub,
    pub keys: JwtKeys,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // No retention: the fixture's day lies in the past.
        let config = EmbeddedStoreConfig {
            retention: None,
            ..EmbeddedStoreConfig::default()
        };
        let store: Arc<dyn Store> =
            EmbeddedStore::open(dir.path(), config).expect("open the store");
        let catalog = Arc::new(Catalog::default());
        let mut batch = Vec::new();
        for (tenant, id, fleet, kind, base) in FLEET {
            catalog.put(tenant, id, &[("fleet", fleet), ("type", kind)]);
            let mut points = Vec::new();
            for h in 0..4 {
                let ts_ns = DAY0 + h * HOUR;
                points.push(Point {
                    metric: "load".into(),
                    ts_ns,
                    value: Value::F64(base + h as f64),
                });
                points.push(Point {
                    metric: "lat".into(),
                    ts_ns,
                    value: Value::F64([51.0, 51.1, 51.2, 51.3][h as usize]),
                });
                points.push(Point {
                    metric: "lon".into(),
                    ts_ns,
                    value: Value::F64([7.0, 7.1, 7.2, 7.3][h as usize]),
                });
            }
            batch.push(DevicePoints {
                tenant: tenant.to_string(),
                device: id.to_string(),
                points,
            });
        }
        catalog.put("other", "t1", &[("fleet", "West"), ("type", "truck")]);
        batch.push(DevicePoints {
            tenant: "other".into(),
            device: "t1".into(),
            points: vec![Point {
                metric: "load".into(),
                ts_ns: DAY0,
                value: Value::F64(100.0),
            }],
        });
        store.write(&batch).await.expect("write the fixture");
        store.flush().await.expect("flush the fixture");

        let live = LiveHub::new(64);
        let keys = JwtKeys::from_secret(&[42u8; 32]).expect("keys");
        let service = QueryGrpc::new(
            store,
            catalog,
            live.clone(),
            keys.clone(),
            QueryConfig::default(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service.server())
                .serve_with_incoming_shutdown(
                    TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async {
                        let _ = rx.await;
                    },
                )
                .await
                .expect("server");
        });
        Self {
            addr,
            live,
            keys,
            shutdown: Some(tx),
            _dir: dir,
        }
    }

    pub async fn client(&self) -> QueryServiceClient<Channel> {
        QueryServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    /// A JWT valid for an hour.
    pub fn token(&self, tenant: &str, role: Role) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let claims = OperatorClaims {
            sub: "test".into(),
            tenant: tenant.into(),
            role,
            iat: now,
            exp: now + 3600,
        };
        self.keys.issue(&claims).expect("issue")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    req
}

pub fn selector(s: &str) -> pb::Target {
    pb::Target {
        tenant: String::new(),
        devices: Some(pb::target::Devices::Selector(s.into())),
    }
}

pub fn device(id: &str) -> pb::Target {
    pb::Target {
        tenant: String::new(),
        devices: Some(pb::target::Devices::Device(id.into())),
    }
}

/// A catalog of (tenant, device) → labels.
#[derive(Debug, Default)]
pub struct Catalog {
    devices: Mutex<BTreeMap<(String, String), DeviceInfo>>,
}

impl Catalog {
    pub fn put(&self, tenant: &str, device: &str, labels: &[(&str, &str)]) {
        let info = DeviceInfo {
            id: device.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            disabled: false,
        };
        self.devices
            .lock()
            .expect("lock")
            .insert((tenant.into(), device.into()), info);
    }
}

#[async_trait]
impl DeviceCatalog for Catalog {
    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError> {
        Ok(self
            .devices
            .lock()
            .expect("lock")
            .get(&(tenant.to_string(), device.to_string()))
            .cloned())
    }

    async fn select(
        &self,
        tenant: &str,
        selector: &Selector,
    ) -> Result<Vec<DeviceInfo>, DirectoryError> {
        let devices = self.devices.lock().expect("lock");
        Ok(devices
            .iter()
            .filter(|((t, _), d)| t == tenant && selector.matches(&d.labels))
            .map(|(_, d)| d.clone())
            .collect())
    }
}

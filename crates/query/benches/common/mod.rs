//! What the query benchmarks share: the real `QueryGrpc` served over
//! loopback TCP, a viewer token, and percentiles.

#![allow(dead_code, reason = "each benchmark uses part of it")]

use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tributary_auth::{JwtKeys, OperatorClaims, Role};
use tributary_core::directory::{DeviceCatalog, DeviceInfo, DirectoryError};
use tributary_core::live::LiveHub;
use tributary_core::selector::Selector;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_query::{QueryConfig, QueryGrpc};
use tributary_store::Store;

/// A client of the served service, and a token for tenant `bench`.
pub(crate) struct Served {
    pub(crate) client: QueryServiceClient<Channel>,
    pub(crate) token: String,
}

/// Serves `QueryGrpc` over `store` and `catalog` on a loopback port, with
/// `TCP_NODELAY` as a production server sets it (without it, Nagle's
/// algorithm and delayed ACKs add up to 40 ms to responses of many segments).
pub(crate) async fn serve(
    store: Arc<dyn Store>,
    catalog: Arc<dyn DeviceCatalog>,
) -> Result<Served, Box<dyn Error>> {
    let keys = JwtKeys::from_secret(&[7u8; 32])?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = keys.issue(&OperatorClaims {
        sub: "bench".into(),
        tenant: "bench".into(),
        role: Role::Viewer,
        iat: now,
        exp: now + 36_000,
    })?;
    let service = QueryGrpc::new(
        store,
        catalog,
        LiveHub::default(),
        keys,
        QueryConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.server())
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    let client = QueryServiceClient::connect(format!("http://{addr}")).await?;
    Ok(Served { client, token })
}

/// `request` with the bearer token.
pub(crate) fn authed<T>(request: T, token: &str) -> Result<tonic::Request<T>, Box<dyn Error>> {
    let mut req = tonic::Request::new(request);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

/// Prints p50/p90/p99/max of `times` under `label`; returns the p50.
pub(crate) fn report(label: &str, times: &mut [Duration]) -> Duration {
    times.sort_unstable();
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    #[allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]
    {
        println!(
            "{label:>22}: p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} calls)",
            ms(pct(0.50)),
            ms(pct(0.90)),
            ms(pct(0.99)),
            ms(times[times.len() - 1]),
            times.len()
        );
    }
    pct(0.50)
}

/// A catalog of one device, `d1` of tenant `bench`.
#[derive(Debug)]
pub(crate) struct OneDevice;

#[async_trait::async_trait]
impl DeviceCatalog for OneDevice {
    async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceInfo>, DirectoryError> {
        Ok((tenant == "bench" && device == "d1").then(|| DeviceInfo {
            id: "d1".into(),
            labels: Default::default(),
            disabled: false,
        }))
    }

    async fn select(&self, tenant: &str, _: &Selector) -> Result<Vec<DeviceInfo>, DirectoryError> {
        Ok(self.device(tenant, "d1").await?.into_iter().collect())
    }
}

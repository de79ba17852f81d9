//! Helpers shared by the directory tests (in-process and over gRPC).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tributary_core::directory::{Authenticator, DirectoryError};
use tributary_registry::{NewDevice, Registry};

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Creates a device with an access token and returns the token's secret.
pub async fn device_with_token(registry: &Registry, tenant: &str, id: &str) -> String {
    let (_, token) = registry
        .create_device(NewDevice {
            tenant: tenant.into(),
            id: id.into(),
            issue_token: true,
            ..NewDevice::default()
        })
        .await
        .expect("device");
    token.expect("token").secret
}

/// Polls `check` until it holds or `deadline` passes; returns the time it took.
pub async fn within<F, Fut>(deadline: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Disables device `open/pump-1` and waits, at most `deadline`, until
/// `directory` refuses its token `secret` as a disabled device's.
pub async fn disable_and_wait_refused(
    registry: &Registry,
    directory: &dyn Authenticator,
    secret: &str,
    deadline: Duration,
) {
    registry
        .set_disabled("open", "pump-1", true)
        .await
        .expect("disable");
    let took = within(
        deadline,
        "authenticate refuses the disabled device",
        || async {
            matches!(
                directory.authenticate(secret).await,
                Err(DirectoryError::Forbidden(_))
            )
        },
    )
    .await;
    eprintln!("disabled device refused after {took:?}");
}

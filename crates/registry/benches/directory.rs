//! What authentication and device checks cost an ingest frontend, cached
//! (`LocalDirectory`) and uncached (`Registry`).
//!
//! Run: `cargo bench -p tributary-registry --bench directory`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tributary_core::directory::Authenticator;
use tributary_registry::{
    DirectoryConfig, EmbeddedRegistryStore, LocalDirectory, NewDevice, NewTenant, Registry,
    RegistryConfig, TenantSettings,
};

/// Runs `iters` calls of `f` inside the runtime and times them together.
fn timed<F, Fut>(rt: &Runtime, iters: u64, f: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            f().await;
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedRegistryStore::open(&dir.path().join("registry.redb")).expect("open");
    let registry = Arc::new(Registry::new(store, RegistryConfig::default()));
    let (directory, secret) = rt.block_on(async {
        let tenant = NewTenant {
            name: "bench".into(),
            display_name: String::new(),
            settings: TenantSettings::default(),
        };
        registry.create_tenant(tenant).await.expect("tenant");
        let device = NewDevice {
            tenant: "bench".into(),
            id: "dev-1".into(),
            issue_token: true,
            ..NewDevice::default()
        };
        let (_, token) = registry.create_device(device).await.expect("device");
        let directory = LocalDirectory::new(Arc::clone(&registry), DirectoryConfig::default());
        (directory, token.expect("token").secret)
    });
    let labels: BTreeMap<String, String> = [("fleet".to_string(), "west".to_string())].into();
    rt.block_on(directory.ensure_device("bench", "dev-1", &labels))
        .expect("merge labels");

    let mut group = c.benchmark_group("directory");
    group.bench_function("authenticate/cached", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                directory.authenticate(&secret).await.expect("authenticate");
            })
        })
    });
    group.bench_function("ensure_device/cached_steady_state", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                directory
                    .ensure_device("bench", "dev-1", &labels)
                    .await
                    .expect("ensure");
            })
        })
    });
    group.bench_function("authenticate/uncached_registry", |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                registry.authenticate(&secret).await.expect("authenticate");
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

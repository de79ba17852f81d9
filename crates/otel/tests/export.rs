//! `init` with a real OTLP/gRPC receiver on a loopback port: what is
//! exported, under which parent, and that dropping the guard flushes what is
//! buffered (as SIGTERM does in the services).

mod receiver;

use std::time::Duration;

use tributary_otel::{OtelConfig, OtelError, TARGET, set_remote_parent, span_traceparent};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn sampled_spans_are_exported_under_their_remote_parent_and_flushed_on_shutdown() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr, received) = rt.block_on(receiver::start("127.0.0.1:0".parse().unwrap()));
    let config = OtelConfig {
        endpoint: Some(format!("http://{addr}")),
        service_name: "tributary-test".into(),
        // No new trace is sampled: only spans under a sampled parent are.
        sample_ratio: 0.0,
        // Nothing leaves before shutdown unless the guard flushes it.
        export_interval: Duration::from_secs(300),
        ..OtelConfig::default()
    };
    let guard = {
        let _rt = rt.enter();
        tributary_otel::init(
            config,
            false,
            tributary_otel::env_filter("NO_SUCH_VAR", "warn"),
        )
        .unwrap()
    };
    assert!(guard.exporting());

    let root = tracing::debug_span!(target: TARGET, "root");
    assert_eq!(span_traceparent(&root), None, "a new trace at ratio 0");
    drop(root);

    let child = tracing::debug_span!(target: TARGET, "child", points = 3_u64);
    assert!(set_remote_parent(&child, TP, "k=v"));
    let (own, state) = span_traceparent(&child).expect("a sampled parent's child is sampled");
    assert_eq!(state, "k=v");
    child.in_scope(|| {
        // Not the trace target: never exported.
        tracing::info_span!("not.exported").in_scope(|| tracing::warn!("inside"));
    });
    drop(child);

    // The interval is 300 s: whatever arrives from here on was flushed by
    // dropping the guard.
    assert_eq!(received.count(), 0, "nothing is sent before the interval");
    drop(guard);

    let spans = received.spans();
    let names: Vec<_> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["child"],
        "flushed on shutdown, and only the sampled span"
    );
    let s = &spans[0];
    assert_eq!(s.service, "tributary-test");
    assert_eq!(s.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s.parent_span_id, "00f067aa0ba902b7");
    assert_eq!(own, format!("00-{}-{}-01", s.trace_id, s.span_id));
    assert_eq!(s.attribute("points"), Some("3"));

    let again = tributary_otel::init(
        OtelConfig::default(),
        false,
        tributary_otel::env_filter("NO_SUCH_VAR", "warn"),
    );
    assert!(matches!(again, Err(OtelError::AlreadyInstalled)));
}

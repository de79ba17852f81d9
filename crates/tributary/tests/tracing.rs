//! Traces end to end, as separate OS processes exporting to a real OTLP/gRPC
//! receiver (a tonic `TraceService` in this test): a Tansu broker,
//! `tributary registry`, `tributary ingest` and `tributary processor
//! --with-query`, all with `--otlp-endpoint` and `--trace-sample-ratio 1`.
//!
//! A device posts one point with a W3C `traceparent`. The receiver must get
//! `ingest.append` from `tributary-ingest` as the child of the posted span,
//! and `processor.store_write` from `tributary-processor` in the same trace
//! as the child of the ingest span (propagated through the Kafka record).
//! Operator gRPC calls get a span per method, under the caller's
//! `traceparent` metadata.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{Cluster, channel, os};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tributary_proto::v1 as pb;
use tributary_proto::v1::query_service_client::QueryServiceClient;
use tributary_proto::v1::registry_service_client::RegistryServiceClient;

/// One span the receiver got; ids in lower-case hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The OTLP receiver: keeps every span (the test sends a handful).
#[derive(Debug, Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
                            (kv.key.clone(), text(v))
                        })
                        .collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Receiver {
    async fn start() -> (SocketAddr, Receiver) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .expect("OTLP receiver");
        });
        (addr, receiver)
    }

    /// Waits for the first span matching `want`.
    async fn wait_for(&self, what: &str, want: impl Fn(&Received) -> bool) -> Received {
        eventually(Duration::from_secs(30), what, || {
            let found = self.0.lock().unwrap().iter().find(|s| want(s)).cloned();
            async move { found }
        })
        .await
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const DEVICE_SPAN: &str = "00f067aa0ba902b7";
const OPERATOR_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const OPERATOR_SPAN: &str = "b7ad6b7169203331";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_trace_continues_through_ingest_kafka_and_the_processor() {
    let (otlp, receiver) = Receiver::start().await;
    let cluster = Cluster::start_with(vec![
        os("--otlp-endpoint"),
        os(format!("http://{otlp}")),
        os("--trace-sample-ratio"),
        os("1"),
    ]);
    let (registry, admin) = (&cluster.registry, cluster.admin.clone());
    let ingest = cluster.ingest("ingest-a");
    let processor = cluster.processor();

    // An operator call that carries its own trace context.
    let mut registry_client = RegistryServiceClient::with_interceptor(
        channel(registry.addr("grpc")).await,
        Bearer::new(&admin),
    );
    let mut create = tonic::Request::new(pb::CreateDeviceRequest {
        id: "pump-1".into(),
        issue_token: true,
        ..Default::default()
    });
    create.metadata_mut().insert(
        "traceparent",
        format!("00-{OPERATOR_TRACE_ID}-{OPERATOR_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let token = registry_client
        .create_device(create)
        .await
        .expect("CreateDevice")
        .into_inner()
        .token
        .expect("token")
        .token;

    // The device posts one point inside its own trace.
    let ts_ms = tributary_core::time::now_ns() / 1_000_000 - 60_000;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/telemetry", ingest.addr("http")))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TRACE_ID}-{DEVICE_SPAN}-01"))
        .header("tracestate", "vendor=device")
        .json(&serde_json::json!({"ts": ts_ms, "values": {"v": 1.5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "the point is acknowledged");

    let query = QueryServiceClient::with_interceptor(
        channel(processor.addr("grpc")).await,
        Bearer::new(&admin),
    );
    let from = (ts_ms - 1) * 1_000_000;
    let to = (ts_ms + 1) * 1_000_000;
    eventually(Duration::from_secs(30), "the point stored", || {
        let mut q = query.clone();
        async move {
            (!range_all(&mut q, "pump-1", &["v"], from, to)
                .await
                .is_empty())
            .then_some(())
        }
    })
    .await;

    let append = receiver
        .wait_for("ingest.append from tributary-ingest", |s| {
            s.name == "ingest.append" && s.trace_id == TRACE_ID
        })
        .await;
    assert_eq!(append.service, "tributary-ingest");
    assert_eq!(
        append.parent_span_id, DEVICE_SPAN,
        "the ingest span is the child of the device's span"
    );
    assert_eq!(append.attr("tenant"), Some("default"), "{append:?}");
    assert_eq!(append.attr("points"), Some("1"));
    assert_eq!(append.attr("devices"), Some("1"));
    assert!(append.attr("log.append_ms").is_some(), "{append:?}");

    let write = receiver
        .wait_for("processor.store_write from tributary-processor", |s| {
            s.name == "processor.store_write" && s.trace_id == TRACE_ID
        })
        .await;
    assert_eq!(write.service, "tributary-processor");
    assert_eq!(
        write.parent_span_id, append.span_id,
        "the processor span is the child of the ingest span, through the Kafka record"
    );
    assert_eq!(write.attr("device"), Some("pump-1"));
    assert_eq!(write.attr("points"), Some("1"));
    assert_eq!(write.attr("committed"), Some("true"), "{write:?}");
    assert!(write.attr("partition").is_some() && write.attr("offset").is_some());

    let call = receiver
        .wait_for("the CreateDevice call's span", |s| {
            s.name == "tributary.v1.RegistryService/CreateDevice"
        })
        .await;
    assert_eq!(call.service, "tributary-registry");
    assert_eq!(call.trace_id, OPERATOR_TRACE_ID);
    assert_eq!(call.parent_span_id, OPERATOR_SPAN);
    assert_eq!(call.attr("rpc.system"), Some("grpc"));
    let query_call = receiver
        .wait_for("a QueryRange call's span", |s| {
            s.name == "tributary.v1.QueryService/QueryRange"
        })
        .await;
    assert_eq!(query_call.service, "tributary-processor");

    // Exactly one span per hop of the device's trace.
    let spans = receiver.0.lock().unwrap().clone();
    let hops: Vec<_> = spans
        .iter()
        .filter(|s| s.trace_id == TRACE_ID)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(hops.len(), 2, "{hops:?}");
    drop((processor, ingest, registry));
}

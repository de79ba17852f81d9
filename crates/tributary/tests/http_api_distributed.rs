//! The HTTP API of a query replica in distributed mode, as separate OS
//! processes on a real Kafka-protocol broker (Tansu): registry calls go to
//! `tributary registry` over gRPC with the caller's own token (so the
//! registry scopes them), time series and the Prometheus API read the
//! processor's store.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_replicas_http_api_reaches_the_remote_registry_and_the_store() {
    let cluster = Cluster::start();
    let ingest = cluster.ingest("ingest-a");
    let processor = cluster.processor();
    let api = format!("http://{}/api/v1", processor.addr("api"));
    let http = reqwest::Client::new();
    let admin = cluster.admin.clone();

    // A device created over HTTP on the query replica lands in the registry.
    let resp = http
        .post(format!("{api}/devices"))
        .bearer_auth(&admin)
        .json(&json!({"id": "pump-9", "labels": {"fleet": "North"}, "issue_token": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let created: Value = resp.json().await.unwrap();
    let token = created["token"]["token"].as_str().unwrap().to_owned();
    let listed = cluster
        .registry_client()
        .await
        .get_device(tributary_proto::v1::GetDeviceRequest {
            tenant: String::new(),
            device: "pump-9".into(),
        })
        .await
        .expect("the registry has it")
        .into_inner();
    assert_eq!(listed.labels["fleet"], "North");

    // A forged token is refused (by the registry, which checks it).
    let resp = http
        .get(format!("{api}/devices"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // A point through ingest, read back through the API and PromQL.
    let resp = http
        .post(format!("http://{}/v1/telemetry", ingest.addr("http")))
        .bearer_auth(&token)
        .json(&json!({"values": {"level": 4.5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    eventually(
        Duration::from_secs(30),
        "the point readable over HTTP",
        || {
            let (http, api, admin) = (http.clone(), api.clone(), admin.clone());
            async move {
                let body: Value = http
                    .get(format!("{api}/timeseries/latest?device=pump-9"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                (body["values"][0]["value"] == 4.5).then_some(())
            }
        },
    )
    .await;
    let body: Value = http
        .post(format!("{api}/query"))
        .bearer_auth(&admin)
        .form(&[("query", "max by (fleet) (level)")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["data"]["result"][0]["metric"]["fleet"], "North",
        "{body}"
    );
    assert_eq!(body["data"]["result"][0]["value"][1], "4.5", "{body}");
    let doc: Value = http
        .get(format!("{api}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

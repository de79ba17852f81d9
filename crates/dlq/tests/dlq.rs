//! `DeadLetterService` over a real gRPC socket, on embedded logs: listing
//! by tenant with pages, showing one with its record, replaying to the
//! telemetry log, and who may see what.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tributary_auth::{JwtKeys, OperatorClaims, Role};
use tributary_dlq::{DeadLetterGrpc, REPLAYED_FROM};
use tributary_log::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tributary_log::{ConsumerOptions, Log, Record, StartFrom};
use tributary_processor::dlq_headers;
use tributary_proto::v1 as pb;
use tributary_proto::v1::dead_letter_service_client::DeadLetterServiceClient;

struct Rig {
    _dir: tempfile::TempDir,
    keys: JwtKeys,
    channel: Channel,
    telemetry: Arc<EmbeddedLog>,
}

fn dead_letter(tenant: Option<&str>, n: u32) -> Record {
    let mut headers = vec![
        (
            dlq_headers::REASON.to_owned(),
            Bytes::from(format!("store refused: reason {n}")),
        ),
        (
            dlq_headers::SOURCE.to_owned(),
            Bytes::from(format!("tributary.telemetry.v1/0/{n}")),
        ),
        (
            "content-type".to_owned(),
            Bytes::from_static(b"application/json"),
        ),
    ];
    if let Some(t) = tenant {
        headers.push(("tenant".to_owned(), Bytes::from(t.to_owned())));
    }
    Record {
        key: Bytes::from(format!("{}/d{n}", tenant.unwrap_or("?"))),
        value: Bytes::from(format!("record {n}")),
        headers,
        timestamp_ms: 1_700_000_000_000 + i64::from(n),
    }
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let dlq = EmbeddedLog::open(
            dir.path().join("dlq"),
            EmbeddedLogConfig::new("tributary.dlq.v1", 1),
        )
        .await
        .unwrap();
        let telemetry = EmbeddedLog::open(
            dir.path().join("telemetry"),
            EmbeddedLogConfig::new("tributary.telemetry.v1", 2),
        )
        .await
        .unwrap();
        // 150 dead letters of acme, 2 of globex, 1 whose tenant is unknown.
        for n in 0..150 {
            dlq.append(dead_letter(Some("acme"), n)).await.unwrap();
        }
        dlq.append(dead_letter(Some("globex"), 150)).await.unwrap();
        dlq.append(dead_letter(None, 151)).await.unwrap();
        dlq.append(dead_letter(Some("globex"), 152)).await.unwrap();
        let keys = JwtKeys::from_secret(&[7u8; 32]).unwrap();
        let svc = DeadLetterGrpc::new(dlq.clone(), telemetry.clone(), keys.clone()).into_service();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Rig {
            _dir: dir,
            keys,
            channel,
            telemetry,
        }
    }

    fn request<T>(&self, tenant: &str, role: Role, body: T) -> tonic::Request<T> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = self
            .keys
            .issue(&OperatorClaims {
                sub: "test".into(),
                tenant: tenant.into(),
                role,
                iat: now,
                exp: now + 600,
            })
            .unwrap();
        let mut request = tonic::Request::new(body);
        let v: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", v);
        request
    }

    fn client(&self) -> DeadLetterServiceClient<Channel> {
        DeadLetterServiceClient::new(self.channel.clone())
    }

    async fn list(
        &self,
        tenant: &str,
        role: Role,
        as_tenant: &str,
        token: &str,
    ) -> pb::ListDeadLettersResponse {
        self.client()
            .list_dead_letters(self.request(
                tenant,
                role,
                pb::ListDeadLettersRequest {
                    tenant: as_tenant.into(),
                    page_size: 100,
                    page_token: token.into(),
                },
            ))
            .await
            .expect("ListDeadLetters")
            .into_inner()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_their_tenants_dead_letters_a_page_at_a_time() {
    let rig = Rig::start().await;
    let first = rig.list("acme", Role::Operator, "", "").await;
    assert_eq!(first.dead_letters.len(), 100);
    assert!(!first.next_page_token.is_empty());
    let second = rig
        .list("acme", Role::Operator, "", &first.next_page_token)
        .await;
    assert_eq!(second.dead_letters.len(), 50);
    assert!(second.next_page_token.is_empty());
    let d = &first.dead_letters[3];
    assert_eq!(
        (
            d.tenant.as_str(),
            d.reason.as_str(),
            d.source.as_str(),
            d.key.as_str()
        ),
        (
            "acme",
            "store refused: reason 3",
            "tributary.telemetry.v1/0/3",
            "acme/d3"
        )
    );
    assert!(d.value.is_empty(), "lists carry no record bodies");
    // Another tenant's operator sees only its own.
    let globex = rig.list("globex", Role::Operator, "", "").await;
    assert_eq!(globex.dead_letters.len(), 2);
    // Naming another tenant, or every tenant, takes an admin.
    let status = rig
        .client()
        .list_dead_letters(rig.request(
            "globex",
            Role::Operator,
            pb::ListDeadLettersRequest {
                tenant: "acme".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("another tenant's dead letters");
    assert_eq!(status.code(), Code::PermissionDenied);
    let all = rig.list("acme", Role::Admin, "*", "").await;
    let second = rig
        .list("acme", Role::Admin, "*", &all.next_page_token)
        .await;
    assert_eq!(all.dead_letters.len() + second.dead_letters.len(), 153);
    assert!(second.dead_letters.iter().any(|d| d.tenant.is_empty()));
    let status = rig
        .client()
        .list_dead_letters(rig.request("acme", Role::Viewer, pb::ListDeadLettersRequest::default()))
        .await
        .expect_err("viewers may not");
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_shown_with_its_record_and_replayed_as_it_was() {
    let rig = Rig::start().await;
    let listed = rig.list("globex", Role::Operator, "", "").await;
    let refs: Vec<pb::DeadLetterRef> = listed
        .dead_letters
        .iter()
        .map(|d| pb::DeadLetterRef {
            partition: d.partition,
            offset: d.offset,
        })
        .collect();
    let shown = rig
        .client()
        .get_dead_letter(rig.request(
            "globex",
            Role::Operator,
            pb::GetDeadLetterRequest {
                tenant: String::new(),
                r#ref: Some(refs[0]),
            },
        ))
        .await
        .expect("GetDeadLetter")
        .into_inner();
    assert_eq!(shown.value, b"record 150");
    // Not another tenant's.
    let status = rig
        .client()
        .get_dead_letter(rig.request(
            "acme",
            Role::Operator,
            pb::GetDeadLetterRequest {
                tenant: String::new(),
                r#ref: Some(refs[0]),
            },
        ))
        .await
        .expect_err("globex's dead letter, asked by acme");
    assert_eq!(status.code(), Code::NotFound);
    // A replay names only what the caller sees: all or nothing.
    let mut with_foreign = refs.clone();
    with_foreign.push(pb::DeadLetterRef {
        partition: 0,
        offset: 0,
    });
    let status = rig
        .client()
        .replay_dead_letters(rig.request(
            "globex",
            Role::Operator,
            pb::ReplayDeadLettersRequest {
                tenant: String::new(),
                refs: with_foreign,
            },
        ))
        .await
        .expect_err("acme's dead letter in globex's replay");
    assert_eq!(status.code(), Code::NotFound);
    let replayed = rig
        .client()
        .replay_dead_letters(rig.request(
            "globex",
            Role::Operator,
            pb::ReplayDeadLettersRequest {
                tenant: String::new(),
                refs,
            },
        ))
        .await
        .expect("ReplayDeadLetters")
        .into_inner();
    assert_eq!(replayed.replayed, 2);
    // Back on the telemetry log, as they were, without the dead-letter
    // headers and with where they came from.
    let mut consumer = rig
        .telemetry
        .consumer(ConsumerOptions {
            group: None,
            start: StartFrom::Earliest,
        })
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "replayed records not in the log"
        );
        got.extend(consumer.poll(10, Duration::from_millis(100)).await.unwrap());
    }
    got.sort_by_key(|r| r.timestamp_ms);
    assert_eq!(got[0].value, Bytes::from_static(b"record 150"));
    assert_eq!(got[0].key, Bytes::from_static(b"globex/d150"));
    let names: Vec<&str> = got[0].headers.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.contains(&REPLAYED_FROM) && names.contains(&"tenant"),
        "{names:?}"
    );
    assert!(!names.contains(&dlq_headers::REASON), "{names:?}");
}

//! CoAP in distributed mode, as separate OS processes on a real
//! Kafka-protocol broker (Tansu): a device posts to an ingest replica's
//! CoAP listener and its points are read from the processor; it registers
//! for commands there, and an operator's command, sent to the query
//! replica, is routed by presence through the commands topic to that
//! replica and answered. Over DTLS, its PSK (issued by the registry
//! process) is looked up by the ingest replica over gRPC.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::Cluster;
use common::*;
use serde_json::{Value, json};
use tributary_coap_codec::{Code, Message, MessageType, Token, option};
use tributary_ingest_coap::TOKEN_OPTION;

async fn exchange(socket: &tokio::net::UdpSocket, to: SocketAddr, msg: &Message) -> Message {
    socket.send_to(&msg.encode(), to).await.unwrap();
    recv(socket).await
}

async fn recv(socket: &tokio::net::UdpSocket) -> Message {
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(30), socket.recv_from(&mut buf))
        .await
        .expect("a CoAP message within 30 s")
        .unwrap();
    Message::decode(&buf[..n]).unwrap()
}

fn request(code: Code, id: u16, path: &[&str], token: &str) -> Message {
    let mut m = Message::new(MessageType::Confirmable, code, id);
    m.token = Token::new(&id.to_be_bytes()).unwrap();
    for p in path {
        m.add_option(option::URI_PATH, p.as_bytes().to_vec());
    }
    m.add_option(TOKEN_OPTION, token.as_bytes().to_vec());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coap_telemetry_and_commands_cross_the_cluster() {
    let cluster = Cluster::start();
    let ingest = cluster.ingest_with(
        "ingest-coap",
        &["--coap-addr", "127.0.0.1:0", "--coaps-addr", "127.0.0.1:0"],
    );
    let coap = ingest.addr("coap");
    let processor = cluster.processor();
    let api = format!("http://{}/api/v1", processor.addr("api"));
    let token = cluster.device("sensor-9").await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // Telemetry: 2.04 from the ingest replica, then readable from the
    // processor's store.
    let mut post = request(Code::POST, 1, &["t"], &token);
    post.payload = br#"{"values": {"temp": 19.5}}"#.to_vec();
    let ack = exchange(&socket, coap, &post).await;
    assert_eq!(
        ack.code,
        Code::CHANGED,
        "{:?}",
        String::from_utf8_lossy(&ack.payload)
    );
    let http = http_client();
    eventually(
        Duration::from_secs(30),
        "the point, through the processor",
        || async {
            let latest: Value = http
                .get(format!(
                    "{api}/timeseries/latest?device=sensor-9&metrics=temp"
                ))
                .bearer_auth(&cluster.admin)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            latest.to_string().contains("19.5").then_some(())
        },
    )
    .await;

    // Commands: register on the ingest replica, then command through the
    // query replica.
    let mut observe = request(Code::GET, 2, &["c"], &token);
    observe.set_uint_option(option::OBSERVE, 0);
    let registered = exchange(&socket, coap, &observe).await;
    assert_eq!(registered.code, Code::CONTENT);
    assert!(registered.observe().unwrap().is_some());
    let (api2, admin) = (api.clone(), cluster.admin.clone());
    let sent = tokio::spawn(async move {
        http_client()
            .post(format!("{api2}/devices/sensor-9/commands"))
            .bearer_auth(admin)
            .json(&json!({"name": "calibrate", "payload": "now", "timeout_ms": 30000}))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    });
    let note = recv(&socket).await;
    assert_eq!(
        (note.mtype, note.code, note.token),
        (MessageType::Confirmable, Code::CONTENT, observe.token)
    );
    socket
        .send_to(
            &Message::new(MessageType::Acknowledgement, Code::EMPTY, note.message_id).encode(),
            coap,
        )
        .await
        .unwrap();
    let command: Value = serde_json::from_slice(&note.payload).unwrap();
    assert_eq!(command["name"], "calibrate");
    let id = command["id"].as_str().unwrap().to_owned();
    let mut reply = request(Code::POST, 3, &["c", &id], &token);
    reply.set_uint_option(option::CONTENT_FORMAT, 0);
    reply.payload = b"calibrated".to_vec();
    assert_eq!(exchange(&socket, coap, &reply).await.code, Code::CHANGED);
    let outcome = sent.await.unwrap();
    assert_eq!(outcome["status"], "delivered_replied", "{outcome}");
    assert_eq!(outcome["reply"], "calibrated", "{outcome}");

    // DTLS: a PSK issued by the registry process, looked up by the ingest
    // replica over gRPC at the handshake; the point it acknowledges is
    // read back from the processor.
    let issued: Value = http
        .post(format!("{api}/tokens"))
        .bearer_auth(&cluster.admin)
        .json(&json!({"kind": "device_psk", "device": "sensor-9"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let identity = issued["psk_identity"]
        .as_str()
        .expect("psk_identity")
        .to_owned();
    let key = issued["token"].as_str().expect("key").to_owned();
    let coaps = ingest.addr("coaps");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("coap-client-openssl")
            .args([
                "-B", "10", "-v", "7", "-m", "post", "-u", &identity, "-k", &key,
            ])
            .args(["-e", "7.25", &format!("coaps://{coaps}/t/volt")])
            .output()
            .expect("run coap-client-openssl (apt install libcoap3-bin)")
    })
    .await
    .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.contains("c:2.04"), "coap-client-openssl: {out}");
    eventually(
        Duration::from_secs(30),
        "the DTLS point, through the processor",
        || async {
            let latest: Value = http
                .get(format!(
                    "{api}/timeseries/latest?device=sensor-9&metrics=volt"
                ))
                .bearer_auth(&cluster.admin)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            latest.to_string().contains("7.25").then_some(())
        },
    )
    .await;

    assert!(ingest.stop().success());
    assert!(processor.stop().success());
}

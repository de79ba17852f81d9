//! `--verify` catches loss. Devices publish through a deliberately broken
//! MQTT proxy in front of a real standalone. On every connection, of each ten
//! QoS 1 publishes the proxy
//!
//! - drops the 4th and answers it with a forged PUBACK: acknowledged, never
//!   stored (what a lossy broker does), and
//! - forwards the 8th but swallows the server's PUBACK: stored, never
//!   acknowledged (the client times it out).
//!
//! The report must count exactly those, and the run must exit 2. `verify`
//! on the saved report must find the same again.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use common::{Standalone, describe, loadtest, read_report};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tributary_mqtt_codec::{Packet, ProtocolVersion, PubAck, QoS, decode, encode};

const MAX_PACKET: usize = 1024 * 1024;

/// Forwards one client connection to `upstream`, breaking it as described.
async fn relay(client: TcpStream, upstream: SocketAddr) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, cw) = client.into_split();
    let (sr, mut sw) = server.into_split();
    let cw = std::sync::Arc::new(Mutex::new(cw));
    let swallow = std::sync::Arc::new(Mutex::new(HashSet::<u16>::new()));
    let version = std::sync::Arc::new(Mutex::new(None::<ProtocolVersion>));

    // Server to client: forward, except PUBACKs marked to swallow.
    let down = {
        let (cw, swallow, version) = (cw.clone(), swallow.clone(), version.clone());
        tokio::spawn(async move {
            let mut sr = sr;
            let mut buf = BytesMut::new();
            loop {
                match sr.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let v = *version.lock().await;
                let mut out = BytesMut::new();
                while let Ok(Some(p)) = decode(&mut buf, v, MAX_PACKET) {
                    if let Packet::PubAck(a) = &p
                        && swallow.lock().await.remove(&a.packet_id)
                    {
                        continue;
                    }
                    let Some(v) = v else { return };
                    if encode(&p, v, &mut out).is_err() {
                        return;
                    }
                }
                if cw.lock().await.write_all(&out).await.is_err() {
                    return;
                }
            }
        })
    };

    // Client to server: count QoS 1 publishes, drop or mark them.
    let mut buf = BytesMut::new();
    let mut publishes = 0u64;
    'outer: loop {
        match cr.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            let v = *version.lock().await;
            let p = match decode(&mut buf, v, MAX_PACKET) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(_) => break 'outer,
            };
            if let Packet::Connect(c) = &p {
                *version.lock().await = Some(c.protocol);
            }
            let Some(v) = *version.lock().await else {
                break 'outer;
            };
            if let Packet::Publish(pb) = &p
                && pb.qos == QoS::AtLeastOnce
                && let Some(id) = pb.packet_id
            {
                publishes += 1;
                match publishes % 10 {
                    4 => {
                        let mut ack = BytesMut::new();
                        let _ = encode(&PubAck::new(id).into(), v, &mut ack);
                        if cw.lock().await.write_all(&ack).await.is_err() {
                            break 'outer;
                        }
                        continue;
                    }
                    8 => {
                        swallow.lock().await.insert(id);
                    }
                    _ => {}
                }
            }
            let mut out = BytesMut::new();
            if encode(&p, v, &mut out).is_err() || sw.write_all(&out).await.is_err() {
                break 'outer;
            }
        }
    }
    down.abort();
}

#[test]
fn verify_reports_acknowledged_points_that_were_not_stored() {
    let server = Standalone::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let proxy = listener.local_addr().unwrap();
    let upstream = server.mqtt;
    rt.spawn(async move {
        while let Ok((c, _)) = listener.accept().await {
            tokio::spawn(relay(c, upstream));
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("lossy.toml");
    std::fs::write(
        &scenario,
        r#"
        name = "lossy"
        [devices]
        count = 10
        [transport]
        protocol = "mqtt"
        qos = 1
        [load]
        in_flight = 1
        messages = 200
        duration = "60s"
        ramp = 0
        ack_timeout = "500ms"
        [payload]
        metrics = 3
        [measure]
        verify = true
        verify_timeout = "3s"
        "#,
    )
    .unwrap();
    let json = dir.path().join("lossy.json");
    let mut args = vec![
        "run".to_string(),
        scenario.display().to_string(),
        "-q".into(),
        "--json".into(),
        json.display().to_string(),
    ];
    args.extend(server.target_flags());
    // The proxy, not the server, is the MQTT target.
    let at = args.iter().position(|a| a == "--mqtt-addr").unwrap();
    args[at + 1] = proxy.to_string();
    let out = loadtest(&args, Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(2),
        "loss means exit 2: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verify       LOSS"),
        "{}",
        describe(&out)
    );

    // 10 devices x 20 publishes: 2 forged acks and 2 swallowed acks each.
    let r = read_report(&json);
    let ctx = describe(&out);
    assert_eq!(r["counters"]["msgs_sent"], 200, "{ctx}");
    assert_eq!(r["counters"]["msgs_acked"], 180, "{ctx}");
    assert_eq!(r["counters"]["msgs_failed"], 20, "{ctx}");
    assert_eq!(r["errors"]["ack timeout"], 20, "{ctx}");
    let v = &r["verify"];
    assert_eq!(v["points_acked"], 540, "{ctx}");
    assert_eq!(v["points_stored"], 540, "{ctx}");
    assert_eq!(
        v["acked_not_stored"], 60,
        "20 forged acks x 3 points: {ctx}"
    );
    assert_eq!(
        v["stored_not_acked"], 60,
        "20 swallowed acks x 3 points: {ctx}"
    );
    assert_eq!(v["settled"], false, "{ctx}");
    let m = v["mismatches"].as_array().unwrap();
    assert_eq!(m.len(), 10, "every device lost some: {ctx}");

    // The saved report verifies the same way later.
    let out = loadtest(
        &[
            "verify".to_string(),
            json.display().to_string(),
            "--grpc-url".into(),
            format!("http://{}", server.grpc),
            "--admin-token-file".into(),
            server.dir.path().join("admin.token").display().to_string(),
            "--timeout".into(),
            "1s".into(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["acked_not_stored"], 60, "{}", describe(&out));
    assert_eq!(again["stored_not_acked"], 60, "{}", describe(&out));
}

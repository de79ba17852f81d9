//! A connection's credential is checked while the connection lives: it ends
//! when the credential expires, and when the credentials are checked again
//! after missed revocation events, those no longer valid are closed.

mod common;

use common::*;
use tributary_mqtt_codec::{ProtocolVersion, ReasonCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ends_when_its_credential_expires() {
    let rig = Rig::default().await;
    let (mut expiring, ack) = Raw::connect(
        rig.addr,
        connect_packet(ProtocolVersion::V5, "d1", "d1", "exp-d1"),
    )
    .await;
    assert_eq!(ack.reason_code, ReasonCode::Success);
    let mut lasting = Raw::device(rig.addr, ProtocolVersion::V5, "d2").await;
    let started = std::time::Instant::now();
    assert_eq!(
        expiring.expect_close().await,
        Some(ReasonCode::NotAuthorized)
    );
    let took = started.elapsed();
    assert!(took < WAIT, "closed after {took:?}");
    // The other connection is still served.
    lasting.send(tributary_mqtt_codec::Packet::PingReq).await;
    assert_eq!(
        lasting.recv().await,
        Some(tributary_mqtt_codec::Packet::PingResp)
    );
    assert!(
        rig.metrics_text()
            .contains("tributary_mqtt_disconnects_total{reason=\"credential_expired\"} 1"),
        "{}",
        rig.metrics_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_again_closes_connections_whose_credential_was_revoked_meanwhile() {
    let rig = Rig::default().await;
    let mut gone = Raw::device(rig.addr, ProtocolVersion::V5, "gone").await;
    let mut stays = Raw::device(rig.addr, ProtocolVersion::V5, "stays").await;
    assert_eq!(rig.server.revalidate().await, 1);
    assert_eq!(
        gone.expect_close().await,
        Some(ReasonCode::AdministrativeAction)
    );
    stays.send(tributary_mqtt_codec::Packet::PingReq).await;
    assert_eq!(
        stays.recv().await,
        Some(tributary_mqtt_codec::Packet::PingResp)
    );
}
